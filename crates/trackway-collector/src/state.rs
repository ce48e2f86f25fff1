//! The state every handler shares: the store, the delivery engine, the sources' keys and
//! policies, the ingest slots and body budget, readiness. `server` builds it; the handlers
//! (`ingest`, `admin`, `settings`) read it. It depends on none of them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, watch};

use crate::client_ip::Cidr;
use crate::config::SourcePolicy;
use crate::config::public_url::PublicUrl;
use crate::delivery::DeliveryEngine;
use crate::lock::FileLock;
use crate::readiness::Readiness;
use crate::storage::Store;

/// State shared by every handler.
pub(crate) struct AppState {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) delivery: DeliveryEngine,
    pub(crate) keys: HashMap<String, Arc<str>>,
    pub(crate) admin_token: String,
    pub(crate) shutdown: watch::Receiver<bool>,
    /// The [`MAX_CONCURRENT_INGEST`](crate::MAX_CONCURRENT_INGEST) ingest slots.
    pub(crate) ingest_slots: Semaphore,
    /// [`MAX_BUFFERED_BODY_BYTES`](crate::MAX_BUFFERED_BODY_BYTES) permits, one per byte of body received and not yet done
    /// with.
    pub(crate) body_bytes: Arc<Semaphore>,
    /// What `/readyz` knows of the store's writes.
    pub(crate) readiness: Readiness,
    /// Each source's allowed origins and IP collection, by source name.
    pub(crate) policies: HashMap<Arc<str>, SourcePolicy>,
    /// [`Config::public_url`](crate::Config::public_url), parsed.
    pub(crate) public_url: Option<PublicUrl>,
    /// [`Config::trusted_proxies`](crate::Config::trusted_proxies).
    pub(crate) trusted_proxies: Vec<Cidr>,
    pub(crate) header_timeout: Duration,
    pub(crate) body_timeout: Duration,
    /// The data directory's lock, released when the last handler is done with the state.
    pub(crate) _lock: Option<FileLock>,
}
