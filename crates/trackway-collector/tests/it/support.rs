//! A collector running on port 0 in its own runtime, and a small HTTP client.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::oneshot;
use trackway_collector::storage::Store;
use trackway_collector::{Collector, Config, Source};

pub(crate) const WRITE_KEY: &str = "wk-test-0123456789";
pub(crate) const OTHER_KEY: &str = "wk-other-0123456789";
pub(crate) const ADMIN_TOKEN: &str = "admin-token-0123456789abcdef";

/// A running collector; stops (gracefully) when dropped.
pub(crate) struct TestServer {
    pub(crate) url: String,
    _temp: Option<tempfile::TempDir>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// Header and body time limits for the tests about them: short, so slow-client tests finish
/// quickly. Only [`short_timeouts`] sets them: any other request descheduled this long on a
/// loaded machine would get a 408 that says nothing about what its test checks.
pub(crate) const TEST_TIMEOUT: Duration = Duration::from_millis(300);

/// Sets the header and body time limits to [`TEST_TIMEOUT`], for tests about those limits.
pub(crate) fn short_timeouts(config: &mut Config) {
    config.header_timeout = TEST_TIMEOUT;
    config.body_timeout = TEST_TIMEOUT;
}

/// The test configuration: two sources, an admin token, and the product's own time limits.
pub(crate) fn config(data_dir: &Path) -> Config {
    Config::new(
        data_dir,
        vec![
            Source::new("web", vec![WRITE_KEY.into()]),
            Source::new("jobs", vec![OTHER_KEY.into()]),
        ],
        ADMIN_TOKEN.into(),
    )
}

impl TestServer {
    /// A collector on a fresh temporary store.
    pub(crate) fn start() -> TestServer {
        let temp = tempfile::tempdir().unwrap();
        let mut server = TestServer::start_in(temp.path());
        server._temp = Some(temp);
        server
    }

    /// A collector on a fresh temporary store, its configuration changed by `adjust`.
    pub(crate) fn start_with(adjust: impl FnOnce(&mut Config)) -> TestServer {
        let temp = tempfile::tempdir().unwrap();
        let mut server = TestServer::start_configured(temp.path(), adjust);
        server._temp = Some(temp);
        server
    }

    /// A collector on the store in `data_dir`.
    pub(crate) fn start_in(data_dir: &Path) -> TestServer {
        TestServer::start_configured(data_dir, |_| {})
    }

    /// A collector on the store in `data_dir`, its configuration changed by `adjust`.
    pub(crate) fn start_configured(
        data_dir: &Path,
        adjust: impl FnOnce(&mut Config),
    ) -> TestServer {
        let mut config = config(data_dir);
        adjust(&mut config);
        let collector = Collector::open(&config).unwrap();
        TestServer::run(collector)
    }

    /// A collector on any store (delivery bookkeeping in `data_dir`).
    pub(crate) fn with_store(data_dir: &Path, store: Arc<dyn Store>) -> TestServer {
        let collector = Collector::with_store(&config(data_dir), store).unwrap();
        TestServer::run(collector)
    }

    fn run(collector: Collector) -> TestServer {
        let (stop, stopped) = oneshot::channel::<()>();
        let (ready, address) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                ready.send(listener.local_addr().unwrap()).unwrap();
                collector
                    .serve(listener, async {
                        let _ = stopped.await;
                    })
                    .await
                    .unwrap();
            });
            // A destination stuck in a request must not hold the test up.
            runtime.shutdown_timeout(Duration::from_millis(100));
        });
        let addr = address.recv().unwrap();
        TestServer {
            url: format!("http://{addr}"),
            _temp: None,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Stops the server and waits until it has shut down.
    pub(crate) fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }

    /// Every stored event, newest first, from the admin API.
    pub(crate) fn events(&self, query: &str) -> Vec<Value> {
        let (status, body) = self.admin(&format!("/api/events?limit=10000&{query}"));
        assert_eq!(status, 200, "{body}");
        body["events"].as_array().unwrap().clone()
    }

    /// GET an admin path with the token.
    pub(crate) fn admin(&self, path: &str) -> (u16, Value) {
        let response = agent()
            .get(format!("{}{path}", self.url))
            .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
            .call()
            .unwrap();
        read(response)
    }

    /// The status of `GET /readyz`.
    pub(crate) fn ready(&self) -> u16 {
        agent()
            .get(format!("{}/readyz", self.url))
            .call()
            .unwrap()
            .status()
            .as_u16()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop();
    }
}

pub(crate) fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .proxy(None)
        .build()
        .into()
}

fn read(response: ureq::http::Response<ureq::Body>) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.into_body().read_to_string().unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// `Basic base64(key:)`.
pub(crate) fn basic(key: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{key}:"))
    )
}

/// POSTs `body` to `path` with `headers`; returns the status and the JSON answer.
pub(crate) fn post(url: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, Value) {
    let mut request = agent()
        .post(format!("{url}{path}"))
        .header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    read(request.send(body).unwrap())
}

/// POSTs `body` to `path` with `headers`; returns the status, the answer's `Accept-Encoding`
/// header and the JSON answer.
pub(crate) fn post_for_encodings(
    url: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Option<String>, Value) {
    let mut request = agent()
        .post(format!("{url}{path}"))
        .header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send(body).unwrap();
    let accepted = response
        .headers()
        .get("accept-encoding")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (status, answer) = read(response);
    (status, accepted, answer)
}

pub(crate) fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// Polls `condition` every 10 ms until it holds; panics after 30 s (a hang guard, not a
/// timing assertion).
pub(crate) fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !condition() {
        assert!(
            std::time::Instant::now() < deadline,
            "never happened: {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// POSTs `messages` as one batch with the web source's key; asserts a 200.
pub(crate) fn send(server: &TestServer, messages: Vec<Value>) {
    send_body(server, &serde_json::json!({ "batch": messages }));
}

/// POSTs a whole batch request body with the web source's key; asserts a 200.
pub(crate) fn send_body(server: &TestServer, body: &Value) {
    let (status, answer) = post(
        &server.url,
        "/v1/batch",
        &[("authorization", &basic(WRITE_KEY))],
        body.to_string().as_bytes(),
    );
    assert_eq!(status, 200, "{answer}");
}

/// POSTs to an admin path with the token.
pub(crate) fn post_admin(server: &TestServer, path: &str) -> (u16, Value) {
    let response = agent()
        .post(format!("{}{path}", server.url))
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .send_empty()
        .unwrap();
    read(response)
}
