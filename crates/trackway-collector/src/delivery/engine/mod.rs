//! The delivery engine: one task per destination (see the module doc of [`super`]), one file
//! per concern:
//!
//! ```text
//!  mod.rs        the engine: its lanes (one per destination), start-up, arrival wake-ups
//!  deliver.rs    a lane's loop: lease, read after the cursor, chunks, retries, dead letters
//!  retention.rs  deleting events every destination of their source is done with
//!  report.rs     what the admin API shows: progress, lag, dead letters, each event's state
//!  replay.rs     sending dead letters again
//! ```
//!
//! The report is data (`DestinationStatus`, `DeadLetterView`, `EventDelivery`); the admin
//! API renders it as JSON.

mod deliver;
mod replay;
mod report;
mod retention;

pub use replay::{DeadLetterError, ReplayReport};
pub use report::{DeadLetterView, DestinationStatus, EventDelivery};

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};
use trackway::RetryPolicy;

use super::Destination;
use super::kind::{
    self, DEFAULT_BACKOFF_BASE, DEFAULT_BACKOFF_CAP, DEFAULT_RETRY_WINDOW, DestinationConfig,
};
use super::state::DeliveryState;
use crate::config::{Config, ConfigError};
use crate::storage::Store;

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

/// Sleeps `wait`; true if shutdown came first.
async fn sleep_or_stop(wait: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    let interrupted = tokio::select! {
        () = tokio::time::sleep(wait) => false,
        _ = shutdown.wait_for(|stop| *stop) => true,
    };
    interrupted || *shutdown.borrow()
}
