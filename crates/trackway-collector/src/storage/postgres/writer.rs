//! This collector's writer: group commit, the dedup window, and seqs in commit order.
//!
//! ```text
//!  requests ─▶ group (first + all queued, ≤ MAX_GROUP_EVENTS)
//!    1. in memory: copies within the group        (the first of each key goes on)
//!    2. SELECT accepted dedup rows for the rejected candidates (a rejected copy of an
//!       accepted event within the window is a duplicate)
//!    3. upsert accepted keys  ┐ stored = the rows the upsert inserted or moved;
//!    4. upsert rejected keys  ┘ keys sorted, so two collectors lock rows in one order
//!    5. counts(this collector) += stored; traffic(this collector) += stored per minute
//!    6. pg_advisory_xact_lock(SEQUENCE_LOCK); INSERT events … RETURNING seq
//!    7. COMMIT (synchronous) ─▶ replies (live subscribers hear of it from the poll)
//! ```
//!
//! The upsert `ON CONFLICT … DO UPDATE … WHERE dedup.received_at <= excluded.received_at -
//! window` stores an event when its key has no row or only one older than the window, and
//! skips it otherwise; a second collector upserting the same key waits for the first's commit
//! and then sees its row, so each copy is decided against every committed one. The steps
//! before 6 hold row locks only on the group's own keys, and take them in key order, so
//! groups of different collectors run them in parallel and cannot deadlock on each other; a
//! deadlock or serialization failure reported anyway is retried.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use deadpool_postgres::{Pool, Transaction};
use tokio::sync::{mpsc, oneshot};

use super::{
    COMMIT_TIMEOUT, SEQUENCE_LOCK, counts, displayable, pg_error, pool_error, storable_body,
    traffic,
};
use crate::storage::sqlite::MAX_GROUP_EVENTS;
use crate::storage::{Appended, NewEvent, StoreError, StoredEvent};

/// Attempts of a group whose transaction hit a deadlock or a serialization failure (both
/// resolve on a retry; another error fails the group at once).
const COMMIT_ATTEMPTS: usize = 3;

/// One ingest request's events and where its answer goes.
pub(super) struct WriteRequest {
    pub(super) events: Vec<NewEvent>,
    pub(super) reply: oneshot::Sender<Result<Appended, StoreError>>,
}

/// Commits groups of requests until every handle to the store is gone.
pub(super) struct Writer {
    pub(super) pool: Pool,
    pub(super) requests: mpsc::Receiver<WriteRequest>,
    pub(super) window_ms: i64,
    pub(super) collector: Arc<str>,
}

impl Writer {
    pub(super) async fn run(mut self) {
        while let Some(first) = self.requests.recv().await {
            let mut events = first.events.len();
            let mut group = vec![first];
            while events < MAX_GROUP_EVENTS {
                match self.requests.try_recv() {
                    Ok(next) => {
                        events += next.events.len();
                        group.push(next);
                    }
                    Err(_) => break,
                }
            }
            let outcome = match tokio::time::timeout(COMMIT_TIMEOUT, self.commit(&group)).await {
                Ok(outcome) => outcome,
                Err(_) => Err(StoreError::Unavailable {
                    detail: format!("postgres: the commit took longer than {COMMIT_TIMEOUT:?}"),
                }),
            };
            match outcome {
                // Live subscribers hear of the events from the store's poll, as they hear of
                // other collectors' events.
                Ok((results, _stored)) => {
                    for (request, result) in group.into_iter().zip(results) {
                        let _ = request.reply.send(Ok(result));
                    }
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

    /// Commits the group, retrying a deadlock or a serialization failure.
    async fn commit(
        &self,
        group: &[WriteRequest],
    ) -> Result<(Vec<Appended>, Vec<StoredEvent>), StoreError> {
        let mut attempt = 1;
        loop {
            let mut client = self.pool.get().await.map_err(pool_error)?;
            let transaction = client.transaction().await.map_err(pg_error)?;
            match self.commit_in(transaction, group).await {
                Ok(done) => return Ok(done),
                Err(e) if attempt < COMMIT_ATTEMPTS && retryable(&e) => {
                    tracing::debug!("store: group commit retried: {e}");
                    attempt += 1;
                }
                Err(e) => return Err(pg_error(e)),
            }
        }
    }

    async fn commit_in(
        &self,
        transaction: Transaction<'_>,
        group: &[WriteRequest],
    ) -> Result<(Vec<Appended>, Vec<StoredEvent>), tokio_postgres::Error> {
        let events: Vec<&NewEvent> = group.iter().flat_map(|r| &r.events).collect();
        let mut plan = Plan::new(&events);
        if !plan.rejected.is_empty() {
            let excluded = self
                .accepted_within_window(&transaction, &events, &plan)
                .await?;
            plan.rejected.retain(|i| !excluded.contains(i));
        }
        let mut stored = vec![false; events.len()];
        for (candidates, rejected) in [(&plan.accepted, false), (&plan.rejected, true)] {
            for i in self
                .upsert_keys(&transaction, &events, candidates, rejected)
                .await?
            {
                stored[i] = true;
            }
        }
        let kept: Vec<&NewEvent> = events
            .iter()
            .zip(&stored)
            .filter_map(|(e, s)| s.then_some(*e))
            .collect();
        let delta = counts::of(
            kept.iter()
                .map(|e| (&*e.source, e.kind.as_str(), e.rejected.is_some())),
        );
        counts::add(&transaction, &self.collector, &delta).await?;
        let traffic = traffic::of(kept.iter().map(|e| {
            (
                &*e.source,
                e.kind.as_str(),
                e.rejected.is_some(),
                e.received_at,
            )
        }));
        traffic::add(&transaction, &self.collector, &traffic).await?;
        // From here to the commit, no other collector allocates seqs (DESIGN.md, guarantee 4).
        transaction
            .execute("SELECT pg_advisory_xact_lock($1)", &[&SEQUENCE_LOCK])
            .await?;
        let seqs = insert_events(&transaction, &kept).await?;
        transaction.commit().await?;
        let mut results = Vec::with_capacity(group.len());
        let mut at = 0;
        for request in group {
            let n = request.events.len();
            let kept = stored[at..at + n].iter().filter(|s| **s).count();
            results.push(Appended {
                stored: kept,
                duplicates: n - kept,
            });
            at += n;
        }
        let stored_events = kept
            .iter()
            .zip(seqs)
            .map(|(e, seq)| StoredEvent {
                seq,
                source: Arc::clone(&e.source),
                kind: e.kind.clone(),
                received_at: e.received_at,
                rejected: e.rejected.clone(),
                body: e.body.clone(),
            })
            .collect();
        Ok((results, stored_events))
    }

    /// Of the rejected candidates, those whose key has an accepted copy within the window.
    async fn accepted_within_window(
        &self,
        transaction: &Transaction<'_>,
        events: &[&NewEvent],
        plan: &Plan,
    ) -> Result<HashSet<usize>, tokio_postgres::Error> {
        let mut indexes = Vec::with_capacity(plan.rejected.len());
        let mut sources = Vec::with_capacity(plan.rejected.len());
        let mut ids = Vec::with_capacity(plan.rejected.len());
        let mut horizons = Vec::with_capacity(plan.rejected.len());
        for &i in &plan.rejected {
            indexes.push(i as i64);
            sources.push(&*events[i].source);
            ids.push(events[i].message_id.as_bytes());
            horizons.push(events[i].received_at - self.window_ms);
        }
        let rows = transaction
            .query(
                "SELECT k.i FROM unnest($1::bigint[], $2::text[], $3::bytea[], $4::bigint[])
                     AS k(i, source, message_id, horizon)
                 JOIN dedup d ON d.source = k.source AND d.message_id = k.message_id
                             AND NOT d.rejected AND d.received_at > k.horizon",
                &[&indexes, &sources, &ids, &horizons],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get::<_, i64>(0) as usize).collect())
    }

    /// Upserts the dedup rows of `candidates` (indexes into `events`, unique keys); returns
    /// the indexes of those stored: no row for the key, or one older than the window.
    async fn upsert_keys(
        &self,
        transaction: &Transaction<'_>,
        events: &[&NewEvent],
        candidates: &[usize],
        rejected: bool,
    ) -> Result<Vec<usize>, tokio_postgres::Error> {
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let mut sources = Vec::with_capacity(candidates.len());
        let mut ids = Vec::with_capacity(candidates.len());
        let mut arrivals = Vec::with_capacity(candidates.len());
        for &i in candidates {
            sources.push(&*events[i].source);
            ids.push(events[i].message_id.as_bytes());
            arrivals.push(events[i].received_at);
        }
        let rows = transaction
            .query(
                "INSERT INTO dedup (source, message_id, rejected, received_at)
                 SELECT source, message_id, $4, received_at
                 FROM unnest($1::text[], $2::bytea[], $3::bigint[]) AS k(source, message_id, received_at)
                 ORDER BY source, message_id
                 ON CONFLICT (source, message_id, rejected) DO UPDATE
                     SET received_at = excluded.received_at
                     WHERE dedup.received_at <= excluded.received_at - $5
                 RETURNING source, message_id",
                &[&sources, &ids, &arrivals, &rejected, &self.window_ms],
            )
            .await?;
        let by_key: HashMap<(&str, &[u8]), usize> = candidates
            .iter()
            .map(|&i| ((&*events[i].source, events[i].message_id.as_bytes()), i))
            .collect();
        Ok(rows
            .iter()
            .filter_map(|row| {
                let key: (&str, &[u8]) = (row.get(0), row.get(1));
                by_key.get(&key).copied()
            })
            .collect())
    }
}

/// Inserts `events` in order; returns their seqs, in the same order.
async fn insert_events(
    transaction: &Transaction<'_>,
    events: &[&NewEvent],
) -> Result<Vec<i64>, tokio_postgres::Error> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let n = events.len();
    let (mut sources, mut ids, mut kinds, mut users, mut anons, mut labels) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut arrivals, mut reasons, mut bodies) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for e in events {
        sources.push(&*e.source);
        ids.push(e.message_id.as_bytes());
        kinds.push(displayable(&e.kind));
        users.push(e.user_id.as_deref().map(displayable));
        anons.push(e.anonymous_id.as_deref().map(displayable));
        labels.push(e.label.as_deref().map(displayable));
        arrivals.push(e.received_at);
        reasons.push(e.rejected.as_deref().map(displayable));
        bodies.push(storable_body(&e.body));
    }
    let rows = transaction
        .query(
            "INSERT INTO events (source, message_id, type, user_id, anonymous_id, label,
                                 received_at, rejected, body)
             SELECT source, message_id, type, user_id, anonymous_id, label, received_at,
                    rejected, body
             FROM unnest($1::text[], $2::bytea[], $3::text[], $4::text[], $5::text[],
                         $6::text[], $7::bigint[], $8::text[], $9::text[])
                  WITH ORDINALITY AS e(source, message_id, type, user_id, anonymous_id, label,
                                       received_at, rejected, body, ord)
             ORDER BY ord
             RETURNING seq",
            &[
                &sources,
                &ids,
                &as_str(&kinds),
                &as_opt(&users),
                &as_opt(&anons),
                &as_opt(&labels),
                &arrivals,
                &as_opt(&reasons),
                &as_str(&bodies),
            ],
        )
        .await?;
    // Rows are numbered in the order they are inserted (by `ord`); sorting the seqs pairs them
    // with the events even if RETURNING listed them in another order.
    let mut seqs: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    seqs.sort_unstable();
    Ok(seqs)
}

fn as_str<'a>(v: &'a [Cow<'_, str>]) -> Vec<&'a str> {
    v.iter().map(|c| &**c).collect()
}

fn as_opt<'a>(v: &'a [Option<Cow<'_, str>>]) -> Vec<Option<&'a str>> {
    v.iter().map(|c| c.as_deref()).collect()
}

/// Whether a failed transaction succeeds on a retry: a deadlock or a serialization failure.
fn retryable(e: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    e.code().is_some_and(|c| {
        *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE
    })
}

/// Which of a group's events go to the database, after the copies within the group.
struct Plan {
    /// Accepted events whose key no earlier event of the group has, by index.
    accepted: Vec<usize>,
    /// Rejected events whose key no earlier event of the group has (accepted or rejected).
    rejected: Vec<usize>,
}

impl Plan {
    /// As the SQLite store decides copies in one transaction: an accepted event is a duplicate
    /// of an earlier accepted copy; a rejected one of any earlier copy. (An earlier accepted
    /// copy that the database then finds a duplicate makes this one a duplicate too, of the
    /// same stored event.)
    fn new(events: &[&NewEvent]) -> Plan {
        let mut accepted_keys = HashSet::new();
        let mut rejected_keys = HashSet::new();
        let mut plan = Plan {
            accepted: Vec::new(),
            rejected: Vec::new(),
        };
        for (i, event) in events.iter().enumerate() {
            let key = (&*event.source, event.message_id.as_str());
            if event.rejected.is_none() {
                if accepted_keys.insert(key) {
                    plan.accepted.push(i);
                }
            } else if !accepted_keys.contains(&key) && rejected_keys.insert(key) {
                plan.rejected.push(i);
            }
        }
        plan
    }
}
