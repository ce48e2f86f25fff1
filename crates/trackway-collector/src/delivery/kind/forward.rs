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
//!
//! A chunk may be larger than the client's memory budget (1000 messages of up to 32 KB each
//! against 6 MiB). When the budget is full, the relay waits for the client to drain (a flush)
//! and goes on with the rest of the chunk, so every chunk of legal messages goes through and
//! the client never holds more than its budget:
//!
//! ```text
//!  chunk: e1 e2 … e600 │ e601 … e1000
//!         enqueue ─────┤ BudgetFull: flush (all delivered?) ── enqueue the rest ── flush
//!                      └─ not all delivered: stop; flush; the engine retries the chunk
//! ```
//!
//! An attempt succeeds when every message it handed the client was delivered, counted from
//! the client's stats: a flush's report only counts what was delivered while it waited, and a
//! large chunk is partly sent before the final flush. Every attempt ends with a flush, and
//! starts only once the client holds nothing from an earlier one, so those counts are the
//! chunk's own.

use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;
use trackway::{Analytics, EnqueueError, FlushReport, Message, Stats};

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
            relay(client, events).await
        })
    }

    fn chunk_size(&self) -> usize {
        CHUNK
    }
}

/// One attempt at `events` through `client`, which nobody else uses meanwhile. Whatever
/// happens, it flushes before it returns, so nothing of the attempt stays queued in the client
/// to be sent after the engine has moved on; only a flush that runs out of time leaves some,
/// and the next attempt waits for those first.
async fn relay(client: &Analytics, events: &[StoredEvent]) -> Attempt {
    // An earlier attempt whose flush ran out of time may have left messages behind: let them
    // go first, so that the counts below are this chunk's and its messages have the budget.
    if client.stats().pending() > 0 {
        let report = client.flush_async(FLUSH_TIMEOUT).await;
        if !report.completed {
            return Attempt::Retry {
                after: None,
                reason: format!("forward: an earlier attempt is still being sent: {report}"),
            };
        }
    }
    let before = client.stats();
    let stopped = enqueue_all(client, events, &before).await;
    let report = client.flush_async(FLUSH_TIMEOUT).await;
    match stopped {
        Some(failure) => failure,
        None => settle(&before, &client.stats(), &report),
    }
}

/// Hands `events` to `client` in order, waiting for it to drain whenever its budget is full.
/// Returns the failure that stopped it, if one did; what it enqueued is left for the caller
/// to flush.
async fn enqueue_all(
    client: &Analytics,
    events: &[StoredEvent],
    before: &Stats,
) -> Option<Attempt> {
    for event in events {
        let mut drained = false;
        loop {
            let Some(message) = as_sent(&event.body) else {
                return Some(Attempt::Reject {
                    reason: format!("event {} is not a message", event.seq),
                });
            };
            match client.enqueue(message) {
                Ok(()) => break,
                // Full of this chunk's earlier messages: once they are sent, there is room,
                // since the budget holds at least one message of the largest size. The refused
                // message is parsed again (the client took it), which only happens here.
                Err(EnqueueError::BudgetFull { .. }) if !drained => {
                    drained = true;
                    let report = client.flush_async(FLUSH_TIMEOUT).await;
                    match settle(before, &client.stats(), &report) {
                        Attempt::Delivered => {}
                        failure => return Some(failure),
                    }
                }
                // Our own message broke the rules: no retry can help.
                Err(e @ (EnqueueError::Invalid(_) | EnqueueError::TooLarge { .. })) => {
                    return Some(Attempt::Reject {
                        reason: format!("forward: {e}"),
                    });
                }
                // Closed, or still full with nothing of ours left to send: transient.
                Err(e) => {
                    return Some(Attempt::Retry {
                        after: None,
                        reason: format!("forward: {e}"),
                    });
                }
            }
        }
    }
    None
}

/// What became of every message accepted since `before`, once a flush returned `report`:
/// delivered only if the flush completed and the upstream acknowledged each of them.
fn settle(before: &Stats, now: &Stats, report: &FlushReport) -> Attempt {
    let accepted = now.enqueued.saturating_sub(before.enqueued);
    let delivered = now.delivered.saturating_sub(before.delivered);
    if report.completed && delivered == accepted {
        Attempt::Delivered
    } else if now.rejected > before.rejected {
        Attempt::Reject {
            reason: format!(
                "upstream refused {} messages: {report}",
                now.rejected.saturating_sub(before.rejected)
            ),
        }
    } else {
        Attempt::Retry {
            after: None,
            reason: format!("upstream: {delivered} of {accepted} delivered: {report}"),
        }
    }
}
