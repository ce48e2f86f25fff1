//! What each official library sends is accepted; every refusal says why.

use serde_json::{Value, json};

use crate::support::{
    OTHER_KEY, TestServer, WRITE_KEY, basic, gzip, post, post_for_encodings, send_body,
};

fn track(id: &str) -> Value {
    json!({"type": "track", "userId": "u1", "event": "Signed Up", "messageId": id,
           "properties": {"plan": "trial"}, "timestamp": "2026-01-01T00:00:00.000Z"})
}

/// The index and messageId of each entry of a 200's `rejected` list.
fn indexes_and_ids(rejected: &[Value]) -> Vec<(u64, &str)> {
    rejected
        .iter()
        .map(|r| {
            (
                r["index"].as_u64().unwrap(),
                r["messageId"].as_str().unwrap(),
            )
        })
        .collect()
}

/// The string `field` of each of `events`, sorted.
fn sorted<'a>(events: &'a [Value], field: &str) -> Vec<&'a str> {
    let mut values: Vec<&str> = events.iter().map(|e| e[field].as_str().unwrap()).collect();
    values.sort_unstable();
    values
}

/// POSTs `body` to `/v1/batch` with the test source's key.
fn post_batch(server: &TestServer, body: &[u8]) -> (u16, Value) {
    post(
        &server.url,
        "/v1/batch",
        &[("authorization", &basic(WRITE_KEY))],
        body,
    )
}

fn batch_body(messages: Vec<Value>) -> Vec<u8> {
    json!({"batch": messages, "sentAt": "2026-01-01T00:00:01.000Z"})
        .to_string()
        .into_bytes()
}

#[test]
fn each_official_librarys_request_shape_is_accepted() {
    let server = TestServer::start();
    let url = &server.url;
    // analytics-go: Basic auth only, /v1/batch.
    let go = post(
        url,
        "/v1/batch",
        &[("authorization", &basic(WRITE_KEY))],
        &batch_body(vec![track("go-1")]),
    );
    // analytics-java 3.5.x: writeKey in the body only, /v1/import.
    let java_body = json!({"batch": [track("java-1")], "writeKey": WRITE_KEY, "sentAt": "2026-01-01T00:00:01.000Z"});
    let java = post(url, "/v1/import", &[], java_body.to_string().as_bytes());
    // analytics-node: both.
    let node_body = json!({"batch": [track("node-1")], "writeKey": WRITE_KEY});
    let node = post(
        url,
        "/v1/batch",
        &[("authorization", &basic(WRITE_KEY))],
        node_body.to_string().as_bytes(),
    );
    // analytics-python: gzip.
    let python = post(
        url,
        "/v1/batch",
        &[
            ("authorization", &basic(WRITE_KEY)),
            ("content-encoding", "gzip"),
        ],
        &gzip(&batch_body(vec![track("python-1")])),
    );
    // The single-message endpoints, type from the path.
    let single = post(
        url,
        "/v1/identify",
        &[("authorization", &basic(OTHER_KEY))],
        json!({"userId": "u1", "traits": {"a": 1}, "messageId": "single-1"})
            .to_string()
            .as_bytes(),
    );
    for (name, (status, body)) in [
        ("go", go),
        ("java", java),
        ("node", node),
        ("python", python),
        ("single", single),
    ] {
        assert_eq!(status, 200, "{name}: {body}");
        assert_eq!(body, json!({"success": true}), "{name}");
    }
    let events = server.events("");
    assert_eq!(
        sorted(&events, "messageId"),
        ["go-1", "java-1", "node-1", "python-1", "single-1"]
    );
    let single = events
        .iter()
        .find(|e| e["messageId"] == "single-1")
        .unwrap();
    assert_eq!(single["type"], "identify");
    assert_eq!(single["_trackway"]["source"], "jobs");
    for event in &events {
        assert!(
            event.get("writeKey").is_none(),
            "write keys are never stored: {event}"
        );
    }
}

#[test]
fn server_fields_are_set_and_batch_fields_merged() {
    let server = TestServer::start();
    let body = json!({
        "batch": [
            {"type": "track", "userId": "u", "event": "E", "timestamp": "2026-01-01T00:00:00.000Z",
             "context": {"locale": "fr"}},
            {"type": "page", "anonymousId": "a", "name": "Home"}
        ],
        "sentAt": "2026-01-01T00:00:10.000Z",
        "context": {"locale": "en", "ip": "203.0.113.9"},
        "integrations": {"All": false, "Webhook": true}
    });
    send_body(&server, &body);
    let events = server.events("");
    let track = events.iter().find(|e| e["type"] == "track").unwrap();
    assert_eq!(
        track["context"],
        json!({"locale": "fr", "ip": "203.0.113.9"})
    );
    assert_eq!(
        track["integrations"],
        json!({"All": false, "Webhook": true})
    );
    assert_eq!(track["originalTimestamp"], "2026-01-01T00:00:00.000Z");
    assert_eq!(track["sentAt"], "2026-01-01T00:00:10.000Z");
    // The event happened 10 s before sending: timestamp = receivedAt - 10 s.
    let received = track["receivedAt"].as_str().unwrap();
    let parse = |s: &str| {
        chrono::DateTime::parse_from_rfc3339(s)
            .unwrap()
            .timestamp_millis()
    };
    assert_eq!(
        parse(received) - parse(track["timestamp"].as_str().unwrap()),
        10_000
    );
    let page = events.iter().find(|e| e["type"] == "page").unwrap();
    assert_eq!(
        page["messageId"].as_str().map(str::len),
        Some(36),
        "a messageId is assigned"
    );
}

#[test]
fn unknown_or_missing_write_keys_are_401() {
    let server = TestServer::start();
    let body = batch_body(vec![track("x")]);
    let cases = [
        post(
            &server.url,
            "/v1/batch",
            &[("authorization", &basic("nope"))],
            &body,
        ),
        post(&server.url, "/v1/batch", &[], &body),
        post(
            &server.url,
            "/v1/batch",
            &[],
            json!({"batch": [], "writeKey": "nope"})
                .to_string()
                .as_bytes(),
        ),
    ];
    for (status, answer) in cases {
        assert_eq!(status, 401, "{answer}");
        assert_eq!(answer["success"], false);
        assert!(
            answer["error"].as_str().unwrap().contains("write key"),
            "{answer}"
        );
    }
    assert!(server.events("").is_empty());
}

/// POSTs with a valid key and returns the 400's error text.
fn refused(server: &TestServer, headers: &[(&str, &str)], body: &[u8]) -> Value {
    let auth = basic(WRITE_KEY);
    let mut all = vec![("authorization", auth.as_str())];
    all.extend_from_slice(headers);
    let (status, answer) = post(&server.url, "/v1/batch", &all, body);
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["success"], false);
    answer
}

#[test]
fn malformed_and_oversized_requests_are_400_naming_the_problem() {
    let server = TestServer::start();
    let error = |answer: Value| answer["error"].as_str().unwrap().to_owned();

    assert!(
        error(refused(&server, &[], b"not json"))
            .contains("must be a JSON object with a `batch` array")
    );
    assert!(error(refused(&server, &[], b"{\"batch\": [")).contains("batch"));
    assert!(error(refused(&server, &[], b"{\"batch\": {}}")).contains("`batch` array"));
    assert!(error(refused(&server, &[], &[0xff, 0xfe, 0x00])).contains("JSON"));

    let big = json!({"type": "track", "userId": "u", "event": "E", "properties": {"x": "y".repeat(33 * 1024)}});
    let answer = refused(&server, &[], &batch_body(vec![track("ok"), big]));
    assert_eq!(answer["index"], 1);
    assert!(error(answer).contains("message 1 is"), "names the message");

    let many: Vec<Value> = (0..2501)
        .map(|n| json!({"type": "track", "userId": "u", "event": format!("{n}")}))
        .collect();
    assert!(
        error(refused(&server, &[], &batch_body(many)))
            .contains("2501 messages; the limit is 2500")
    );

    let huge = vec![b' '; 600 * 1024];
    assert!(error(refused(&server, &[], &huge)).contains("over 512000 bytes"));

    let not_object = batch_body(vec![json!([1, 2])]);
    assert_eq!(refused(&server, &[], &not_object)["index"], 0);

    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let deep_batch = format!(
        "{{\"batch\": [{{\"type\":\"track\",\"userId\":\"u\",\"event\":\"E\",\"properties\":{{\"x\":{deep}}}}}]}}"
    );
    // Over 32 KB as one message; nested that deep it is refused either way.
    refused(&server, &[], deep_batch.as_bytes());
    let deep_small = format!(
        "{{\"batch\": [{{\"x\":{}{}}}]}}",
        "[".repeat(5000),
        "]".repeat(5000)
    );
    assert!(error(refused(&server, &[], deep_small.as_bytes())).contains("not valid JSON"));

    assert!(server.events("").is_empty(), "nothing was stored");
}

#[test]
fn gzip_bombs_and_broken_gzip_are_refused_with_bounded_work() {
    let server = TestServer::start();
    // 50 MB of zeros compresses to ~50 KB: decompression stops at the 500 KB cap.
    let bomb = {
        use std::io::Write;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        encoder.write_all(&vec![0u8; 50 * 1024 * 1024]).unwrap();
        encoder.finish().unwrap()
    };
    assert!(bomb.len() < 100 * 1024);
    let answer = refused(&server, &[("content-encoding", "gzip")], &bomb);
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("decompressed body is over"),
        "{answer}"
    );

    let valid = gzip(&batch_body(vec![track("t")]));
    let truncated = &valid[..valid.len() / 2];
    let answer = refused(&server, &[("content-encoding", "gzip")], truncated);
    assert!(
        answer["error"].as_str().unwrap().contains("not valid gzip"),
        "{answer}"
    );

    assert!(server.events("").is_empty());
}

#[test]
fn zstd_bodies_are_stored_as_sent_and_every_answer_lists_zstd() {
    let server = TestServer::start();
    let messages = vec![track("zstd-1"), track("zstd-2")];
    let body = batch_body(messages.clone());
    let compressed = zstd::bulk::compress(&body, 1).unwrap();
    let auth = basic(WRITE_KEY);
    let (status, accepted, answer) = post_for_encodings(
        &server.url,
        "/v1/batch",
        &[("authorization", &auth), ("content-encoding", "zstd")],
        &compressed,
    );
    assert_eq!((status, &answer), (200, &json!({"success": true})));
    assert_eq!(accepted.as_deref(), Some("zstd, gzip"));
    let events = server.events("");
    assert_eq!(sorted(&events, "messageId"), ["zstd-1", "zstd-2"]);
    for sent in &messages {
        let stored = events
            .iter()
            .find(|e| e["messageId"] == sent["messageId"])
            .unwrap();
        for field in ["type", "userId", "event", "properties"] {
            assert_eq!(stored[field], sent[field], "{field}");
        }
    }
    // Refusals say it too, so a client learns it whatever the answer.
    let (status, accepted, _) = post_for_encodings(
        &server.url,
        "/v1/identify",
        &[("authorization", &basic("wk-unknown-0000000000"))],
        b"{}",
    );
    assert_eq!(status, 401);
    assert_eq!(accepted.as_deref(), Some("zstd, gzip"));
}

#[test]
fn an_encoding_the_collector_does_not_take_is_415_listing_those_it_does() {
    let server = TestServer::start();
    let auth = basic(WRITE_KEY);
    for path in ["/v1/batch", "/v1/track"] {
        let (status, accepted, answer) = post_for_encodings(
            &server.url,
            path,
            &[("authorization", &auth), ("content-encoding", "br")],
            &batch_body(vec![track("t")]),
        );
        assert_eq!(status, 415, "{path}: {answer}");
        assert_eq!(accepted.as_deref(), Some("zstd, gzip"), "{path}");
        let error = answer["error"].as_str().unwrap();
        assert!(
            error.contains("unsupported content-encoding \"br\""),
            "{error}"
        );
    }
    assert!(server.events("").is_empty());
}

#[test]
fn zstd_bombs_and_broken_zstd_are_refused_with_bounded_work() {
    let server = TestServer::start();
    // 50 MB of zeros compresses to a few KB: decompression stops at the 500 KB cap.
    let zeros = vec![0u8; 50 * 1024 * 1024];
    let bomb = zstd::bulk::compress(&zeros, 19).unwrap();
    assert!(bomb.len() < 100 * 1024);
    let answer = refused(&server, &[("content-encoding", "zstd")], &bomb);
    let error = |answer: &Value| answer["error"].as_str().unwrap().to_owned();
    assert!(
        error(&answer).contains("decompressed body is over"),
        "{answer}"
    );

    // A streamed frame (no content size) asking for a 128 MiB window is refused before
    // the window is allocated.
    let wide = {
        use std::io::Write;
        let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
        encoder.window_log(27).unwrap();
        encoder.write_all(&zeros).unwrap();
        encoder.finish().unwrap()
    };
    let answer = refused(&server, &[("content-encoding", "zstd")], &wide);
    assert!(error(&answer).contains("not valid zstd"), "{answer}");

    let valid = zstd::bulk::compress(&batch_body(vec![track("t")]), 1).unwrap();
    let truncated = &valid[..valid.len() / 2];
    let answer = refused(&server, &[("content-encoding", "zstd")], truncated);
    assert!(error(&answer).contains("not valid zstd"), "{answer}");
    let answer = refused(&server, &[("content-encoding", "zstd")], b"not zstd at all");
    assert!(error(&answer).contains("not valid zstd"), "{answer}");
    assert!(server.events("").is_empty());
}

#[test]
fn invalid_messages_in_a_batch_are_stored_as_rejected_and_listed() {
    let server = TestServer::start();
    let body = batch_body(vec![
        track("good-1"),
        json!({"type": "track", "event": "No Identity", "messageId": "bad-1"}),
        json!({"type": "track", "userId": "u", "messageId": "bad-2"}),
        json!({"type": "group", "userId": "u", "messageId": "bad-3"}),
        track("good-2"),
    ]);
    let (status, answer) = post_batch(&server, &body);
    assert_eq!(status, 200);
    assert_eq!(answer["success"], true);
    let rejected = answer["rejected"].as_array().unwrap();
    let summary = indexes_and_ids(rejected);
    assert_eq!(summary, [(1, "bad-1"), (2, "bad-2"), (3, "bad-3")]);
    assert_eq!(
        rejected[0]["reason"],
        "track message needs a userId or an anonymousId"
    );
    assert_eq!(
        rejected[1]["reason"],
        "track message needs a non-empty `event`"
    );
    assert_eq!(
        rejected[2]["reason"],
        "group message needs a non-empty `groupId`"
    );

    let events = server.events("");
    assert_eq!(events.len(), 5, "rejected ones are kept, not dropped");
    let bad = events.iter().find(|e| e["messageId"] == "bad-2").unwrap();
    assert_eq!(
        bad["_trackway"]["rejected"],
        "track message needs a non-empty `event`"
    );
    let good = events.iter().find(|e| e["messageId"] == "good-1").unwrap();
    assert!(good["_trackway"].get("rejected").is_none());
}

#[test]
fn a_body_write_key_is_checked_before_any_message_is_built() {
    let server = TestServer::start();
    // Each of these bodies would be a 400 once its messages (or its context) were parsed; with
    // a wrong or missing key it must be refused as unauthenticated first, without that work.
    let big = json!({"type": "track", "userId": "u", "event": "E",
                     "properties": {"x": "y".repeat(33 * 1024)}});
    let bodies = [
        json!({"batch": [[1, 2]], "writeKey": "nope"}),
        json!({"batch": [track("ok"), big.clone()], "writeKey": "nope"}),
        json!({"batch": [track("ok")], "context": [1, 2], "writeKey": "nope"}),
        json!({"batch": [[1, 2]]}),
    ];
    for body in &bodies {
        let (status, answer) = post(&server.url, "/v1/batch", &[], body.to_string().as_bytes());
        assert_eq!(status, 401, "{body}: {answer}");
        assert!(
            answer["error"].as_str().unwrap().contains("write key"),
            "{answer}"
        );
    }
    // The single-message endpoints too: an oversized message with a wrong key is a 401.
    let mut single = big;
    single["writeKey"] = json!("nope");
    let (status, answer) = post(&server.url, "/v1/track", &[], single.to_string().as_bytes());
    assert_eq!(status, 401, "{answer}");
    // With the right key, the same problems are still the 400s that name them.
    let (status, answer) = post(
        &server.url,
        "/v1/batch",
        &[],
        json!({"batch": [[1, 2]], "writeKey": WRITE_KEY})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["index"], 0);
    single["writeKey"] = json!(WRITE_KEY);
    let (status, answer) = post(&server.url, "/v1/track", &[], single.to_string().as_bytes());
    assert_eq!(status, 400, "{answer}");
    assert!(server.events("").is_empty());
    // A body key given twice counts once, its last value, as when the message is built.
    let repeated =
        format!(r#"{{"writeKey":"nope","userId":"u","event":"E","writeKey":"{WRITE_KEY}"}}"#);
    let (status, answer) = post(&server.url, "/v1/track", &[], repeated.as_bytes());
    assert_eq!(status, 200, "{answer}");
    assert_eq!(server.events("").len(), 1);
}

#[test]
fn a_message_id_that_is_not_a_string_is_rejected_not_replaced() {
    let server = TestServer::start();
    let numbered = json!({"type": "track", "userId": "u", "event": "E", "messageId": 12345});
    let body = batch_body(vec![
        numbered.clone(),
        json!({"type": "track", "userId": "u", "event": "E", "messageId": null}),
        json!({"type": "track", "userId": "u", "event": "E"}),
    ]);
    let (status, answer) = post_batch(&server, &body);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["rejected"],
        json!([{"index": 0, "messageId": 12345,
                "reason": "`messageId` must be a string, not a number"}])
    );
    let events = server.events("");
    assert_eq!(events.len(), 3, "the rejected one is kept");
    let kept = events.iter().find(|e| e["messageId"] == 12345).unwrap();
    assert_eq!(
        kept["_trackway"]["rejected"],
        "`messageId` must be a string, not a number"
    );
    // Absent or null: assigned.
    let assigned: Vec<usize> = events
        .iter()
        .filter_map(|e| e["messageId"].as_str().map(str::len))
        .collect();
    assert_eq!(assigned, [36, 36]);

    // A retry of the same message is the same message, stored once.
    let (status, answer) = post_batch(&server, &batch_body(vec![numbered]));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["duplicates"], 1, "{answer}");
    assert_eq!(server.events("").len(), 3);

    // A number is not the string of its digits: after the valid "777", the rejected 777 is
    // stored, not taken for a retry of it.
    for id in [json!("777"), json!(777)] {
        let message = json!({"type": "track", "userId": "u", "event": "E", "messageId": id});
        let (status, answer) = post_batch(&server, &batch_body(vec![message]));
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer.get("duplicates"), None, "{id}: {answer}");
    }
    assert_eq!(server.events("").len(), 5);
}

#[test]
fn messages_with_an_empty_message_id_are_each_stored_as_rejected() {
    let server = TestServer::start();
    let empty =
        |event: &str| json!({"type": "track", "userId": "u", "event": event, "messageId": ""});
    let (status, answer) = post_batch(&server, &batch_body(vec![empty("A"), empty("B")]));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        indexes_and_ids(answer["rejected"].as_array().unwrap()),
        [(0, ""), (1, "")]
    );
    assert_eq!(
        answer.get("duplicates"),
        None,
        "two different messages: {answer}"
    );
    // A retry of one is the same message: stored once.
    let (status, answer) = post_batch(&server, &batch_body(vec![empty("A")]));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["duplicates"], 1, "{answer}");
    let events = server.events("");
    assert_eq!(sorted(&events, "event"), ["A", "B"]);
    assert!(
        events
            .iter()
            .all(|e| e["_trackway"]["rejected"].is_string())
    );
}

#[test]
fn messages_of_unknown_types_are_stored_as_rejected_and_listed() {
    let server = TestServer::start();
    let body = batch_body(vec![
        json!({"type": "Track", "userId": "u", "event": "E", "messageId": "capital"}),
        json!({"type": "custom", "userId": "u", "messageId": "custom"}),
        track("good"),
    ]);
    let (status, answer) = post_batch(&server, &body);
    assert_eq!(status, 200, "{answer}");
    let rejected = answer["rejected"].as_array().unwrap();
    let summary = indexes_and_ids(rejected);
    assert_eq!(summary, [(0, "capital"), (1, "custom")]);
    let reason = rejected[0]["reason"].as_str().unwrap();
    assert!(reason.contains("\"Track\""), "names the type: {reason}");
    for known in ["identify", "track", "page", "screen", "group", "alias"] {
        assert!(reason.contains(known), "names {known}: {reason}");
    }
    let events = server.events("");
    assert_eq!(events.len(), 3, "kept, not dropped");
    let custom = events.iter().find(|e| e["messageId"] == "custom").unwrap();
    assert_eq!(custom["_trackway"]["rejected"], rejected[1]["reason"]);
    let good = events.iter().find(|e| e["messageId"] == "good").unwrap();
    assert!(good["_trackway"].get("rejected").is_none());
}
