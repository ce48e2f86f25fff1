//! Delivery throughput: how fast stored events reach a file, a webhook and a forward
//! destination while ingest runs at full speed, compared with ingest itself in the same run.
//!
//! Forward runs twice: to a second collector in this process (which shares the cores and does
//! the same ingest work again) and to a null upstream that only acknowledges.
//!
//! For each destination kind: a fresh collector, 8 connections posting batches of 100
//! realistic events as fast as they are acknowledged, and a poll of `/api/destinations` until
//! every event is delivered. "Keeps up" means delivery finishes about when ingest does.
//!
//! Run: `cargo bench -p trackway-collector --bench delivery [-- EVENTS]` (default 100,000;
//! rounded down to whole batches, at most 300,000, so that every body is sent once).

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::{ADMIN_TOKEN, BATCH, WRITE_KEY, bodies, report, run};
use trackway_collector::delivery::kind::{DestinationConfig, Kind};
use trackway_collector::{Config, Source};
use trackway_testkit::FakeApi;

fn main() {
    let asked: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(100_000);
    // Whole batches, each with its own messageIds: a body sent twice would be deduplicated.
    let requests = (asked / BATCH).clamp(1, support::MAX_REQUESTS);
    let events = requests * BATCH;
    let runtime = support::runtime();
    let bodies = bodies(requests);
    let temp = tempfile::tempdir().expect("temp dir");

    let receiver = FakeApi::start();
    // An upstream that acknowledges without storing: the forward destination's own rate.
    let null_upstream = FakeApi::start();
    let upstream_config = Config::new(
        temp.path().join("upstream"),
        vec![Source::new("upstream", vec!["upstream-key".into()])],
        ADMIN_TOKEN.into(),
    );
    let upstream = support::start(&runtime, &upstream_config);

    let kinds = [
        (
            "file",
            Kind::File {
                dir: temp.path().join("files"),
                max_bytes: 64 * 1024 * 1024,
            },
        ),
        (
            "webhook",
            Kind::Webhook {
                url: receiver.url(),
                headers: Default::default(),
                secret: Some("bench-secret".into()),
                batch_size: 100,
                timeout: None,
            },
        ),
        (
            "forward",
            Kind::Forward {
                host: upstream.clone(),
                write_key: "upstream-key".into(),
            },
        ),
        (
            "forward, concurrency 2",
            Kind::Forward {
                host: upstream.clone(),
                write_key: "upstream-key".into(),
            },
        ),
        (
            "forward to a null upstream",
            Kind::Forward {
                host: null_upstream.url(),
                write_key: "upstream-key".into(),
            },
        ),
    ];
    for (label, kind) in kinds {
        let mut source = Source::new("bench", vec![WRITE_KEY.into()]);
        source.destinations = vec![DestinationConfig {
            name: "Dest".into(),
            kind,
            retry_window: None,
            backoff_base: None,
            backoff_cap: None,
            concurrency: label.contains("concurrency 2").then_some(2),
        }];
        let config = Config::new(temp.path().join(label), vec![source], ADMIN_TOKEN.into());
        let url = support::start(&runtime, &config);
        let started = Instant::now();
        let (ingest, _) = run(&[format!("{url}/v1/batch")], &bodies, requests, None);
        let lag_after_ingest = status(&url)["lag"].as_u64().unwrap_or(0);
        while status(&url)["delivered"].as_u64().unwrap_or(0) < events as u64 {
            std::thread::sleep(Duration::from_millis(20));
        }
        let delivered = started.elapsed();
        report(
            label,
            &format!(
                "ingest {:.0} events/s ({:.2?}); all delivered after {:.2?}: {:.0} events/s, {:.2} of ingest; lag when ingest ended: {lag_after_ingest}",
                events as f64 / ingest.as_secs_f64(),
                ingest,
                delivered,
                events as f64 / delivered.as_secs_f64(),
                ingest.as_secs_f64() / delivered.as_secs_f64(),
            ),
        );
    }
}

/// The one destination's entry of `/api/destinations`.
fn status(url: &str) -> Value {
    let agent: ureq::Agent = ureq::Agent::config_builder().proxy(None).build().into();
    let text = agent
        .get(format!("{url}/api/destinations"))
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .call()
        .expect("status")
        .into_body()
        .read_to_string()
        .expect("status body");
    let body: Value = serde_json::from_str(&text).expect("status json");
    body["destinations"][0].clone()
}
