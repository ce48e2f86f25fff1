//! What arrives on the wire: each type's fields, the envelope, the headers.

use std::time::{Duration, UNIX_EPOCH};

use serde_json::{Value, json};
use trackway::{Alias, Custom, Group, Identify, Message, Page, Screen, Track};
use trackway_testkit::{FakeApi, basic_auth_write_key};

use crate::support::{GENEROUS, WRITE_KEY, client_for};

fn library() -> Value {
    json!({"name": "trackway", "version": env!("CARGO_PKG_VERSION")})
}

#[test]
fn every_type_arrives_with_its_wire_names() {
    let api = FakeApi::start();
    let analytics = client_for(&api).build().unwrap();
    let at = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
    analytics
        .enqueue(
            Identify::new()
                .user_id("u1")
                .anonymous_id("a1")
                .traits(json!({"email": "ada@example.com"}))
                .timestamp(at)
                .message_id("m-identify"),
        )
        .unwrap();
    analytics
        .enqueue(
            Track::new("Order Completed")
                .user_id("u1")
                .properties(json!({"revenue": 42.5, "items": [1, 2]}))
                .context(json!({"ip": "10.0.0.1"}))
                .integration("Mixpanel", false)
                .integration_options("Amplitude", json!({"session_id": 7}))
                .message_id("m-track"),
        )
        .unwrap();
    analytics
        .enqueue(
            Page::new()
                .anonymous_id("a1")
                .name("Pricing")
                .category("Docs")
                .properties(json!({"path": "/p"})),
        )
        .unwrap();
    analytics
        .enqueue(
            Screen::new()
                .user_id("u1")
                .name("Home")
                .category("Main")
                .properties(json!({"n": 1})),
        )
        .unwrap();
    analytics
        .enqueue(
            Group::new("g1")
                .user_id("u1")
                .traits(json!({"plan": "team"})),
        )
        .unwrap();
    analytics.enqueue(Alias::new("u1", "a1")).unwrap();
    let report = analytics.flush(GENEROUS);
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.delivered, 6);

    let messages = api.accepted_messages();
    assert_eq!(messages.len(), 6);
    let [identify, track, page, screen, group, alias] = &messages[..] else {
        unreachable!()
    };

    assert_eq!(identify["type"], "identify");
    assert_eq!(identify["messageId"], "m-identify");
    assert_eq!(identify["timestamp"], "2023-11-14T22:13:20.123Z");
    assert_eq!(identify["userId"], "u1");
    assert_eq!(identify["anonymousId"], "a1");
    assert_eq!(identify["traits"], json!({"email": "ada@example.com"}));
    assert_eq!(identify["context"], json!({"library": library()}));

    assert_eq!(track["type"], "track");
    assert_eq!(track["event"], "Order Completed");
    assert_eq!(
        track["properties"],
        json!({"revenue": 42.5, "items": [1, 2]})
    );
    assert_eq!(
        track["context"],
        json!({"ip": "10.0.0.1", "library": library()})
    );
    assert_eq!(
        track["integrations"],
        json!({"Mixpanel": false, "Amplitude": {"session_id": 7}})
    );

    assert_eq!(page["type"], "page");
    assert_eq!(page["anonymousId"], "a1");
    assert_eq!(page["name"], "Pricing");
    assert_eq!(page["category"], "Docs");
    assert_eq!(page["properties"], json!({"path": "/p"}));
    assert!(page.get("userId").is_none());

    assert_eq!(screen["type"], "screen");
    assert_eq!(screen["name"], "Home");
    assert_eq!(screen["category"], "Main");

    assert_eq!(group["type"], "group");
    assert_eq!(group["groupId"], "g1");
    assert_eq!(group["traits"], json!({"plan": "team"}));

    assert_eq!(alias["type"], "alias");
    assert_eq!(alias["userId"], "u1");
    assert_eq!(alias["previousId"], "a1");

    // Generated ids are UUIDs, generated timestamps are ISO-8601 UTC with milliseconds.
    let generated = alias["messageId"].as_str().unwrap();
    assert_eq!(generated.len(), 36);
    assert_eq!(
        generated.as_bytes()[14],
        b'4',
        "a version-4 UUID: {generated}"
    );
    let stamp = alias["timestamp"].as_str().unwrap();
    assert_eq!(stamp.len(), 24);
    assert!(stamp.ends_with('Z'));
    for key in ["messageId", "timestamp"] {
        for message in &messages {
            assert!(message[key].is_string(), "{key} missing in {message}");
        }
    }
}

#[test]
fn requests_carry_auth_envelope_and_headers() {
    let api = FakeApi::start();
    let analytics = client_for(&api).build().unwrap();
    analytics
        .track("u1", "Signed Up", json!({"plan": "trial"}))
        .unwrap();
    assert!(analytics.flush(GENEROUS).is_clean());

    let requests = api.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/v1/batch");
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(request.header("content-encoding"), Some("gzip"));
    assert_eq!(
        request.header("user-agent"),
        Some(concat!("trackway/", env!("CARGO_PKG_VERSION")))
    );
    assert_eq!(
        request
            .header("authorization")
            .and_then(basic_auth_write_key)
            .as_deref(),
        Some(WRITE_KEY)
    );
    assert_eq!(request.header("x-retry-count"), None);
    assert_eq!(&request.raw_body[..2], &[0x1f, 0x8b], "gzip magic");
    let body = request.json.as_ref().unwrap();
    assert_eq!(body["writeKey"], WRITE_KEY);
    assert_eq!(body["sentAt"].as_str().map(str::len), Some(24));
    assert_eq!(body["batch"].as_array().map(Vec::len), Some(1));
}

#[test]
fn without_gzip_the_body_is_the_exact_json() {
    let api = FakeApi::start();
    let analytics = client_for(&api).gzip(false).build().unwrap();
    let at = UNIX_EPOCH + Duration::from_secs(1);
    analytics
        .enqueue(
            Track::new("E")
                .user_id("u")
                .message_id("id-1")
                .timestamp(at)
                .properties(json!({"a": 1})),
        )
        .unwrap();
    assert!(analytics.flush(GENEROUS).is_clean());
    let request = &api.requests()[0];
    assert_eq!(request.header("content-encoding"), None);
    let body = String::from_utf8(request.raw_body.clone()).unwrap();
    let sent_at = request.json.as_ref().unwrap()["sentAt"]
        .as_str()
        .unwrap()
        .to_owned();
    let expected = format!(
        concat!(
            r#"{{"batch":[{{"type":"track","messageId":"id-1","timestamp":"1970-01-01T00:00:01.000Z","#,
            r#""userId":"u","event":"E","properties":{{"a":1}},"context":{{"library":{{"name":"trackway","version":"{}"}}}}}}],"#,
            r#""sentAt":"{}","writeKey":"{}"}}"#
        ),
        env!("CARGO_PKG_VERSION"),
        sent_at,
        WRITE_KEY
    );
    assert_eq!(body, expected);
}

#[test]
fn default_context_merges_under_the_message_context() {
    let api = FakeApi::start();
    let analytics = client_for(&api)
        .default_context(json!({"app": {"name": "shop"}, "locale": "en-GB"}))
        .build()
        .unwrap();
    analytics
        .enqueue(
            Track::new("E")
                .user_id("u")
                .context(json!({"locale": "fr-FR"})),
        )
        .unwrap();
    analytics
        .enqueue(
            Track::new("E")
                .user_id("u")
                .context(json!({"library": {"name": "relay", "version": "9"}})),
        )
        .unwrap();
    assert!(analytics.flush(GENEROUS).is_clean());
    let messages = api.accepted_messages();
    assert_eq!(
        messages[0]["context"],
        json!({"locale": "fr-FR", "app": {"name": "shop"}, "library": library()})
    );
    // A message that names its own library (a relayed one) keeps it.
    assert_eq!(
        messages[1]["context"]["library"],
        json!({"name": "relay", "version": "9"})
    );
}

#[test]
fn custom_and_relayed_messages_pass_through_untouched() {
    let api = FakeApi::start();
    let analytics = client_for(&api).build().unwrap();
    analytics
        .enqueue(
            Custom::new("experiment_viewed")
                .user_id("u")
                .field("variant", json!("B")),
        )
        .unwrap();
    let relayed = json!({
        "type": "track", "event": "Imported", "userId": null, "anonymousId": "anon",
        "messageId": "orig-1", "timestamp": "2020-01-02T03:04:05.678Z",
        "properties": {"x": 1}, "unknownField": [1, 2]
    });
    analytics
        .enqueue(Message::from_json(relayed).unwrap())
        .unwrap();
    assert!(analytics.flush(GENEROUS).is_clean());
    let messages = api.accepted_messages();
    assert_eq!(messages[0]["type"], "experiment_viewed");
    assert_eq!(messages[0]["variant"], "B");
    assert_eq!(messages[1]["messageId"], "orig-1");
    assert_eq!(messages[1]["timestamp"], "2020-01-02T03:04:05.678Z");
    assert_eq!(messages[1]["unknownField"], json!([1, 2]));
    assert_eq!(messages[1]["event"], "Imported");
    assert!(messages[1].get("userId").is_none());
}

#[test]
fn test_mode_records_without_a_network() {
    let recorder = trackway::testing::Recorder::new();
    let analytics = trackway::Analytics::builder(WRITE_KEY)
        .transport(recorder.clone())
        .build()
        .unwrap();
    analytics.page("u1", "Home", json!({})).unwrap();
    analytics.screen("u1", "Main", json!({})).unwrap();
    assert!(analytics.shutdown(GENEROUS).is_clean());
    let messages = recorder.messages();
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0]["type"], "page");
    assert_eq!(
        recorder.requests()[0].url,
        "https://api.segment.io/v1/batch"
    );
}

#[test]
fn requests_reuse_one_connection() {
    let api = FakeApi::start();
    let analytics = client_for(&api).build().unwrap();
    for n in 0..3 {
        analytics
            .track("u1", "Kept Alive", json!({"n": n}))
            .unwrap();
        assert!(analytics.flush(GENEROUS).is_clean());
    }
    let peers: Vec<_> = api.requests().iter().map(|r| r.peer).collect();
    assert_eq!(peers.len(), 3);
    assert!(peers.iter().all(|p| *p == peers[0]), "{peers:?}");
}

#[test]
fn the_gzip_level_trades_bytes_for_cpu_and_not_content() {
    let mut sent = Vec::new();
    for level in [1, 9] {
        let api = FakeApi::start();
        // No age limit: the 200 make one request however slowly they are enqueued.
        let analytics = client_for(&api)
            .gzip_level(level)
            .flush_interval(Duration::from_secs(3600))
            .build()
            .unwrap();
        for n in 0..200 {
            analytics
                .enqueue(
                    Track::new("Level Tested")
                        .user_id(format!("user-{}", n % 7))
                        .message_id(format!("id-{n}"))
                        .timestamp(UNIX_EPOCH + Duration::from_secs(n))
                        .properties(json!({"n": n, "plan": "pro", "path": "/pricing"})),
                )
                .unwrap();
        }
        assert!(analytics.flush(GENEROUS).is_clean());
        let requests = api.requests();
        assert_eq!(requests.len(), 1);
        assert_eq!(requests[0].header("content-encoding"), Some("gzip"));
        sent.push((requests[0].raw_body.len(), requests[0].messages()));
    }
    let [(fast_bytes, fast), (small_bytes, small)] = [sent[0].clone(), sent[1].clone()];
    assert_eq!(fast, small, "same messages either way");
    assert!(
        small_bytes < fast_bytes,
        "level 9 sent {small_bytes} bytes, level 1 {fast_bytes}"
    );
}

#[test]
fn a_host_given_by_name_is_resolved_and_reused() {
    // `localhost` goes through the transport's name resolver (an IP address skips it); the
    // second and third requests take the cached answer.
    let api = FakeApi::start();
    let analytics = client_for(&api)
        .host(format!("http://localhost:{}", api.port()))
        .build()
        .unwrap();
    for n in 0..3 {
        analytics
            .enqueue(Track::new("Resolved").user_id(format!("u{n}")))
            .unwrap();
        let report = analytics.flush(GENEROUS);
        assert!(report.is_clean(), "{report}");
    }
    assert_eq!(api.accepted_messages().len(), 3);
    assert_eq!(api.requests().len(), 3);
}
