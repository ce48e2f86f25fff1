//! A server may take a batch but store some of its messages as rejected, listing them in its
//! 200 answer (our collector does, for an invalid message): those are reported as rejected,
//! with the server's reason, through `stats()`, the `Observer` and the `FlushReport`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use trackway::{Observer, Outcome, Track};
use trackway_testkit::{FakeApi, Received, Reply};

use crate::support::{GENEROUS, client_for};

/// Every outcome, with its status and reason when rejected.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<HashMap<String, String>>>);

impl Observer for Seen {
    fn on_outcome(&self, message_id: &str, outcome: &Outcome<'_>) {
        let label = match outcome {
            Outcome::Delivered => "delivered".to_owned(),
            Outcome::Rejected { status, reason } => format!("rejected {status}: {reason}"),
            other => format!("{other:?}"),
        };
        self.0.lock().unwrap().insert(message_id.to_owned(), label);
    }
}

/// The collector's answer to `request`: every message whose event starts with "Bad" listed
/// as rejected, with a reason of `padding` extra bytes.
fn answer_rejecting_bad(request: &Received, padding: usize) -> Reply {
    let rejected: Vec<Value> = request
        .messages()
        .iter()
        .enumerate()
        .filter(|(_, m)| m["event"].as_str().is_some_and(|e| e.starts_with("Bad")))
        .map(|(index, m)| {
            json!({
                "index": index,
                "messageId": m["messageId"],
                "reason": format!("unknown message type \"bad\"{}", " ".repeat(padding)),
            })
        })
        .collect();
    let body = if rejected.is_empty() {
        json!({"success": true})
    } else {
        json!({"success": true, "rejected": rejected})
    };
    Reply::Json(200, body.to_string())
}

#[test]
fn messages_a_200_lists_as_rejected_are_reported_rejected_with_the_reason() {
    let api = FakeApi::start();
    api.set_rule(|request| Some(answer_rejecting_bad(request, 0)));
    let seen = Seen::default();
    let analytics = client_for(&api).observer(seen.clone()).build().unwrap();
    for event in ["Good 1", "Bad 1", "Good 2", "Bad 2", "Good 3"] {
        analytics
            .enqueue(Track::new(event).user_id("u").message_id(event))
            .unwrap();
    }
    let report = analytics.flush(GENEROUS);
    assert_eq!((report.delivered, report.rejected), (3, 2), "{report}");
    let stats = analytics.stats();
    assert_eq!((stats.delivered, stats.rejected), (3, 2), "{stats:?}");
    let seen = seen.0.lock().unwrap().clone();
    assert_eq!(seen["Good 1"], "delivered");
    assert_eq!(seen["Good 3"], "delivered");
    for bad in ["Bad 1", "Bad 2"] {
        assert!(
            seen[bad].starts_with("rejected 200: unknown message type"),
            "{bad}: {}",
            seen[bad]
        );
    }
}

#[test]
fn a_long_list_past_the_first_4_kb_is_read_whole() {
    let api = FakeApi::start();
    // 100 rejections of about 300 bytes each: a 30 KB answer.
    api.set_rule(|request| Some(answer_rejecting_bad(request, 250)));
    // No age limit: the 200 make one batch however slowly they are enqueued.
    let analytics = client_for(&api)
        .flush_at(200)
        .flush_interval(Duration::from_secs(3600))
        .build()
        .unwrap();
    for n in 0..100 {
        analytics.track("u", format!("Bad {n}"), json!({})).unwrap();
        analytics
            .track("u", format!("Good {n}"), json!({}))
            .unwrap();
    }
    let report = analytics.shutdown(GENEROUS);
    assert_eq!((report.delivered, report.rejected), (100, 100), "{report}");
    assert!(api.requests().len() <= 2, "sent as one or two batches");
}

#[test]
fn duplicates_are_counted_and_an_unreadable_list_counts_as_delivered() {
    let api = FakeApi::start();
    api.push_replies([
        Reply::Json(200, r#"{"success":true,"duplicates":1}"#.into()),
        Reply::Json(200, r#"{"success":true,"rejected":[{"ind"#.into()),
    ]);
    let analytics = client_for(&api).flush_at(1).build().unwrap();
    analytics.track("u", "One", json!({})).unwrap();
    assert_eq!(analytics.flush(GENEROUS).delivered, 1);
    assert_eq!(
        analytics.stats().duplicates,
        1,
        "the server's count of messages it already had"
    );
    analytics.track("u", "Two", json!({})).unwrap();
    let report = analytics.shutdown(GENEROUS);
    assert_eq!((report.delivered, report.rejected), (1, 0), "{report}");
}
