//! Flush, shutdown and drop: deadlines hold, reports are honest, nothing hangs.

use std::time::{Duration, Instant};

use serde_json::json;
use trackway::{DropReason, EnqueueError};
use trackway_testkit::{FakeApi, Reply};

use crate::support::{GENEROUS, client_for};

/// How long the hanging server holds each request (and the request timeout of the clients
/// that talk to it): a call that waited for the server instead of its deadline would take this
/// long.
const HANG: Duration = Duration::from_secs(60);

/// An upper bound for a call whose deadline is a fraction of a second: generous for a loaded
/// machine, yet a sixth of [`HANG`], so a call that waited for the server fails it.
const PROMPT: Duration = Duration::from_secs(10);

/// A server that accepts connections and never answers.
fn hanging_api() -> FakeApi {
    let api = FakeApi::start();
    api.set_rule(|_| Some(Reply::Hang(HANG)));
    api
}

/// Runs `call` and returns its result and how long it took.
fn timed<T>(call: impl FnOnce() -> T) -> (T, Duration) {
    let started = Instant::now();
    let result = call();
    (result, started.elapsed())
}

/// Asserts that a call given `deadline` took at least that long (it did not give up early)
/// and returned well before the server could have answered.
fn assert_kept(deadline: Duration, took: Duration) {
    assert!(
        took >= deadline,
        "returned after {took:?}, before {deadline:?}"
    );
    assert!(took < PROMPT, "took {took:?} for a {deadline:?} deadline");
}

#[test]
fn flush_returns_at_its_deadline_while_the_server_hangs() {
    let api = hanging_api();
    let analytics = client_for(&api).request_timeout(HANG).build().unwrap();
    for _ in 0..3 {
        analytics.track("u1", "Stuck", json!({})).unwrap();
    }
    let deadline = Duration::from_millis(200);
    let (report, took) = timed(|| analytics.flush(deadline));
    assert_kept(deadline, took);
    assert!(!report.completed);
    assert_eq!((report.delivered, report.pending), (0, 3), "{report}");
    // The client still works after a timed-out flush.
    analytics.track("u1", "Later", json!({})).unwrap();
}

#[test]
fn shutdown_returns_at_its_deadline_and_closes_the_client() {
    let api = hanging_api();
    let analytics = client_for(&api)
        .request_timeout(HANG)
        .flush_at(2)
        .build()
        .unwrap();
    for _ in 0..5 {
        analytics.track("u1", "Stuck", json!({})).unwrap();
    }
    // The first batch is on the wire before the shutdown starts, not merely within its
    // deadline: a thread stalled that long on a busy machine would change the picture.
    assert!(api.wait_for_requests(1, GENEROUS));
    let deadline = Duration::from_millis(200);
    let (report, took) = timed(|| analytics.shutdown(deadline));
    assert_kept(deadline, took);
    assert!(!report.completed);
    // The first batch is on the wire (outcome unknown); the rest were dropped, and said so.
    assert_eq!(report.pending, 2, "{report}");
    assert_eq!(report.dropped.get(DropReason::Shutdown), 3, "{report}");
    assert_eq!(
        analytics.track("u1", "Too late", json!({})),
        Err(EnqueueError::Closed)
    );
    assert_eq!(analytics.stats().dropped.get(DropReason::Closed), 1);
    // Idempotent: a second shutdown gives the same picture. (It too waits for the batch on
    // the wire until its deadline: that request may still be answered.)
    let (again, took) = timed(|| analytics.shutdown(deadline));
    assert_kept(deadline, took);
    assert_eq!(again.pending, 2);
    // Must not block on the hung request.
    let ((), took) = timed(|| drop(analytics));
    assert!(took < PROMPT, "drop took {took:?}");
}

#[test]
fn shutdown_past_its_deadline_reports_a_batch_waiting_to_retry_as_dropped() {
    // The report waits only briefly (the worker's settle grace, 100 ms) for the sender to
    // give up its wait; a sender stalled longer on a busy machine leaves the batch "pending"
    // in the report. That is scheduling, not a defect: check the batch is still settled as
    // dropped, and try again. A sender that does not abandon the wait fails every try.
    let mut reports = Vec::new();
    for _ in 0..3 {
        let api = FakeApi::start();
        api.set_rule(|_| Some(Reply::RetryAfter(429, "60".into())));
        let analytics = client_for(&api).flush_at(3).build().unwrap();
        for _ in 0..3 {
            analytics.track("u1", "Throttled", json!({})).unwrap();
        }
        // The batch was sent and refused: the sender now waits out the Retry-After (it counts
        // the retry just before it starts waiting).
        assert!(api.wait_for_requests(1, GENEROUS));
        let patience = Instant::now() + GENEROUS;
        while analytics.stats().retried == 0 {
            assert!(Instant::now() < patience, "no retry was scheduled");
            std::thread::sleep(Duration::from_millis(5));
        }
        let report = analytics.shutdown(Duration::from_millis(100));
        assert!(!report.completed);
        assert_eq!(
            report.dropped.get(DropReason::Shutdown) + report.pending,
            3,
            "{report}"
        );
        // Told to abandon the wait, the sender settles the batch as dropped, well before the
        // 60 s it was told to wait.
        let patience = Instant::now() + GENEROUS;
        while analytics.stats().pending() > 0 {
            assert!(
                Instant::now() < patience,
                "the sender waited out the Retry-After"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(analytics.stats().dropped.get(DropReason::Shutdown), 3);
        // ...and normally before the report is written.
        if report.pending == 0 {
            assert_eq!(report.dropped.get(DropReason::Shutdown), 3, "{report}");
            return;
        }
        reports.push(report.to_string());
    }
    panic!("the batch was pending in every report: {reports:?}");
}

#[test]
fn dropping_the_last_handle_delivers_what_was_queued() {
    let api = FakeApi::start();
    let analytics = client_for(&api)
        .flush_interval(Duration::from_secs(3600))
        .build()
        .unwrap();
    let clone = analytics.clone();
    for n in 0..20 {
        clone.track("u1", "Queued", json!({"n": n})).unwrap();
    }
    drop(clone);
    // Long enough for a flush started by the clone's drop to reach the server.
    assert!(
        !api.wait_for_requests(1, Duration::from_millis(500)),
        "still queued: a clone is alive"
    );
    drop(analytics);
    assert_eq!(api.accepted_messages().len(), 20);
}

#[test]
fn dropping_with_a_dead_server_is_bounded_by_the_drop_timeout() {
    let api = hanging_api();
    let drop_timeout = Duration::from_millis(100);
    let analytics = client_for(&api)
        .request_timeout(HANG)
        .drop_timeout(drop_timeout)
        .flush_at(1)
        .build()
        .unwrap();
    analytics.track("u1", "Stuck", json!({})).unwrap();
    // The message is on the wire to the hung server before the drop, so the drop has a
    // request to wait for (whether a sender stalled for the drop's 100 ms would still start
    // one is a matter of scheduling).
    assert!(api.wait_for_requests(1, GENEROUS));
    let ((), took) = timed(|| drop(analytics));
    assert_kept(drop_timeout, took);
    // Nothing was sent twice.
    assert_eq!(api.requests().len(), 1);
}

#[test]
fn dropping_with_a_dead_server_waits_the_default_five_seconds() {
    let api = hanging_api();
    let analytics = client_for(&api).request_timeout(HANG).build().unwrap();
    analytics.track("u1", "Stuck", json!({})).unwrap();
    let ((), took) = timed(|| drop(analytics));
    assert_eq!(trackway::DEFAULT_DROP_TIMEOUT, Duration::from_secs(5));
    // A quarter of the hang: unbounded, the drop would wait for the server.
    assert!(
        (Duration::from_secs(5)..HANG / 4).contains(&took),
        "the drop took {took:?}"
    );
    assert_eq!(api.requests().len(), 1);
}

#[test]
fn async_flush_and_shutdown_need_no_particular_runtime() {
    let api = FakeApi::start();
    let analytics = client_for(&api).build().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    runtime.block_on(async {
        analytics.track("u1", "Async", json!({})).unwrap();
        let report = analytics.flush_async(GENEROUS).await;
        assert!(report.is_clean(), "{report}");
        analytics.track("u1", "Async", json!({})).unwrap();
        let report = analytics.shutdown_async(GENEROUS).await;
        assert_eq!(report.delivered, 1);
    });
    assert_eq!(api.accepted_messages().len(), 2);
}

#[test]
fn async_flush_resolves_at_its_deadline_while_the_server_hangs() {
    let api = hanging_api();
    let analytics = client_for(&api).request_timeout(HANG).build().unwrap();
    analytics.track("u1", "Stuck", json!({})).unwrap();
    // A bare executor with no timer: the deadline is kept by the client's worker.
    let deadline = Duration::from_millis(100);
    let (report, took) = timed(|| futures_lite_block_on(analytics.flush_async(deadline)));
    assert_kept(deadline, took);
    assert!(!report.completed);
    assert_eq!(report.pending, 1);
    // The flush put the message on the wire, if not within its deadline then soon after; a
    // shutdown that found it still queued would drop it instead of reporting it pending.
    assert!(api.wait_for_requests(1, GENEROUS));
    let (report, took) = timed(|| futures_lite_block_on(analytics.shutdown_async(deadline)));
    assert_kept(deadline, took);
    assert_eq!(report.pending, 1, "{report}");
}

/// Polls a future to completion on this thread, parking between wake-ups.
fn futures_lite_block_on<F: std::future::Future>(future: F) -> F::Output {
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut context = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
        std::thread::park();
    }
}

#[test]
fn flush_with_nothing_queued_is_complete_at_once() {
    let api = FakeApi::start();
    let analytics = client_for(&api).build().unwrap();
    let (report, took) = timed(|| analytics.flush(GENEROUS));
    assert!(
        took < GENEROUS / 10,
        "took {took:?}: waited for the deadline"
    );
    assert!(report.is_clean());
    assert_eq!(report.delivered, 0);
    assert!(api.requests().is_empty());
}

/// Panics on its first request, then acknowledges.
struct PanicsOnce(std::sync::atomic::AtomicBool);

impl trackway::transport::Transport for PanicsOnce {
    fn send(
        &self,
        _: &trackway::transport::Request<'_>,
    ) -> Result<trackway::transport::Response, trackway::transport::TransportError> {
        if !self.0.swap(true, std::sync::atomic::Ordering::SeqCst) {
            panic!("a bug in a custom transport");
        }
        Ok(trackway::transport::Response::new(200, ""))
    }
}

/// Panics on every outcome.
struct PanickingObserver;

impl trackway::Observer for PanickingObserver {
    fn on_outcome(&self, _: &str, _: &trackway::Outcome<'_>) {
        panic!("a bug in an observer");
    }
}

#[test]
fn panics_in_user_transport_or_observer_lose_nothing() {
    let analytics = trackway::Analytics::builder(crate::support::WRITE_KEY)
        .transport(PanicsOnce(std::sync::atomic::AtomicBool::new(false)))
        .observer(PanickingObserver)
        .backoff(Duration::from_millis(1), Duration::from_millis(5))
        .build()
        .unwrap();
    for n in 0..10 {
        analytics.track("u1", "Survived", json!({"n": n})).unwrap();
    }
    let report = analytics.flush(GENEROUS);
    assert!(report.is_clean(), "{report}");
    let stats = analytics.stats();
    assert_eq!(
        (stats.delivered, stats.retried, stats.bytes_queued),
        (10, 1, 0)
    );
    // The threads survived: the client keeps working.
    analytics.track("u1", "Still Here", json!({})).unwrap();
    assert!(analytics.shutdown(GENEROUS).is_clean());
}

#[test]
fn huge_timeouts_do_not_overflow() {
    let api = FakeApi::start();
    let analytics = client_for(&api)
        .flush_interval(Duration::MAX)
        .drop_timeout(Duration::MAX)
        .overflow(trackway::Overflow::Wait(Duration::MAX))
        .build()
        .unwrap();
    analytics.track("u1", "Patient", json!({})).unwrap();
    assert!(analytics.flush(Duration::MAX).is_clean());
    assert!(analytics.shutdown(Duration::MAX).is_clean());
}
