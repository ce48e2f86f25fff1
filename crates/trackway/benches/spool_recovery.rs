//! How fast a client delivers what an earlier process left in its spool: 300,000 events
//! accepted while the server was down, then a new client on the same directory delivering
//! them to a transport that acknowledges at once.
//!
//! Run: `cargo bench -p trackway --bench spool_recovery`. Writes about 80 MiB under the
//! build's temporary directory, and deletes it.

use std::time::{Duration, Instant};

use serde_json::json;
use trackway::transport::{Request, Response, Transport, TransportError};
use trackway::{Analytics, BuildError, SpoolError};

const EVENTS: u64 = 300_000;

/// Acknowledges every request without reading it.
struct NullSink;

impl Transport for NullSink {
    fn send(&self, _: &Request<'_>) -> Result<Response, TransportError> {
        Ok(Response::new(200, ""))
    }
}

/// Refuses every request, as a server that is down.
struct Down;

impl Transport for Down {
    fn send(&self, _: &Request<'_>) -> Result<Response, TransportError> {
        Ok(Response::new(503, ""))
    }
}

#[expect(clippy::print_stdout, reason = "a benchmark reports on stdout")]
fn main() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("spool-recovery-bench");
    let _ = std::fs::remove_dir_all(&dir);
    let builder = || {
        Analytics::builder("recovery-write-key")
            .spool_dir(&dir)
            .expect("spool directory")
            .drop_timeout(Duration::ZERO)
    };
    let first = builder().transport(Down).build().expect("client");
    for n in 0..EVENTS {
        first
            .track(
                format!("user-{}", n % 1000),
                "Recovered Event",
                json!({"n": n, "plan": "trial", "price": 9.99}),
            )
            .expect("accepted");
    }
    let _ = first.shutdown(Duration::ZERO);
    drop(first);
    let started = Instant::now();
    let second = loop {
        match builder().transport(NullSink).build() {
            Err(BuildError::Spool(SpoolError::Locked { .. })) => {
                std::thread::sleep(Duration::from_millis(1));
            }
            other => break other.expect("client"),
        }
    };
    let opened = started.elapsed();
    let report = second.flush(Duration::from_secs(120));
    let elapsed = started.elapsed();
    let stats = second.stats();
    println!(
        "recovered {} events, delivered {} in {elapsed:.2?} (open {opened:.2?}): {:.0} events/s; {report}",
        stats.recovered,
        stats.delivered,
        stats.delivered as f64 / elapsed.as_secs_f64()
    );
    drop(second);
    std::thread::sleep(Duration::from_millis(200));
    let _ = std::fs::remove_dir_all(&dir);
}
