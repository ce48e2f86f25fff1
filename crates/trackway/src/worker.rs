//! The worker thread: turns the stream of accepted messages into batches and answers flushes.
//!
//! ```text
//!  callers ──data──▶ ┌────────┐ ──batch──▶ ┌─────────┐ ──body──▶ ┌────────┐ ──HTTP──▶ server
//!  flush/shutdown ──▶│ worker │            │ encoder │           │ sender │
//!     ◀──report───── └────────┘ ◀─────────────────done────────── └────────┘
//! ```
//!
//! Invariants:
//! - The worker never does I/O and never blocks on anything but its own channels, so a flush
//!   or shutdown is always answered by its deadline, even while the sender is stuck in a
//!   request.
//! - At most [`MAX_IN_FLIGHT`] batches are past the worker: one on the wire, the next ones
//!   encoded or being encoded. The encoder and the sender each take batches one at a time in
//!   arrival order, so messages reach the server in the order they were accepted (an identify
//!   is never overtaken by the track that follows it).
//! - A batch closes at `flush_at` messages, except behind batches still in flight: then it
//!   takes everything queued meanwhile, up to the request's byte and message limits.
//! - Control messages travel on their own channel, so a flush never queues behind data.
//! - With a spool (`spool/mod.rs`) messages come from its segment files instead of the data
//!   channel: the worker reads them through a mapping, at most one request's worth ahead of
//!   the batches in flight, and writes each segment's progress there as batches settle (no
//!   system call; the files' own I/O is the spool thread's). A flush's mark is then the count
//!   of records written, read or not.
//! - While nothing is queued and nobody waits, the worker sleeps in `select` with no timeout:
//!   an idle client costs no CPU.
//! - The worker does not sleep on the data channel itself, or every call would pay for waking
//!   it (a futex syscall, microseconds). Callers ring the [`Doorbell`] instead, and only when
//!   the worker has a reason to look: the first message after it last emptied the channel
//!   (which starts the batch's age timer), and each time a batch's worth of messages or bytes
//!   has piled up. Everything else is picked up when the worker next drains.
//! - A flush is complete when every message received before it has an outcome. Messages are
//!   numbered in the order received; each batch past the worker carries the number just past
//!   its last message, and the sender reports it by that number. The sender settles batches in
//!   order, but a shutdown settles the later ones first (those still queued or waiting to be
//!   encoded or sent, while one is on the wire), so completion is by position: every batch up
//!   to the flush's mark settled, not a count of settled messages.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, never, select};
use trackway_protocol::MAX_BATCH_MESSAGES;

use crate::batch::{Handed, Pending, Prepared};
use crate::config::Validated;
use crate::deadline::later;
use crate::doorbell::Doorbell;
use crate::ledger::Ledger;
use crate::outcome::{DropReason, FlushReport, Outcome};
use crate::spool::SpoolReader;
use crate::stats::Stats;

/// A request from a handle to the worker.
pub(crate) struct Control {
    /// Report by then, complete or not.
    pub(crate) deadline: Instant,
    pub(crate) reply: Reply,
    /// The counters when the request was made, for the report.
    pub(crate) start: Stats,
    /// After reporting, drop what is left and stop sending.
    pub(crate) shutdown: bool,
}

/// Where a flush report goes: a blocked thread or a future.
pub(crate) enum Reply {
    Blocking(Sender<FlushReport>),
    Async(futures_channel::oneshot::Sender<FlushReport>),
}

impl Reply {
    fn send(self, report: FlushReport) {
        // The caller may have stopped waiting (its own deadline, or a dropped future).
        match self {
            Reply::Blocking(tx) => drop(tx.send(report)),
            Reply::Async(tx) => drop(tx.send(report)),
        }
    }
}

/// A batch past the worker, in the order handed on: `start..end` among the messages received.
struct Flight {
    start: u64,
    end: u64,
    settled: bool,
}

struct Waiter {
    /// Complete once every message before this one (in the order received) is settled.
    target: u64,
    deadline: Instant,
    reply: Reply,
    start: Stats,
    shutdown: bool,
}

/// Batch limits, from the configuration.
struct Limits {
    flush_at: usize,
    /// Bytes of messages (commas included) that fit in one request beside the envelope.
    batch_bytes: usize,
    flush_interval: Duration,
}

pub(crate) struct Worker {
    limits: Limits,
    ledger: Arc<Ledger>,
    data: Receiver<Pending>,
    doorbell: Arc<Doorbell>,
    bell: Receiver<()>,
    control: Receiver<Control>,
    /// The sender's reports: the `end` of each batch it settled.
    done: Receiver<u64>,
    to_encoder: Sender<Handed>,
    /// The far ends of the encoder's and the sender's queues: at a shutdown deadline, batches
    /// still waiting in them are taken back and dropped, so the report says so at once.
    unsent: (Receiver<Handed>, Receiver<Prepared>),
    /// Dropped to tell the sender to abandon retries (shutdown deadline).
    cancel: Option<Sender<()>>,
    queue: VecDeque<Pending>,
    queue_bytes: usize,
    /// When the oldest message not yet handed on arrived.
    batch_started: Option<Instant>,
    /// Batches handed to the encoder, in order, until every one before them is settled too.
    flights: VecDeque<Flight>,
    received: u64,
    /// Where the queue starts among the messages received: every one before it was handed on
    /// or settled.
    dispatched: u64,
    waiters: Vec<Waiter>,
    shut_down: bool,
    /// The sender (and so the encoder) thread is gone: batches are settled as dropped here.
    pipeline_gone: bool,
    /// With a spool, where messages come from instead of `data` (`spool/mod.rs`).
    spool: Option<SpoolReader>,
}

/// The other ends of the worker's channels: for the callers (`data`, `control`), the encoder
/// (`batches`, the sending half of `prepared`) and the sender (the rest).
pub(crate) struct WorkerEnds {
    pub(crate) data: Sender<Pending>,
    pub(crate) control: Sender<Control>,
    pub(crate) done: Sender<u64>,
    pub(crate) batches: Receiver<Handed>,
    pub(crate) prepared: (Sender<Prepared>, Receiver<Prepared>),
    pub(crate) cancel: Receiver<()>,
}

/// Batches past the worker at once: one on the wire and up to three encoded (or being
/// encoded) behind it. Two would do if every thread ran the moment it could; the slack
/// absorbs the scheduling delays of a busy machine (bench/HISTORY.md: 1.15-1.2x end to end
/// over two on 2 cores).
const MAX_IN_FLIGHT: usize = 4;

/// How long a shutdown past its deadline waits for the sender to settle the batch it holds
/// once told to abandon it. A sender waiting out a backoff or a `Retry-After` does so at once,
/// so the report can say "dropped" instead of "pending"; one with a request on the wire cannot,
/// and the report says "pending" after this long.
const SETTLE_GRACE: Duration = Duration::from_millis(100);

impl Worker {
    /// A worker, the doorbell its callers ring (see [`Doorbell`]), and the other ends of its
    /// channels.
    pub(crate) fn wired(
        config: &Validated,
        ledger: Arc<Ledger>,
    ) -> (Worker, Arc<Doorbell>, WorkerEnds) {
        let (data_tx, data) = crossbeam_channel::unbounded();
        let (control_tx, control) = crossbeam_channel::unbounded();
        let (done_tx, done) = crossbeam_channel::unbounded();
        // Unbounded, but the worker keeps at most MAX_IN_FLIGHT batches past it.
        let (to_encoder, batches) = crossbeam_channel::unbounded();
        let (prepared_tx, prepared) = crossbeam_channel::unbounded();
        let unsent = (batches.clone(), prepared.clone());
        let (cancel, cancel_rx) = crossbeam_channel::bounded(0);
        let (bell_tx, bell) = crossbeam_channel::bounded(1);
        let limits = Limits {
            flush_at: config.flush_at,
            batch_bytes: config.message_bytes_per_request(),
            flush_interval: config.flush_interval,
        };
        let doorbell = Arc::new(Doorbell::new(bell_tx, limits.flush_at, limits.batch_bytes));
        let worker = Worker {
            limits,
            ledger,
            doorbell: Arc::clone(&doorbell),
            bell,
            data,
            control,
            done,
            to_encoder,
            unsent,
            cancel: Some(cancel),
            queue: VecDeque::new(),
            queue_bytes: 0,
            batch_started: None,
            flights: VecDeque::new(),
            received: 0,
            dispatched: 0,
            waiters: Vec::new(),
            shut_down: false,
            pipeline_gone: false,
            spool: None,
        };
        let ends = WorkerEnds {
            data: data_tx,
            control: control_tx,
            done: done_tx,
            batches,
            prepared: (prepared_tx, prepared),
            cancel: cancel_rx,
        };
        (worker, doorbell, ends)
    }

    /// Takes messages from the spool (the calls write there instead of the data channel).
    pub(crate) fn read_spool(&mut self, reader: SpoolReader) {
        self.spool = Some(reader);
    }

    /// Reads messages from the spool into the queue, up to one request's worth (the rest
    /// stays on disk: memory holds only what is about to be sent). Returns how many of them
    /// this process's calls wrote (not recovered), and whether it stopped for lack of room.
    fn read_from_spool(&mut self) -> (usize, bool) {
        let Some(mut reader) = self.spool.take() else {
            return (0, false);
        };
        let mut new = 0;
        let full = loop {
            if self.shut_down {
                // What is left stays in the spool for the next start.
                break true;
            }
            if self.queue.len() >= MAX_BATCH_MESSAGES || self.queue_bytes >= self.limits.batch_bytes
            {
                break true;
            }
            let Some(spooled) = reader.next() else {
                break false;
            };
            new += usize::from(!spooled.recovered);
            self.accept(spooled.pending);
        };
        self.spool = Some(reader);
        (new, full)
    }

    /// Runs until every handle is gone.
    pub(crate) fn run(mut self) {
        // Local clones, so that the select below does not borrow `self`.
        let bell = self.bell.clone();
        let mut done = self.done.clone();
        let control = self.control.clone();
        // Once the sender is gone: batches the encoder still finishes, settled as they come.
        let mut orphans: Receiver<Prepared> = never();
        loop {
            self.drain_data();
            self.dispatch();
            self.answer_waiters(Instant::now());
            if self.batch_arrived_meanwhile() {
                continue;
            }
            let timeout = self
                .next_wakeup()
                .map(|at| at.saturating_duration_since(Instant::now()));
            let timer = timeout.map_or_else(never, crossbeam_channel::after);
            select! {
                recv(bell) -> _ => {}
                recv(control) -> request => match request {
                    Ok(request) => self.handle_control(request),
                    // Every handle is gone (the handles own both the data and control senders).
                    Err(_) => break,
                },
                recv(done) -> settled => match settled {
                    Ok(end) => self.settle_flight(end),
                    // The sender thread is gone (a bug; its panics from user code are
                    // caught): settle what it will never send, and from now on `dispatch`
                    // settles each batch as dropped instead of handing it on. The worker holds
                    // receivers of the encoder's channels, so a send to them would not fail.
                    Err(_) => {
                        done = never();
                        orphans = self.unsent.1.clone();
                        self.pipeline_gone = true;
                        self.drop_unsent("sender thread died");
                        // What the sender held died with it: nothing will settle it now, and
                        // flushes must not wait for it.
                        self.flights.clear();
                    }
                },
                recv(orphans) -> prepared => match prepared {
                    Ok(prepared) => self.drop_prepared(&prepared, &Outcome::Dropped {
                        reason: DropReason::Shutdown,
                        detail: "sender thread died",
                    }),
                    // The encoder is gone too: nothing more can come.
                    Err(_) => orphans = never(),
                },
                recv(timer) -> _ => {}
            }
        }
        // Every handle is gone; the last one already ran a shutdown. Account for stragglers.
        self.shut_down = true;
        self.drain_data();
        self.drop_queue(DropReason::Shutdown, "client dropped");
        let now = Instant::now();
        for waiter in std::mem::take(&mut self.waiters) {
            self.answer(waiter, now);
        }
    }

    /// Publishes how many messages the worker holds, then says whether those and the ones
    /// sent since make a batch that could be handed on now: if so, the worker must look again
    /// before sleeping, since the callers may have read the old count and not rung
    /// ([`Doorbell`]).
    fn batch_arrived_meanwhile(&self) -> bool {
        let queued = self.queue.len();
        let unclaimed = self.doorbell.publish_queued(queued);
        unclaimed > 0
            && queued + unclaimed >= self.limits.flush_at
            && self.in_flight() < MAX_IN_FLIGHT
            && !self.shut_down
    }

    /// Batches past the worker that the sender has not settled.
    fn in_flight(&self) -> usize {
        self.flights.iter().filter(|f| !f.settled).count()
    }

    /// How many messages, from the first received, all have an outcome.
    fn settled_prefix(&self) -> u64 {
        self.flights.front().map_or(self.dispatched, |f| f.start)
    }

    /// Marks the batch that ends at `end` settled, and forgets the settled ones at the front.
    fn settle_flight(&mut self, end: u64) {
        if let Some(flight) = self.flights.iter_mut().find(|f| f.end == end) {
            flight.settled = true;
        }
        while self.flights.front().is_some_and(|f| f.settled) {
            self.flights.pop_front();
        }
        // Progress is recorded only while batches settle for good: after a shutdown (or with
        // the sender gone) they are abandoned, and stay in the spool for the next start.
        let prefix = self.settled_prefix();
        if !self.shut_down
            && !self.pipeline_gone
            && let Some(reader) = &mut self.spool
        {
            reader.settled(prefix);
        }
    }

    /// Takes every message sent so far (see [`Doorbell`] for why it loops).
    fn drain_data(&mut self) {
        // Armed while the worker is sure to look again without a ring: a batch is building
        // (its age timer runs) or a batch is in flight (its report wakes the worker).
        let armed = self.batch_started.is_some() || self.in_flight() > 0;
        self.doorbell.arm(armed);
        loop {
            let mut drained = 0;
            while let Ok(message) = self.data.try_recv() {
                self.accept(message);
                drained += 1;
            }
            let (spooled, full) = self.read_from_spool();
            drained += spooled;
            // Full: the rest waits in the spool, and the worker looks again when a batch
            // settles (it always has one in flight or due then).
            if !self.doorbell.claim(drained) || full {
                return;
            }
        }
    }

    fn accept(&mut self, message: Pending) {
        self.received += 1;
        if self.shut_down {
            // The queue is empty after a shutdown: this one is next in order.
            self.dispatched += 1;
            self.ledger.settle_pending(
                std::slice::from_ref(&message),
                &Outcome::Dropped {
                    reason: DropReason::Shutdown,
                    detail: "client shut down",
                },
            );
            return;
        }
        self.queue_bytes += message.json_size() + 1;
        self.queue.push_back(message);
        self.batch_started.get_or_insert_with(Instant::now);
    }

    fn handle_control(&mut self, request: Control) {
        // Everything sent before the request is in the data channel now: take it first so
        // the flush covers it.
        self.drain_data();
        let Control {
            deadline,
            reply,
            start,
            shutdown,
        } = request;
        // With a spool, messages written but not read yet (they wait on disk) count too.
        let target = self
            .spool
            .as_ref()
            .map_or(self.received, |spool| spool.appended().max(self.received));
        self.waiters.push(Waiter {
            target,
            deadline,
            reply,
            start,
            shutdown,
        });
    }

    /// Hands the next batch on if there is room in flight and a batch is due.
    fn dispatch(&mut self) {
        if self.in_flight() >= MAX_IN_FLIGHT || self.queue.is_empty() || self.shut_down {
            return;
        }
        let due = !self.waiters.is_empty()
            || self.queue.len() >= self.limits.flush_at
            || self.queue_bytes >= self.limits.batch_bytes
            || self
                .batch_started
                .is_some_and(|t| t.elapsed() >= self.limits.flush_interval);
        if !due {
            return;
        }
        // Behind batches still on their way, a batch takes all that has piled up meanwhile,
        // to the request's limits: under load, fewer and larger requests (less overhead on
        // both ends, and fewer requests per second against the API's rate limit). With
        // nothing in flight it closes at `flush_at`, as configured.
        let most = if self.in_flight() > 0 {
            MAX_BATCH_MESSAGES
        } else {
            self.limits.flush_at
        };
        let mut batch = Vec::with_capacity(self.queue.len().min(most));
        let mut bytes = 0;
        while let Some(next) = self.queue.front() {
            let size = next.json_size() + 1;
            let full = batch.len() >= most
                || (!batch.is_empty() && bytes + size > self.limits.batch_bytes);
            if full {
                break;
            }
            bytes += size;
            batch.extend(self.queue.pop_front());
        }
        self.queue_bytes -= bytes;
        self.batch_started = if self.queue.is_empty() {
            None
        } else {
            Some(Instant::now())
        };
        let start = self.dispatched;
        let end = start + batch.len() as u64;
        self.dispatched = end;
        let lost = if self.pipeline_gone {
            batch
        } else {
            let handed = Handed {
                end,
                messages: batch,
            };
            match self.to_encoder.send(handed) {
                Ok(()) => {
                    self.flights.push_back(Flight {
                        start,
                        end,
                        settled: false,
                    });
                    return;
                }
                Err(lost) => lost.0.messages,
            }
        };
        self.ledger.settle_pending(
            &lost,
            &Outcome::Dropped {
                reason: DropReason::Shutdown,
                detail: "sender thread died",
            },
        );
    }

    /// Answers every flush that is complete or out of time.
    fn answer_waiters(&mut self, now: Instant) {
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiters)
            .into_iter()
            .partition(|w| self.settled_prefix() >= w.target || now >= w.deadline);
        self.waiters = waiting;
        for waiter in ready {
            self.answer(waiter, now);
        }
    }

    fn answer(&mut self, waiter: Waiter, now: Instant) {
        let completed = self.settled_prefix() >= waiter.target;
        if waiter.shutdown && !self.shut_down {
            self.shut_down = true;
            // Abandon retries in the sender; a request already on the wire still finishes.
            self.cancel = None;
            self.drop_unsent("shutdown deadline passed");
            self.drop_queue(DropReason::Shutdown, "shutdown deadline passed");
            if !completed {
                self.await_sender(now + SETTLE_GRACE);
            }
        }
        let report = self.ledger.report_since(&waiter.start, completed);
        if !completed {
            tracing::warn!(
                pending = report.pending,
                late_ms = now.saturating_duration_since(waiter.deadline).as_millis() as u64,
                "trackway: {} deadline passed before every message was sent: {report}",
                if waiter.shutdown { "shutdown" } else { "flush" }
            );
        }
        waiter.reply.send(report);
    }

    /// Takes the sender's reports of settled batches until none is in flight or `until`.
    fn await_sender(&mut self, until: Instant) {
        while self.in_flight() > 0 {
            match self.done.recv_deadline(until) {
                Ok(end) => self.settle_flight(end),
                // Out of time, or the sender is gone (the main loop sees that too).
                Err(_) => break,
            }
        }
    }

    /// Drops the batches past the worker that are not on the wire yet (shutdown deadline, or
    /// the sender gone), with `detail` as the reason's detail.
    fn drop_unsent(&mut self, detail: &str) {
        let outcome = Outcome::Dropped {
            reason: DropReason::Shutdown,
            detail,
        };
        let (encoding, sending) = &self.unsent;
        let mut settled = Vec::new();
        for handed in encoding.try_iter() {
            self.ledger.settle_pending(&handed.messages, &outcome);
            settled.push(handed.end);
        }
        let prepared: Vec<Prepared> = sending.try_iter().collect();
        for end in settled {
            self.settle_flight(end);
        }
        for prepared in &prepared {
            self.drop_prepared(prepared, &outcome);
        }
    }

    /// Settles an encoded batch the sender will never take with `outcome`.
    fn drop_prepared(&mut self, prepared: &Prepared, outcome: &Outcome<'_>) {
        let batch = &prepared.batch;
        self.ledger
            .settle_encoded(batch, 0..batch.slots.len(), outcome);
        self.settle_flight(prepared.end);
    }

    fn drop_queue(&mut self, reason: DropReason, detail: &str) {
        if self.queue.is_empty() {
            return;
        }
        let dropped: Vec<Pending> = self.queue.drain(..).collect();
        self.queue_bytes = 0;
        self.batch_started = None;
        self.dispatched += dropped.len() as u64;
        self.ledger
            .settle_pending(&dropped, &Outcome::Dropped { reason, detail });
    }

    /// The next instant the worker must wake up without a message: a batch's age limit or a
    /// flush deadline. `None` when idle.
    fn next_wakeup(&self) -> Option<Instant> {
        let batch_due = if self.in_flight() >= MAX_IN_FLIGHT || self.shut_down {
            None
        } else {
            self.batch_started
                .map(|t| later(t, self.limits.flush_interval))
        };
        let deadline = self.waiters.iter().map(|w| w.deadline).min();
        match (batch_due, deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::Payload;
    use crate::budget::Budget;
    use crate::{Builder, Overflow};

    /// A worker closing batches at `flush_at`, its doorbell, its channels' other ends and its
    /// ledger (1 MiB budget).
    fn wired(
        flush_at: usize,
        observer: Option<Arc<dyn crate::Observer>>,
    ) -> (Worker, Arc<Doorbell>, WorkerEnds, Arc<Ledger>) {
        let config = Builder::new("wk-0123456789")
            .host("http://127.0.0.1:9")
            .flush_at(flush_at)
            .validate()
            .unwrap();
        let ledger = Arc::new(Ledger::new(
            Budget::new(1 << 20, Overflow::Reject),
            observer,
        ));
        let (worker, doorbell, ends) = Worker::wired(&config, Arc::clone(&ledger));
        (worker, doorbell, ends, ledger)
    }

    /// Sends one two-byte message into the worker, as a call would.
    fn send_one(ledger: &Ledger, data: &Sender<Pending>, doorbell: &Doorbell) {
        let cost = 64;
        let used_before = ledger.budget.acquire(cost).unwrap();
        let bytes: Box<[u8]> = b"{}".as_slice().into();
        let payload = Payload::Encoded { bytes, id: 0..0 };
        data.send(Pending { payload, cost }).unwrap();
        ledger.counters.enqueued();
        doorbell.sent(used_before, cost);
    }

    /// A flush or shutdown request with this deadline, and where its report arrives.
    fn control(
        ledger: &Ledger,
        deadline: Instant,
        shutdown: bool,
    ) -> (Control, Receiver<FlushReport>) {
        let (reply, report) = crossbeam_channel::bounded(1);
        let request = Control {
            deadline,
            reply: Reply::Blocking(reply),
            start: ledger.stats(),
            shutdown,
        };
        (request, report)
    }

    #[test]
    fn a_flush_waits_for_its_own_batch_when_a_shutdown_drops_later_ones_first() {
        let (worker, doorbell, ends, ledger) = wired(2, None);
        let thread = std::thread::spawn(move || worker.run());
        let long = Instant::now() + Duration::from_secs(60);

        // One message, then a flush: the flush makes it a batch of one, which this test, as
        // encoder and sender, takes and holds "on the wire". Its arrival also shows that the
        // flush's mark is after this message and before the next ones.
        send_one(&ledger, &ends.data, &doorbell);
        let (flush, flushed) = control(&ledger, long, false);
        ends.control.send(flush).unwrap();
        let first = ends.batches.recv_timeout(Duration::from_secs(30)).unwrap();
        assert_eq!((first.end, first.messages.len()), (1, 1));
        // Two more, handed on behind it and left waiting to be encoded.
        send_one(&ledger, &ends.data, &doorbell);
        send_one(&ledger, &ends.data, &doorbell);
        // A shutdown whose deadline has passed drops those two at once: they settle before
        // the first batch, which is still on the wire.
        let (shutdown, shut) = control(&ledger, Instant::now(), true);
        ends.control.send(shutdown).unwrap();
        let report = shut.recv_timeout(Duration::from_secs(30)).unwrap();
        assert_eq!(report.dropped.get(DropReason::Shutdown), 2, "{report}");
        assert_eq!(report.pending, 1, "{report}");
        // Another request past its deadline makes the worker look at its waiters again.
        let (nudge, nudged) = control(&ledger, Instant::now(), false);
        ends.control.send(nudge).unwrap();
        let report = nudged.recv_timeout(Duration::from_secs(30)).unwrap();
        assert!(!report.completed, "{report}");
        // Two messages are settled, but not the flush's own: it must still wait.
        assert!(
            flushed.try_recv().is_err(),
            "the flush was answered while its message was still on the wire"
        );
        // The first batch is delivered: now the flush completes, and says so.
        ledger.settle_pending(&first.messages, &Outcome::Delivered);
        ends.done.send(first.end).unwrap();
        let report = flushed.recv_timeout(Duration::from_secs(30)).unwrap();
        assert!(report.completed, "{report}");
        assert_eq!(report.delivered, 1, "{report}");
        assert_eq!(report.pending, 0, "{report}");
        drop((ends.control, ends.data));
        thread.join().unwrap();
    }

    /// An observer that passes on the detail of each dropped message.
    struct Told(std::sync::Mutex<Sender<String>>);

    impl crate::Observer for Told {
        fn on_outcome(&self, _: &str, outcome: &Outcome<'_>) {
            if let Outcome::Dropped { detail, .. } = outcome
                && let Ok(tell) = self.0.lock()
            {
                let _ = tell.send((*detail).to_owned());
            }
        }
    }

    #[test]
    fn a_batch_the_encoder_finishes_after_the_sender_died_is_settled() {
        let (tell, told) = crossbeam_channel::unbounded();
        let observer = Arc::new(Told(std::sync::Mutex::new(tell)));
        let (worker, doorbell, ends, ledger) = wired(1, Some(observer));
        let thread = std::thread::spawn(move || worker.run());
        let long = Instant::now() + Duration::from_secs(60);
        // This test is the encoder: it takes a batch, then the sender thread dies.
        send_one(&ledger, &ends.data, &doorbell);
        let handed = ends.batches.recv_timeout(Duration::from_secs(30)).unwrap();
        drop(ends.done);
        // A second message and a flush that covers both: it completes only once the worker
        // has seen the sender die (the second is then settled as dropped at once, or taken
        // back from the encoder's queue), so from here the worker knows.
        send_one(&ledger, &ends.data, &doorbell);
        let (flush, flushed) = control(&ledger, long, false);
        ends.control.send(flush).unwrap();
        let report = flushed.recv_timeout(Duration::from_secs(30)).unwrap();
        assert!(report.completed, "{report}");
        assert_eq!(told.try_recv().as_deref(), Ok("sender thread died"));
        // Now the encoder hands over the first batch, to no sender: it is settled as dropped
        // (it used to stay pending, its budget held, for good).
        let (prepared_tx, _) = ends.prepared;
        prepared_tx
            .send(Prepared::tiny(handed.end, handed.messages.len()))
            .unwrap();
        drop(handed);
        let detail = told.recv_timeout(Duration::from_secs(30)).unwrap();
        assert_eq!(detail, "sender thread died");
        assert_eq!(ledger.stats().pending(), 0);
        assert_eq!(ledger.budget.used(), 0);
        drop((ends.control, ends.data, prepared_tx));
        thread.join().unwrap();
    }

    #[test]
    fn batches_are_settled_as_dropped_once_the_sender_is_gone() {
        let (worker, doorbell, ends, ledger) = wired(1, None);
        let (data_tx, control_tx) = (ends.data, ends.control);
        // The encoder and sender threads are gone before anything is sent: their ends are
        // dropped, `done` among them.
        drop((ends.done, ends.batches, ends.prepared, ends.cancel));
        let start = ledger.stats();
        let thread = std::thread::spawn(move || worker.run());
        for _ in 0..3 {
            send_one(&ledger, &data_tx, &doorbell);
        }
        let (mut flush, report) = control(&ledger, Instant::now() + Duration::from_secs(30), false);
        flush.start = start;
        control_tx.send(flush).unwrap();
        let report = report.recv_timeout(Duration::from_secs(30)).unwrap();
        // Settled, not left pending: the flush completes, and the budget is free again.
        assert!(report.completed, "{report}");
        assert_eq!(report.dropped.get(DropReason::Shutdown), 3, "{report}");
        assert_eq!(report.pending, 0, "{report}");
        assert_eq!(ledger.budget.used(), 0);
        drop((control_tx, data_tx));
        thread.join().unwrap();
    }
}
