//! The checkpointer thread: copies committed WAL frames into the database file ten times a
//! second in PASSIVE mode, never inside a commit, and asks the writer to restart a log grown
//! too long (DESIGN.md: "Why does the writer restart the WAL itself?").

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rusqlite::Connection;

/// How often committed WAL frames are copied into the database file. Short, so that each
/// pass and each restart of the log has little to copy and sync: at 1 s (with restarts at
/// 64 MiB) the ingest bench's half-load ack p99 was 46-60 ms, at 100 ms (with restarts at
/// 4 MiB) 7-9 ms (bench/HISTORY.md, "Small restarts, often").
pub(super) const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(100);

/// WAL pages (4 KiB each) past which the log is started again from its beginning: 4 MiB.
///
/// SQLite reuses the WAL from its start only when a write transaction begins with every frame
/// already copied into the database. Under steady ingest the writer commits again before the
/// checkpointer has caught up, so that never happens and the file grows without bound (1.3 GB
/// after 300,000 events in the ingest benchmark, and on for as long as the load lasts). So once
/// a checkpoint finds the log this long, the writer, between two commits, copies the few frames
/// committed since and restarts the log itself (see `Writer::restart_log`).
pub(super) const WAL_RESTART_PAGES: i64 = 1024;

/// Most extra checkpoint passes before the writer is asked to restart the log.
pub(super) const MAX_CATCH_UP_PASSES: usize = 4;

/// A checkpoint pass this quick has left the writer little to copy when it restarts the log.
pub(super) const CAUGHT_UP: Duration = Duration::from_millis(3);

/// How long the writer waits for readers of old frames when it restarts the log.
pub(super) const RESTART_WAIT: Duration = Duration::from_millis(50);

/// How long the writer ignores restart requests after readers kept it from restarting: a long
/// admin query would otherwise cost the writer [`RESTART_WAIT`] on every checkpoint pass.
pub(super) const RESTART_BACKOFF: Duration = Duration::from_secs(1);

/// When the checkpointer runs and when it has the log restarted; tests make the first two
/// small, and `caught_up` large so that a loaded test machine still restarts the log.
#[derive(Debug, Clone, Copy)]
pub(super) struct Tuning {
    pub(super) checkpoint_interval: Duration,
    pub(super) restart_pages: i64,
    pub(super) caught_up: Duration,
}

pub(super) const TUNING: Tuning = Tuning {
    checkpoint_interval: CHECKPOINT_INTERVAL,
    restart_pages: WAL_RESTART_PAGES,
    caught_up: CAUGHT_UP,
};

/// Copies committed WAL frames into the database file every [`CHECKPOINT_INTERVAL`], in
/// PASSIVE mode: it never blocks the writer, and the writer never waits for it. (SQLite's
/// default runs checkpoints inside the committing transaction, which stalls ingest.)
/// A log found longer than [`WAL_RESTART_PAGES`] sets `restart`, for the writer; while it is
/// set, no pass runs, so that a pass never holds the checkpoint lock the writer's restart needs
/// (SQLite answers that restart busy at once, and the writer would take it for readers).
/// Stops when the store is dropped (`stop`'s sender goes away).
pub(super) fn checkpoint_loop(
    conn: &Connection,
    stop: &std::sync::mpsc::Receiver<()>,
    restart: &AtomicBool,
    tuning: Tuning,
) {
    while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
        stop.recv_timeout(tuning.checkpoint_interval)
    {
        if restart.load(Ordering::Acquire) {
            continue;
        }
        if passive_checkpoint(conn).is_some_and(|pages| pages >= tuning.restart_pages) {
            // Each further pass copies what was committed during the one before, a fraction
            // of it, until a pass is quick: the writer is then left little to copy.
            let caught_up = (0..MAX_CATCH_UP_PASSES).any(|_| {
                let started = Instant::now();
                passive_checkpoint(conn).is_some() && started.elapsed() < tuning.caught_up
            });
            if caught_up {
                restart.store(true, Ordering::Release);
            }
        }
    }
}

/// Copies committed frames into the database without blocking anyone; returns the log's
/// length in pages, or `None` after a failure (logged; the next pass retries).
pub(super) fn passive_checkpoint(conn: &Connection) -> Option<i64> {
    // (busy, pages in the log, pages copied into the database)
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| row.get(1))
        .inspect_err(|e| tracing::warn!("store: checkpoint failed (will retry): {e}"))
        .ok()
}
