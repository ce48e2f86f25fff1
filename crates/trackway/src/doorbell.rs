//! The doorbell: how callers wake the worker without paying for a wake-up on every message
//! (`worker.rs`'s note says why the worker does not sleep on the data channel itself).
//!
//! `unclaimed` counts messages sent but not yet drained: callers add one *after* sending, the
//! worker subtracts what it drained. A caller whose add takes it from 0 to 1 knows the worker
//! had drained everything before; if the worker has no batch timer running (`armed` is false)
//! nothing would ever make it look, so the caller rings. The worker clears `armed` before its
//! last drain and drains again while the count is still positive (a message sent after its
//! last look). With sequentially consistent operations on both, either the caller sees
//! `armed == false` and rings, or the worker's subtraction sees the caller's addition and
//! drains the message: no message is left in the channel with the worker asleep and no timer
//! set.
//!
//! The count trigger works the same way. `queued` is how many messages the worker holds, not
//! yet handed on; a caller rings when `queued + unclaimed` reaches a multiple of `flush_at`.
//! Before sleeping, the worker publishes `queued` and then reads `unclaimed`; if the two make
//! a batch (and one could be handed on) it looks again instead. So either the caller sees the
//! new `queued` and rings, or the worker sees the caller's message: a batch that is due never
//! waits for the age timer.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use crossbeam_channel::Sender;

/// The shared half of the protocol above: callers [`Doorbell::sent`]; the worker
/// [`Doorbell::arm`]s, [`Doorbell::claim`]s and [`Doorbell::publish_queued`].
pub(crate) struct Doorbell {
    unclaimed: AtomicI64,
    queued: AtomicI64,
    armed: AtomicBool,
    bell: Sender<()>,
    flush_at: i64,
    batch_bytes: u64,
}

impl Doorbell {
    /// A doorbell ringing on `bell` (a channel of one: a pending ring is enough), for batches
    /// of `flush_at` messages or `batch_bytes` bytes.
    pub(crate) fn new(bell: Sender<()>, flush_at: usize, batch_bytes: usize) -> Doorbell {
        Doorbell {
            unclaimed: AtomicI64::new(0),
            queued: AtomicI64::new(0),
            armed: AtomicBool::new(false),
            bell,
            flush_at: flush_at as i64,
            batch_bytes: batch_bytes as u64,
        }
    }

    /// Called after a message of `cost` bytes was sent; `used_before` is the budget's use
    /// before it was reserved.
    pub(crate) fn sent(&self, used_before: u64, cost: u64) {
        let unclaimed = self.unclaimed.fetch_add(1, Ordering::SeqCst) + 1;
        let batch_of_bytes =
            (used_before + cost) / self.batch_bytes > used_before / self.batch_bytes;
        let starts_a_batch = unclaimed == 1 && !self.armed.load(Ordering::SeqCst);
        let backlog = self.queued.load(Ordering::SeqCst) + unclaimed;
        if starts_a_batch || backlog % self.flush_at == 0 || batch_of_bytes {
            // Full means a ring is already pending: the worker will look.
            let _ = self.bell.try_send(());
        }
    }

    /// The worker: whether it will look again without a ring (a batch timer runs, or a report
    /// will come). Set before its last drain.
    pub(crate) fn arm(&self, armed: bool) {
        self.armed.store(armed, Ordering::SeqCst);
    }

    /// The worker: it drained `drained` messages. True when more were sent meanwhile, so it
    /// must drain again.
    pub(crate) fn claim(&self, drained: usize) -> bool {
        let drained = drained as i64;
        self.unclaimed.fetch_sub(drained, Ordering::SeqCst) - drained > 0
    }

    /// The worker, before sleeping: publishes that it holds `queued` messages and returns how
    /// many were sent since it last drained.
    pub(crate) fn publish_queued(&self, queued: usize) -> usize {
        self.queued.store(queued as i64, Ordering::SeqCst);
        self.unclaimed.load(Ordering::SeqCst).max(0) as usize
    }
}
