//! `stdout`: one JSON line per message on standard output, for debugging a pipeline.
//!
//! A write to standard output can block for as long as its reader likes: piped into a
//! program that stopped reading, it waits once the pipe is full. Written on a runtime
//! worker, two such destinations held every worker and the whole server stopped answering
//! (`/healthz` and ingest included). So no worker writes: every stdout destination hands
//! its lines to one writer thread and awaits its answer.
//!
//! ```text
//!  destination task ──Job{lines, done}──▶ trackway-stdout thread ──write, flush──▶ fd 1
//!        ▲                                          │
//!        └──────────── done: Ok / the error ◀───────┘
//! ```
//!
//! One thread for the whole process, since every stdout destination writes the same file
//! descriptor: a stalled reader can hold that one thread and the stdout destinations waiting
//! on it, and nothing else. Its queue needs no bound of its own: each destination has at
//! most its `concurrency` chunks waiting for an answer. The thread is never joined: idle, it
//! waits on its channel, and at exit the process does not wait for it.

use std::io::Write;
use std::sync::{Mutex, PoisonError, mpsc};

use tokio::sync::oneshot;

use crate::delivery::kind::DestinationError;
use crate::delivery::{Attempt, Destination};
use crate::storage::{BoxFuture, StoredEvent};

/// Messages per chunk: a chunk is one write and one flush, and one answer awaited.
const CHUNK: usize = 100;

/// Lines to write, and where to say how it went.
struct Job {
    lines: Vec<u8>,
    done: oneshot::Sender<std::io::Result<()>>,
}

/// The writer thread's queue, once started.
static WRITER: Mutex<Option<mpsc::Sender<Job>>> = Mutex::new(None);

pub(crate) struct Stdout {
    writer: mpsc::Sender<Job>,
}

impl Stdout {
    /// A stdout destination, starting the writer thread if none runs yet.
    pub(crate) fn new() -> Result<Stdout, DestinationError> {
        let mut slot = WRITER.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(writer) = &*slot {
            return Ok(Stdout {
                writer: writer.clone(),
            });
        }
        let (writer, jobs) = mpsc::channel();
        std::thread::Builder::new()
            .name("trackway-stdout".into())
            .spawn(move || write_jobs(&jobs))
            .map_err(DestinationError::StdoutThread)?;
        *slot = Some(writer.clone());
        Ok(Stdout { writer })
    }
}

/// The writer thread: each job's lines, written whole and flushed, one job at a time.
fn write_jobs(jobs: &mpsc::Receiver<Job>) {
    while let Ok(job) = jobs.recv() {
        let mut out = std::io::stdout().lock();
        let written = out.write_all(&job.lines).and_then(|()| out.flush());
        // The destination may have stopped waiting (a shutdown): nobody to tell.
        let _ = job.done.send(written);
    }
}

impl Destination for Stdout {
    fn deliver<'a>(&'a self, events: &'a [StoredEvent]) -> BoxFuture<'a, Attempt> {
        let mut lines = Vec::new();
        for event in events {
            lines.extend_from_slice(event.body.as_bytes());
            lines.push(b'\n');
        }
        let (done, answer) = oneshot::channel();
        let queued = self.writer.send(Job { lines, done });
        Box::pin(async move {
            let gone = || Attempt::Retry {
                after: None,
                reason: "stdout: the writer thread is gone".into(),
            };
            if queued.is_err() {
                return gone();
            }
            match answer.await {
                Ok(Ok(())) => Attempt::Delivered,
                Ok(Err(e)) => Attempt::Retry {
                    after: None,
                    reason: format!("stdout: {e}"),
                },
                Err(_) => gone(),
            }
        })
    }

    fn chunk_size(&self) -> usize {
        CHUNK
    }
}
