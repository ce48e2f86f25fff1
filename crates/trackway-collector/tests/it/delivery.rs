//! Delivery to destinations: at least once, in order, honouring `integrations`, with dead
//! letters and replay.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use trackway_collector::delivery::kind::{
    DEFAULT_SIGNATURE_TOLERANCE, DestinationConfig, DestinationError, Kind, SignatureError, verify,
};
use trackway_collector::{Config, ConfigError};
use trackway_testkit::{FakeApi, Reply};

use crate::support::{TestServer, eventually, send};

fn webhook(name: &str, url: String, secret: Option<&str>) -> DestinationConfig {
    DestinationConfig {
        name: name.into(),
        kind: Kind::Webhook {
            url,
            headers: [("X-Team".to_owned(), "growth".to_owned())].into(),
            secret: secret.map(str::to_owned),
            batch_size: 1,
            timeout: Some(Duration::from_secs(5)),
        },
        retry_window: None,
        backoff_base: Some(Duration::from_millis(1)),
        backoff_cap: Some(Duration::from_millis(20)),
        concurrency: None,
    }
}

fn file(name: &str, dir: &std::path::Path, max_bytes: u64) -> DestinationConfig {
    DestinationConfig {
        name: name.into(),
        kind: Kind::File {
            dir: dir.to_owned(),
            max_bytes,
        },
        retry_window: None,
        backoff_base: Some(Duration::from_millis(1)),
        backoff_cap: Some(Duration::from_millis(20)),
        concurrency: None,
    }
}

fn with_destinations(destinations: Vec<DestinationConfig>) -> impl FnOnce(&mut Config) {
    move |config| config.sources[0].destinations = destinations
}

fn track(id: &str) -> Value {
    json!({"type": "track", "userId": "u", "event": "Delivered", "messageId": id, "properties": {"id": id}})
}

/// messageId -> how many acknowledged requests carried it.
fn acknowledged(api: &FakeApi) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for request in api.requests().iter().filter(|r| r.reply.is_success()) {
        let body = request.json.clone().unwrap_or(Value::Null);
        let messages = match body {
            Value::Array(items) => items,
            other => vec![other],
        };
        for message in messages {
            *seen
                .entry(message["messageId"].as_str().unwrap_or_default().to_owned())
                .or_default() += 1;
        }
    }
    seen
}

fn destination<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == name)
        .unwrap()
}

#[test]
fn a_webhook_that_fails_five_times_then_succeeds_gets_each_message_once() {
    let hook = FakeApi::start();
    hook.push_replies((0..5).map(|_| Reply::Status(503)));
    let temp = tempfile::tempdir().unwrap();
    let url = format!("{}/hook", hook.url());
    let server = TestServer::start_configured(
        temp.path(),
        with_destinations(vec![webhook("Webhook", url, Some("s3cret"))]),
    );
    send(&server, vec![track("w1"), track("w2"), track("w3")]);
    eventually("three messages acknowledged", || {
        acknowledged(&hook).len() == 3
    });
    // The fake logs each request before answering it, and the collector books the batch only
    // after the last answer: wait for the bookkeeping, not just the traffic.
    eventually("three messages booked as delivered", || {
        let (_, status) = server.admin("/api/destinations");
        destination(&status, "Webhook")["delivered"] == 3
    });
    let seen = acknowledged(&hook);
    assert!(seen.values().all(|n| *n == 1), "each once: {seen:?}");
    let requests = hook.requests();
    assert_eq!(requests.len(), 8, "five failures, then three deliveries");
    let order: Vec<String> = requests
        .iter()
        .filter(|r| r.reply.is_success())
        .map(|r| {
            r.json.as_ref().unwrap()["messageId"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(order, ["w1", "w2", "w3"], "in order");
    for request in &requests {
        assert_eq!(request.path, "/hook");
        assert_eq!(request.header("x-team"), Some("growth"));
        let signature = request.header("x-signature").unwrap();
        assert_eq!(
            verify(
                b"s3cret",
                signature,
                &request.raw_body,
                std::time::SystemTime::now(),
                DEFAULT_SIGNATURE_TOLERANCE
            ),
            Ok(())
        );
    }
    let (_, status) = server.admin("/api/destinations");
    let webhook = destination(&status, "Webhook");
    assert_eq!(
        (webhook["delivered"].as_u64(), webhook["lag"].as_u64()),
        (Some(3), Some(0))
    );
    assert_eq!(webhook["kind"], "webhook");
    let events = server.events("");
    assert_eq!(events[0]["_trackway"]["delivery"]["Webhook"], "delivered");
}

#[test]
fn a_400_becomes_a_dead_letter_and_replay_delivers_it_once_fixed() {
    dead_letter_and_replay(None);
}

#[test]
fn on_postgres_a_400_becomes_a_dead_letter_and_replay_delivers_it_once_fixed() {
    let (_server, url) = crate::store_contract::postgres_database("replay");
    dead_letter_and_replay(Some(url));
}

/// On the embedded store, or on the PostgreSQL database at `postgres`.
fn dead_letter_and_replay(postgres: Option<String>) {
    let hook = FakeApi::start();
    let broken = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let rule_broken = std::sync::Arc::clone(&broken);
    hook.set_rule(move |request| {
        let poisoned = request
            .json
            .as_ref()
            .is_some_and(|b| b["messageId"] == "poison");
        (poisoned && rule_broken.load(std::sync::atomic::Ordering::SeqCst))
            .then_some(Reply::Status(400))
    });
    let temp = tempfile::tempdir().unwrap();
    let server = TestServer::start_configured(temp.path(), |config| {
        config.postgres = postgres;
        with_destinations(vec![webhook("Webhook", hook.url(), None)])(config);
    });
    send(&server, vec![track("ok-1"), track("poison"), track("ok-2")]);
    eventually("the good ones delivered", || acknowledged(&hook).len() == 2);
    eventually("the bad one dead-lettered", || {
        let (_, status) = server.admin("/api/destinations");
        destination(&status, "Webhook")["dead_lettered"] == 1
    });
    let (_, letters) = server.admin("/api/dead-letters?destination=Webhook");
    let letters = letters["dead_letters"].as_array().unwrap().clone();
    assert_eq!(letters.len(), 1);
    assert!(
        letters[0]["reason"].as_str().unwrap().contains("HTTP 400"),
        "{}",
        letters[0]
    );
    assert_eq!(letters[0]["event"]["messageId"], "poison");
    let events = server.events("");
    let poison = events.iter().find(|e| e["messageId"] == "poison").unwrap();
    assert!(
        poison["_trackway"]["delivery"]["Webhook"]
            .as_str()
            .unwrap()
            .starts_with("dead letter: HTTP 400")
    );

    // Still broken: replay fails and says so.
    let (status, report) = crate::support::post_admin(&server, "/api/replay?destination=Webhook");
    assert_eq!(status, 200);
    assert_eq!(report, json!({"replayed": 0, "failed": 1, "missing": 0}));

    broken.store(false, std::sync::atomic::Ordering::SeqCst);
    let (_, report) = crate::support::post_admin(&server, "/api/replay?destination=Webhook");
    assert_eq!(report, json!({"replayed": 1, "failed": 0, "missing": 0}));
    assert_eq!(acknowledged(&hook).get("poison"), Some(&1));
    let (_, letters) = server.admin("/api/dead-letters");
    assert!(letters["dead_letters"].as_array().unwrap().is_empty());
    // The counts follow: the replayed event is delivered, no longer a dead letter.
    let (_, status) = server.admin("/api/destinations");
    let webhook = destination(&status, "Webhook");
    assert_eq!(
        (
            webhook["delivered"].as_u64(),
            webhook["dead_lettered"].as_u64(),
            webhook["open_dead_letters"].as_u64()
        ),
        (Some(3), Some(0), Some(0)),
        "{webhook}"
    );
    // Replaying it again changes nothing.
    let (_, report) = crate::support::post_admin(&server, "/api/replay");
    assert_eq!(report, json!({"replayed": 0, "failed": 0, "missing": 0}));
    let (_, status) = server.admin("/api/destinations");
    assert_eq!(destination(&status, "Webhook")["delivered"], 3);
}

/// The debugger asks for a page of events' delivery state at once: per event and destination,
/// delivered, dead letter or pending (an event waits behind one being retried, in order).
#[test]
fn a_page_of_events_says_delivered_dead_letter_or_pending_per_destination() {
    let hook = FakeApi::start();
    hook.set_rule(|request| {
        let id = request.json.as_ref().map(|b| b["messageId"].clone());
        match id.as_ref().and_then(Value::as_str) {
            Some("poison") => Some(Reply::Status(400)),
            Some("stuck") => Some(Reply::Status(503)),
            _ => None,
        }
    });
    let temp = tempfile::tempdir().unwrap();
    let server = TestServer::start_configured(
        temp.path(),
        with_destinations(vec![webhook("Webhook", hook.url(), None)]),
    );
    // The state is the bookkeeping's, stored after each read batch: the first two are done
    // before the next two arrive, so that the stuck one does not hold them in its batch.
    send(&server, vec![track("ok-1"), track("poison")]);
    eventually("the first two done", || {
        let (_, status) = server.admin("/api/destinations");
        destination(&status, "Webhook")["dead_lettered"] == 1
    });
    send(&server, vec![track("stuck"), track("ok-2")]);
    eventually("the stuck one retried", || {
        let stuck = |r: &&trackway_testkit::Received| {
            r.json.as_ref().is_some_and(|b| b["messageId"] == "stuck")
        };
        hook.requests().iter().filter(stuck).count() >= 2
    });
    let events = server.events("");
    let find = |id: &str| {
        events
            .iter()
            .find(|e| e["messageId"] == id)
            .unwrap()
            .clone()
    };
    let state = |id: &str| find(id)["_trackway"]["delivery"]["Webhook"].clone();
    assert_eq!(state("ok-1"), "delivered");
    assert!(
        state("poison")
            .as_str()
            .unwrap()
            .starts_with("dead letter: HTTP 400"),
        "{}",
        state("poison")
    );
    assert_eq!(state("stuck"), "pending");
    assert_eq!(state("ok-2"), "pending", "behind the stuck one, in order");

    // `/api/delivery` answers the same for the events asked about, and only for them.
    let seq = |id: &str| find(id)["_trackway"]["seq"].as_i64().unwrap();
    let (status, body) = server.admin(&format!(
        "/api/delivery?seq={},{}",
        seq("poison"),
        seq("ok-2")
    ));
    assert_eq!(status, 200, "{body}");
    let delivery = body["delivery"].as_object().unwrap();
    assert_eq!(delivery.len(), 2, "{body}");
    assert_eq!(
        delivery[&seq("poison").to_string()]["Webhook"],
        state("poison")
    );
    assert_eq!(delivery[&seq("ok-2").to_string()]["Webhook"], "pending");
    let (status, body) = server.admin("/api/delivery?seq=1,two");
    assert_eq!(status, 400, "{body}");
}

#[test]
fn an_unknown_destination_is_a_404_naming_the_destinations_in_replay_and_listing() {
    let hook = FakeApi::start();
    let temp = tempfile::tempdir().unwrap();
    let server = TestServer::start_configured(
        temp.path(),
        with_destinations(vec![
            webhook("Webhook", hook.url(), None),
            file("Archive", &temp.path().join("archive"), 1 << 20),
        ]),
    );
    let replayed = crate::support::post_admin(&server, "/api/replay?destination=Nope");
    // An empty list would read as "nothing failed" for a misspelt name.
    let listed = server.admin("/api/dead-letters?destination=Nope");
    for (status, body) in [replayed, listed] {
        assert_eq!(status, 404, "{body}");
        let error = body["error"].as_str().unwrap();
        assert!(
            error.contains("\"Nope\"") && error.contains("Archive, Webhook"),
            "{error}"
        );
    }
    let (status, body) = server.admin("/api/dead-letters?destination=Archive");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["dead_letters"], serde_json::json!([]));
}

#[test]
fn integrations_decide_which_destinations_get_a_message() {
    let hook = FakeApi::start();
    let temp = tempfile::tempdir().unwrap();
    let archive = temp.path().join("archive");
    let server = TestServer::start_configured(
        &temp.path().join("data"),
        with_destinations(vec![
            webhook("Webhook", hook.url(), None),
            file("Archive", &archive, 1 << 30),
        ]),
    );
    let with = |id: &str, integrations: Value| {
        let mut message = track(id);
        if !integrations.is_null() {
            message["integrations"] = integrations;
        }
        message
    };
    send(
        &server,
        vec![
            with("absent", Value::Null),
            with("all-false", json!({"All": false})),
            with(
                "all-false-webhook-on",
                json!({"All": false, "Webhook": true}),
            ),
            with("webhook-off", json!({"Webhook": false})),
            with(
                "webhook-options",
                json!({"All": false, "Webhook": {"channel": "#sales"}}),
            ),
            with("wrong-case", json!({"All": false, "webhook": true})),
            with("archive-only", json!({"All": false, "Archive": true})),
        ],
    );
    eventually("both destinations caught up", || {
        let (_, status) = server.admin("/api/destinations");
        ["Webhook", "Archive"]
            .iter()
            .all(|d| destination(&status, d)["lag"] == 0)
    });
    let mut to_webhook: Vec<String> = acknowledged(&hook).into_keys().collect();
    to_webhook.sort();
    assert_eq!(
        to_webhook,
        ["absent", "all-false-webhook-on", "webhook-options"]
    );
    let mut to_archive: Vec<String> = std::fs::read_dir(&archive)
        .unwrap()
        .flat_map(|f| {
            std::fs::read_to_string(f.unwrap().path())
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .map(|line| {
            serde_json::from_str::<Value>(&line).unwrap()["messageId"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    to_archive.sort();
    assert_eq!(to_archive, ["absent", "archive-only", "webhook-off"]);
    let (_, status) = server.admin("/api/destinations");
    assert_eq!(destination(&status, "Webhook")["skipped"], 4);
    let events = server.events("");
    let skipped = events
        .iter()
        .find(|e| e["messageId"] == "all-false")
        .unwrap();
    assert_eq!(
        skipped["_trackway"]["delivery"],
        json!({"Webhook": "skipped", "Archive": "skipped"})
    );
}

#[test]
fn file_destinations_rotate_by_size_and_keep_every_line_once() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("files");
    let server = TestServer::start_configured(
        &temp.path().join("data"),
        with_destinations(vec![file("Archive", &dir, 2_000)]),
    );
    for round in 0..10 {
        send(
            &server,
            (0..10).map(|n| track(&format!("f{round}-{n}"))).collect(),
        );
    }
    eventually("the archive caught up", || {
        let (_, status) = server.admin("/api/destinations");
        destination(&status, "Archive")["delivered"] == 100
    });
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|f| f.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 2, "rotated: {files:?}");
    let day = &trackway_protocol::format_timestamp(std::time::SystemTime::now())[..10];
    assert!(
        files
            .iter()
            .any(|f| f.file_name().unwrap().to_string_lossy() == format!("web-{day}.jsonl")),
        "{files:?}"
    );
    let mut ids = Vec::new();
    for path in &files {
        let text = std::fs::read_to_string(path).unwrap();
        for line in text.lines() {
            ids.push(
                serde_json::from_str::<Value>(line).unwrap()["messageId"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            );
        }
    }
    let unique: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!((ids.len(), unique.len()), (100, 100));
}

#[test]
fn forward_relays_to_a_second_collector() {
    let upstream = TestServer::start();
    let temp = tempfile::tempdir().unwrap();
    let forward = DestinationConfig {
        name: "Upstream".into(),
        kind: Kind::Forward {
            host: upstream.url.clone(),
            write_key: crate::support::OTHER_KEY.into(),
        },
        retry_window: None,
        backoff_base: Some(Duration::from_millis(1)),
        backoff_cap: Some(Duration::from_millis(20)),
        concurrency: None,
    };
    let edge = TestServer::start_configured(temp.path(), with_destinations(vec![forward]));
    let mut original = track("fw-1");
    original["timestamp"] = json!("2026-01-01T00:00:00.000Z");
    send(&edge, vec![original, track("fw-2")]);
    eventually("the upstream has both", || upstream.events("").len() == 2);
    // The upstream stores the events before it answers, and the edge books them only after
    // that answer: wait for the edge's bookkeeping before reading its delivery state.
    eventually("the edge booked both as delivered", || {
        let (_, status) = edge.admin("/api/destinations");
        destination(&status, "Upstream")["delivered"] == 2
    });
    let events = upstream.events("");
    let relayed = events.iter().find(|e| e["messageId"] == "fw-1").unwrap();
    assert_eq!(
        relayed["_trackway"]["source"], "jobs",
        "sent with the forward's write key"
    );
    assert_eq!(
        relayed["originalTimestamp"], "2026-01-01T00:00:00.000Z",
        "the client's time travels"
    );
    assert_eq!(relayed["event"], "Delivered");
    let edge_event = edge
        .events("")
        .into_iter()
        .find(|e| e["messageId"] == "fw-1")
        .unwrap();
    assert_eq!(edge_event["_trackway"]["delivery"]["Upstream"], "delivered");
}

#[test]
fn forward_keeps_accepting_while_the_upstream_is_down() {
    let down = FakeApi::unused_addr();
    let temp = tempfile::tempdir().unwrap();
    let forward = DestinationConfig {
        name: "Upstream".into(),
        kind: Kind::Forward {
            host: format!("http://{down}"),
            write_key: "k".into(),
        },
        retry_window: None,
        backoff_base: Some(Duration::from_millis(5)),
        backoff_cap: Some(Duration::from_millis(50)),
        concurrency: None,
    };
    let edge = TestServer::start_configured(temp.path(), with_destinations(vec![forward]));
    send(&edge, vec![track("held-1"), track("held-2")]);
    let (_, status) = edge.admin("/api/destinations");
    assert_eq!(destination(&status, "Upstream")["delivered"], 0);
    let upstream = FakeApi::start_at(down);
    eventually("delivered once the upstream is up", || {
        acknowledged_batches(&upstream) == 2
    });
}

/// Messages acknowledged by a fake Tracking API (batches).
fn acknowledged_batches(api: &FakeApi) -> usize {
    api.accepted_messages().len()
}

#[test]
fn retention_prunes_delivered_events_and_keeps_undelivered_ones() {
    let healthy = FakeApi::start();
    let down = FakeApi::start();
    down.set_rule(|_| Some(Reply::Status(503)));
    let temp = tempfile::tempdir().unwrap();
    let server = TestServer::start_configured(temp.path(), |config| {
        config.sources[0].destinations = vec![webhook("Webhook", healthy.url(), None)];
        config.sources[1].destinations = vec![webhook("Down", down.url(), None)];
        config.retention = Some(Duration::ZERO);
        config.dedup_window = Duration::ZERO;
        config.prune_interval = Duration::from_millis(20);
    });
    send(&server, vec![track("kept-briefly")]);
    let body = json!({"batch": [track("undelivered")]}).to_string();
    let auth = crate::support::basic(crate::support::OTHER_KEY);
    assert_eq!(
        crate::support::post(
            &server.url,
            "/v1/batch",
            &[("authorization", &auth)],
            body.as_bytes()
        )
        .0,
        200
    );
    eventually("the delivered event is pruned", || {
        server
            .events("")
            .iter()
            .all(|e| e["messageId"] != "kept-briefly")
    });
    assert_eq!(acknowledged(&healthy).get("kept-briefly"), Some(&1));
    let events = server.events("");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["messageId"], "undelivered");
    // After the newest event was pruned, new events still get new, higher seqs: the
    // destination's cursor would skip a reused one.
    send(&server, vec![track("after-prune")]);
    eventually("the next event is delivered too", || {
        acknowledged(&healthy).contains_key("after-prune")
    });
}

#[test]
fn retention_keeps_dead_lettered_events_for_replay() {
    retention_keeps_dead_letters(None);
}

#[test]
fn on_postgres_retention_keeps_dead_lettered_events_for_replay() {
    let (_server, url) = crate::store_contract::postgres_database("retention");
    retention_keeps_dead_letters(Some(url));
}

/// On the embedded store, or on the PostgreSQL database at `postgres`.
fn retention_keeps_dead_letters(postgres: Option<String>) {
    let hook = FakeApi::start();
    let broken = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let rule_broken = std::sync::Arc::clone(&broken);
    hook.set_rule(move |_| {
        rule_broken
            .load(std::sync::atomic::Ordering::SeqCst)
            .then_some(Reply::Status(400))
    });
    let other = FakeApi::start();
    let temp = tempfile::tempdir().unwrap();
    let server = TestServer::start_configured(temp.path(), |config| {
        config.postgres = postgres;
        config.sources[0].destinations = vec![webhook("Webhook", hook.url(), None)];
        config.sources[1].destinations = vec![webhook("Other", other.url(), None)];
        config.retention = Some(Duration::ZERO);
        config.dedup_window = Duration::ZERO;
        config.prune_interval = Duration::from_millis(20);
    });
    send(&server, vec![track("refused")]);
    eventually("dead-lettered", || {
        let (_, status) = server.admin("/api/destinations");
        destination(&status, "Webhook")["dead_lettered"] == 1
    });
    // Instead of sleeping and hoping a prune round ran: an event of the other source, sent
    // after the dead letter, is pruned by a round that may have looked at this source just
    // before; a second one sent after that is pruned by a round that began after the first
    // was pruned, and so looked at this source after the dead letter was recorded.
    for id in ["other-1", "other-2"] {
        let body = json!({"batch": [track(id)]}).to_string();
        let auth = crate::support::basic(crate::support::OTHER_KEY);
        let (status, _) = crate::support::post(
            &server.url,
            "/v1/batch",
            &[("authorization", &auth)],
            body.as_bytes(),
        );
        assert_eq!(status, 200);
        eventually("a prune round passed", || {
            acknowledged(&other).contains_key(id)
                && server.events("").iter().all(|e| e["messageId"] != id)
        });
    }
    let kept: Vec<Value> = server.events("");
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(kept[0]["messageId"], "refused", "kept for replay");
    broken.store(false, std::sync::atomic::Ordering::SeqCst);
    let (_, report) = crate::support::post_admin(&server, "/api/replay");
    assert_eq!(report["replayed"], 1, "{report}");
}

#[test]
fn an_expired_chunk_becomes_dead_letters_without_a_window_per_event() {
    let hook = FakeApi::start();
    hook.set_rule(|_| Some(Reply::Status(503)));
    let temp = tempfile::tempdir().unwrap();
    let mut destination = webhook("Webhook", hook.url(), None);
    destination.kind = Kind::Webhook {
        url: hook.url(),
        headers: Default::default(),
        secret: None,
        batch_size: 10,
        timeout: None,
    };
    destination.retry_window = Some(Duration::from_millis(100));
    let server = TestServer::start_configured(temp.path(), with_destinations(vec![destination]));
    send(&server, (0..10).map(|n| track(&format!("x{n}"))).collect());
    eventually("all ten dead-lettered", || {
        let (_, status) = server.admin("/api/destinations");
        destination_status(&status)["dead_lettered"] == 10
    });
    let requests = hook.requests();
    assert!(
        requests
            .iter()
            .all(|r| r.json.as_ref().unwrap().as_array().unwrap().len() == 10),
        "never split"
    );
}

#[test]
fn events_past_the_retry_window_become_dead_letters() {
    let hook = FakeApi::start();
    hook.set_rule(|_| Some(Reply::Status(503)));
    let temp = tempfile::tempdir().unwrap();
    let mut destination = webhook("Webhook", hook.url(), None);
    // Long enough for several tries even when the first connection is slow on a loaded
    // machine (a 50 ms window could run out during the first try); short enough that the
    // test does not wait long for the dead letter.
    destination.retry_window = Some(Duration::from_secs(1));
    let server = TestServer::start_configured(temp.path(), with_destinations(vec![destination]));
    send(&server, vec![track("too-late")]);
    eventually("dead-lettered once the window ran out", || {
        let (_, status) = server.admin("/api/destinations");
        destination_status(&status)["dead_lettered"] == 1
    });
    let (_, letters) = server.admin("/api/dead-letters");
    let reason = letters["dead_letters"][0]["reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        reason.contains("still failing after") && reason.contains("HTTP 503"),
        "{reason}"
    );
    assert!(
        hook.requests().len() >= 2,
        "it was retried before giving up"
    );
}

fn destination_status(status: &Value) -> &Value {
    &status["destinations"][0]
}

#[test]
fn a_hung_destination_blocks_neither_ingest_nor_the_others() {
    let stuck = FakeApi::start();
    stuck.set_rule(|_| Some(Reply::Hang(Duration::from_secs(60))));
    let healthy = FakeApi::start();
    let temp = tempfile::tempdir().unwrap();
    let mut hung = webhook("Stuck", stuck.url(), None);
    hung.kind = Kind::Webhook {
        url: stuck.url(),
        headers: Default::default(),
        secret: None,
        batch_size: 1,
        timeout: Some(Duration::from_secs(60)),
    };
    let server = TestServer::start_configured(
        temp.path(),
        with_destinations(vec![hung, webhook("Healthy", healthy.url(), None)]),
    );
    for round in 0..5 {
        send(
            &server,
            (0..10).map(|n| track(&format!("h{round}-{n}"))).collect(),
        );
    }
    eventually("the healthy destination has everything", || {
        acknowledged(&healthy).len() == 50
    });
    assert_eq!(server.events("").len(), 50, "ingest went on");
    let (_, status) = server.admin("/api/destinations");
    assert_eq!(destination(&status, "Stuck")["delivered"], 0);
    assert_eq!(destination(&status, "Stuck")["lag"], 50);
}

#[test]
fn a_destination_configured_for_concurrency_has_several_requests_in_flight() {
    let hook = FakeApi::start();
    hook.set_rule(|_| Some(Reply::Delay(Duration::from_millis(50))));
    let temp = tempfile::tempdir().unwrap();
    let mut destination = webhook("Webhook", hook.url(), None);
    destination.concurrency = Some(4);
    let server = TestServer::start_configured(temp.path(), with_destinations(vec![destination]));
    send(&server, (0..20).map(|n| track(&format!("c{n}"))).collect());
    eventually("all delivered", || acknowledged(&hook).len() == 20);
    assert!(acknowledged(&hook).values().all(|n| *n == 1));
    let connections: std::collections::HashSet<_> =
        hook.requests().iter().map(|r| r.peer).collect();
    assert!(
        connections.len() > 1,
        "requests overlapped on several connections"
    );
}

#[test]
fn forward_with_concurrency_relays_every_event_once() {
    let upstream = FakeApi::start();
    let temp = tempfile::tempdir().unwrap();
    let forward = DestinationConfig {
        name: "Upstream".into(),
        kind: Kind::Forward {
            host: upstream.url(),
            write_key: "k".into(),
        },
        retry_window: None,
        backoff_base: Some(Duration::from_millis(1)),
        backoff_cap: Some(Duration::from_millis(20)),
        concurrency: Some(2),
    };
    let edge = TestServer::start_configured(temp.path(), with_destinations(vec![forward]));
    for round in 0..30 {
        send(
            &edge,
            (0..100).map(|n| track(&format!("p{round}-{n}"))).collect(),
        );
    }
    eventually("all 3000 relayed", || {
        let (_, status) = edge.admin("/api/destinations");
        destination(&status, "Upstream")["delivered"] == 3000
    });
    let mut seen: HashMap<String, usize> = HashMap::new();
    for message in upstream.accepted_messages() {
        *seen
            .entry(message["messageId"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert_eq!(seen.len(), 3000);
    assert!(seen.values().all(|n| *n == 1), "each relayed once");
}

#[test]
fn forward_relays_a_full_chunk_of_large_events_in_order() {
    // 1000 events of 12 KB: twice the forward client's 6 MiB memory budget in one chunk.
    const EVENTS: usize = 1000;
    const PER_POST: usize = 30;
    let padding = "x".repeat(12 * 1024);
    let id = |n: usize| format!("large-{n:04}");
    let temp = tempfile::tempdir().unwrap();
    {
        // Stored before the destination exists, so that it starts with one full chunk.
        let edge = TestServer::start_in(temp.path());
        for first in (0..EVENTS).step_by(PER_POST) {
            let batch = (first..(first + PER_POST).min(EVENTS))
                .map(|n| {
                    let mut message = track(&id(n));
                    message["properties"]["padding"] = json!(padding);
                    message
                })
                .collect();
            send(&edge, batch);
        }
    }
    // A slow but healthy upstream: the client cannot send the chunk as fast as it is handed
    // over, so it fills its budget.
    let upstream = FakeApi::start();
    upstream.set_rule(|_| Some(Reply::Delay(Duration::from_millis(20))));
    let forward = DestinationConfig {
        name: "Upstream".into(),
        kind: Kind::Forward {
            host: upstream.url(),
            write_key: "k".into(),
        },
        // Short, so that a chunk that cannot go through becomes dead letters within the test.
        retry_window: Some(Duration::from_secs(3)),
        backoff_base: Some(Duration::from_millis(1)),
        backoff_cap: Some(Duration::from_millis(20)),
        concurrency: None,
    };
    let edge = TestServer::start_configured(temp.path(), with_destinations(vec![forward]));
    eventually("the chunk is delivered or dead", || {
        let (_, status) = edge.admin("/api/destinations");
        let upstream = destination(&status, "Upstream");
        upstream["lag"] == 0
    });
    let (_, status) = edge.admin("/api/destinations");
    let status = destination(&status, "Upstream");
    assert_eq!(
        (
            status["delivered"].as_u64(),
            status["open_dead_letters"].as_u64()
        ),
        (Some(EVENTS as u64), Some(0)),
        "{status}"
    );
    let relayed: Vec<String> = upstream
        .accepted_messages()
        .iter()
        .map(|m| m["messageId"].as_str().unwrap().to_owned())
        .collect();
    let expected: Vec<String> = (0..EVENTS).map(id).collect();
    assert!(
        relayed == expected,
        "each once, in order: {} relayed",
        relayed.len()
    );
}

/// A configuration of two sources, each with one file destination: `(source, destination,
/// dir)`.
fn two_file_sources(
    root: &Path,
    first: (&str, &str, &Path),
    second: (&str, &str, &Path),
) -> Config {
    let mut config = crate::support::config(root);
    config.sources = [
        (first, "wk-first-0123456789"),
        (second, "wk-second-0123456789"),
    ]
    .into_iter()
    .map(
        |((source, destination, dir), key)| trackway_collector::Source {
            destinations: vec![file(destination, dir, 1 << 20)],
            ..trackway_collector::Source::new(source, vec![key.into()])
        },
    )
    .collect();
    config
}

/// Why opening `config` failed; it must fail.
fn refusal(config: &Config) -> String {
    match trackway_collector::Collector::open(config) {
        Ok(_) => panic!("the configuration was accepted"),
        Err(error) => error.to_string(),
    }
}

#[test]
fn a_destination_name_with_a_slash_is_refused_so_bookkeeping_keys_cannot_collide() {
    // Source "a/b" with destination "c", and source "a" with destination "b/c", would share
    // the key "a/b/c" of their cursor and dead letters.
    let temp = tempfile::tempdir().unwrap();
    let out = temp.path().join("out");
    let mut config = two_file_sources(temp.path(), ("a/b", "c", &out), ("a", "b/c", &out));
    let error = refusal(&config);
    assert!(error.contains("\"b/c\""), "{error}");
    assert!(error.contains('/'), "{error}");
    // A slash in a source name alone is fine: the key splits at its last slash.
    config.sources[1].destinations[0].name = "b".into();
    assert!(trackway_collector::Collector::open(&config).is_ok());
}

#[test]
fn two_file_destinations_that_would_write_the_same_files_are_refused() {
    // "web.app" and "web_app" make the same file names; in one dir they would share files,
    // and one's failed write would cut the other's delivered lines.
    let temp = tempfile::tempdir().unwrap();
    let shared = temp.path().join("out");
    let mut config = two_file_sources(
        temp.path(),
        ("web.app", "Archive", &shared),
        ("web_app", "Backup", &shared),
    );
    let error = refusal(&config);
    assert!(
        error.contains("\"Backup\"") && error.contains("web.app/Archive"),
        "{error}"
    );
    // So would two file destinations of one source in one dir.
    config.sources[1].destinations.clear();
    config.sources[0]
        .destinations
        .push(file("Copy", &shared, 1 << 20));
    refusal(&config);
    // The same dir by another path is the same dir.
    std::fs::create_dir_all(&shared).unwrap();
    config.sources[0].destinations[1] = file("Copy", &shared.join("..").join("out"), 1 << 20);
    refusal(&config);
    // A dir of its own is fine.
    config.sources[0].destinations[1] = file("Copy", &temp.path().join("copy"), 1 << 20);
    assert!(trackway_collector::Collector::open(&config).is_ok());
}

#[test]
fn retry_after_zero_is_spaced_like_a_plain_503() {
    // Backoff base and cap alike: a plain 503 waits a draw below 250 ms; a `Retry-After: 0`
    // must wait no less (it used to be retried at once, for the whole retry window).
    const BACKOFF: Duration = Duration::from_millis(250);
    const WATCHED: Duration = Duration::from_secs(5);
    let eager = FakeApi::start();
    eager.set_rule(|_| Some(Reply::RetryAfter(503, "0".into())));
    let plain = FakeApi::start();
    plain.set_rule(|_| Some(Reply::Status(503)));
    let spaced = |name: &str, url: String| {
        let mut destination = webhook(name, url, None);
        destination.backoff_base = Some(BACKOFF);
        destination.backoff_cap = Some(BACKOFF);
        destination
    };
    let temp = tempfile::tempdir().unwrap();
    let server = TestServer::start_configured(
        temp.path(),
        with_destinations(vec![
            spaced("Eager", eager.url()),
            spaced("Plain", plain.url()),
        ]),
    );
    send(&server, vec![track("retried")]);
    std::thread::sleep(WATCHED);
    let (eager_attempts, plain_attempts) = (eager.requests().len(), plain.requests().len());
    assert!(
        plain_attempts >= 2,
        "the plain 503 was retried: {plain_attempts}"
    );
    assert!(
        eager_attempts <= plain_attempts + 1,
        "Retry-After: 0 got {eager_attempts} attempts in {WATCHED:?}, a plain 503 {plain_attempts}"
    );
}

#[test]
fn webhook_signatures_cover_a_timestamp_so_an_old_request_is_refused() {
    let hook = FakeApi::start();
    let temp = tempfile::tempdir().unwrap();
    let server = TestServer::start_configured(
        temp.path(),
        with_destinations(vec![webhook("Webhook", hook.url(), Some("s3cret"))]),
    );
    let before = std::time::SystemTime::now();
    send(&server, vec![track("signed")]);
    eventually("delivered", || acknowledged(&hook).len() == 1);
    let request = hook.requests().pop().unwrap();
    let signature = request.header("x-signature").unwrap().to_owned();
    let check = |body: &[u8], now| {
        verify(
            b"s3cret",
            &signature,
            body,
            now,
            DEFAULT_SIGNATURE_TOLERANCE,
        )
    };
    let stamped: u64 = signature
        .strip_prefix("t=")
        .and_then(|rest| rest.split(',').next())
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no timestamp first: {signature}"));
    let sent_after = before
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        stamped >= sent_after,
        "stamped when sent: {stamped} < {sent_after}"
    );
    assert_eq!(
        check(&request.raw_body, std::time::SystemTime::now()),
        Ok(())
    );
    // The same request sent again ten minutes later is refused...
    let later = std::time::SystemTime::now() + Duration::from_secs(600);
    assert!(matches!(
        check(&request.raw_body, later),
        Err(SignatureError::OutsideTolerance { .. })
    ));
    // ... and so is a changed body.
    assert_eq!(
        check(b"{}", std::time::SystemTime::now()),
        Err(SignatureError::Mismatch)
    );
}

#[test]
fn a_destination_that_cannot_be_built_is_refused_naming_its_source_and_what_is_wrong() {
    let temp = tempfile::tempdir().unwrap();
    let mut config = crate::support::config(temp.path());
    let source = config.sources[0].name.clone();
    config.sources[0].destinations = vec![file("Archive", &temp.path().join("out"), 0)];
    let error = match trackway_collector::Collector::open(&config) {
        Ok(_) => panic!("the configuration was accepted"),
        Err(error) => error,
    };
    let trackway_collector::CollectorError::Config(ConfigError::Destination {
        source_name,
        destination,
        error: DestinationError::ZeroMaxBytes,
    }) = &error
    else {
        panic!("not a destination error: {error:?}");
    };
    assert_eq!((source_name, destination.as_str()), (&source, "Archive"));
    let message = error.to_string();
    assert!(
        message.contains(&format!("source {source:?}, destination \"Archive\""))
            && message.contains("max_bytes must be above zero"),
        "{message}"
    );
}

#[test]
fn a_webhook_with_an_empty_secret_is_refused_at_start() {
    let temp = tempfile::tempdir().unwrap();
    let mut config = crate::support::config(temp.path());
    config.sources[0].destinations =
        vec![webhook("Webhook", "http://127.0.0.1:9/".into(), Some(""))];
    let error = refusal(&config);
    assert!(error.contains("secret is empty"), "{error}");
}
