//! Logs go through `tracing`, and never contain the write key.

use std::io::Write;
use std::sync::{Arc, Mutex};

use serde_json::json;
use trackway_testkit::{FakeApi, Reply};

use crate::support::{GENEROUS, WRITE_KEY, client_for};

/// Collects everything logged, from every thread.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn logs_report_failures_without_the_write_key() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    // Global, because the client logs from its own threads.
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let api = FakeApi::start();
    api.push_replies([Reply::Status(500), Reply::Status(401)]);
    let analytics = client_for(&api).build().unwrap();
    analytics.track("u1", "Logged", json!({})).unwrap();
    let _ = analytics.track("u1", "Huge", json!({"x": "x".repeat(40_000)}));
    let report = analytics.shutdown(GENEROUS);
    assert_eq!(report.rejected, 1, "{report}");

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("will retry"), "the retry is logged: {logs}");
    assert!(logs.contains("rejected"), "the rejection is logged: {logs}");
    assert!(
        logs.contains("test…"),
        "the masked key is logged at start-up: {logs}"
    );
    assert!(
        !logs.contains(WRITE_KEY),
        "the write key leaked into the logs"
    );
    assert!(!format!("{:?}", client_for(&api)).contains(WRITE_KEY));
}

#[test]
fn requests_never_show_the_write_key_in_debug_output() {
    let headers = [
        ("authorization", format!("Basic {WRITE_KEY}")),
        ("content-type", "application/json".to_owned()),
    ];
    let body = format!("{{\"writeKey\":\"{WRITE_KEY}\"}}");
    let request = trackway::transport::Request {
        url: "http://x/v1/batch",
        headers: &headers,
        body: body.as_bytes(),
    };
    let shown = format!("{request:?}");
    assert!(!shown.contains(WRITE_KEY), "{shown}");
    assert!(
        shown.contains("application/json") && shown.contains("<redacted>"),
        "{shown}"
    );
    assert_eq!(trackway::mask_write_key("short"), "… (5 chars)");
}
