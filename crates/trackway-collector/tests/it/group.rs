//! Several collectors on one PostgreSQL database: each destination delivered by one collector
//! at a time (a lease with an epoch), taken over when its holder dies, fenced when it lost it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use trackway_collector::delivery::LEASE_TTL;
use trackway_collector::delivery::kind::{DestinationConfig, Kind};
use trackway_collector::storage::postgres::LIVE_POLL;

use crate::store_contract::postgres_database;
use crate::support::{TestServer, eventually, send};

/// The destination's key in the bookkeeping (`<source>/<name>`).
const KEY: &str = "web/File";

/// A collector on `url` whose file destination writes into `archive` (each machine its own).
fn collector(url: &str, data_dir: &Path, archive: PathBuf) -> TestServer {
    let url = url.to_owned();
    TestServer::start_configured(data_dir, move |config| {
        config.postgres = Some(url);
        config.sources[0].destinations = vec![DestinationConfig {
            name: "File".into(),
            kind: Kind::File {
                dir: archive,
                max_bytes: 1 << 20,
            },
            retry_window: None,
            backoff_base: None,
            backoff_cap: None,
            concurrency: None,
        }];
    })
}

/// Lines in every file under `dir`.
fn lines_in(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                .map(|text| text.lines().count())
                .sum()
        })
        .unwrap_or(0)
}

fn batch(prefix: &str, n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| json!({"type": "track", "event": "E", "userId": "u", "messageId": format!("{prefix}-{i}")}))
        .collect()
}

/// Runs `sql` on the database at `url`; returns the first column of the first row, if any.
fn sql(url: &str, sql: &str) -> Option<i64> {
    let runtime = crate::store_contract::runtime();
    runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        let rows = client.query(sql, &[]).await.unwrap();
        rows.first().map(|r| r.get::<_, i64>(0))
    })
}

#[test]
fn each_destination_is_delivered_by_one_collector_at_a_time() {
    let (_server, url) = postgres_database("group");
    let dirs = tempfile::tempdir().unwrap();
    // Configured alike, as a group should be: one archive directory for both (a shared
    // volume); its lock goes with the lease.
    let archive = |_: &str| dirs.path().join("archive");
    let a = collector(&url, &dirs.path().join("a"), archive("a"));
    let b = collector(&url, &dirs.path().join("b"), archive("b"));
    send(&a, batch("a", 10));
    send(&b, batch("b", 10));
    eventually("every event archived", || lines_in(&archive("a")) >= 20);
    // Time for a second deliverer, if there were one, to archive them again.
    std::thread::sleep(Duration::from_millis(1500));
    let archived = lines_in(&archive("a"));
    assert_eq!(archived, 20, "archived twice or more: {archived} lines");
    // Both collectors show the one shared progress, once the deliverer has committed its
    // cursor (just after it writes the lines).
    for collector in [&a, &b] {
        eventually("the shared progress shows every event", || {
            let (status, body) = collector.admin("/api/destinations");
            assert_eq!(status, 200);
            body["destinations"][0]["delivered"] == 20
        });
    }
}

#[test]
fn a_dead_holders_lease_is_taken_over_within_15_s() {
    let (_server, url) = postgres_database("takeover");
    // The schema, then a collector that took the lease an instant ago and died (kill -9):
    // it never renews nor releases it.
    drop(
        trackway_collector::storage::postgres::PostgresStore::open(
            &url,
            crate::store_contract::WINDOW,
        )
        .unwrap(),
    );
    // Before the lease is written, so that the time since is never less than the lease's age.
    let inserted = Instant::now();
    sql(
        &url,
        &format!(
            "INSERT INTO delivery_cursors (destination, seq, epoch, holder, expires_at)
             VALUES ('{KEY}', 0, 1, 'dead', now() + interval '{} milliseconds') RETURNING epoch",
            LEASE_TTL.as_millis()
        ),
    );
    let dirs = tempfile::tempdir().unwrap();
    let archive = dirs.path().join("archive");
    let live = collector(&url, &dirs.path().join("live"), archive.clone());
    // After the live collector started, so that its start-up on a loaded machine does not
    // count against the 15 s.
    let died = Instant::now();
    send(&live, batch("m", 5));
    eventually("the live collector takes the lease over", || {
        lines_in(&archive) == 5
    });
    // Not before the dead holder's lease expired (it might only be paused), and well within
    // 15 s of its last renewal.
    let since_inserted = inserted.elapsed();
    assert!(
        since_inserted >= LEASE_TTL - Duration::from_millis(500),
        "taken early: {since_inserted:?} after the lease was written"
    );
    let took = died.elapsed();
    assert!(took <= Duration::from_secs(15), "taken over after {took:?}");
    // The first batch after the takeover may repeat the dead holder's: counted as such (its
    // cursor is stored just after its lines are written).
    eventually("the batch's cursor is stored", || {
        live.admin("/api/destinations").1["destinations"][0]["delivered"] == 5
    });
    let (_, body) = live.admin("/api/destinations");
    assert_eq!(body["destinations"][0]["redelivered"], 5, "{body}");
}

#[test]
fn a_collector_that_lost_its_lease_cannot_move_the_cursor() {
    let (_server, url) = postgres_database("fence");
    let dirs = tempfile::tempdir().unwrap();
    let archive = dirs.path().join("archive");
    let holder = collector(&url, &dirs.path().join("holder"), archive.clone());
    send(&holder, batch("before", 5));
    eventually("delivered while held", || lines_in(&archive) == 5);
    let cursor = |url: &str| {
        sql(
            url,
            &format!("SELECT seq FROM delivery_cursors WHERE destination = '{KEY}'"),
        )
        .unwrap()
    };
    // The batch's cursor is stored just after its lines are written.
    eventually("the holder stored its cursor", || cursor(&url) > 0);
    let at_the_theft = cursor(&url);
    // Another collector takes the lease (the holder was paused past its expiry): a new epoch.
    sql(
        &url,
        &format!(
            "UPDATE delivery_cursors SET holder = 'thief', epoch = epoch + 1,
                 expires_at = now() + interval '60 seconds'
             WHERE destination = '{KEY}' RETURNING epoch"
        ),
    );
    send(&holder, batch("after", 5));
    send(&holder, batch("later", 5));
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        cursor(&url),
        at_the_theft,
        "the fenced collector moved the cursor"
    );
    // It may have sent the batch in flight once more (at least once), and no more.
    let archived = lines_in(&archive);
    assert!(
        archived <= 15,
        "kept delivering without its lease: {archived} lines"
    );
    let (_, body) = holder.admin("/api/destinations");
    assert_eq!(body["destinations"][0]["delivered"], 5, "{body}");
}

/// The messageIds of one webhook request (a single message or a JSON array of them).
fn ids_in(request: &trackway_testkit::Received) -> Vec<String> {
    let messages = match request.json.clone() {
        Some(Value::Array(items)) => items,
        Some(other) => vec![other],
        None => Vec::new(),
    };
    messages
        .iter()
        .map(|m| m["messageId"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// A collector on `url` delivering `web` to the webhook at `hook` in chunks of `CHUNK`.
fn webhook_collector(url: &str, data_dir: &Path, hook: String) -> TestServer {
    let url = url.to_owned();
    TestServer::start_configured(data_dir, move |config| {
        config.postgres = Some(url);
        config.header_timeout = trackway_collector::DEFAULT_HEADER_TIMEOUT;
        config.body_timeout = trackway_collector::DEFAULT_BODY_TIMEOUT;
        config.sources[0].destinations = vec![DestinationConfig {
            name: "Hook".into(),
            kind: Kind::Webhook {
                url: hook,
                headers: Default::default(),
                secret: None,
                batch_size: CHUNK,
                timeout: Some(Duration::from_secs(30)),
            },
            retry_window: None,
            backoff_base: Some(Duration::from_millis(10)),
            backoff_cap: Some(Duration::from_millis(100)),
            concurrency: None,
        }];
    })
}

/// Events per webhook request in the network-cut test.
const CHUNK: usize = 5;

#[test]
fn a_collector_cut_off_from_the_database_loses_its_lease_and_cannot_move_the_cursor() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use trackway_testkit::postgres as pg;
    use trackway_testkit::proxy::CuttableProxy;
    use trackway_testkit::{FakeApi, Reply};

    let server = pg::shared().unwrap();
    let name = pg::database_name("cutlease");
    let direct = server.create_database(&name).unwrap();
    let proxy = CuttableProxy::start(([127, 0, 0, 1], server.port()).into()).unwrap();
    let through = direct.replace(
        &format!(":{}/", server.port()),
        &format!(":{}/", proxy.port()),
    );
    // One webhook; each collector calls it on a path of its own, so that the receiver can
    // tell who delivered what. The chunk of "slow" events takes 3 s to answer, and the
    // receiver says when it starts on it: the database is cut while it is in flight.
    let hook = FakeApi::start();
    let slow_arrived = Arc::new(AtomicBool::new(false));
    let arrived = Arc::clone(&slow_arrived);
    hook.set_rule(move |request| {
        let slow = ids_in(request).iter().any(|id| id.starts_with("slow"));
        (slow && request.path == "/a").then(|| {
            arrived.store(true, Ordering::SeqCst);
            Reply::Delay(Duration::from_secs(3))
        })
    });
    let dirs = tempfile::tempdir().unwrap();
    let a = webhook_collector(
        &through,
        &dirs.path().join("a"),
        format!("{}/a", hook.url()),
    );
    send(&a, batch("first", 10));
    eventually("A delivers while it holds the lease", || {
        hook.requests().len() == 10 / CHUNK
    });
    let b = webhook_collector(&direct, &dirs.path().join("b"), format!("{}/b", hook.url()));
    send(&a, batch("slow", CHUNK));
    eventually("A's slow chunk is in flight", || {
        slow_arrived.load(Ordering::SeqCst)
    });
    proxy.cut();
    let cut = Instant::now();
    send(&b, batch("during", 10));
    let on_b = |hook: &FakeApi| -> Vec<String> {
        hook.requests()
            .iter()
            .filter(|r| r.path == "/b" && r.reply.is_success())
            .flat_map(ids_in)
            .collect()
    };
    eventually("B takes the lease over and delivers", || {
        on_b(&hook)
            .iter()
            .filter(|id| id.starts_with("during"))
            .count()
            == 10
    });
    // Measured at the takeover itself, B's first request (it starts again with A's slow
    // chunk): delivering the rest afterwards is not what the bound is about.
    let took = hook
        .requests()
        .iter()
        .filter(|r| r.path == "/b")
        .map(|r| r.arrived)
        .min()
        .expect("B delivered")
        .saturating_duration_since(cut);
    // Not before A's lease could have expired (it renews every 3 s, for 10 s), and within
    // 15 s.
    assert!(
        took >= LEASE_TTL - Duration::from_secs(3) - Duration::from_millis(500),
        "taken while A's lease was live: {took:?}"
    );
    assert!(took <= Duration::from_secs(15), "taken over after {took:?}");
    proxy.heal();
    // A, back on the network, takes events again, and B delivers them: A stopped.
    let healed = Instant::now();
    eventually("A takes events again", || {
        let (status, _) = crate::support::post(
            &a.url,
            "/v1/batch",
            &[(
                "authorization",
                &crate::support::basic(crate::support::WRITE_KEY),
            )],
            json!({"batch": batch("after", 10)}).to_string().as_bytes(),
        );
        assert!(status == 200 || status == 503, "{status}");
        assert!(
            healed.elapsed() < Duration::from_secs(60),
            "A never recovered"
        );
        status == 200
    });
    eventually("B delivers what A took", || {
        on_b(&hook)
            .iter()
            .filter(|id| id.starts_with("after"))
            .count()
            == 10
    });
    // Time for A to deliver something, if it still believed it held the lease.
    std::thread::sleep(Duration::from_secs(3));
    let requests = hook.requests();
    let on_a_after_cut: Vec<String> = requests
        .iter()
        .filter(|r| r.path == "/a" && r.arrived > cut)
        .flat_map(ids_in)
        .collect();
    assert!(
        on_a_after_cut.is_empty(),
        "A delivered after the cut: {on_a_after_cut:?}"
    );
    // Every event arrived; only A's chunk in flight arrived twice (B sent it again).
    let mut seen: std::collections::HashMap<String, usize> = Default::default();
    for request in requests.iter().filter(|r| r.reply.is_success()) {
        for id in ids_in(request) {
            *seen.entry(id).or_default() += 1;
        }
    }
    assert_eq!(seen.len(), 10 + CHUNK + 10 + 10, "{seen:?}");
    let twice: Vec<&String> = seen
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, _)| id)
        .collect();
    assert!(
        twice.iter().all(|id| id.starts_with("slow")) && seen.values().all(|n| *n <= 2),
        "repeated beyond A's chunk in flight: {seen:?}"
    );
    assert_eq!(twice.len(), CHUNK, "{seen:?}");
    // A's cursor update for its slow chunk, held by the network and sent after the heal,
    // named its old epoch: fenced. The counts are B's alone, the same on both collectors.
    for collector in [&a, &b] {
        let (_, body) = collector.admin("/api/destinations");
        let hook = &body["destinations"][0];
        assert_eq!(hook["delivered"], 10 + CHUNK + 10 + 10, "{body}");
        assert!(
            hook["redelivered"].as_u64().unwrap() >= CHUNK as u64,
            "B's resending of A's chunk not counted: {body}"
        );
    }
}

#[test]
fn every_collector_shows_the_same_events_counts_destinations_and_dead_letters() {
    use std::io::BufRead as _;
    use trackway_testkit::{FakeApi, Reply};

    let (_server, url) = postgres_database("oneview");
    let hook = FakeApi::start();
    hook.set_rule(|request| {
        ids_in(request)
            .iter()
            .any(|id| id == "poison")
            .then_some(Reply::Status(400))
    });
    let dirs = tempfile::tempdir().unwrap();
    let a = webhook_collector(&url, &dirs.path().join("a"), hook.url());
    let b = webhook_collector(&url, &dirs.path().join("b"), hook.url());

    // A's live stream shows an event B stored, within a few polls.
    let response = crate::support::agent()
        .get(format!("{}/api/stream", a.url))
        .header(
            "authorization",
            format!("Bearer {}", crate::support::ADMIN_TOKEN),
        )
        .call()
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let (lines_tx, lines) = std::sync::mpsc::channel::<(String, Instant)>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(response.into_body().into_reader()).lines() {
            let Ok(line) = line else { return };
            if let Some(data) = line.strip_prefix("data: ") {
                let event: Value = serde_json::from_str(data).unwrap_or_default();
                let id = event["messageId"].as_str().unwrap_or_default().to_owned();
                if lines_tx.send((id, Instant::now())).is_err() {
                    return;
                }
            }
        }
    });
    // Past A's first poll, so that the subscription is in place before B stores.
    std::thread::sleep(Duration::from_millis(500));
    send(&b, batch("live", 1));
    let stored = Instant::now();
    let heard = loop {
        let (id, at) = lines
            .recv_timeout(Duration::from_secs(30))
            .expect("A's stream never showed B's event");
        if id == "live-0" {
            break at;
        }
    };
    // Many polls' worth, so that a commit or a poll query slowed by a loaded machine does
    // not fail the test; a stream that only heard of B's events some other way (or never)
    // takes far longer.
    let after = heard.saturating_duration_since(stored);
    assert!(
        after < LIVE_POLL * 10,
        "A's stream showed B's event after {after:?}"
    );

    // Events of every kind, spread over both collectors.
    let track = |id: &str, user: &str, name: &str| json!({"type": "track", "event": name, "userId": user, "messageId": id});
    send(
        &a,
        vec![
            track("a1", "ann", "Signed Up"),
            track("a2", "ann", "Clicked"),
            json!({"type": "identify", "userId": "ann", "messageId": "a3", "traits": {"plan": "pro"}}),
        ],
    );
    send(
        &b,
        vec![
            track("b1", "bob", "Clicked"),
            track("poison", "bob", "Clicked"),
            json!({"type": "page", "userId": "bob", "name": "Home", "messageId": "b2"}),
            // Rejected: a track without its event name is stored with the reason.
            json!({"type": "track", "userId": "bob", "messageId": "b3"}),
        ],
    );
    let jobs = json!({"batch": [track("j1", "cron", "Ran")]}).to_string();
    let (status, _) = crate::support::post(
        &a.url,
        "/v1/batch",
        &[(
            "authorization",
            &crate::support::basic(crate::support::OTHER_KEY),
        )],
        jobs.as_bytes(),
    );
    assert_eq!(status, 200);
    eventually("delivery settled, the poison dead-lettered", || {
        let (_, body) = a.admin("/api/destinations");
        let hook = &body["destinations"][0];
        hook["lag"] == 0 && hook["dead_lettered"] == 1
    });

    let same = |path: &str| -> Value {
        let (status_a, on_a) = a.admin(path);
        let (status_b, on_b) = b.admin(path);
        assert_eq!((status_a, status_b), (200, 200), "{path}: {on_a} / {on_b}");
        assert_eq!(on_a, on_b, "{path} differs between the collectors");
        on_a
    };
    let ids = |body: &Value| -> Vec<String> {
        body["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["messageId"].as_str().unwrap().to_owned())
            .collect()
    };
    let mut all = ids(&same("/api/events?limit=100"));
    all.sort();
    assert_eq!(
        all,
        ["a1", "a2", "a3", "b1", "b2", "b3", "j1", "live-0", "poison"],
        "both collectors' events"
    );
    // Paging, three at a time, newest first, page for page the same.
    let mut paged = Vec::new();
    let mut path = "/api/events?limit=3".to_owned();
    loop {
        let page = same(&path);
        paged.extend(ids(&page));
        match page["next_before"].as_i64() {
            Some(before) => path = format!("/api/events?limit=3&before={before}"),
            None => break,
        }
    }
    assert_eq!(paged.len(), 9, "{paged:?}");
    paged.sort();
    assert_eq!(paged, all);
    for (filter, expected) in [
        ("type=identify", vec!["a3"]),
        ("userId=ann", vec!["a3", "a2", "a1"]),
        ("q=Clicked", vec!["poison", "b1", "a2"]),
        ("source=jobs", vec!["j1"]),
        ("status=rejected", vec!["b3"]),
    ] {
        let body = same(&format!("/api/events?{filter}"));
        assert_eq!(ids(&body), expected, "{filter}");
    }
    let stats = same("/api/stats");
    assert!(stats.to_string().contains("identify"), "{stats}");
    let destinations = same("/api/destinations");
    assert_eq!(destinations["destinations"][0]["dead_lettered"], 1);
    let letters = same("/api/dead-letters");
    let letters = letters["dead_letters"].as_array().unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0]["event"]["messageId"], "poison");
    same("/api/dead-letters?destination=Hook");
    // A replay through B, once the receiver takes it, shows on A.
    hook.set_rule(|_| None);
    let (status, report) = crate::support::post_admin(&b, "/api/replay?destination=Hook");
    assert_eq!(status, 200);
    assert_eq!(report, json!({"replayed": 1, "failed": 0, "missing": 0}));
    let letters = same("/api/dead-letters");
    assert_eq!(letters["dead_letters"], json!([]));
    let destinations = same("/api/destinations");
    assert_eq!(destinations["destinations"][0]["dead_lettered"], 0);
    assert_eq!(destinations["destinations"][0]["open_dead_letters"], 0);
    let (_, report) = crate::support::post_admin(&a, "/api/replay");
    assert_eq!(report, json!({"replayed": 0, "failed": 0, "missing": 0}));
}
