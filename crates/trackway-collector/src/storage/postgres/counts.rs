//! `/api/stats`'s counts, kept per collector and summed when read.
//!
//! ```text
//!  counts: collector | source | type  | rejected | n
//!          a1f3…     | web    | track | false    | 1200   ─┐
//!          9c07…     | web    | track | false    |  800   ─┴─▶ web/track/accepted: 2000
//! ```
//!
//! Every group commit adds to the counts in its own transaction, so they are exact after any
//! crash. Were the rows shared, every collector's commits would queue on the same few row
//! locks; each collector has its own rows instead (a random id per process), and a read sums
//! them. A collector starting folds the rows of every other id into its own, in one
//! transaction: the sum is unchanged (a row being updated meanwhile is deleted only once that
//! update is done, with its new value), and rows of collectors long gone do not pile up.

use std::collections::BTreeMap;

use deadpool_postgres::{GenericClient, Object};

use super::pg_error;
use crate::storage::sqlite::count_key;
use crate::storage::{Count, StoreError};

/// Changes to the counts, keyed as they are shown.
pub(super) type Counts = BTreeMap<(String, String, bool), i64>;

/// Random bytes in a collector's id: enough that two processes never pick the same.
const ID_BYTES: usize = 8;

/// A probe row untouched this long belongs to a collector that is gone.
const STALE_PROBE_MS: i64 = 24 * 60 * 60 * 1000;

/// A fresh id for this process's counts rows.
pub(super) fn collector_id() -> Result<String, StoreError> {
    let mut bytes = [0u8; ID_BYTES];
    getrandom::fill(&mut bytes)
        .map_err(|e| StoreError::stopped("start-up", format!("cannot draw a collector id: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Adds `delta` to `collector`'s rows, inside the caller's transaction.
pub(super) async fn add(
    client: &impl GenericClient,
    collector: &str,
    delta: &Counts,
) -> Result<(), tokio_postgres::Error> {
    if delta.is_empty() {
        return Ok(());
    }
    let mut sources = Vec::with_capacity(delta.len());
    let mut kinds = Vec::with_capacity(delta.len());
    let mut rejected = Vec::with_capacity(delta.len());
    let mut ns = Vec::with_capacity(delta.len());
    for ((source, kind, is_rejected), n) in delta {
        sources.push(source.as_str());
        kinds.push(kind.as_str());
        rejected.push(*is_rejected);
        ns.push(*n);
    }
    client
        .execute(
            "INSERT INTO counts (collector, source, type, rejected, n)
             SELECT $1, * FROM unnest($2::text[], $3::text[], $4::boolean[], $5::bigint[])
             ON CONFLICT (collector, source, type, rejected) DO UPDATE SET n = counts.n + excluded.n",
            &[&collector, &sources, &kinds, &rejected, &ns],
        )
        .await?;
    Ok(())
}

/// The counts of the events stored by `events` (source, type, rejected).
pub(super) fn of<'a>(events: impl Iterator<Item = (&'a str, &'a str, bool)>) -> Counts {
    let mut counts = Counts::new();
    for (source, kind, rejected) in events {
        *counts
            .entry(count_key(source.to_owned(), kind, rejected))
            .or_default() += 1;
    }
    counts
}

/// Every collector's rows, summed.
pub(super) async fn read(client: &impl GenericClient) -> Result<Vec<Count>, StoreError> {
    let rows = client
        .query(
            "SELECT source, type, rejected, sum(n)::bigint FROM counts
             GROUP BY 1, 2, 3 HAVING sum(n) > 0 ORDER BY 1, 2, 3",
            &[],
        )
        .await
        .map_err(pg_error)?;
    Ok(rows
        .iter()
        .map(|row| Count {
            source: row.get(0),
            kind: row.get(1),
            rejected: row.get(2),
            count: row.get::<_, i64>(3) as u64,
        })
        .collect())
}

/// Folds the rows of every other collector into `collector`'s.
pub(super) async fn adopt_others(client: &mut Object, collector: &str) -> Result<(), StoreError> {
    let transaction = client.transaction().await.map_err(pg_error)?;
    transaction
        .execute(
            "WITH gone AS (DELETE FROM counts WHERE collector <> $1 RETURNING *)
             INSERT INTO counts (collector, source, type, rejected, n)
             SELECT $1, source, type, rejected, sum(n) FROM gone GROUP BY 2, 3, 4
             ON CONFLICT (collector, source, type, rejected) DO UPDATE SET n = counts.n + excluded.n",
            &[&collector],
        )
        .await
        .map_err(pg_error)?;
    transaction
        .execute("DELETE FROM counts WHERE n = 0", &[])
        .await
        .map_err(pg_error)?;
    // Probe rows of collectors gone for a day (a live one rewrites its row every few seconds
    // while it is probed).
    transaction
        .execute(
            "DELETE FROM probe WHERE at < $1",
            &[&(crate::storage::now_ms() - STALE_PROBE_MS)],
        )
        .await
        .map_err(pg_error)?;
    transaction.commit().await.map_err(pg_error)
}
