//! Acknowledged means stored: across restarts, retries, concurrency, and store failures.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use serde_json::json;
use trackway_collector::storage::sqlite::{DEFAULT_DEDUP_WINDOW, SqliteStore};
use trackway_collector::storage::{
    Appended, BoxFuture, Count, NewEvent, Query, Store, StoreError, StoredEvent, TrafficRow,
};

use crate::intercept::{Intercept, Intercepted};
use crate::support::{TestServer, WRITE_KEY, basic, post};

fn batch(prefix: &str, n: usize) -> Vec<u8> {
    let messages: Vec<_> = (0..n)
        .map(|i| json!({"type": "track", "userId": "u", "event": "E", "messageId": format!("{prefix}-{i}")}))
        .collect();
    json!({"batch": messages}).to_string().into_bytes()
}

#[test]
fn a_restart_keeps_every_acknowledged_event() {
    let temp = tempfile::tempdir().unwrap();
    let mut server = TestServer::start_in(temp.path());
    for round in 0..5 {
        let (status, _) = post(
            &server.url,
            "/v1/batch",
            &[("authorization", &basic(WRITE_KEY))],
            &batch(&format!("r{round}"), 100),
        );
        assert_eq!(status, 200);
    }
    server.stop();
    let server = TestServer::start_in(temp.path());
    let events = server.events("");
    assert_eq!(events.len(), 500);
    let (_, stats) = server.admin("/api/stats");
    assert_eq!(
        stats["total"], 500,
        "counts are rebuilt from the store: {stats}"
    );
}

#[test]
fn a_resent_batch_is_stored_once() {
    let server = TestServer::start();
    let body = batch("dup", 10);
    let auth = basic(WRITE_KEY);
    let (first_status, first) = post(&server.url, "/v1/batch", &[("authorization", &auth)], &body);
    let (second_status, second) =
        post(&server.url, "/v1/batch", &[("authorization", &auth)], &body);
    assert_eq!((first_status, second_status), (200, 200));
    assert!(first.get("duplicates").is_none());
    assert_eq!(second["duplicates"], 10);
    assert_eq!(server.events("").len(), 10);
}

#[test]
fn the_same_message_id_from_another_source_is_not_a_duplicate() {
    let server = TestServer::start();
    let body = batch("shared", 3);
    post(
        &server.url,
        "/v1/batch",
        &[("authorization", &basic(WRITE_KEY))],
        &body,
    );
    post(
        &server.url,
        "/v1/batch",
        &[("authorization", &basic(crate::support::OTHER_KEY))],
        &body,
    );
    assert_eq!(server.events("").len(), 6);
}

#[test]
fn many_concurrent_clients_each_event_stored_once() {
    let server = TestServer::start();
    std::thread::scope(|scope| {
        for client in 0..8 {
            let url = server.url.clone();
            scope.spawn(move || {
                let auth = basic(WRITE_KEY);
                for round in 0..20 {
                    let body = batch(&format!("c{client}-r{round}"), 50);
                    let (status, answer) =
                        post(&url, "/v1/batch", &[("authorization", &auth)], &body);
                    assert_eq!(status, 200, "{answer}");
                }
            });
        }
    });
    let events = server.events("");
    assert_eq!(events.len(), 8 * 20 * 50);
    let ids: HashSet<&str> = events
        .iter()
        .map(|e| e["messageId"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 8000);
    let seqs: HashSet<i64> = events
        .iter()
        .map(|e| e["_trackway"]["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs.len(), 8000);
}

/// A store whose every operation fails with the same error.
struct Failing(StoreError);

impl Failing {
    fn fail<T: Send + 'static>(&self) -> BoxFuture<'_, Result<T, StoreError>> {
        let error = self.0.clone();
        Box::pin(async move { Err(error) })
    }
}

/// A store whose disk is full.
fn full_disk() -> Failing {
    Failing(StoreError::Full {
        detail: "database or disk is full".into(),
    })
}

impl Store for Failing {
    fn append(&self, _: Vec<NewEvent>) -> BoxFuture<'_, Result<Appended, StoreError>> {
        self.fail()
    }
    fn query(&self, _: Query) -> BoxFuture<'_, Result<Vec<StoredEvent>, StoreError>> {
        self.fail()
    }
    fn counts(&self) -> BoxFuture<'_, Result<Vec<Count>, StoreError>> {
        self.fail()
    }
    fn traffic(
        &self,
        _: i64,
        _: Option<&str>,
    ) -> BoxFuture<'_, Result<Vec<TrafficRow>, StoreError>> {
        self.fail()
    }
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<StoredEvent>> {
        tokio::sync::broadcast::channel(1).1
    }
    fn read_after(
        &self,
        _: &str,
        _: i64,
        _: usize,
    ) -> BoxFuture<'_, Result<Vec<StoredEvent>, StoreError>> {
        self.fail()
    }
    fn get(&self, _: Vec<i64>) -> BoxFuture<'_, Result<Vec<StoredEvent>, StoreError>> {
        self.fail()
    }
    fn prune(&self, _: &str, _: i64, _: i64) -> BoxFuture<'_, Result<usize, StoreError>> {
        self.fail()
    }
    fn lag(&self, _: &str, _: i64) -> BoxFuture<'_, Result<u64, StoreError>> {
        self.fail()
    }
}

#[test]
fn a_store_that_cannot_write_answers_503_with_retry_after_never_200() {
    let temp = tempfile::tempdir().unwrap();
    let server = TestServer::with_store(temp.path(), Arc::new(full_disk()));
    let response = crate::support::agent()
        .post(format!("{}/v1/batch", server.url))
        .header("authorization", basic(WRITE_KEY))
        .header("origin", "https://shop.example")
        .send(&batch("full", 2)[..])
        .unwrap();
    assert_eq!(response.status().as_u16(), 503);
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let seconds = trackway_collector::RETRY_AFTER_SECONDS.to_string();
    assert_eq!(header("retry-after"), Some(seconds.clone()));
    // analytics.js reads both, so a page must be allowed to (issue #15, item 6).
    assert_eq!(header("x-ratelimit-reset"), Some(seconds));
    let exposed = header("access-control-expose-headers").unwrap_or_default();
    assert!(
        exposed.contains("retry-after") && exposed.contains("x-ratelimit-reset"),
        "{exposed}"
    );
    let body: serde_json::Value =
        serde_json::from_str(&response.into_body().read_to_string().unwrap()).unwrap();
    assert_eq!(body["success"], false);
}

/// GET `path` on the admin API: the status, `Retry-After`, and the body's `error`.
fn admin_failure(server: &TestServer, path: &str) -> (u16, Option<String>, String) {
    let response = crate::support::agent()
        .get(format!("{}{path}", server.url))
        .header(
            "authorization",
            format!("Bearer {}", crate::support::ADMIN_TOKEN),
        )
        .call()
        .unwrap();
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body: serde_json::Value =
        serde_json::from_str(&response.into_body().read_to_string().unwrap()).unwrap();
    let error = body["error"].as_str().unwrap_or_default().to_owned();
    (status, retry_after, error)
}

#[test]
fn admin_reads_answer_503_for_an_outage_and_500_for_corruption() {
    let temp = tempfile::tempdir().unwrap();
    let outage = Failing(StoreError::Unavailable {
        detail: "connection refused".into(),
    });
    let server = TestServer::with_store(temp.path(), Arc::new(outage));
    for path in ["/api/events", "/api/stats", "/api/traffic"] {
        let (status, retry_after, _) = admin_failure(&server, path);
        assert_eq!(status, 503, "{path}");
        let seconds = trackway_collector::RETRY_AFTER_SECONDS.to_string();
        assert_eq!(retry_after.as_deref(), Some(seconds.as_str()), "{path}");
    }
    drop(server);

    let temp = tempfile::tempdir().unwrap();
    let corrupt = Failing(StoreError::Corrupt {
        detail: "database disk image is malformed".into(),
    });
    let server = TestServer::with_store(temp.path(), Arc::new(corrupt));
    for path in ["/api/events", "/api/stats", "/api/traffic"] {
        let (status, retry_after, error) = admin_failure(&server, path);
        assert_eq!((status, retry_after), (500, None), "{path}");
        assert!(
            error.contains("restore the data from a backup"),
            "{path}: {error}"
        );
    }
    // Ingest still answers 503, so that the client keeps the events for later.
    let (status, _) = post(
        &server.url,
        "/v1/batch",
        &[("authorization", &basic(WRITE_KEY))],
        &batch("corrupt", 1),
    );
    assert_eq!(status, 503);
}

#[test]
fn a_data_directory_whose_database_is_not_sqlite_is_refused_as_corrupt() {
    let temp = tempfile::tempdir().unwrap();
    std::fs::write(
        temp.path()
            .join(trackway_collector::storage::sqlite::DATABASE_FILE),
        vec![b'x'; 8192],
    )
    .unwrap();
    let error = match trackway_collector::Collector::open(&crate::support::config(temp.path())) {
        Ok(_) => panic!("a file that is not a database opened"),
        Err(error) => error,
    };
    assert!(
        matches!(
            error,
            trackway_collector::CollectorError::Store(StoreError::Corrupt { .. })
        ),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("restore the data from a backup"),
        "{error}"
    );
}

#[test]
fn a_rejected_copy_does_not_make_the_fixed_event_a_duplicate() {
    let server = TestServer::start();
    let auth = basic(WRITE_KEY);
    let broken = json!({"batch": [{"type": "track", "userId": "u", "messageId": "fixable"}]});
    let fixed = json!({"batch": [{"type": "track", "userId": "u", "event": "Fixed", "messageId": "fixable"}]});
    post(
        &server.url,
        "/v1/batch",
        &[("authorization", &auth)],
        broken.to_string().as_bytes(),
    );
    post(
        &server.url,
        "/v1/batch",
        &[("authorization", &auth)],
        broken.to_string().as_bytes(),
    );
    let (_, answer) = post(
        &server.url,
        "/v1/batch",
        &[("authorization", &auth)],
        fixed.to_string().as_bytes(),
    );
    assert!(answer.get("duplicates").is_none(), "{answer}");
    let events = server.events("");
    assert_eq!(
        events.len(),
        2,
        "one rejected copy (the resend was a duplicate) and the fixed event"
    );
    assert_eq!(events[0]["event"], "Fixed");
}

/// A SQLite store whose disk can be filled: while `full` is set every write fails, as it does
/// on a full disk. Counts its probe writes.
struct FillableDisk {
    full: Arc<AtomicBool>,
    probes: Arc<AtomicUsize>,
}

impl FillableDisk {
    fn refuse(&self) -> Result<(), StoreError> {
        if self.full.load(Ordering::Relaxed) {
            return Err(StoreError::Full {
                detail: "database or disk is full".into(),
            });
        }
        Ok(())
    }
}

impl Intercept for FillableDisk {
    fn append<'a>(
        &'a self,
        inner: &'a SqliteStore,
        events: Vec<NewEvent>,
    ) -> BoxFuture<'a, Result<Appended, StoreError>> {
        Box::pin(async move {
            self.refuse()?;
            inner.append(events).await
        })
    }
    fn probe<'a>(&'a self, inner: &'a SqliteStore) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            self.probes.fetch_add(1, Ordering::Relaxed);
            self.refuse()?;
            inner.probe().await
        })
    }
}

fn status_of(server: &TestServer, path: &str) -> u16 {
    crate::support::agent()
        .get(format!("{}{path}", server.url))
        .call()
        .unwrap()
        .status()
        .as_u16()
}

#[test]
fn readyz_is_503_while_the_store_cannot_write_and_healthz_stays_200() {
    let temp = tempfile::tempdir().unwrap();
    let full = Arc::new(AtomicBool::new(true));
    let probes = Arc::new(AtomicUsize::new(0));
    let store = Intercepted {
        inner: SqliteStore::open(&temp.path().join("store"), DEFAULT_DEDUP_WINDOW).unwrap(),
        with: FillableDisk {
            full: Arc::clone(&full),
            probes: Arc::clone(&probes),
        },
    };
    let server = TestServer::with_store(temp.path(), Arc::new(store));
    // Idle and full from the start: no request has written, so a probe write decides.
    assert_eq!(server.ready(), 503);
    assert_eq!(
        status_of(&server, "/healthz"),
        200,
        "liveness is not readiness"
    );
    assert!(probes.load(Ordering::Relaxed) >= 1);
    // Room again: the next probe, once the failure has aged, puts it back in rotation.
    full.store(false, Ordering::Relaxed);
    crate::support::eventually("ready again", || server.ready() == 200);
    // A real write's success is evidence: no probe while it is fresh.
    let auth = basic(WRITE_KEY);
    let (status, _) = post(
        &server.url,
        "/v1/batch",
        &[("authorization", &auth)],
        &batch("a", 1),
    );
    assert_eq!(status, 200);
    let probed = probes.load(Ordering::Relaxed);
    assert_eq!(server.ready(), 200);
    assert_eq!(
        probes.load(Ordering::Relaxed),
        probed,
        "answered by the commit"
    );
    // The disk fills: the first failed commit takes it out of rotation at once, however
    // recent the last success.
    full.store(true, Ordering::Relaxed);
    let (status, _) = post(
        &server.url,
        "/v1/batch",
        &[("authorization", &auth)],
        &batch("b", 1),
    );
    assert_eq!(status, 503);
    assert_eq!(server.ready(), 503);
    assert_eq!(status_of(&server, "/healthz"), 200);
}

#[test]
fn readyz_of_an_idle_sqlite_store_is_200_after_a_probe_write() {
    let server = TestServer::start();
    // One probe may outlast its 2 s limit when an fsync is slow on a loaded machine; a store
    // that cannot write never answers 200.
    crate::support::eventually("an idle store is ready", || server.ready() == 200);
}
