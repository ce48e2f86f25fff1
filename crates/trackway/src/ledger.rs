//! The ledger: where every message's fate is written down exactly once.
//!
//! Callers, the worker, the encoder and the sender share one [`Ledger`]. It owns the counters
//! behind [`crate::Stats`], the memory [`Budget`], and the user's [`Observer`];
//! [`Ledger::settle`] (reached through `settle_pending` before a message is encoded and
//! `settle_encoded` after) is the single place an accepted message leaves the client, so the
//! budget is always released and the outcome always counted and reported together.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::batch::{Encoded, Pending};
use crate::budget::Budget;
use crate::outcome::{DropReason, FlushReport, LastErrors, Observer, Outcome, panic_message};
use crate::stats::{Counters, Stats};

pub(crate) struct Ledger {
    pub(crate) counters: Counters,
    pub(crate) budget: Budget,
    pub(crate) closed: AtomicBool,
    observer: Option<Arc<dyn Observer>>,
    /// With a spool, a message a shutdown gives up on stays in it: not a drop.
    spool: bool,
    /// Why messages failed to arrive, for [`FlushReport`]'s one line.
    errors: Mutex<ErrorLog>,
}

/// The errors a report explains its counts with.
#[derive(Debug, Default)]
struct ErrorLog {
    /// The failure of the last request, until a request gets an answer that settles it: a
    /// drop after retries, or at a shutdown while retrying, is explained by this rather than
    /// by its own detail (`shutdown deadline passed`), which says when, not why.
    request: Option<String>,
    last: LastErrors,
}

impl Ledger {
    pub(crate) fn new(budget: Budget, observer: Option<Arc<dyn Observer>>) -> Ledger {
        Ledger {
            counters: Counters::default(),
            budget,
            closed: AtomicBool::new(false),
            observer,
            spool: false,
            errors: Mutex::default(),
        }
    }

    /// The ledger of a client with a spool: messages a shutdown abandons stay in the spool,
    /// unsettled, for the next start.
    pub(crate) fn with_spool(mut self) -> Ledger {
        self.spool = true;
        self
    }

    /// The report of what happened since `start`, with the last error behind each count.
    pub(crate) fn report_since(&self, start: &Stats, completed: bool) -> FlushReport {
        let mut report = self.stats().report_since(start, completed);
        report.errors = self.error_log().last.clone();
        report
    }

    /// Notes that a request failed with `error` and will be retried or given up.
    pub(crate) fn request_failed(&self, error: String) {
        self.error_log().request = Some(error);
    }

    /// The failure of the last request, unless a later one was answered.
    pub(crate) fn request_error(&self) -> Option<String> {
        self.error_log().request.clone()
    }

    /// Notes that a request got an answer that settles its messages (delivered or rejected).
    pub(crate) fn request_settled(&self) {
        self.error_log().request = None;
    }

    fn error_log(&self) -> std::sync::MutexGuard<'_, ErrorLog> {
        // The log holds only strings, whole after any panic.
        self.errors.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn stats(&self) -> Stats {
        self.counters.snapshot(self.budget.used())
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Records that `messages`, not yet encoded, reached `outcome`.
    pub(crate) fn settle_pending(&self, messages: &[Pending], outcome: &Outcome<'_>) {
        self.settle(
            messages.len(),
            messages.iter().map(|m| m.cost).sum(),
            outcome,
            || messages.iter().map(Pending::message_id),
        );
    }

    /// Records that the messages of `part` (a range of `batch`'s slots) reached `outcome`.
    pub(crate) fn settle_encoded(
        &self,
        batch: &Encoded,
        part: Range<usize>,
        outcome: &Outcome<'_>,
    ) {
        let slots = &batch.slots[part];
        self.settle(
            slots.len(),
            slots.iter().map(|slot| slot.cost).sum(),
            outcome,
            || slots.iter().map(|slot| batch.message_id(slot)),
        );
    }

    /// Keeps why `outcome` (when not a delivery) happened, for the next report.
    fn note_error(&self, outcome: &Outcome<'_>) {
        match outcome {
            Outcome::Delivered => {}
            Outcome::Rejected { reason, .. } => {
                self.error_log().last.rejected = Some((*reason).to_owned());
            }
            Outcome::Dropped { reason, detail } => {
                let mut log = self.error_log();
                let why = match reason {
                    DropReason::RetriesExhausted
                    | DropReason::RetryWindowExceeded
                    | DropReason::Shutdown => log.request.clone(),
                    _ => None,
                };
                log.last.dropped[reason.index()] =
                    Some(why.unwrap_or_else(|| (*detail).to_owned()));
            }
        }
    }

    /// Counts `count` messages under `outcome`, releases their `cost` from the budget and
    /// tells the observer about each of `ids` (only called if there is an observer).
    fn settle<I: Iterator<Item = String>>(
        &self,
        count: usize,
        cost: u64,
        outcome: &Outcome<'_>,
        ids: impl FnOnce() -> I,
    ) {
        let n = count as u64;
        if self.spool
            && matches!(
                outcome,
                Outcome::Dropped {
                    reason: DropReason::Shutdown,
                    ..
                }
            )
        {
            // Still in the spool: pending here, delivered by the next start.
            self.budget.release(cost);
            return;
        }
        match outcome {
            Outcome::Delivered => self.counters.delivered(n),
            Outcome::Rejected { .. } => self.counters.rejected(n),
            Outcome::Dropped { reason, .. } => self.counters.dropped(*reason, n),
        }
        self.note_error(outcome);
        self.budget.release(cost);
        if let Some(observer) = &self.observer {
            // The user's code: a panic in it must not take a client thread down.
            let notified = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                for id in ids() {
                    observer.on_outcome(&id, outcome);
                }
            }));
            if let Err(panic) = notified {
                tracing::error!(
                    "trackway: the observer panicked: {}",
                    panic_message(&*panic)
                );
            }
        }
    }
}
