//! Delivery bookkeeping: per destination a cursor and counts, the dead letters with their
//! reasons, and the lease that says which collector delivers it.
//!
//! ```text
//!  DeliveryEngine ──▶ DeliveryState ──▶ dyn DeliveryBook ─┬─ SqliteBook: delivery.sqlite3 in
//!                                                        │  the data directory; the lease is
//!                                                        │  always this collector's (the data
//!                                                        │  directory's lock already says so)
//!                                                        └─ PostgresBook (storage::postgres):
//!                                                           shared by a group; leases with an
//!                                                           epoch, checked when the cursor moves
//! ```
//!
//! The SQLite book is its own file so it never contends with ingest for the events database's
//! write lock.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::storage::{BoxFuture, StoreError};

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
    /// Events delivered by a collector that took the destination over from one that stopped
    /// renewing its lease, in the first batch after the takeover: the old holder may have
    /// sent them already (at least once). Counted in `delivered` too; always 0 on a lone
    /// collector.
    pub redelivered: u64,
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
    StoreError::sqlite(e)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The right to deliver one destination, held by one collector at a time.
///
/// Its `epoch` grows with every change of holder; a cursor moves only with the current epoch,
/// so a collector that lost the lease (paused, cut off, presumed dead) cannot move it after
/// another took over: it is fenced off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// The fencing number.
    pub epoch: i64,
    /// Taken from another collector whose lease expired (it died, or was cut off): the
    /// first batch may repeat what that one sent.
    pub took_over: bool,
}

/// Where delivery bookkeeping lives: the seam between the engine and a database.
///
/// Two implementations: [`SqliteBook`] (one collector, its data directory) and
/// [`PostgresBook`](crate::storage::postgres::PostgresBook) (a group sharing a database).
/// Both are checked by one contract suite (`tests/it/delivery_contract.rs`).
pub trait DeliveryBook: Send + Sync + 'static {
    /// The destination's progress; a new destination starts at `start`.
    fn progress(
        &self,
        destination: &str,
        start: i64,
    ) -> BoxFuture<'_, Result<Progress, StoreError>>;

    /// Records a finished read batch in one transaction, if `lease` is still the current one:
    /// the new cursor, the counts, the dead letters `(seq, reason)`. `Ok(false)`: the lease
    /// was lost and nothing changed.
    fn advance(
        &self,
        destination: &str,
        lease: Lease,
        batch: Batch,
    ) -> BoxFuture<'_, Result<bool, StoreError>>;

    /// Open dead letters, oldest first; `destination` and `id` filter.
    fn dead_letters(
        &self,
        destination: Option<String>,
        id: Option<i64>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<DeadLetter>, StoreError>>;

    /// Marks a dead letter replayed (delivered), or records its new failure.
    fn replayed(&self, id: i64, failure: Option<String>) -> BoxFuture<'_, Result<(), StoreError>>;

    /// The `seq` of the destination's oldest open dead letter.
    fn oldest_open_dead_letter(
        &self,
        destination: &str,
    ) -> BoxFuture<'_, Result<Option<i64>, StoreError>>;

    /// An open dead letter's reason for event `seq` at `destination`.
    fn dead_reason(
        &self,
        destination: &str,
        seq: i64,
    ) -> BoxFuture<'_, Result<Option<String>, StoreError>>;

    /// Takes the destination's lease when nobody holds it or its holder let it expire;
    /// `None` while another collector holds it.
    fn acquire(&self, destination: &str) -> BoxFuture<'_, Result<Option<Lease>, StoreError>>;

    /// Extends the lease; `Ok(false)` when it is no longer ours.
    fn renew(&self, destination: &str, lease: Lease) -> BoxFuture<'_, Result<bool, StoreError>>;

    /// Gives the lease up at once (a clean stop), so another collector need not wait for it
    /// to expire.
    fn release(&self, destination: &str, lease: Lease) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Whether other collectors share this bookkeeping (then a lease is really contended, and
    /// what only the deliverer may hold is taken with it).
    fn shared(&self) -> bool {
        false
    }
}

/// One read batch's outcome, for [`DeliveryBook::advance`].
#[derive(Debug, Clone, Default)]
pub struct Batch {
    /// Every event up to this `seq` is done.
    pub cursor: i64,
    /// Events delivered.
    pub delivered: u64,
    /// Events skipped by their `integrations`.
    pub skipped: u64,
    /// Dead letters, `(seq, reason)`.
    pub dead: Vec<(i64, String)>,
    /// Of `delivered`, those possibly sent already by the previous holder (see
    /// [`Progress::redelivered`]).
    pub redelivered: u64,
}

/// The engine's handle on its [`DeliveryBook`].
#[derive(Clone)]
pub(crate) struct DeliveryState {
    book: Arc<dyn DeliveryBook>,
}

impl DeliveryState {
    /// Opens (creating) `delivery.sqlite3` in `data_dir`.
    pub(crate) fn open(data_dir: &Path) -> Result<DeliveryState, StoreError> {
        Ok(DeliveryState::with_book(Arc::new(SqliteBook::open(
            data_dir,
        )?)))
    }

    /// Bookkeeping kept in `book` (a database shared by a group of collectors).
    pub(crate) fn with_book(book: Arc<dyn DeliveryBook>) -> DeliveryState {
        DeliveryState { book }
    }

    /// See [`DeliveryBook::progress`].
    pub(crate) async fn progress(
        &self,
        destination: &str,
        start: i64,
    ) -> Result<Progress, StoreError> {
        self.book.progress(destination, start).await
    }

    /// See [`DeliveryBook::advance`].
    pub(crate) async fn advance(
        &self,
        destination: &str,
        lease: Lease,
        batch: Batch,
    ) -> Result<bool, StoreError> {
        self.book.advance(destination, lease, batch).await
    }

    /// See [`DeliveryBook::dead_letters`].
    pub(crate) async fn dead_letters(
        &self,
        destination: Option<String>,
        id: Option<i64>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        self.book.dead_letters(destination, id, limit).await
    }

    /// See [`DeliveryBook::replayed`].
    pub(crate) async fn replayed(
        &self,
        id: i64,
        failure: Option<String>,
    ) -> Result<(), StoreError> {
        self.book.replayed(id, failure).await
    }

    /// See [`DeliveryBook::oldest_open_dead_letter`].
    pub(crate) async fn oldest_open_dead_letter(
        &self,
        destination: &str,
    ) -> Result<Option<i64>, StoreError> {
        self.book.oldest_open_dead_letter(destination).await
    }

    /// See [`DeliveryBook::dead_reason`].
    pub(crate) async fn dead_reason(
        &self,
        destination: &str,
        seq: i64,
    ) -> Result<Option<String>, StoreError> {
        self.book.dead_reason(destination, seq).await
    }

    /// See [`DeliveryBook::acquire`].
    pub(crate) async fn acquire(&self, destination: &str) -> Result<Option<Lease>, StoreError> {
        self.book.acquire(destination).await
    }

    /// See [`DeliveryBook::renew`].
    pub(crate) async fn renew(&self, destination: &str, lease: Lease) -> Result<bool, StoreError> {
        self.book.renew(destination, lease).await
    }

    /// See [`DeliveryBook::shared`].
    pub(crate) fn shared(&self) -> bool {
        self.book.shared()
    }

    /// See [`DeliveryBook::release`].
    pub(crate) async fn release(&self, destination: &str, lease: Lease) -> Result<(), StoreError> {
        self.book.release(destination, lease).await
    }
}

/// The bookkeeping of one collector, in `delivery.sqlite3` in its data directory.
#[derive(Clone)]
pub struct SqliteBook {
    conn: Arc<Mutex<Connection>>,
}

impl DeliveryBook for SqliteBook {
    fn progress(
        &self,
        destination: &str,
        start: i64,
    ) -> BoxFuture<'_, Result<Progress, StoreError>> {
        let destination = destination.to_owned();
        Box::pin(async move { SqliteBook::progress(self, &destination, start).await })
    }

    fn advance(
        &self,
        destination: &str,
        _lease: Lease,
        batch: Batch,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        let destination = destination.to_owned();
        Box::pin(async move {
            SqliteBook::advance(
                self,
                &destination,
                batch.cursor,
                batch.delivered,
                batch.skipped,
                batch.dead,
            )
            .await
            .map(|()| true)
        })
    }

    fn dead_letters(
        &self,
        destination: Option<String>,
        id: Option<i64>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<DeadLetter>, StoreError>> {
        Box::pin(SqliteBook::dead_letters(self, destination, id, limit))
    }

    fn replayed(&self, id: i64, failure: Option<String>) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(SqliteBook::replayed(self, id, failure))
    }

    fn oldest_open_dead_letter(
        &self,
        destination: &str,
    ) -> BoxFuture<'_, Result<Option<i64>, StoreError>> {
        let destination = destination.to_owned();
        Box::pin(async move { SqliteBook::oldest_open_dead_letter(self, &destination).await })
    }

    fn dead_reason(
        &self,
        destination: &str,
        seq: i64,
    ) -> BoxFuture<'_, Result<Option<String>, StoreError>> {
        let destination = destination.to_owned();
        Box::pin(async move { SqliteBook::dead_reason(self, &destination, seq).await })
    }

    // One collector per data directory (its lock): every lease is this one's, at epoch 0.
    fn acquire(&self, _destination: &str) -> BoxFuture<'_, Result<Option<Lease>, StoreError>> {
        Box::pin(async {
            Ok(Some(Lease {
                epoch: 0,
                took_over: false,
            }))
        })
    }

    fn renew(&self, _destination: &str, _lease: Lease) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(async { Ok(true) })
    }

    fn release(&self, _destination: &str, _lease: Lease) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }
}

impl SqliteBook {
    /// Opens (creating) `delivery.sqlite3` in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<SqliteBook, StoreError> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| StoreError::io("create the data directory", data_dir, e))?;
        let conn = Connection::open(data_dir.join(DELIVERY_FILE)).map_err(sql_error)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sql_error)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(sql_error)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(sql_error)?;
        conn.execute_batch(SCHEMA).map_err(sql_error)?;
        Ok(SqliteBook {
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
        .map_err(|e| StoreError::stopped("delivery book", e))?
    }

    /// The destination's progress; a new destination starts at `start`.
    async fn progress(&self, destination: &str, start: i64) -> Result<Progress, StoreError> {
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
                        redelivered: 0,
                    })
                },
            )
            .map_err(sql_error)
        })
        .await
    }

    /// Records a finished read batch in one transaction: the new cursor, the counts, and the
    /// dead letters `(seq, reason)`.
    async fn advance(
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
    async fn dead_letters(
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
    async fn replayed(&self, id: i64, failure: Option<String>) -> Result<(), StoreError> {
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
    async fn oldest_open_dead_letter(&self, destination: &str) -> Result<Option<i64>, StoreError> {
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
    async fn dead_reason(&self, destination: &str, seq: i64) -> Result<Option<String>, StoreError> {
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
