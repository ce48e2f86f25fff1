//! Product analytics for Rust: record what your users do and send it, in batches, to Segment
//! or any server that speaks its Tracking API (our `trackway-collector`, RudderStack, a proxy).
//!
//! # Quickstart
//!
//! Point the client at a Tracking API host and its write key. Here it is the collector that
//! `trackway demo` runs on your machine (it prints its key); Segment is below.
//!
//! ```no_run
//! use std::time::Duration;
//! use serde_json::json;
//! use trackway::{Analytics, Track};
//!
//! let analytics = Analytics::builder("demo-write-key") // once, at startup; clone it freely
//!     .host("http://127.0.0.1:8080") // where `trackway demo` listens
//!     .build()?;
//! analytics.identify("user-id", json!({"email": "ada@example.com"}))?;
//! analytics.track("user-id", "Signed Up", json!({"plan": "trial"}))?;
//! analytics.enqueue(
//!     Track::new("Order Completed")
//!         .anonymous_id("anon-7")
//!         .properties(json!({"revenue": 42.5}))
//!         .integration("Mixpanel", false),
//! )?;
//! let report = analytics.shutdown(Duration::from_secs(5)); // at exit: deliver, then stop
//! // Not clean: the report says why ("1 rejected (HTTP 401: unknown write key)").
//! assert!(report.is_clean(), "{report}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! To send to Segment, build the client with [`Analytics::new`] (Segment's Oregon host), or
//! [`Builder::region`] for Dublin. The crate's `examples/` directory has this as a program to run:
//! `TRACKWAY_WRITE_KEY=demo-write-key TRACKWAY_HOST=http://127.0.0.1:8080 cargo run -p
//! trackway --example quickstart`.
//!
//! # What a call does
//!
//! [`Analytics::track`] and its siblings validate the message, give it a UUID `messageId` and
//! a `timestamp` unless you set them, encode it (or, with [`Builder::defer_encoding`], only
//! size it), and hand it to a background thread (or, with a spool, write it to a mapped file:
//! see "The spool" below). They never
//! block, never do I/O and need no async runtime, so they are safe in request handlers,
//! async tasks and signal-free hot loops alike. A call that cannot accept a message says why
//! with an [`EnqueueError`] (invalid, over 32 KB, memory budget full, client closed); nothing
//! is dropped silently.
//!
//! # Lifecycle
//!
//! - A worker thread batches messages by count, bytes and age ([`Builder::flush_at`],
//!   [`Builder::max_batch_bytes`], [`Builder::flush_interval`]); an encoder thread writes and
//!   compresses the next batches (gzip, or zstd once the server lists it: [`Compression`])
//!   while a sender thread posts one at a time to `<host>/v1/batch`,
//!   retrying transient failures with jittered backoff and obeying `Retry-After`. Messages
//!   arrive in the order they were accepted.
//! - Every accepted message ends delivered, rejected by the server, or dropped with a
//!   [`DropReason`]; see [`Analytics::stats`] and [`Observer`].
//! - Everything queued, in flight or waiting to retry counts against one memory budget
//!   ([`Builder::max_queue_bytes`]; with a spool, its size limit on disk,
//!   [`Builder::spool_max_bytes`]), so an outage cannot grow the process without bound.
//! - [`Analytics::flush`] waits until what was accepted before it has an outcome or its
//!   deadline passes, and returns a [`FlushReport`]; [`Analytics::shutdown`] does the same and
//!   then stops. Both have async twins that need no particular runtime.
//! - Dropping the last handle runs a shutdown bounded by [`Builder::drop_timeout`] (5 s by
//!   default): queued events are delivered when the server is reachable, and process exit is
//!   never held longer than that. In async code prefer an explicit
//!   `shutdown_async(...).await`, since the drop blocks its thread for up to that long.
//! - An idle client runs no timers and uses no CPU.
//!
//! # Typed properties
//!
//! `properties` and `traits` take a [`serde_json::Value`] or any owned [`serde::Serialize`]
//! value: your own structs, maps, enums. A typed value is written to JSON once, by serde,
//! straight from your type (no `Value` tree is built, which is most of what a `json!` call
//! costs), and is checked as a `Value` is: it must serialize to a JSON object (an
//! [`EnqueueError::Invalid`] otherwise), and the message must fit in 32 KB.
//!
//! ```no_run
//! # use trackway::Analytics;
//! #[derive(serde::Serialize)]
//! struct OrderCompleted {
//!     order_id: String,
//!     revenue: f64,
//!     currency: &'static str,
//! }
//!
//! # let analytics = Analytics::new("write-key")?;
//! let order = OrderCompleted { order_id: "o-1".into(), revenue: 42.5, currency: "EUR" };
//! analytics.track("user-id", "Order Completed", order)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Values must be `'static` (owned, or borrowing only `'static` data such as literals): the
//! client tells a `Value` apart from other types at run time, to keep a `Value` as it is. With
//! [`Builder::defer_encoding`] a typed value is still written to JSON at the call (only the
//! rest of the message is deferred), so its size is known exactly and a message over 32 KB is
//! refused at the call, as without deferral.
//!
//! # Typed events: a tracking plan the compiler checks
//!
//! With the `derive` feature, an event is a type: `#[derive(Serialize, trackway::Event)]` and
//! `#[event(name = "...")]` give it its name, and its fields are its properties, so a misspelt
//! event or property name no longer compiles. A team keeps its whole tracking plan in one
//! module, reviewed like any other code, and sends with [`Analytics::track_event`] (a user id,
//! or [`User::anonymous`]):
//!
//! ```
//! # #[cfg(feature = "derive")]
//! pub mod tracking_plan {
//!     use serde::Serialize;
//!
//!     #[derive(Serialize, trackway::Event)]
//!     #[event(name = "Signed Up")]
//!     pub struct SignedUp {
//!         pub plan: Plan,
//!     }
//!
//!     #[derive(Serialize)]
//!     #[serde(rename_all = "lowercase")]
//!     pub enum Plan {
//!         Trial,
//!         Team,
//!     }
//!
//!     #[derive(Serialize, trackway::Event)]
//!     #[event(name = "Order Completed")]
//!     pub struct OrderCompleted {
//!         pub order_id: String,
//!         pub revenue: f64,
//!     }
//! }
//!
//! # #[cfg(feature = "derive")]
//! # fn send(analytics: &trackway::Analytics) -> Result<(), trackway::EnqueueError> {
//! use tracking_plan::{OrderCompleted, Plan, SignedUp};
//!
//! analytics.track_event(trackway::User::anonymous("anon-7"), SignedUp { plan: Plan::Trial })?;
//! analytics.track_event("user-42", OrderCompleted { order_id: "o-1".into(), revenue: 42.5 })?;
//! # Ok(())
//! # }
//! ```
//!
//! Without the feature (no proc-macros built), implement [`Event`] by hand: one constant.
//! `examples/tracking_plan.rs` is this as a program.
//! # The spool: events that survive a crash
//!
//! By default accepted events wait in memory, like every Segment server library's: a crash,
//! an OOM kill or a deploy that kills the process loses what was queued. With a spool they
//! wait on disk instead, and the next client on the same directory delivers them:
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let analytics = trackway::Analytics::builder("YOUR_WRITE_KEY")
//!     .spool_dir("/var/lib/myapp/trackway")?
//!     .build()?;
//! # Ok(()) }
//! ```
//!
//! The call copies the encoded message into a preallocated segment file through a memory
//! mapping before it returns: no system call (the operating system writes the pages back;
//! only the first call after each sync wakes the spool's thread, and a call that finds no
//! next segment ready, which the spool's thread makes ahead, makes it), about the cost of a
//! call without a spool (BENCHMARKS.md). The worker reads the
//! events back in order, a request's worth at a time, so memory holds only the batches in
//! flight however much the spool holds; its size limit ([`Builder::spool_max_bytes`], 256 MiB
//! by default) replaces the memory budget, and a full spool makes a call do what
//! [`Builder::overflow`] says. What survives what:
//!
//! | what happens | what is lost | why |
//! |---|---|---|
//! | the process dies at any instant: `kill -9`, `panic = "abort"`, an OOM kill | nothing a call accepted | the event was in the page cache before the call returned; the next client on the directory delivers it, in order, and sends again at most the batch that was in flight, with the same messageIds (our collector and Segment store it once) |
//! | power loss, or the kernel crashes | at most the last [`Builder::spool_sync_interval`] (1 s) of accepted events; none with `Duration::ZERO` | the spool's thread syncs written events every interval while they arrive; `ZERO` makes each call sync before it returns (milliseconds: for rare, precious events only) |
//! | the disk is full | nothing accepted; new events are refused | segments are preallocated when created, ahead of need, so a full disk is a refused call ([`EnqueueError::SpoolUnavailable`]), never a failed write of an accepted event |
//! | a torn or corrupt record at a segment's tail (a crash in the middle of a write) | that record only, which no call had accepted | checksums find it at start; it is cut off, counted ([`Stats::truncated`]), logged, and told to [`Observer::on_spool_recovered`], never a panic |
//!
//! Also:
//! - Acknowledged events are not sent again: each segment's header records how many of its
//!   events are settled as batches are acknowledged, and a segment is deleted once all are.
//!   An event the server rejected, or one given up after retries, is settled too (with its
//!   reason); a shutdown leaves what it could not deliver in the spool
//!   ([`FlushReport::spooled`]) instead of dropping it.
//! - One client per directory: a second one, in this process or another, gets
//!   [`SpoolError::Locked`] from [`Builder::build`]. A spool records the host and a
//!   fingerprint of the write key (never the key), and refuses to open for another; files
//!   are readable by their owner only, since events carry personal data. A spool written by
//!   a newer version of this crate is refused, not misread.
//! - [`Stats::spooled`] and [`FlushReport::spooled`] count the events in the spool,
//!   [`Stats::recovered`] those found at start.
//! - `trackway spool drain DIR --host ... --write-key ...` delivers a spool whose application
//!   will not come back.
//! - The spool excludes [`Builder::defer_encoding`] (the call must encode what it writes):
//!   [`Builder::build`] refuses both.
//!
//! # Logging
//!
//! The client logs through `tracing`: retries as warnings, rejections and drops as errors,
//! the write key only masked ([`mask_write_key`]). Its HTTP stack, ureq, logs through `log`,
//! and at TRACE its protocol module `ureq_proto` writes every request's bytes in rows of hex
//! and text, `Authorization: Basic <write key>` included. If your subscriber may ever run at
//! TRACE, hold that module at DEBUG whatever your filter says (a directive added to an
//! `EnvFilter` is not enough: a more specific one in `RUST_LOG` would win). The `trackway`
//! command does this:
//!
//! ```
//! use tracing_subscriber::{EnvFilter, filter::filter_fn, prelude::*};
//!
//! let no_wire_dump = filter_fn(|meta| {
//!     !(meta.target().starts_with("ureq_proto") && *meta.level() > tracing::Level::DEBUG)
//! });
//! tracing_subscriber::registry()
//!     .with(tracing_subscriber::fmt::layer().with_filter(EnvFilter::from_default_env()))
//!     .with(no_wire_dump)
//!     .init();
//! ```
//!
//! # Testing your code
//!
//! [`testing::Recorder`] is a transport that records what would have been sent.

mod answer;
mod batch;
mod body;
mod budget;
mod client;
mod compression;
mod config;
mod deadline;
mod doorbell;
mod encoder;
mod event;
mod ledger;
mod outcome;
pub mod retry;
mod sender;
mod spool;
mod stats;
pub mod testing;
pub mod transport;
mod worker;

pub use body::{BatchBody, PushError};
pub use budget::Overflow;
pub use client::{Analytics, BuildError, EnqueueError};
pub use compression::Compression;
pub use config::{
    Builder, ConfigError, DEFAULT_DROP_TIMEOUT, DEFAULT_FLUSH_AT, DEFAULT_FLUSH_INTERVAL,
    DEFAULT_GZIP_LEVEL, DEFAULT_MAX_BATCH_BYTES, DEFAULT_MAX_QUEUE_BYTES, DEFAULT_REQUEST_TIMEOUT,
    DUBLIN_HOST, OREGON_HOST, Region, batch_url, mask_write_key,
};
pub use event::{Event, User};
pub use outcome::{DropCounts, DropReason, FlushReport, Observer, Outcome};
pub use retry::RetryPolicy;
pub use spool::settings::{
    DEFAULT_SPOOL_MAX_BYTES, DEFAULT_SPOOL_SYNC_INTERVAL, MIN_SPOOL_MAX_BYTES,
};
pub use spool::{Recovery, SpoolError};
pub use stats::Stats;
#[cfg(feature = "derive")]
pub use trackway_derive::Event;
pub use trackway_protocol::{
    Alias, Common, Custom, Group, Identify, Kind, Message, Object, Page, Screen, Track,
    ValidationError,
};
