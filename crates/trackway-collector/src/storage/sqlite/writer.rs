//! The writer thread: the only connection that writes. Group commit (one transaction for the
//! first waiting request and every one queued behind it), the dedup check, retention's
//! deletes, readiness probes, and the log's restart between two commits.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rusqlite::{Connection, TransactionBehavior, params};
use tokio::sync::{broadcast, oneshot};

use super::MAX_GROUP_EVENTS;
use super::checkpoint::{RESTART_BACKOFF, RESTART_WAIT};
use super::connection::{BUSY_TIMEOUT, sql_error};
use super::counts::{Counts, change_counts, count_events, count_key};
use super::dedup::Dedup;
use super::traffic::{Traffic, add_traffic, prune_traffic, tally};
use crate::storage::{Appended, NewEvent, StoreError, StoredEvent};

pub(super) struct WriteRequest {
    pub(super) events: Vec<NewEvent>,
    pub(super) reply: oneshot::Sender<Result<Appended, StoreError>>,
}

/// One chunk of retention deletes, done by the writer so nothing else ever writes.
pub(super) struct PruneRequest {
    pub(super) source: String,
    pub(super) received_before: i64,
    pub(super) up_to: i64,
    pub(super) reply: oneshot::Sender<Result<usize, StoreError>>,
}

/// Work for the writer thread.
pub(super) enum Job {
    Append(WriteRequest),
    Prune(PruneRequest),
    /// A readiness probe: one small committed write.
    Probe(oneshot::Sender<Result<(), StoreError>>),
}

/// Rows deleted per pruning transaction.
pub(super) const PRUNE_CHUNK: i64 = 10_000;

pub(super) struct Writer {
    pub(super) conn: Connection,
    pub(super) requests: tokio::sync::mpsc::Receiver<Job>,
    pub(super) counts: Arc<Mutex<Counts>>,
    pub(super) live: broadcast::Sender<Arc<StoredEvent>>,
    /// The window's events, for the duplicate check (the writer's alone: `dedup.rs`).
    pub(super) dedup: Dedup,
    /// Set by the checkpointer when the log has grown past [`WAL_RESTART_PAGES`], cleared by
    /// the writer once it has tried.
    pub(super) restart_wanted: Arc<AtomicBool>,
    /// Until when restart requests are ignored, after readers kept the log from restarting
    /// ([`RESTART_BACKOFF`]).
    pub(super) restart_not_before: Option<Instant>,
    /// Restarts tried, counted for the tests.
    pub(super) restarts_tried: Arc<AtomicU64>,
}

impl Writer {
    /// Commits groups of requests until every handle to the store is gone.
    pub(super) fn run(mut self) {
        let mut deferred: Option<Job> = None;
        loop {
            if self.restart_wanted.load(Ordering::Acquire) {
                if self.restart_not_before.is_none_or(|t| Instant::now() >= t) {
                    self.restart_log();
                }
                // Cleared only now: the checkpointer runs no pass while a restart is wanted.
                self.restart_wanted.store(false, Ordering::Release);
            }
            let first = match deferred.take() {
                Some(job) => job,
                None => match self.requests.blocking_recv() {
                    Some(job) => job,
                    None => return,
                },
            };
            let first = match first {
                Job::Append(first) => first,
                Job::Prune(prune) => {
                    let result = self.prune(&prune);
                    let _ = prune.reply.send(result);
                    continue;
                }
                Job::Probe(reply) => {
                    let _ = reply.send(self.probe());
                    continue;
                }
            };
            let mut events = first.events.len();
            let mut group = vec![first];
            while events < MAX_GROUP_EVENTS {
                match self.requests.try_recv() {
                    Ok(Job::Append(next)) => {
                        events += next.events.len();
                        group.push(next);
                    }
                    Ok(other) => {
                        deferred = Some(other);
                        break;
                    }
                    Err(_) => break,
                }
            }
            match self.commit(&mut group) {
                Ok((results, stored, added)) => {
                    // Counted before anyone hears 200, so `/api/stats` read after an
                    // acknowledgement includes the acknowledged events.
                    self.count(&added, 1);
                    for (request, result) in group.into_iter().zip(results) {
                        let _ = request.reply.send(Ok(result));
                    }
                    self.broadcast(stored);
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

    /// Copies what the checkpointer has not yet (the frames committed since its last pass) and
    /// starts the log again from its beginning, waiting for readers of older frames to finish.
    /// Only the writer can do this under load: no commit can come in between.
    ///
    /// Readers are waited for [`RESTART_WAIT`] at most, since ingest waits too; a reader still
    /// busy then (a long admin query) leaves the restart for [`RESTART_BACKOFF`], to the
    /// checkpointer's first request after it.
    fn restart_log(&mut self) {
        self.restarts_tried.fetch_add(1, Ordering::Relaxed);
        let restarted = self.conn.busy_timeout(RESTART_WAIT).and_then(|()| {
            self.conn
                .query_row("PRAGMA wal_checkpoint(RESTART)", [], |row| {
                    row.get::<_, i64>(0)
                })
        });
        if let Err(e) = self.conn.busy_timeout(BUSY_TIMEOUT) {
            tracing::warn!("store: cannot set the busy timeout back: {e}");
        }
        self.restart_not_before = None;
        match restarted {
            Ok(0) => {}
            Ok(_) => {
                tracing::debug!("store: the log could not be restarted yet (readers)");
                self.restart_not_before = Some(Instant::now() + RESTART_BACKOFF);
            }
            Err(e) => tracing::warn!("store: restarting the log failed (will retry): {e}"),
        }
    }

    /// A readiness probe: rewrites the `probe` row and commits, fsync included, as a request's
    /// commit would.
    fn probe(&mut self) -> Result<(), StoreError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let transaction = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql_error)?;
        transaction
            .execute(
                "INSERT INTO probe (id, at) VALUES (1, ?1) ON CONFLICT (id) DO UPDATE SET at = excluded.at",
                params![now],
            )
            .map_err(sql_error)?;
        transaction.commit().map_err(sql_error)
    }

    /// Deletes one chunk of expired events, and takes them off the counts.
    fn prune(&mut self, request: &PruneRequest) -> Result<usize, StoreError> {
        let transaction = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql_error)?;
        let chunk = "SELECT seq FROM events WHERE source = ?1 AND received_at < ?2 AND seq <= ?3
                     ORDER BY seq LIMIT ?4";
        let removed = count_events(
            &transaction,
            &format!("WHERE seq IN ({chunk})"),
            params![
                request.source,
                request.received_before,
                request.up_to,
                PRUNE_CHUNK
            ],
        )?;
        let deleted = transaction
            .execute(
                &format!("DELETE FROM events WHERE seq IN ({chunk})"),
                params![
                    request.source,
                    request.received_before,
                    request.up_to,
                    PRUNE_CHUNK
                ],
            )
            .map_err(sql_error)?;
        change_counts(&transaction, &removed, -1)?;
        // The traffic outlives the events (a day, whatever their retention): its own horizon.
        prune_traffic(&transaction, &request.source)?;
        transaction.commit().map_err(sql_error)?;
        self.count(&removed, -1);
        Ok(deleted)
    }

    /// One transaction for the whole group; what the dedup memory learnt from a group that
    /// failed is taken back.
    fn commit(
        &mut self,
        group: &mut [WriteRequest],
    ) -> Result<(Vec<Appended>, Vec<StoredEvent>, Counts), StoreError> {
        let mark = self.dedup.mark();
        let committed = self.try_commit(group);
        if committed.is_ok() {
            self.dedup.expire();
        } else {
            self.dedup.truncate(mark);
        }
        committed
    }

    fn try_commit(
        &mut self,
        group: &mut [WriteRequest],
    ) -> Result<(Vec<Appended>, Vec<StoredEvent>, Counts), StoreError> {
        // IMMEDIATE: take the write lock up front, so the read of the dedup check can never
        // need an upgrade that SQLite would refuse with SQLITE_BUSY.
        let transaction = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql_error)?;
        let mut results = Vec::with_capacity(group.len());
        let mut stored = Vec::new();
        {
            let mut insert = transaction
                .prepare_cached(
                    "INSERT INTO events (source, message_id, type, user_id, anonymous_id, label,
                                         received_at, rejected, body)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )
                .map_err(sql_error)?;
            for request in group.iter_mut() {
                let mut appended = Appended::default();
                for event in &mut request.events {
                    let key = self.dedup.key_of(event);
                    if self.dedup.is_duplicate(&transaction, key, event)? {
                        appended.duplicates += 1;
                        continue;
                    }
                    insert
                        .execute(params![
                            &*event.source,
                            event.message_id,
                            event.kind,
                            event.user_id,
                            event.anonymous_id,
                            event.label,
                            event.received_at,
                            event.rejected,
                            event.body,
                        ])
                        .map_err(sql_error)?;
                    appended.stored += 1;
                    let seq = transaction.last_insert_rowid();
                    self.dedup.add(key, seq, event.received_at);
                    stored.push(StoredEvent {
                        seq,
                        source: Arc::clone(&event.source),
                        kind: event.kind.clone(),
                        received_at: event.received_at,
                        rejected: event.rejected.clone(),
                        // The request is done with its events once they are inserted: the
                        // live copy takes the body rather than copying it.
                        body: std::mem::take(&mut event.body),
                    });
                }
                results.push(appended);
            }
        }
        let mut added = Counts::new();
        let mut traffic = Traffic::new();
        for event in &stored {
            tally(
                &mut traffic,
                &event.source,
                &event.kind,
                event.rejected.is_some(),
                event.received_at,
            );
            let key = count_key(
                event.source.to_string(),
                &event.kind,
                event.rejected.is_some(),
            );
            *added.entry(key).or_default() += 1;
        }
        change_counts(&transaction, &added, 1)?;
        add_traffic(&transaction, &traffic)?;
        transaction.commit().map_err(sql_error)?;
        Ok((results, stored, added))
    }

    /// Adds `sign` (1 or -1) times `delta` to the in-memory counts, as [`change_counts`] does
    /// to the table, dropping keys that reach zero.
    fn count(&self, delta: &Counts, sign: i64) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        for (key, n) in delta {
            let count = counts.entry(key.clone()).or_default();
            *count = if sign < 0 {
                count.saturating_sub(*n)
            } else {
                *count + n
            };
        }
        if sign < 0 {
            counts.retain(|_, n| *n > 0);
        }
    }

    /// Hands committed events to live subscribers (the debugger, `trackway tail`).
    fn broadcast(&self, stored: Vec<StoredEvent>) {
        for event in stored {
            // No subscriber is fine.
            let _ = self.live.send(Arc::new(event));
        }
    }
}
