//! The sender thread: delivers one batch at a time, retrying and splitting as needed.
//!
//! For each batch it writes a fresh envelope per attempt (a new `sentAt`, the same message
//! bytes and so the same messageIds), compresses it (gzip, or zstd where the server takes
//! it: [`crate::compression`]), and asks the [`Transport`]. A 415 to a zstd body sends it
//! again at once in gzip. The outcome of each
//! attempt goes through [`retry::decide`]:
//!
//! - transient failures wait (the server's `Retry-After`, or jittered exponential backoff) and
//!   try again, until the retry count or the retry window runs out;
//! - a 400 or 413 on a batch of several messages splits it in halves and sends each, so one bad
//!   message cannot sink its neighbours: only the messages the server refuses on their own are
//!   reported as rejected;
//! - anything else is final.
//!
//! Waits are spent in `recv_timeout` on the cancel channel, so a shutdown deadline interrupts
//! them at once.
//!
//! The first attempt's body is written ahead by the encoder thread ([`crate::encoder`]):
//! while one batch is on the wire the next is being encoded and gzipped, so that work and the
//! server's overlap instead of taking turns. A body that waited longer than [`STALE_AFTER`]
//! (the request before it was slow or retried) is written again, so `sentAt` stays the time
//! of sending.

use std::ops::Range;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};

use crate::answer;
use crate::batch::{Encoded, Prepared};
use crate::body::{BodyWriter, STALE_AFTER, request_headers};
use crate::compression::{BodyEncoding, Heard, Negotiation};
use crate::config::Validated;
use crate::ledger::Ledger;
use crate::outcome::{DropReason, Outcome, panic_message};
use crate::retry::{self, Decision, RetryPolicy};
use crate::transport::{Request, Transport};

/// How one part of a batch ended.
enum Settlement {
    /// The server took it (a 2xx); its answer may list messages it stored as rejected
    /// ([`crate::answer`]).
    Delivered {
        status: u16,
        answer: String,
    },
    Rejected {
        status: u16,
        reason: String,
        splittable: bool,
    },
    Dropped {
        reason: DropReason,
        detail: String,
    },
}

pub(crate) struct BatchSender {
    ledger: Arc<Ledger>,
    transport: Arc<dyn Transport>,
    policy: RetryPolicy,
    url: String,
    /// Headers sent on every attempt: content type, auth, user agent.
    headers: Vec<(&'static str, String)>,
    writer: BodyWriter,
    /// The encoding of the next body, which answers change.
    negotiation: Arc<Negotiation>,
    batches: Receiver<Prepared>,
    done: Sender<u64>,
    cancel: Receiver<()>,
    /// The body the encoder wrote for the current batch's first attempt, if still fresh,
    /// and its encoding.
    prepared: Option<(Vec<u8>, BodyEncoding)>,
    body: Vec<u8>,
}

pub(crate) struct SenderChannels {
    pub(crate) batches: Receiver<Prepared>,
    pub(crate) done: Sender<u64>,
    pub(crate) cancel: Receiver<()>,
}

impl BatchSender {
    pub(crate) fn new(config: &Validated, ledger: Arc<Ledger>, channels: SenderChannels) -> Self {
        let headers = request_headers(&config.write_key);
        BatchSender {
            ledger,
            transport: Arc::clone(&config.transport),
            policy: config.retry.clone(),
            url: config.batch_url.clone(),
            headers,
            writer: BodyWriter::new(config),
            negotiation: Arc::clone(&config.negotiation),
            batches: channels.batches,
            done: channels.done,
            cancel: channels.cancel,
            prepared: None,
            body: Vec::new(),
        }
    }

    /// Delivers batches until the encoder goes away.
    pub(crate) fn run(mut self) {
        while let Ok(Prepared {
            end,
            batch,
            parts,
            body,
            encoding,
            written_at,
        }) = self.batches.recv()
        {
            self.prepared = (written_at.elapsed() <= STALE_AFTER).then_some((body, encoding));
            self.deliver(&batch, parts);
            // Once the worker is gone (every handle dropped after a shutdown), nobody reads
            // this; the batches still coming from the encoder are settled all the same: the
            // cancel channel is gone too, so each is dropped at once and counted.
            let _ = self.done.send(end);
        }
    }

    fn deliver(&mut self, batch: &Encoded, mut parts: std::collections::VecDeque<Range<usize>>) {
        let started = Instant::now();
        while let Some(part) = parts.pop_front() {
            match self.send_with_retries(batch, part.clone(), started) {
                Settlement::Rejected {
                    splittable: true,
                    status,
                    reason,
                } if part.len() > 1 => {
                    tracing::warn!(
                        status,
                        messages = part.len(),
                        "trackway: server refused a batch ({reason}); splitting it to find the \
                         messages at fault"
                    );
                    let middle = part.start + part.len() / 2;
                    parts.push_front(middle..part.end);
                    parts.push_front(part.start..middle);
                }
                Settlement::Delivered { status, answer } => {
                    self.settle_delivered(batch, part, status, &answer);
                }
                Settlement::Rejected { status, reason, .. } => {
                    tracing::error!(
                        status,
                        messages = part.len(),
                        "trackway: server rejected messages for good: {reason}"
                    );
                    self.ledger.settle_encoded(
                        batch,
                        part,
                        &Outcome::Rejected {
                            status,
                            reason: &reason,
                        },
                    );
                }
                Settlement::Dropped { reason, detail } => {
                    tracing::error!(
                        messages = part.len(),
                        %reason,
                        "trackway: dropped messages: {detail}"
                    );
                    self.ledger.settle_encoded(
                        batch,
                        part,
                        &Outcome::Dropped {
                            reason,
                            detail: &detail,
                        },
                    );
                }
            }
        }
    }

    /// Settles `part`, which the server took with `status`: delivered, except the messages
    /// its `answer` lists as rejected, which are rejected with the server's reason.
    fn settle_delivered(&self, batch: &Encoded, part: Range<usize>, status: u16, answer: &str) {
        let answer = answer::read(answer).unwrap_or_else(|error| {
            tracing::warn!(
                messages = part.len(),
                "trackway: the server's answer lists rejected messages but cannot be read \
                 ({error}); counting the batch as delivered"
            );
            answer::Answer::default()
        });
        if answer.duplicates > 0 {
            self.ledger.counters.duplicates(answer.duplicates);
        }
        let listed = answer.rejected;
        if listed.is_empty() {
            tracing::debug!(messages = part.len(), "trackway: batch delivered");
            self.ledger.settle_encoded(batch, part, &Outcome::Delivered);
            return;
        }
        let ids: Vec<String> = batch.slots[part.clone()]
            .iter()
            .map(|slot| batch.message_id(slot))
            .collect();
        let (reasons, unmatched) = answer::match_to_messages(&listed, &ids);
        if !unmatched.is_empty() {
            tracing::warn!(
                entries = unmatched.len(),
                "trackway: the server listed rejected messages that were not in the request"
            );
        }
        if let Some(first) = reasons.iter().flatten().next() {
            tracing::error!(
                status,
                messages = reasons.iter().flatten().count(),
                "trackway: the server stored messages as rejected: {first}"
            );
        }
        // Runs of neighbours with the same fate are settled together.
        let mut start = 0;
        while start < reasons.len() {
            let end = (start + 1..reasons.len())
                .find(|&i| reasons[i] != reasons[start])
                .unwrap_or(reasons.len());
            let outcome = match reasons[start] {
                None => Outcome::Delivered,
                Some(reason) => Outcome::Rejected { status, reason },
            };
            self.ledger
                .settle_encoded(batch, part.start + start..part.start + end, &outcome);
            start = end;
        }
    }

    /// Sends `part` until it settles. `started` is when its batch was first tried: the retry
    /// window covers the batch, however it is split.
    fn send_with_retries(
        &mut self,
        batch: &Encoded,
        part: Range<usize>,
        started: Instant,
    ) -> Settlement {
        let mut attempts = 0_u32;
        let mut retries = 0_u32;
        loop {
            if self.cancelled() {
                return Settlement::Dropped {
                    reason: DropReason::Shutdown,
                    detail: "shutdown deadline passed while retrying".into(),
                };
            }
            let (result, sent) = self.attempt(batch, part.clone(), attempts);
            attempts += 1;
            if let Ok(response) = &result
                && self.negotiation.heard(response, sent) == Heard::SendAgain
            {
                // The server does not take zstd after all: the same messages go out again
                // at once, in gzip now. Not a failure, so neither waited for nor counted.
                continue;
            }
            let now = SystemTime::now();
            let (wait, reason) = match retry::decide(&result, now) {
                Decision::Delivered => {
                    self.ledger.request_settled();
                    let (status, answer) = result.map_or((200, String::new()), |response| {
                        (response.status, response.body)
                    });
                    return Settlement::Delivered { status, answer };
                }
                Decision::Reject {
                    status,
                    reason,
                    splittable,
                } => {
                    self.ledger.request_settled();
                    return Settlement::Rejected {
                        status,
                        reason,
                        splittable,
                    };
                }
                // A server's wait shorter than the schedule's (`Retry-After: 0`) is raised
                // and counts as a retry: it must not turn into a tight loop.
                Decision::Retry { after, reason } => {
                    // Named with the URL: "connect failed" alone does not say which host (a
                    // default one the user never chose, perhaps).
                    self.ledger
                        .request_failed(format!("{}: {reason}", self.url));
                    let next = self.policy.retry_wait(retries, after, fastrand::f64());
                    if next.counts {
                        retries += 1;
                        if retries > self.policy.max_retries {
                            return Settlement::Dropped {
                                reason: DropReason::RetriesExhausted,
                                detail: format!("gave up after {attempts} attempts: {reason}"),
                            };
                        }
                    }
                    (next.wait, reason)
                }
            };
            if started.elapsed().saturating_add(wait) > self.policy.max_retry_duration {
                return Settlement::Dropped {
                    reason: DropReason::RetryWindowExceeded,
                    // Given up before the window's end when the next wait would pass it: say
                    // so, rather than that the window ran out.
                    detail: format!(
                        "gave up after {:.1?}, as the next retry would pass the retry window of \
                         {:?}: {reason}",
                        started.elapsed(),
                        self.policy.max_retry_duration
                    ),
                };
            }
            tracing::warn!(
                attempt = attempts,
                wait_ms = wait.as_millis() as u64,
                messages = part.len(),
                "trackway: request failed, will retry: {reason}"
            );
            self.ledger.counters.retried();
            match self.cancel.recv_timeout(wait) {
                Err(RecvTimeoutError::Timeout) => {}
                // Disconnected: a shutdown deadline passed. (Nothing is ever sent on it.)
                _ => continue,
            }
        }
    }

    /// One HTTP request for `part`, with a `sentAt` of now, and the encoding of its body.
    fn attempt(
        &mut self,
        batch: &Encoded,
        part: Range<usize>,
        previous_attempts: u32,
    ) -> (
        Result<crate::transport::Response, crate::transport::TransportError>,
        BodyEncoding,
    ) {
        // The encoder's body serves the first attempt of the batch's first part (the first
        // call here), unless the encoding has changed since; retries and later parts are
        // written anew, with a fresh `sentAt`.
        let wanted = self.negotiation.current();
        let encoding = match self.prepared.take() {
            Some((prepared, encoding)) if previous_attempts == 0 && encoding == wanted => {
                self.body = prepared;
                encoding
            }
            _ => self.writer.write(batch, part, wanted, &mut self.body),
        };
        let body = &self.body;
        let mut headers = self.headers.clone();
        if let Some(name) = encoding.header() {
            headers.push(("content-encoding", name.to_owned()));
        }
        if previous_attempts > 0 {
            headers.push(("x-retry-count", previous_attempts.to_string()));
        }
        self.ledger.counters.sent(body.len());
        let request = Request {
            url: &self.url,
            headers: &headers,
            body,
        };
        // A panicking custom transport must not take the sender thread (and its batch) down.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.transport.send(&request)
        }))
        .unwrap_or_else(|panic| {
            Err(crate::transport::TransportError::new(
                crate::transport::TransportErrorKind::Other,
                format!("the transport panicked: {}", panic_message(&*panic)),
            ))
        });
        (result, encoding)
    }

    fn cancelled(&self) -> bool {
        matches!(self.cancel.try_recv(), Err(TryRecvError::Disconnected))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::Budget;
    use crate::testing::Recorder;
    use crate::{Builder, Overflow};

    /// A batch of `count` tiny messages, their budget taken as a call would.
    fn prepared(ledger: &Ledger, end: u64, count: usize) -> Prepared {
        let prepared = Prepared::tiny(end, count);
        for slot in &prepared.batch.slots {
            ledger.budget.acquire(slot.cost).unwrap();
            ledger.counters.enqueued();
        }
        prepared
    }

    #[test]
    fn batches_arriving_after_the_worker_is_gone_are_still_settled() {
        let recorder = Recorder::new();
        let config = Builder::new("wk-0123456789")
            .transport(recorder.clone())
            .validate()
            .unwrap();
        let ledger = Arc::new(Ledger::new(Budget::new(1 << 20, Overflow::Reject), None));
        // After a shutdown, every handle dropped: the worker, which reads `done` and holds
        // the cancel channel, is gone; the encoder still hands over the batches it had.
        let (batches_tx, batches) = crossbeam_channel::unbounded();
        let (done, done_rx) = crossbeam_channel::unbounded();
        let (cancel_tx, cancel) = crossbeam_channel::bounded(0);
        drop((done_rx, cancel_tx));
        batches_tx.send(prepared(&ledger, 2, 2)).unwrap();
        batches_tx.send(prepared(&ledger, 5, 3)).unwrap();
        drop(batches_tx);
        let channels = SenderChannels {
            batches,
            done,
            cancel,
        };
        BatchSender::new(&config, Arc::clone(&ledger), channels).run();
        let stats = ledger.stats();
        assert_eq!(stats.dropped.get(DropReason::Shutdown), 5, "{stats:?}");
        assert_eq!(stats.pending(), 0, "{stats:?}");
        assert_eq!(ledger.budget.used(), 0);
        assert!(
            recorder.requests().is_empty(),
            "nothing is sent after a shutdown"
        );
    }
}
