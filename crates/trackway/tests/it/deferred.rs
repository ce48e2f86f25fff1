//! `Builder::defer_encoding`: the encoder thread writes what the call would have, byte for
//! byte, and the limits and the accounting hold the same.

use std::time::{Duration, UNIX_EPOCH};

use serde_json::{Value, json};
use trackway::{
    Alias, Analytics, Custom, DropReason, EnqueueError, Group, Identify, Message, Page, Screen,
    Track,
};
use trackway_testkit::FakeApi;

use crate::support::{GENEROUS, Outcomes, client_for, ids};

fn every_type() -> Vec<Message> {
    let at = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
    let props = json!({"text": "quote \" backslash \\ tab \t ctl \u{1} é 😀", "n": [1, -2, 3.5]});
    let mut integrations = serde_json::Map::new();
    integrations.insert("All".into(), json!(false));
    integrations.insert("Mixpanel".into(), json!({"people": true}));
    let mut custom = Custom::new("checkout_step");
    custom.fields.insert("step".into(), json!(2));
    let messages: Vec<Message> = vec![
        Identify::new().user_id("u1").traits(props.clone()).into(),
        Track::new("Order Completed")
            .user_id("u1")
            .properties(props.clone())
            .context(json!({"ip": "203.0.113.9", "library": {"name": "mine"}}))
            .integrations(integrations)
            .into(),
        Page::new()
            .anonymous_id("a1")
            .name("Home")
            .category("Docs")
            .into(),
        Screen::new()
            .user_id("u1")
            .name("Settings")
            .properties(props.clone())
            .into(),
        Group::new("g1").user_id("u1").traits(props).into(),
        Alias::new("u1", "a1").into(),
        custom.into(),
    ];
    messages
        .into_iter()
        .enumerate()
        .map(|(n, mut message)| {
            message.common_mut().timestamp = Some(at);
            message.common_mut().message_id = Some(format!("fixed-{n}"));
            if n == 6 {
                message.common_mut().user_id = Some("u1".into());
            }
            message
        })
        .collect()
}

/// Booleans in the probe message: as `Value`s they hold several times the memory of their
/// JSON (at least 16 bytes each against 5), while the whole stays far under the most a held
/// message may cost (about 32 KB), so it is held, not encoded at the call. That must hold for
/// both sizes of `Value`: 32 bytes, and about 80 with serde_json's `preserve_order`, which
/// the collector turns on in a workspace build (600 flags were held alone, and encoded at
/// the call in `cargo test --workspace`).
const PROBE_FLAGS: usize = 250;

/// Checks that `analytics` encodes at the call, or defers it, as `defer` says; what tells is
/// the budget, which holds a deferred message at its heap and an encoded one at its bytes.
/// Without it every test here would pass with `defer_encoding(true)` doing nothing. Call it
/// after a clean flush, with nothing held; it sends one message and flushes again.
fn assert_deferred(api: &FakeApi, analytics: &Analytics, defer: bool) {
    assert_eq!(
        analytics.stats().bytes_queued,
        0,
        "nothing held before the probe"
    );
    let flags = vec![true; PROBE_FLAGS];
    analytics
        .track("probe", "Deferral Probe", json!({"flags": flags}))
        .unwrap();
    // One small message stays queued until the flush interval (a second) or the flush.
    let charged = analytics.stats().bytes_queued;
    assert!(analytics.flush(GENEROUS).is_clean());
    let probe = api
        .accepted_messages()
        .into_iter()
        .find(|m| m["event"] == "Deferral Probe")
        .unwrap();
    let encoded = probe.to_string().len() as u64;
    if defer {
        assert!(
            charged > 2 * encoded,
            "charged {charged} bytes for a message of {encoded}: it was encoded at the call"
        );
    } else {
        assert!(
            (encoded..2 * encoded).contains(&charged),
            "charged {charged} bytes for a message of {encoded}: it was not encoded at the call"
        );
    }
}

/// The body of every request, with `sentAt` cut out: what the messages encoded to.
fn bodies_without_sent_at(api: &FakeApi) -> Vec<String> {
    api.requests()
        .iter()
        .map(|r| {
            let body = String::from_utf8(r.raw_body.clone()).unwrap();
            let (batch, _) = body.split_once(",\"sentAt\"").unwrap();
            batch.to_owned()
        })
        .collect()
}

#[test]
fn the_encoder_thread_writes_the_same_bytes_as_the_call() {
    let mut bodies = Vec::new();
    for defer in [false, true] {
        let api = FakeApi::start();
        let analytics = client_for(&api)
            .gzip(false)
            .default_context(json!({"app": {"name": "shop"}, "ip": "ignored"}))
            .defer_encoding(defer)
            // No age limit: the messages make one request however slowly they are enqueued.
            .flush_interval(Duration::from_secs(3600))
            .build()
            .unwrap();
        for message in every_type() {
            analytics.enqueue(message).unwrap();
        }
        assert!(analytics.flush(GENEROUS).is_clean());
        bodies.push(bodies_without_sent_at(&api));
        assert_deferred(&api, &analytics, defer);
    }
    assert_eq!(bodies[0].len(), 1, "one request");
    assert_eq!(bodies[0], bodies[1]);
}

#[test]
fn generated_message_ids_are_fresh_uuids_and_reported() {
    generated_ids(false);
    generated_ids(true);
}

fn generated_ids(defer: bool) {
    let api = FakeApi::start();
    let outcomes = Outcomes::default();
    let analytics = client_for(&api)
        .defer_encoding(defer)
        .observer(outcomes.clone())
        .build()
        .unwrap();
    for n in 0..300 {
        analytics.track("u1", "Generated", json!({"n": n})).unwrap();
    }
    assert!(analytics.flush(GENEROUS).is_clean());
    let received = ids(&api.accepted_messages());
    assert_eq!(received.len(), 300);
    let distinct: std::collections::HashSet<&String> = received.iter().collect();
    assert_eq!(distinct.len(), 300, "every id is new");
    for id in &received {
        let parsed = uuid::Uuid::parse_str(id).unwrap();
        assert_eq!(parsed.get_version_num(), 4, "{id}");
        assert_eq!(outcomes.get(id).as_deref(), Some("delivered"), "{id}");
    }
    assert_deferred(&api, &analytics, defer);
}

#[test]
fn the_size_limit_is_enforced_at_the_call() {
    let api = FakeApi::start();
    let analytics = client_for(&api).defer_encoding(true).build().unwrap();
    // 30 KB of plain text: the bound cannot tell (it allows for escapes), so the call
    // measures it, and it fits.
    analytics
        .track("u1", "Big", json!({"blob": "x".repeat(30 * 1024)}))
        .unwrap();
    // 6 KB of control characters escape to 36 KB: over.
    let escaped = analytics.track("u1", "Escaped", json!({"blob": "\u{1}".repeat(6 * 1024)}));
    assert!(
        matches!(escaped, Err(EnqueueError::TooLarge { size, .. }) if size > 36 * 1024),
        "{escaped:?}"
    );
    assert!(analytics.flush(GENEROUS).is_clean());
    assert_eq!(api.accepted_messages().len(), 1);
    assert_eq!(analytics.stats().dropped.get(DropReason::TooLarge), 1);
    assert_deferred(&api, &analytics, true);
}

#[test]
fn a_batch_that_encodes_bigger_than_estimated_is_cut_to_fit_requests() {
    let api = FakeApi::start();
    let limit = 40 * 1024;
    let analytics = client_for(&api)
        .defer_encoding(true)
        .gzip(false)
        .max_batch_bytes(limit)
        .flush_at(100)
        .build()
        .unwrap();
    // Each is estimated at about 1 KB but encodes to about 5 KB: the worker's batch of 20
    // needs three requests.
    for n in 0..20 {
        analytics
            .track("u1", "Escapes", json!({"n": n, "ctl": "\u{1}".repeat(800)}))
            .unwrap();
    }
    assert!(analytics.flush(GENEROUS).is_clean());
    let requests = api.requests();
    assert!(requests.len() >= 3, "{} requests", requests.len());
    assert!(requests.iter().all(|r| r.raw_body.len() <= limit));
    let order: Vec<Value> = api
        .accepted_messages()
        .iter()
        .map(|m| m["properties"]["n"].clone())
        .collect();
    assert_eq!(order, (0..20).map(|n| json!(n)).collect::<Vec<_>>());
    assert_deferred(&api, &analytics, true);
}

#[test]
fn the_budget_counts_held_memory_and_is_released() {
    let api = FakeApi::start();
    api.push_replies([trackway_testkit::Reply::Delay(Duration::from_millis(300))]);
    let budget = 256 * 1024;
    let analytics = client_for(&api)
        .defer_encoding(true)
        .max_queue_bytes(budget)
        .build()
        .unwrap();
    let mut refused = 0;
    for n in 0..5_000 {
        match analytics.track("u1", "Held", json!({"n": n, "pad": "p".repeat(100)})) {
            Ok(()) => {}
            Err(EnqueueError::BudgetFull { .. }) => refused += 1,
            Err(other) => panic!("{other}"),
        }
        assert!(analytics.stats().bytes_queued <= budget as u64);
    }
    assert!(refused > 0, "a quarter megabyte cannot hold 5,000 messages");
    assert!(analytics.flush(GENEROUS).is_clean());
    assert_eq!(analytics.stats().bytes_queued, 0);
    assert_eq!(analytics.stats().delivered, 5_000 - refused);
    assert_deferred(&api, &analytics, true);
}

#[test]
fn a_message_holding_more_memory_than_its_bytes_is_charged_as_bytes() {
    let api = FakeApi::start();
    // Keep the batch in flight, so the budget is still charged when it is read.
    api.push_replies([trackway_testkit::Reply::Delay(Duration::from_millis(500))]);
    let analytics = client_for(&api).defer_encoding(true).build().unwrap();
    // 160 KB of `Value`s on the heap, 25 KB once written: charged as the bytes, since
    // holding it could take more budget than any encoded message.
    let flags: Vec<bool> = (0..5_000).map(|n| n % 3 == 0).collect();
    analytics
        .track("u1", "Many flags", json!({"flags": flags}))
        .unwrap();
    let charged = analytics.stats().bytes_queued;
    // At least its bytes (which a charge of nothing, or of a fraction, would not be); at most
    // what the largest encoded message costs, not its 160 KB of heap.
    let bytes = json!(flags).to_string().len() as u64;
    assert!(
        (bytes..=33 * 1024).contains(&charged),
        "charged {charged} bytes for a message of over {bytes}"
    );
    assert!(analytics.flush(GENEROUS).is_clean());
    assert_eq!(
        api.accepted_messages()[0]["properties"]["flags"],
        json!(flags)
    );
    assert_deferred(&api, &analytics, true);
}

#[test]
fn a_message_holding_more_memory_than_the_budget_is_encoded_at_the_call() {
    let api = FakeApi::start();
    let budget = 40 * 1024;
    let analytics = client_for(&api)
        .defer_encoding(true)
        .max_queue_bytes(budget)
        .build()
        .unwrap();
    // 5,000 booleans: under 32 KB of JSON even by the bound, but 160 KB of `Value`s on the
    // heap, four times the budget.
    let flags: Vec<bool> = (0..5_000).map(|n| n % 3 == 0).collect();
    analytics
        .track("u1", "Many flags", json!({"flags": flags}))
        .unwrap();
    assert!(analytics.flush(GENEROUS).is_clean());
    let messages = api.accepted_messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0]["properties"]["flags"], json!(flags));
    assert_eq!(analytics.stats().bytes_queued, 0);
    assert_deferred(&api, &analytics, true);
}
