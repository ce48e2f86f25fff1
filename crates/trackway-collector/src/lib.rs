//! `trackway-collector`: a server for the Segment Tracking API. Every official Segment
//! library (and `trackway`) can point at it unchanged.
//!
//! - Authenticates write keys (one or more per source), validates exactly as the API
//!   documents, and answers 200 only once the events are durably committed to an embedded
//!   SQLite store (WAL, `synchronous=FULL`, group commit).
//! - Deduplicates by messageId per source within 24 hours.
//! - Shows arriving events live: an admin API (`/api/events`, `/api/stream`, `/api/stats`)
//!   and a debugger page at `/`.
//!
//! ```no_run
//! use trackway_collector::{Config, Source, serve};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = Config::new(
//!     "./trackway-data",
//!     vec![Source::new("web", vec!["wk_web_123".into()])],
//!     "an-admin-token-of-16+-chars".into(),
//! );
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! serve(listener, config, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```
//!
//! Tests run the real server the same way, on port 0.
//!
//! Logs go through `tracing`, to the subscriber of the program that runs the collector. The
//! webhook and forward destinations send with the `trackway` library's transport, whose HTTP
//! stack dumps every request's bytes (its `Authorization` header, the upstream write key,
//! included) at TRACE: hold the `ureq_proto` target at DEBUG in that subscriber, as the
//! `trackway` command does (the `trackway` crate's docs, "Logging", show how).

#![forbid(unsafe_code)]

mod admin;
mod client_ip;
pub mod config;
mod cors;
mod debugger;
pub mod delivery;
mod error;
pub mod group;
mod ingest;
mod lock;
mod readiness;
mod server;
mod settings;
mod state;
pub mod storage;

pub use admin::{DEFAULT_EVENTS_LIMIT, MAX_EVENTS_LIMIT};
pub use client_ip::CidrError;
pub use config::{
    Cidr, Config, ConfigError, DEFAULT_BODY_TIMEOUT, DEFAULT_HEADER_TIMEOUT, Source,
    generate_admin_token,
};
pub use cors::PREFLIGHT_MAX_AGE;
pub use error::RETRY_AFTER_SECONDS;
#[doc(hidden)]
pub use ingest::fuzz_batch;
pub use ingest::{
    INGEST_SLOT_WAIT, MAX_BODY_PAUSE, MAX_BUFFERED_BODY_BYTES, MAX_CONCURRENT_INGEST,
    MIN_UPLOAD_BYTES_PER_SECOND, MIN_UPLOAD_GRACE,
};
pub use readiness::{READINESS_EVIDENCE_AGE, READINESS_PROBE_TIMEOUT};
pub use server::{Collector, CollectorError, DATA_DIR_LOCK, MAX_HEAD_BYTES, SHUTDOWN_GRACE, serve};
