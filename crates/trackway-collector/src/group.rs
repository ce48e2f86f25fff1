//! A collector in a group: several collectors behind a load balancer, sharing one PostgreSQL
//! database ([`crate::storage::postgres`]).
//!
//! ```text
//!               ┌─▶ collector 1 ─┐   ingest, admin reads: every collector
//!  load balancer├─▶ collector 2 ─┼─▶ PostgreSQL: events, dedup window, counts, schema,
//!               └─▶ collector 3 ─┘   cursors, leases, dead letters
//! ```
//!
//! Every collector is configured alike. Each ingests and answers the admin API from the
//! shared database; each destination of each source is delivered by whichever collector holds
//! its lease ([`crate::storage::postgres::PostgresBook`]), and another takes it over once the
//! holder stops renewing it.

use std::sync::Arc;

use crate::config::Config;
use crate::delivery::state::DeliveryState;
use crate::lock::FileLock;
use crate::server::{Collector, CollectorError};
use crate::storage::postgres::{PostgresBook, PostgresStore};

/// Opens a collector whose events live in the PostgreSQL database at `url`.
pub(crate) fn open(
    config: &Config,
    url: &str,
    lock: Option<FileLock>,
) -> Result<Collector, CollectorError> {
    let store = Arc::new(PostgresStore::open(url, config.dedup_window)?);
    let delivery = DeliveryState::with_book(Arc::new(PostgresBook::new(Arc::clone(&store))));
    Collector::build(config, store, delivery, lock)
}
