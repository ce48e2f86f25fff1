//! Batches by count, bytes and age, in order.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::time::Duration;

use serde_json::json;
use trackway::Track;
use trackway_testkit::FakeApi;

use crate::support::{GENEROUS, client_for};

#[test]
fn batches_close_at_the_message_count() {
    let api = FakeApi::start();
    // No age limit in play: only the count can send a batch.
    let analytics = client_for(&api)
        .flush_at(5)
        .flush_interval(Duration::from_secs(3600))
        .build()
        .unwrap();
    let mut n = 0;
    for sent in [1, 2] {
        // Nothing in flight: the fifth message closes the batch, no flush needed.
        for _ in 0..5 {
            analytics.track("u1", "Counted", json!({"n": n})).unwrap();
            n += 1;
        }
        assert!(api.wait_for_requests(sent, GENEROUS), "batch {sent} sent");
    }
    for _ in 0..2 {
        analytics.track("u1", "Counted", json!({"n": n})).unwrap();
        n += 1;
    }
    assert!(analytics.flush(GENEROUS).is_clean());
    let sizes: Vec<usize> = api.requests().iter().map(|r| r.messages().len()).collect();
    assert_eq!(sizes, [5, 5, 2]);
}

/// Makes `api` hold the first request it gets until [`Held::release`].
struct Held {
    arrived: mpsc::Receiver<()>,
    gate: Arc<(Mutex<bool>, Condvar)>,
}

impl Held {
    fn first_request_of(api: &FakeApi) -> Held {
        let (arrived, first_arrived) = mpsc::channel();
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let held = Arc::clone(&gate);
        let first = AtomicBool::new(true);
        api.set_rule(move |_| {
            if first.swap(false, Ordering::SeqCst) {
                let _ = arrived.send(());
                let (open, opened) = &*held;
                let mut open = open.lock().unwrap();
                while !*open {
                    open = opened.wait(open).unwrap();
                }
            }
            None
        });
        Held {
            arrived: first_arrived,
            gate,
        }
    }

    /// Waits until the first request is being held.
    fn wait_for_it(&self) {
        self.arrived.recv_timeout(GENEROUS).unwrap();
    }

    fn release(&self) {
        *self.gate.0.lock().unwrap() = true;
        self.gate.1.notify_all();
    }
}

#[test]
fn behind_a_request_in_flight_batches_take_everything_queued() {
    let api = FakeApi::start();
    let held = Held::first_request_of(&api);
    // No age limit: batches close at five, however slowly the tracks run.
    let analytics = client_for(&api)
        .flush_at(5)
        .gzip(false)
        .flush_interval(Duration::from_secs(3600))
        .build()
        .unwrap();
    for n in 0..5 {
        analytics.track("u1", "Queued", json!({"n": n})).unwrap();
    }
    held.wait_for_it();
    for n in 5..400 {
        analytics.track("u1", "Queued", json!({"n": n})).unwrap();
    }
    held.release();
    assert!(analytics.flush(GENEROUS).is_clean());

    let sizes: Vec<usize> = api.requests().iter().map(|r| r.messages().len()).collect();
    assert_eq!(sizes[0], 5, "nothing was in flight: {sizes:?}");
    // Closing at 5 would take 80 requests. Behind the held one, at most three more batches
    // get past the worker (it holds four in flight), and once it is released one takes the
    // rest: at most five requests, so one of them carries at least 395 / 4 messages.
    assert!(sizes.len() <= 5, "{sizes:?}");
    assert!(sizes.iter().any(|&size| size >= 99), "{sizes:?}");
    assert_eq!(arrival_order(&api), (0..400).collect::<Vec<_>>());
}

#[test]
fn batches_behind_a_request_in_flight_stop_at_2500_messages() {
    let api = FakeApi::start();
    let held = Held::first_request_of(&api);
    let analytics = client_for(&api).flush_at(1).build().unwrap();
    // Short ids keep 2,500 messages well under the 500 KB limit, so the count is what stops.
    let tiny = |n: usize| Track::new("T").user_id("u").message_id(format!("m{n}"));
    analytics.enqueue(tiny(0)).unwrap();
    held.wait_for_it();
    // At most three more batches (of at most 2,500 each) get past the worker while the first
    // is held, so at least 4,500 of these are still queued when it is released.
    for n in 1..=12_000 {
        analytics.enqueue(tiny(n)).unwrap();
    }
    held.release();
    assert!(analytics.flush(GENEROUS).is_clean());
    let sizes: Vec<usize> = api.requests().iter().map(|r| r.messages().len()).collect();
    assert_eq!(sizes.iter().max(), Some(&2500), "{sizes:?}");
    assert_eq!(api.accepted_messages().len(), 12_001);
}

#[test]
fn batches_behind_a_request_in_flight_stay_within_the_byte_limit() {
    within_the_byte_limit(false);
}

#[test]
fn deferred_batches_behind_a_request_in_flight_stay_within_the_byte_limit() {
    // Cut by estimated sizes, then into requests by real ones.
    within_the_byte_limit(true);
}

fn within_the_byte_limit(defer_encoding: bool) {
    let api = FakeApi::start();
    let held = Held::first_request_of(&api);
    let limit = 40 * 1024;
    let analytics = client_for(&api)
        .flush_at(2)
        .max_batch_bytes(limit)
        .gzip(false)
        .defer_encoding(defer_encoding)
        .build()
        .unwrap();
    let track = |n: i32| {
        analytics
            .track("u1", "Heavy", json!({"n": n, "pad": "p".repeat(2 * 1024)}))
            .unwrap();
    };
    (0..2).for_each(track);
    held.wait_for_it();
    (2..100).for_each(track);
    held.release();
    assert!(analytics.flush(GENEROUS).is_clean());
    let requests = api.requests();
    for request in &requests {
        assert!(
            request.raw_body.len() <= limit,
            "{} > {limit}",
            request.raw_body.len()
        );
    }
    let sizes: Vec<usize> = requests.iter().map(|r| r.messages().len()).collect();
    assert!(
        sizes.iter().any(|&size| size > 2),
        "batches grew: {sizes:?}"
    );
    assert_eq!(api.accepted_messages().len(), 100);
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
    assert_eq!(arrival_order(&api), (0..500).collect::<Vec<_>>());
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

/// The `n` property of every message the server accepted, in arrival order.
fn arrival_order(api: &FakeApi) -> Vec<i64> {
    api.accepted_messages()
        .iter()
        .map(|m| m["properties"]["n"].as_i64().unwrap())
        .collect()
}
