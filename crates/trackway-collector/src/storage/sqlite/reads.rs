//! Reads on the reader connection: the admin API's filters and delivery's reads after a
//! cursor (WAL: readers never block the writer).

use std::sync::Arc;

use rusqlite::{Connection, params};

use super::connection::sql_error;
use crate::storage::{Query, StoreError, StoredEvent};

pub(super) fn run_query(conn: &Connection, query: &Query) -> Result<Vec<StoredEvent>, StoreError> {
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
pub(super) fn select_events(
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
