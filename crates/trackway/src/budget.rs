//! The memory budget: one byte count covering every message the client holds, whether queued,
//! in flight or waiting to retry.
//!
//! A message reserves its cost when it is accepted and releases it when it reaches an outcome,
//! so the budget bounds memory however long the server is away. Reserving is one atomic add on
//! the fast path; only callers configured to wait for room ever touch the lock.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// Bytes charged per message on top of the heap memory it holds: its slot in the queues.
pub(crate) const PER_MESSAGE_OVERHEAD: usize = std::mem::size_of::<crate::batch::Pending>();

/// What the largest message the API accepts costs once encoded: the smallest budget allowed.
pub(crate) const LARGEST_ENCODED_COST: u64 =
    (trackway_protocol::MAX_MESSAGE_BYTES + PER_MESSAGE_OVERHEAD) as u64;

/// What a call does when the budget is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Overflow {
    /// Return [`crate::EnqueueError::BudgetFull`] at once. Never blocks the caller.
    Reject,
    /// Wait up to this long for room, then return [`crate::EnqueueError::BudgetFull`].
    Wait(Duration),
}

#[derive(Debug)]
pub(crate) struct Budget {
    limit: u64,
    used: AtomicU64,
    overflow: Overflow,
    waiters: AtomicUsize,
    lock: Mutex<()>,
    room: Condvar,
}

impl Budget {
    pub(crate) fn new(limit: u64, overflow: Overflow) -> Budget {
        Budget {
            limit,
            used: AtomicU64::new(0),
            overflow,
            waiters: AtomicUsize::new(0),
            lock: Mutex::new(()),
            room: Condvar::new(),
        }
    }

    pub(crate) fn limit(&self) -> u64 {
        self.limit
    }

    pub(crate) fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Reserves `cost` bytes, waiting for room if so configured. Returns the bytes in use
    /// before the reservation, or `None` if there is no room.
    pub(crate) fn acquire(&self, cost: u64) -> Option<u64> {
        if let Some(before) = self.try_acquire(cost) {
            return Some(before);
        }
        if cost > self.limit {
            // It would never fit: waiting cannot help.
            return None;
        }
        let Overflow::Wait(patience) = self.overflow else {
            return None;
        };
        let deadline = crate::deadline::later(Instant::now(), patience);
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let mut guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let acquired = loop {
            if let Some(before) = self.try_acquire(cost) {
                break Some(before);
            }
            let now = Instant::now();
            if now >= deadline {
                break None;
            }
            guard = match self.room.wait_timeout(guard, deadline - now) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        };
        drop(guard);
        self.waiters.fetch_sub(1, Ordering::SeqCst);
        acquired
    }

    /// Reserves `cost` if it fits. A failed attempt never changes `used`, so it cannot make a
    /// concurrent smaller reservation fail.
    fn try_acquire(&self, cost: u64) -> Option<u64> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(cost).filter(|total| *total <= self.limit)
            })
            .ok()
    }

    /// Reserves `cost` whether it fits or not: what a client finds in its spool at start.
    pub(crate) fn charge(&self, cost: u64) {
        self.used.fetch_add(cost, Ordering::AcqRel);
    }

    pub(crate) fn release(&self, cost: u64) {
        self.used.fetch_sub(cost, Ordering::AcqRel);
        if self.waiters.load(Ordering::SeqCst) > 0 {
            // Taking the lock orders this notify after a waiter's failed try and before its
            // wait, so no wake-up is lost.
            drop(self.lock.lock().unwrap_or_else(|e| e.into_inner()));
            self.room.notify_all();
        }
    }
}
