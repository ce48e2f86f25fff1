//! Delivery: each stored event is sent on to the destinations its source configures and its
//! `integrations` enable, at least once, in order, surviving restarts.
//!
//! ```text
//!  events table ──read_after(cursor)──▶ destination task ──deliver(chunk)──▶ webhook/file/…
//!        ▲                                  │  retry with backoff; final or too old:
//!        │ new event wakes the task         │  dead letter (with the reason)
//!        └──────────────────────────────────┴─▶ delivery.sqlite3 (or the shared database):
//!                                                cursor, counts, dead letters, leases
//! ```
//!
//! The engine is in `engine/`, one concern per file: the lanes and their start-up, a lane's
//! delivery loop, retention, replay, and the report the admin API renders.
//!
//! Invariants:
//! - One task per destination; it handles events in `seq` order, one chunk at a time by
//!   default, so order is kept and a slow destination delays only itself. A destination with
//!   `concurrency = N` has up to N chunks in flight and gives up order for throughput; its
//!   cursor still passes a chunk only once every chunk before it is done. Ingest never waits
//!   for delivery.
//! - A destination's cursor moves past an event only once that event is delivered, skipped
//!   (its `integrations` exclude the destination) or dead-lettered, and the cursor is stored
//!   durably after every read batch: after a crash at most that batch is delivered again.
//! - A destination kind is one module implementing [`Destination`]; adding one touches only
//!   that module, a variant of [`kind::Kind`] and [`kind::build`] (and, for a new way to fail
//!   at start, a variant of [`kind::DestinationError`]).

mod engine;
pub mod kind;
pub(crate) mod route;
pub mod state;

use std::time::Duration;

pub use engine::{
    DeadLetterError, DeadLetterView, DeliveryEngine, DestinationStatus, EventDelivery, LEASE_TTL,
    ReplayReport,
};
// The admin API's types; the store they come from stays inside the crate.
pub use state::{DeadLetter, Progress};

use crate::storage::{BoxFuture, StoredEvent};

/// How one delivery attempt of a chunk of events ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// The destination has them.
    Delivered,
    /// A transient failure: try again later (after `after`, if the destination said).
    Retry {
        /// The destination's requested wait (`Retry-After`).
        after: Option<Duration>,
        /// What went wrong.
        reason: String,
    },
    /// The destination refused them for good.
    Reject {
        /// Why.
        reason: String,
    },
}

/// Somewhere events go. Implementations live in [`kind`].
pub trait Destination: Send + Sync + 'static {
    /// Delivers `events` (at most the destination's chunk size), in order.
    fn deliver<'a>(&'a self, events: &'a [StoredEvent]) -> BoxFuture<'a, Attempt>;

    /// Takes what only the collector delivering this destination may hold, when it takes the
    /// destination's lease (a file destination's directory lock, in a group). An error gives
    /// the lease back, to be taken again later.
    fn claim(&self) -> Result<(), kind::DestinationError> {
        Ok(())
    }

    /// Lets go of what [`Destination::claim`] took, when the lease ends.
    fn release(&self) {}

    /// Most events handed to one [`Destination::deliver`] call.
    fn chunk_size(&self) -> usize {
        1
    }
}
