//! Ingest throughput and acknowledgement latency of the collector on its embedded store.
//!
//! Batches of 100 realistic events (gzipped, as `trackway` and analytics-python send them)
//! from 8 concurrent keep-alive connections; every 200 means the batch was fsynced. Phase 1
//! sends as fast as the server acknowledges; phase 2 sends at half that rate and reports the
//! latency distribution. Server and clients share this machine's cores.
//!
//! Run: `cargo bench -p trackway-collector --bench ingest [-- EVENTS]` (default 200,000).

use std::io::Write;
use std::time::{Duration, Instant};

use trackway_collector::{Collector, Config, Source};
use trackway_testkit::samples;

const CONNECTIONS: usize = 8;
const BATCH: usize = 100;
const WRITE_KEY: &str = "bench-write-key";

fn main() {
    let events: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(200_000);
    let requests = events / BATCH;
    let temp = tempfile::tempdir().expect("temp dir");
    let config = Config::new(
        temp.path(),
        vec![Source::new("bench", vec![WRITE_KEY.into()])],
        "bench-admin-token-0123456789".into(),
    );
    let collector = Collector::open(&config).expect("collector");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let url = format!("http://{}/v1/batch", listener.local_addr().expect("addr"));
    runtime.spawn(collector.serve(listener, std::future::pending()));

    let bodies = bodies(requests.min(2000));
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

    let baseline = raw_store(&runtime, &bodies, requests);
    report(
        "baseline",
        &format!(
            "{baseline:.0} events/s: the same events appended straight to a second store, 8 concurrent writers, no HTTP"
        ),
    );

    let (elapsed, mut latencies) = run(&url, &bodies, requests, None);
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
    let (elapsed, mut latencies) = run(&url, &bodies, requests / 2, Some(half / BATCH as f64));
    report(
        "half load",
        &format!(
            "{:.0} events/s offered, {:.0} achieved; ack {}",
            half,
            (requests / 2 * BATCH) as f64 / elapsed.as_secs_f64(),
            percentiles(&mut latencies)
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

/// Gzipped request bodies of `BATCH` freshly filled sample events, with their raw size.
fn bodies(count: usize) -> Vec<(Vec<u8>, usize)> {
    let templates: Vec<&str> = samples::templates().collect();
    let mut rng = fastrand::Rng::with_seed(1);
    (0..count)
        .map(|n| {
            let batch: Vec<serde_json::Value> = (0..BATCH)
                .map(|i| {
                    samples::fill(templates[(n * BATCH + i) % templates.len()], &mut rng)
                        .expect("sample")
                })
                .collect();
            let raw = serde_json::json!({"batch": batch, "sentAt": "2026-11-26T12:00:00.000Z"})
                .to_string();
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(raw.as_bytes()).expect("gzip");
            (gz.finish().expect("gzip"), raw.len())
        })
        .collect()
}

/// Sends `requests` requests over `CONNECTIONS` connections, optionally paced to
/// `requests_per_second` overall; returns the wall time and every request's latency.
fn run(
    url: &str,
    bodies: &[(Vec<u8>, usize)],
    requests: usize,
    requests_per_second: Option<f64>,
) -> (Duration, Vec<Duration>) {
    let started = Instant::now();
    let per_connection = requests / CONNECTIONS;
    let latencies: Vec<Duration> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..CONNECTIONS)
            .map(|c| {
                scope.spawn(move || {
                    let agent: ureq::Agent =
                        ureq::Agent::config_builder().proxy(None).build().into();
                    let interval = requests_per_second
                        .map(|r| Duration::from_secs_f64(CONNECTIONS as f64 / r));
                    let mut latencies = Vec::with_capacity(per_connection);
                    for n in 0..per_connection {
                        if let Some(interval) = interval {
                            let due = started
                                + interval.mul_f64(n as f64 + c as f64 / CONNECTIONS as f64);
                            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                                std::thread::sleep(wait);
                            }
                        }
                        let body = &bodies[(c * per_connection + n) % bodies.len()].0;
                        let sent = Instant::now();
                        let response = agent
                            .post(url)
                            .header("authorization", "Basic YmVuY2gtd3JpdGUta2V5Og==")
                            .header("content-type", "application/json")
                            .header("content-encoding", "gzip")
                            .send(&body[..])
                            .expect("request");
                        assert_eq!(response.status().as_u16(), 200);
                        latencies.push(sent.elapsed());
                    }
                    latencies
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("worker"))
            .collect()
    });
    (started.elapsed(), latencies)
}

fn percentiles(latencies: &mut [Duration]) -> String {
    latencies.sort_unstable();
    let at = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    format!(
        "p50 {:.2?}, p99 {:.2?}, max {:.2?}",
        at(0.50),
        at(0.99),
        at(1.0)
    )
}

#[expect(clippy::print_stdout, reason = "a benchmark reports on stdout")]
fn report(phase: &str, line: &str) {
    println!("{phase:>10}: {line}");
}
