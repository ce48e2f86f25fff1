//! An idle client never wakes up.
//!
//! A binary of its own, apart from `tests/it`: it counts the wake-ups of every `trackway-*`
//! thread in the process, so no other test's client may run beside it.

#![cfg(target_os = "linux")]
#![expect(
    clippy::unwrap_used,
    reason = "a test fails loudly at the first surprise"
)]

use std::time::{Duration, Instant};

use serde_json::json;
use trackway_testkit::FakeApi;

/// The bytes of a thread's name that `/proc/*/comm` shows (`TASK_COMM_LEN` less the NUL).
const COMM_LEN: usize = 15;

/// Wake-ups so far of this process's threads named `name`: the sum of their voluntary and
/// involuntary context switches.
fn wakeups_of_threads(name: &str) -> u64 {
    // The kernel keeps 15 bytes of a thread's name: `trackway-encoder` is `trackway-encode`.
    let name = &name[..name.len().min(COMM_LEN)];
    let mut total = 0;
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let path = task.unwrap().path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if comm.trim() != name {
            continue;
        }
        let status = std::fs::read_to_string(path.join("status")).unwrap_or_default();
        total += status
            .lines()
            .filter(|l| l.contains("ctxt_switches"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum::<u64>();
    }
    total
}

#[test]
fn an_idle_client_sleeps() {
    let api = FakeApi::start();
    let analytics = trackway::Analytics::builder("idle-key")
        .host(api.url())
        .no_proxy()
        .flush_interval(Duration::from_millis(1))
        .build()
        .unwrap();
    analytics.track("u1", "Once", json!({})).unwrap();
    assert!(analytics.flush(Duration::from_secs(30)).is_clean());
    let threads = ["trackway-worker", "trackway-encoder", "trackway-sender"];
    for thread in threads {
        assert!(
            wakeups_of_threads(thread) > 0,
            "{thread} exists and has run"
        );
    }
    let wakeups = || -> u64 { threads.iter().map(|t| wakeups_of_threads(t)).sum() };
    // Let the threads finish the round that answered the flush (a reply, a loop back to
    // their channels) before counting: on a busy machine that round can be preempted and
    // take a while, so wait until the count holds still for 100 ms rather than a fixed time.
    // A ticking timer never holds still, and fails here.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut before = wakeups();
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let now = wakeups();
        if now == before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "background threads kept waking up for 30 s after the flush"
        );
        before = now;
    }
    // A timer ticking at the 1 ms flush interval would wake the worker hundreds of times
    // here; a parked worker never wakes.
    std::thread::sleep(Duration::from_millis(500));
    let after = wakeups();
    assert_eq!(before, after, "background threads woke up while idle");
}
