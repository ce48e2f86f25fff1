//! Delivery bookkeeping, in its own SQLite file (`delivery.sqlite3`) so it never contends with
//! ingest for the events database's write lock: per destination a cursor and counts, and the
//! dead letters with their reasons.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::storage::StoreError;

/// The file's name inside the data directory.
pub(crate) const DELIVERY_FILE: &str = "delivery.sqlite3";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS cursors (
    destination   TEXT PRIMARY KEY,
    seq           INTEGER NOT NULL,
    delivered     INTEGER NOT NULL DEFAULT 0,
    dead_lettered INTEGER NOT NULL DEFAULT 0,
    skipped       INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS dead_letters (
    id          INTEGER PRIMARY KEY,
    destination TEXT    NOT NULL,
    seq         INTEGER NOT NULL,
    reason      TEXT    NOT NULL,
    failed_at   INTEGER NOT NULL,
    replayed_at INTEGER
);
CREATE INDEX IF NOT EXISTS dead_letters_open ON dead_letters (destination, replayed_at, seq);
";

/// A destination's progress.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Progress {
    /// Every event with `seq` up to this is done (delivered, skipped or dead-lettered).
    pub cursor: i64,
    /// Events delivered.
    pub delivered: u64,
    /// Events dead-lettered and not delivered since: a replay that delivers one moves it to
    /// `delivered`.
    pub dead_lettered: u64,
    /// Events skipped because their `integrations` excluded the destination.
    pub skipped: u64,
}

/// One dead letter.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DeadLetter {
    /// Its id, for replaying it alone.
    pub id: i64,
    /// The destination that refused it.
    pub destination: String,
    /// The event's `seq`.
    pub seq: i64,
    /// Why it failed.
    pub reason: String,
    /// When, ms since the epoch.
    pub failed_at: i64,
}

fn sql_error(e: rusqlite::Error) -> StoreError {
    StoreError(e.to_string())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The bookkeeping database.
#[derive(Clone)]
pub(crate) struct DeliveryState {
    conn: Arc<Mutex<Connection>>,
}

impl DeliveryState {
    /// Opens (creating) `delivery.sqlite3` in `data_dir`.
    pub(crate) fn open(data_dir: &Path) -> Result<DeliveryState, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|e| StoreError(e.to_string()))?;
        let conn = Connection::open(data_dir.join(DELIVERY_FILE)).map_err(sql_error)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sql_error)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(sql_error)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(sql_error)?;
        conn.execute_batch(SCHEMA).map_err(sql_error)?;
        Ok(DeliveryState {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `work` on the connection, off the async runtime.
    async fn with<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            let mut conn = conn.lock().unwrap_or_else(|e| e.into_inner());
            work(&mut conn)
        })
        .await
        .map_err(|e| StoreError(e.to_string()))?
    }

    /// The destination's progress; a new destination starts at `start`.
    pub(crate) async fn progress(
        &self,
        destination: &str,
        start: i64,
    ) -> Result<Progress, StoreError> {
        let destination = destination.to_owned();
        self.with(move |conn| {
            conn.execute(
                "INSERT INTO cursors (destination, seq) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                params![destination, start],
            )
            .map_err(sql_error)?;
            conn.query_row(
                "SELECT seq, delivered, dead_lettered, skipped FROM cursors WHERE destination = ?1",
                params![destination],
                |row| {
                    Ok(Progress {
                        cursor: row.get(0)?,
                        delivered: row.get::<_, i64>(1)? as u64,
                        dead_lettered: row.get::<_, i64>(2)? as u64,
                        skipped: row.get::<_, i64>(3)? as u64,
                    })
                },
            )
            .map_err(sql_error)
        })
        .await
    }

    /// Records a finished read batch in one transaction: the new cursor, the counts, and the
    /// dead letters `(seq, reason)`.
    pub(crate) async fn advance(
        &self,
        destination: &str,
        cursor: i64,
        delivered: u64,
        skipped: u64,
        dead: Vec<(i64, String)>,
    ) -> Result<(), StoreError> {
        let destination = destination.to_owned();
        self.with(move |conn| {
            let tx = conn.transaction().map_err(sql_error)?;
            tx.execute(
                "UPDATE cursors SET seq = ?2, delivered = delivered + ?3, skipped = skipped + ?4,
                        dead_lettered = dead_lettered + ?5
                 WHERE destination = ?1",
                params![destination, cursor, delivered as i64, skipped as i64, dead.len() as i64],
            )
            .map_err(sql_error)?;
            let now = now_ms();
            for (seq, reason) in &dead {
                tx.execute(
                    "INSERT INTO dead_letters (destination, seq, reason, failed_at) VALUES (?1, ?2, ?3, ?4)",
                    params![destination, seq, reason, now],
                )
                .map_err(sql_error)?;
            }
            tx.commit().map_err(sql_error)
        })
        .await
    }

    /// Open (not yet replayed) dead letters, oldest first; `destination` and `id` filter.
    pub(crate) async fn dead_letters(
        &self,
        destination: Option<String>,
        id: Option<i64>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        self.with(move |conn| {
            let mut statement = conn
                .prepare_cached(
                    "SELECT id, destination, seq, reason, failed_at FROM dead_letters
                     WHERE replayed_at IS NULL AND (?1 IS NULL OR destination = ?1)
                       AND (?2 IS NULL OR id = ?2)
                     ORDER BY id LIMIT ?3",
                )
                .map_err(sql_error)?;
            let rows = statement
                .query_map(params![destination, id, limit as i64], |row| {
                    Ok(DeadLetter {
                        id: row.get(0)?,
                        destination: row.get(1)?,
                        seq: row.get(2)?,
                        reason: row.get(3)?,
                        failed_at: row.get(4)?,
                    })
                })
                .map_err(sql_error)?;
            rows.collect::<Result<_, _>>().map_err(sql_error)
        })
        .await
    }

    /// Marks a dead letter replayed (delivered), moving it from its destination's
    /// dead-lettered count to its delivered one in the same transaction; or records its new
    /// failure.
    pub(crate) async fn replayed(
        &self,
        id: i64,
        failure: Option<String>,
    ) -> Result<(), StoreError> {
        self.with(move |conn| {
            let Some(reason) = failure else {
                let tx = conn.transaction().map_err(sql_error)?;
                // Only an open one: two replays racing must not count it twice.
                let marked = tx
                    .execute(
                        "UPDATE dead_letters SET replayed_at = ?2 WHERE id = ?1 AND replayed_at IS NULL",
                        params![id, now_ms()],
                    )
                    .map_err(sql_error)?;
                if marked > 0 {
                    tx.execute(
                        "UPDATE cursors SET delivered = delivered + 1,
                                dead_lettered = MAX(dead_lettered - 1, 0)
                         WHERE destination = (SELECT destination FROM dead_letters WHERE id = ?1)",
                        params![id],
                    )
                    .map_err(sql_error)?;
                }
                return tx.commit().map_err(sql_error);
            };
            conn.execute(
                "UPDATE dead_letters SET reason = ?2, failed_at = ?3 WHERE id = ?1",
                params![id, reason, now_ms()],
            )
            .map_err(sql_error)?;
            Ok(())
        })
        .await
    }

    /// The `seq` of the destination's oldest open dead letter.
    pub(crate) async fn oldest_open_dead_letter(
        &self,
        destination: &str,
    ) -> Result<Option<i64>, StoreError> {
        let destination = destination.to_owned();
        self.with(move |conn| {
            conn.query_row(
                "SELECT MIN(seq) FROM dead_letters WHERE destination = ?1 AND replayed_at IS NULL",
                params![destination],
                |row| row.get(0),
            )
            .map_err(sql_error)
        })
        .await
    }

    /// The delivery state of event `seq` at `destination`: a dead letter's reason, if any.
    pub(crate) async fn dead_reason(
        &self,
        destination: &str,
        seq: i64,
    ) -> Result<Option<String>, StoreError> {
        let destination = destination.to_owned();
        self.with(move |conn| {
            conn.query_row(
                "SELECT reason FROM dead_letters WHERE destination = ?1 AND seq = ?2 AND replayed_at IS NULL",
                params![destination, seq],
                |row| row.get(0),
            )
            .optional()
            .map_err(sql_error)
        })
        .await
    }
}
