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
//! Indexes: one, `events_received`, in arrival order. Every secondary index keyed by a random
//! value (a user id, an event name, a messageId) dirties a random page per insert, and the WAL
//! then writes each dirty page per commit: with user, anonymous-id and label indexes ingest
//! fell from 55k to 21k events/s (BENCHMARKS.md). So the admin filters scan newest-first and
//! stop at `limit` matches, which is fast for the debugger's "recent events of this user" and
//! slow only for rare values in a huge store.
//!
//! Checkpoints run on their own thread in PASSIVE mode, never inside a commit.
//!
//! Deduplication: an event is skipped when the same source stored the same messageId within
//! the dedup window (24 hours, as Segment). The writer is the only writer, so the check and
//! the insert cannot race. The window's events are held in the writer's memory under a
//! 64-bit key (`dedup.rs`), so that the table is only appended to: about the event's own
//! bytes of WAL per event, where an index keyed by messageId wrote a 4 KiB page each.
//!
//! ```text
//!  sqlite/
//!    mod.rs         the store: opening, the seam's methods
//!    connection.rs  schema and per-connection settings, checked
//!    writer.rs      the writer thread: group commit, dedupe, pruning, probes
//!    dedup.rs       the dedup window in memory, and its check
//!    checkpoint.rs  the checkpointer thread
//!    counts.rs      the stats' counts, in the table and in memory
//!    traffic.rs     the traffic chart's counts per minute
//!    reads.rs       the reader connection's queries
//! ```

mod checkpoint;
mod connection;
mod counts;
mod dedup;
mod reads;
mod traffic;
mod writer;

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, params};
use tokio::sync::{broadcast, oneshot};

use super::{
    Appended, BoxFuture, Count, NewEvent, Query, Store, StoreError, StoredEvent, TrafficRow,
};

use checkpoint::{TUNING, Tuning, checkpoint_loop};
use connection::{SCHEMA, open_connection, sql_error};
pub use counts::OTHER_TYPE;
pub(crate) use counts::count_key;
use counts::{Counts, load_counts};
use dedup::{Dedup, Keys};
use reads::{run_query, select_events};
use traffic::{migrate_traffic, read_traffic};
use writer::{Job, PRUNE_CHUNK, PruneRequest, WriteRequest, Writer};

/// Most events committed in one transaction; bounds the latency one commit adds.
pub const MAX_GROUP_EVENTS: usize = 20_000;

/// Default deduplication window, Segment's.
pub const DEFAULT_DEDUP_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);

/// Requests waiting for the writer before ingest is pushed back on (bounded memory).
const WRITE_QUEUE: usize = 1024;

/// Live subscribers may lag this many events before they miss some.
const LIVE_BUFFER: usize = 4096;

/// The database file's name inside the data directory.
pub const DATABASE_FILE: &str = "events.sqlite3";

/// SQLite-backed [`Store`].
pub struct SqliteStore {
    writes: tokio::sync::mpsc::Sender<Job>,
    /// Dropped with the store, which stops the checkpointer.
    _keep_checkpointing: std::sync::mpsc::Sender<()>,
    reader: Arc<Mutex<Connection>>,
    counts: Arc<Mutex<Counts>>,
    live: broadcast::Sender<Arc<StoredEvent>>,
    #[cfg(test)]
    restarts_tried: Arc<std::sync::atomic::AtomicU64>,
}

impl SqliteStore {
    /// Opens (creating if needed) the store in `data_dir` and starts its writer thread.
    pub fn open(data_dir: &Path, dedup_window: Duration) -> Result<SqliteStore, StoreError> {
        SqliteStore::open_tuned(data_dir, dedup_window, TUNING, Keys::seeded())
    }

    fn open_tuned(
        data_dir: &Path,
        dedup_window: Duration,
        tuning: Tuning,
        keys: Keys,
    ) -> Result<SqliteStore, StoreError> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| StoreError::io("create the data directory", data_dir, e))?;
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
            .map_err(|e| StoreError::stopped("checkpointer", e))?;
        let counts = Arc::new(Mutex::new(load_counts(&mut writer)?));
        // After the counts: their migration sets the version this one then raises.
        migrate_traffic(&mut writer)?;
        let dedup_window_ms = i64::try_from(dedup_window.as_millis()).unwrap_or(i64::MAX);
        let dedup = Dedup::load(&writer, dedup_window_ms, keys)?;
        let reader = open_connection(&path)?;
        let (live, _) = broadcast::channel(LIVE_BUFFER);
        let (writes, requests) = tokio::sync::mpsc::channel(WRITE_QUEUE);
        let thread = Writer {
            conn: writer,
            requests,
            counts: Arc::clone(&counts),
            live: live.clone(),
            dedup,
            restart_wanted,
            restart_not_before: None,
            restarts_tried: Arc::default(),
        };
        #[cfg(test)]
        let restarts_tried = Arc::clone(&thread.restarts_tried);
        std::thread::Builder::new()
            .name("trackway-store".into())
            .spawn(move || thread.run())
            .map_err(|e| StoreError::stopped("writer", e))?;
        Ok(SqliteStore {
            writes,
            _keep_checkpointing: keep_checkpointing,
            reader: Arc::new(Mutex::new(reader)),
            counts,
            live,
            #[cfg(test)]
            restarts_tried,
        })
    }
}

impl Store for SqliteStore {
    fn append(&self, events: Vec<NewEvent>) -> BoxFuture<'_, Result<Appended, StoreError>> {
        Box::pin(async move {
            let (reply, answer) = oneshot::channel();
            self.writes
                .send(Job::Append(WriteRequest { events, reply }))
                .await
                .map_err(|_| StoreError::stopped("writer", "its thread ended"))?;
            answer
                .await
                .map_err(|_| StoreError::stopped("writer", "its thread ended"))?
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
                    .map_err(|_| StoreError::stopped("writer", "its thread ended"))?;
                let deleted = answer
                    .await
                    .map_err(|_| StoreError::stopped("writer", "its thread ended"))??;
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
                .map_err(|_| StoreError::stopped("writer", "its thread ended"))?;
            answer
                .await
                .map_err(|_| StoreError::stopped("writer", "its thread ended"))?
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

    fn traffic(
        &self,
        since_minute: i64,
        source: Option<&str>,
    ) -> BoxFuture<'_, Result<Vec<TrafficRow>, StoreError>> {
        let source = source.map(str::to_owned);
        self.read(move |conn| read_traffic(conn, since_minute, source.as_deref()))
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
            .map_err(|e| StoreError::stopped("reader", e))?
        })
    }
}

#[cfg(test)]
mod tests {
    use super::checkpoint::*;
    use super::connection::*;
    use super::counts::*;
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
    fn a_store_from_before_the_traffic_table_gets_its_last_day_charted_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        let runtime = runtime();
        let now = crate::storage::now_ms();
        let at = |n: usize| NewEvent {
            // Half past: no event sits on the horizon's minute.
            received_at: now - (n as i64) * 3_600_000 - 1_800_000,
            ..event(n)
        };
        {
            let store = SqliteStore::open(dir.path(), WINDOW).expect("store");
            // 0.5 to 29.5 hours ago: the 24 of the last day are charted, the older ones not.
            runtime
                .block_on(store.append((0..30).map(at).collect()))
                .expect("append");
        }
        let conn = Connection::open(dir.path().join(DATABASE_FILE)).expect("database");
        conn.execute_batch("DROP TABLE traffic; PRAGMA user_version = 1;")
            .expect("made old");
        drop(conn);
        let charted = |store: &SqliteStore| -> u64 {
            runtime
                .block_on(store.traffic(0, None))
                .expect("traffic")
                .iter()
                .map(|row| row.count)
                .sum()
        };
        let store = SqliteStore::open(dir.path(), WINDOW).expect("opened");
        assert_eq!(charted(&store), 24);
        runtime
            .block_on(store.append(vec![
                at(40),
                NewEvent {
                    message_id: "new".into(),
                    ..at(0)
                },
            ]))
            .expect("append");
        drop(store);
        // Filled once: reopening neither counts again nor loses the new one.
        let store = SqliteStore::open(dir.path(), WINDOW).expect("reopened");
        assert_eq!(charted(&store), 26);
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

    /// The ids of `source`'s accepted events, in order.
    fn accepted(
        runtime: &tokio::runtime::Runtime,
        store: &SqliteStore,
        source: &str,
    ) -> Vec<String> {
        runtime
            .block_on(store.read_after(source, 0, 10_000))
            .expect("read")
            .into_iter()
            .map(|e| {
                let body: serde_json::Value = serde_json::from_str(&e.body).expect("json");
                body["messageId"].as_str().unwrap_or_default().to_owned()
            })
            .collect()
    }

    /// An accepted event of `source` with messageId `id`, received at `at`.
    fn copy(source: &str, id: &str, at: i64) -> NewEvent {
        NewEvent {
            source: Arc::from(source),
            message_id: id.to_owned(),
            kind: "track".into(),
            user_id: Some("u".into()),
            anonymous_id: None,
            label: Some("Clicked".into()),
            received_at: at,
            rejected: None,
            body: format!(r#"{{"type":"track","messageId":"{id}"}}"#),
        }
    }

    #[test]
    fn events_whose_keys_collide_are_told_apart_by_their_message_ids() {
        let dir = tempfile::tempdir().expect("temp dir");
        // Every event gets the same 64-bit key.
        let store =
            SqliteStore::open_tuned(dir.path(), WINDOW, TUNING, Keys::Colliding).expect("store");
        let runtime = runtime();
        let append = |events| runtime.block_on(store.append(events)).expect("append");
        let at = 1_800_000_000_000;
        let ids: Vec<String> = (0..40).map(|n| format!("id-{n}")).collect();
        // Distinct ids in one request, and their copies inside it.
        let first: Vec<NewEvent> = ids[..20]
            .iter()
            .chain(&ids[..5])
            .map(|id| copy("web", id, at))
            .collect();
        assert_eq!(
            append(first),
            Appended {
                stored: 20,
                duplicates: 5
            }
        );
        // Then across requests: new ids stored, old ones refused, another source's kept.
        let second: Vec<NewEvent> = ids[15..]
            .iter()
            .map(|id| copy("web", id, at + 1))
            .chain([copy("jobs", &ids[0], at + 1)])
            .collect();
        assert_eq!(
            append(second),
            Appended {
                stored: 21,
                duplicates: 5
            }
        );
        assert_eq!(accepted(&runtime, &store, "web"), ids);
        assert_eq!(accepted(&runtime, &store, "jobs"), [ids[0].clone()]);
        // A rejected copy never makes the fixed event a duplicate, colliding or not.
        let rejected = NewEvent {
            rejected: Some("a reason".into()),
            ..copy("web", "fixable", at + 2)
        };
        assert_eq!(append(vec![rejected]).stored, 1);
        assert_eq!(append(vec![copy("web", "fixable", at + 3)]).stored, 1);
        assert_eq!(append(vec![copy("web", "fixable", at + 4)]).duplicates, 1);
    }

    #[test]
    fn a_copy_older_than_the_memory_holds_is_checked_in_the_database() {
        const DAY_MS: i64 = 24 * 60 * 60 * 1000;
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(dir.path(), WINDOW).expect("store");
        let runtime = runtime();
        let append = |events| runtime.block_on(store.append(events)).expect("append");
        let start = 1_800_000_000_000;
        assert_eq!(append(vec![copy("web", "early", start)]).stored, 1);
        // Three days on: `early` is out of the memory.
        assert_eq!(
            append(vec![copy("web", "later", start + 3 * DAY_MS)]).stored,
            1
        );
        // A copy stamped back then (a clock stepped back) is still found, in the database.
        assert_eq!(append(vec![copy("web", "early", start + 1)]).duplicates, 1);
        assert_eq!(append(vec![copy("web", "other", start + 1)]).stored, 1);
    }

    /// The schema before the dedup window moved into memory, as release 2 created it.
    const SCHEMA_WITH_THE_DEDUP_INDEX: &str = "
        CREATE TABLE events (
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
        CREATE INDEX events_dedup ON events (source, message_id, received_at);
        CREATE INDEX events_type ON events (type, seq);
        CREATE TABLE probe (id INTEGER PRIMARY KEY CHECK (id = 1), at INTEGER NOT NULL);
        CREATE TABLE counts (
            source TEXT NOT NULL, type TEXT NOT NULL, rejected INTEGER NOT NULL, n INTEGER NOT NULL,
            PRIMARY KEY (source, type, rejected)
        ) WITHOUT ROWID;
        CREATE TABLE traffic (
            minute INTEGER NOT NULL, source TEXT NOT NULL, type TEXT NOT NULL,
            rejected INTEGER NOT NULL, n INTEGER NOT NULL,
            PRIMARY KEY (minute, source, type, rejected)
        ) WITHOUT ROWID;
        PRAGMA user_version = 2;
    ";

    #[test]
    fn a_store_with_the_dedup_index_is_migrated_and_still_deduplicates() {
        let dir = tempfile::tempdir().expect("temp dir");
        let now = crate::storage::now_ms();
        {
            let conn = Connection::open(dir.path().join(DATABASE_FILE)).expect("database");
            conn.execute_batch(SCHEMA_WITH_THE_DEDUP_INDEX)
                .expect("old schema");
            for n in 0..30 {
                let e = copy(["web", "jobs"][n % 2], &format!("old-{n}"), now - 3_600_000);
                conn.execute(
                    "INSERT INTO events (source, message_id, type, received_at, body)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![&*e.source, e.message_id, e.kind, e.received_at, e.body],
                )
                .expect("insert");
            }
        }
        let store = SqliteStore::open(dir.path(), WINDOW).expect("opened");
        let runtime = runtime();
        let old = |source: usize| -> Vec<String> {
            (0..30)
                .filter(|n| n % 2 == source)
                .map(|n| format!("old-{n}"))
                .collect()
        };
        assert_eq!(accepted(&runtime, &store, "web"), old(0), "events kept");
        let indexes: Vec<String> = {
            let reader = store.reader.lock().expect("reader");
            let mut statement = reader
                .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'events' ORDER BY name")
                .expect("indexes");
            statement
                .query_map([], |row| row.get(0))
                .expect("indexes")
                .collect::<Result<_, _>>()
                .expect("indexes")
        };
        assert_eq!(indexes, ["events_received"]);
        // The ids the store held before are still duplicates; new ones are stored.
        let resent: Vec<NewEvent> = (0..30)
            .map(|n| copy(["web", "jobs"][n % 2], &format!("old-{n}"), now))
            .chain([copy("web", "new", now)])
            .collect();
        let appended = runtime.block_on(store.append(resent)).expect("append");
        assert_eq!(
            appended,
            Appended {
                stored: 1,
                duplicates: 30
            }
        );
        drop(store);
        // And after another open, from the migrated store.
        let store = SqliteStore::open(dir.path(), WINDOW).expect("reopened");
        let appended = runtime
            .block_on(store.append(vec![
                copy("jobs", "old-1", now + 1),
                copy("web", "new", now + 1),
            ]))
            .expect("append");
        assert_eq!(appended.duplicates, 2);
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
        let store = Arc::new(
            SqliteStore::open_tuned(dir.path(), WINDOW, tuning, Keys::seeded()).expect("store"),
        );
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
        // 20,000 events of about 1 KB, with their indexes: the log grew to 95 MB when it was
        // never restarted (measured with `restart_pages: i64::MAX`). Any checkpoint pass
        // counts as caught up, so that a loaded machine's slow passes still lead to a restart.
        // Restarted, it peaked at 2.4 to 7.8 MB with three CPU hogs on two cores: the bound
        // leaves room for a starved checkpointer thread, and is a quarter of the unrestarted.
        let restarted = wal_after_steady_writes(Tuning {
            checkpoint_interval: Duration::from_millis(5),
            restart_pages: 64,
            caught_up: Duration::from_secs(60),
        });
        assert!(
            restarted < 24 * 1024 * 1024,
            "the log grew to {restarted} bytes"
        );
    }

    #[test]
    fn a_reader_that_holds_the_log_back_costs_the_writer_one_wait_a_backoff() {
        let dir = tempfile::tempdir().expect("temp dir");
        // A restart asked for on every checkpoint pass, every 5 ms.
        let store = SqliteStore::open_tuned(
            dir.path(),
            WINDOW,
            Tuning {
                checkpoint_interval: Duration::from_millis(5),
                restart_pages: 1,
                caught_up: Duration::from_secs(60),
            },
            Keys::seeded(),
        )
        .expect("store");
        let started = std::time::Instant::now();
        let runtime = runtime();
        let chunk = |n: usize| {
            (0..20)
                .map(|i| {
                    let mut e = event(i);
                    e.message_id = format!("{n}-{i}");
                    e
                })
                .collect::<Vec<_>>()
        };
        runtime.block_on(store.append(chunk(0))).expect("append");
        // A long admin query: a read transaction that stays open keeps the log from restarting.
        let reader = Connection::open(dir.path().join(DATABASE_FILE)).expect("database");
        reader.execute_batch("BEGIN").expect("begin");
        let _: i64 = reader
            .query_row("SELECT COUNT(*) FROM events", [], |row| row.get(0))
            .expect("read");
        for n in 1..=30 {
            runtime.block_on(store.append(chunk(n))).expect("append");
            // Every commit comes after at least one pass asking for a restart.
            std::thread::sleep(Duration::from_millis(10));
        }
        let tried = store
            .restarts_tried
            .load(std::sync::atomic::Ordering::Relaxed);
        let backoffs = started.elapsed().as_secs_f64() / RESTART_BACKOFF.as_secs_f64();
        // Without the backoff, each of the 30 commits waits RESTART_WAIT for the reader first.
        // With it, one try per backoff, and one or two before the reader began.
        assert!(
            tried >= 1 && (tried as f64) <= backoffs.ceil() + 2.0,
            "{tried} restarts tried in {:?}",
            started.elapsed()
        );
        reader.execute_batch("COMMIT").expect("commit");
    }
}
