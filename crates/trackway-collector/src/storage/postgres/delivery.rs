//! Delivery bookkeeping in the shared database: cursors, counts, dead letters, and leases.
//!
//! ```text
//!  delivery_cursors: destination | seq | counts… | epoch | holder | expires_at
//!
//!  acquire:  holder = me, epoch = epoch + 1, expires_at = now() + TTL
//!            WHERE holder IS NULL OR holder = me … OR expires_at < now()
//!  renew:    expires_at = now() + TTL            WHERE epoch = mine AND holder = me
//!  advance:  seq = …, counts += …; dead letters  WHERE epoch = mine  (else: fenced, nothing)
//!  release:  holder = NULL                       WHERE epoch = mine
//! ```
//!
//! Each destination is delivered by the collector holding its lease. Expiry is measured by the
//! database's clock, so the collectors' clocks need not agree. A holder that dies stops
//! renewing; once its lease has expired, the next collector to try takes it with a higher
//! epoch. If the old holder was only paused or cut off, its next cursor update names the old
//! epoch and changes nothing: it learns it lost the lease and stops, and what it delivered
//! meanwhile is delivered again by the new holder (at least once; at most the batch in
//! flight, as after a crash of a lone collector).

use std::sync::Arc;

use deadpool_postgres::{GenericClient, Pool};

use super::{PostgresStore, displayable, pg_error};
use crate::delivery::LEASE_TTL;
use crate::delivery::state::{Batch, DeadLetter, DeliveryBook, Lease, Progress};
use crate::storage::{BoxFuture, StoreError, now_ms};

/// `DeliveryBook` in the database a [`PostgresStore`] uses, shared by its group.
pub struct PostgresBook {
    store: Arc<PostgresStore>,
}

impl PostgresBook {
    /// The bookkeeping kept in `store`'s database, leases held as `store`'s collector.
    pub fn new(store: Arc<PostgresStore>) -> PostgresBook {
        PostgresBook { store }
    }

    /// A pooled connection and this collector's id, for work on the store's runtime.
    fn parts(&self) -> (Pool, Arc<str>) {
        (self.store.pool.clone(), Arc::clone(&self.store.collector))
    }
}

async fn client(pool: &Pool) -> Result<deadpool_postgres::Object, StoreError> {
    PostgresStore::client(pool).await
}

/// [`LEASE_TTL`] in milliseconds, for `now() + interval`.
fn ttl_ms() -> f64 {
    LEASE_TTL.as_millis() as f64
}

async fn progress(
    client: &impl GenericClient,
    destination: &str,
    start: i64,
) -> Result<Progress, StoreError> {
    client
        .execute(
            "INSERT INTO delivery_cursors (destination, seq) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&destination, &start],
        )
        .await
        .map_err(pg_error)?;
    let row = client
        .query_one(
            "SELECT seq, delivered, dead_lettered, skipped, redelivered FROM delivery_cursors
             WHERE destination = $1",
            &[&destination],
        )
        .await
        .map_err(pg_error)?;
    Ok(Progress {
        cursor: row.get(0),
        delivered: row.get::<_, i64>(1) as u64,
        dead_lettered: row.get::<_, i64>(2) as u64,
        skipped: row.get::<_, i64>(3) as u64,
        redelivered: row.get::<_, i64>(4) as u64,
    })
}

impl DeliveryBook for PostgresBook {
    fn progress(
        &self,
        destination: &str,
        start: i64,
    ) -> BoxFuture<'_, Result<Progress, StoreError>> {
        let (pool, _) = self.parts();
        let destination = destination.to_owned();
        self.store
            .run(async move { progress(&client(&pool).await?, &destination, start).await })
    }

    fn advance(
        &self,
        destination: &str,
        lease: Lease,
        batch: Batch,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        let (pool, _) = self.parts();
        let destination = destination.to_owned();
        self.store.run(async move {
            let mut client = client(&pool).await?;
            let transaction = client.transaction().await.map_err(pg_error)?;
            // The fence: only the current epoch moves the cursor.
            let moved = transaction
                .execute(
                    "UPDATE delivery_cursors SET seq = $2, delivered = delivered + $3,
                            skipped = skipped + $4, dead_lettered = dead_lettered + $5,
                            redelivered = redelivered + $7
                     WHERE destination = $1 AND epoch = $6",
                    &[
                        &destination,
                        &batch.cursor,
                        &(batch.delivered as i64),
                        &(batch.skipped as i64),
                        &(batch.dead.len() as i64),
                        &lease.epoch,
                        &(batch.redelivered as i64),
                    ],
                )
                .await
                .map_err(pg_error)?;
            if moved == 0 {
                return Ok(false);
            }
            let now = now_ms();
            for (seq, reason) in &batch.dead {
                transaction
                    .execute(
                        "INSERT INTO dead_letters (destination, seq, reason, failed_at)
                         VALUES ($1, $2, $3, $4)",
                        &[&destination, seq, &&*displayable(reason), &now],
                    )
                    .await
                    .map_err(pg_error)?;
            }
            transaction.commit().await.map_err(pg_error)?;
            Ok(true)
        })
    }

    fn dead_letters(
        &self,
        destination: Option<String>,
        id: Option<i64>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<DeadLetter>, StoreError>> {
        let (pool, _) = self.parts();
        self.store.run(async move {
            let rows = client(&pool)
                .await?
                .query(
                    "SELECT id, destination, seq, reason, failed_at FROM dead_letters
                     WHERE replayed_at IS NULL AND ($1::text IS NULL OR destination = $1)
                       AND ($2::bigint IS NULL OR id = $2)
                     ORDER BY id LIMIT $3",
                    &[&destination, &id, &(limit as i64)],
                )
                .await
                .map_err(pg_error)?;
            Ok(rows
                .iter()
                .map(|row| DeadLetter {
                    id: row.get(0),
                    destination: row.get(1),
                    seq: row.get(2),
                    reason: row.get(3),
                    failed_at: row.get(4),
                })
                .collect())
        })
    }

    fn replayed(&self, id: i64, failure: Option<String>) -> BoxFuture<'_, Result<(), StoreError>> {
        let (pool, _) = self.parts();
        self.store.run(async move {
            let mut client = client(&pool).await?;
            let Some(reason) = failure else {
                let transaction = client.transaction().await.map_err(pg_error)?;
                // Only an open one: two replays racing (on two collectors) count it once.
                let marked = transaction
                    .execute(
                        "UPDATE dead_letters SET replayed_at = $2 WHERE id = $1 AND replayed_at IS NULL",
                        &[&id, &now_ms()],
                    )
                    .await
                    .map_err(pg_error)?;
                if marked > 0 {
                    transaction
                        .execute(
                            "UPDATE delivery_cursors SET delivered = delivered + 1,
                                    dead_lettered = greatest(dead_lettered - 1, 0)
                             WHERE destination = (SELECT destination FROM dead_letters WHERE id = $1)",
                            &[&id],
                        )
                        .await
                        .map_err(pg_error)?;
                }
                return transaction.commit().await.map_err(pg_error);
            };
            client
                .execute(
                    "UPDATE dead_letters SET reason = $2, failed_at = $3 WHERE id = $1",
                    &[&id, &&*displayable(&reason), &now_ms()],
                )
                .await
                .map_err(pg_error)?;
            Ok(())
        })
    }

    fn oldest_open_dead_letter(
        &self,
        destination: &str,
    ) -> BoxFuture<'_, Result<Option<i64>, StoreError>> {
        let (pool, _) = self.parts();
        let destination = destination.to_owned();
        self.store.run(async move {
            let row = client(&pool)
                .await?
                .query_one(
                    "SELECT min(seq) FROM dead_letters WHERE destination = $1 AND replayed_at IS NULL",
                    &[&destination],
                )
                .await
                .map_err(pg_error)?;
            Ok(row.get(0))
        })
    }

    fn dead_reason(
        &self,
        destination: &str,
        seq: i64,
    ) -> BoxFuture<'_, Result<Option<String>, StoreError>> {
        let (pool, _) = self.parts();
        let destination = destination.to_owned();
        self.store.run(async move {
            let row = client(&pool)
                .await?
                .query_opt(
                    "SELECT reason FROM dead_letters
                     WHERE destination = $1 AND seq = $2 AND replayed_at IS NULL LIMIT 1",
                    &[&destination, &seq],
                )
                .await
                .map_err(pg_error)?;
            Ok(row.map(|r| r.get(0)))
        })
    }

    fn shared(&self) -> bool {
        true
    }

    fn acquire(&self, destination: &str) -> BoxFuture<'_, Result<Option<Lease>, StoreError>> {
        let (pool, me) = self.parts();
        let destination = destination.to_owned();
        self.store.run(async move {
            let client = client(&pool).await?;
            progress(&client, &destination, 0).await?;
            // `old` is the row as the statement's snapshot has it (no FOR UPDATE: that would
            // skip the version this very statement updates): a holder other than us still
            // named means it expired without releasing (a clean stop releases).
            let row = client
                .query_opt(
                    "WITH old AS (SELECT holder FROM delivery_cursors WHERE destination = $1)
                     UPDATE delivery_cursors
                     SET holder = $2, epoch = epoch + 1,
                         expires_at = now() + $3 * interval '1 millisecond'
                     WHERE destination = $1
                       AND (holder IS NULL OR holder = $2 OR expires_at < now())
                     RETURNING epoch,
                               coalesce((SELECT holder <> $2 FROM old), false)",
                    &[&destination, &&*me, &ttl_ms()],
                )
                .await
                .map_err(pg_error)?;
            Ok(row.map(|r| Lease {
                epoch: r.get(0),
                took_over: r.get(1),
            }))
        })
    }

    fn renew(&self, destination: &str, lease: Lease) -> BoxFuture<'_, Result<bool, StoreError>> {
        let (pool, me) = self.parts();
        let destination = destination.to_owned();
        self.store.run(async move {
            let renewed = client(&pool)
                .await?
                .execute(
                    "UPDATE delivery_cursors SET expires_at = now() + $4 * interval '1 millisecond'
                     WHERE destination = $1 AND epoch = $2 AND holder = $3",
                    &[&destination, &lease.epoch, &&*me, &ttl_ms()],
                )
                .await
                .map_err(pg_error)?;
            Ok(renewed == 1)
        })
    }

    fn release(&self, destination: &str, lease: Lease) -> BoxFuture<'_, Result<(), StoreError>> {
        let (pool, _) = self.parts();
        let destination = destination.to_owned();
        self.store.run(async move {
            client(&pool)
                .await?
                .execute(
                    "UPDATE delivery_cursors SET holder = NULL, expires_at = NULL
                     WHERE destination = $1 AND epoch = $2",
                    &[&destination, &lease.epoch],
                )
                .await
                .map_err(pg_error)?;
            Ok(())
        })
    }
}
