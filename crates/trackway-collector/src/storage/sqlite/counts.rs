//! `/api/stats`'s counts: the `counts` table, kept in the transactions that add and delete
//! events, and its copy in memory.

use std::collections::BTreeMap;

use rusqlite::{Connection, TransactionBehavior, params};

use super::connection::sql_error;
use crate::storage::StoreError;

/// `PRAGMA user_version` of a store whose `counts` table is kept; a store from before it
/// (version 0) has the table filled from its events once, when it is first opened.
pub(super) const COUNTS_VERSION: i64 = 1;

pub(super) type Counts = BTreeMap<(String, String, bool), u64>;

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

/// The counts, from the `counts` table; filled first from the events themselves in a store
/// from before the table (a scan of every event, once).
pub(super) fn load_counts(conn: &mut Connection) -> Result<Counts, StoreError> {
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
pub(super) fn count_events(
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
pub(super) fn change_counts(
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
