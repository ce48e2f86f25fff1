//! Outages of the shared database beyond a stopped server (guarantee 1): the database turned
//! read-only, the database out of disk (raised by a trigger, see below), and the network to it
//! cut (black-holed, not refused). In each: ingest answers 503 with `Retry-After`, never a
//! 200 before the commit; `/readyz` answers 503; nothing acknowledged is lost; and ingest
//! recovers by itself once the fault ends, without a restart.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::json;
use trackway_collector::storage::postgres::COMMIT_TIMEOUT;
use trackway_testkit::postgres::{self as pg, TestPostgres};
use trackway_testkit::proxy::CuttableProxy;

use crate::store_contract::runtime;
use crate::support::{TestServer, WRITE_KEY, agent, basic};

/// Requests sent during each fault, at once.
const DURING: usize = 3;

/// The answer to one ingest request: status, and whether it carried `Retry-After`.
fn ingest(collector: &TestServer, id: &str) -> (u16, bool) {
    let body = json!({"batch": [{"type": "track", "event": "E", "userId": "u", "messageId": id}]});
    let response = agent()
        .post(format!("{}/v1/batch", collector.url))
        .header("authorization", basic(WRITE_KEY))
        .header("content-type", "application/json")
        .send(body.to_string().as_bytes())
        .unwrap();
    let retry = response.headers().get("retry-after").is_some();
    (response.status().as_u16(), retry)
}

/// A collector (a group of one) on the database at `url`.
fn collector(url: &str, data: &std::path::Path) -> TestServer {
    let url = url.to_owned();
    TestServer::start_configured(data, move |config| {
        config.postgres = Some(url);
        // The default limits: the cut's requests wait for the store's own timeouts.
        config.header_timeout = trackway_collector::DEFAULT_HEADER_TIMEOUT;
        config.body_timeout = trackway_collector::DEFAULT_BODY_TIMEOUT;
    })
}

/// Runs one outage: a 200 before it, `fault`, every request during it a 503 with
/// `Retry-After` and `/readyz` 503, `heal`, then requests until one is acknowledged; then
/// checks that every acknowledged event is stored exactly once.
fn outage(collector: &TestServer, fault: impl FnOnce(), heal: impl FnOnce()) {
    assert_eq!(ingest(collector, "before"), (200, false));
    assert_eq!(collector.ready(), 200);
    fault();
    let during: Vec<(u16, bool)> = std::thread::scope(|scope| {
        let senders: Vec<_> = (0..DURING)
            .map(|i| scope.spawn(move || ingest(collector, &format!("during-{i}"))))
            .collect();
        senders.into_iter().map(|s| s.join().unwrap()).collect()
    });
    assert!(
        during.iter().all(|answer| *answer == (503, true)),
        "during the fault, each request a 503 with Retry-After: {during:?}"
    );
    assert_eq!(collector.ready(), 503, "ready during the fault");
    heal();
    let healed = Instant::now();
    let mut statuses = Vec::new();
    loop {
        let (status, retry) = ingest(collector, "after");
        statuses.push(status);
        if status == 200 {
            break;
        }
        assert!(status == 503 && retry, "{statuses:?}");
        assert!(
            healed.elapsed() < Duration::from_secs(60),
            "never recovered: {statuses:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    crate::support::eventually("ready again", || collector.ready() == 200);
    let mut stored: HashMap<String, usize> = HashMap::new();
    for event in collector.events("") {
        *stored
            .entry(event["messageId"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert_eq!(stored.get("before"), Some(&1), "{stored:?}");
    assert_eq!(stored.get("after"), Some(&1), "{stored:?}");
    // A request answered 503 may still have been committed (then its retry is a
    // duplicate), but never twice.
    assert!(stored.values().all(|n| *n == 1), "{stored:?}");
}

/// The SQLSTATE of `sql` run on a connection of its own at `url`, if it fails.
fn sqlstate(url: &str, sql: &str) -> Option<String> {
    let runtime = runtime();
    runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
            .batch_execute(sql)
            .await
            .err()
            .and_then(|e| e.code().map(|c| c.code().to_owned()))
    })
}

/// A probe write like the collector's own, to check that a fault is real.
const WRITE: &str = "INSERT INTO probe (collector, at) VALUES ('test', 0)
                     ON CONFLICT (collector) DO UPDATE SET at = excluded.at";

#[test]
fn a_database_turned_read_only_gets_503s_and_ingest_recovers_by_itself() {
    // A server of its own: read-only is set for the whole server, as a failover to a standby
    // or an operator would.
    let server = TestPostgres::new().unwrap();
    let url = server.url();
    let data = tempfile::tempdir().unwrap();
    let collector = collector(&url, data.path());
    let set = |on: &str| {
        server
            .psql(&format!(
                "ALTER SYSTEM SET default_transaction_read_only = {on}"
            ))
            .unwrap();
        server.psql("SELECT pg_reload_conf()").unwrap();
    };
    outage(
        &collector,
        || {
            set("on");
            // Reloaded by every session, the collector's pooled ones included.
            crate::support::eventually("the database is read-only", || {
                sqlstate(&url, WRITE).as_deref() == Some("25006")
            });
        },
        || set("off"),
    );
}

#[test]
fn a_database_raising_disk_full_from_a_trigger_gets_503s_and_ingest_recovers_by_itself() {
    // Not a real full disk (that needs a small file system, and so root): the database raises
    // the error a full disk raises, SQLSTATE 53100 (disk_full), on every write the collector
    // makes to take events or to probe.
    let (_server, url) = crate::store_contract::postgres_database("full");
    let data = tempfile::tempdir().unwrap();
    let collector = collector(&url, data.path());
    let fill = "CREATE FUNCTION disk_full() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    RAISE EXCEPTION 'could not extend file: No space left on device'
                        USING ERRCODE = 'disk_full';
                END $$;
                CREATE TRIGGER disk_full BEFORE INSERT OR UPDATE ON events
                    FOR EACH STATEMENT EXECUTE FUNCTION disk_full();
                CREATE TRIGGER disk_full BEFORE INSERT OR UPDATE ON probe
                    FOR EACH STATEMENT EXECUTE FUNCTION disk_full();";
    let free = "DROP TRIGGER disk_full ON events; DROP TRIGGER disk_full ON probe;
                DROP FUNCTION disk_full();";
    outage(
        &collector,
        || {
            assert_eq!(sqlstate(&url, fill), None);
            assert_eq!(sqlstate(&url, WRITE).as_deref(), Some("53100"));
        },
        || assert_eq!(sqlstate(&url, free), None),
    );
}

#[test]
fn a_network_cut_to_the_database_gets_503s_within_the_commit_timeout_and_recovers() {
    let server = pg::shared().unwrap();
    let name = pg::database_name("cut");
    server.create_database(&name).unwrap();
    let direct = server.url_for(&name);
    let proxy = CuttableProxy::start(([127, 0, 0, 1], server.port()).into()).unwrap();
    let through = direct.replace(
        &format!(":{}/", server.port()),
        &format!(":{}/", proxy.port()),
    );
    let data = tempfile::tempdir().unwrap();
    let collector = collector(&through, data.path());
    // Fills the pool with connections, idle when the network is cut.
    assert!(admin_at_once(&collector).iter().all(|s| *s == 200));
    let started = std::cell::Cell::new(None);
    outage(
        &collector,
        || {
            proxy.cut();
            started.set(Some(Instant::now()));
        },
        || {
            // Nothing hung for good: the requests during the cut were answered within the
            // commit timeout (they ran at once), plus a probe, plus slack for a loaded machine.
            let took = started.get().unwrap().elapsed();
            assert!(
                took < COMMIT_TIMEOUT * 3,
                "the answers during the cut took {took:?}"
            );
            // Reads are bounded too, also on the connections that sat idle in the pool when
            // the network was cut: the admin API answers an error rather than hanging until
            // the network returns (the test client gives up after 30 s).
            let statuses = admin_at_once(&collector);
            assert!(statuses.iter().all(|s| *s >= 500), "{statuses:?}");
            proxy.heal();
        },
    );
    assert!(
        proxy.connections() > 0,
        "the collector never used the proxy"
    );
}

/// The statuses of as many `/api/events` requests at once as the pool has connections.
fn admin_at_once(collector: &TestServer) -> Vec<u16> {
    std::thread::scope(|scope| {
        let readers: Vec<_> = (0..trackway_collector::storage::postgres::POOL_SIZE)
            .map(|_| scope.spawn(|| collector.admin("/api/events").0))
            .collect();
        readers.into_iter().map(|r| r.join().unwrap()).collect()
    })
}
