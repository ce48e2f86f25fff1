//! A collector in a group: several collectors behind a load balancer, sharing one PostgreSQL
//! database ([`crate::storage::postgres`]).
//!
//! ```text
//!               ┌─▶ collector 1 ─┐   ingest, admin reads: every collector
//!  load balancer├─▶ collector 2 ─┼─▶ PostgreSQL (events, dedup window, counts, schema)
//!               └─▶ collector 3 ─┘   delivery: the one holding the delivery claim
//! ```
//!
//! Every collector ingests and answers the admin API from the shared database. Delivery is
//! interim: its bookkeeping (cursors, dead letters) still lives in each collector's data
//! directory, so only one collector of the group may deliver, or each would send every event.
//! The first to start claims delivery ([`PostgresStore::claim_delivery`]); the others start
//! with no destinations and no retention (retention must not delete what the delivering
//! collector has not sent, and only it knows its cursors). The claim is not handed over when
//! its holder stops; delivery resumes when it (or another collector on its data directory)
//! starts again.

use std::sync::Arc;

use crate::config::Config;
use crate::lock::FileLock;
use crate::server::{Collector, CollectorError};
use crate::storage::postgres::PostgresStore;

/// Opens a collector whose events live in the PostgreSQL database at `url`.
pub(crate) fn open(
    config: &Config,
    url: &str,
    lock: Option<FileLock>,
) -> Result<Collector, CollectorError> {
    let store = PostgresStore::open(url, config.dedup_window)?;
    let delivers = config.sources.iter().any(|s| !s.destinations.is_empty());
    if !delivers || store.claim_delivery()? {
        if delivers {
            tracing::info!("group: this collector delivers for the group");
        }
        return Collector::build(config, Arc::new(store), lock);
    }
    tracing::info!(
        "group: another collector of the group delivers; this one only ingests and serves reads"
    );
    let mut ingest_only = config.clone();
    for source in &mut ingest_only.sources {
        source.destinations.clear();
    }
    ingest_only.retention = None;
    Collector::build(&ingest_only, Arc::new(store), lock)
}
