//! The admin API: the token, the filters, the live stream.

use std::io::{BufRead, BufReader};

use serde_json::{Value, json};

use crate::support::{ADMIN_TOKEN, OTHER_KEY, TestServer, agent, send};

fn seed(server: &TestServer) {
    send(
        server,
        vec![
            json!({"type": "identify", "userId": "alice", "traits": {"plan": "pro"}, "messageId": "m1"}),
            json!({"type": "track", "userId": "alice", "event": "Signed Up", "messageId": "m2"}),
            json!({"type": "track", "anonymousId": "anon-bob", "event": "Viewed", "messageId": "m3"}),
            json!({"type": "page", "userId": "carol", "name": "Pricing", "messageId": "m4"}),
            json!({"type": "track", "userId": "carol", "messageId": "m5"}),
        ],
    );
}

fn ids(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e["messageId"].as_str().unwrap())
        .collect()
}

#[test]
fn the_admin_api_needs_the_token_and_healthz_does_not() {
    let server = TestServer::start();
    for token in [
        None,
        Some("Bearer wrong-token-wrong-token"),
        Some("Basic abc"),
    ] {
        let mut request = agent().get(format!("{}/api/events", server.url));
        if let Some(token) = token {
            request = request.header("authorization", token);
        }
        let response = request.call().unwrap();
        assert_eq!(response.status().as_u16(), 401, "{token:?}");
    }
    let health = agent()
        .get(format!("{}/healthz", server.url))
        .call()
        .unwrap();
    assert_eq!(health.status().as_u16(), 200);
    let page = agent().get(format!("{}/", server.url)).call().unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let html = page.into_body().read_to_string().unwrap();
    assert!(html.contains("Trackway debugger"));
    assert!(
        !html.contains(ADMIN_TOKEN),
        "the page itself carries no secret"
    );
}

#[test]
fn events_are_filtered_newest_first_and_paged() {
    let server = TestServer::start();
    seed(&server);
    assert_eq!(ids(&server.events("")), ["m5", "m4", "m3", "m2", "m1"]);
    assert_eq!(ids(&server.events("type=track")), ["m5", "m3", "m2"]);
    assert_eq!(ids(&server.events("userId=alice")), ["m2", "m1"]);
    assert_eq!(
        ids(&server.events("userId=anon-bob")),
        ["m3"],
        "anonymous ids match too"
    );
    assert_eq!(
        ids(&server.events("event=Pricing")),
        ["m4"],
        "page names match event="
    );
    let (_, first_page) = server.admin("/api/events?limit=2");
    let page: Vec<Value> = first_page["events"].as_array().unwrap().clone();
    assert_eq!(ids(&page), ["m5", "m4"]);
    let before = page[1]["_trackway"]["seq"].as_i64().unwrap();
    assert_eq!(
        ids(&server.events(&format!("before={before}"))),
        ["m3", "m2", "m1"]
    );
    let rejected = &server.events("")[0];
    assert_eq!(
        rejected["_trackway"]["rejected"],
        "track message needs a non-empty `event`"
    );
    assert_eq!(rejected["_trackway"]["source"], "web");
    for bad in ["limit=0", "limit=10001"] {
        let (status, body) = server.admin(&format!("/api/events?{bad}"));
        assert_eq!(status, 400, "{bad}: {body}");
    }
}

#[test]
fn stats_count_per_source_type_and_status() {
    let server = TestServer::start();
    seed(&server);
    let (status, stats) = server.admin("/api/stats");
    assert_eq!(status, 200);
    assert_eq!(stats["total"], 5);
    let counts = stats["counts"].as_array().unwrap();
    let find = |kind: &str, rejected: bool| {
        counts
            .iter()
            .find(|c| c["type"] == kind && c["rejected"] == rejected && c["source"] == "web")
            .map(|c| c["count"].as_u64().unwrap())
    };
    assert_eq!(find("track", false), Some(2));
    assert_eq!(find("track", true), Some(1));
    assert_eq!(find("identify", false), Some(1));
    assert_eq!(find("page", false), Some(1));
}

#[test]
fn the_stream_delivers_events_as_they_are_stored() {
    let server = TestServer::start();
    let response = agent()
        .get(format!("{}/api/stream", server.url))
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .call()
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/event-stream")
    );
    let mut lines = BufReader::new(response.into_body().into_reader()).lines();
    seed(&server);
    let mut received = Vec::new();
    while received.len() < 5 {
        let line = lines.next().unwrap().unwrap();
        if let Some(data) = line.strip_prefix("data: ") {
            let event: Value = serde_json::from_str(data).unwrap();
            received.push(event["messageId"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(received, ["m1", "m2", "m3", "m4", "m5"], "in arrival order");
}

#[test]
fn stats_count_unknown_types_in_one_bucket_across_restarts() {
    let temp = tempfile::tempdir().unwrap();
    let mut server = TestServer::start_in(temp.path());
    // Types chosen by the sender must not each get a counter of their own.
    let messages = (0..50)
        .map(|n| json!({"type": format!("made-up-{n}"), "userId": "u", "messageId": format!("m{n}")}))
        .chain([json!({"type": "track", "userId": "u", "event": "E", "messageId": "t"})])
        .collect();
    send(&server, messages);
    let expected = json!([
        {"source": "web", "type": "other", "rejected": true, "count": 50},
        {"source": "web", "type": "track", "rejected": false, "count": 1},
    ]);
    let (_, stats) = server.admin("/api/stats");
    assert_eq!(stats["counts"], expected, "{stats}");
    // Rebuilt from the store the same way.
    server.stop();
    let server = TestServer::start_in(temp.path());
    let (_, stats) = server.admin("/api/stats");
    assert_eq!(stats["counts"], expected, "{stats}");
    assert_eq!(stats["total"], 51);
}

#[test]
fn the_bearer_scheme_is_case_insensitive() {
    let server = TestServer::start();
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let response = agent()
            .get(format!("{}/api/stats", server.url))
            .header("authorization", format!("{scheme} {ADMIN_TOKEN}"))
            .call()
            .unwrap();
        assert_eq!(response.status().as_u16(), 200, "{scheme}");
    }
    // Still the token that counts, and a scheme that is not Bearer is not.
    for value in [
        format!("bearer {ADMIN_TOKEN}x"),
        format!("bearerx {ADMIN_TOKEN}"),
        format!("Basic {ADMIN_TOKEN}"),
        ADMIN_TOKEN.to_owned(),
    ] {
        let response = agent()
            .get(format!("{}/api/stats", server.url))
            .header("authorization", value.as_str())
            .call()
            .unwrap();
        assert_eq!(response.status().as_u16(), 401, "{value}");
    }
}

#[test]
fn an_admin_token_no_client_could_send_is_refused_at_startup() {
    let temp = tempfile::tempdir().unwrap();
    for token in [
        " ".repeat(16),
        format!("{} ", "a".repeat(15)),
        format!("\t{}", "a".repeat(20)),
        format!("{} {}", "a".repeat(10), "b".repeat(10)),
        "é".repeat(16),
        "a".repeat(15),
    ] {
        let mut config = crate::support::config(temp.path());
        config.admin_token = token.clone();
        let error = match trackway_collector::Collector::open(&config) {
            Ok(_) => panic!("{token:?} was accepted"),
            Err(error) => error.to_string(),
        };
        assert!(error.contains("admin token"), "{token:?}: {error}");
    }
    let mut config = crate::support::config(temp.path());
    config.admin_token = "a".repeat(16);
    assert!(trackway_collector::Collector::open(&config).is_ok());
}

#[test]
fn the_debugger_page_may_not_be_framed() {
    let server = TestServer::start();
    let page = agent().get(format!("{}/", server.url)).call().unwrap();
    let header = |name: &str| {
        page.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(header("x-frame-options"), "DENY");
    assert!(
        header("content-security-policy").contains("frame-ancestors 'none'"),
        "{}",
        header("content-security-policy")
    );
}

#[test]
fn events_are_searched_by_source_status_and_user_or_event_on_the_server() {
    let server = TestServer::start();
    seed(&server);
    let jobs = json!({"batch": [
        {"type": "track", "userId": "alice", "event": "Job Ran", "messageId": "j1"},
        {"type": "track", "userId": "Signed Up", "event": "Job Ran", "messageId": "j2"}
    ]});
    let (status, answer) = crate::support::post(
        &server.url,
        "/v1/batch",
        &[("authorization", &crate::support::basic(OTHER_KEY))],
        jobs.to_string().as_bytes(),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(ids(&server.events("source=jobs")), ["j2", "j1"]);
    assert_eq!(
        ids(&server.events("source=web&type=track")),
        ["m5", "m3", "m2"]
    );
    assert_eq!(ids(&server.events("status=rejected")), ["m5"]);
    assert_eq!(
        ids(&server.events("status=stored&source=web")),
        ["m4", "m3", "m2", "m1"]
    );
    // `q`: a user id or an event name, whichever matches; an event matching both ways is
    // listed once.
    assert_eq!(ids(&server.events("q=alice")), ["j1", "m2", "m1"]);
    assert_eq!(ids(&server.events("q=Signed%20Up")), ["j2", "m2"]);
    assert_eq!(ids(&server.events("q=Job%20Ran&source=jobs")), ["j2", "j1"]);
    assert_eq!(ids(&server.events("q=nobody")), Vec::<&str>::new());
    let (status, body) = server.admin("/api/events?status=lost");
    assert_eq!(status, 400, "{body}");
}

#[test]
fn next_before_pages_through_a_filter_to_the_end() {
    let server = TestServer::start();
    seed(&server);
    // Pages of two of the source web's stored events: m4 m3, then m2 m1, then none.
    let mut seen = Vec::new();
    let mut before: Option<i64> = None;
    for _ in 0..5 {
        let path = format!(
            "/api/events?limit=2&source=web&status=stored{}",
            before.map(|b| format!("&before={b}")).unwrap_or_default()
        );
        let (status, page) = server.admin(&path);
        assert_eq!(status, 200, "{page}");
        seen.extend(
            page["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["messageId"].as_str().unwrap().to_owned()),
        );
        match page["next_before"].as_i64() {
            Some(next) => before = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, ["m4", "m3", "m2", "m1"]);
    // The last page says there is nothing older.
    let (_, all) = server.admin("/api/events?limit=100");
    assert_eq!(all["next_before"], Value::Null);
    let (_, first) = server.admin("/api/events?limit=2");
    assert_eq!(
        first["next_before"], first["events"][1]["_trackway"]["seq"],
        "a full page goes on from its last event"
    );
}

/// A filter the store cannot apply reads a bounded number of events per request: a source
/// whose events are all older than that is reached by following `next_before`.
#[test]
fn a_source_filter_reads_a_bounded_page_and_says_where_to_go_on() {
    let server = TestServer::start();
    let jobs =
        json!({"batch": [{"type": "track", "userId": "u", "event": "Job Ran", "messageId": "j1"}]});
    let (status, answer) = crate::support::post(
        &server.url,
        "/v1/batch",
        &[("authorization", &crate::support::basic(OTHER_KEY))],
        jobs.to_string().as_bytes(),
    );
    assert_eq!(status, 200, "{answer}");
    // More web events after it than one request reads for a filter (MAX_SCAN, 10,000).
    for chunk in 0..11 {
        let batch: Vec<Value> = (0..1000)
            .map(|i| json!({"type": "track", "userId": "u", "event": "Web", "messageId": format!("w{chunk}-{i}")}))
            .collect();
        send(&server, batch);
    }
    let (_, first) = server.admin("/api/events?source=jobs");
    assert_eq!(
        first["events"].as_array().unwrap().len(),
        0,
        "not read that far"
    );
    let before = first["next_before"]
        .as_i64()
        .expect("a short page says where to go on");
    let (_, second) = server.admin(&format!("/api/events?source=jobs&before={before}"));
    assert_eq!(ids(second["events"].as_array().unwrap()), ["j1"]);
    assert_eq!(second["next_before"], Value::Null);
}
