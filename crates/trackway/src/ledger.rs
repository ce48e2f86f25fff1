//! The ledger: where every message's fate is written down exactly once.
//!
//! Callers, the worker, the encoder and the sender share one [`Ledger`]. It owns the counters
//! behind [`crate::Stats`], the memory [`Budget`], and the user's [`Observer`];
//! [`Ledger::settle`] (reached through `settle_pending` before a message is encoded and
//! `settle_encoded` after) is the single place an accepted message leaves the client, so the
//! budget is always released and the outcome always counted and reported together.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::batch::{Encoded, Pending};
use crate::budget::Budget;
use crate::outcome::{Observer, Outcome, panic_message};
use crate::stats::{Counters, Stats};

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
        match outcome {
            Outcome::Delivered => self.counters.delivered(n),
            Outcome::Rejected { .. } => self.counters.rejected(n),
            Outcome::Dropped { reason, .. } => self.counters.dropped(*reason, n),
        }
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
