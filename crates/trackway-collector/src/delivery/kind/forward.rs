//! `forward`: relay to another Tracking API endpoint (Segment, RudderStack, another Trackway
//! collector) through the `trackway` client, so the collector is an edge buffer: it keeps
//! accepting while the upstream is down, and delivers once it is back.
//!
//! The relayed message is the one the client sent: the server's own fields (`receivedAt`,
//! `sentAt`) are removed and the client's `timestamp` restored from `originalTimestamp`, so
//! the upstream applies its own clock correction. The `messageId` is kept, so the upstream
//! deduplicates what a crash makes us send twice.
//!
//! The client is built with no retries of its own: the delivery engine retries (durably, with
//! its cursor), so a failed flush never leaves copies queued inside the client.

use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;
use trackway::{Analytics, EnqueueError, Message};

use crate::delivery::{Attempt, Destination};
use crate::storage::{BoxFuture, StoredEvent};

/// How long one chunk may take to be acknowledged upstream.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(30);
/// Messages relayed per flush.
const CHUNK: usize = 1000;

/// One client per chunk that may be in flight (the destination's `concurrency`): a flush
/// reports on everything its client holds, so chunks in flight at once need clients of their
/// own.
pub(crate) struct Forward {
    idle: Mutex<Vec<Analytics>>,
}

impl Forward {
    pub(crate) fn new(host: &str, write_key: &str, clients: usize) -> Result<Forward, String> {
        let client = || {
            Analytics::builder(write_key)
                .host(host)
                // No retries at all, not even the server's Retry-After waits: see the module doc.
                .max_retry_duration(Duration::ZERO)
                // As many per request as 500 KB allows: the upstream commits each request with
                // one fsync, so fewer, fuller requests relay faster.
                .flush_at(trackway_protocol::MAX_BATCH_MESSAGES)
                .build()
                .map_err(|e| format!("forward: {e}"))
        };
        let idle = (0..clients.max(1))
            .map(|_| client())
            .collect::<Result<_, _>>()?;
        Ok(Forward {
            idle: Mutex::new(idle),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Analytics>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A client taken from the pool, returned to it when dropped.
struct Borrowed<'a> {
    pool: &'a Forward,
    client: Option<Analytics>,
}

impl Drop for Borrowed<'_> {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            self.pool.lock().push(client);
        }
    }
}

/// The message as its client sent it.
fn as_sent(body: &str) -> Option<Message> {
    let Ok(Value::Object(mut message)) = serde_json::from_str::<Value>(body) else {
        return None;
    };
    message.remove("receivedAt");
    message.remove("sentAt");
    if let Some(original) = message.remove("originalTimestamp") {
        message.insert("timestamp".into(), original);
    }
    Message::from_json(Value::Object(message)).ok()
}

impl Destination for Forward {
    fn deliver<'a>(&'a self, events: &'a [StoredEvent]) -> BoxFuture<'a, Attempt> {
        Box::pin(async move {
            let Some(client) = self.lock().pop() else {
                return Attempt::Retry {
                    after: None,
                    reason: "no forward client free".into(),
                };
            };
            let borrowed = Borrowed {
                pool: self,
                client: Some(client),
            };
            let Some(client) = borrowed.client.as_ref() else {
                return Attempt::Retry {
                    after: None,
                    reason: "no forward client free".into(),
                };
            };
            for event in events {
                let Some(message) = as_sent(&event.body) else {
                    return Attempt::Reject {
                        reason: format!("event {} is not a message", event.seq),
                    };
                };
                match client.enqueue(message) {
                    Ok(()) => {}
                    // Our own message broke the rules: no retry can help.
                    Err(e @ (EnqueueError::Invalid(_) | EnqueueError::TooLarge { .. })) => {
                        return Attempt::Reject {
                            reason: format!("forward: {e}"),
                        };
                    }
                    // Full or closed: transient; what is queued drains, then the engine retries.
                    Err(e) => {
                        let _ = client.flush_async(FLUSH_TIMEOUT).await;
                        return Attempt::Retry {
                            after: None,
                            reason: format!("forward: {e}"),
                        };
                    }
                }
            }
            let report = client.flush_async(FLUSH_TIMEOUT).await;
            if report.completed && report.pending == 0 && report.delivered == events.len() as u64 {
                Attempt::Delivered
            } else if report.rejected > 0 {
                Attempt::Reject {
                    reason: format!("upstream refused: {report}"),
                }
            } else {
                Attempt::Retry {
                    after: None,
                    reason: format!("upstream: {report}"),
                }
            }
        })
    }

    fn chunk_size(&self) -> usize {
        CHUNK
    }
}
