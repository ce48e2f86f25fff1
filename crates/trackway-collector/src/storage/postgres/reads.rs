//! Reads (the admin API, delivery) and deletes (retention, the dedup window's old rows).
//!
//! Reads never block the writers (MVCC). Delivery's `seq > cursor` is safe because seqs become
//! visible in order (see the module above: they are allocated under a lock held to commit).

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{GenericClient, Object, Pool};
use tokio_postgres::Row;

use super::{counts, displayable, pg_error};
use crate::storage::{Query, StoreError, StoredEvent};

/// Rows deleted per retention transaction: keeps each short.
const PRUNE_CHUNK: i64 = 10_000;

/// Dedup rows deleted per transaction when they leave the window.
const DEDUP_PRUNE_CHUNK: i64 = 10_000;

const COLUMNS: &str = "seq, source, type, received_at, rejected, body";

fn event(row: &Row) -> StoredEvent {
    StoredEvent {
        seq: row.get(0),
        source: Arc::from(row.get::<_, &str>(1)),
        kind: row.get(2),
        received_at: row.get(3),
        rejected: row.get(4),
        body: row.get(5),
    }
}

/// The admin API's filter, newest first.
pub(super) async fn query(
    client: &impl GenericClient,
    query: &Query,
) -> Result<Vec<StoredEvent>, StoreError> {
    let kind = query.kind.as_deref().map(displayable);
    let user = query.user_id.as_deref().map(displayable);
    let label = query.label.as_deref().map(displayable);
    let rows = client
        .query(
            &format!(
                "SELECT {COLUMNS} FROM events
                 WHERE ($1::text IS NULL OR type = $1)
                   AND ($2::text IS NULL OR user_id = $2 OR anonymous_id = $2)
                   AND ($3::text IS NULL OR label = $3)
                   AND ($4::bigint IS NULL OR seq < $4)
                 ORDER BY seq DESC LIMIT $5"
            ),
            &[
                &kind.as_deref(),
                &user.as_deref(),
                &label.as_deref(),
                &query.before,
                &(query.limit as i64),
            ],
        )
        .await
        .map_err(pg_error)?;
    Ok(rows.iter().map(event).collect())
}

/// Accepted events of `source` after `after`, oldest first.
pub(super) async fn read_after(
    client: &impl GenericClient,
    source: &str,
    after: i64,
    limit: usize,
) -> Result<Vec<StoredEvent>, StoreError> {
    let rows = client
        .query(
            &format!(
                "SELECT {COLUMNS} FROM events
                 WHERE source = $1 AND seq > $2 AND rejected IS NULL ORDER BY seq LIMIT $3"
            ),
            &[&source, &after, &(limit as i64)],
        )
        .await
        .map_err(pg_error)?;
    Ok(rows.iter().map(event).collect())
}

/// The events with these seqs, oldest first.
pub(super) async fn get(
    client: &impl GenericClient,
    seqs: &[i64],
) -> Result<Vec<StoredEvent>, StoreError> {
    let rows = client
        .query(
            &format!("SELECT {COLUMNS} FROM events WHERE seq = ANY($1) ORDER BY seq"),
            &[&seqs],
        )
        .await
        .map_err(pg_error)?;
    Ok(rows.iter().map(event).collect())
}

/// Accepted events of `source` after `after`: a destination's lag.
pub(super) async fn lag(
    client: &impl GenericClient,
    source: &str,
    after: i64,
) -> Result<u64, StoreError> {
    let row = client
        .query_one(
            "SELECT count(*) FROM events WHERE source = $1 AND seq > $2 AND rejected IS NULL",
            &[&source, &after],
        )
        .await
        .map_err(pg_error)?;
    Ok(row.get::<_, i64>(0) as u64)
}

/// Deletes `source`'s events received before `received_before` with `seq <= up_to`, chunk by
/// chunk, each chunk taken off this collector's counts in its own transaction.
pub(super) async fn prune(
    client: &mut Object,
    collector: &str,
    source: &str,
    received_before: i64,
    up_to: i64,
) -> Result<usize, StoreError> {
    let mut total = 0;
    loop {
        let transaction = client.transaction().await.map_err(pg_error)?;
        let rows = transaction
            .query(
                "WITH gone AS (
                     DELETE FROM events WHERE seq IN (
                         SELECT seq FROM events
                         WHERE source = $1 AND received_at < $2 AND seq <= $3
                         ORDER BY seq LIMIT $4)
                     RETURNING source, type, rejected IS NOT NULL AS rejected)
                 SELECT source, type, rejected, count(*) FROM gone GROUP BY 1, 2, 3",
                &[&source, &received_before, &up_to, &PRUNE_CHUNK],
            )
            .await
            .map_err(pg_error)?;
        let mut removed = counts::Counts::new();
        let mut deleted = 0;
        for row in &rows {
            let n: i64 = row.get(3);
            deleted += n;
            let key = crate::storage::sqlite::count_key(row.get(0), row.get(1), row.get(2));
            *removed.entry(key).or_default() -= n;
        }
        counts::add(&transaction, collector, &removed)
            .await
            .map_err(pg_error)?;
        transaction.commit().await.map_err(pg_error)?;
        total += deleted as usize;
        if deleted < PRUNE_CHUNK {
            // The traffic outlives the events (a day, whatever their retention).
            let horizon = crate::storage::traffic_horizon(crate::storage::now_ms());
            super::traffic::prune(&*client, source, horizon).await?;
            return Ok(total);
        }
    }
}

/// Deletes dedup rows that have left the window, every `interval`, for as long as the store's
/// runtime runs. Such rows would not make anything a duplicate (the upsert compares arrivals),
/// they only take space.
pub(super) async fn prune_dedup_loop(pool: Pool, window_ms: i64, interval: Duration) {
    // Not at once: a collector starting has nothing of its own to prune yet.
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    loop {
        ticks.tick().await;
        if let Err(e) = prune_dedup(&pool, window_ms).await {
            tracing::warn!("store: pruning the dedup window failed (will retry): {e}");
        }
    }
}

async fn prune_dedup(pool: &Pool, window_ms: i64) -> Result<(), StoreError> {
    let client = pool.get().await.map_err(super::pool_error)?;
    let horizon = crate::storage::now_ms() - window_ms;
    loop {
        let deleted = client
            .execute(
                "DELETE FROM dedup WHERE ctid = ANY(ARRAY(
                     SELECT ctid FROM dedup WHERE received_at < $1 LIMIT $2))",
                &[&horizon, &DEDUP_PRUNE_CHUNK],
            )
            .await
            .map_err(pg_error)?;
        if deleted < DEDUP_PRUNE_CHUNK as u64 {
            return Ok(());
        }
    }
}

/// Hands every event stored by any collector to `live`'s subscribers, in seq order, looking
/// every `interval`; starts after `start`, the last seq stored when the store opened.
pub(super) async fn live_loop(
    pool: Pool,
    live: tokio::sync::broadcast::Sender<Arc<StoredEvent>>,
    start: i64,
    interval: Duration,
    batch: i64,
) {
    let mut last = start;
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let look = async {
            let client = pool.get().await.map_err(super::pool_error)?;
            if live.receiver_count() == 0 {
                // Nobody listens: only move past what is stored, unless someone subscribed
                // meanwhile (then the next look hands them what came in since).
                let row = client
                    .query_one("SELECT coalesce(max(seq), 0) FROM events", &[])
                    .await
                    .map_err(pg_error)?;
                if live.receiver_count() == 0 {
                    last = last.max(row.get(0));
                }
                return Ok::<_, StoreError>(());
            }
            let after = last;
            let rows = client
                .query(
                    &format!("SELECT {COLUMNS} FROM events WHERE seq > $1 ORDER BY seq LIMIT $2"),
                    &[&after, &batch],
                )
                .await
                .map_err(pg_error)?;
            for row in &rows {
                let event = event(row);
                last = event.seq;
                // No subscriber left is fine.
                let _ = live.send(Arc::new(event));
            }
            Ok(())
        };
        // A black-holed connection must not stop the looking for good.
        let result = tokio::time::timeout(super::STATEMENT_TIMEOUT, look)
            .await
            .unwrap_or_else(|_| {
                Err(StoreError::Unavailable {
                    detail: "postgres: no answer".into(),
                })
            });
        if let Err(e) = result {
            tracing::debug!("store: looking for new events failed (will retry): {e}");
        }
    }
}
