//! `stdout`: one JSON line per message on standard output, for debugging a pipeline.

use std::io::Write;

use crate::delivery::{Attempt, Destination};
use crate::storage::{BoxFuture, StoredEvent};

pub(crate) struct Stdout;

impl Destination for Stdout {
    fn deliver<'a>(&'a self, events: &'a [StoredEvent]) -> BoxFuture<'a, Attempt> {
        let mut out = std::io::stdout().lock();
        let mut result = Ok(());
        for event in events {
            result = result.and_then(|()| writeln!(out, "{}", event.body));
        }
        let attempt = match result.and_then(|()| out.flush()) {
            Ok(()) => Attempt::Delivered,
            Err(e) => Attempt::Retry {
                after: None,
                reason: format!("stdout: {e}"),
            },
        };
        Box::pin(async move { attempt })
    }

    fn chunk_size(&self) -> usize {
        100
    }
}
