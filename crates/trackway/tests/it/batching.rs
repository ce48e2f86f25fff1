//! Batches by count, bytes and age, in order.

use std::time::Duration;

use serde_json::json;
use trackway_testkit::FakeApi;

use crate::support::{GENEROUS, client_for};

#[test]
fn batches_close_at_the_message_count() {
    let api = FakeApi::start();
    let analytics = client_for(&api).flush_at(5).build().unwrap();
    for n in 0..12 {
        analytics.track("u1", "Counted", json!({"n": n})).unwrap();
    }
    assert!(analytics.flush(GENEROUS).is_clean());
    let sizes: Vec<usize> = api.requests().iter().map(|r| r.messages().len()).collect();
    assert_eq!(sizes, [5, 5, 2]);
}

#[test]
fn batches_close_at_the_byte_limit() {
    let api = FakeApi::start();
    let limit = 40 * 1024;
    let analytics = client_for(&api)
        .max_batch_bytes(limit)
        .gzip(false)
        .build()
        .unwrap();
    for n in 0..10 {
        analytics
            .track("u1", "Heavy", json!({"n": n, "pad": "p".repeat(10 * 1024)}))
            .unwrap();
    }
    assert!(analytics.flush(GENEROUS).is_clean());
    let requests = api.requests();
    assert!(requests.len() >= 3, "{} requests", requests.len());
    for request in &requests {
        assert!(
            request.raw_body.len() <= limit,
            "{} > {limit}",
            request.raw_body.len()
        );
    }
    assert_eq!(api.accepted_messages().len(), 10);
}

#[test]
fn messages_arrive_in_the_order_they_were_accepted() {
    let api = FakeApi::start();
    let analytics = client_for(&api).flush_at(7).build().unwrap();
    for n in 0..500 {
        analytics.track("u1", "Ordered", json!({"n": n})).unwrap();
    }
    assert!(analytics.flush(GENEROUS).is_clean());
    let order: Vec<i64> = api
        .accepted_messages()
        .iter()
        .map(|m| m["properties"]["n"].as_i64().unwrap())
        .collect();
    assert_eq!(order, (0..500).collect::<Vec<_>>());
}

#[test]
fn a_quiet_client_sends_by_age_without_a_flush() {
    let api = FakeApi::start();
    let analytics = client_for(&api)
        .flush_interval(Duration::from_millis(20))
        .build()
        .unwrap();
    analytics.track("u1", "Lonely", json!({})).unwrap();
    assert!(
        api.wait_for_requests(1, GENEROUS),
        "the age limit sends the batch"
    );
    assert_eq!(api.accepted_messages().len(), 1);
}

#[test]
fn many_threads_share_one_client() {
    let api = FakeApi::start();
    let analytics = client_for(&api).build().unwrap();
    std::thread::scope(|scope| {
        for t in 0..4 {
            let analytics = analytics.clone();
            scope.spawn(move || {
                for n in 0..250 {
                    analytics
                        .track(format!("u{t}"), "Threaded", json!({"n": n}))
                        .unwrap();
                }
            });
        }
    });
    assert!(analytics.flush(GENEROUS).is_clean());
    let messages = api.accepted_messages();
    assert_eq!(messages.len(), 1000);
    for t in 0..4 {
        let mine: Vec<i64> = messages
            .iter()
            .filter(|m| m["userId"] == format!("u{t}"))
            .map(|m| m["properties"]["n"].as_i64().unwrap())
            .collect();
        assert_eq!(
            mine,
            (0..250).collect::<Vec<_>>(),
            "each thread's order is kept"
        );
    }
}
