//! Deadlines: an `Instant` a wait ends at, even when the wait is too long to represent (a
//! `Duration::MAX` timeout means "no deadline", not a panic).

use std::time::{Duration, Instant};

/// `at + wait`, or a time far enough ahead to mean "never" when that would overflow.
pub(crate) fn later(at: Instant, wait: Duration) -> Instant {
    at.checked_add(wait)
        .or_else(|| at.checked_add(FAR_FUTURE))
        .unwrap_or(at)
}

/// Stands in for deadlines too far away to represent.
const FAR_FUTURE: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);
