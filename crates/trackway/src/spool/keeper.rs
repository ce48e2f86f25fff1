//! The spool's thread: every system call the spool needs besides the ones at build, so that
//! neither the calls nor the worker make them. It syncs written records to disk every
//! `spool_sync_interval` while there are any, makes the next segment ahead of need, unmaps
//! and syncs a segment the writer left, and deletes settled segments. It holds the
//! directory's lock, and ends (syncing a last time, then unlocking) when the client is gone.

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, never, select};
use memmap2::MmapMut;

use super::{Segment, Shared, lock};

/// Work for the keeper.
pub(super) enum Chore {
    /// Records were written since the last sync.
    Sync,
    /// The writer moved to `tail` (the spare, or one it made); `old` is its mapping of the
    /// segment before.
    Rolled { old: MmapMut, tail: Arc<Segment> },
    /// Every record of the segment at `path` is settled.
    Release { map: MmapMut, path: PathBuf },
}

/// The keeper thread's state.
pub(crate) struct Keeper {
    shared: Arc<Shared>,
    tail: Arc<Segment>,
    chores: Receiver<Chore>,
    interval: Duration,
    /// Held for the spool's whole life: the lock is released when this closes.
    _lock: File,
}

impl Keeper {
    pub(super) fn new(
        shared: Arc<Shared>,
        tail: Arc<Segment>,
        interval: Duration,
        lock: File,
    ) -> (Sender<Chore>, Keeper) {
        let (chores_tx, chores) = crossbeam_channel::unbounded();
        let keeper = Keeper {
            shared,
            tail,
            chores,
            interval,
            _lock: lock,
        };
        (chores_tx, keeper)
    }

    /// Runs until the spool's last user is gone.
    pub(crate) fn run(mut self) {
        self.make_spare();
        let mut timer = never();
        let mut armed = false;
        let chores = self.chores.clone();
        loop {
            select! {
                recv(chores) -> chore => match chore {
                    Ok(Chore::Sync) => {
                        if !armed {
                            armed = true;
                            timer = crossbeam_channel::after(self.interval);
                        }
                    }
                    Ok(Chore::Rolled { old, tail }) => {
                        if let Err(error) = old.flush() {
                            tracing::warn!("trackway: could not sync a spool segment: {error}");
                        }
                        drop(old);
                        self.tail = tail;
                        // Writes to the new tail may have found the dirty flag already set.
                        if !armed {
                            armed = true;
                            timer = crossbeam_channel::after(self.interval);
                        }
                        self.make_spare();
                    }
                    Ok(Chore::Release { map, path }) => {
                        drop(map);
                        if let Err(error) = std::fs::remove_file(&path) {
                            tracing::warn!(
                                "trackway: could not delete the settled spool segment {}: {error}",
                                path.display()
                            );
                        }
                    }
                    Err(_) => break,
                },
                recv(timer) -> _ => {
                    armed = false;
                    timer = never();
                    self.sync();
                }
            }
        }
        self.sync();
    }

    /// Syncs the tail's written records to disk.
    fn sync(&self) {
        self.shared.dirty.store(false, Ordering::SeqCst);
        if let Err(error) = self.tail.file.sync_data() {
            tracing::warn!(
                "trackway: could not sync the spool segment {}: {error}",
                self.tail.path.display()
            );
        }
    }

    /// Makes the next segment, unless one is ready. Under the spare's lock, so that a call
    /// that finds none waits for it rather than making another (segments must be made in the
    /// order they are used: their ids order them at recovery).
    fn make_spare(&self) {
        let mut spare = lock(&self.shared.spare);
        if spare.is_some() {
            return;
        }
        match self.shared.create_segment() {
            Ok(fresh) => *spare = Some(fresh),
            Err(error) => tracing::warn!(
                "trackway: could not create the next spool segment in {}: {error}",
                self.shared.dir.display()
            ),
        }
    }
}
