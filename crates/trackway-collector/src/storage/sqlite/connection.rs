//! Opening a connection: the schema, and the settings every connection runs with (WAL,
//! `synchronous=FULL`, cache and memory map), checked so that a connection which would lose an
//! acknowledged event is refused.

use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;

use crate::storage::StoreError;

/// SQLite page cache per connection, in KiB (a negative `cache_size` is KiB): 64 MiB.
pub(super) const CACHE_KIB: i64 = -64 * 1024;

/// Bytes of the database file read through a memory map: 1 GiB of address space, not memory.
pub(super) const MMAP_BYTES: i64 = 1 << 30;

/// How long a connection waits for a lock another holds.
pub(super) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

pub(super) const SCHEMA: &str = "
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
-- In arrival order, so inserts append to it: opening loads the dedup window from it without
-- reading an event body, and a duplicate check the memory cannot answer reads a range of it
-- (`dedup.rs`). It replaced `events_dedup (source, message_id, received_at)`, whose random
-- keys dirtied a page per insert; a store from before loses that index when opened.
CREATE INDEX IF NOT EXISTS events_received ON events (received_at, source, message_id);
DROP INDEX IF EXISTS events_dedup;
-- No index by type: the admin filter's `(?1 IS NULL OR type = ?1)` never used the one there
-- was (`events_type (type, seq)`, dropped when a store from before is opened), which cost a
-- leaf page per type in every commit.
DROP INDEX IF EXISTS events_type;
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
-- The traffic chart: events per minute (receivedAt / 60000), source, type and status, added to
-- in the transactions that store events; minute first, so the last hour is a key range.
CREATE TABLE IF NOT EXISTS traffic (
    minute   INTEGER NOT NULL,
    source   TEXT    NOT NULL,
    type     TEXT    NOT NULL,
    rejected INTEGER NOT NULL,
    n        INTEGER NOT NULL,
    PRIMARY KEY (minute, source, type, rejected)
) WITHOUT ROWID;
";

pub(super) fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).map_err(sql_error)?;
    configure(&conn)?;
    Ok(conn)
}

/// The settings every connection of the store runs with, checked.
pub(super) fn configure(conn: &Connection) -> Result<(), StoreError> {
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
pub(super) const SYNCHRONOUS_FULL: i64 = 2;

/// Refuses a connection that would acknowledge what it may lose: SQLite keeps its old journal
/// without an error where WAL is unavailable (some network file systems), and without
/// `synchronous=FULL` a WAL commit is not fsynced, which a test killing the process cannot
/// notice (the page cache survives a `kill -9`, not a power cut).
pub(super) fn check_durability(conn: &Connection) -> Result<(), StoreError> {
    let (journal, synchronous) = durability_settings(conn)?;
    if !journal.eq_ignore_ascii_case("wal") || synchronous != SYNCHRONOUS_FULL {
        return Err(StoreError::Incompatible {
            detail: format!(
                "the store needs WAL with synchronous=FULL, and got journal_mode={journal}, \
                 synchronous={synchronous}: keep the data directory on a local file system"
            ),
        });
    }
    Ok(())
}

/// A connection's `journal_mode` and `synchronous`, as SQLite reports them.
pub(super) fn durability_settings(conn: &Connection) -> Result<(String, i64), StoreError> {
    let journal = conn
        .query_row("PRAGMA journal_mode", [], |row| row.get(0))
        .map_err(sql_error)?;
    let synchronous = conn
        .query_row("PRAGMA synchronous", [], |row| row.get(0))
        .map_err(sql_error)?;
    Ok((journal, synchronous))
}

/// A SQLite error as the seam's error.
pub(super) fn sql_error(e: rusqlite::Error) -> StoreError {
    StoreError::sqlite(e)
}
