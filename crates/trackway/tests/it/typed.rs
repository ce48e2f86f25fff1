//! Typed `properties` and `traits`: any owned `Serialize` value, written as its JSON, checked
//! and limited exactly as a `serde_json::Value` is, with encoding at the call or deferred.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Value, json};
use trackway::{EnqueueError, Group, Identify, Page, Screen, Track, ValidationError};
use trackway_testkit::FakeApi;

use crate::support::{GENEROUS, client_for};

#[derive(Serialize)]
struct OrderCompleted {
    order_id: String,
    revenue: f64,
    currency: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    coupon: Option<String>,
}

#[derive(Serialize)]
struct Traits {
    email: String,
    plan: Plan,
}

#[derive(Serialize)]
#[serde(rename_all = "lowercase")]
enum Plan {
    Team,
}

fn order() -> OrderCompleted {
    OrderCompleted {
        order_id: "o-\"1\"".into(),
        revenue: 42.5,
        currency: "EUR",
        coupon: None,
    }
}

/// The raw JSON text of each message's `field`, as it arrived, in order.
fn raw_fields(api: &FakeApi, field: &str) -> Vec<String> {
    api.accepted_messages()
        .iter()
        .map(|m| m[field].to_string())
        .collect()
}

#[test]
fn typed_values_arrive_as_their_json_in_both_encoding_modes() {
    for defer in [false, true] {
        let api = FakeApi::start();
        let analytics = client_for(&api).defer_encoding(defer).build().unwrap();
        analytics.track("u1", "Order Completed", order()).unwrap();
        analytics
            .identify(
                "u1",
                Traits {
                    email: "ada@example.com".into(),
                    plan: Plan::Team,
                },
            )
            .unwrap();
        analytics
            .enqueue(
                Page::new()
                    .user_id("u1")
                    .properties(BTreeMap::from([("path", "/p")])),
            )
            .unwrap();
        analytics
            .enqueue(Screen::new().user_id("u1").properties(json!({"n": 1})))
            .unwrap();
        analytics
            .enqueue(
                Group::new("g1")
                    .user_id("u1")
                    .traits(BTreeMap::from([("seats", 5)])),
            )
            .unwrap();
        // `None` and `()` serialize to null: no properties, as a `Value::Null` is.
        analytics
            .track("u1", "Nothing", None::<OrderCompleted>)
            .unwrap();
        let report = analytics.flush(GENEROUS);
        assert!(report.is_clean(), "{report}");
        assert_eq!(report.delivered, 6);
        let messages = api.accepted_messages();
        assert_eq!(
            messages[0]["properties"],
            json!({"order_id": "o-\"1\"", "revenue": 42.5, "currency": "EUR"}),
            "defer {defer}"
        );
        assert_eq!(
            messages[1]["traits"],
            json!({"email": "ada@example.com", "plan": "team"})
        );
        assert_eq!(messages[2]["properties"], json!({"path": "/p"}));
        assert_eq!(messages[3]["properties"], json!({"n": 1}));
        assert_eq!(messages[4]["traits"], json!({"seats": 5}));
        assert!(messages[5].get("properties").is_none(), "{}", messages[5]);
        // Field order as the struct declares it: the text serde wrote, byte for byte.
        let request = &api.requests()[0];
        let body = String::from_utf8(gunzip(&request.raw_body)).unwrap();
        assert!(
            body.contains(r#""properties":{"order_id":"o-\"1\"","revenue":42.5,"currency":"EUR"}"#),
            "{body}"
        );
    }
}

fn gunzip(body: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(body)
        .read_to_end(&mut out)
        .unwrap();
    out
}

#[test]
fn a_typed_value_that_is_not_an_object_is_refused_as_a_value_is() {
    for defer in [false, true] {
        let api = FakeApi::start();
        let analytics = client_for(&api).defer_encoding(defer).build().unwrap();
        let typed = analytics.track("u1", "E", vec![1, 2]).unwrap_err();
        let value = analytics.track("u1", "E", json!([1, 2])).unwrap_err();
        assert_eq!(typed.to_string(), value.to_string());
        assert!(matches!(
            typed,
            EnqueueError::Invalid(ValidationError::NotAnObject {
                field: "properties",
                found: "an array"
            })
        ));
        let text = analytics
            .enqueue(Identify::new().user_id("u1").traits("just text"))
            .unwrap_err();
        assert_eq!(
            text.to_string(),
            "invalid message: `traits` must be a JSON object, not a string"
        );
        // A map whose keys are not strings has no JSON form at all.
        let unserializable = analytics
            .track("u1", "E", BTreeMap::from([((1, 2), "x")]))
            .unwrap_err();
        assert!(
            matches!(
                &unserializable,
                EnqueueError::Invalid(ValidationError::Unserializable {
                    field: "properties",
                    ..
                })
            ),
            "{unserializable:?}"
        );
        assert!(
            unserializable
                .to_string()
                .contains("`properties` could not be serialized to JSON"),
            "{unserializable}"
        );
        assert!(analytics.flush(GENEROUS).is_clean());
        assert!(api.accepted_messages().is_empty());
        assert_eq!(analytics.stats().dropped.total(), 4);
    }
}

#[derive(Serialize)]
struct Big {
    pad: String,
}

#[test]
fn a_typed_value_over_32_kb_is_refused_at_the_call_in_both_modes() {
    for defer in [false, true] {
        let api = FakeApi::start();
        let analytics = client_for(&api).defer_encoding(defer).build().unwrap();
        // Just under and just over: the limit is checked on the exact encoded size.
        let fits = Track::new("E").user_id("u1").message_id("m-fits");
        let mut over_by = None;
        for pad in [32_000, 32_800] {
            let message = fits.clone().properties(Big {
                pad: "x".repeat(pad),
            });
            match analytics.enqueue(message) {
                Ok(()) => assert_eq!(pad, 32_000, "defer {defer}"),
                Err(EnqueueError::TooLarge { size, limit }) => {
                    assert_eq!(pad, 32_800, "defer {defer}");
                    over_by = Some(size - limit);
                }
                Err(other) => panic!("{other}"),
            }
        }
        assert!(over_by.is_some_and(|n| n > 0), "defer {defer}");
        assert!(analytics.flush(GENEROUS).is_clean());
        let raw = raw_fields(&api, "messageId");
        assert_eq!(raw, [r#""m-fits""#], "defer {defer}");
        let pad = &api.accepted_messages()[0]["properties"]["pad"];
        assert_eq!(pad.as_str().map(str::len), Some(32_000));
    }
}

#[test]
fn existing_value_call_sites_still_compile_and_send_the_same() {
    let api = FakeApi::start();
    let analytics = client_for(&api).build().unwrap();
    let properties: Value = json!({"plan": "trial"});
    analytics
        .track("u1", "Signed Up", properties.clone())
        .unwrap();
    analytics
        .enqueue(Track::new("Signed Up").user_id("u1").properties(properties))
        .unwrap();
    assert!(analytics.flush(GENEROUS).is_clean());
    let sent = raw_fields(&api, "properties");
    assert_eq!(sent, [r#"{"plan":"trial"}"#; 2]);
}
