//! Slow and oversized clients are cut off; the server stays up.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use trackway_collector::storage::sqlite::{DEFAULT_DEDUP_WINDOW, SqliteStore};
use trackway_collector::storage::{Appended, BoxFuture, NewEvent, Store, StoreError};

use crate::intercept::{Intercept, Intercepted};
use crate::support::{TestServer, WRITE_KEY, basic, post, short_timeouts};

/// Writes `request` raw and returns everything the server answers before closing.
fn exchange(server: &TestServer, request: &[u8]) -> String {
    exchange_at(server.url.trim_start_matches("http://"), request)
}

/// [`exchange`] with the server at `address`.
fn exchange_at(address: &str, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(address).unwrap();
    // A safety net only: the server must close long before this.
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    // The server may refuse and close before reading everything: that is an answer too.
    let _ = stream.write_all(request);
    let mut answer = Vec::new();
    match stream.read_to_end(&mut answer) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the server kept a stalled connection open: {e}"),
    }
    String::from_utf8_lossy(&answer).into_owned()
}

fn still_serves(server: &TestServer) {
    let body = br#"{"batch":[{"type":"track","userId":"u","event":"E"}]}"#;
    assert_eq!(
        post(
            &server.url,
            "/v1/batch",
            &[("authorization", &basic(WRITE_KEY))],
            body
        )
        .0,
        200
    );
}

#[test]
fn a_client_that_never_finishes_its_headers_is_disconnected() {
    let server = TestServer::start_with(short_timeouts);
    let answer = exchange(
        &server,
        b"POST /v1/batch HTTP/1.1\r\nhost: x\r\ncontent-type: app",
    );
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
    still_serves(&server);
}

#[test]
fn a_client_that_stalls_mid_body_is_disconnected() {
    let server = TestServer::start_with(short_timeouts);
    let head = format!(
        "POST /v1/batch HTTP/1.1\r\nhost: x\r\nauthorization: {}\r\ncontent-length: 1000\r\n\r\n{{\"batch\":[",
        basic(WRITE_KEY)
    );
    let answer = exchange(&server, head.as_bytes());
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 4"),
        "{answer}"
    );
    still_serves(&server);
    assert!(
        server.events("").len() == 1,
        "the stalled request stored nothing"
    );
}

#[test]
fn huge_headers_are_refused() {
    let server = TestServer::start();
    let request = format!(
        "POST /v1/batch HTTP/1.1\r\nhost: x\r\nx-padding: {}\r\n\r\n",
        "a".repeat(200 * 1024)
    );
    let answer = exchange(&server, request.as_bytes());
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
        "{}",
        &answer[..answer.len().min(200)]
    );
    still_serves(&server);
}

#[test]
fn a_client_that_trickles_its_body_is_cut_off_at_the_body_timeout() {
    let server = TestServer::start_with(short_timeouts);
    let address = server.url.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let head = format!(
        "POST /v1/batch HTTP/1.1\r\nhost: x\r\nauthorization: {}\r\ncontent-length: 1000\r\n\r\n",
        basic(WRITE_KEY)
    );
    stream.write_all(head.as_bytes()).unwrap();
    // One byte every 100 ms: never idle for the 300 ms idle limit, yet never done.
    let mut answer = Vec::new();
    for _ in 0..100 {
        if stream.write_all(b" ").is_err() {
            // The server answered and closed since the last read: its answer may still wait
            // in the socket (blocking again here, under the 20 s read limit).
            let _ = stream.read_to_end(&mut answer);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        stream.set_nonblocking(true).unwrap();
        let mut buffer = [0_u8; 512];
        if let Ok(n) = stream.read(&mut buffer) {
            answer.extend_from_slice(&buffer[..n]);
        }
        stream.set_nonblocking(false).unwrap();
        if !answer.is_empty() {
            break;
        }
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    still_serves(&server);
}

/// POSTs a small valid batch with `key`, giving up after 10 s; the status and `Retry-After`,
/// or `None` when no answer came in that time.
fn probe(server: &TestServer, key: &str) -> Option<(u16, Option<String>)> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .proxy(None)
        .build()
        .into();
    let response = agent
        .post(format!("{}/v1/batch", server.url))
        .header("authorization", basic(key))
        .send(&br#"{"batch":[{"type":"track","userId":"u","event":"E"}]}"#[..])
        .ok()?;
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Some((response.status().as_u16(), retry_after))
}

/// A store whose commits wait until `open` is set: requests waiting on them hold their
/// ingest slots. `waiting` counts them.
struct SlowCommits {
    open: tokio::sync::watch::Receiver<bool>,
    waiting: Arc<std::sync::atomic::AtomicUsize>,
}

impl Intercept for SlowCommits {
    fn append<'a>(
        &'a self,
        inner: &'a SqliteStore,
        events: Vec<NewEvent>,
    ) -> BoxFuture<'a, Result<Appended, StoreError>> {
        let mut open = self.open.clone();
        Box::pin(async move {
            self.waiting
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let _ = open.wait_for(|open| *open).await;
            inner.append(events).await
        })
    }
}

/// Held by the tests that open hundreds of connections: each needs about 600 file
/// descriptors, so together they could pass the common soft limit of 1024.
static MANY_CONNECTIONS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Takes [`MANY_CONNECTIONS`], whether or not a test that held it panicked.
fn many_connections() -> std::sync::MutexGuard<'static, ()> {
    MANY_CONNECTIONS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[test]
fn when_slow_commits_hold_every_ingest_slot_others_get_503_and_bad_keys_401() {
    let _alone = many_connections();
    let temp = tempfile::tempdir().unwrap();
    let (open, opened) = tokio::sync::watch::channel(false);
    let held = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let store = Intercepted {
        inner: SqliteStore::open(&temp.path().join("store"), DEFAULT_DEDUP_WINDOW).unwrap(),
        with: SlowCommits {
            open: opened,
            waiting: Arc::clone(&held),
        },
    };
    // The default time limits (not `short_timeouts`): hundreds of connections at once on a
    // busy machine could wait 300 ms before their heads are read.
    let server = TestServer::with_store(temp.path(), Arc::new(store));
    let address = server.url.trim_start_matches("http://").to_owned();
    let body = br#"{"batch":[{"type":"track","userId":"u","event":"E"}]}"#;
    let head = format!(
        "POST /v1/batch HTTP/1.1\r\nhost: x\r\nauthorization: {}\r\ncontent-length: {}\r\n\r\n",
        basic(WRITE_KEY),
        body.len()
    );
    // Whole requests, each holding a slot while it waits for its commit.
    let waiting: Vec<TcpStream> = (0..trackway_collector::MAX_CONCURRENT_INGEST)
        .map(|_| {
            let mut stream = TcpStream::connect(&address).unwrap();
            stream.write_all(head.as_bytes()).unwrap();
            stream.write_all(body).unwrap();
            stream
        })
        .collect();
    crate::support::eventually("every slot is held", || {
        held.load(std::sync::atomic::Ordering::Relaxed) == trackway_collector::MAX_CONCURRENT_INGEST
    });
    // A request that cannot get a slot is told to come back later instead of waiting.
    let mut answer = None;
    crate::support::eventually("a request is turned away", || {
        answer = probe(&server, WRITE_KEY);
        answer.as_ref().is_some_and(|(status, _)| *status == 503)
    });
    let (_, retry_after) = answer.unwrap();
    assert_eq!(
        retry_after.as_deref(),
        Some(trackway_collector::RETRY_AFTER_SECONDS.to_string().as_str())
    );
    // A wrong key does not wait for a slot at all.
    assert_eq!(probe(&server, "wrong-key").map(|(s, _)| s), Some(401));
    open.send_replace(true);
    crate::support::eventually("ingest recovers", || {
        probe(&server, WRITE_KEY).is_some_and(|(status, _)| status == 200)
    });
    drop(waiting);
}

/// Connections the trickling attacker keeps open, as in the review. Each costs this process
/// two file descriptors (the test's end and the server's), 600 in all: within even the
/// common soft limit of 1024 while no other test holds hundreds (see [`MANY_CONNECTIONS`]).
const TRICKLERS: usize = 300;

/// Keeps [`TRICKLERS`] connections open, each declaring a 500 KB body with no key and sending
/// one byte of it; a connection the server answers or closes is replaced at once, as an
/// attacker would. Runs until `stop` is set, and at most 60 s or 20,000 connections (a guard:
/// the test needs a few seconds). Tells `ready` once all are open.
fn trickle(
    address: &str,
    stop: &std::sync::atomic::AtomicBool,
    ready: &std::sync::mpsc::Sender<()>,
) {
    use std::sync::atomic::Ordering;
    let head =
        b"POST /v1/batch HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 500000\r\n\r\n{";
    let open = || {
        let mut stream = TcpStream::connect(address).unwrap();
        stream.write_all(head).unwrap();
        stream.set_nonblocking(true).unwrap();
        stream
    };
    let mut streams: Vec<TcpStream> = (0..TRICKLERS).map(|_| open()).collect();
    let _ = ready.send(());
    let started = std::time::Instant::now();
    let mut opened = TRICKLERS;
    while !stop.load(Ordering::Relaxed)
        && started.elapsed() < Duration::from_secs(60)
        && opened < 20_000
    {
        for stream in &mut streams {
            let mut buffer = [0_u8; 512];
            match stream.read(&mut buffer) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                // Answered or closed: take its place again.
                _ => {
                    *stream = open();
                    opened += 1;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// POSTs a small batch, its key as Basic auth or in the body; the status and how long the
/// answer took.
fn timed_probe(server: &TestServer, key_in_body: bool) -> (u16, Duration) {
    let started = std::time::Instant::now();
    let (status, answer) = if key_in_body {
        let body = serde_json::json!({
            "writeKey": WRITE_KEY,
            "batch": [{"type": "track", "userId": "u", "event": "E"}],
        });
        post(&server.url, "/v1/batch", &[], body.to_string().as_bytes())
    } else {
        let body = br#"{"batch":[{"type":"track","userId":"u","event":"E"}]}"#;
        post(
            &server.url,
            "/v1/batch",
            &[("authorization", &basic(WRITE_KEY))],
            body,
        )
    };
    let took = started.elapsed();
    assert!(status == 200 || status == 503, "{status} {answer}");
    (status, took)
}

#[test]
fn trickling_unauthenticated_uploads_cannot_starve_keyed_requests() {
    let _alone = many_connections();
    let temp = tempfile::tempdir().unwrap();
    // Bodies may take their time: only the collector's own defences can free the tricklers'
    // connections.
    let server = TestServer::start_configured(temp.path(), |config| {
        config.body_timeout = Duration::from_secs(120);
    });
    let address = server.url.trim_start_matches("http://").to_owned();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (ready, all_open) = std::sync::mpsc::channel();
    std::thread::scope(|scope| {
        let attacker = scope.spawn(|| trickle(&address, &stop, &ready));
        all_open.recv_timeout(Duration::from_secs(30)).unwrap();
        // Give the server time to read every head: each trickler then waits on its body.
        std::thread::sleep(Duration::from_millis(500));
        // Over several seconds, through at least one round of tricklers cut off and replaced.
        let mut answers = Vec::new();
        for round in 0..8 {
            answers.push(("basic", timed_probe(&server, false)));
            answers.push(("body", timed_probe(&server, true)));
            if round < 7 {
                std::thread::sleep(Duration::from_millis(750));
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        attacker.join().unwrap();
        // The broken collector answered 503 after its 2 s slot wait: every answer must be a
        // 200. No single answer is timed (one descheduled probe on a loaded machine says
        // nothing about the tricklers); the typical one must come within the issue's 1 s, half
        // the slot wait a starved request would spend.
        for (how, (status, _)) in &answers {
            assert_eq!(*status, 200, "key in {how}: {answers:?}");
        }
        let mut took: Vec<Duration> = answers.iter().map(|(_, (_, took))| *took).collect();
        took.sort();
        let median = took[took.len() / 2];
        assert!(
            median < Duration::from_secs(1),
            "median {median:?}: {answers:?}"
        );
    });
}

#[test]
fn a_body_that_stops_arriving_is_cut_off_after_the_grace_not_the_body_timeout() {
    let temp = tempfile::tempdir().unwrap();
    let server = TestServer::start_configured(temp.path(), |config| {
        config.body_timeout = Duration::from_secs(120);
    });
    let address = server.url.trim_start_matches("http://");
    let started = std::time::Instant::now();
    let mut stream = TcpStream::connect(address).unwrap();
    // A hang guard: without the minimum rate the answer comes after 120 s.
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let head = format!(
        "POST /v1/batch HTTP/1.1\r\nhost: x\r\nauthorization: {}\r\ncontent-length: 500000\r\n\r\n{{",
        basic(WRITE_KEY)
    );
    stream.write_all(head.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        started.elapsed() >= trackway_collector::MIN_UPLOAD_GRACE,
        "a client gets the whole grace: {:?}",
        started.elapsed()
    );
    still_serves(&server);
}

#[test]
fn a_body_that_arrives_fast_and_then_pauses_is_cut_off_after_the_pause() {
    // 200 KB at once is far ahead of the minimum rate (it allows 105 s for them), so only the
    // pause bound frees this connection and its 200 KB of the bytes budget before the body
    // timeout: without it, a few hundred keyless uploads like this one fill the budget.
    let temp = tempfile::tempdir().unwrap();
    let server = TestServer::start_configured(temp.path(), |config| {
        config.body_timeout = Duration::from_secs(120);
    });
    let address = server.url.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).unwrap();
    // A hang guard: without the pause bound the answer comes after 105 s.
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let head = "POST /v1/batch HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 500000\r\n\r\n";
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&vec![b' '; 200_000]).unwrap();
    let paused = std::time::Instant::now();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        paused.elapsed() >= trackway_collector::MAX_BODY_PAUSE - Duration::from_millis(500),
        "a body may pause for the whole bound: {:?}",
        paused.elapsed()
    );
    still_serves(&server);
}

#[test]
fn a_stalled_body_is_408_whichever_timeout_fires_never_a_final_400() {
    // The test configuration's idle (between frames) and whole-body timeouts are equal, so
    // either may fire first; several uploads at once make both happen. Every Segment library
    // drops a batch answered 400, and this one was never stored.
    let server = TestServer::start_with(short_timeouts);
    let address = server.url.trim_start_matches("http://").to_owned();
    let head = format!(
        "POST /v1/batch HTTP/1.1\r\nhost: x\r\nauthorization: {}\r\ncontent-length: 1000\r\n\r\n{{\"batch\":[",
        basic(WRITE_KEY)
    );
    let answers: Vec<String> = std::thread::scope(|scope| {
        let uploads: Vec<_> = (0..8)
            .map(|_| scope.spawn(|| exchange_at(&address, head.as_bytes())))
            .collect();
        uploads.into_iter().map(|u| u.join().unwrap()).collect()
    });
    for answer in &answers {
        assert!(answer.starts_with("HTTP/1.1 408"), "{answers:?}");
    }
    still_serves(&server);
}
