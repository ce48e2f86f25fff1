//! A lane's loop: take the destination's lease, then read after the cursor, deliver in
//! chunks with retries, and store the cursor, until the lease is lost or the collector stops.

use std::time::Instant;

use futures_util::StreamExt as _;
use tokio::sync::watch;

use super::{
    DeliveryEngine, LEASE_RENEW, LEASE_RETRY, LEASE_TTL, Lane, POLL, READ_BATCH, sleep_or_stop,
};
use crate::delivery::Attempt;
use crate::delivery::route::{enabled, integrations};
use crate::delivery::state::{Batch, DeliveryState, Lease};
use crate::storage::{StoreError, StoredEvent};

/// How one chunk ended: the events delivered and the dead letters `(seq, reason)`, or
/// `Err(())` when a shutdown interrupted it.
type ChunkResult = Result<(u64, Vec<(i64, String)>), ()>;

/// What a destination task does next.
enum Final {
    Delivered,
    /// Refused by the destination: a chunk of several is retried one by one.
    Dead(String),
    /// Out of retry window: the whole chunk becomes dead letters (retrying each event alone
    /// would give every one a fresh window).
    Expired(String),
    Stopped,
}

impl DeliveryEngine {
    /// One destination's loop: take its lease, then deliver while it is held; when it is
    /// lost, try to take it again (another collector of a group may hold it meanwhile).
    pub(super) async fn run(&self, lane: &Lane, mut shutdown: watch::Receiver<bool>) {
        let key = lane.name_key();
        while !*shutdown.borrow() {
            let lease = match self.state.acquire(&key).await {
                Ok(Some(lease)) => lease,
                Ok(None) => {
                    if sleep_or_stop(LEASE_RETRY, &mut shutdown).await {
                        return;
                    }
                    continue;
                }
                Err(e) => {
                    tracing::error!(destination = %lane.name, "delivery: cannot take the lease: {e}");
                    if sleep_or_stop(POLL, &mut shutdown).await {
                        return;
                    }
                    continue;
                }
            };
            tracing::debug!(destination = %lane.name, epoch = lease.epoch, "delivery: holding the lease");
            if let Err(e) = lane.destination.claim() {
                tracing::warn!(destination = %lane.name, "delivery: holding the lease but not the destination (will retry): {e}");
                if let Err(e) = self.state.release(&key, lease).await {
                    tracing::debug!(destination = %lane.name, "delivery: lease not released (it expires): {e}");
                }
                if sleep_or_stop(LEASE_RETRY, &mut shutdown).await {
                    return;
                }
                continue;
            }
            // Turns true when the lease is lost or the collector stops: the lane stops within
            // the chunk it is on.
            let (held_tx, held) = watch::channel(false);
            let keeper = tokio::spawn(keep_lease(
                self.state.clone(),
                key.clone(),
                lease,
                shutdown.clone(),
                held_tx,
            ));
            self.deliver_while_held(lane, lease, held).await;
            keeper.abort();
            lane.destination.release();
            if let Err(e) = self.state.release(&key, lease).await {
                tracing::debug!(destination = %lane.name, "delivery: lease not released (it expires): {e}");
            }
        }
    }

    /// Reads after the cursor, delivers, stores the cursor, until `stop` turns true or the
    /// lease turns out lost when the cursor is stored.
    async fn deliver_while_held(
        &self,
        lane: &Lane,
        mut lease: Lease,
        mut stop: watch::Receiver<bool>,
    ) {
        // Read again at every lease: another collector may have moved it.
        let mut cursor = loop {
            match self.state.progress(&lane.name_key(), 0).await {
                Ok(progress) => break progress.cursor,
                Err(e) => {
                    tracing::error!(destination = %lane.name, "delivery: cannot read the cursor: {e}");
                    if sleep_or_stop(POLL, &mut stop).await {
                        return;
                    }
                }
            }
        };
        while !*stop.borrow() {
            let events = match self
                .store
                .read_after(&lane.source, cursor, READ_BATCH)
                .await
            {
                Ok(events) => events,
                Err(e) => {
                    tracing::error!(destination = %lane.name, "delivery: cannot read events: {e}");
                    Vec::new()
                }
            };
            if events.is_empty() {
                tokio::select! {
                    () = lane.wake.notified() => {}
                    () = tokio::time::sleep(POLL) => {}
                    _ = stop.wait_for(|stop| *stop) => {}
                }
                continue;
            }
            match self.deliver_batch(lane, lease, &events, &mut stop).await {
                Ok(Some(done)) => {
                    cursor = done;
                    // Only the first batch after a takeover may repeat the old holder's.
                    lease.took_over = false;
                }
                Ok(None) => {
                    tracing::warn!(destination = %lane.name, epoch = lease.epoch, "delivery: the lease was lost; another collector delivers");
                    return;
                }
                Err(e) => {
                    // The batch is delivered again once the bookkeeping works: wait, rather
                    // than resend it in a tight loop.
                    tracing::error!(destination = %lane.name, "delivery: {e}");
                    if sleep_or_stop(POLL, &mut stop).await {
                        return;
                    }
                }
            }
        }
    }

    /// Delivers one read batch; returns the new cursor (stored durably). Events are handled
    /// in order, so when a shutdown interrupts a chunk, everything before its first event is
    /// done and the cursor stops just before it.
    ///
    /// `Ok(None)`: the lease was lost, and the cursor was not moved.
    async fn deliver_batch(
        &self,
        lane: &Lane,
        lease: Lease,
        events: &[StoredEvent],
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<Option<i64>, StoreError> {
        let routed: Vec<bool> = events
            .iter()
            .map(|e| enabled(integrations(e).as_ref(), &lane.name))
            .collect();
        let chunks: Vec<Vec<StoredEvent>> = events
            .iter()
            .zip(&routed)
            .filter(|(_, routed)| **routed)
            .map(|(event, _)| event.clone())
            .collect::<Vec<_>>()
            .chunks(lane.destination.chunk_size().max(1))
            .map(<[StoredEvent]>::to_vec)
            .collect();
        // One chunk at a time keeps the order; a destination configured for concurrency has
        // several in flight.
        let mut results: Vec<Option<ChunkResult>> = vec![None; chunks.len()];
        {
            let mut waiting = chunks.iter().enumerate();
            let mut in_flight = futures_util::stream::FuturesUnordered::new();
            loop {
                while in_flight.len() < lane.concurrency {
                    let Some((i, chunk)) = waiting.next() else {
                        break;
                    };
                    in_flight.push(self.deliver_numbered(lane, i, chunk, shutdown.clone()));
                }
                let Some((i, result)) = in_flight.next().await else {
                    break;
                };
                let stopped = result.is_err();
                results[i] = Some(result);
                if stopped {
                    break;
                }
            }
        }
        // Done: everything before the first chunk that did not finish (a later chunk that did
        // is delivered again next time: at least once).
        let finished = results
            .iter()
            .take_while(|r| matches!(r, Some(Ok(_))))
            .count();
        let done = match chunks.get(finished) {
            Some(unfinished) => unfinished[0].seq - 1,
            None => events.last().map_or(0, |e| e.seq),
        };
        let (mut delivered, mut dead) = (0, Vec::new());
        for (ok, failed) in results.into_iter().take(finished).flatten().flatten() {
            delivered += ok;
            dead.extend(failed);
        }
        let skipped = events
            .iter()
            .zip(&routed)
            .filter(|(e, r)| !**r && e.seq <= done)
            .count();
        let batch = Batch {
            cursor: done,
            delivered,
            skipped: skipped as u64,
            dead,
            redelivered: if lease.took_over { delivered } else { 0 },
        };
        let moved = self.state.advance(&lane.name_key(), lease, batch).await?;
        Ok(moved.then_some(done))
    }

    /// [`DeliveryEngine::deliver_chunk`], tagged with the chunk's number.
    async fn deliver_numbered(
        &self,
        lane: &Lane,
        number: usize,
        chunk: &[StoredEvent],
        mut shutdown: watch::Receiver<bool>,
    ) -> (usize, ChunkResult) {
        (number, self.deliver_chunk(lane, chunk, &mut shutdown).await)
    }

    /// Delivers a chunk with retries; a refused chunk of several is retried one by one so only
    /// the refused events become dead letters. `Err` when shutting down.
    async fn deliver_chunk(
        &self,
        lane: &Lane,
        chunk: &[StoredEvent],
        shutdown: &mut watch::Receiver<bool>,
    ) -> ChunkResult {
        match self.deliver_with_retries(lane, chunk, shutdown).await {
            Final::Delivered => Ok((chunk.len() as u64, Vec::new())),
            Final::Stopped => Err(()),
            Final::Expired(reason) => {
                tracing::error!(destination = %lane.name, events = chunk.len(), "delivery: dead letters: {reason}");
                Ok((0, chunk.iter().map(|e| (e.seq, reason.clone())).collect()))
            }
            Final::Dead(reason) if chunk.len() == 1 => {
                tracing::error!(destination = %lane.name, seq = chunk[0].seq, "delivery: dead letter: {reason}");
                Ok((0, vec![(chunk[0].seq, reason)]))
            }
            Final::Dead(_) => {
                let mut delivered = 0;
                let mut dead = Vec::new();
                for event in chunk {
                    let (ok, failed) =
                        Box::pin(self.deliver_chunk(lane, std::slice::from_ref(event), shutdown))
                            .await?;
                    delivered += ok;
                    dead.extend(failed);
                }
                Ok((delivered, dead))
            }
        }
    }

    async fn deliver_with_retries(
        &self,
        lane: &Lane,
        chunk: &[StoredEvent],
        shutdown: &mut watch::Receiver<bool>,
    ) -> Final {
        let started = Instant::now();
        let (mut attempts, mut retries) = (0_u64, 0_u32);
        loop {
            // The lease lost (or the collector stopping) stops the lane before its next
            // attempt, not only between batches: another collector may be delivering.
            if *shutdown.borrow() {
                return Final::Stopped;
            }
            let (after, reason) = match lane.destination.deliver(chunk).await {
                Attempt::Delivered => return Final::Delivered,
                Attempt::Reject { reason } => return Final::Dead(reason),
                Attempt::Retry { after, reason } => (after, reason),
            };
            attempts += 1;
            // The client's rule: a server's wait shorter than the schedule's (a
            // `Retry-After: 0`) is raised, so it cannot make a tight loop.
            let next = lane.policy.retry_wait(retries, after, fastrand::f64());
            if next.counts {
                retries = retries.saturating_add(1);
            }
            let wait = next.wait;
            if started.elapsed() + wait > lane.policy.max_retry_duration {
                return Final::Expired(format!(
                    "still failing after {:?} of retries: {reason}",
                    lane.policy.max_retry_duration
                ));
            }
            tracing::warn!(destination = %lane.name, attempts, wait_ms = wait.as_millis() as u64, "delivery: will retry: {reason}");
            if sleep_or_stop(wait, shutdown).await {
                return Final::Stopped;
            }
        }
    }
}

/// Renews `lease` every [`LEASE_RENEW`] until it is lost or the collector stops, then turns
/// `held` true. The lease is counted as held only until [`LEASE_TTL`] after the last renewal
/// was asked for, less [`LEASE_RENEW`] as a margin: a renewal that has not answered by then
/// (a database cut off, a connection black-holed) stops the lane on this collector's own
/// clock, before another collector can take the lease over. The epoch refuses the cursor of
/// a holder that stops late anyway.
async fn keep_lease(
    state: DeliveryState,
    key: String,
    lease: Lease,
    mut shutdown: watch::Receiver<bool>,
    held: watch::Sender<bool>,
) {
    // Taken just after the lease was: the database's expiry is at most this plus the TTL.
    let mut held_until = Instant::now() + LEASE_TTL;
    loop {
        if sleep_or_stop(LEASE_RENEW, &mut shutdown).await {
            break;
        }
        let asked = Instant::now();
        let give_up = held_until.checked_sub(LEASE_RENEW).unwrap_or(asked);
        match tokio::time::timeout_at(give_up.into(), state.renew(&key, lease)).await {
            Ok(Ok(true)) => held_until = asked + LEASE_TTL,
            Ok(Ok(false)) => {
                tracing::warn!(destination = %key, epoch = lease.epoch, "delivery: lease taken over");
                break;
            }
            Ok(Err(e)) if Instant::now() + LEASE_RENEW < give_up => {
                tracing::warn!(destination = %key, "delivery: cannot renew the lease (will retry): {e}");
            }
            Ok(Err(e)) => {
                tracing::warn!(destination = %key, "delivery: lease expiring unrenewed: {e}");
                break;
            }
            Err(_) => {
                tracing::warn!(destination = %key, "delivery: no answer to the lease's renewal before it could expire; stopping");
                break;
            }
        }
    }
    let _ = held.send(true);
}
