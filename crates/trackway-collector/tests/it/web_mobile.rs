//! Segment's browser (analytics.js) and mobile libraries' request shapes, at the HTTP level
//! (the browser itself is driven in `tests/browser.rs`).

use std::io::{Read, Write};

use serde_json::{Value, json};

use crate::support::{OTHER_KEY, TestServer, WRITE_KEY, basic, gzip, post};

/// A message as analytics.js builds it (it posts the type in the body too).
fn browser_message(kind: &str, id: &str) -> Value {
    json!({
        "type": kind, "messageId": id, "anonymousId": "anon-1", "event": "Clicked",
        "userId": "u1", "previousId": "anon-1", "groupId": "g1", "name": "Home",
        "writeKey": WRITE_KEY, "sentAt": "2026-01-01T00:00:01.000Z",
        "timestamp": "2026-01-01T00:00:00.000Z",
        "context": {"library": {"name": "analytics.js", "version": "next-1.84.3"}}
    })
}

#[test]
fn analytics_js_one_letter_paths_are_the_single_message_endpoints() {
    let server = TestServer::start();
    let kinds = ["identify", "track", "page", "screen", "group", "alias"];
    for kind in kinds {
        let path = format!("/v1/{}", &kind[..1]);
        let id = format!("ajs-{kind}");
        // As analytics.js 1.84 sends it: text/plain, the key in the body and as Basic auth,
        // and a retry count.
        let (status, body) = post(
            &server.url,
            &path,
            &[
                ("content-type", "text/plain"),
                ("authorization", &basic(WRITE_KEY)),
                ("x-retry-count", "0"),
            ],
            browser_message(kind, &id).to_string().as_bytes(),
        );
        assert_eq!((status, &body), (200, &json!({"success": true})), "{path}");
        // Again, the key in the body only (older analytics.js): the same answer, stored once.
        let (status, body) = post(
            &server.url,
            &path,
            &[("content-type", "text/plain")],
            browser_message(kind, &id).to_string().as_bytes(),
        );
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(body["duplicates"], 1, "{path}: a retry is stored once");
    }
    let events = server.events("");
    assert_eq!(events.len(), kinds.len());
    for kind in kinds {
        let event = events
            .iter()
            .find(|e| e["messageId"] == format!("ajs-{kind}"))
            .unwrap();
        assert_eq!(event["type"], kind);
        assert!(event.get("writeKey").is_none());
    }
    // Exactly today's validation: an invalid message is stored as rejected and listed.
    let mut invalid = browser_message("track", "ajs-invalid");
    invalid.as_object_mut().unwrap().remove("event");
    let (status, body) = post(&server.url, "/v1/t", &[], invalid.to_string().as_bytes());
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rejected"][0]["messageId"], "ajs-invalid", "{body}");
    // And today's refusals: an unknown key, a letter no type starts with.
    let mut unknown = browser_message("track", "ajs-unknown");
    unknown["writeKey"] = json!("wk-nobody");
    let (status, _) = post(&server.url, "/v1/t", &[], unknown.to_string().as_bytes());
    assert_eq!(status, 401);
    let (status, body) = post(&server.url, "/v1/x", &[], b"{}");
    assert_eq!(status, 400, "{body}");
}

/// `POST /v1/b` as analytics-kotlin sends it: text/plain, gzipped, chunked (no
/// Content-Length), the key in the body, no Basic auth.
#[test]
fn mobile_batches_on_v1_b_are_accepted_as_kotlin_and_swift_send_them() {
    let server = TestServer::start();
    let batch = |id: &str| {
        json!({
            "writeKey": OTHER_KEY, "sentAt": "2026-01-01T00:00:01.000Z",
            "batch": [
                {"type": "screen", "name": "Home", "anonymousId": "device-1", "messageId": format!("{id}-1"),
                 "timestamp": "2026-01-01T00:00:00.000Z",
                 "context": {"library": {"name": id, "version": "1.0"}}},
                {"type": "track", "event": "Opened", "anonymousId": "device-1", "messageId": format!("{id}-2"),
                 "timestamp": "2026-01-01T00:00:00.000Z"}
            ]
        })
    };
    let compressed = gzip(batch("kotlin").to_string().as_bytes());
    let (status, answer) = chunked_post(
        &server.url,
        "/v1/b",
        &[("Content-Type", "text/plain"), ("Content-Encoding", "gzip")],
        &compressed,
    );
    assert_eq!(status, 200, "kotlin: {answer}");
    // analytics-swift: plain JSON with a Content-Length.
    let (status, answer) = post(
        &server.url,
        "/v1/b",
        &[("content-type", "application/json; charset=utf-8")],
        batch("swift").to_string().as_bytes(),
    );
    assert_eq!((status, answer), (200, json!({"success": true})), "swift");
    let events = server.events("");
    let mut ids: Vec<&str> = events
        .iter()
        .map(|e| e["messageId"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, ["kotlin-1", "kotlin-2", "swift-1", "swift-2"]);
    for event in &events {
        assert_eq!(event["_trackway"]["source"], "jobs", "{event}");
        assert_eq!(event["sentAt"], "2026-01-01T00:00:01.000Z", "{event}");
    }
}

/// POSTs `body` with `Transfer-Encoding: chunked` over a raw connection, in a few chunks;
/// returns the status and the body's JSON.
fn chunked_post(url: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, Value) {
    let addr = url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    let mut head =
        format!("POST {path} HTTP/1.1\r\nHost: {addr}\r\nTransfer-Encoding: chunked\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("Connection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    for chunk in body.chunks(body.len().div_ceil(3).max(1)) {
        stream
            .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .unwrap();
        stream.write_all(chunk).unwrap();
        stream.write_all(b"\r\n").unwrap();
    }
    stream.write_all(b"0\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer[9..12].parse().unwrap();
    let json = answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body)
        .unwrap_or_default();
    // The answer may itself be chunked: take the JSON object inside.
    let start = json.find('{').unwrap_or(0);
    let end = json.rfind('}').map_or(json.len(), |e| e + 1);
    (
        status,
        serde_json::from_str(&json[start..end]).unwrap_or(Value::Null),
    )
}
