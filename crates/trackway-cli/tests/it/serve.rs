//! `trackway serve`: a real process, stopped by SIGTERM, keeps every acknowledged event.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use trackway::Analytics;

const ADMIN_TOKEN: &str = "serve-test-admin-token-0123";
const KEY: &str = "serve-test-write-key";

/// Starts `trackway serve` on a free port; returns the process and its base URL.
fn start(data_dir: &std::path::Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_trackway"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--write-key",
            KEY,
            "--admin-token",
            ADMIN_TOKEN,
        ])
        .arg("--data-dir")
        .arg(data_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next().unwrap().unwrap();
    let url = first.rsplit(' ').next().unwrap().to_owned();
    assert!(url.starts_with("http://127.0.0.1:"), "{first}");
    let rest: Vec<String> = lines.by_ref().take(3).map(Result::unwrap).collect();
    assert!(
        rest[2].contains(&format!("/#token={ADMIN_TOKEN}")),
        "the debugger URL is printed: {rest:?}"
    );
    (child, url)
}

fn stored(url: &str) -> Vec<Value> {
    let response = ureq::get(format!("{url}/api/events?limit=10000"))
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .call()
        .unwrap();
    let body: Value =
        serde_json::from_str(&response.into_body().read_to_string().unwrap()).unwrap();
    body["events"].as_array().unwrap().clone()
}

fn terminate(child: &mut Child) -> std::process::ExitStatus {
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    child.wait().unwrap()
}

#[test]
fn sigterm_stops_cleanly_and_a_restart_has_every_acknowledged_event() {
    let temp = tempfile::tempdir().unwrap();
    let (mut server, url) = start(temp.path());
    let analytics = Analytics::builder(KEY)
        .host(&url)
        .no_proxy()
        .flush_at(50)
        .build()
        .unwrap();
    for n in 0..500 {
        analytics
            .track(format!("user-{}", n % 7), "Served", json!({"n": n}))
            .unwrap();
    }
    let report = analytics.flush(Duration::from_secs(30));
    assert!(report.is_clean(), "{report}");
    let status = terminate(&mut server);
    assert_eq!(status.code(), Some(0), "SIGTERM is a clean exit");

    let (mut server, url) = start(temp.path());
    let events = stored(&url);
    assert_eq!(events.len(), 500);
    assert_eq!(terminate(&mut server).code(), Some(0));
}

#[test]
fn serve_without_a_source_is_a_usage_error() {
    let temp = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_trackway"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(temp.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(text.contains("no source is configured"), "{text}");
}

#[test]
fn serve_reads_sources_from_a_config_file() {
    let temp = tempfile::tempdir().unwrap();
    let config = temp.path().join("sources.toml");
    std::fs::write(
        &config,
        "[[source]]\nname = \"web\"\nwrite_keys = [\"k-web-1\", \"k-web-2\"]\n",
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_trackway"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-token",
            ADMIN_TOKEN,
        ])
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(temp.path().join("data"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = lines
        .next()
        .unwrap()
        .unwrap()
        .rsplit(' ')
        .next()
        .unwrap()
        .to_owned();
    let sources = lines.nth(1).unwrap().unwrap();
    assert!(sources.contains("web"), "{sources}");
    let output = Command::new(env!("CARGO_BIN_EXE_trackway"))
        .args([
            "send",
            "--type=identify",
            "--writeKey=k-web-2",
            "--userId=u1",
        ])
        .arg(format!("--host={url}"))
        .env("NO_PROXY", "*")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(stored(&url)[0]["_trackway"]["source"], "web");
    assert_eq!(terminate(&mut child).code(), Some(0));
}
