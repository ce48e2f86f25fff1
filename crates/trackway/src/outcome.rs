//! What became of each message, and of each flush: every message the client accepts ends in
//! exactly one [`Outcome`], and every message it refuses is counted with a [`DropReason`].

use std::fmt;

/// Why a message was dropped instead of delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DropReason {
    /// Refused at the call: the message broke the API's rules.
    Invalid,
    /// Refused at the call: the encoded message was over 32 KB.
    TooLarge,
    /// Refused at the call: the memory budget (with a spool, the spool's size limit) was full.
    BudgetFull,
    /// Refused at the call: the client was shut down.
    Closed,
    /// Accepted, then given up after the configured number of retries.
    RetriesExhausted,
    /// Accepted, then given up because retrying its batch took longer than allowed.
    RetryWindowExceeded,
    /// Accepted, but still undelivered when a shutdown's deadline passed. (Not with a spool:
    /// there such messages stay in the spool, for the next start to deliver.)
    Shutdown,
    /// Refused at the call: the spool could not take the message (a new segment could not be
    /// created: the disk is full, or the directory is gone).
    SpoolUnavailable,
}

impl DropReason {
    /// Every reason, in a fixed order (the order of [`DropCounts`]). A slice, not an array:
    /// an array's length would be part of the API, and a new reason would break it.
    pub const ALL: &'static [DropReason] = &[
        DropReason::Invalid,
        DropReason::TooLarge,
        DropReason::BudgetFull,
        DropReason::Closed,
        DropReason::RetriesExhausted,
        DropReason::RetryWindowExceeded,
        DropReason::Shutdown,
        DropReason::SpoolUnavailable,
    ];

    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// A short lower-case name, for logs and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Invalid => "invalid",
            DropReason::TooLarge => "too_large",
            DropReason::BudgetFull => "budget_full",
            DropReason::Closed => "closed",
            DropReason::RetriesExhausted => "retries_exhausted",
            DropReason::RetryWindowExceeded => "retry_window_exceeded",
            DropReason::Shutdown => "shutdown",
            DropReason::SpoolUnavailable => "spool_unavailable",
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Counts of dropped messages, one per [`DropReason`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DropCounts([u64; DropReason::ALL.len()]);

impl DropCounts {
    /// How many were dropped for `reason`.
    pub fn get(&self, reason: DropReason) -> u64 {
        self.0[reason.index()]
    }

    /// All drops, whatever the reason.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// `(reason, count)` for every reason with a non-zero count.
    pub fn iter(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL
            .iter()
            .copied()
            .map(|r| (r, self.get(r)))
            .filter(|(_, n)| *n > 0)
    }

    pub(crate) fn from_array(counts: [u64; DropReason::ALL.len()]) -> DropCounts {
        DropCounts(counts)
    }

    pub(crate) fn saturating_sub(&self, earlier: &DropCounts) -> DropCounts {
        DropCounts(std::array::from_fn(|i| {
            self.0[i].saturating_sub(earlier.0[i])
        }))
    }
}

impl fmt::Display for DropCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (reason, count) in self.iter() {
            write!(f, "{}{reason}={count}", if first { "" } else { ", " })?;
            first = false;
        }
        if first {
            f.write_str("none")?;
        }
        Ok(())
    }
}

/// The final outcome of one accepted message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome<'a> {
    /// The server acknowledged it (2xx) and did not list it as rejected.
    Delivered,
    /// The server refused it for good: any status the retry policy does not retry (4xx other
    /// than 408, 410, 429 and 460; 3xx; 501, 505, 511). When a 400 or 413
    /// refuses a batch, the client splits it until the refusal names single messages, so a
    /// `Rejected` message really is one the server will not take. Also a message the server
    /// took but listed as rejected in its 2xx answer (our collector stores an invalid message
    /// that way, marked with its reason): then `status` is that 2xx.
    Rejected {
        /// The HTTP status.
        status: u16,
        /// The status and the start of the server's explanation.
        reason: &'a str,
    },
    /// The client gave up on it.
    Dropped {
        /// Why.
        reason: DropReason,
        /// The last error seen, if any.
        detail: &'a str,
    },
}

/// Receives the outcome of every accepted message. Install one with
/// [`crate::Builder::observer`].
///
/// Called on the client's background threads: return quickly, and do not call
/// [`crate::Analytics::flush`] from here.
pub trait Observer: Send + Sync + 'static {
    /// `message_id` has reached `outcome`.
    fn on_outcome(&self, message_id: &str, outcome: &Outcome<'_>);

    /// The client found messages in its spool at start ([`crate::Builder::spool_dir`]),
    /// or torn records it cut off. Called once, by [`crate::Builder::build`], before it
    /// returns; the messages' outcomes follow through [`Observer::on_outcome`].
    fn on_spool_recovered(&self, recovery: &crate::Recovery) {
        let _ = recovery;
    }
}

/// What a [`crate::Analytics::flush`] or [`crate::Analytics::shutdown`] saw happen.
///
/// Counts cover the messages that reached an outcome while the call ran. Its `Display` is one
/// line that says why when something was not delivered: the server's last reason for the
/// rejections and the last error behind each drop reason, such as `0 delivered, 1 rejected
/// (HTTP 401: unknown write key), dropped: none, 0 pending`, so that a wrong key or an
/// unreachable host shows without an [`Observer`] or a log set-up. Non-exhaustive: later
/// versions will report more, without a breaking change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
#[must_use = "the report says whether everything was delivered"]
pub struct FlushReport {
    /// Messages the server acknowledged.
    pub delivered: u64,
    /// Messages the server refused for good.
    pub rejected: u64,
    /// Messages dropped, by reason (including those refused at the call during the flush).
    pub dropped: DropCounts,
    /// Accepted messages with no outcome yet when the call returned.
    pub pending: u64,
    /// With a spool: messages in it not yet settled when the call returned (after a shutdown,
    /// what the next start delivers). Zero without one.
    pub spooled: u64,
    /// Messages the client found in its spool at start ([`crate::Stats::recovered`]).
    pub recovered: u64,
    /// Every message accepted before the call reached an outcome before it returned. `false`
    /// means the deadline passed first.
    pub completed: bool,
    /// Why, for the counts above that are not zero.
    pub(crate) errors: LastErrors,
}

/// The last error behind each way a message can fail to arrive: what a user reads to learn
/// why, without an [`Observer`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LastErrors {
    /// The server's reason for the last rejection.
    pub(crate) rejected: Option<String>,
    /// The last error behind a drop, by [`DropReason::index`].
    pub(crate) dropped: [Option<String>; DropReason::ALL.len()],
}

impl FlushReport {
    /// The server's reason for the last message it rejected during the call (`HTTP 401:
    /// unknown write key`), if it rejected any.
    pub fn last_rejection(&self) -> Option<&str> {
        self.errors
            .rejected
            .as_deref()
            .filter(|_| self.rejected > 0)
    }

    /// The last error behind the drops for `reason` during the call (for a drop after
    /// retries, the last request's failure, naming the URL), if there were any.
    pub fn last_error(&self, reason: DropReason) -> Option<&str> {
        self.errors.dropped[reason.index()]
            .as_deref()
            .filter(|_| self.dropped.get(reason) > 0)
    }

    /// True when everything was delivered: completed, nothing refused or dropped.
    pub fn is_clean(&self) -> bool {
        self.completed && self.rejected == 0 && self.dropped.total() == 0 && self.pending == 0
    }
}

impl fmt::Display for FlushReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} delivered, {} rejected",
            self.delivered, self.rejected
        )?;
        if let Some(reason) = self.last_rejection() {
            write!(f, " ({reason})")?;
        }
        f.write_str(", dropped: ")?;
        if self.dropped.total() == 0 {
            f.write_str("none")?;
        }
        for (i, (reason, count)) in self.dropped.iter().enumerate() {
            write!(f, "{}{reason}={count}", if i == 0 { "" } else { ", " })?;
            if let Some(error) = self.last_error(reason) {
                write!(f, " (last error: {error})")?;
            }
        }
        write!(f, ", {} pending", self.pending)?;
        if self.spooled > 0 {
            write!(f, ", {} in the spool", self.spooled)?;
        }
        if !self.completed {
            f.write_str(" (deadline passed)")?;
        }
        Ok(())
    }
}

/// The text of a caught panic, for reports.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned())
}
