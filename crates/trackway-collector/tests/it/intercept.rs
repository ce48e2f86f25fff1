//! A real SQLite store with a test's change to its writes. The one place tests delegate the
//! whole `Store` trait, so that each test store says only what it changes (and a method added
//! to the trait is delegated once). Shared with the browser test binary through `#[path]`.

use std::sync::Arc;

use trackway_collector::storage::sqlite::SqliteStore;
use trackway_collector::storage::{
    Appended, BoxFuture, Count, NewEvent, Query, Store, StoreError, StoredEvent, TrafficRow,
};

/// What a test changes in the store's writes.
pub(crate) trait Intercept: Send + Sync + 'static {
    /// Appends `events` to `inner`, as the test needs.
    fn append<'a>(
        &'a self,
        inner: &'a SqliteStore,
        events: Vec<NewEvent>,
    ) -> BoxFuture<'a, Result<Appended, StoreError>>;

    /// A probe write to `inner`; unchanged unless the test says.
    fn probe<'a>(&'a self, inner: &'a SqliteStore) -> BoxFuture<'a, Result<(), StoreError>> {
        inner.probe()
    }
}

/// `inner` with `with`'s changes; every other method is `inner`'s.
pub(crate) struct Intercepted<I> {
    pub(crate) inner: SqliteStore,
    pub(crate) with: I,
}

impl<I: Intercept> Store for Intercepted<I> {
    fn append(&self, events: Vec<NewEvent>) -> BoxFuture<'_, Result<Appended, StoreError>> {
        self.with.append(&self.inner, events)
    }
    fn probe(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        self.with.probe(&self.inner)
    }
    fn query(&self, query: Query) -> BoxFuture<'_, Result<Vec<StoredEvent>, StoreError>> {
        self.inner.query(query)
    }
    fn counts(&self) -> BoxFuture<'_, Result<Vec<Count>, StoreError>> {
        self.inner.counts()
    }
    fn traffic(
        &self,
        since_minute: i64,
        source: Option<&str>,
    ) -> BoxFuture<'_, Result<Vec<TrafficRow>, StoreError>> {
        self.inner.traffic(since_minute, source)
    }
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<StoredEvent>> {
        self.inner.subscribe()
    }
    fn read_after(
        &self,
        source: &str,
        after: i64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<StoredEvent>, StoreError>> {
        self.inner.read_after(source, after, limit)
    }
    fn get(&self, seqs: Vec<i64>) -> BoxFuture<'_, Result<Vec<StoredEvent>, StoreError>> {
        self.inner.get(seqs)
    }
    fn prune(
        &self,
        source: &str,
        before: i64,
        up_to: i64,
    ) -> BoxFuture<'_, Result<usize, StoreError>> {
        self.inner.prune(source, before, up_to)
    }
    fn lag(&self, source: &str, after: i64) -> BoxFuture<'_, Result<u64, StoreError>> {
        self.inner.lag(source, after)
    }
}
