//! Counters shared by the callers, the worker and the sender; read with
//! [`crate::Analytics::stats`].

use std::sync::atomic::{AtomicU64, Ordering};

use crate::outcome::{DropCounts, DropReason, FlushReport};

/// A snapshot of the client's counters since it was built.
///
/// Non-exhaustive: later versions will count more, without a breaking change.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Messages accepted by a call.
    pub enqueued: u64,
    /// Messages the server acknowledged.
    pub delivered: u64,
    /// Retried requests (each retry of a batch counts once).
    pub retried: u64,
    /// Messages the server refused for good.
    pub rejected: u64,
    /// Delivered messages the server said it already had (by `messageId`), from the
    /// `duplicates` count of its answer (our collector sends one): stored once, counted in
    /// `delivered` too. A resent batch (a retry, a resumed import) shows up here.
    pub duplicates: u64,
    /// Messages dropped, by reason, whether refused at the call or given up later.
    pub dropped: DropCounts,
    /// Bytes held now: queued, in flight and waiting to retry, counted against the budget.
    pub bytes_queued: u64,
    /// Request body bytes sent, as on the wire (compressed when gzip is on), retries included.
    pub bytes_sent: u64,
    /// With a spool ([`crate::Builder::spool_dir`]): messages in it not yet settled, recovered
    /// ones included (what a crash now would leave for the next start). Zero without one.
    pub spooled: u64,
    /// Messages found in the spool at start, left by earlier processes (counted in
    /// `pending` until they are settled).
    pub recovered: u64,
    /// Torn records cut off the spool at start: writes a crash interrupted.
    pub truncated: u64,
}

impl Stats {
    /// Accepted messages with no outcome yet.
    pub fn pending(&self) -> u64 {
        let accepted_drops: u64 = [
            DropReason::RetriesExhausted,
            DropReason::RetryWindowExceeded,
            DropReason::Shutdown,
        ]
        .into_iter()
        .map(|r| self.dropped.get(r))
        .sum();
        (self.enqueued + self.recovered)
            .saturating_sub(self.delivered + self.rejected + accepted_drops)
    }

    /// The report of what happened between `earlier` and `self`.
    pub(crate) fn report_since(&self, earlier: &Stats, completed: bool) -> FlushReport {
        FlushReport {
            delivered: self.delivered.saturating_sub(earlier.delivered),
            rejected: self.rejected.saturating_sub(earlier.rejected),
            dropped: self.dropped.saturating_sub(&earlier.dropped),
            pending: self.pending(),
            spooled: self.spooled,
            recovered: self.recovered,
            completed,
            errors: Default::default(),
        }
    }
}

/// The live counters.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    enqueued: AtomicU64,
    delivered: AtomicU64,
    retried: AtomicU64,
    bytes_sent: AtomicU64,
    rejected: AtomicU64,
    duplicates: AtomicU64,
    dropped: [AtomicU64; DropReason::ALL.len()],
    recovered: AtomicU64,
    truncated: AtomicU64,
    spool: std::sync::atomic::AtomicBool,
}

impl Counters {
    pub(crate) fn enqueued(&self) {
        self.enqueued.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn delivered(&self, n: u64) {
        self.delivered.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn retried(&self) {
        self.retried.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn sent(&self, bytes: usize) {
        self.bytes_sent.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub(crate) fn rejected(&self, n: u64) {
        self.rejected.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn duplicates(&self, n: u64) {
        self.duplicates.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn dropped(&self, reason: DropReason, n: u64) {
        self.dropped[reason.index()].fetch_add(n, Ordering::Relaxed);
    }

    /// The client has a spool, from which it recovered `recovery`.
    pub(crate) fn spool_opened(&self, recovery: &crate::spool::Recovery) {
        self.spool.store(true, Ordering::Relaxed);
        self.recovered.store(recovery.messages, Ordering::Relaxed);
        self.truncated
            .store(recovery.truncated_tails, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self, bytes_queued: u64) -> Stats {
        let mut stats = Stats {
            enqueued: self.enqueued.load(Ordering::Relaxed),
            delivered: self.delivered.load(Ordering::Relaxed),
            retried: self.retried.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            duplicates: self.duplicates.load(Ordering::Relaxed),
            dropped: DropCounts::from_array(std::array::from_fn(|i| {
                self.dropped[i].load(Ordering::Relaxed)
            })),
            bytes_queued,
            bytes_sent: self.bytes_sent.load(Ordering::Relaxed),
            spooled: 0,
            recovered: self.recovered.load(Ordering::Relaxed),
            truncated: self.truncated.load(Ordering::Relaxed),
        };
        if self.spool.load(Ordering::Relaxed) {
            // Every accepted message is in the spool until it is settled.
            stats.spooled = stats.pending();
        }
        stats
    }
}
