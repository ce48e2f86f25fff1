//! Refusals at the call: invalid, too large, budget full. Each is an error and a count.

use std::time::Duration;

use serde_json::json;
use trackway::{DropReason, EnqueueError, Identify, Overflow, Track, ValidationError};
use trackway_testkit::{FakeApi, Reply};

use crate::support::{GENEROUS, client_for};

#[test]
fn invalid_messages_are_refused_with_the_field_named() {
    let api = FakeApi::start();
    let analytics = client_for(&api).build().unwrap();
    let missing_event = analytics.track("u1", "", json!({}));
    assert_eq!(
        missing_event,
        Err(EnqueueError::Invalid(ValidationError::MissingField {
            kind: "track".into(),
            field: "event"
        }))
    );
    let no_identity = analytics.enqueue(Identify::new().traits(json!({"a": 1})));
    assert!(matches!(
        no_identity,
        Err(EnqueueError::Invalid(
            ValidationError::MissingIdentity { .. }
        ))
    ));
    let long_id = analytics.enqueue(Track::new("E").user_id("u").message_id("x".repeat(100)));
    assert!(matches!(
        long_id,
        Err(EnqueueError::Invalid(ValidationError::BadMessageId {
            chars: 100
        }))
    ));
    let not_object = analytics.track("u1", "E", json!([1, 2]));
    assert_eq!(
        not_object.unwrap_err().to_string(),
        "invalid message: `properties` must be a JSON object, not an array"
    );
    assert_eq!(analytics.stats().dropped.get(DropReason::Invalid), 4);
    assert!(analytics.flush(GENEROUS).completed);
    assert!(api.requests().is_empty(), "nothing was sent");
}

#[test]
fn an_oversized_message_is_refused_at_the_call() {
    let api = FakeApi::start();
    let analytics = client_for(&api).build().unwrap();
    let result = analytics.track("u1", "Huge", json!({"blob": "x".repeat(40 * 1024)}));
    match result {
        Err(EnqueueError::TooLarge { size, limit }) => {
            assert_eq!(limit, 32 * 1024);
            assert!(size > limit);
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    // Just under the limit is fine.
    analytics
        .track("u1", "Big", json!({"blob": "x".repeat(30 * 1024)}))
        .unwrap();
    assert!(analytics.flush(GENEROUS).is_clean());
    let stats = analytics.stats();
    assert_eq!(stats.dropped.get(DropReason::TooLarge), 1);
    assert_eq!(stats.delivered, 1);
    assert_eq!(api.accepted_messages().len(), 1);
}

#[test]
fn a_full_budget_refuses_and_counts_while_the_server_is_away() {
    let api = FakeApi::start();
    api.set_rule(|_| Some(Reply::Status(503)));
    let budget = 64 * 1024;
    let analytics = client_for(&api)
        .max_queue_bytes(budget)
        .backoff(Duration::from_millis(50), Duration::from_millis(50))
        .max_retries(u32::MAX)
        .build()
        .unwrap();
    let mut accepted = 0_u64;
    let mut refused = 0_u64;
    for n in 0..2000 {
        match analytics.track("u1", "Buffered", json!({"n": n, "pad": "p".repeat(100)})) {
            Ok(()) => accepted += 1,
            Err(EnqueueError::BudgetFull { budget: b }) => {
                assert_eq!(b, budget as u64);
                refused += 1;
            }
            Err(other) => panic!("unexpected {other}"),
        }
        assert!(analytics.stats().bytes_queued <= budget as u64);
    }
    assert!(
        refused > 0 && accepted > 0,
        "accepted {accepted}, refused {refused}"
    );
    let stats = analytics.stats();
    assert_eq!(stats.dropped.get(DropReason::BudgetFull), refused);
    assert_eq!(stats.enqueued, accepted);

    // Shutdown gives an honest account: everything accepted is dropped or still in flight.
    let report = analytics.shutdown(Duration::from_millis(100));
    assert!(!report.completed);
    assert_eq!(report.delivered, 0);
    assert_eq!(
        report.dropped.get(DropReason::Shutdown) + report.pending,
        accepted,
        "{report}"
    );
}

#[test]
fn overflow_wait_gives_up_after_its_patience() {
    let api = FakeApi::start();
    api.set_rule(|_| Some(Reply::Status(503)));
    let patience = Duration::from_millis(300);
    let analytics = client_for(&api)
        .max_queue_bytes(40 * 1024)
        .overflow(Overflow::Wait(patience))
        .max_retries(u32::MAX)
        .build()
        .unwrap();
    analytics
        .track("u1", "Fill", json!({"pad": "p".repeat(30 * 1024)}))
        .unwrap();
    let started = std::time::Instant::now();
    let second = analytics.track("u1", "Fill", json!({"pad": "p".repeat(30 * 1024)}));
    let waited = started.elapsed();
    // It waited for room (a refusal at once would be `Overflow::Reject`), then gave up.
    assert!(waited >= patience, "gave up after {waited:?}");
    assert!(
        matches!(second, Err(EnqueueError::BudgetFull { .. })),
        "{second:?}"
    );
    assert_eq!(analytics.stats().dropped.get(DropReason::BudgetFull), 1);
}

#[test]
fn overflow_wait_succeeds_once_room_frees_up() {
    let api = FakeApi::start();
    api.push_replies([Reply::Status(503), Reply::Status(503)]);
    let analytics = client_for(&api)
        .max_queue_bytes(40 * 1024)
        .overflow(Overflow::Wait(GENEROUS))
        .flush_at(1)
        .build()
        .unwrap();
    analytics
        .track("u1", "First", json!({"pad": "p".repeat(30 * 1024)}))
        .unwrap();
    // Waits until the first message is delivered (after two retries) and its room released.
    analytics
        .track("u1", "Second", json!({"pad": "p".repeat(30 * 1024)}))
        .unwrap();
    assert!(analytics.flush(GENEROUS).is_clean());
    assert_eq!(api.accepted_messages().len(), 2);
}
