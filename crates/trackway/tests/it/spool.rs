//! The durable spool: what a client accepted survives its process dying, and the next client
//! on the same directory delivers it exactly once.
//!
//! The crash tests run this test binary again as the crashing process: `spool_child` does
//! nothing unless `TRACKWAY_SPOOL_CHILD` tells it what to do.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use trackway::{
    Analytics, BuildError, Builder, ConfigError, DropReason, EnqueueError, Observer, Outcome,
    Overflow, Recovery, SpoolError, Track,
};
use trackway_testkit::{FakeApi, Reply};

use crate::support::{GENEROUS, WRITE_KEY, ids};

/// A client for `host` with a spool in `dir` and quick retries.
fn spooled(host: &str, dir: &Path) -> Builder {
    Analytics::builder(WRITE_KEY)
        .host(host)
        .no_proxy()
        .backoff(Duration::from_millis(1), Duration::from_millis(20))
        .max_retries(1_000_000)
        .request_timeout(Duration::from_secs(5))
        .flush_interval(Duration::from_millis(20))
        // Events left undelivered stay in the spool: dropping a client need not wait.
        .drop_timeout(Duration::from_millis(100))
        .spool_dir(dir)
        .unwrap()
}

/// Builds, waiting while the directory is still held by a client of this process that is
/// going away (its spool thread ends just after its last handle).
fn build_when_free(builder: impl Fn() -> Builder) -> Analytics {
    let deadline = Instant::now() + GENEROUS;
    loop {
        match builder().build() {
            Err(BuildError::Spool(SpoolError::Locked { .. })) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            other => return other.unwrap(),
        }
    }
}

fn track(id: &str, pad: usize) -> Track {
    Track::new("Spooled")
        .user_id("u-1")
        .message_id(id)
        .properties(json!({"pad": "x".repeat(pad)}))
}

/// How many times each messageId arrived in an acknowledged request.
fn arrivals(api: &FakeApi) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for id in ids(&api.accepted_messages()) {
        *counts.entry(id).or_insert(0) += 1;
    }
    counts
}

#[test]
fn a_spooled_client_delivers_everything_and_keeps_nothing() {
    let api = FakeApi::start();
    let dir = tempfile::tempdir().unwrap();
    let analytics = spooled(&api.url(), dir.path()).build().unwrap();
    for n in 0..500 {
        analytics
            .enqueue(track(&format!("m-{n}"), n % 300))
            .unwrap();
    }
    let report = analytics.flush(GENEROUS);
    assert!(report.is_clean(), "{report}");
    assert_eq!(analytics.stats().delivered, 500);
    let delivered = ids(&api.accepted_messages());
    let expected: Vec<String> = (0..500).map(|n| format!("m-{n}")).collect();
    assert_eq!(delivered, expected, "in order, each once");
    let stats = analytics.stats();
    assert_eq!((stats.spooled, stats.pending(), stats.recovered), (0, 0, 0));
}

/// An observer that keeps what it was told at start.
#[derive(Clone, Default)]
struct Told {
    recovered: std::sync::Arc<std::sync::Mutex<Option<(u64, u64)>>>,
}

impl Observer for Told {
    fn on_outcome(&self, _: &str, _: &Outcome<'_>) {}

    fn on_spool_recovered(&self, recovery: &Recovery) {
        *self.recovered.lock().unwrap() = Some((recovery.messages, recovery.truncated_tails));
    }
}

#[test]
fn what_a_shutdown_leaves_is_delivered_by_the_next_client() {
    let addr = FakeApi::unused_addr();
    let host = format!("http://{addr}");
    let dir = tempfile::tempdir().unwrap();
    let analytics = spooled(&host, dir.path()).build().unwrap();
    for n in 0..50 {
        analytics.enqueue(track(&format!("m-{n}"), 10)).unwrap();
    }
    // The server is down: nothing is dropped, all 50 stay in the spool.
    let report = analytics.shutdown(Duration::from_millis(200));
    assert_eq!(report.dropped.total(), 0, "{report}");
    assert_eq!((report.pending, report.spooled), (50, 50), "{report}");
    assert!(report.to_string().contains("50 in the spool"), "{report}");
    drop(analytics);

    let told = Told::default();
    let analytics = build_when_free(|| spooled(&host, dir.path()).observer(told.clone()));
    // The server comes up only now: the old client's sender is not joined by its drop, and
    // the later it could still reach a server, the longer a stall it would take for it to send
    // a batch the new client sends too. Until then the new client retries.
    let api = FakeApi::start_at(addr);
    assert_eq!(analytics.stats().recovered, 50);
    // The observer heard of the recovery before build() returned, then of each delivery.
    assert_eq!(
        *told.recovered.lock().unwrap(),
        Some((50, 0)),
        "on_spool_recovered"
    );
    let report = analytics.flush(GENEROUS);
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.recovered, 50);
    let expected: Vec<String> = (0..50).map(|n| format!("m-{n}")).collect();
    assert_eq!(ids(&api.accepted_messages()), expected);
    drop(analytics);
    // Delivered and recorded: a third client finds nothing.
    let analytics = build_when_free(|| spooled(&host, dir.path()));
    assert_eq!(analytics.stats().recovered, 0);
}

#[test]
fn a_second_client_on_the_same_directory_is_refused_at_build() {
    let api = FakeApi::start();
    let dir = tempfile::tempdir().unwrap();
    let _first = spooled(&api.url(), dir.path()).build().unwrap();
    let second = spooled(&api.url(), dir.path()).build();
    let Err(BuildError::Spool(error @ SpoolError::Locked { .. })) = second else {
        panic!("the second client was not refused: {:?}", second.err());
    };
    assert!(
        error.to_string().contains("in use by another client"),
        "{error}"
    );
}

#[test]
fn the_spool_excludes_deferred_encoding_and_a_file_for_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let deferred = Analytics::builder(WRITE_KEY)
        .defer_encoding(true)
        .spool_dir(dir.path())
        .unwrap()
        .build();
    assert!(matches!(
        deferred,
        Err(BuildError::Config(ConfigError::SpoolWithDeferredEncoding))
    ));
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let refused = Analytics::builder(WRITE_KEY).spool_dir(&file);
    assert!(matches!(refused, Err(ConfigError::SpoolDir { .. })));
}

/// Fills a spool of the smallest size while the server is down; returns the client, the
/// address the server will come up on, and how many calls were accepted.
fn fill(dir: &Path, overflow: Overflow) -> (Analytics, std::net::SocketAddr, usize) {
    let addr = FakeApi::unused_addr();
    let analytics = spooled(&format!("http://{addr}"), dir)
        .spool_max_bytes(trackway::MIN_SPOOL_MAX_BYTES)
        .overflow(overflow)
        .build()
        .unwrap();
    let mut accepted = 0;
    loop {
        match analytics.enqueue(track(&format!("f-{accepted}"), 1000)) {
            Ok(()) => accepted += 1,
            Err(EnqueueError::SpoolFull { limit }) => {
                assert_eq!(limit, trackway::MIN_SPOOL_MAX_BYTES);
                break;
            }
            Err(other) => panic!("{other}"),
        }
        assert!(accepted < 10_000, "the spool never filled up");
    }
    (analytics, addr, accepted)
}

#[test]
fn a_full_spool_rejects_and_counts_the_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let (analytics, _, accepted) = fill(dir.path(), Overflow::Reject);
    // About 1 MiB of events of 1.2 KB.
    assert!((700..1100).contains(&accepted), "{accepted}");
    let stats = analytics.stats();
    assert_eq!(stats.dropped.get(DropReason::BudgetFull), 1);
    assert_eq!(stats.spooled, accepted as u64);
}

#[test]
fn a_full_spool_makes_a_waiting_call_wait_for_room() {
    let dir = tempfile::tempdir().unwrap();
    let patience = Duration::from_millis(300);
    let (analytics, addr, _) = fill(dir.path(), Overflow::Wait(patience));
    // The refusal that ended `fill` came only after the call waited its patience.
    let started = Instant::now();
    let refused = analytics.enqueue(track("late", 1000));
    assert!(matches!(refused, Err(EnqueueError::SpoolFull { .. })));
    assert!(started.elapsed() >= patience);
    // With the server back, room is made as batches are delivered, and a waiting call goes in.
    let api = FakeApi::start_at(addr);
    let waiting = Analytics::clone(&analytics);
    let call = std::thread::spawn(move || {
        let analytics = waiting;
        let deadline = Instant::now() + GENEROUS;
        loop {
            match analytics.enqueue(track("waited", 1000)) {
                Err(EnqueueError::SpoolFull { .. }) if Instant::now() < deadline => continue,
                other => return other,
            }
        }
    });
    call.join().unwrap().unwrap();
    let report = analytics.flush(GENEROUS);
    assert!(report.completed, "{report}");
    assert_eq!(arrivals(&api).get("waited"), Some(&1));
}

/// The crashing process: accepts events into a spool and reports each on stdout, until it
/// is killed or aborts. Does nothing unless the parent test set `TRACKWAY_SPOOL_CHILD`.
#[test]
fn spool_child() {
    let Ok(mode) = std::env::var("TRACKWAY_SPOOL_CHILD") else {
        return;
    };
    let var = |name: &str| std::env::var(name).unwrap();
    let dir = var("TRACKWAY_SPOOL_DIR");
    let host = var("TRACKWAY_SPOOL_HOST");
    let prefix = var("TRACKWAY_SPOOL_PREFIX");
    let mut builder = spooled(&host, Path::new(&dir)).spool_max_bytes(2 * 1024 * 1024);
    if let Ok(nth) = std::env::var("TRACKWAY_SPOOL_ABORT_AT") {
        builder = builder.spool_abort_in_write(nth.parse().unwrap());
    }
    if mode == "in-flight" {
        // Batches go only when a flush asks: each group of ten is one request, however
        // slowly a loaded machine runs the calls.
        builder = builder.flush_interval(GENEROUS * 4);
    }
    let analytics = builder.build().unwrap();
    let mut out = std::io::stdout().lock();
    match mode.as_str() {
        // Events until killed (or aborted by the fault hook).
        "crash" => {
            for n in 0.. {
                analytics
                    .enqueue(track(&format!("{prefix}-{n}"), (n * 37) % 400))
                    .unwrap();
                writeln!(out, "accepted {n}").unwrap();
                out.flush().unwrap();
            }
        }
        // A first batch delivered, a second one in flight (the server hangs on it), then
        // killed.
        "in-flight" => {
            for n in 0..10 {
                analytics.enqueue(track(&format!("a-{n}"), 10)).unwrap();
            }
            let report = analytics.flush(GENEROUS);
            assert!(report.is_clean(), "{report}");
            for n in 0..10 {
                analytics.enqueue(track(&format!("b-{n}"), 10)).unwrap();
            }
            // Sends them (the server hangs on the request); the flush gives up at once.
            let report = analytics.flush(Duration::from_millis(50));
            assert!(!report.completed, "{report}");
            writeln!(out, "accepted all").unwrap();
            out.flush().unwrap();
            std::thread::sleep(GENEROUS * 4);
        }
        other => panic!("unknown mode {other}"),
    }
}

/// Starts this test binary as the crashing process.
fn start_child(mode: &str, dir: &Path, host: &str, prefix: &str, abort_at: Option<u64>) -> Child {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([
            "spool::spool_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("TRACKWAY_SPOOL_CHILD", mode)
        .env("TRACKWAY_SPOOL_DIR", dir)
        .env("TRACKWAY_SPOOL_HOST", host)
        .env("TRACKWAY_SPOOL_PREFIX", prefix)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(nth) = abort_at {
        command.env("TRACKWAY_SPOOL_ABORT_AT", nth.to_string());
    }
    command.spawn().unwrap()
}

#[test]
fn every_event_accepted_before_a_crash_is_delivered_once_by_the_next_process() {
    const ROUNDS: usize = 20;
    let mut torn_seen = 0;
    for round in 0..ROUNDS {
        let dir = tempfile::tempdir().unwrap();
        let addr = FakeApi::unused_addr();
        let host = format!("http://{addr}");
        let prefix = format!("r{round}");
        // Even rounds abort in the middle of a spool write (the fault hook); odd ones are
        // killed (SIGKILL) after a random number of accepted events, wherever they are.
        let abort_at = (round % 2 == 0).then(|| fastrand::u64(1..=3000));
        let kill_after = fastrand::usize(1..=3000);
        let mut child = start_child("crash", dir.path(), &host, &prefix, abort_at);
        let lines = BufReader::new(child.stdout.take().unwrap());
        let mut accepted = 0;
        for line in lines.lines() {
            let Ok(line) = line else { break };
            // The first line starts with libtest's "test spool::spool_child ... ".
            if let Some((_, n)) = line.split_once("accepted ") {
                assert_eq!(n.parse::<usize>().unwrap(), accepted);
                accepted += 1;
                if abort_at.is_none() && accepted == kill_after {
                    child.kill().unwrap();
                }
            }
        }
        let status = child.wait().unwrap();
        assert!(
            !status.success(),
            "round {round}: the child exited by itself"
        );
        if let Some(nth) = abort_at {
            assert_eq!(accepted as u64, nth - 1, "round {round}");
        }

        let api = FakeApi::start_at(addr);
        let analytics = spooled(&host, dir.path()).build().unwrap();
        let report = analytics.flush(GENEROUS);
        assert!(report.is_clean(), "round {round}: {report}");
        let stats = analytics.stats();
        let counts = arrivals(&api);
        for n in 0..accepted {
            let id = format!("{prefix}-{n}");
            assert_eq!(counts.get(&id), Some(&1), "round {round}: {id}");
        }
        // Killed after its line for event `accepted - 1`, the child may have accepted one more
        // before it died (its line unwritten): that one may arrive, once. Nothing else.
        let extra: Vec<&String> = counts
            .keys()
            .filter(|id| {
                let n: usize = id[prefix.len() + 1..].parse().unwrap();
                n >= accepted
            })
            .collect();
        assert!(
            extra.len() <= usize::from(abort_at.is_none()),
            "round {round}: {extra:?}"
        );
        assert!(
            counts.values().all(|c| *c == 1),
            "round {round}: sent twice"
        );
        assert_eq!(stats.recovered as usize, counts.len(), "round {round}");
        if abort_at.is_some() {
            assert_eq!(
                stats.truncated, 1,
                "round {round}: the torn record went unreported"
            );
            torn_seen += 1;
        }
        drop(analytics);
    }
    assert_eq!(torn_seen, ROUNDS / 2);
}

#[test]
fn a_batch_in_flight_at_a_crash_is_sent_again_once_with_the_same_ids() {
    let api = FakeApi::start();
    // The first request is answered; the next ones hang, as if the server died with them.
    let answered = std::sync::atomic::AtomicUsize::new(0);
    api.set_rule(move |_| {
        let n = answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        (n > 0).then_some(Reply::Hang(GENEROUS * 4))
    });
    let dir = tempfile::tempdir().unwrap();
    let mut child = start_child("in-flight", dir.path(), &api.url(), "", None);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert!(lines.any(|l| l.is_ok_and(|l| l.ends_with("accepted all"))));
    assert!(api.wait_for_requests(2, GENEROUS));
    child.kill().unwrap();
    child.wait().unwrap();
    let requests = api.requests();
    let first: Vec<String> = (0..10).map(|n| format!("a-{n}")).collect();
    let in_flight: Vec<String> = (0..10).map(|n| format!("b-{n}")).collect();
    assert_eq!(ids(&requests[0].messages()), first);
    assert_eq!(ids(&requests[1].messages()), in_flight);

    api.set_rule(|_| Some(Reply::Ok));
    let analytics = spooled(&api.url(), dir.path()).build().unwrap();
    assert_eq!(analytics.stats().recovered, 10);
    let report = analytics.flush(GENEROUS);
    assert!(report.is_clean(), "{report}");
    // Only the batch in flight, once, with the same messageIds; the acknowledged one not.
    let resent: Vec<String> = api.requests()[2..]
        .iter()
        .filter(|r| r.reply.is_success())
        .flat_map(|r| ids(&r.messages()))
        .collect();
    assert_eq!(resent, in_flight);
}

#[test]
fn a_spool_that_cannot_make_a_segment_refuses_calls_and_counts_them() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("spool");
    let addr = FakeApi::unused_addr();
    let analytics = spooled(&format!("http://{addr}"), &dir)
        .spool_max_bytes(16 * 1024 * 1024)
        .build()
        .unwrap();
    // The directory disappears (as a full disk would refuse a new file): segments already
    // made stay usable, and the first call that needs a new one is refused, saying why.
    // Moved away in one step rather than deleted file by file: the client's keeper makes
    // the spare segment in the background, and a deletion racing it fails with "directory
    // not empty".
    std::fs::rename(&dir, parent.path().join("gone")).unwrap();
    let mut accepted = 0;
    let error = loop {
        match analytics.enqueue(track(&format!("d-{accepted}"), 1000)) {
            Ok(()) => accepted += 1,
            Err(error) => break error,
        }
        assert!(accepted < 20_000, "never refused");
    };
    assert!(
        matches!(error, EnqueueError::SpoolUnavailable(_)),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .contains("could not create a spool segment"),
        "{error}"
    );
    assert_eq!(error.reason(), DropReason::SpoolUnavailable);
    let stats = analytics.stats();
    assert_eq!(stats.dropped.get(DropReason::SpoolUnavailable), 1);
    assert_eq!(stats.enqueued, accepted);
    // Every accepted event is still held: none was lost to the failure.
    assert_eq!(stats.spooled, accepted);
}
