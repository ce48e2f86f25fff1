//! Where acknowledged events live: the storage seam and its records.
//!
//! The ingest path hands a request's events to [`Store::append`] and answers 200 only after
//! it returns `Ok`: by then the events are durable. The embedded implementation is
//! [`sqlite::SqliteStore`]; several collectors share a [`postgres::PostgresStore`]; tests plug
//! failing or in-memory stores in through the same trait.

mod error;
mod location;
pub mod postgres;
pub mod sqlite;

pub use error::StoreError;
pub use location::{StoreLocation, UnknownStore, mask_password};

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::Serialize;

/// An event on its way into the store.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// The source (by name) whose write key sent it.
    pub source: Arc<str>,
    /// What it is deduplicated by: its `messageId` (assigned by the server when the client
    /// sent none or null). For a rejected one that cannot serve, a key no string id starts
    /// with (a NUL): the JSON text of a `messageId` that is not a string, or a digest of the
    /// message as sent when its `messageId` is empty.
    pub message_id: String,
    /// Its `type`.
    pub kind: String,
    /// `userId`, for filtering.
    pub user_id: Option<String>,
    /// `anonymousId`, for filtering.
    pub anonymous_id: Option<String>,
    /// `event` (track) or `name` (page, screen), for filtering and display.
    pub label: Option<String>,
    /// Server time of arrival, milliseconds since the Unix epoch.
    pub received_at: i64,
    /// Why the message was refused, for messages stored as rejected.
    pub rejected: Option<String>,
    /// The message as stored, JSON.
    pub body: String,
}

/// An event as the store holds it.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    /// Arrival order, unique, increasing.
    pub seq: i64,
    /// The source's name.
    pub source: Arc<str>,
    /// Its `type`.
    pub kind: String,
    /// Server time of arrival, milliseconds since the Unix epoch.
    pub received_at: i64,
    /// Why it was refused, if it was.
    pub rejected: Option<String>,
    /// The message, JSON.
    pub body: String,
}

/// What [`Store::append`] did with one request's events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Appended {
    /// Newly stored.
    pub stored: usize,
    /// Skipped: the same messageId from the same source was stored within the window.
    pub duplicates: usize,
}

/// A filter over stored events, newest first.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// At most this many.
    pub limit: usize,
    /// Only this `type`.
    pub kind: Option<String>,
    /// Only events whose `userId` or `anonymousId` is this.
    pub user_id: Option<String>,
    /// Only events whose `event` or `name` is this.
    pub label: Option<String>,
    /// Only events older than this `seq` (paging).
    pub before: Option<i64>,
}

/// Counts per source, type and status.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Count {
    /// The source's name.
    pub source: String,
    /// The `type`: one of the six, or [`sqlite::OTHER_TYPE`] for all others together (the
    /// sender chooses the type, so a count per type would grow without bound).
    #[serde(rename = "type")]
    pub kind: String,
    /// Stored as rejected.
    pub rejected: bool,
    /// How many.
    pub count: u64,
}

/// Events stored in one minute, per source, type and status: a bar of the traffic chart.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TrafficRow {
    /// The minute: `receivedAt` in milliseconds since the epoch, divided by 60 000.
    pub minute: i64,
    /// The source's name.
    pub source: String,
    /// The `type`, bucketed as [`Count::kind`] is (the six, or [`sqlite::OTHER_TYPE`]).
    #[serde(rename = "type")]
    pub kind: String,
    /// Stored as rejected.
    pub rejected: bool,
    /// How many.
    pub count: u64,
}

/// Milliseconds in one bucket of the traffic: a minute.
pub const TRAFFIC_BUCKET_MS: i64 = 60_000;

/// How long the stores keep the traffic: a day, so the chart can look back further than its
/// hour, and the rows stay bounded (sources x 1440 minutes x 7 types x 2 statuses).
pub const TRAFFIC_RETENTION: std::time::Duration = std::time::Duration::from_secs(24 * 60 * 60);

/// The minute of `received_at` (ms since the epoch).
pub fn traffic_minute(received_at: i64) -> i64 {
    received_at.div_euclid(TRAFFIC_BUCKET_MS)
}

/// The oldest minute the stores keep, `now_ms` being now: older ones are pruned.
pub(crate) fn traffic_horizon(now_ms: i64) -> i64 {
    traffic_minute(now_ms - TRAFFIC_RETENTION.as_millis() as i64)
}

/// A boxed future, to keep [`Store`] object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Durable event storage.
pub trait Store: Send + Sync + 'static {
    /// Stores `events` durably, skipping duplicates; resolves once they are committed.
    fn append(&self, events: Vec<NewEvent>) -> BoxFuture<'_, Result<Appended, StoreError>>;

    /// Events matching `query`, newest first.
    fn query(&self, query: Query) -> BoxFuture<'_, Result<Vec<StoredEvent>, StoreError>>;

    /// Counts per source, type and status: of every collector sharing the store.
    fn counts(&self) -> BoxFuture<'_, Result<Vec<Count>, StoreError>>;

    /// Events stored per minute since `since_minute` (inclusive), per source, type and
    /// status, oldest first; only `source`'s when given. Of every collector sharing the store,
    /// answered from counts kept as events are stored (never by reading the events), and kept
    /// [`TRAFFIC_RETENTION`] whatever the events' retention.
    fn traffic(
        &self,
        since_minute: i64,
        source: Option<&str>,
    ) -> BoxFuture<'_, Result<Vec<TrafficRow>, StoreError>>;

    /// A receiver of every event stored from now on, in order.
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<StoredEvent>>;

    /// Accepted (not rejected) events of `source` with `seq > after`, oldest first: what
    /// delivery reads.
    fn read_after(
        &self,
        source: &str,
        after: i64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<StoredEvent>, StoreError>>;

    /// The events with these `seq`s (those that still exist), oldest first.
    fn get(&self, seqs: Vec<i64>) -> BoxFuture<'_, Result<Vec<StoredEvent>, StoreError>>;

    /// Deletes events of `source` received before `received_before` (ms since the epoch) with
    /// `seq <= up_to`; returns how many went.
    fn prune(
        &self,
        source: &str,
        received_before: i64,
        up_to: i64,
    ) -> BoxFuture<'_, Result<usize, StoreError>>;

    /// How many accepted events of `source` have `seq > after`: a destination's lag.
    fn lag(&self, source: &str, after: i64) -> BoxFuture<'_, Result<u64, StoreError>>;

    /// Makes one small durable write that stores no event, to learn whether the store can
    /// write (`/readyz` when no request has written lately). The default appends nothing,
    /// which suits a store whose every append touches its medium; the SQLite store writes a
    /// row, since an empty transaction writes nothing.
    fn probe(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move { self.append(Vec::new()).await.map(|_| ()) })
    }
}

/// Now, in milliseconds since the Unix epoch (0 on a clock before it).
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
