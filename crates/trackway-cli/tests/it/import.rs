//! `trackway import` against a real collector and the fake API: what the server refuses,
//! rejects or does not answer, and resuming.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use trackway_testkit::{FakeApi, Reply};

const KEY: &str = "import-test-write-key";
const ADMIN_TOKEN: &str = "import-test-admin-token";

/// A `trackway serve` accepting [`KEY`], killed when dropped.
struct Collector {
    child: Child,
    url: String,
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn collector(data_dir: &Path) -> Collector {
    let mut child = trackway()
        .args(["serve", "--listen", "127.0.0.1:0", "--write-key", KEY])
        .args(["--admin-token", ADMIN_TOKEN])
        .arg("--data-dir")
        .arg(data_dir)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let url = first.trim().rsplit(' ').next().unwrap().to_owned();
    assert!(url.starts_with("http://127.0.0.1:"), "{first}");
    Collector { child, url }
}

fn trackway() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_trackway"));
    command
        .env("NO_PROXY", "*")
        .env_remove("RUST_LOG")
        .env_remove("TRACKWAY_WRITE_KEY")
        .env_remove("TRACKWAY_ADMIN_TOKEN");
    command
}

/// `trackway import <file> --host <host> --write-key <key> <extra>`.
fn import(file: &Path, host: &str, key: &str, extra: &[&str]) -> Output {
    trackway()
        .arg("import")
        .arg(file)
        .args(["--host", host, "--write-key", key])
        .args(extra)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Every event the collector stored, newest first (at most 10,000).
fn stored(url: &str) -> Vec<Value> {
    let response = ureq::get(format!("{url}/api/events?limit=10000"))
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .call()
        .unwrap();
    let body: Value =
        serde_json::from_str(&response.into_body().read_to_string().unwrap()).unwrap();
    body["events"].as_array().unwrap().clone()
}

/// A file of `lines` (JSON values, one per line) in `dir`.
fn jsonl(dir: &Path, lines: &[Value]) -> PathBuf {
    let path = dir.join("history.jsonl");
    let mut text = String::new();
    for line in lines {
        text.push_str(&line.to_string());
        text.push('\n');
    }
    std::fs::write(&path, text).unwrap();
    path
}

fn track(n: u32) -> Value {
    json!({"type": "track", "userId": format!("u{n}"), "event": "Imported", "properties": {"n": n}})
}

fn state_of(file: &Path) -> Option<String> {
    let mut name = file.as_os_str().to_owned();
    name.push(".import-state");
    std::fs::read_to_string(PathBuf::from(name)).ok()
}

#[test]
fn a_wrong_write_key_stops_the_import_and_records_nothing() {
    let temp = tempfile::tempdir().unwrap();
    let server = collector(&temp.path().join("data"));
    let file = jsonl(temp.path(), &[track(1), track(2), track(3), track(4)]);

    let refused = import(&file, &server.url, "a-wrong-key", &[]);
    let stderr = text(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains("refused") && stderr.contains("401"),
        "{stderr}"
    );
    assert!(stderr.contains("run the same command again"), "{stderr}");
    assert!(
        text(&refused.stdout).is_empty(),
        "no summary: {}",
        text(&refused.stdout)
    );
    assert_eq!(state_of(&file), None, "nothing recorded as done");

    // The right key: every line is sent, none is "already done".
    let output = import(&file, &server.url, KEY, &[]);
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        stdout.contains("imported 4 events") && stdout.contains("0 already done"),
        "{stdout}"
    );
    assert_eq!(stored(&server.url).len(), 4);
}

#[test]
fn lines_the_server_stores_as_rejected_are_reported_by_number_not_imported() {
    let temp = tempfile::tempdir().unwrap();
    let server = collector(&temp.path().join("data"));
    let bogus = json!({"type": "bogus", "userId": "u", "messageId": "bogus-line"});
    let file = jsonl(temp.path(), &[track(1), bogus, track(3), track(4)]);

    let output = import(&file, &server.url, KEY, &[]);
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert!(output.status.success(), "{stderr}");
    assert!(
        stdout.contains("imported 3 events") && stdout.contains("1 rejected by the server"),
        "{stdout}"
    );
    assert!(
        stderr.contains("line 2: rejected by the server: unknown message type"),
        "{stderr}"
    );
    let events = stored(&server.url);
    assert_eq!(events.len(), 4, "the rejected line is stored, marked");
    let marked: Vec<&Value> = events
        .iter()
        .filter(|e| e["_trackway"]["rejected"].is_string())
        .collect();
    assert_eq!(marked.len(), 1);
    assert_eq!(marked[0]["messageId"], "bogus-line");
}

#[test]
fn a_message_refused_alone_with_400_is_its_lines_rejection() {
    let temp = tempfile::tempdir().unwrap();
    let api = FakeApi::start();
    // The server refuses any request holding user "bad": the library splits the batch
    // until the refusal names that message alone.
    api.set_rule(|request| {
        let bad = request.messages().iter().any(|m| m["userId"] == "bad");
        Some(if bad { Reply::Status(400) } else { Reply::Ok })
    });
    let bad = json!({"type": "track", "userId": "bad", "event": "Imported"});
    let file = jsonl(temp.path(), &[track(1), track(2), bad, track(4), track(5)]);

    let output = import(&file, &api.url(), KEY, &[]);
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert!(output.status.success(), "{stderr}");
    assert!(
        stdout.contains("imported 4 events") && stdout.contains("1 rejected by the server"),
        "{stdout}"
    );
    assert!(
        stderr.contains("line 3: rejected by the server: HTTP 400"),
        "{stderr}"
    );
    assert_eq!(state_of(&file).as_deref(), Some("5\n"));
}

#[test]
fn a_server_that_refuses_every_request_with_400_stops_the_import() {
    let temp = tempfile::tempdir().unwrap();
    let api = FakeApi::start();
    api.set_rule(|_| Some(Reply::Status(400)));
    let file = jsonl(temp.path(), &[track(1), track(2), track(3), track(4)]);
    let output = import(&file, &api.url(), KEY, &[]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("refused every message"), "{stderr}");
    assert_eq!(state_of(&file), None);
}

#[test]
fn a_host_that_is_down_shows_the_retries_then_says_how_to_resume() {
    let temp = tempfile::tempdir().unwrap();
    let down = FakeApi::unused_addr();
    let file = jsonl(temp.path(), &[track(1), track(2)]);
    let started = Instant::now();
    let output = import(
        &file,
        &format!("http://{down}"),
        KEY,
        &["--retry-for", "3s"],
    );
    let waited = started.elapsed();
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(waited >= Duration::from_secs(3), "gave up after {waited:?}");
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("import: ") && l.contains("retrying")),
        "the retries are shown while they happen: {stderr}"
    );
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.contains("did not take every event within 3s")
            && last.contains("run the same command again to resume"),
        "{stderr}"
    );
    assert_eq!(state_of(&file), None);
}
