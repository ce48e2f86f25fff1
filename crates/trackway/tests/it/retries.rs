//! Transient failures are retried until delivered; final ones are reported, not retried.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use trackway::{DropReason, Track};
use trackway_testkit::{FakeApi, Received, Reply, gaps};

use crate::support::{GENEROUS, Outcomes, client_for, ids};

/// Sends five messages through two failed attempts answered with `failure`, then success, and
/// checks every message arrives once, with the retry headers and fresh `sentAt`s. Returns the
/// three requests, for the callers that check when they came.
fn survives(failure: Reply, request_timeout: Duration) -> Vec<Received> {
    survives_both(failure.clone(), failure, request_timeout)
}

fn survives_both(failure: Reply, second: Reply, request_timeout: Duration) -> Vec<Received> {
    let api = FakeApi::start();
    api.push_replies([failure.clone(), second]);
    // Waits of at least 5 ms (no jitter), so every attempt's sentAt is a different millisecond.
    // No age limit: the five tracks make one batch however slowly they run.
    let analytics = client_for(&api)
        .request_timeout(request_timeout)
        .flush_interval(Duration::from_secs(3600))
        .jitter(false)
        .backoff(Duration::from_millis(5), Duration::from_millis(20))
        .build()
        .unwrap();
    for n in 0..5 {
        analytics.track("u1", "Retried", json!({"n": n})).unwrap();
    }
    let report = analytics.flush(GENEROUS);
    assert!(report.is_clean(), "{failure:?}: {report}");
    assert_eq!(report.delivered, 5);

    let requests = api.requests();
    assert_eq!(
        requests.len(),
        3,
        "{failure:?}: two failures and one success"
    );
    let attempts: Vec<Vec<String>> = requests.iter().map(|r| ids(&r.messages())).collect();
    assert!(
        attempts.iter().all(|a| *a == attempts[0]),
        "same messageIds on every attempt"
    );
    let delivered = ids(&api.accepted_messages());
    assert_eq!(delivered, attempts[0]);
    assert_eq!(
        delivered.iter().collect::<HashSet<_>>().len(),
        5,
        "each accepted once"
    );
    let retry_counts: Vec<Option<&str>> =
        requests.iter().map(|r| r.header("x-retry-count")).collect();
    assert_eq!(retry_counts, [None, Some("1"), Some("2")]);
    let sent_at: HashSet<String> = requests.iter().map(sent_at).collect();
    assert_eq!(
        sent_at.len(),
        3,
        "sentAt is stamped per attempt: {sent_at:?}"
    );
    assert_eq!(analytics.stats().retried, 2);
    requests
}

fn sent_at(request: &Received) -> String {
    request
        .json
        .as_ref()
        .map(|b| b["sentAt"].to_string())
        .unwrap_or_default()
}

#[test]
fn server_errors_are_retried() {
    for status in [500, 502, 503, 504] {
        survives(Reply::Status(status), Duration::from_secs(5));
    }
}

#[test]
fn request_timeout_408_and_460_are_retried() {
    survives(Reply::Status(408), Duration::from_secs(5));
    survives(Reply::Status(460), Duration::from_secs(5));
}

#[test]
fn rate_limits_with_retry_after_seconds_are_obeyed() {
    let requests = survives(Reply::RetryAfter(429, "1".into()), Duration::from_secs(5));
    // Each retry came at least the second it was told to wait after the refusal.
    for gap in gaps(&requests) {
        assert!(gap >= Duration::from_secs(1), "retried after only {gap:?}");
    }
}

#[test]
fn rate_limits_with_retry_after_date_are_obeyed() {
    // Dates have whole-second resolution: the second one lies a second past the first, so the
    // attempts are apart in time and their sentAt differ.
    let at = |s| httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(s));
    let (first, second) = (at(1), at(2));
    let requests = survives_both(
        Reply::RetryAfter(429, first.clone()),
        Reply::RetryAfter(429, second.clone()),
        Duration::from_secs(5),
    );
    // Each retry came no earlier than the date it was given (whole seconds, as written).
    for (request, date) in requests[1..].iter().zip([first, second]) {
        let due = httpdate::parse_http_date(&date).unwrap();
        assert!(
            request.arrived_at >= due,
            "retried {:?} before the Retry-After date {date}",
            due.duration_since(request.arrived_at).unwrap_or_default()
        );
    }
}

#[test]
fn a_server_that_hangs_past_the_timeout_is_retried() {
    // The server hangs twice as long as the flush waits and thirty times the request timeout:
    // only the timeout can get the three attempts through in time. The timeout also bounds
    // the successful third request, so it is long enough for a loaded machine to answer in.
    let timeout = Duration::from_secs(2);
    let requests = survives(Reply::Hang(HANG), timeout);
    for gap in gaps(&requests) {
        // The timeout runs from before the body was sent, so the gap between arrivals can be
        // a little under it.
        assert!(
            gap >= timeout / 2,
            "gave up on a hung request after {gap:?}"
        );
        assert!(gap < HANG / 4, "waited {gap:?} for a hung request");
    }
}

/// How long a hung server holds a request: far past any timeout the tests set.
const HANG: Duration = Duration::from_secs(60);

#[test]
fn a_connection_closed_mid_response_is_retried() {
    survives(Reply::CloseMidResponse, Duration::from_secs(5));
}

#[test]
fn retry_after_does_not_spend_the_retry_budget() {
    // A second is past the schedule's first wait (1 ms): the server's own wait.
    let api = FakeApi::start();
    api.push_replies([
        Reply::RetryAfter(429, "1".into()),
        Reply::RetryAfter(503, "1".into()),
    ]);
    let analytics = client_for(&api).max_retries(0).build().unwrap();
    analytics.track("u1", "Patient", json!({})).unwrap();
    let report = analytics.flush(GENEROUS);
    assert!(report.is_clean(), "{report}");
    assert_eq!(api.requests().len(), 3);
}

#[test]
fn retry_after_zero_spends_the_retry_budget_like_a_plain_failure() {
    // Shorter than the schedule's wait: raised to it, and a retry like any other, so a server
    // answering `Retry-After: 0` forever cannot keep the client in a loop.
    let api = FakeApi::start();
    api.set_rule(|_| Some(Reply::RetryAfter(503, "0".into())));
    let analytics = client_for(&api).max_retries(2).build().unwrap();
    analytics.track("u1", "Impatient", json!({})).unwrap();
    let report = analytics.flush(GENEROUS);
    assert!(!report.is_clean(), "{report}");
    assert_eq!(api.requests().len(), 3, "the first attempt and two retries");
    assert_eq!(
        analytics.stats().dropped.get(DropReason::RetriesExhausted),
        1
    );
}

#[test]
fn connection_refused_until_the_server_comes_up() {
    let down = FakeApi::unused_addr();
    let analytics = trackway::Analytics::builder(crate::support::WRITE_KEY)
        .host(format!("http://{down}"))
        .backoff(Duration::from_millis(5), Duration::from_millis(50))
        .max_retries(1000)
        .no_proxy()
        .build()
        .unwrap();
    for n in 0..3 {
        analytics.track("u1", "Early", json!({"n": n})).unwrap();
    }
    let _ = analytics.flush(Duration::from_millis(1));
    let mut waited = 0;
    while analytics.stats().retried < 3 {
        assert!(waited < 2000, "the client should keep retrying");
        std::thread::sleep(Duration::from_millis(5));
        waited += 1;
    }
    let api = FakeApi::start_at(down);
    let report = analytics.flush(GENEROUS);
    assert!(report.completed, "{report}");
    assert_eq!(analytics.stats().delivered, 3);
    assert_eq!(api.accepted_messages().len(), 3);
}

#[test]
fn a_400_is_split_until_only_the_bad_message_is_rejected() {
    let api = FakeApi::start();
    api.set_rule(|request| {
        let poisoned = request
            .messages()
            .iter()
            .any(|m| m["properties"]["poison"] == Value::Bool(true));
        poisoned.then_some(Reply::Status(400))
    });
    let outcomes = Outcomes::default();
    let analytics = client_for(&api).observer(outcomes.clone()).build().unwrap();
    for n in 0..10 {
        analytics
            .enqueue(
                Track::new("Mixed")
                    .user_id("u")
                    .message_id(format!("m{n}"))
                    .properties(json!({"poison": n == 6})),
            )
            .unwrap();
    }
    let report = analytics.flush(GENEROUS);
    assert!(report.completed);
    assert_eq!((report.delivered, report.rejected), (9, 1), "{report}");
    let delivered = ids(&api.accepted_messages());
    let expected: Vec<String> = (0..10)
        .filter(|n| *n != 6)
        .map(|n| format!("m{n}"))
        .collect();
    assert_eq!(delivered, expected, "the valid ones, in order, once each");
    assert_eq!(outcomes.get("m6").as_deref(), Some("rejected 400"));
    assert_eq!(outcomes.get("m5").as_deref(), Some("delivered"));
    assert_eq!(outcomes.len(), 10);
    assert_eq!(analytics.stats().retried, 0, "a 400 is never retried as is");
}

#[test]
fn a_401_is_final_reported_and_not_retried() {
    let api = FakeApi::start();
    api.set_rule(|_| Some(Reply::Status(401)));
    let outcomes = Outcomes::default();
    let analytics = client_for(&api).observer(outcomes.clone()).build().unwrap();
    for _ in 0..4 {
        analytics.track("u1", "Unauthorised", json!({})).unwrap();
    }
    let report = analytics.flush(GENEROUS);
    assert_eq!(report.rejected, 4, "{report}");
    assert_eq!(api.requests().len(), 1);
    let stats = analytics.stats();
    assert_eq!((stats.retried, stats.rejected, stats.delivered), (0, 4, 0));
    assert_eq!(outcomes.len(), 4);
}

#[test]
fn retries_run_out_and_the_drop_is_counted() {
    let api = FakeApi::start();
    api.set_rule(|_| Some(Reply::Status(500)));
    let outcomes = Outcomes::default();
    let analytics = client_for(&api)
        .max_retries(2)
        .observer(outcomes.clone())
        .build()
        .unwrap();
    analytics.track("u1", "Doomed", json!({})).unwrap();
    let report = analytics.flush(GENEROUS);
    assert!(report.completed);
    assert_eq!(
        report.dropped.get(DropReason::RetriesExhausted),
        1,
        "{report}"
    );
    assert_eq!(api.requests().len(), 3, "one attempt and two retries");
    assert_eq!(analytics.stats().retried, 2);
    assert_eq!(outcomes.len(), 1);
}

#[test]
fn the_retry_window_caps_total_time() {
    let api = FakeApi::start();
    api.set_rule(|_| Some(Reply::RetryAfter(503, "1".into())));
    let analytics = client_for(&api)
        .max_retry_duration(Duration::from_millis(200))
        .build()
        .unwrap();
    analytics.track("u1", "Late", json!({})).unwrap();
    let report = analytics.flush(GENEROUS);
    assert_eq!(
        report.dropped.get(DropReason::RetryWindowExceeded),
        1,
        "{report}"
    );
    assert_eq!(api.requests().len(), 1);
}

/// The encoder writes the next batch's body while one is on the wire. When that request is
/// slow, the waiting body is written again, so its `sentAt` is the time it was really sent.
#[test]
fn a_body_written_ahead_of_a_slow_request_gets_a_fresh_sent_at() {
    let api = FakeApi::start();
    api.push_replies([Reply::Delay(Duration::from_millis(1000))]);
    // No age limit: batches are cut by count alone, however slowly the tracks run.
    let analytics = client_for(&api)
        .flush_at(2)
        .flush_interval(Duration::from_secs(3600))
        .build()
        .unwrap();
    for n in 0..4 {
        analytics.track("u1", "Ordered", json!({"n": n})).unwrap();
    }
    assert!(analytics.flush(GENEROUS).is_clean());
    let requests = api.requests();
    assert_eq!(requests.len(), 2);
    let numbers: Vec<Vec<Value>> = requests
        .iter()
        .map(|r| {
            r.messages()
                .iter()
                .map(|m| m["properties"]["n"].clone())
                .collect()
        })
        .collect();
    assert_eq!(
        numbers,
        [[json!(0), json!(1)], [json!(2), json!(3)]],
        "in order"
    );
    let [first, second] = [&requests[0], &requests[1]].map(|r| millis_of_day(&sent_at(r)));
    // The server held the first answer for 1000 ms. The first body may have been written up
    // to 250 ms (the staleness limit) before it went out; a second body written then and
    // never again would be stamped within milliseconds of the first.
    let gap = (second - first).rem_euclid(86_400_000);
    assert!(gap >= 750, "second sentAt only {gap} ms after the first");
}

/// Milliseconds since midnight of a quoted `sentAt` like `"2026-11-26T14:50:01.123Z"`.
fn millis_of_day(sent_at: &str) -> i64 {
    let time = &sent_at[12..24];
    let part = |range: std::ops::Range<usize>| time[range].parse::<i64>().unwrap();
    ((part(0..2) * 60 + part(3..5)) * 60 + part(6..8)) * 1000 + part(9..12)
}
