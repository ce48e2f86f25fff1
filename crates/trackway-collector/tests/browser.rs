//! The debugger page, and Segment's browser library analytics.js (`@segment/analytics-next`)
//! against the collector, in a real headless Chromium driven by playwright-core.
//!
//! Needs Debian's `chromium` and `npm ci` in `tests/browser/`; `scripts/test` (the README's
//! test command) installs both. A binary of its own so that its one slow setup runs once.

use std::io::Write as _;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::json;
use trackway_collector::delivery::kind::{DestinationConfig, Kind};
use trackway_collector::storage::sqlite::SqliteStore;
use trackway_collector::storage::{Appended, BoxFuture, NewEvent, Store, StoreError};
use trackway_collector::{Collector, Config, Source};

#[path = "it/intercept.rs"]
mod intercept;
use intercept::{Intercept, Intercepted};

const WRITE_KEY: &str = "wk-browser-0123456789";
/// The second source's key, for the debugger's source filter.
const APP_KEY: &str = "wk-app-0123456789";
/// Events sent after the seed: more than the debugger's first page (200), so the seed is
/// found only by asking the server (a search, or loading older events).
const FILLERS: usize = 250;
const ADMIN_TOKEN: &str = "browser-admin-token-0123456789";

#[test]
fn the_debugger_shows_events_live_and_safely() {
    let browser_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(
        browser_dir.join("node_modules/playwright-core").exists(),
        "playwright-core is not installed: run scripts/test, or `npm ci` in {}",
        browser_dir.display()
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "no Chromium at {chromium}: run scripts/test (installs Debian's chromium) or set CHROMIUM"
    );

    // A webhook that refuses one event until the script creates `accept`, so the page has a
    // dead letter to show, and then to replay.
    let temp = tempfile::tempdir().unwrap();
    let accept = temp.path().join("accept");
    let hook = trackway_testkit::FakeApi::start();
    let accepting = accept.clone();
    hook.set_rule(move |request| {
        let hostile = request
            .json
            .as_ref()
            .is_some_and(|m| m["userId"] == "<b>mallory</b>");
        (hostile && !accepting.exists()).then_some(trackway_testkit::Reply::Status(400))
    });
    let mut config = Config::new(
        temp.path(),
        vec![
            Source::new("web", vec![WRITE_KEY.into()]),
            Source::new("app", vec![APP_KEY.into()]),
        ],
        ADMIN_TOKEN.into(),
    );
    config.sources[0].destinations = vec![DestinationConfig {
        name: "Hook".into(),
        kind: Kind::Webhook {
            url: hook.url(),
            headers: Default::default(),
            secret: None,
            batch_size: 1,
            timeout: None,
        },
        retry_window: None,
        backoff_base: None,
        backoff_cap: None,
        concurrency: None,
    }];
    let history = past_traffic(temp.path());
    let collector = Collector::open(&config).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = runtime.spawn(collector.serve(listener, async {
        let _ = stopped.await;
    }));

    let seed = json!({"writeKey": WRITE_KEY, "batch": [
        {"type": "identify", "userId": "ada", "traits": {"email": "ada@example.com"}},
        {"type": "track", "userId": "ada", "event": "Order Completed",
         "properties": {"revenue": 42.5, "skus": "SKU-0001,".repeat(80)}},
        {"type": "track", "userId": "<b>mallory</b>", "event": "<img src=x onerror=window.__xss=1;alert(1)>",
         "properties": {"x": "</script><script>window.__xss=2</script>"}},
        {"type": "track", "userId": "no-event"}
    ]});
    let response = ureq::post(format!("{url}/v1/batch"))
        .send(seed.to_string().as_bytes())
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let app = json!({"writeKey": APP_KEY, "batch": [
        {"type": "track", "userId": "ada", "event": "App Opened"}
    ]});
    let response = ureq::post(format!("{url}/v1/batch"))
        .send(app.to_string().as_bytes())
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let fillers: Vec<_> = (0..FILLERS)
        .map(|i| json!({"type": "track", "userId": format!("filler-{i}"), "event": "Filler"}))
        .collect();
    let response = ureq::post(format!("{url}/v1/batch"))
        .send(
            json!({"writeKey": WRITE_KEY, "batch": fillers})
                .to_string()
                .as_bytes(),
        )
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);

    // Under `target/`, where a reviewer finds them after a run (CI keeps no artifacts).
    let screenshots = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("debugger-screenshots");
    std::fs::create_dir_all(&screenshots).unwrap();
    let output = Command::new("node")
        .arg(browser_dir.join("debugger.mjs"))
        .args([&url, ADMIN_TOKEN, WRITE_KEY])
        .arg(&screenshots)
        .arg(&accept)
        .env("CHROMIUM", &chromium)
        .env("TRAFFIC_HISTORY", history.to_string())
        .output()
        .unwrap();
    // Straight to the process's stderr, past the test harness's capture, so that the
    // screenshots' paths show in every run's output.
    let _ = std::io::stderr().write_all(&output.stdout);
    let _ = stop.send(());
    runtime.block_on(server).unwrap().unwrap();
    assert!(
        output.status.success(),
        "browser checks failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Writes an hour of past traffic (minutes 2 to 58 ago) into the store in `data_dir`, as the
/// counts of events since pruned, so the chart has a history to draw; returns per source
/// what it added, `{"web": {"total", "rejected"}, "app": {...}}`.
fn past_traffic(data_dir: &Path) -> serde_json::Value {
    // Opened once first, so the schema is the store's own.
    drop(SqliteStore::open(data_dir, std::time::Duration::from_secs(86_400)).expect("store"));
    let conn = rusqlite::Connection::open(data_dir.join("events.sqlite3")).expect("database");
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .expect("busy timeout");
    let now_minute = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
        / 60_000;
    let mut totals = std::collections::BTreeMap::<&str, (i64, i64)>::new();
    for ago in 2..=58_i64 {
        let wave = (ago * 7) % 15;
        let rows = [
            ("web", "track", false, 20 + wave),
            ("web", "identify", false, 3 + ago % 4),
            ("web", "page", false, ago % 5),
            ("web", "track", true, if ago % 9 == 0 { 6 } else { 0 }),
            ("app", "screen", false, 5 + ago % 3),
            ("app", "other", true, if ago % 13 == 0 { 3 } else { 0 }),
        ];
        for (source, kind, rejected, n) in rows {
            if n == 0 {
                continue;
            }
            conn.execute(
                "INSERT INTO traffic (minute, source, type, rejected, n) VALUES (?1, ?2, ?3, ?4, ?5)",
                rusqlite::params![now_minute - ago, source, kind, rejected, n],
            )
            .expect("traffic row");
            let total = totals.entry(source).or_default();
            total.0 += n;
            if rejected {
                total.1 += n;
            }
        }
    }
    totals
        .into_iter()
        .map(|(source, (total, rejected))| {
            (
                source.to_owned(),
                json!({"total": total, "rejected": rejected}),
            )
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

const SHOP_KEY: &str = "wk-shop-0123456789";

/// The event analytics.js is made to retry: the first time it arrives, it is stored and then
/// answered 503 (as when a commit succeeds and the connection then fails).
const RETRIED_EVENT: &str = "Retried Once";

/// The SQLite store, except that the first append holding [`RETRIED_EVENT`] is committed and
/// then reported failed, so the page retries an event that was in fact stored.
struct LosesOneAnswer {
    lost: AtomicBool,
}

impl Intercept for LosesOneAnswer {
    fn append<'a>(
        &'a self,
        inner: &'a SqliteStore,
        events: Vec<NewEvent>,
    ) -> BoxFuture<'a, Result<Appended, StoreError>> {
        let retried = events
            .iter()
            .any(|e| e.label.as_deref() == Some(RETRIED_EVENT));
        Box::pin(async move {
            let appended = inner.append(events).await?;
            if retried && !self.lost.swap(true, Ordering::SeqCst) {
                return Err(StoreError::Unavailable {
                    detail: "the answer was lost".into(),
                });
            }
            Ok(appended)
        })
    }
}

/// analytics.js loads its settings from the collector and sends every call there, from a
/// page on another origin; each scenario is named in `tests/browser/analytics.mjs`.
#[test]
fn analytics_js_sends_to_the_collector_from_another_origin() {
    let browser_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(
        browser_dir
            .join("node_modules/@segment/analytics-next/dist/umd/index.js")
            .exists(),
        "@segment/analytics-next is not installed: run scripts/test, or `npm ci` in {}",
        browser_dir.display()
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(Path::new(&chromium).exists(), "no Chromium at {chromium}");

    let temp = tempfile::tempdir().unwrap();
    let mut shop = Source::new("shop", vec![SHOP_KEY.into()]);
    shop.allowed_origins = Some(vec!["https://shop.example".into()]);
    let config = Config::new(
        temp.path(),
        vec![Source::new("web", vec![WRITE_KEY.into()]), shop],
        ADMIN_TOKEN.into(),
    );
    let store = Intercepted {
        inner: SqliteStore::open(temp.path(), config.dedup_window).unwrap(),
        with: LosesOneAnswer {
            lost: AtomicBool::new(false),
        },
    };
    let collector = Collector::with_store(&config, Arc::new(store)).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = runtime.spawn(collector.serve(listener, async {
        let _ = stopped.await;
    }));

    let output = Command::new("node")
        .arg(browser_dir.join("analytics.mjs"))
        .args([&url, ADMIN_TOKEN, WRITE_KEY, SHOP_KEY, RETRIED_EVENT])
        .env("CHROMIUM", &chromium)
        .output()
        .unwrap();
    let _ = stop.send(());
    runtime.block_on(server).unwrap().unwrap();
    assert!(
        output.status.success(),
        "analytics.js checks failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
