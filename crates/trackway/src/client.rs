//! The handle users hold: accepts messages without blocking and controls the lifecycle.

use std::cell::RefCell;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use serde::Serialize;
use trackway_protocol::{
    Alias, EncodeOptions, Group, Identify, MAX_MESSAGE_BYTES, Message, Page, Screen, Track,
    ValidationError, check, footprint,
};

use crate::batch::{Payload, Pending, UUID_LEN, encode_into, fill_defaults};
use crate::budget::{Budget, LARGEST_ENCODED_COST, PER_MESSAGE_OVERHEAD};
use crate::config::{Builder, ConfigError, Validated};
use crate::doorbell::Doorbell;
use crate::encoder::Encoder;
use crate::event::{Event, User};
use crate::ledger::Ledger;
use crate::outcome::{DropReason, FlushReport};
use crate::sender::{BatchSender, SenderChannels};
use crate::spool::{Spool, SpoolError};
use crate::stats::Stats;
use crate::worker::{Control, Reply, Worker};

/// Why a call did not accept a message. Nothing was queued; the refusal is counted in
/// [`Analytics::stats`] under the matching [`DropReason`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnqueueError {
    /// The message breaks the API's rules; fix the call.
    #[error("invalid message: {0}")]
    Invalid(#[from] ValidationError),
    /// The encoded message is over the API's 32 KB limit; send less data in it.
    #[error("message is {size} bytes encoded, over the {limit}-byte limit")]
    TooLarge {
        /// Its encoded size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The memory budget is full, typically because the server has been unreachable; the
    /// message can be retried later or dropped.
    #[error("the client's {budget}-byte memory budget is full")]
    BudgetFull {
        /// The configured budget.
        budget: u64,
    },
    /// The client was shut down.
    #[error("the client is shut down")]
    Closed,
    /// The spool is full ([`Builder::spool_max_bytes`]), typically because the server has
    /// been unreachable; the message can be retried later or dropped.
    #[error("the client's {limit}-byte spool is full")]
    SpoolFull {
        /// The configured limit.
        limit: u64,
    },
    /// The spool could not take the message: a new segment file could not be created (the
    /// disk is full, or the directory is gone). Counted as [`DropReason::SpoolUnavailable`].
    #[error("the spool is unavailable: {0}")]
    SpoolUnavailable(String),
}

impl EnqueueError {
    /// The reason this refusal is counted under.
    pub fn reason(&self) -> DropReason {
        match self {
            EnqueueError::Invalid(_) => DropReason::Invalid,
            EnqueueError::TooLarge { .. } => DropReason::TooLarge,
            EnqueueError::BudgetFull { .. } => DropReason::BudgetFull,
            EnqueueError::Closed => DropReason::Closed,
            EnqueueError::SpoolFull { .. } => DropReason::BudgetFull,
            EnqueueError::SpoolUnavailable(_) => DropReason::SpoolUnavailable,
        }
    }
}

/// A Tracking API client. Cheap to clone (one `Arc`); every clone feeds the same queue.
///
/// See the [crate documentation](crate) for the quickstart and the lifecycle.
#[derive(Clone)]
pub struct Analytics {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Analytics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Analytics")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

struct Inner {
    ledger: Arc<Ledger>,
    data: Sender<Pending>,
    doorbell: Arc<Doorbell>,
    control: Sender<Control>,
    encode: EncodeOptions,
    defer_encoding: bool,
    drop_timeout: Duration,
    /// Where the call writes, with a spool ([`Builder::spool_dir`]).
    spool: Option<Arc<Spool>>,
}

thread_local! {
    /// Per-thread scratch space for encoding, so a call allocates only the final message.
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(1024));
}

/// Why [`Builder::build`] (or [`Analytics::new`]) returned no client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A setting is refused; the error names it. Fix the configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The operating system would not start one of the client's three threads (too many
    /// threads, or too little memory). Not a configuration problem: the same settings may
    /// build once the process has room; until then, run without analytics.
    #[error("could not start the client's {thread} thread: {source}")]
    Spawn {
        /// Which thread: `sender`, `encoder` or `worker`.
        thread: &'static str,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The spool directory could not be opened; the error says why and what to do.
    #[error(transparent)]
    Spool(#[from] SpoolError),
}

/// Hands the opened spool's reader to the worker, charges what it recovered to the budget,
/// tells the observer, and starts the spool's thread; returns the calls' side.
fn start_spool(
    opened: crate::spool::Opened,
    ledger: &Ledger,
    worker: &mut Worker,
    config: &Validated,
) -> Result<Arc<Spool>, BuildError> {
    let crate::spool::Opened {
        spool,
        reader,
        keeper,
        recovery,
    } = opened;
    ledger.counters.spool_opened(&recovery);
    // What earlier processes left counts against the limit like anything accepted; it may
    // exceed it (a smaller limit than theirs): calls then wait or are refused until it drains.
    ledger.budget.charge(reader.recovered_bytes());
    worker.read_spool(reader);
    spawn_thread("spool", move || keeper.run())?;
    if (recovery.messages > 0 || recovery.truncated_tails > 0)
        && let Some(observer) = &config.observer
    {
        // The user's code: a panic in it must not fail the build.
        let told = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            observer.on_spool_recovered(&recovery);
        }));
        if let Err(panic) = told {
            tracing::error!(
                "trackway: the observer panicked: {}",
                crate::outcome::panic_message(&*panic)
            );
        }
    }
    Ok(spool)
}

/// Starts one of the client's threads, named `trackway-{name}`.
fn spawn_thread(name: &'static str, run: impl FnOnce() + Send + 'static) -> Result<(), BuildError> {
    std::thread::Builder::new()
        .name(format!("trackway-{name}"))
        .spawn(run)
        .map(drop)
        .map_err(|source| BuildError::Spawn {
            thread: name,
            source,
        })
}

impl Builder {
    /// Checks the settings and starts the client's background threads. (Here, beside what it
    /// starts, so that the settings need not know the client.)
    pub fn build(self) -> Result<Analytics, BuildError> {
        Analytics::start(self.validate()?)
    }
}

impl Analytics {
    /// A client for `write_key` with the defaults: Oregon host, batches of up to 250 messages
    /// or 500 KB sent at least every second, a 6 MiB memory budget, gzip, retries with
    /// jittered backoff for up to 12 hours. See [`Builder`] for each.
    pub fn new(write_key: impl Into<String>) -> Result<Analytics, BuildError> {
        Analytics::builder(write_key).build()
    }

    /// A builder to change the defaults.
    pub fn builder(write_key: impl Into<String>) -> Builder {
        Builder::new(write_key)
    }

    pub(crate) fn start(config: Validated) -> Result<Analytics, BuildError> {
        let opened = match &config.spool {
            Some(spool) => Some(Spool::open(spool, &config.write_key, &config.batch_url)?),
            None => None,
        };
        // With a spool, its size limit bounds what is queued instead of the memory budget.
        let limit = config
            .spool
            .as_ref()
            .map_or(config.max_queue_bytes, |s| s.max_bytes);
        let mut ledger = Ledger::new(Budget::new(limit, config.overflow), config.observer.clone());
        if opened.is_some() {
            ledger = ledger.with_spool();
        }
        let ledger = Arc::new(ledger);
        let (mut worker, doorbell, ends) = Worker::wired(&config, Arc::clone(&ledger));
        let spool = match opened {
            Some(opened) => Some(start_spool(opened, &ledger, &mut worker, &config)?),
            None => None,
        };
        let (prepared_tx, prepared_rx) = ends.prepared;
        let sender = BatchSender::new(
            &config,
            Arc::clone(&ledger),
            SenderChannels {
                batches: prepared_rx,
                done: ends.done,
                cancel: ends.cancel,
            },
        );
        spawn_thread("sender", move || sender.run())?;
        let library = ("trackway", env!("CARGO_PKG_VERSION"));
        let encode = EncodeOptions::new(Some(library), config.default_context.clone());
        let encoder = Encoder::new(&config, encode.clone());
        spawn_thread("encoder", move || encoder.run(&ends.batches, &prepared_tx))?;
        spawn_thread("worker", move || worker.run())?;
        tracing::debug!(
            write_key = %crate::config::mask_write_key(&config.write_key),
            url = %config.batch_url,
            "trackway: client started"
        );
        Ok(Analytics {
            inner: Arc::new(Inner {
                ledger,
                data: ends.data,
                doorbell,
                control: ends.control,
                encode,
                defer_encoding: config.defer_encoding,
                drop_timeout: config.drop_timeout,
                spool,
            }),
        })
    }

    /// Records who a user is: `identify(user_id, traits)`.
    pub fn identify(
        &self,
        user_id: impl Into<String>,
        traits: impl Serialize + 'static,
    ) -> Result<(), EnqueueError> {
        self.enqueue(Identify::new().user_id(user_id).traits(traits))
    }

    /// Records a typed event of your tracking plan: its name is the type's, its properties
    /// its fields. `user` is a user id (a string, as in [`Analytics::track`]) or
    /// [`User::anonymous`]. See [`Event`].
    ///
    /// ```no_run
    /// # let analytics = trackway::Analytics::new("write-key")?;
    /// #[derive(serde::Serialize)]
    /// struct SignedUp {
    ///     plan: &'static str,
    /// }
    /// impl trackway::Event for SignedUp {
    ///     const NAME: &'static str = "Signed Up";
    /// }
    ///
    /// analytics.track_event("user-1", SignedUp { plan: "trial" })?;
    /// analytics.track_event(trackway::User::anonymous("anon-7"), SignedUp { plan: "trial" })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn track_event<E: Event>(
        &self,
        user: impl Into<User>,
        event: E,
    ) -> Result<(), EnqueueError> {
        self.enqueue(user.into().on(event.into_track()))
    }

    /// Records what a user did: `track(user_id, event, properties)`.
    pub fn track(
        &self,
        user_id: impl Into<String>,
        event: impl Into<String>,
        properties: impl Serialize + 'static,
    ) -> Result<(), EnqueueError> {
        self.enqueue(Track::new(event).user_id(user_id).properties(properties))
    }

    /// Records a page view: `page(user_id, name, properties)`.
    pub fn page(
        &self,
        user_id: impl Into<String>,
        name: impl Into<String>,
        properties: impl Serialize + 'static,
    ) -> Result<(), EnqueueError> {
        self.enqueue(
            Page::new()
                .user_id(user_id)
                .name(name)
                .properties(properties),
        )
    }

    /// Records a screen view: `screen(user_id, name, properties)`.
    pub fn screen(
        &self,
        user_id: impl Into<String>,
        name: impl Into<String>,
        properties: impl Serialize + 'static,
    ) -> Result<(), EnqueueError> {
        self.enqueue(
            Screen::new()
                .user_id(user_id)
                .name(name)
                .properties(properties),
        )
    }

    /// Ties a user to a group: `group(user_id, group_id, traits)`.
    pub fn group(
        &self,
        user_id: impl Into<String>,
        group_id: impl Into<String>,
        traits: impl Serialize + 'static,
    ) -> Result<(), EnqueueError> {
        self.enqueue(Group::new(group_id).user_id(user_id).traits(traits))
    }

    /// Merges identities: `alias(user_id, previous_id)`.
    pub fn alias(
        &self,
        user_id: impl Into<String>,
        previous_id: impl Into<String>,
    ) -> Result<(), EnqueueError> {
        self.enqueue(Alias::new(user_id, previous_id))
    }

    /// Accepts any message: one of the six types built with every option, or a
    /// [`trackway_protocol::Custom`] of any type.
    ///
    /// Returns at once without I/O. Fills in a UUID `messageId` and the current `timestamp`
    /// unless given, and adds `context.library`. On success the message will be delivered or
    /// its fate reported (see [`crate::Observer`] and [`Analytics::stats`]).
    pub fn enqueue(&self, message: impl Into<Message>) -> Result<(), EnqueueError> {
        let result = self.try_enqueue(message.into());
        if let Err(error) = &result {
            self.inner.ledger.counters.dropped(error.reason(), 1);
            tracing::debug!("trackway: message refused: {error}");
        }
        result
    }

    fn try_enqueue(&self, mut message: Message) -> Result<(), EnqueueError> {
        let inner = &*self.inner;
        if inner.ledger.is_closed() {
            return Err(EnqueueError::Closed);
        }
        let checked = check(&message)?;
        let generated_id = fill_defaults(&mut message, checked);
        if let Some(spool) = &inner.spool {
            return self.spool_here(spool, &message, generated_id);
        }
        let pending = if inner.defer_encoding {
            // The call only sizes the message; the encoder thread writes it. What it may not
            // exceed is bounded without writing anything; only a message too big for the
            // bound to settle the 32 KB limit is written here to find out. So is one that
            // holds more memory than its bytes could ever take (thousands of small values
            // can): held, it could need more budget than there is, or wait long for it;
            // encoded, it costs no more than a largest message, which always fits.
            let footprint = footprint(&message, &inner.encode, generated_id.map(|_| UUID_LEN));
            let held = (footprint.heap + PER_MESSAGE_OVERHEAD) as u64;
            if footprint.max_json > MAX_MESSAGE_BYTES || held > LARGEST_ENCODED_COST {
                self.encode_here(&message, generated_id)?
            } else {
                Pending {
                    cost: held,
                    payload: Payload::Message {
                        message: Box::new(message),
                        generated_id,
                        estimated_json: footprint.json,
                    },
                }
            }
        } else {
            self.encode_here(&message, generated_id)?
        };
        let cost = pending.cost;
        let Some(used_before) = inner.ledger.budget.acquire(cost) else {
            return Err(EnqueueError::BudgetFull {
                budget: inner.ledger.budget.limit(),
            });
        };
        if inner.data.send(pending).is_err() {
            // Only if the worker thread died: nothing was accepted.
            inner.ledger.budget.release(cost);
            return Err(EnqueueError::Closed);
        }
        // Counted after the send: a message the worker settles first makes `pending()`
        // saturate at zero for a moment, never count a refused message as accepted.
        inner.ledger.counters.enqueued();
        inner.doorbell.sent(used_before, cost);
        Ok(())
    }

    /// Encodes `message` into the spool ([`Builder::spool_dir`]): the same checks and counts
    /// as the memory path, with the spool's size limit as the budget. The worker reads it
    /// back from the spool, so nothing goes through the data channel.
    fn spool_here(
        &self,
        spool: &Spool,
        message: &Message,
        generated_id: Option<u128>,
    ) -> Result<(), EnqueueError> {
        let inner = &*self.inner;
        SCRATCH.with_borrow_mut(|scratch| {
            scratch.clear();
            let id = encode_into(message, generated_id, &inner.encode, scratch);
            if scratch.len() > MAX_MESSAGE_BYTES {
                return Err(EnqueueError::TooLarge {
                    size: scratch.len(),
                    limit: MAX_MESSAGE_BYTES,
                });
            }
            let cost = Spool::cost(scratch.len());
            let Some(used_before) = inner.ledger.budget.acquire(cost) else {
                return Err(EnqueueError::SpoolFull {
                    limit: inner.ledger.budget.limit(),
                });
            };
            if let Err(error) = spool.append(scratch, &id) {
                inner.ledger.budget.release(cost);
                return Err(EnqueueError::SpoolUnavailable(error.0));
            }
            inner.ledger.counters.enqueued();
            inner.doorbell.sent(used_before, cost);
            Ok(())
        })
    }

    /// Encodes `message` on the calling thread, with the messageId made of `generated_id`
    /// if it has none, refusing it if it is over the size limit.
    fn encode_here(
        &self,
        message: &Message,
        generated_id: Option<u128>,
    ) -> Result<Pending, EnqueueError> {
        SCRATCH.with_borrow_mut(|scratch| {
            scratch.clear();
            let id = encode_into(message, generated_id, &self.inner.encode, scratch);
            if scratch.len() > MAX_MESSAGE_BYTES {
                return Err(EnqueueError::TooLarge {
                    size: scratch.len(),
                    limit: MAX_MESSAGE_BYTES,
                });
            }
            Ok(Pending {
                cost: (scratch.len() + PER_MESSAGE_OVERHEAD) as u64,
                payload: Payload::Encoded {
                    bytes: scratch.as_slice().into(),
                    id,
                },
            })
        })
    }

    /// Sends everything accepted so far and waits until it has an outcome or `timeout`
    /// passes; returns what happened meanwhile. Blocks the calling thread: in async code use
    /// [`Analytics::flush_async`].
    pub fn flush(&self, timeout: Duration) -> FlushReport {
        self.inner.request_blocking(timeout, false)
    }

    /// [`Analytics::flush`] without blocking a thread. The future needs no particular runtime
    /// and resolves by the deadline.
    pub fn flush_async(
        &self,
        timeout: Duration,
    ) -> impl Future<Output = FlushReport> + Send + 'static {
        self.inner.request_async(timeout, false)
    }

    /// Flushes, then stops: what is still queued at the deadline is dropped (and reported),
    /// and later calls return [`EnqueueError::Closed`]. Idempotent. Returns by the deadline
    /// plus at most 100 ms, in which a batch waiting to be retried is settled as dropped; a
    /// batch whose request is still on the wire (or, rarely, one the encoder thread has not
    /// finished within those 100 ms) is reported pending, and its outcome comes later,
    /// through [`Analytics::stats`] and the observer.
    pub fn shutdown(&self, timeout: Duration) -> FlushReport {
        self.inner.request_blocking(timeout, true)
    }

    /// [`Analytics::shutdown`] without blocking a thread.
    pub fn shutdown_async(
        &self,
        timeout: Duration,
    ) -> impl Future<Output = FlushReport> + Send + 'static {
        self.inner.request_async(timeout, true)
    }

    /// The counters since the client was built.
    pub fn stats(&self) -> Stats {
        self.inner.ledger.stats()
    }

    /// Why the last request failed, naming its URL (`http://host/v1/batch: connect failed:
    /// ...`), while the client is still retrying it; `None` once a request has been answered
    /// (delivered or rejected). What a program waiting on a host that does not take its events
    /// can tell its user, before anything is dropped.
    pub fn last_request_error(&self) -> Option<String> {
        self.inner.ledger.request_error()
    }
}

impl Inner {
    /// Asks the worker for a flush (or shutdown) report; false if the worker is gone.
    fn control(&self, timeout: Duration, shutdown: bool, start: Stats, reply: Reply) -> bool {
        if shutdown {
            self.ledger.closed.store(true, Ordering::Release);
        }
        let deadline = crate::deadline::later(Instant::now(), timeout);
        self.control
            .send(Control {
                deadline,
                reply,
                start,
                shutdown,
            })
            .is_ok()
    }

    fn request_blocking(&self, timeout: Duration, shutdown: bool) -> FlushReport {
        let start = self.ledger.stats();
        let (tx, rx) = crossbeam_channel::bounded(1);
        if self.control(timeout, shutdown, start, Reply::Blocking(tx)) {
            // The worker answers by the deadline; the margin covers scheduling delays only.
            if let Ok(report) = rx.recv_timeout(timeout.saturating_add(REPLY_MARGIN)) {
                return report;
            }
        }
        fallback_report(&self.ledger, &start)
    }

    fn request_async(
        &self,
        timeout: Duration,
        shutdown: bool,
    ) -> impl Future<Output = FlushReport> + Send + 'static {
        let start = self.ledger.stats();
        let ledger = Arc::clone(&self.ledger);
        let (tx, rx) = futures_channel::oneshot::channel();
        let sent = self.control(timeout, shutdown, start, Reply::Async(tx));
        async move {
            match rx.await {
                Ok(report) if sent => report,
                _ => fallback_report(&ledger, &start),
            }
        }
    }
}

/// Extra time a blocked caller allows the worker beyond the deadline before reporting from
/// the counters itself (only if the worker thread died). It covers the worker's own grace for
/// the sender at a shutdown (`worker::SETTLE_GRACE`, 100 ms) and scheduling delays.
const REPLY_MARGIN: Duration = Duration::from_millis(250);

/// A report built from the counters, when the worker could not answer.
fn fallback_report(ledger: &Ledger, start: &Stats) -> FlushReport {
    let completed = ledger.stats().pending() == 0;
    ledger.report_since(start, completed)
}

impl Drop for Inner {
    fn drop(&mut self) {
        if self.ledger.is_closed() {
            return;
        }
        let report = self.request_blocking(self.drop_timeout, true);
        if report.is_clean() {
            tracing::debug!("trackway: client dropped: {report}");
        } else {
            tracing::warn!("trackway: client dropped: {report}");
        }
    }
}
