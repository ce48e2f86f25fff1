//! How long the embedded store takes to open once it holds many events: what a restart (after
//! a deploy, or a crash) waits before it serves again.
//!
//! Fills a store with EVENTS realistic events (4 sources, every type, some rejected), then
//! opens it 3 times and reports each open's wall time. The file stays in the page cache, so
//! these are warm figures; a cold start reads from disk whatever the open reads.
//!
//! Run: `cargo bench -p trackway-collector --bench store_open [-- EVENTS]` (default 1,000,000).

use std::sync::Arc;
use std::time::{Duration, Instant};

use trackway_collector::storage::sqlite::SqliteStore;
use trackway_collector::storage::{NewEvent, Store};
use trackway_samples as samples;

/// Events per append: one group commit each.
const CHUNK: usize = 2_000;
/// Distinct bodies, cycled.
const POOL: usize = 10_000;

fn main() {
    let events: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let temp = tempfile::tempdir().expect("temp dir");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let window = Duration::from_secs(86_400);

    let templates: Vec<&str> = samples::templates().collect();
    let mut rng = fastrand::Rng::with_seed(7);
    let pool: Vec<serde_json::Value> = (0..POOL)
        .map(|n| samples::fill(templates[n % templates.len()], &mut rng).expect("sample"))
        .collect();
    let sources: Vec<Arc<str>> = ["web", "ios", "jobs", "billing"]
        .into_iter()
        .map(Arc::from)
        .collect();
    let filling = Instant::now();
    {
        let store = SqliteStore::open(temp.path(), window).expect("store");
        runtime.block_on(async {
            for start in (0..events).step_by(CHUNK) {
                let chunk = (start..(start + CHUNK).min(events))
                    .map(|n| {
                        let message = &pool[n % POOL];
                        NewEvent {
                            source: Arc::clone(&sources[n % sources.len()]),
                            message_id: format!("open-{n}"),
                            kind: message["type"].as_str().unwrap_or("track").to_owned(),
                            user_id: message["userId"].as_str().map(str::to_owned),
                            anonymous_id: message["anonymousId"].as_str().map(str::to_owned),
                            label: message["event"].as_str().map(str::to_owned),
                            received_at: 1_800_000_000_000 + n as i64,
                            rejected: n
                                .is_multiple_of(50)
                                .then(|| "a sample rejection".to_owned()),
                            body: message.to_string(),
                        }
                    })
                    .collect();
                store.append(chunk).await.expect("append");
            }
        });
    }
    let bytes: u64 = std::fs::read_dir(temp.path())
        .expect("data dir")
        .filter_map(|f| f.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    report(&format!(
        "setup: {events} events, {} MiB on disk, filled in {:.1} s",
        bytes >> 20,
        filling.elapsed().as_secs_f64()
    ));
    // Let the previous store's writer thread finish and its files settle.
    std::thread::sleep(Duration::from_millis(500));
    for round in 1..=3 {
        let started = Instant::now();
        let store = SqliteStore::open(temp.path(), window).expect("store");
        let opened = started.elapsed();
        let counts = runtime.block_on(store.counts()).expect("counts");
        let counted: u64 = counts.iter().map(|c| c.count).sum();
        assert_eq!(counted, events as u64, "the counts cover every event");
        report(&format!(
            "open {round}: {:.1} ms",
            opened.as_secs_f64() * 1000.0
        ));
        drop(store);
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[expect(clippy::print_stdout, reason = "a benchmark reports on stdout")]
fn report(line: &str) {
    println!("{line}");
}
