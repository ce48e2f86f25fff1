//! The traffic chart's counts: events stored per minute, source, type and status, kept per
//! collector as [`counts`](super::counts) are and summed when read.
//!
//! ```text
//!  traffic: minute   | source | type  | rejected | collector | n
//!           29481120 | web    | track | false    | a1f3…     | 1200  ─┐
//!           29481120 | web    | track | false    | 9c07…     |  800  ─┴─▶ 2000
//! ```
//!
//! Every collector commits into the current minute at once: shared rows would make their
//! commits queue on the same row locks, held until each commit's flush. Each collector adds to
//! rows of its own, in its group's transaction; a read sums them. The chart's read is a range
//! of the primary key (minute first). Rows older than [`TRAFFIC_RETENTION`] go with
//! retention's pruning; rows of collectors gone need no folding, they age out the same way.
//!
//! [`TRAFFIC_RETENTION`]: crate::storage::TRAFFIC_RETENTION

use std::collections::BTreeMap;

use deadpool_postgres::GenericClient;

use super::pg_error;
use crate::storage::sqlite::count_key;
use crate::storage::{StoreError, TrafficRow, traffic_minute};

/// Changes to the traffic: (minute, source, type, rejected) to a number of events.
pub(super) type Traffic = BTreeMap<(i64, String, String, bool), i64>;

/// The traffic of the events `events` stored (source, type, rejected, receivedAt).
pub(super) fn of<'a>(events: impl Iterator<Item = (&'a str, &'a str, bool, i64)>) -> Traffic {
    let mut traffic = Traffic::new();
    for (source, kind, rejected, received_at) in events {
        let (source, kind, rejected) = count_key(source.to_owned(), kind, rejected);
        *traffic
            .entry((traffic_minute(received_at), source, kind, rejected))
            .or_default() += 1;
    }
    traffic
}

/// Adds `delta` to `collector`'s rows, one statement, inside the caller's transaction.
pub(super) async fn add(
    client: &impl GenericClient,
    collector: &str,
    delta: &Traffic,
) -> Result<(), tokio_postgres::Error> {
    if delta.is_empty() {
        return Ok(());
    }
    let mut minutes = Vec::with_capacity(delta.len());
    let mut sources = Vec::with_capacity(delta.len());
    let mut kinds = Vec::with_capacity(delta.len());
    let mut rejected = Vec::with_capacity(delta.len());
    let mut ns = Vec::with_capacity(delta.len());
    for ((minute, source, kind, is_rejected), n) in delta {
        minutes.push(*minute);
        sources.push(source.as_str());
        kinds.push(kind.as_str());
        rejected.push(*is_rejected);
        ns.push(*n);
    }
    client
        .execute(
            "INSERT INTO traffic (minute, source, type, rejected, collector, n)
             SELECT m, s, t, r, $1, n
             FROM unnest($2::bigint[], $3::text[], $4::text[], $5::boolean[], $6::bigint[])
                 AS d(m, s, t, r, n)
             ON CONFLICT (minute, source, type, rejected, collector)
             DO UPDATE SET n = traffic.n + excluded.n",
            &[&collector, &minutes, &sources, &kinds, &rejected, &ns],
        )
        .await?;
    Ok(())
}

/// Every collector's rows since `since_minute`, of `source` or of all, summed, oldest first.
pub(super) async fn read(
    client: &impl GenericClient,
    since_minute: i64,
    source: Option<&str>,
) -> Result<Vec<TrafficRow>, StoreError> {
    let rows = client
        .query(
            "SELECT minute, source, type, rejected, sum(n)::bigint FROM traffic
             WHERE minute >= $1 AND ($2::text IS NULL OR source = $2)
             GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4",
            &[&since_minute, &source],
        )
        .await
        .map_err(pg_error)?;
    Ok(rows
        .iter()
        .map(|row| TrafficRow {
            minute: row.get(0),
            source: row.get(1),
            kind: row.get(2),
            rejected: row.get(3),
            count: row.get::<_, i64>(4) as u64,
        })
        .collect())
}

/// Deletes `source`'s minutes older than `horizon`.
pub(super) async fn prune(
    client: &impl GenericClient,
    source: &str,
    horizon: i64,
) -> Result<(), StoreError> {
    client
        .execute(
            "DELETE FROM traffic WHERE minute < $1 AND source = $2",
            &[&horizon, &source],
        )
        .await
        .map_err(pg_error)?;
    Ok(())
}
