//! Shared by the collector's benchmarks: a collector on port 0, realistic request bodies, and
//! a load generator of keep-alive connections.

use std::io::Write;
use std::time::{Duration, Instant};

use trackway_collector::{Collector, Config};
use trackway_samples as samples;

/// Concurrent connections of the load generator.
pub(crate) const CONNECTIONS: usize = 8;
/// Events per request.
pub(crate) const BATCH: usize = 100;
/// The benchmark source's write key.
pub(crate) const WRITE_KEY: &str = "bench-write-key";
/// The benchmark collectors' admin token.
pub(crate) const ADMIN_TOKEN: &str = "bench-admin-token-0123456789";

/// Serves `config` on a free port of `runtime`; returns the base URL.
pub(crate) fn start(runtime: &tokio::runtime::Runtime, config: &Config) -> String {
    let collector = Collector::open(config).expect("collector");
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    runtime.spawn(collector.serve(listener, std::future::pending()));
    url
}

/// A two-worker runtime, like the 2-core machines this runs on.
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Requests a benchmark sends at most (the ingest bench's two phases together): every one
/// has a body of its own, since a body sent twice would be deduplicated.
pub(crate) const MAX_REQUESTS: usize = 3000;

/// Gzipped request bodies of `BATCH` events of the samples' [`samples::Traffic`] (returning
/// users in sessions), each stamped as a client library stamps it (a random UUID messageId,
/// the time), with their raw size.
pub(crate) fn bodies(count: usize) -> Vec<(Vec<u8>, usize)> {
    let mut traffic = samples::Traffic::new(1);
    let mut rng = fastrand::Rng::with_seed(1);
    (0..count)
        .map(|_| {
            let batch: Vec<serde_json::Value> = (0..BATCH)
                .map(|_| {
                    let mut message = traffic.next_message();
                    message["messageId"] = uuid(&mut rng).into();
                    message["timestamp"] =
                        trackway_protocol::format_timestamp(std::time::SystemTime::now()).into();
                    message
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

/// A random (version 4) UUID, hyphenated, as client libraries make messageIds.
fn uuid(rng: &mut fastrand::Rng) -> String {
    let hex = format!("{:032x}", rng.u128(..));
    format!(
        "{}-{}-4{}-{:x}{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[13..16],
        8 + rng.u8(..4),
        &hex[17..20],
        &hex[20..]
    )
}

/// Sends exactly `requests` requests over `CONNECTIONS` connections (the first ones take one
/// more when they do not divide evenly; connection `c` goes to `urls[c % urls.len()]`), optionally paced to `requests_per_second` overall;
/// returns the wall time and every request's latency.
pub(crate) fn run(
    urls: &[String],
    bodies: &[(Vec<u8>, usize)],
    requests: usize,
    requests_per_second: Option<f64>,
) -> (Duration, Vec<Duration>) {
    let started = Instant::now();
    // Connection `c` sends requests `c`, `c + CONNECTIONS`, `c + 2 * CONNECTIONS`, ...
    let share = |c: usize| requests / CONNECTIONS + usize::from(c < requests % CONNECTIONS);
    let latencies: Vec<Duration> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..CONNECTIONS)
            .map(|c| {
                let url = &urls[c % urls.len()];
                scope.spawn(move || {
                    let agent: ureq::Agent =
                        ureq::Agent::config_builder().proxy(None).build().into();
                    let interval = requests_per_second
                        .map(|r| Duration::from_secs_f64(CONNECTIONS as f64 / r));
                    let mut latencies = Vec::with_capacity(share(c));
                    for n in 0..share(c) {
                        if let Some(interval) = interval {
                            let due = started
                                + interval.mul_f64(n as f64 + c as f64 / CONNECTIONS as f64);
                            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                                std::thread::sleep(wait);
                            }
                        }
                        let body = &bodies[(n * CONNECTIONS + c) % bodies.len()].0;
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

#[allow(dead_code, reason = "used by the ingest bench, not the delivery bench")]
pub(crate) fn percentiles(latencies: &mut [Duration]) -> String {
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
pub(crate) fn report(phase: &str, line: &str) {
    println!("{phase:>10}: {line}");
}
