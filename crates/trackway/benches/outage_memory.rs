//! Memory during an outage: the server refuses every connection while two threads keep
//! calling `track`. The process must stay within the budget plus a small constant.
//!
//! Run: `cargo bench -p trackway --bench outage_memory`. Prints peak and final RSS beside the
//! budget; Linux only (reads /proc/self/status).

use std::net::TcpListener;
use std::time::{Duration, Instant};

use serde_json::json;
use trackway::{Analytics, DropReason};

/// Budget under test: the default.
const BUDGET: usize = trackway::DEFAULT_MAX_QUEUE_BYTES;
/// Calls per thread.
const CALLS: usize = 1_000_000;

fn rss_kib(field: &str) -> u64 {
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
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(9);
    let analytics = Analytics::builder("outage-write-key")
        .host(format!("http://127.0.0.1:{port}"))
        .max_queue_bytes(BUDGET)
        .no_proxy()
        .build()
        .expect("client");
    let before = rss_kib("VmRSS:");
    let started = Instant::now();
    std::thread::scope(|scope| {
        for t in 0..2 {
            let analytics = analytics.clone();
            scope.spawn(move || {
                for n in 0..CALLS {
                    let _ = analytics.track(
                        format!("user-{t}-{n}"),
                        "Outage Event",
                        json!({"n": n, "plan": "trial", "price": 9.99}),
                    );
                }
            });
        }
    });
    let elapsed = started.elapsed();
    let stats = analytics.stats();
    let peak = rss_kib("VmHWM:");
    println!("calls: {} in {elapsed:.2?}", 2 * CALLS);
    println!(
        "accepted: {}, refused budget_full: {}, bytes held: {} (budget {BUDGET})",
        stats.enqueued,
        stats.dropped.get(DropReason::BudgetFull),
        stats.bytes_queued
    );
    println!(
        "rss before: {} KiB, peak: {} KiB, growth: {} KiB (budget {} KiB)",
        before,
        peak,
        peak.saturating_sub(before),
        BUDGET / 1024
    );
    let report = analytics.shutdown(Duration::from_secs(1));
    println!("shutdown(1s): {report}");
}
