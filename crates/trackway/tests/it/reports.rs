//! A `FlushReport` says why in its one line: the server's reason for a rejection, the last
//! error behind each drop, with the host it tried. No observer, no logging set-up.

use std::time::{Duration, Instant};

use serde_json::json;
use trackway::{Analytics, DropReason};
use trackway_testkit::{FakeApi, Reply};

use crate::support::{GENEROUS, client_for};

#[test]
fn a_wrong_write_key_reads_as_the_servers_reason() {
    let api = FakeApi::start();
    // What our collector answers to an unknown key.
    api.set_rule(|_| {
        Some(Reply::Json(
            401,
            json!({"success": false, "error": "unknown write key"}).to_string(),
        ))
    });
    let analytics = client_for(&api).build().unwrap();
    analytics.track("u1", "Signed Up", json!({})).unwrap();
    let report = analytics.shutdown(GENEROUS);
    assert_eq!(report.rejected, 1, "{report}");
    assert_eq!(report.last_rejection(), Some("HTTP 401: unknown write key"));
    let line = report.to_string();
    assert!(
        line.contains("1 rejected (HTTP 401: unknown write key)"),
        "{line}"
    );
}

#[test]
fn a_host_that_cannot_be_reached_is_named_in_the_drops() {
    // The report waits only briefly (the worker's settle grace, 100 ms) for the sender to
    // give up its batch; a sender stalled longer on a busy machine leaves the batch "pending"
    // in the report, with no error to name. That is scheduling, not a defect: settle it, and
    // try again. A client that never names the host fails every try.
    let mut reports = Vec::new();
    for _ in 0..3 {
        let down = FakeApi::unused_addr();
        let analytics = Analytics::builder("wk")
            .host(format!("http://{down}"))
            .backoff(Duration::from_millis(1), Duration::from_millis(20))
            .no_proxy()
            .build()
            .unwrap();
        for n in 0..3 {
            analytics
                .track("u1", format!("Event {n}"), json!({}))
                .unwrap();
        }
        // The client has run into the refused connection and is retrying.
        let patience = Instant::now() + GENEROUS;
        while analytics.stats().retried == 0 {
            assert!(Instant::now() < patience, "no retry was scheduled");
            std::thread::sleep(Duration::from_millis(5));
        }
        // A shutdown whose deadline passes while the client retries: the drops are `shutdown`,
        // and the report says what the requests ran into, and where.
        let report = analytics.shutdown(Duration::from_millis(500));
        assert_eq!(
            report.dropped.get(DropReason::Shutdown) + report.pending,
            3,
            "{report}"
        );
        if report.pending == 0 {
            let error = report.last_error(DropReason::Shutdown).unwrap_or_default();
            assert!(
                error.contains(&down.to_string()) && error.contains("connect"),
                "{report}"
            );
            let line = report.to_string();
            assert!(
                line.contains(&format!("dropped: shutdown=3 (last error: {error})")),
                "{line}"
            );
            return;
        }
        let patience = Instant::now() + GENEROUS;
        while analytics.stats().pending() > 0 {
            assert!(Instant::now() < patience, "the batch was never settled");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(analytics.stats().dropped.get(DropReason::Shutdown), 3);
        reports.push(report.to_string());
    }
    panic!("the batch was pending in every report: {reports:?}");
}

#[test]
fn a_clean_report_has_no_explanations() {
    let api = FakeApi::start();
    let analytics = client_for(&api).build().unwrap();
    analytics.track("u1", "Signed Up", json!({})).unwrap();
    let report = analytics.shutdown(GENEROUS);
    assert!(report.is_clean(), "{report}");
    assert_eq!(
        report.to_string(),
        "1 delivered, 0 rejected, dropped: none, 0 pending"
    );
}

#[test]
fn while_retrying_the_last_request_error_names_the_url_and_clears_on_an_answer() {
    let api = FakeApi::start();
    api.push_replies([Reply::Status(503), Reply::Status(503)]);
    // No jitter: each wait is the whole second, so the client spends two seconds between the
    // first 503 and the answer that clears the error: ample time to look, even when a busy
    // machine delays the first round trip (a jittered wait may be near zero).
    let analytics = client_for(&api)
        .backoff(Duration::from_secs(1), Duration::from_secs(1))
        .jitter(false)
        .build()
        .unwrap();
    assert_eq!(analytics.last_request_error(), None);
    analytics.track("u1", "Signed Up", json!({})).unwrap();
    let failed = analytics.flush(Duration::from_millis(200));
    assert!(!failed.completed, "{failed}");
    // While the client waits to retry the first 503, it says what happened, and where.
    assert!(api.wait_for_requests(1, GENEROUS));
    let patience = Instant::now() + GENEROUS;
    let error = loop {
        if let Some(error) = analytics.last_request_error() {
            break error;
        }
        assert!(Instant::now() < patience, "no request error after a 503");
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(
        error.starts_with(&format!("{}/v1/batch: HTTP 503", api.url())),
        "{error}"
    );
    let report = analytics.flush(GENEROUS);
    assert!(report.is_clean(), "{report}");
    assert_eq!(analytics.last_request_error(), None);
}
