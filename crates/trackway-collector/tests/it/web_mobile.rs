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

/// A request of any method; returns the status, the headers and the body.
fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, ureq::http::HeaderMap, String) {
    let mut builder = ureq::http::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let response = crate::support::agent()
        .run(builder.body(body.to_vec()).unwrap())
        .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.into_body().read_to_string().unwrap_or_default();
    (status, headers, text)
}

fn header<'a>(headers: &'a ureq::http::HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

const PAGE: &str = "http://page.example:3000";

#[test]
fn ingest_and_settings_answer_preflights_and_every_answer_carries_the_origin() {
    let server = TestServer::start();
    let settings = format!("/v1/projects/{WRITE_KEY}/settings");
    for path in [
        "/v1/t",
        "/v1/track",
        "/v1/b",
        "/v1/batch",
        "/v1/import",
        &settings,
    ] {
        let (status, headers, _) = request(
            "OPTIONS",
            &format!("{}{path}", server.url),
            &[
                ("origin", PAGE),
                ("access-control-request-method", "POST"),
                (
                    "access-control-request-headers",
                    "content-type,authorization,x-retry-count,content-encoding",
                ),
            ],
            b"",
        );
        assert_eq!(status, 204, "{path}");
        assert_eq!(
            header(&headers, "access-control-allow-origin"),
            Some(PAGE),
            "{path}"
        );
        let methods = header(&headers, "access-control-allow-methods").unwrap();
        assert!(
            methods.contains("POST") && methods.contains("GET"),
            "{path}: {methods}"
        );
        let allowed = header(&headers, "access-control-allow-headers").unwrap();
        for name in [
            "content-type",
            "authorization",
            "x-retry-count",
            "content-encoding",
        ] {
            assert!(allowed.contains(name), "{path}: {allowed}");
        }
        assert_eq!(
            header(&headers, "access-control-max-age"),
            Some(
                trackway_collector::PREFLIGHT_MAX_AGE
                    .as_secs()
                    .to_string()
                    .as_str()
            ),
            "{path}"
        );
    }
    // Errors too: a page that cannot read its 400 or 401 retries it forever.
    for (body, expected) in [
        (&b"{not json"[..], 400),
        (&br#"{"writeKey":"wk-nobody"}"#[..], 401),
    ] {
        let (status, headers, _) = request(
            "POST",
            &format!("{}/v1/t", server.url),
            &[("origin", PAGE), ("content-type", "text/plain")],
            body,
        );
        assert_eq!(status, expected);
        assert_eq!(header(&headers, "access-control-allow-origin"), Some(PAGE));
        let exposed = header(&headers, "access-control-expose-headers").unwrap_or_default();
        assert!(exposed.contains("retry-after") && exposed.contains("x-ratelimit-reset"));
    }
}

#[test]
fn the_admin_api_and_debugger_never_answer_cross_origin() {
    let server = TestServer::start();
    let token = format!("Bearer {}", crate::support::ADMIN_TOKEN);
    for path in ["/api/events", "/api/stats", "/api/stream", "/"] {
        let (status, headers, _) = request(
            "OPTIONS",
            &format!("{}{path}", server.url),
            &[
                ("origin", PAGE),
                ("access-control-request-method", "GET"),
                ("access-control-request-headers", "authorization"),
            ],
            b"",
        );
        assert_ne!(status, 204, "{path}");
        assert!(
            headers
                .keys()
                .all(|name| !name.as_str().starts_with("access-control-")),
            "{path}: {headers:?}"
        );
    }
    let (status, headers, _) = request(
        "GET",
        &format!("{}/api/events", server.url),
        &[("origin", PAGE), ("authorization", &token)],
        b"",
    );
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "access-control-allow-origin"), None);
}

#[test]
fn a_source_s_allowed_origins_refuse_pages_elsewhere() {
    let temp = tempfile::tempdir().unwrap();
    let server = TestServer::start_configured(temp.path(), |config| {
        config.sources[0].allowed_origins = Some(vec!["https://Shop.Example".into()]);
        config.sources[1].allowed_origins = Some(vec!["https://jobs.example".into()]);
    });
    let send = |origin: Option<&str>, id: &str| {
        let mut headers = vec![("content-type", "text/plain")];
        headers.extend(origin.map(|o| ("origin", o)));
        let (status, response_headers, body) = request(
            "POST",
            &format!("{}/v1/t", server.url),
            &headers,
            browser_message("track", id).to_string().as_bytes(),
        );
        let allow = header(&response_headers, "access-control-allow-origin").map(str::to_owned);
        (status, allow, body)
    };
    let (status, allow, body) = send(Some("https://shop.example"), "allowed");
    assert_eq!(
        (status, allow.as_deref()),
        (200, Some("https://shop.example")),
        "{body}"
    );
    // Allowed for another source only: refused, and readable (so analytics.js drops it).
    let (status, allow, _) = send(Some("https://jobs.example"), "other-source");
    assert_eq!(
        (status, allow.as_deref()),
        (403, Some("https://jobs.example"))
    );
    // Allowed for no source: refused, and the browser is not even told.
    let (status, allow, _) = send(Some("https://evil.example"), "evil");
    assert_eq!((status, allow), (403, None));
    let (status, _, _) = request(
        "OPTIONS",
        &format!("{}/v1/t", server.url),
        &[
            ("origin", "https://evil.example"),
            ("access-control-request-method", "POST"),
        ],
        b"",
    );
    assert!(status == 204 || status == 200);
    // No Origin: a server or an app, not a page.
    let (status, _, _) = send(None, "server");
    assert_eq!(status, 200);
    let mut ids: Vec<String> = server
        .events("")
        .iter()
        .map(|e| e["messageId"].as_str().unwrap().to_owned())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, ["allowed", "server"]);
    // The settings of a source are refused to pages it does not allow, too.
    let settings = format!("{}/v1/projects/{WRITE_KEY}/settings", server.url);
    let (status, _, _) = request("GET", &settings, &[("origin", "https://evil.example")], b"");
    assert_eq!(status, 403);
}

#[test]
fn settings_point_analytics_js_back_at_the_collector() {
    let server = TestServer::start();
    let (status, headers, body) = request(
        "GET",
        &format!("{}/v1/projects/{WRITE_KEY}/settings", server.url),
        &[("origin", PAGE)],
        b"",
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(header(&headers, "access-control-allow-origin"), Some(PAGE));
    let settings: Value = serde_json::from_str(&body).unwrap();
    let integrations = settings["integrations"].as_object().unwrap();
    assert_eq!(integrations.keys().collect::<Vec<_>>(), ["Segment.io"]);
    let segment = &integrations["Segment.io"];
    let host = server.url.trim_start_matches("http://");
    assert_eq!(segment["apiKey"], WRITE_KEY);
    assert_eq!(segment["apiHost"], format!("{host}/v1"));
    assert_eq!(segment["protocol"], "http");
    assert_eq!(settings["metrics"]["sampleRate"], 0);
    // Unknown keys: 404.
    let (status, _, _) = request(
        "GET",
        &format!("{}/v1/projects/wk-nobody/settings", server.url),
        &[],
        b"",
    );
    assert_eq!(status, 404);
    // A public URL configured: that, whatever host the request named.
    let temp = tempfile::tempdir().unwrap();
    let public = TestServer::start_configured(temp.path(), |config| {
        config.public_url = Some("https://collect.example.com/".into());
    });
    let (_, _, body) = request(
        "GET",
        &format!("{}/v1/projects/{OTHER_KEY}/settings", public.url),
        &[],
        b"",
    );
    let settings: Value = serde_json::from_str(&body).unwrap();
    let segment = &settings["integrations"]["Segment.io"];
    assert_eq!(segment["apiHost"], "collect.example.com/v1");
    assert_eq!(segment["protocol"], "https");
    assert_eq!(segment["apiKey"], OTHER_KEY);
}

#[test]
fn the_sender_s_address_is_added_as_context_ip() {
    let post_from = |server: &TestServer, id: &str, context: Value, forwarded: Option<&str>| {
        let mut message = browser_message("track", id);
        message["context"] = context;
        let mut headers = vec![("content-type", "text/plain")];
        headers.extend(forwarded.map(|f| ("x-forwarded-for", f)));
        let (status, body) = post(
            &server.url,
            "/v1/t",
            &headers,
            message.to_string().as_bytes(),
        );
        assert_eq!(status, 200, "{body}");
        let events = server.events("");
        events.into_iter().find(|e| e["messageId"] == id).unwrap()["context"].clone()
    };
    let server = TestServer::start();
    let context = post_from(&server, "plain", json!({"userAgent": "UA/1"}), None);
    assert_eq!(context, json!({"userAgent": "UA/1", "ip": "127.0.0.1"}));
    // A message's own address is kept.
    let context = post_from(&server, "own", json!({"ip": "192.0.2.1"}), None);
    assert_eq!(context["ip"], "192.0.2.1");
    // X-Forwarded-For is ignored unless the proxy is trusted.
    let context = post_from(&server, "forged", Value::Null, Some("203.0.113.9"));
    assert_eq!(context, json!({"ip": "127.0.0.1"}));
    let temp = tempfile::tempdir().unwrap();
    let proxied = TestServer::start_configured(temp.path(), |config| {
        config.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
        config.sources[1].collect_ip = false;
    });
    let context = post_from(&proxied, "proxied", json!({}), Some("6.6.6.6, 203.0.113.9"));
    assert_eq!(context["ip"], "203.0.113.9");
    // A source that does not collect addresses gets none.
    let mut batch = browser_message("track", "no-ip");
    batch["writeKey"] = json!(OTHER_KEY);
    let body = json!({"writeKey": OTHER_KEY, "batch": [batch]});
    let (status, _) = post(&proxied.url, "/v1/b", &[], body.to_string().as_bytes());
    assert_eq!(status, 200);
    let event = proxied
        .events("")
        .into_iter()
        .find(|e| e["messageId"] == "no-ip")
        .unwrap();
    assert!(event["context"].get("ip").is_none(), "{event}");
    // A backfill through /v1/import (what `trackway import` posts to) gets none either: the
    // address there is the importing machine's, not the users'.
    let body = json!({"batch": [browser_message("track", "imported")]});
    let (status, _) = post(
        &server.url,
        "/v1/import",
        &[("authorization", &basic(WRITE_KEY))],
        body.to_string().as_bytes(),
    );
    assert_eq!(status, 200);
    let event = server
        .events("")
        .into_iter()
        .find(|e| e["messageId"] == "imported")
        .unwrap();
    assert!(event["context"].get("ip").is_none(), "{event}");
}
