//! The ledger: where every message's fate is written down exactly once.
//!
//! Callers, the worker and the sender share one [`Ledger`]. It owns the counters behind
//! [`crate::Stats`], the memory [`Budget`], and the user's [`Observer`]; [`Ledger::settle`] is
//! the single place an accepted message leaves the client, so the budget is always released and
//! the outcome always counted and reported together.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::budget::{Budget, PER_MESSAGE_OVERHEAD};
use crate::outcome::{Observer, Outcome};
use crate::stats::{Counters, Stats};

/// One accepted message: its encoded bytes and where its `messageId` sits in them.
#[derive(Debug)]
pub(crate) struct Queued {
    pub(crate) bytes: Box<[u8]>,
    pub(crate) id: Range<usize>,
}

impl Queued {
    /// What the message costs against the budget.
    pub(crate) fn cost(&self) -> u64 {
        (self.bytes.len() + PER_MESSAGE_OVERHEAD) as u64
    }

    /// The `messageId`, unescaped.
    pub(crate) fn message_id(&self) -> String {
        serde_json::from_slice(&self.bytes[self.id.clone()]).unwrap_or_default()
    }
}

pub(crate) struct Ledger {
    pub(crate) counters: Counters,
    pub(crate) budget: Budget,
    pub(crate) closed: AtomicBool,
    observer: Option<Arc<dyn Observer>>,
}

impl Ledger {
    pub(crate) fn new(budget: Budget, observer: Option<Arc<dyn Observer>>) -> Ledger {
        Ledger {
            counters: Counters::default(),
            budget,
            closed: AtomicBool::new(false),
            observer,
        }
    }

    pub(crate) fn stats(&self) -> Stats {
        self.counters.snapshot(self.budget.used())
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Records that `messages` reached `outcome`: counts them, releases their budget and tells
    /// the observer.
    pub(crate) fn settle(&self, messages: &[Queued], outcome: &Outcome<'_>) {
        let n = messages.len() as u64;
        match outcome {
            Outcome::Delivered => self.counters.delivered(n),
            Outcome::Rejected { .. } => self.counters.rejected(n),
            Outcome::Dropped { reason, .. } => self.counters.dropped(*reason, n),
        }
        self.budget.release(messages.iter().map(Queued::cost).sum());
        if let Some(observer) = &self.observer {
            // The user's code: a panic in it must not take a client thread down.
            let notified = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                for message in messages {
                    observer.on_outcome(&message.message_id(), outcome);
                }
            }));
            if let Err(panic) = notified {
                tracing::error!(
                    "trackway: the observer panicked: {}",
                    crate::sender::panic_message(&*panic)
                );
            }
        }
    }
}
