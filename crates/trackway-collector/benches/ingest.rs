//! Ingest throughput and acknowledgement latency of the collector on its embedded store.
//!
//! Batches of 100 realistic events (gzipped, as `trackway` and analytics-python send them)
//! from 8 concurrent keep-alive connections; every 200 means the batch was fsynced. Phase 1
//! sends as fast as the server acknowledges; phase 2 sends at half that rate and reports the
//! latency distribution. Server and clients share this machine's cores.
//!
//! Run: `cargo bench -p trackway-collector --bench ingest [-- EVENTS]` (default and most
//! 200,000, in whole batches; each body is sent once, phase 2 included, so nothing is
//! deduplicated).

mod support;

use std::time::{Duration, Instant};

use support::{BATCH, CONNECTIONS, WRITE_KEY, bodies, percentiles, report, run};
use trackway_collector::{Config, Source};

fn main() {
    let asked: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(200_000);
    // Whole batches, each with its own messageIds: a body sent twice would be deduplicated.
    let requests = (asked / BATCH).clamp(2, support::MAX_REQUESTS * 2 / 3);
    let events = requests * BATCH;
    let temp = tempfile::tempdir().expect("temp dir");
    let config = Config::new(
        temp.path(),
        vec![Source::new("bench", vec![WRITE_KEY.into()])],
        support::ADMIN_TOKEN.into(),
    );
    let runtime = support::runtime();
    let url = format!("{}/v1/batch", support::start(&runtime, &config));

    // Phase 2 sends bodies of its own: repeats of phase 1's would only be deduplicated.
    let all = bodies(requests + requests / 2);
    let (bodies, later) = all.split_at(requests);
    let raw_bytes: usize = bodies.iter().map(|b| b.1).sum::<usize>() / bodies.len();
    report(
        "setup",
        &format!(
            "{events} events in {requests} requests of {BATCH}; {CONNECTIONS} connections; \
         {} KiB per request before gzip, {} KiB after",
            raw_bytes / 1024,
            bodies.iter().map(|b| b.0.len()).sum::<usize>() / bodies.len() / 1024
        ),
    );

    let baseline = raw_store(&runtime, bodies, requests);
    report(
        "baseline",
        &format!(
            "{baseline:.0} events/s: the same events appended straight to a second store, 8 concurrent writers, no HTTP"
        ),
    );

    let (elapsed, mut latencies) = run(&url, bodies, requests, None);
    let rate = events as f64 / elapsed.as_secs_f64();
    report(
        "full speed",
        &format!(
            "{:.0} events/s ({:.2?}, {:.2} of baseline); ack {}",
            rate,
            elapsed,
            rate / baseline,
            percentiles(&mut latencies)
        ),
    );

    let half = rate / 2.0;
    let (elapsed, mut latencies) = run(&url, later, requests / 2, Some(half / BATCH as f64));
    report(
        "half load",
        &format!(
            "{:.0} events/s offered, {:.0} achieved; ack {}",
            half,
            (requests / 2 * BATCH) as f64 / elapsed.as_secs_f64(),
            percentiles(&mut latencies)
        ),
    );
    let wal = temp.path().join(format!(
        "{}-wal",
        trackway_collector::storage::sqlite::DATABASE_FILE
    ));
    report(
        "log",
        &format!(
            "{} MiB of WAL at the end",
            std::fs::metadata(wal).map_or(0, |m| m.len()) >> 20
        ),
    );
}

/// The store alone: every request's events appended by 8 concurrent tasks, as the ingest path
/// would after parsing. Events/s.
fn raw_store(
    runtime: &tokio::runtime::Runtime,
    bodies: &[(Vec<u8>, usize)],
    requests: usize,
) -> f64 {
    use std::io::Read;
    use std::sync::Arc;
    use trackway_collector::storage::{NewEvent, Store, sqlite::SqliteStore};

    let temp = tempfile::tempdir().expect("temp dir");
    let store =
        Arc::new(SqliteStore::open(temp.path(), Duration::from_secs(86_400)).expect("store"));
    let source: Arc<str> = Arc::from("bench");
    let batches: Vec<Vec<NewEvent>> = (0..requests)
        .map(|n| {
            let mut raw = String::new();
            flate2::read::GzDecoder::new(&bodies[n % bodies.len()].0[..])
                .read_to_string(&mut raw)
                .expect("gunzip");
            let body: serde_json::Value = serde_json::from_str(&raw).expect("json");
            body["batch"]
                .as_array()
                .expect("batch")
                .iter()
                .map(|m| NewEvent {
                    source: Arc::clone(&source),
                    message_id: format!("{n}-{}", m["messageId"]),
                    kind: m["type"].as_str().unwrap_or_default().to_owned(),
                    user_id: m["userId"].as_str().map(str::to_owned),
                    anonymous_id: m["anonymousId"].as_str().map(str::to_owned),
                    label: m["event"].as_str().map(str::to_owned),
                    received_at: 0,
                    rejected: None,
                    body: m.to_string(),
                })
                .collect()
        })
        .collect();
    let started = Instant::now();
    runtime.block_on(async {
        let mut lanes: Vec<Vec<Vec<NewEvent>>> = (0..CONNECTIONS).map(|_| Vec::new()).collect();
        for (n, batch) in batches.into_iter().enumerate() {
            lanes[n % CONNECTIONS].push(batch);
        }
        let tasks: Vec<_> = lanes
            .into_iter()
            .map(|lane| {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    for batch in lane {
                        store.append(batch).await.expect("append");
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("task");
        }
    });
    (requests * BATCH) as f64 / started.elapsed().as_secs_f64()
}
