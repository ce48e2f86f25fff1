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
use crate::storage::StoreError;
use crate::storage::postgres::{PostgresBook, PostgresStore};

/// Opens the PostgreSQL database at `url` as a group member's store, with the delivery
/// bookkeeping kept in the same database.
pub(crate) fn open(
    config: &Config,
    url: &str,
) -> Result<(Arc<PostgresStore>, DeliveryState), StoreError> {
    let store = Arc::new(PostgresStore::open(url, config.dedup_window)?);
    let delivery = DeliveryState::with_book(Arc::new(PostgresBook::new(Arc::clone(&store))));
    Ok((store, delivery))
}
