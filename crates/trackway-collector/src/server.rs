//! The HTTP server: the router, and a connection loop with limits, timeouts and graceful
//! shutdown.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tower_http::add_extension::AddExtension;
use tower_http::timeout::RequestBodyTimeoutLayer;

use crate::client_ip::PeerAddr;
use crate::config::public_url::PublicUrl;
use crate::config::{Config, ConfigError};
use crate::delivery::DeliveryEngine;
use crate::delivery::state::DeliveryState;
use crate::ingest::{MAX_BUFFERED_BODY_BYTES, MAX_CONCURRENT_INGEST};
use crate::lock::{FileLock, LockError};
use crate::readiness::Readiness;
use crate::state::AppState;
use crate::storage::sqlite::SqliteStore;
use crate::storage::{Store, StoreError};
use crate::{admin, cors, debugger, ingest, readiness, settings};

/// Largest request head (request line and headers) accepted.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// How long shutdown waits for in-flight requests before closing their connections.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Why the collector could not start or run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CollectorError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The listener failed.
    #[error("listener failed: {0}")]
    Listen(std::io::Error),
    /// Another collector is running on the same data directory.
    #[error(
        "the data directory {} is in use by {}: stop that collector, or give this one its own data directory",
        dir.display(),
        crate::lock::holder(*pid)
    )]
    InUse {
        /// The data directory.
        dir: PathBuf,
        /// The other collector's process id, if known.
        pid: Option<u32>,
    },
}

/// The file in the data directory a running collector holds locked.
pub const DATA_DIR_LOCK: &str = "LOCK";

/// A collector: its configuration checked and its store open, ready to serve.
pub struct Collector {
    state: Arc<AppState>,
    stop: watch::Sender<bool>,
}

impl Collector {
    /// Checks `config` and opens the embedded SQLite store in its data directory.
    ///
    /// Fails with [`CollectorError::InUse`] while another collector runs on that directory:
    /// the directory stays locked ([`DATA_DIR_LOCK`]) for as long as this collector lives.
    ///
    /// With [`Config::postgres`] set, the events live in that database instead, shared with
    /// the other collectors of the group (see [`crate::group`]).
    pub fn open(config: &Config) -> Result<Collector, CollectorError> {
        let lock = lock_data_dir(&config.data_dir)?;
        if let Some(url) = &config.postgres {
            let (store, delivery) = crate::group::open(config, url)?;
            return Collector::build(config, store, delivery, lock);
        }
        let store = SqliteStore::open(&config.data_dir, config.dedup_window)?;
        let delivery = DeliveryState::open(&config.data_dir)?;
        Collector::build(config, Arc::new(store), delivery, lock)
    }

    /// Like [`Collector::open`] with any [`Store`]; delivery bookkeeping still lives in the
    /// data directory, which is locked the same way.
    pub fn with_store(config: &Config, store: Arc<dyn Store>) -> Result<Collector, CollectorError> {
        let lock = lock_data_dir(&config.data_dir)?;
        let delivery = DeliveryState::open(&config.data_dir)?;
        Collector::build(config, store, delivery, lock)
    }

    fn build(
        config: &Config,
        store: Arc<dyn Store>,
        delivery_state: DeliveryState,
        lock: Option<FileLock>,
    ) -> Result<Collector, CollectorError> {
        let keys = config.key_index()?;
        let public_url = config
            .public_url
            .as_deref()
            .map(PublicUrl::parse)
            .transpose()?;
        let delivery = DeliveryEngine::new(config, Arc::clone(&store), delivery_state)?;
        let (stop, shutdown) = watch::channel(false);
        let state = Arc::new(AppState {
            store,
            delivery,
            keys,
            admin_token: config.admin_token.clone(),
            shutdown,
            ingest_slots: Semaphore::new(MAX_CONCURRENT_INGEST),
            body_bytes: Arc::new(Semaphore::new(MAX_BUFFERED_BODY_BYTES)),
            readiness: Readiness::default(),
            policies: config.policies(),
            public_url,
            trusted_proxies: config.trusted_proxies.clone(),
            header_timeout: config.header_timeout,
            body_timeout: config.body_timeout,
            _lock: lock,
        });
        Ok(Collector { state, stop })
    }

    /// The router: the Tracking API (and analytics.js's settings, both open to pages on
    /// other origins), the admin API, the debugger, `/healthz` (liveness) and `/readyz`
    /// (readiness: 503 while the store cannot write).
    pub fn router(&self) -> Router {
        let state = Arc::clone(&self.state);
        let admin = Router::new()
            .route("/api/events", get(admin::events))
            .route("/api/delivery", get(admin::delivery))
            .route("/api/stats", get(admin::stats))
            .route("/api/traffic", get(admin::traffic))
            .route("/api/stream", get(admin::stream))
            .route("/api/destinations", get(admin::destinations))
            .route("/api/dead-letters", get(admin::dead_letters))
            .route("/api/replay", post(admin::replay))
            .route_layer(axum::middleware::from_fn_with_state(
                Arc::clone(&state),
                admin::require_token,
            ));
        let ingest = Router::new()
            .route("/v1/batch", post(ingest::batch))
            .route("/v1/import", post(ingest::import))
            // The mobile libraries' and analytics.js's batching mode's path.
            .route("/v1/b", post(ingest::batch))
            // Each handler reads the body, then takes one of `ingest_slots` to decode it.
            .route("/v1/{kind}", post(ingest::single))
            .route("/v1/projects/{write_key}/settings", get(settings::settings))
            // Cross-origin access for these routes only (see `cors`); a preflight answers 204.
            .layer(cors::layer(state.policies.values()))
            .layer(axum::middleware::map_response(cors::preflight_no_content));
        Router::new()
            .merge(ingest)
            // Liveness: the process answers.
            .route("/healthz", get(|| async { (StatusCode::OK, "ok") }))
            // Readiness: the store can write.
            .route(
                "/readyz",
                get(|State(state): State<Arc<AppState>>| async move {
                    readiness::readyz(&state.readiness, state.store.as_ref()).await
                }),
            )
            .route("/", get(debugger::page))
            .route("/favicon.ico", get(debugger::icon))
            .merge(admin)
            .layer(RequestBodyTimeoutLayer::new(self.state.body_timeout))
            .with_state(state)
    }

    /// Serves on `listener` until `shutdown` resolves, then stops accepting, lets in-flight
    /// requests finish (and their events commit) for up to [`SHUTDOWN_GRACE`], and returns.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), CollectorError> {
        self.state.delivery.spawn(&self.state.shutdown);
        let router = self.router();
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(self.state.header_timeout)
            .max_buf_size(MAX_HEAD_BYTES);
        let graceful = GracefulShutdown::new();
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    // Out of file descriptors and the like: wait and carry on.
                    Err(e) => {
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            // Each request knows its connection's peer, for `context.ip`.
            let service =
                TowerToHyperService::new(AddExtension::new(router.clone(), PeerAddr(peer)));
            let connection = http.serve_connection(TokioIo::new(stream), service);
            let connection = graceful.watch(connection);
            tokio::spawn(async move {
                // Client errors (resets, timeouts) end the connection; nothing to report.
                let _ = connection.await;
            });
        }
        drop(listener);
        tracing::info!("shutting down: finishing in-flight requests");
        let _ = self.stop.send(true);
        tokio::select! {
            () = graceful.shutdown() => {}
            () = tokio::time::sleep(SHUTDOWN_GRACE) => {
                tracing::warn!("shutdown grace period over; closing remaining connections");
            }
        }
        Ok(())
    }
}

/// Locks `dir` (created if needed) for this collector.
fn lock_data_dir(dir: &Path) -> Result<Option<FileLock>, CollectorError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| StoreError::io("create the data directory", dir, e))?;
    FileLock::acquire(&dir.join(DATA_DIR_LOCK)).map_err(|e| match e {
        LockError::Held { pid, .. } => CollectorError::InUse {
            dir: dir.to_owned(),
            pid,
        },
        LockError::Io { path, source } => StoreError::io("lock", path, source).into(),
    })
}

/// Opens the collector for `config` and serves on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), CollectorError> {
    Collector::open(&config)?.serve(listener, shutdown).await
}
