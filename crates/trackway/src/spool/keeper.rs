//! The spool's thread: every system call the spool needs besides the ones at build, so that
//! neither the calls nor the worker make them. It has written records synced to disk every
//! `spool_sync_interval` while there are any (by a thread of its own, `trackway-fsync`),
//! makes the next segment ahead of need, unmaps a segment the writer left, and deletes
//! settled segments. It holds the
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
    /// segment before, `sealed` that segment.
    Rolled {
        old: MmapMut,
        sealed: Arc<Segment>,
        tail: Arc<Segment>,
    },
    /// Every record of the segment at `path` is settled.
    Release { map: MmapMut, path: PathBuf },
}

/// The keeper thread's state.
pub(crate) struct Keeper {
    shared: Arc<Shared>,
    tail: Arc<Segment>,
    chores: Receiver<Chore>,
    /// Segments the writer left since the last sync.
    unsynced: Vec<Arc<Segment>>,
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
            unsynced: Vec::new(),
            interval,
            _lock: lock,
        };
        (chores_tx, keeper)
    }

    /// Runs until the spool's last user is gone.
    pub(crate) fn run(mut self) {
        // The syncs go to a thread of their own: an fsync can take a second on a busy disk,
        // and meanwhile the keeper must go on unmapping the segments the writer leaves (each
        // holds its written pages in memory until then) and making spares.
        let (syncs, to_sync) = crossbeam_channel::unbounded::<Vec<Arc<Segment>>>();
        let dir = self.shared.dir.clone();
        let syncer = std::thread::Builder::new()
            .name("trackway-fsync".into())
            .spawn(move || {
                for segments in to_sync {
                    sync(&segments, &dir);
                }
            })
            .map_err(|error| {
                tracing::warn!("trackway: no spool sync thread, syncing inline: {error}");
            })
            .ok();
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
                    Ok(Chore::Rolled { old, sealed, tail }) => {
                        // Unmapped at once (its pages leave the process's memory); its records
                        // are synced with the tail's at the next tick.
                        drop(old);
                        self.unsynced.push(sealed);
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
                    let segments = self.take_unsynced();
                    if syncer.is_none() {
                        sync(&segments, &self.shared.dir);
                    } else if let Err(unsent) = syncs.send(segments) {
                        sync(&unsent.0, &self.shared.dir);
                    }
                }
            }
        }
        // A last sync after the ones queued, then the lock is released (with `self`).
        drop(syncs);
        if let Some(syncer) = syncer {
            let _ = syncer.join();
        }
        sync(&self.take_unsynced(), &self.shared.dir);
    }

    /// What the next sync covers: the segments left since the last one, and the tail. Clears
    /// the dirty flag first, so a record written from here on asks for another.
    fn take_unsynced(&mut self) -> Vec<Arc<Segment>> {
        self.shared.dirty.store(false, Ordering::SeqCst);
        let mut segments = std::mem::take(&mut self.unsynced);
        segments.push(Arc::clone(&self.tail));
        segments
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

/// Syncs the records of `segments` to disk, and `dir` (the names of segments made since the
/// last sync).
fn sync(segments: &[Arc<Segment>], dir: &std::path::Path) {
    for segment in segments {
        if let Err(error) = segment.file.sync_data() {
            tracing::warn!(
                "trackway: could not sync the spool segment {}: {error}",
                segment.path.display()
            );
        }
    }
    if let Err(error) = File::open(dir).and_then(|dir| dir.sync_all()) {
        tracing::warn!(
            "trackway: could not sync the spool directory {}: {error}",
            dir.display()
        );
    }
}
