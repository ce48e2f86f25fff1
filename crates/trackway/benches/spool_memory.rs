//! Memory with a full spool: the server refuses every connection while two threads keep
//! calling `track` into a spool of the default size (256 MiB) until it is full and beyond.
//! Memory must stay bounded by the batches in flight and the segment being written, whatever
//! the spool holds on disk.
//!
//! Run: `cargo bench -p trackway --bench spool_memory`. Prints peak and final RSS (and how
//! much of it is mapped file pages) beside the spool's size; Linux only (reads
//! /proc/self/status). Writes about 260 MiB under the build's temporary directory, and
//! deletes it.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use serde_json::json;
use trackway::{Analytics, DropReason};

/// Spool size under test: the default.
const SPOOL_BYTES: u64 = trackway::DEFAULT_SPOOL_MAX_BYTES;
/// Calls per thread: enough to fill the spool with these events (about 250 bytes each).
const CALLS: usize = 700_000;

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[expect(clippy::print_stdout, reason = "a benchmark reports on stdout")]
fn main() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("spool-memory-bench");
    let _ = std::fs::remove_dir_all(&dir);
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(9);
    let analytics = Analytics::builder("outage-write-key")
        .host(format!("http://127.0.0.1:{port}"))
        .spool_dir(&dir)
        .expect("spool directory")
        .spool_max_bytes(SPOOL_BYTES)
        .no_proxy()
        .build()
        .expect("client");
    let before = status_kib("VmRSS:");
    let started = Instant::now();
    let mut peak_file = 0;
    std::thread::scope(|scope| {
        let callers: Vec<_> = (0..2)
            .map(|t| {
                let analytics = analytics.clone();
                scope.spawn(move || {
                    for n in 0..CALLS {
                        let _ = analytics.track(
                            format!("user-{t}-{n}"),
                            "Outage Event",
                            json!({"n": n, "plan": "trial", "price": 9.99}),
                        );
                    }
                })
            })
            .collect();
        while !callers.iter().all(|c| c.is_finished()) {
            peak_file = peak_file.max(status_kib("RssFile:"));
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    let elapsed = started.elapsed();
    let stats = analytics.stats();
    let peak = status_kib("VmHWM:");
    println!("calls: {} in {elapsed:.2?}", 2 * CALLS);
    println!(
        "accepted: {}, refused when full: {}, spooled: {}, bytes held: {} (spool {SPOOL_BYTES})",
        stats.enqueued,
        stats.dropped.get(DropReason::BudgetFull),
        stats.spooled,
        stats.bytes_queued
    );
    println!(
        "rss before: {} KiB, peak: {} KiB, growth: {} KiB (spool {} KiB); mapped file pages \
         peak {} KiB, at the end {} KiB",
        before,
        peak,
        peak.saturating_sub(before),
        SPOOL_BYTES / 1024,
        peak_file,
        status_kib("RssFile:"),
    );
    let report = analytics.shutdown(Duration::from_secs(1));
    println!("shutdown(1s): {report}");
    drop(analytics);
    std::thread::sleep(Duration::from_millis(200));
    let _ = std::fs::remove_dir_all(&dir);
}
