//! The delivery engine: one task per destination (see the module doc of [`super`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio::sync::{Notify, watch};
use trackway::RetryPolicy;

use super::kind::{
    self, DEFAULT_BACKOFF_BASE, DEFAULT_BACKOFF_CAP, DEFAULT_RETRY_WINDOW, DestinationConfig,
};
use super::route::enabled;
use super::state::{Batch, DeadLetter, DeliveryState, Lease, Progress};
use super::{Attempt, Destination};
use crate::config::{Config, ConfigError};
use crate::storage::{Store, StoreError, StoredEvent};

/// Events read from the store per batch; the cursor is stored after each.
const READ_BATCH: usize = 1000;
/// A destination task looks for new events at least this often even without a wake-up.
const POLL: Duration = Duration::from_secs(1);
/// How long a destination's lease lasts without renewal: a collector that dies (`kill -9`, a
/// network cut) loses its leases this long after its last renewal, and another takes each
/// over within `LEASE_RETRY` more: 12 s at most, within the 15 s promised.
pub const LEASE_TTL: Duration = Duration::from_secs(10);
/// How often a holder renews its lease: a third of [`LEASE_TTL`], so two renewals can fail (a
/// slow database) before it is lost.
const LEASE_RENEW: Duration = Duration::from_secs(3);
/// How often a collector without a destination's lease tries to take it.
const LEASE_RETRY: Duration = Duration::from_secs(2);
/// Most dead letters one replay handles.
const REPLAY_LIMIT: usize = 10_000;

/// A configured destination and its wake-up signal.
struct Lane {
    name: String,
    source: String,
    kind: &'static str,
    destination: Arc<dyn Destination>,
    policy: RetryPolicy,
    /// Chunks in flight at once; 1 keeps the order.
    concurrency: usize,
    wake: Notify,
}

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

/// A destination's state, for the admin API.
#[derive(Debug, Clone, Serialize)]
pub struct DestinationStatus {
    /// Its name.
    pub name: String,
    /// Its source.
    pub source: String,
    /// Its kind.
    pub kind: &'static str,
    /// Events stored for its source and not yet done.
    pub lag: u64,
    /// Progress counters.
    #[serde(flatten)]
    pub progress: Progress,
    /// Dead letters not yet replayed.
    pub open_dead_letters: usize,
}

/// What a replay did.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReplayReport {
    /// Delivered now.
    pub replayed: u64,
    /// Failed again (their reason is updated).
    pub failed: u64,
    /// Their event is gone from the store (pruned).
    pub missing: u64,
}

/// Why a replay was not done.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// No destination has that name: nothing was replayed. `known` lists the names there are.
    #[error("{}", unknown_destination(name, known))]
    UnknownDestination {
        /// The name asked for.
        name: String,
        /// The configured destinations' names.
        known: Vec<String>,
    },
    /// The store or the bookkeeping failed; what was replayed before stays replayed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn unknown_destination(name: &str, known: &[String]) -> String {
    if known.is_empty() {
        format!("no destination named {name:?}: no destination is configured")
    } else {
        format!(
            "no destination named {name:?}; the destinations are: {}",
            known.join(", ")
        )
    }
}

/// Runs every destination of every source.
#[derive(Clone)]
pub struct DeliveryEngine {
    lanes: Arc<Vec<Arc<Lane>>>,
    store: Arc<dyn Store>,
    state: DeliveryState,
    /// Retention and how often it runs, when configured.
    retention: Option<(Duration, Duration)>,
    sources: Arc<Vec<String>>,
}

impl DeliveryEngine {
    /// Builds each configured destination; nothing runs until [`DeliveryEngine::spawn`].
    /// Crate-private: only the server opens the delivery state it needs.
    pub(crate) fn new(
        config: &Config,
        store: Arc<dyn Store>,
        state: DeliveryState,
    ) -> Result<DeliveryEngine, ConfigError> {
        let mut lanes = Vec::new();
        for source in &config.sources {
            for destination in &source.destinations {
                lanes.push(Arc::new(lane(destination, &source.name, state.shared())?));
            }
        }
        let retention = config.retention.map(|r| (r, config.prune_interval));
        let sources = config.sources.iter().map(|s| s.name.clone()).collect();
        Ok(DeliveryEngine {
            lanes: Arc::new(lanes),
            store,
            state,
            retention,
            sources: Arc::new(sources),
        })
    }

    /// Starts one task per destination, and the pruner when retention is configured, on the
    /// current tokio runtime; they stop when `shutdown` turns true.
    pub fn spawn(&self, shutdown: &watch::Receiver<bool>) {
        for lane in self.lanes.iter() {
            let engine = self.clone();
            let lane = Arc::clone(lane);
            let shutdown = shutdown.clone();
            tokio::spawn(async move { engine.run(&lane, shutdown).await });
        }
        if !self.lanes.is_empty() {
            let engine = self.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move { engine.wake_on_arrival(shutdown).await });
        }
        if let Some((retention, interval)) = self.retention {
            let engine = self.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move { engine.prune_loop(retention, interval, shutdown).await });
        }
    }

    /// Wakes the destinations of each newly stored event's source.
    async fn wake_on_arrival(&self, mut shutdown: watch::Receiver<bool>) {
        let mut arrivals = self.store.subscribe();
        loop {
            tokio::select! {
                arrival = arrivals.recv() => match arrival {
                    Ok(event) => self.lanes.iter().filter(|l| *l.source == *event.source).for_each(|l| l.wake.notify_one()),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => self.lanes.iter().for_each(|l| l.wake.notify_one()),
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
        }
    }

    /// One destination's loop: take its lease, then deliver while it is held; when it is
    /// lost, try to take it again (another collector of a group may hold it meanwhile).
    async fn run(&self, lane: &Lane, mut shutdown: watch::Receiver<bool>) {
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

    /// Every destination's progress and lag.
    pub async fn status(&self) -> Result<Vec<DestinationStatus>, StoreError> {
        let mut all = Vec::with_capacity(self.lanes.len());
        for lane in self.lanes.iter() {
            let progress = self.state.progress(&lane.name_key(), 0).await?;
            let lag = self.store.lag(&lane.source, progress.cursor).await?;
            let open = self
                .state
                .dead_letters(Some(lane.name_key()), None, REPLAY_LIMIT)
                .await?
                .len();
            all.push(DestinationStatus {
                name: lane.name.clone(),
                source: lane.source.clone(),
                kind: lane.kind,
                lag,
                progress,
                open_dead_letters: open,
            });
        }
        Ok(all)
    }

    /// Open dead letters with their events, optionally of one destination.
    pub async fn dead_letters(
        &self,
        destination: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Value>, StoreError> {
        let key = destination
            .and_then(|name| self.lane_named(name))
            .map(|l| l.name_key());
        if destination.is_some() && key.is_none() {
            return Ok(Vec::new());
        }
        let letters = self.state.dead_letters(key, None, limit).await?;
        let events = self
            .store
            .get(letters.iter().map(|d| d.seq).collect())
            .await?;
        Ok(letters
            .into_iter()
            .map(|letter| {
                let event = events
                    .iter()
                    .find(|e| e.seq == letter.seq)
                    .map(crate::admin::presentable);
                let mut out = serde_json::to_value(&letter).unwrap_or_default();
                out["destination"] = json!(self.display_name(&letter.destination));
                out["event"] = event.unwrap_or(Value::Null);
                out
            })
            .collect())
    }

    /// Re-delivers open dead letters (of one destination, or one by id), one attempt each.
    /// A destination name no destination has is an error, not an empty report.
    pub async fn replay(
        &self,
        destination: Option<&str>,
        id: Option<i64>,
    ) -> Result<ReplayReport, ReplayError> {
        if let Some(name) = destination
            && self.lane_named(name).is_none()
        {
            let mut known: Vec<String> = self.lanes.iter().map(|l| l.name.clone()).collect();
            known.sort();
            known.dedup();
            return Err(ReplayError::UnknownDestination {
                name: name.to_owned(),
                known,
            });
        }
        let mut report = ReplayReport::default();
        for lane in self.lanes.iter() {
            if destination.is_some_and(|name| name != lane.name && name != lane.name_key()) {
                continue;
            }
            let letters: Vec<DeadLetter> = self
                .state
                .dead_letters(Some(lane.name_key()), id, REPLAY_LIMIT)
                .await?;
            for letter in letters {
                let Some(event) = self.store.get(vec![letter.seq]).await?.pop() else {
                    report.missing += 1;
                    continue;
                };
                match lane.destination.deliver(std::slice::from_ref(&event)).await {
                    Attempt::Delivered => {
                        self.state.replayed(letter.id, None).await?;
                        report.replayed += 1;
                    }
                    Attempt::Reject { reason } | Attempt::Retry { reason, .. } => {
                        self.state.replayed(letter.id, Some(reason)).await?;
                        report.failed += 1;
                    }
                }
            }
        }
        Ok(report)
    }

    /// The delivery state of a page of events, keyed by `seq`: per destination of each
    /// event's source, "delivered", "pending", "skipped", or `"dead letter: <reason>"`.
    /// Rejected events have none.
    ///
    /// Two bookkeeping reads per destination whatever the page's size (its cursor, and its
    /// open dead letters), not one per event and destination: a page of the debugger shows
    /// hundreds of events. Only when a destination has more than `REPLAY_LIMIT` open dead
    /// letters are its events past the last one listed asked about one by one.
    pub async fn delivery_states(
        &self,
        events: &[StoredEvent],
    ) -> Result<HashMap<i64, Map<String, Value>>, StoreError> {
        let mut states: HashMap<i64, Map<String, Value>> = HashMap::new();
        for lane in self.lanes.iter() {
            let mine: Vec<&StoredEvent> = events
                .iter()
                .filter(|e| e.rejected.is_none() && *e.source == *lane.source)
                .collect();
            if mine.is_empty() {
                continue;
            }
            let key = lane.name_key();
            let progress = self.state.progress(&key, 0).await?;
            let letters = self
                .state
                .dead_letters(Some(key.clone()), None, REPLAY_LIMIT)
                .await?;
            // Listed oldest first: when the list is cut short, the events after its last
            // one may have letters it does not show.
            let listed_up_to = if letters.len() < REPLAY_LIMIT {
                i64::MAX
            } else {
                letters.iter().map(|d| d.seq).max().unwrap_or(i64::MIN)
            };
            let reasons: HashMap<i64, &str> =
                letters.iter().map(|d| (d.seq, d.reason.as_str())).collect();
            for event in mine {
                let state = if event.seq > progress.cursor {
                    "pending".to_owned()
                } else if !enabled(integrations(event).as_ref(), &lane.name) {
                    "skipped".to_owned()
                } else if let Some(reason) = reasons.get(&event.seq) {
                    format!("dead letter: {reason}")
                } else if event.seq > listed_up_to
                    && let Some(reason) = self.state.dead_reason(&key, event.seq).await?
                {
                    format!("dead letter: {reason}")
                } else {
                    "delivered".to_owned()
                };
                states
                    .entry(event.seq)
                    .or_default()
                    .insert(lane.name.clone(), Value::String(state));
            }
        }
        Ok(states)
    }

    /// True when some destination is configured.
    pub fn is_empty(&self) -> bool {
        self.lanes.is_empty()
    }

    fn lane_named(&self, name: &str) -> Option<&Arc<Lane>> {
        self.lanes
            .iter()
            .find(|l| l.name == name || l.name_key() == name)
    }

    fn display_name(&self, key: &str) -> String {
        self.lanes
            .iter()
            .find(|l| l.name_key() == key)
            .map_or_else(|| key.to_owned(), |l| l.name.clone())
    }

    /// Deletes events past `retention` once every destination of their source is done.
    async fn prune_loop(
        &self,
        retention: Duration,
        interval: Duration,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            if sleep_or_stop(interval, &mut shutdown).await {
                return;
            }
            let cutoff = SystemTime::now()
                .checked_sub(retention)
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_millis() as i64);
            for source in self.sources.iter() {
                let mut up_to = i64::MAX;
                for lane in self.lanes.iter().filter(|l| l.source == *source) {
                    match self.state.progress(&lane.name_key(), 0).await {
                        Ok(progress) => up_to = up_to.min(progress.cursor),
                        Err(_) => up_to = i64::MIN,
                    }
                    // An open dead letter's event stays, so that it can be replayed.
                    match self.state.oldest_open_dead_letter(&lane.name_key()).await {
                        Ok(Some(seq)) => up_to = up_to.min(seq - 1),
                        Ok(None) => {}
                        Err(_) => up_to = i64::MIN,
                    }
                }
                match self.store.prune(source, cutoff, up_to).await {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::info!(source, pruned = n, "retention: pruned delivered events")
                    }
                    Err(e) => tracing::warn!(source, "retention: prune failed: {e}"),
                }
            }
        }
    }
}

impl Lane {
    /// The key of its cursor and dead letters: destinations are named per source. Unique,
    /// because a destination name has no `/` (checked with the configuration).
    fn name_key(&self) -> String {
        format!("{}/{}", self.source, self.name)
    }
}

fn lane(config: &DestinationConfig, source: &str, leased: bool) -> Result<Lane, ConfigError> {
    let destination =
        kind::build_leased(config, source, leased).map_err(|error| ConfigError::Destination {
            source_name: source.to_owned(),
            destination: config.name.clone(),
            error,
        })?;
    // `RetryPolicy` is non-exhaustive: start from its defaults and set what a lane decides.
    let mut policy = RetryPolicy::default();
    policy.max_retries = u32::MAX;
    policy.backoff_base = config.backoff_base.unwrap_or(DEFAULT_BACKOFF_BASE);
    policy.backoff_cap = config.backoff_cap.unwrap_or(DEFAULT_BACKOFF_CAP);
    policy.max_retry_duration = config.retry_window.unwrap_or(DEFAULT_RETRY_WINDOW);
    policy.jitter = true;
    Ok(Lane {
        name: config.name.clone(),
        source: source.to_owned(),
        kind: config.kind.label(),
        destination,
        policy,
        concurrency: config.concurrency.unwrap_or(1).max(1),
        wake: Notify::new(),
    })
}

/// The event's `integrations`, read without parsing the rest of its body.
fn integrations(event: &StoredEvent) -> Option<Value> {
    #[derive(Deserialize)]
    struct Only {
        integrations: Option<Value>,
    }
    serde_json::from_str::<Only>(&event.body)
        .ok()
        .and_then(|o| o.integrations)
}

/// Renews `lease` every [`LEASE_RENEW`] until it is lost or the collector stops, then turns
/// `held` true. A renewal that cannot reach the database is retried; once the lease may have
/// expired unrenewed, the lane stops too, since another collector may be delivering by then
/// (the epoch would refuse its cursor anyway).
async fn keep_lease(
    state: DeliveryState,
    key: String,
    lease: Lease,
    mut shutdown: watch::Receiver<bool>,
    held: watch::Sender<bool>,
) {
    let mut renewed = Instant::now();
    loop {
        if sleep_or_stop(LEASE_RENEW, &mut shutdown).await {
            break;
        }
        match state.renew(&key, lease).await {
            Ok(true) => renewed = Instant::now(),
            Ok(false) => {
                tracing::warn!(destination = %key, epoch = lease.epoch, "delivery: lease taken over");
                break;
            }
            Err(e) if renewed.elapsed() + LEASE_RENEW < LEASE_TTL => {
                tracing::warn!(destination = %key, "delivery: cannot renew the lease (will retry): {e}");
            }
            Err(e) => {
                tracing::warn!(destination = %key, "delivery: lease expired unrenewed: {e}");
                break;
            }
        }
    }
    let _ = held.send(true);
}

/// Sleeps `wait`; true if shutdown came first.
async fn sleep_or_stop(wait: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    let interrupted = tokio::select! {
        () = tokio::time::sleep(wait) => false,
        _ = shutdown.wait_for(|stop| *stop) => true,
    };
    interrupted || *shutdown.borrow()
}
