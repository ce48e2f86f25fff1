//! The traffic chart's counts: events stored per minute, source, type and status, in the
//! `traffic` table, added to in the transaction that stores the events.
//!
//! ```text
//!  traffic: minute   | source | type  | rejected | n
//!           29481120 | web    | track | 0        | 1200
//! ```
//!
//! Keyed by minute first, so the chart's read (the last hour, all sources or one) is a range
//! of the primary key whatever the events' number. Rows older than [`TRAFFIC_RETENTION`] go
//! with retention's pruning.
//!
//! [`TRAFFIC_RETENTION`]: crate::storage::TRAFFIC_RETENTION

use std::collections::BTreeMap;

use rusqlite::{Connection, TransactionBehavior, params};

use super::connection::sql_error;
use super::counts::count_key;
use crate::storage::{StoreError, TrafficRow, now_ms, traffic_horizon, traffic_minute};

/// `PRAGMA user_version` of a store whose `traffic` table is kept; a store from before it has
/// the table filled once, from the events of the last [`TRAFFIC_RETENTION`], when first
/// opened.
///
/// [`TRAFFIC_RETENTION`]: crate::storage::TRAFFIC_RETENTION
pub(super) const TRAFFIC_VERSION: i64 = 2;

/// Changes to the traffic: (minute, source, type, rejected) to a number of events.
pub(super) type Traffic = BTreeMap<(i64, String, String, bool), i64>;

/// Adds one event to `traffic`, keyed as the chart shows it.
pub(super) fn tally(
    traffic: &mut Traffic,
    source: &str,
    kind: &str,
    rejected: bool,
    received_at: i64,
) {
    let (source, kind, rejected) = count_key(source.to_owned(), kind, rejected);
    *traffic
        .entry((traffic_minute(received_at), source, kind, rejected))
        .or_default() += 1;
}

/// Adds `delta` to the `traffic` table: one upsert per key, inside the caller's transaction.
pub(super) fn add_traffic(
    transaction: &rusqlite::Transaction<'_>,
    delta: &Traffic,
) -> Result<(), StoreError> {
    let mut upsert = transaction
        .prepare_cached(
            "INSERT INTO traffic (minute, source, type, rejected, n) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (minute, source, type, rejected) DO UPDATE SET n = n + excluded.n",
        )
        .map_err(sql_error)?;
    for ((minute, source, kind, rejected), n) in delta {
        upsert
            .execute(params![minute, source, kind, rejected, n])
            .map_err(sql_error)?;
    }
    Ok(())
}

/// Deletes `source`'s minutes older than the traffic's retention.
pub(super) fn prune_traffic(
    transaction: &rusqlite::Transaction<'_>,
    source: &str,
) -> Result<(), StoreError> {
    transaction
        .execute(
            "DELETE FROM traffic WHERE minute < ?1 AND source = ?2",
            params![traffic_horizon(now_ms()), source],
        )
        .map_err(sql_error)?;
    Ok(())
}

/// The traffic since `since_minute`, of `source` or of all, oldest first.
pub(super) fn read_traffic(
    conn: &Connection,
    since_minute: i64,
    source: Option<&str>,
) -> Result<Vec<TrafficRow>, StoreError> {
    let mut statement = conn
        .prepare_cached(
            "SELECT minute, source, type, rejected, n FROM traffic
             WHERE minute >= ?1 AND (?2 IS NULL OR source = ?2)
             ORDER BY minute, source, type, rejected",
        )
        .map_err(sql_error)?;
    let rows = statement
        .query_map(params![since_minute, source], |row| {
            Ok(TrafficRow {
                minute: row.get(0)?,
                source: row.get(1)?,
                kind: row.get(2)?,
                rejected: row.get(3)?,
                count: row.get::<_, i64>(4)? as u64,
            })
        })
        .map_err(sql_error)?;
    rows.collect::<Result<_, _>>().map_err(sql_error)
}

/// Fills the table once in a store from before it, from the events still inside the traffic's
/// retention (one scan of them, indexed by nothing: it happens once per store).
pub(super) fn migrate_traffic(conn: &mut Connection) -> Result<(), StoreError> {
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(sql_error)?;
    if version >= TRAFFIC_VERSION {
        return Ok(());
    }
    let transaction = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql_error)?;
    let since = traffic_horizon(now_ms()) * crate::storage::TRAFFIC_BUCKET_MS;
    let mut traffic = Traffic::new();
    {
        let mut statement = transaction
            .prepare(
                "SELECT source, type, rejected IS NOT NULL, received_at FROM events
                 WHERE received_at >= ?1",
            )
            .map_err(sql_error)?;
        let mut rows = statement.query(params![since]).map_err(sql_error)?;
        while let Some(row) = rows.next().map_err(sql_error)? {
            let source: String = row.get(0).map_err(sql_error)?;
            let kind: String = row.get(1).map_err(sql_error)?;
            tally(
                &mut traffic,
                &source,
                &kind,
                row.get(2).map_err(sql_error)?,
                row.get(3).map_err(sql_error)?,
            );
        }
    }
    transaction
        .execute("DELETE FROM traffic", [])
        .map_err(sql_error)?;
    add_traffic(&transaction, &traffic)?;
    transaction
        .pragma_update(None, "user_version", TRAFFIC_VERSION)
        .map_err(sql_error)?;
    transaction.commit().map_err(sql_error)
}
