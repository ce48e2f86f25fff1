//! The embedded store: one SQLite file in WAL mode with `synchronous=FULL`.
//!
//! ```text
//!  ingest tasks ──(events, reply)──▶ writer thread ──▶ BEGIN; INSERT…; COMMIT (fsync)
//!                ◀────── Appended ───┘        └──▶ broadcast to live subscribers
//!  admin reads ──▶ reader connection (WAL: readers never block the writer)
//! ```
//!
//! Group commit: the writer takes the first waiting request, then every request queued behind
//! it (up to [`MAX_GROUP_EVENTS`]), and commits them in one transaction: one fsync for many
//! requests, so throughput grows with concurrency instead of collapsing to one fsync each.
//!
//! Indexes: only two. Every secondary index keyed by a random value (a user id, an event name)
//! dirties a random page per insert, and the WAL then writes each dirty page per commit: with
//! user, anonymous-id and label indexes ingest fell from 55k to 21k events/s (BENCHMARKS.md).
//! So filters other than `type` scan newest-first and stop at `limit` matches, which is fast
//! for the debugger's "recent events of this user" and slow only for rare values in a huge
//! store.
//!
//! Checkpoints run on their own thread in PASSIVE mode, never inside a commit.
//!
//! Deduplication: an event is skipped when the same source stored the same messageId within
//! the dedup window (24 hours, as Segment). The writer is the only writer, so the check and
//! the insert cannot race.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use tokio::sync::{broadcast, oneshot};

use super::{Appended, BoxFuture, Count, NewEvent, Query, Store, StoreError, StoredEvent};

/// Most events committed in one transaction; bounds the latency one commit adds.
pub const MAX_GROUP_EVENTS: usize = 20_000;

/// Default deduplication window, Segment's.
pub const DEFAULT_DEDUP_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);

/// Requests waiting for the writer before ingest is pushed back on (bounded memory).
const WRITE_QUEUE: usize = 1024;

/// Live subscribers may lag this many events before they miss some.
const LIVE_BUFFER: usize = 4096;

/// SQLite page cache per connection, in KiB (a negative `cache_size` is KiB): 64 MiB.
const CACHE_KIB: i64 = -64 * 1024;

/// Bytes of the database file read through a memory map: 1 GiB of address space, not memory.
const MMAP_BYTES: i64 = 1 << 30;

/// How often committed WAL frames are copied into the database file.
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

/// WAL pages (4 KiB each) past which the log is started again from its beginning: 64 MiB.
///
/// SQLite reuses the WAL from its start only when a write transaction begins with every frame
/// already copied into the database. Under steady ingest the writer commits again before the
/// checkpointer has caught up, so that never happens and the file grows without bound (1.3 GB
/// after 300,000 events in the ingest benchmark, and on for as long as the load lasts). So once
/// a checkpoint finds the log this long, the writer, between two commits, copies the few frames
/// committed since and restarts the log itself (see `Writer::restart_log`).
const WAL_RESTART_PAGES: i64 = 16_384;

/// Most extra checkpoint passes before the writer is asked to restart the log.
const MAX_CATCH_UP_PASSES: usize = 4;

/// A checkpoint pass this quick has left the writer little to copy when it restarts the log.
const CAUGHT_UP: Duration = Duration::from_millis(3);

/// How long the writer waits for readers of old frames when it restarts the log.
const RESTART_WAIT: Duration = Duration::from_millis(50);

/// How long a connection waits for a lock another holds.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// When the checkpointer runs and when it has the log restarted; tests make both small.
#[derive(Debug, Clone, Copy)]
struct Tuning {
    checkpoint_interval: Duration,
    restart_pages: i64,
}

const TUNING: Tuning = Tuning {
    checkpoint_interval: CHECKPOINT_INTERVAL,
    restart_pages: WAL_RESTART_PAGES,
};

/// The database file's name inside the data directory.
pub const DATABASE_FILE: &str = "events.sqlite3";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    source       TEXT    NOT NULL,
    message_id   TEXT    NOT NULL,
    type         TEXT    NOT NULL,
    user_id      TEXT,
    anonymous_id TEXT,
    label        TEXT,
    received_at  INTEGER NOT NULL,
    rejected     TEXT,
    body         TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS events_dedup ON events (source, message_id, received_at);
CREATE INDEX IF NOT EXISTS events_type ON events (type, seq);
-- What `/api/stats` shows, kept in the transactions that add and delete events, so that
-- opening the store reads a few rows instead of scanning every event.
-- One row, rewritten by each readiness probe (`Store::probe`): a real, fsynced write that
-- stores no event.
CREATE TABLE IF NOT EXISTS probe (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS counts (
    source   TEXT    NOT NULL,
    type     TEXT    NOT NULL,
    rejected INTEGER NOT NULL,
    n        INTEGER NOT NULL,
    PRIMARY KEY (source, type, rejected)
) WITHOUT ROWID;
";

/// `PRAGMA user_version` of a store whose `counts` table is kept; a store from before it
/// (version 0) has the table filled from its events once, when it is first opened.
const COUNTS_VERSION: i64 = 1;

struct WriteRequest {
    events: Vec<NewEvent>,
    reply: oneshot::Sender<Result<Appended, StoreError>>,
}

/// One chunk of retention deletes, done by the writer so nothing else ever writes.
struct PruneRequest {
    source: String,
    received_before: i64,
    up_to: i64,
    reply: oneshot::Sender<Result<usize, StoreError>>,
}

/// Work for the writer thread.
enum Job {
    Append(WriteRequest),
    Prune(PruneRequest),
    /// A readiness probe: one small committed write.
    Probe(oneshot::Sender<Result<(), StoreError>>),
}

type Counts = BTreeMap<(String, String, bool), u64>;

/// The `type` under which events of any type but the six are counted: the type is the
/// sender's choice, and a counter for each would grow without bound.
pub const OTHER_TYPE: &str = "other";

/// The counts' key for an event of `source` and `kind`: its type if it is one of the six, else
/// [`OTHER_TYPE`]. (Sources are configured, so the keys are bounded.)
pub(crate) fn count_key(source: String, kind: &str, rejected: bool) -> (String, String, bool) {
    let known = trackway_protocol::Kind::STANDARD.contains(&kind);
    let kind = if known { kind } else { OTHER_TYPE };
    (source, kind.to_owned(), rejected)
}

/// SQLite-backed [`Store`].
pub struct SqliteStore {
    writes: tokio::sync::mpsc::Sender<Job>,
    /// Dropped with the store, which stops the checkpointer.
    _keep_checkpointing: std::sync::mpsc::Sender<()>,
    reader: Arc<Mutex<Connection>>,
    counts: Arc<Mutex<Counts>>,
    live: broadcast::Sender<Arc<StoredEvent>>,
}

fn sql_error(e: rusqlite::Error) -> StoreError {
    StoreError(e.to_string())
}

fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).map_err(sql_error)?;
    configure(&conn)?;
    Ok(conn)
}

/// The settings every connection of the store runs with, checked.
fn configure(conn: &Connection) -> Result<(), StoreError> {
    conn.busy_timeout(BUSY_TIMEOUT).map_err(sql_error)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(sql_error)?;
    // FULL: every commit fsyncs the WAL, so an acknowledged event survives power loss.
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(sql_error)?;
    // Keep the hot index pages in SQLite's own cache and read the rest through a memory
    // map: without these, inserts re-read evicted B-tree pages with a syscall each.
    conn.pragma_update(None, "cache_size", CACHE_KIB)
        .map_err(sql_error)?;
    conn.pragma_update(None, "mmap_size", MMAP_BYTES)
        .map_err(sql_error)?;
    check_durability(conn)
}

/// `PRAGMA synchronous` of `FULL`.
const SYNCHRONOUS_FULL: i64 = 2;

/// Refuses a connection that would acknowledge what it may lose: SQLite keeps its old journal
/// without an error where WAL is unavailable (some network file systems), and without
/// `synchronous=FULL` a WAL commit is not fsynced, which a test killing the process cannot
/// notice (the page cache survives a `kill -9`, not a power cut).
fn check_durability(conn: &Connection) -> Result<(), StoreError> {
    let (journal, synchronous) = durability_settings(conn)?;
    if !journal.eq_ignore_ascii_case("wal") || synchronous != SYNCHRONOUS_FULL {
        return Err(StoreError(format!(
            "the store needs WAL with synchronous=FULL, and got journal_mode={journal}, synchronous={synchronous}"
        )));
    }
    Ok(())
}

/// A connection's `journal_mode` and `synchronous`, as SQLite reports them.
fn durability_settings(conn: &Connection) -> Result<(String, i64), StoreError> {
    let journal = conn
        .query_row("PRAGMA journal_mode", [], |row| row.get(0))
        .map_err(sql_error)?;
    let synchronous = conn
        .query_row("PRAGMA synchronous", [], |row| row.get(0))
        .map_err(sql_error)?;
    Ok((journal, synchronous))
}

impl SqliteStore {
    /// Opens (creating if needed) the store in `data_dir` and starts its writer thread.
    pub fn open(data_dir: &Path, dedup_window: Duration) -> Result<SqliteStore, StoreError> {
        SqliteStore::open_tuned(data_dir, dedup_window, TUNING)
    }

    fn open_tuned(
        data_dir: &Path,
        dedup_window: Duration,
        tuning: Tuning,
    ) -> Result<SqliteStore, StoreError> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| StoreError(format!("cannot create {}: {e}", data_dir.display())))?;
        let path = data_dir.join(DATABASE_FILE);
        let mut writer = open_connection(&path)?;
        writer.execute_batch(SCHEMA).map_err(sql_error)?;
        // Checkpoints run on their own thread, off the commit path (see `checkpoint_loop`).
        writer
            .pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(sql_error)?;
        let checkpointer = open_connection(&path)?;
        let (keep_checkpointing, stop_checkpointing) = std::sync::mpsc::channel::<()>();
        let restart_wanted = Arc::new(AtomicBool::new(false));
        let restart = Arc::clone(&restart_wanted);
        std::thread::Builder::new()
            .name("trackway-checkpoint".into())
            .spawn(move || checkpoint_loop(&checkpointer, &stop_checkpointing, &restart, tuning))
            .map_err(|e| StoreError(format!("cannot start the checkpointer: {e}")))?;
        let counts = Arc::new(Mutex::new(load_counts(&mut writer)?));
        let reader = open_connection(&path)?;
        let (live, _) = broadcast::channel(LIVE_BUFFER);
        let (writes, requests) = tokio::sync::mpsc::channel(WRITE_QUEUE);
        let thread = Writer {
            conn: writer,
            requests,
            counts: Arc::clone(&counts),
            live: live.clone(),
            dedup_window_ms: dedup_window.as_millis() as i64,
            restart_wanted,
        };
        std::thread::Builder::new()
            .name("trackway-store".into())
            .spawn(move || thread.run())
            .map_err(|e| StoreError(format!("cannot start the writer: {e}")))?;
        Ok(SqliteStore {
            writes,
            _keep_checkpointing: keep_checkpointing,
            reader: Arc::new(Mutex::new(reader)),
            counts,
            live,
        })
    }
}

/// Copies committed WAL frames into the database file every [`CHECKPOINT_INTERVAL`], in
/// PASSIVE mode: it never blocks the writer, and the writer never waits for it. (SQLite's
/// default runs checkpoints inside the committing transaction, which stalls ingest.)
/// A log found longer than [`WAL_RESTART_PAGES`] sets `restart`, for the writer.
/// Stops when the store is dropped (`stop`'s sender goes away).
fn checkpoint_loop(
    conn: &Connection,
    stop: &std::sync::mpsc::Receiver<()>,
    restart: &AtomicBool,
    tuning: Tuning,
) {
    while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
        stop.recv_timeout(tuning.checkpoint_interval)
    {
        if passive_checkpoint(conn).is_some_and(|pages| pages >= tuning.restart_pages) {
            // Each further pass copies what was committed during the one before, a fraction
            // of it, until a pass is quick: the writer is then left little to copy.
            let caught_up = (0..MAX_CATCH_UP_PASSES).any(|_| {
                let started = Instant::now();
                passive_checkpoint(conn).is_some() && started.elapsed() < CAUGHT_UP
            });
            if caught_up {
                restart.store(true, Ordering::Relaxed);
            }
        }
    }
}

/// Copies committed frames into the database without blocking anyone; returns the log's
/// length in pages, or `None` after a failure (logged; the next pass retries).
fn passive_checkpoint(conn: &Connection) -> Option<i64> {
    // (busy, pages in the log, pages copied into the database)
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| row.get(1))
        .inspect_err(|e| tracing::warn!("store: checkpoint failed (will retry): {e}"))
        .ok()
}

/// The counts, from the `counts` table; filled first from the events themselves in a store
/// from before the table (a scan of every event, once).
fn load_counts(conn: &mut Connection) -> Result<Counts, StoreError> {
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(sql_error)?;
    if version < COUNTS_VERSION {
        let transaction = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql_error)?;
        let counts = count_events(&transaction, "", [])?;
        transaction
            .execute("DELETE FROM counts", [])
            .map_err(sql_error)?;
        change_counts(&transaction, &counts, 1)?;
        transaction
            .pragma_update(None, "user_version", COUNTS_VERSION)
            .map_err(sql_error)?;
        transaction.commit().map_err(sql_error)?;
        if !counts.is_empty() {
            tracing::info!("store: counted the events of a store from an earlier version, once");
        }
        return Ok(counts);
    }
    let mut statement = conn
        .prepare("SELECT source, type, rejected, n FROM counts")
        .map_err(sql_error)?;
    let rows = statement
        .query_map([], |row| {
            Ok((
                (row.get(0)?, row.get(1)?, row.get(2)?),
                row.get::<_, i64>(3)? as u64,
            ))
        })
        .map_err(sql_error)?;
    rows.collect::<Result<_, _>>().map_err(sql_error)
}

/// The counts of the events `filter` (a `WHERE` clause, or nothing) selects with `params`,
/// keyed as the stats are: types other than the six add up under [`OTHER_TYPE`].
fn count_events(
    conn: &Connection,
    filter: &str,
    params: impl rusqlite::Params,
) -> Result<Counts, StoreError> {
    let mut statement = conn
        .prepare(&format!(
            "SELECT source, type, rejected IS NOT NULL, COUNT(*) FROM events {filter} GROUP BY 1, 2, 3"
        ))
        .map_err(sql_error)?;
    let rows = statement
        .query_map(params, |row| {
            Ok((
                count_key(row.get(0)?, &row.get::<_, String>(1)?, row.get(2)?),
                row.get::<_, i64>(3)? as u64,
            ))
        })
        .map_err(sql_error)?;
    let mut counts = Counts::new();
    for row in rows {
        let (key, n) = row.map_err(sql_error)?;
        *counts.entry(key).or_default() += n;
    }
    Ok(counts)
}

/// Adds `sign` (1 or -1) times `delta` to the `counts` table, dropping rows that reach zero.
fn change_counts(
    transaction: &rusqlite::Transaction<'_>,
    delta: &Counts,
    sign: i64,
) -> Result<(), StoreError> {
    let mut upsert = transaction
        .prepare_cached(
            "INSERT INTO counts (source, type, rejected, n) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (source, type, rejected) DO UPDATE SET n = n + excluded.n",
        )
        .map_err(sql_error)?;
    for ((source, kind, rejected), n) in delta {
        upsert
            .execute(params![source, kind, rejected, sign * *n as i64])
            .map_err(sql_error)?;
    }
    if sign < 0 {
        transaction
            .execute("DELETE FROM counts WHERE n <= 0", [])
            .map_err(sql_error)?;
    }
    Ok(())
}

impl Store for SqliteStore {
    fn append(&self, events: Vec<NewEvent>) -> BoxFuture<'_, Result<Appended, StoreError>> {
        Box::pin(async move {
            let (reply, answer) = oneshot::channel();
            self.writes
                .send(Job::Append(WriteRequest { events, reply }))
                .await
                .map_err(|_| StoreError("the writer stopped".into()))?;
            answer
                .await
                .map_err(|_| StoreError("the writer stopped".into()))?
        })
    }

    fn query(&self, query: Query) -> BoxFuture<'_, Result<Vec<StoredEvent>, StoreError>> {
        self.read(move |conn| run_query(conn, &query))
    }

    fn read_after(
        &self,
        source: &str,
        after: i64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<StoredEvent>, StoreError>> {
        let source = source.to_owned();
        self.read(move |conn| {
            select_events(
                conn,
                // `+source`: walk the rowid range after the cursor instead of the dedup
                // index (which would visit and sort every event of the source).
                "WHERE +source = ?1 AND seq > ?2 AND rejected IS NULL ORDER BY seq LIMIT ?3",
                params![source, after, limit as i64],
            )
        })
    }

    fn get(&self, seqs: Vec<i64>) -> BoxFuture<'_, Result<Vec<StoredEvent>, StoreError>> {
        self.read(move |conn| {
            let mut events = Vec::with_capacity(seqs.len());
            // Oldest first, as the trait promises, whatever order they were asked in.
            let mut seqs = seqs;
            seqs.sort_unstable();
            for seq in seqs {
                events.extend(select_events(conn, "WHERE seq = ?1", params![seq])?);
            }
            Ok(events)
        })
    }

    fn prune(
        &self,
        source: &str,
        received_before: i64,
        up_to: i64,
    ) -> BoxFuture<'_, Result<usize, StoreError>> {
        let source = source.to_owned();
        Box::pin(async move {
            // Chunk by chunk through the writer, so ingest groups commit in between.
            let mut total = 0;
            loop {
                let (reply, answer) = oneshot::channel();
                let request = PruneRequest {
                    source: source.clone(),
                    received_before,
                    up_to,
                    reply,
                };
                self.writes
                    .send(Job::Prune(request))
                    .await
                    .map_err(|_| StoreError("the writer stopped".into()))?;
                let deleted = answer
                    .await
                    .map_err(|_| StoreError("the writer stopped".into()))??;
                total += deleted;
                if deleted < PRUNE_CHUNK as usize {
                    return Ok(total);
                }
            }
        })
    }

    fn probe(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let (reply, answer) = oneshot::channel();
            self.writes
                .send(Job::Probe(reply))
                .await
                .map_err(|_| StoreError("the writer stopped".into()))?;
            answer
                .await
                .map_err(|_| StoreError("the writer stopped".into()))?
        })
    }

    fn lag(&self, source: &str, after: i64) -> BoxFuture<'_, Result<u64, StoreError>> {
        let source = source.to_owned();
        self.read(move |conn| {
            conn.query_row(
                "SELECT COUNT(*) FROM events WHERE +source = ?1 AND seq > ?2 AND rejected IS NULL",
                params![source, after],
                |row| row.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(sql_error)
        })
    }

    fn counts(&self) -> BoxFuture<'_, Result<Vec<Count>, StoreError>> {
        Box::pin(async move { Ok(self.current_counts()) })
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<StoredEvent>> {
        self.live.subscribe()
    }
}

impl SqliteStore {
    /// The counts kept in memory, as the table holds them.
    fn current_counts(&self) -> Vec<Count> {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts
            .iter()
            .map(|((source, kind, rejected), count)| Count {
                source: source.clone(),
                kind: kind.clone(),
                rejected: *rejected,
                count: *count,
            })
            .collect()
    }

    /// Runs `work` on the reader connection, off the async runtime.
    fn read<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> BoxFuture<'_, Result<T, StoreError>> {
        let reader = Arc::clone(&self.reader);
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let conn = reader.lock().unwrap_or_else(|e| e.into_inner());
                work(&conn)
            })
            .await
            .map_err(|e| StoreError(e.to_string()))?
        })
    }
}

/// Rows deleted per pruning transaction.
const PRUNE_CHUNK: i64 = 10_000;

fn run_query(conn: &Connection, query: &Query) -> Result<Vec<StoredEvent>, StoreError> {
    select_events(
        conn,
        "WHERE (?1 IS NULL OR type = ?1)
           AND (?2 IS NULL OR user_id = ?2 OR anonymous_id = ?2)
           AND (?3 IS NULL OR label = ?3)
           AND (?4 IS NULL OR seq < ?4)
         ORDER BY seq DESC LIMIT ?5",
        params![
            query.kind,
            query.user_id,
            query.label,
            query.before,
            query.limit as i64
        ],
    )
}

/// Events selected by `tail` (a WHERE/ORDER/LIMIT clause) with `params`.
fn select_events(
    conn: &Connection,
    tail: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<StoredEvent>, StoreError> {
    let sql = format!("SELECT seq, source, type, received_at, rejected, body FROM events {tail}");
    let mut statement = conn.prepare_cached(&sql).map_err(sql_error)?;
    let rows = statement
        .query_map(params, |row| {
            Ok(StoredEvent {
                seq: row.get(0)?,
                source: Arc::from(row.get::<_, String>(1)?),
                kind: row.get(2)?,
                received_at: row.get(3)?,
                rejected: row.get(4)?,
                body: row.get(5)?,
            })
        })
        .map_err(sql_error)?;
    rows.collect::<Result<_, _>>().map_err(sql_error)
}

struct Writer {
    conn: Connection,
    requests: tokio::sync::mpsc::Receiver<Job>,
    counts: Arc<Mutex<Counts>>,
    live: broadcast::Sender<Arc<StoredEvent>>,
    dedup_window_ms: i64,
    /// Set by the checkpointer when the log has grown past [`WAL_RESTART_PAGES`].
    restart_wanted: Arc<AtomicBool>,
}

impl Writer {
    /// Commits groups of requests until every handle to the store is gone.
    fn run(mut self) {
        let mut deferred: Option<Job> = None;
        loop {
            if self.restart_wanted.swap(false, Ordering::Relaxed) {
                self.restart_log();
            }
            let first = match deferred.take() {
                Some(job) => job,
                None => match self.requests.blocking_recv() {
                    Some(job) => job,
                    None => return,
                },
            };
            let first = match first {
                Job::Append(first) => first,
                Job::Prune(prune) => {
                    let result = self.prune(&prune);
                    let _ = prune.reply.send(result);
                    continue;
                }
                Job::Probe(reply) => {
                    let _ = reply.send(self.probe());
                    continue;
                }
            };
            let mut events = first.events.len();
            let mut group = vec![first];
            while events < MAX_GROUP_EVENTS {
                match self.requests.try_recv() {
                    Ok(Job::Append(next)) => {
                        events += next.events.len();
                        group.push(next);
                    }
                    Ok(other) => {
                        deferred = Some(other);
                        break;
                    }
                    Err(_) => break,
                }
            }
            match self.commit(&group) {
                Ok((results, stored, added)) => {
                    // Counted before anyone hears 200, so `/api/stats` read after an
                    // acknowledgement includes the acknowledged events.
                    self.count(&added, 1);
                    for (request, result) in group.into_iter().zip(results) {
                        let _ = request.reply.send(Ok(result));
                    }
                    self.broadcast(stored);
                }
                Err(error) => {
                    tracing::error!("store: commit failed, answering 503: {error}");
                    for request in group {
                        let _ = request.reply.send(Err(error.clone()));
                    }
                }
            }
        }
    }

    /// Copies what the checkpointer has not yet (the frames committed since its last pass) and
    /// starts the log again from its beginning, waiting for readers of older frames to finish.
    /// Only the writer can do this under load: no commit can come in between.
    ///
    /// Readers are waited for [`RESTART_WAIT`] at most, since ingest waits too; a reader still
    /// busy then (a long admin query) leaves the restart to the checkpointer's next pass.
    fn restart_log(&self) {
        let restarted = self.conn.busy_timeout(RESTART_WAIT).and_then(|()| {
            self.conn
                .query_row("PRAGMA wal_checkpoint(RESTART)", [], |row| {
                    row.get::<_, i64>(0)
                })
        });
        if let Err(e) = self.conn.busy_timeout(BUSY_TIMEOUT) {
            tracing::warn!("store: cannot set the busy timeout back: {e}");
        }
        match restarted {
            Ok(0) => {}
            Ok(_) => tracing::debug!("store: the log could not be restarted yet (readers)"),
            Err(e) => tracing::warn!("store: restarting the log failed (will retry): {e}"),
        }
    }

    /// A readiness probe: rewrites the `probe` row and commits, fsync included, as a request's
    /// commit would.
    fn probe(&mut self) -> Result<(), StoreError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let transaction = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql_error)?;
        transaction
            .execute(
                "INSERT INTO probe (id, at) VALUES (1, ?1) ON CONFLICT (id) DO UPDATE SET at = excluded.at",
                params![now],
            )
            .map_err(sql_error)?;
        transaction.commit().map_err(sql_error)
    }

    /// Deletes one chunk of expired events, and takes them off the counts.
    fn prune(&mut self, request: &PruneRequest) -> Result<usize, StoreError> {
        let transaction = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql_error)?;
        let chunk = "SELECT seq FROM events WHERE source = ?1 AND received_at < ?2 AND seq <= ?3
                     ORDER BY seq LIMIT ?4";
        let removed = count_events(
            &transaction,
            &format!("WHERE seq IN ({chunk})"),
            params![
                request.source,
                request.received_before,
                request.up_to,
                PRUNE_CHUNK
            ],
        )?;
        let deleted = transaction
            .execute(
                &format!("DELETE FROM events WHERE seq IN ({chunk})"),
                params![
                    request.source,
                    request.received_before,
                    request.up_to,
                    PRUNE_CHUNK
                ],
            )
            .map_err(sql_error)?;
        change_counts(&transaction, &removed, -1)?;
        transaction.commit().map_err(sql_error)?;
        self.count(&removed, -1);
        Ok(deleted)
    }

    /// One transaction for the whole group.
    fn commit(
        &mut self,
        group: &[WriteRequest],
    ) -> Result<(Vec<Appended>, Vec<StoredEvent>, Counts), StoreError> {
        // IMMEDIATE: take the write lock up front, so the read of the dedup check can never
        // need an upgrade that SQLite would refuse with SQLITE_BUSY.
        let transaction = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql_error)?;
        let mut results = Vec::with_capacity(group.len());
        let mut stored = Vec::new();
        {
            let mut seen = transaction
                .prepare_cached(
                    // A rejected copy does not make a valid event a duplicate (the sender may
                    // have fixed it); a rejected one is a duplicate of any copy.
                    "SELECT 1 FROM events WHERE source = ?1 AND message_id = ?2 AND received_at > ?3
                       AND (rejected IS NULL OR ?4) LIMIT 1",
                )
                .map_err(sql_error)?;
            let mut insert = transaction
                .prepare_cached(
                    "INSERT INTO events (source, message_id, type, user_id, anonymous_id, label,
                                         received_at, rejected, body)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )
                .map_err(sql_error)?;
            for request in group {
                let mut appended = Appended::default();
                for event in &request.events {
                    let horizon = event.received_at - self.dedup_window_ms;
                    let duplicate = seen
                        .query_row(
                            params![
                                &*event.source,
                                event.message_id,
                                horizon,
                                event.rejected.is_some()
                            ],
                            |_| Ok(()),
                        )
                        .optional()
                        .map_err(sql_error)?
                        .is_some();
                    if duplicate {
                        appended.duplicates += 1;
                        continue;
                    }
                    insert
                        .execute(params![
                            &*event.source,
                            event.message_id,
                            event.kind,
                            event.user_id,
                            event.anonymous_id,
                            event.label,
                            event.received_at,
                            event.rejected,
                            event.body,
                        ])
                        .map_err(sql_error)?;
                    appended.stored += 1;
                    stored.push(StoredEvent {
                        seq: transaction.last_insert_rowid(),
                        source: Arc::clone(&event.source),
                        kind: event.kind.clone(),
                        received_at: event.received_at,
                        rejected: event.rejected.clone(),
                        body: event.body.clone(),
                    });
                }
                results.push(appended);
            }
        }
        let mut added = Counts::new();
        for event in &stored {
            let key = count_key(
                event.source.to_string(),
                &event.kind,
                event.rejected.is_some(),
            );
            *added.entry(key).or_default() += 1;
        }
        change_counts(&transaction, &added, 1)?;
        transaction.commit().map_err(sql_error)?;
        Ok((results, stored, added))
    }

    /// Adds `sign` (1 or -1) times `delta` to the in-memory counts, as [`change_counts`] does
    /// to the table, dropping keys that reach zero.
    fn count(&self, delta: &Counts, sign: i64) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        for (key, n) in delta {
            let count = counts.entry(key.clone()).or_default();
            *count = if sign < 0 {
                count.saturating_sub(*n)
            } else {
                *count + n
            };
        }
        if sign < 0 {
            counts.retain(|_, n| *n > 0);
        }
    }

    /// Hands committed events to live subscribers (the debugger, `trackway tail`).
    fn broadcast(&self, stored: Vec<StoredEvent>) {
        for event in stored {
            // No subscriber is fine.
            let _ = self.live.send(Arc::new(event));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(86_400);

    fn event(n: usize) -> NewEvent {
        let kind = ["track", "identify", "page", "made-up", "also-made-up"][n % 5];
        NewEvent {
            source: Arc::from(["web", "jobs"][n % 2]),
            message_id: format!("m{n}"),
            kind: kind.to_owned(),
            user_id: Some("u".into()),
            anonymous_id: None,
            label: None,
            received_at: n as i64,
            rejected: (n.is_multiple_of(3) || kind.ends_with("made-up"))
                .then(|| "a reason".to_owned()),
            body: format!(r#"{{"type":"{kind}","messageId":"m{n}"}}"#),
        }
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    /// The store's counts, as sorted tuples.
    fn counts(store: &SqliteStore) -> Vec<(String, String, bool, u64)> {
        let mut counts: Vec<_> = store
            .current_counts()
            .into_iter()
            .map(|c| (c.source, c.kind, c.rejected, c.count))
            .collect();
        counts.sort();
        counts
    }

    /// The counts as `events` would give them, counted one by one.
    fn recount(events: impl Iterator<Item = NewEvent>) -> Vec<(String, String, bool, u64)> {
        let mut counts = Counts::new();
        for e in events {
            *counts
                .entry(count_key(
                    e.source.to_string(),
                    &e.kind,
                    e.rejected.is_some(),
                ))
                .or_default() += 1;
        }
        counts
            .into_iter()
            .map(|((s, k, r), n)| (s, k, r, n))
            .collect()
    }

    #[test]
    fn counts_survive_reopening_and_pruning_without_a_scan_of_the_events() {
        let dir = tempfile::tempdir().expect("temp dir");
        let runtime = runtime();
        {
            let store = SqliteStore::open(dir.path(), WINDOW).expect("store");
            runtime.block_on(async {
                store
                    .append((0..100).map(event).collect())
                    .await
                    .expect("append");
                store
                    .append((100..150).map(event).collect())
                    .await
                    .expect("append");
                // `web`'s events received before 40, whatever their seq.
                assert_eq!(store.prune("web", 40, i64::MAX).await.expect("prune"), 20);
            });
        }
        let kept = || {
            (0..150)
                .map(event)
                .filter(|e| !(&*e.source == "web" && e.received_at < 40))
        };
        let store = SqliteStore::open(dir.path(), WINDOW).expect("reopened");
        assert_eq!(counts(&store), recount(kept()));
        // Opening read the table, not the events: an event written behind the store's back
        // is not counted.
        drop(store);
        let conn = Connection::open(dir.path().join(DATABASE_FILE)).expect("database");
        conn.execute(
            "INSERT INTO events (source, message_id, type, received_at, body) VALUES ('web', 'x', 'track', 0, '{}')",
            [],
        )
        .expect("insert");
        drop(conn);
        let store = SqliteStore::open(dir.path(), WINDOW).expect("reopened");
        assert_eq!(counts(&store), recount(kept()));
    }

    #[test]
    fn a_store_from_before_the_counts_table_is_counted_once_when_first_opened() {
        let dir = tempfile::tempdir().expect("temp dir");
        let runtime = runtime();
        {
            let store = SqliteStore::open(dir.path(), WINDOW).expect("store");
            runtime
                .block_on(store.append((0..60).map(event).collect()))
                .expect("append");
        }
        let conn = Connection::open(dir.path().join(DATABASE_FILE)).expect("database");
        conn.execute_batch("DROP TABLE counts; PRAGMA user_version = 0;")
            .expect("made old");
        drop(conn);
        let store = SqliteStore::open(dir.path(), WINDOW).expect("opened");
        assert_eq!(counts(&store), recount((0..60).map(event)));
        runtime
            .block_on(store.append((60..80).map(event).collect()))
            .expect("append");
        drop(store);
        let store = SqliteStore::open(dir.path(), WINDOW).expect("reopened");
        assert_eq!(counts(&store), recount((0..80).map(event)));
    }

    #[test]
    fn the_store_s_connections_run_with_wal_and_full_sync() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(dir.path(), WINDOW).expect("store");
        let reader = store.reader.lock().expect("reader");
        assert_eq!(
            durability_settings(&reader).expect("settings"),
            ("wal".to_owned(), SYNCHRONOUS_FULL)
        );
        // The writer and the checkpointer are opened the same way.
        let another = open_connection(&dir.path().join(DATABASE_FILE)).expect("connection");
        assert_eq!(
            durability_settings(&another).expect("settings"),
            ("wal".to_owned(), SYNCHRONOUS_FULL)
        );
        // Whatever the SQLite build's defaults (this one's is FULL already, another's may be
        // NORMAL in WAL mode), the settings are the store's own.
        let raw = Connection::open(dir.path().join("other.sqlite3")).expect("raw");
        raw.pragma_update(None, "synchronous", "OFF")
            .expect("pragma");
        configure(&raw).expect("configured");
        assert_eq!(
            durability_settings(&raw).expect("settings"),
            ("wal".to_owned(), SYNCHRONOUS_FULL)
        );
        // A connection that would not fsync its commits is refused, not used.
        another
            .pragma_update(None, "synchronous", "NORMAL")
            .expect("pragma");
        let refused = check_durability(&another).expect_err("refused");
        assert!(refused.to_string().contains("synchronous=1"), "{refused}");
    }

    #[test]
    fn a_message_id_is_a_duplicate_for_24_hours_and_new_after() {
        // Written out rather than taken from the constants, so that a different window fails.
        const DAY_MS: i64 = 24 * 60 * 60 * 1000;
        let config = crate::Config::new("unused", Vec::new(), String::new());
        assert_eq!(
            config.dedup_window, DEFAULT_DEDUP_WINDOW,
            "the collector's default"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(dir.path(), config.dedup_window).expect("store");
        // Arrival times are the events' own: the test sets them instead of waiting a day.
        let at = |id: &str, received_at: i64| {
            let mut e = event(0);
            e.source = Arc::from("web");
            e.message_id = id.to_owned();
            e.rejected = None;
            e.received_at = received_at;
            vec![e]
        };
        let start = 1_700_000_000_000;
        let runtime = runtime();
        let append = |events| runtime.block_on(store.append(events)).expect("append");
        let stored = Appended {
            stored: 1,
            duplicates: 0,
        };
        let duplicate = Appended {
            stored: 0,
            duplicates: 1,
        };
        for id in ["early", "late", "much-later"] {
            assert_eq!(append(at(id, start)), stored, "{id}");
        }
        // A millisecond inside the day: still the same message.
        assert_eq!(append(at("early", start + DAY_MS - 1)), duplicate);
        // A day or more later: a new message.
        assert_eq!(append(at("late", start + DAY_MS)), stored);
        assert_eq!(append(at("much-later", start + 2 * DAY_MS)), stored);
        // Each new copy starts its own day.
        assert_eq!(append(at("late", start + 2 * DAY_MS - 1)), duplicate);
    }

    #[test]
    fn a_probe_commits_a_write_that_stores_no_event() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(dir.path(), WINDOW).expect("store");
        runtime().block_on(store.probe()).expect("probe");
        let conn = Connection::open(dir.path().join(DATABASE_FILE)).expect("database");
        let at: i64 = conn
            .query_row("SELECT at FROM probe WHERE id = 1", [], |row| row.get(0))
            .expect("the probe's row is committed");
        assert!(at > 0);
        let events: i64 = conn
            .query_row("SELECT COUNT(*) FROM events", [], |row| row.get(0))
            .expect("count");
        assert_eq!(events, 0);
        assert!(counts(&store).is_empty());
    }

    /// The WAL file's size after 4 tasks appended 100 chunks of 50 events each, back to back,
    /// to a store tuned as given. A WAL file never shrinks: this is its peak.
    fn wal_after_steady_writes(tuning: Tuning) -> u64 {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Arc::new(SqliteStore::open_tuned(dir.path(), WINDOW, tuning).expect("store"));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let tasks: Vec<_> = (0..4)
                .map(|task| {
                    let store = Arc::clone(&store);
                    tokio::spawn(async move {
                        for chunk in 0..100 {
                            let events = (0..50)
                                .map(|i| {
                                    let mut e = event(i);
                                    e.message_id = format!("{task}-{chunk}-{i}-{}", "x".repeat(40));
                                    e.body = format!(r#"{{"padding":"{}"}}"#, "p".repeat(800));
                                    e
                                })
                                .collect();
                            store.append(events).await.expect("append");
                        }
                    })
                })
                .collect();
            for task in tasks {
                task.await.expect("task");
            }
        });
        std::fs::metadata(dir.path().join(format!("{DATABASE_FILE}-wal"))).map_or(0, |m| m.len())
    }

    #[test]
    fn under_steady_writes_the_log_is_restarted_instead_of_growing() {
        let checkpoint_interval = Duration::from_millis(5);
        let growing = wal_after_steady_writes(Tuning {
            checkpoint_interval,
            restart_pages: i64::MAX,
        });
        let restarted = wal_after_steady_writes(Tuning {
            checkpoint_interval,
            restart_pages: 64,
        });
        // 20,000 events of about 1 KB: about 20 MB of log without restarts.
        assert!(
            restarted * 3 < growing,
            "restarted {restarted} bytes, growing {growing} bytes"
        );
    }
}
