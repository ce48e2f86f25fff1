//! What only the PostgreSQL store has: several collectors on one database, transactions that
//! commit out of order, the schema's versions, and outages of the database.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use trackway_collector::storage::postgres::{PostgresStore, SCHEMA_VERSION, SEQUENCE_LOCK};
use trackway_collector::storage::{NewEvent, Store, StoreError};
use trackway_testkit::postgres::TestPostgres;

use crate::store_contract::{WINDOW, event, postgres_database, runtime};
use crate::support::{TestServer, WRITE_KEY, agent, basic};

/// A plain connection, as another program (or an older release) would hold one.
async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

#[test]
fn copies_of_a_batch_sent_to_two_collectors_at_once_are_stored_once() {
    let (_server, url) = postgres_database("two");
    let a: Arc<dyn Store> = Arc::new(PostgresStore::open(&url, WINDOW).unwrap());
    let b: Arc<dyn Store> = Arc::new(PostgresStore::open(&url, WINDOW).unwrap());
    let runtime = runtime();
    const ROUNDS: usize = 30;
    const BATCH: usize = 50;
    let stored = runtime.block_on(async {
        let mut stored = 0;
        for round in 0..ROUNDS {
            // A client's retry after a timeout, landing on the other collector while the
            // first copy is still being committed.
            let batch: Vec<NewEvent> = (0..BATCH)
                .map(|i| event("web", &format!("{round}-{i}"), (round * BATCH + i) as i64))
                .collect();
            let (x, y) = tokio::join!(a.append(batch.clone()), b.append(batch));
            let (x, y) = (x.unwrap(), y.unwrap());
            assert_eq!(x.stored + y.stored, BATCH, "round {round}: {x:?} {y:?}");
            assert_eq!(x.duplicates + y.duplicates, BATCH);
            stored += x.stored + y.stored;
        }
        stored
    });
    assert_eq!(stored, ROUNDS * BATCH);
    // Each collector counted what it stored; either one shows the sum.
    for store in [&a, &b] {
        let counts = runtime.block_on(store.counts()).unwrap();
        let total: u64 = counts.iter().map(|c| c.count).sum();
        assert_eq!(total, (ROUNDS * BATCH) as u64, "{counts:?}");
    }
    let all = runtime.block_on(a.read_after("web", 0, 100_000)).unwrap();
    assert_eq!(all.len(), ROUNDS * BATCH);
}

#[test]
fn a_cursor_never_skips_an_event_whose_transaction_commits_late() {
    let (_server, url) = postgres_database("late");
    let store: Arc<dyn Store> = Arc::new(PostgresStore::open(&url, WINDOW).unwrap());
    let runtime = runtime();
    runtime.block_on(async {
        // One writer's transaction has its seq and has not committed yet.
        let mut held = connect(&url).await;
        let transaction = held.transaction().await.unwrap();
        transaction
            .execute("SELECT pg_advisory_xact_lock($1)", &[&SEQUENCE_LOCK])
            .await
            .unwrap();
        let row = transaction
            .query_one(
                "INSERT INTO events (source, message_id, type, received_at, body)
                 VALUES ('web', 'late', 'track', 0, '{\"messageId\":\"late\"}') RETURNING seq",
                &[],
            )
            .await
            .unwrap();
        let late: i64 = row.get(0);
        // Later groups commit meanwhile (or wait: that is the store's business).
        let later = {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                store
                    .append(vec![event("web", "next-1", 1), event("web", "next-2", 2)])
                    .await
            })
        };
        // A destination reads after its cursor all the while, as the delivery engine does.
        let mut cursor = 0;
        let mut delivered = Vec::new();
        deliver_for_a_while(&store, &mut cursor, &mut delivered).await;
        transaction.commit().await.unwrap();
        later.await.unwrap().unwrap();
        deliver_for_a_while(&store, &mut cursor, &mut delivered).await;
        assert!(
            delivered.contains(&late),
            "the event committed late ({late}) was skipped: delivered {delivered:?}"
        );
        assert_eq!(delivered.len(), 3, "{delivered:?}");
    });
}

/// Reads after `cursor` for a while, moving it past each event read.
async fn deliver_for_a_while(store: &Arc<dyn Store>, cursor: &mut i64, delivered: &mut Vec<i64>) {
    let until = Instant::now() + Duration::from_millis(600);
    while Instant::now() < until {
        for event in store.read_after("web", *cursor, 100).await.unwrap() {
            *cursor = event.seq;
            delivered.push(event.seq);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn collectors_starting_at_once_migrate_once_and_a_release_too_old_refuses() {
    let (_server, url) = postgres_database("schema");
    let opened: Vec<_> = std::thread::scope(|scope| {
        let starts: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| PostgresStore::open(&url, WINDOW).map(|_| ())))
            .collect();
        starts.into_iter().map(|s| s.join().unwrap()).collect()
    });
    assert!(opened.iter().all(Result::is_ok), "{opened:?}");
    let runtime = runtime();
    runtime.block_on(async {
        let client = connect(&url).await;
        let versions = client
            .query("SELECT version FROM trackway_schema", &[])
            .await
            .unwrap();
        assert_eq!(versions.len(), SCHEMA_VERSION as usize);
        // The next release's change, readable by this one: it still starts.
        client
            .execute(
                "INSERT INTO trackway_schema (version, oldest_release) VALUES ($1, $2)",
                &[&(SCHEMA_VERSION + 1), &SCHEMA_VERSION],
            )
            .await
            .unwrap();
    });
    PostgresStore::open(&url, WINDOW).expect("one release behind still runs");
    runtime.block_on(async {
        let client = connect(&url).await;
        client
            .execute(
                "INSERT INTO trackway_schema (version, oldest_release) VALUES ($1, $2)",
                &[&(SCHEMA_VERSION + 2), &(SCHEMA_VERSION + 1)],
            )
            .await
            .unwrap();
    });
    let Err(refused) = PostgresStore::open(&url, WINDOW) else {
        panic!("a release two schema versions behind started");
    };
    let message = refused.to_string();
    assert!(message.contains("upgrade this collector"), "{message}");
}

#[test]
fn during_an_outage_ingest_answers_503_with_retry_after_and_recovers_by_itself() {
    // A server of its own: this test stops it.
    let mut server = TestPostgres::new().unwrap();
    let url = server.url();
    let store = PostgresStore::open(&url, WINDOW).unwrap();
    let data = tempfile::tempdir().unwrap();
    let collector = TestServer::with_store(data.path(), Arc::new(store));
    let send = |id: &str| {
        let body = serde_json::json!({"batch": [{"type": "track", "event": "E", "userId": "u", "messageId": id}]});
        agent()
            .post(format!("{}/v1/batch", collector.url))
            .header("authorization", basic(WRITE_KEY))
            .header("content-type", "application/json")
            .send(body.to_string().as_bytes())
            .unwrap()
    };
    assert_eq!(send("before").status(), 200);
    assert_eq!(collector.ready(), 200);
    server.stop().unwrap();
    let started = Instant::now();
    let refused = send("during");
    assert_eq!(refused.status(), 503);
    assert!(
        refused.headers().get("retry-after").is_some(),
        "no Retry-After"
    );
    // Told at once, not after a client's timeout (a connection refused fails fast).
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(collector.ready(), 503, "ready while the database is down");
    server.start().unwrap();
    let recovered = Instant::now();
    let mut statuses = Vec::new();
    loop {
        let status = send("after").status().as_u16();
        statuses.push(status);
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "{statuses:?}");
        assert!(
            recovered.elapsed() < Duration::from_secs(30),
            "never recovered: {statuses:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let ids: HashSet<String> = collector
        .events("")
        .iter()
        .map(|e| e["messageId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, HashSet::from(["before".into(), "after".into()]));
}

#[test]
fn subscribers_of_every_collector_hear_of_an_event_within_a_few_polls() {
    let (_server, url) = postgres_database("live");
    let a = PostgresStore::open(&url, WINDOW).unwrap();
    let b = PostgresStore::open(&url, WINDOW).unwrap();
    let runtime = runtime();
    let mut on_a = a.subscribe();
    let mut on_b = b.subscribe();
    // Let both polls pass what is stored before the subscription.
    std::thread::sleep(Duration::from_millis(500));
    runtime
        .block_on(a.append(vec![event("web", "seen-everywhere", 1)]))
        .unwrap();
    // From the commit, not before it: an fsync slowed by a loaded machine is not the poll's.
    let sent = Instant::now();
    for (name, live) in [("a", &mut on_a), ("b", &mut on_b)] {
        let heard = runtime
            .block_on(async { tokio::time::timeout(Duration::from_secs(5), live.recv()).await })
            .unwrap_or_else(|_| panic!("{name} never heard of the event"))
            .unwrap();
        assert!(heard.body.contains("seen-everywhere"), "{}", heard.body);
        // Many polls' worth, so that a slow poll query on a loaded machine does not fail the
        // test, yet far less than the seconds a slow or missing poll would take.
        let after = sent.elapsed();
        assert!(
            after < trackway_collector::storage::postgres::LIVE_POLL * 10,
            "{name} heard after {after:?}"
        );
        assert!(live.try_recv().is_err(), "{name} heard it twice");
    }
}

#[test]
fn stopping_the_database_for_5_s_under_load_loses_nothing_acknowledged() {
    // A server of its own: this test stops it.
    let mut server = TestPostgres::new().unwrap();
    let store = PostgresStore::open(&server.url(), WINDOW).unwrap();
    let data = tempfile::tempdir().unwrap();
    let collector = TestServer::with_store(data.path(), Arc::new(store));
    const SENDERS: usize = 4;
    // Bounded in count and in time: each sender stops at whichever comes first, once a
    // request it sent after the restart was acknowledged. Crash recovery, the restart and the
    // pool's reconnection can take many seconds on a loaded machine, so a sender not yet
    // acknowledged by then carries on, for at most RECOVERY more.
    const MAX_REQUESTS: usize = 2000;
    const LOAD: Duration = Duration::from_secs(12);
    const RECOVERY: Duration = Duration::from_secs(60);
    let outage_start = Instant::now() + Duration::from_secs(2);
    let restarted = std::sync::atomic::AtomicBool::new(false);
    let results: Vec<Vec<(String, u16, bool)>> = std::thread::scope(|scope| {
        let senders: Vec<_> = (0..SENDERS)
            .map(|s| {
                let url = collector.url.clone();
                let restarted = &restarted;
                scope.spawn(move || {
                    let agent = agent();
                    let mut sent = Vec::new();
                    let until = Instant::now() + LOAD;
                    let mut recovered = false;
                    for n in 0.. {
                        let done = n >= MAX_REQUESTS || Instant::now() >= until;
                        if done && (recovered || Instant::now() >= until + RECOVERY) {
                            break;
                        }
                        let after_restart = restarted.load(std::sync::atomic::Ordering::SeqCst);
                        let id = format!("{s}-{n}");
                        let body = serde_json::json!({"batch": [
                            {"type": "track", "event": "E", "userId": "u", "messageId": id}
                        ]});
                        let status = agent
                            .post(format!("{url}/v1/batch"))
                            .header("authorization", basic(WRITE_KEY))
                            .header("content-type", "application/json")
                            .send(body.to_string().as_bytes())
                            .map(|r| {
                                let retry = r.headers().get("retry-after").is_some();
                                (r.status().as_u16(), retry)
                            })
                            .unwrap_or((0, false));
                        sent.push((id, status.0, status.1 || status.0 != 503));
                        recovered |= after_restart && status.0 == 200;
                        if status.0 != 200 {
                            std::thread::sleep(Duration::from_millis(50));
                        }
                    }
                    sent
                })
            })
            .collect();
        std::thread::sleep(outage_start - Instant::now());
        server.stop().unwrap();
        std::thread::sleep(Duration::from_secs(5));
        server.start().unwrap();
        restarted.store(true, std::sync::atomic::Ordering::SeqCst);
        senders.into_iter().map(|s| s.join().unwrap()).collect()
    });
    let all: Vec<&(String, u16, bool)> = results.iter().flatten().collect();
    let statuses: HashSet<u16> = all.iter().map(|r| r.1).collect();
    assert!(
        statuses.is_subset(&HashSet::from([200, 503])),
        "only 200 or 503: {statuses:?}"
    );
    assert!(all.iter().all(|r| r.2), "a 503 without Retry-After");
    assert!(
        all.iter().any(|r| r.1 == 503),
        "the outage was never noticed"
    );
    // Recovered without a restart: the last request of every sender was acknowledged.
    for sender in &results {
        assert_eq!(
            sender.last().map(|r| r.1),
            Some(200),
            "not recovered within {RECOVERY:?} after the load ended"
        );
    }
    let stored: HashSet<String> = collector
        .events("")
        .iter()
        .map(|e| e["messageId"].as_str().unwrap().to_owned())
        .collect();
    let acknowledged: Vec<&String> = all.iter().filter(|r| r.1 == 200).map(|r| &r.0).collect();
    let lost: Vec<&&String> = acknowledged
        .iter()
        .filter(|id| !stored.contains(**id))
        .collect();
    assert!(lost.is_empty(), "acknowledged and lost: {lost:?}");
    assert!(
        acknowledged.len() > 100,
        "{} acknowledged",
        acknowledged.len()
    );
}

#[test]
fn a_version_1_database_is_upgraded_and_two_collectors_chart_one_minute_together() {
    let (_server, url) = postgres_database("traffic");
    let runtime = runtime();
    // A database as release 1 left it: no traffic table, schema version 1.
    drop(PostgresStore::open(&url, WINDOW).unwrap());
    runtime.block_on(async {
        let client = connect(&url).await;
        client
            .batch_execute("DROP TABLE traffic; DELETE FROM trackway_schema WHERE version > 1")
            .await
            .unwrap();
    });
    let a: Arc<dyn Store> = Arc::new(PostgresStore::open(&url, WINDOW).unwrap());
    let b: Arc<dyn Store> = Arc::new(PostgresStore::open(&url, WINDOW).unwrap());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    // Both commit into the same minute at once.
    let at = (now / 60_000) * 60_000 + 30_000;
    const EACH: usize = 40;
    runtime.block_on(async {
        let batch = |name: &str| -> Vec<NewEvent> {
            (0..EACH)
                .map(|i| event("web", &format!("{name}{i}"), at))
                .collect()
        };
        let (x, y) = tokio::join!(a.append(batch("a")), b.append(batch("b")));
        assert_eq!(x.unwrap().stored + y.unwrap().stored, 2 * EACH);
    });
    for store in [&a, &b] {
        let rows = runtime.block_on(store.traffic(0, Some("web"))).unwrap();
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(
            (rows[0].minute, rows[0].count),
            (at / 60_000, 2 * EACH as u64)
        );
    }
    // Each collector added to rows of its own: neither waited on the other's row lock.
    let writers: i64 = runtime.block_on(async {
        let client = connect(&url).await;
        let row = client
            .query_one("SELECT count(DISTINCT collector) FROM traffic", &[])
            .await
            .unwrap();
        row.get(0)
    });
    assert_eq!(writers, 2);
}

#[test]
fn a_database_that_refuses_the_collector_says_what_to_change() {
    let (server, url) = postgres_database("refusals");
    // No such database: the URL is wrong, and retrying will not help.
    let missing = server.url_for(&trackway_testkit::postgres::database_name("missing"));
    let Err(error) = PostgresStore::open(&missing, WINDOW) else {
        panic!("a database that does not exist opened");
    };
    assert!(
        matches!(error, StoreError::Misconfigured { .. }) && !error.retry_later(),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("check the --store URL"),
        "{error}"
    );
    // A database that takes no writes (as a standby does): read-only, named as such.
    let name = url.rsplit('/').next().unwrap().to_owned();
    server
        .psql(&format!(
            "ALTER DATABASE \"{name}\" SET default_transaction_read_only = on"
        ))
        .unwrap();
    let Err(error) = PostgresStore::open(&url, WINDOW) else {
        panic!("a read-only database opened");
    };
    assert!(
        matches!(error, StoreError::ReadOnly { .. }) && error.retry_later(),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .contains("point the collector at the primary database"),
        "{error}"
    );
}
