//! The footprint bounds what the encoder writes, and estimates it closely for plain text.

use std::time::{Duration, UNIX_EPOCH};

use serde_json::{Map, json};
use trackway_protocol::{
    Alias, Custom, EncodeOptions, Group, Identify, Message, Page, Screen, Track, encode_message,
    footprint,
};

fn options() -> EncodeOptions {
    let mut default_context = Map::new();
    default_context.insert(
        "app".into(),
        json!({"name": "shop\n\"quoted\"", "build": 1.5e300}),
    );
    EncodeOptions::new(Some(("trackway", "1.2.3")), default_context)
}

fn encoded_len(message: &Message, options: &EncodeOptions) -> usize {
    let mut out = Vec::new();
    encode_message(message, options, &mut out);
    out.len()
}

/// Text that escapes as badly as JSON allows: control characters become `\u00XX`.
fn worst(n: usize) -> String {
    "\u{1}".repeat(n)
}

fn messages() -> Vec<Message> {
    let at = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
    let nasty = json!({
        "ctl": worst(40),
        "quote\"key\u{2}": "\\\"\u{7f}é😀",
        "numbers": [0, -1, u64::MAX, i64::MIN, 1.7976931348623157e308, -2.2250738585072014e-308],
        "deep": {"a": [[[{"b": null, "c": true}]]]},
    });
    let mut integrations = Map::new();
    integrations.insert("All".into(), json!(false));
    integrations.insert(worst(5), json!({"opt": worst(9)}));
    let mut custom_fields = Map::new();
    custom_fields.insert(worst(7), nasty.clone());
    let mut custom = Custom::new(worst(3));
    custom.fields = custom_fields;
    custom.common.anonymous_id = Some(worst(11));
    vec![
        Track::new(worst(20))
            .user_id(worst(30))
            .message_id(worst(10))
            .timestamp(at)
            .properties(nasty.clone())
            .context(json!({"ip": "1.2.3.4", "library": {"name": worst(4)}}))
            .integrations(integrations)
            .into(),
        Identify::new().user_id("u").traits(nasty.clone()).into(),
        Page::new()
            .anonymous_id("a")
            .name(worst(6))
            .category("c")
            .properties(nasty.clone())
            .into(),
        Screen::new().user_id("u").name("Home").into(),
        Group::new(worst(8)).user_id("u").traits(nasty).into(),
        Alias::new("new", worst(12)).into(),
        custom.into(),
    ]
}

#[test]
fn no_message_encodes_past_its_bound() {
    for options in [options(), EncodeOptions::default()] {
        for message in messages() {
            let bound = footprint(&message, &options, None);
            let len = encoded_len(&message, &options);
            assert!(
                len <= bound.max_json,
                "{} encodes to {len} bytes, over its bound {}",
                message.type_name(),
                bound.max_json
            );
            assert!(bound.json <= bound.max_json);
            assert!(bound.heap > 0);
        }
    }
}

#[test]
fn a_filled_in_message_id_is_counted() {
    let options = options();
    let message: Message = Track::new("E").user_id("u").into();
    let without = footprint(&message, &options, None);
    let with = footprint(&message, &options, Some(36));
    assert!(with.max_json >= without.max_json + 36);
    let mut filled = message.clone();
    filled.common_mut().message_id = Some("0".repeat(36));
    assert!(encoded_len(&filled, &options) <= with.max_json);
}

#[test]
fn the_estimate_is_close_for_plain_text() {
    let options = options();
    let message: Message = Track::new("Order Completed")
        .user_id("user-1234567890")
        .message_id("6f1c9c7e-6d0b-4a53-9d3a-3c1b8d2f0a11")
        .timestamp(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        .properties(json!({
            "orderId": "50314b8e9bcf000000000000",
            "total": 27.5,
            "revenue": 25,
            "currency": "USD",
            "products": [{"sku": "45790-32", "name": "Monopoly", "price": 19, "quantity": 1}],
        }))
        .context(json!({"ip": "203.0.113.9", "locale": "en-GB"}))
        .into();
    let estimate = footprint(&message, &options, None).json;
    let actual = encoded_len(&message, &options);
    let error = estimate.abs_diff(actual) as f64 / actual as f64;
    assert!(error < 0.15, "estimate {estimate} vs {actual} bytes");
}
