//! `trackway import` against a real collector and the fake API: what the server refuses,
//! rejects or does not answer, and resuming.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::Running;
use serde_json::{Value, json};
use trackway_testkit::{FakeApi, Reply};

const KEY: &str = "import-test-write-key";
const ADMIN_TOKEN: &str = "import-test-admin-token";

/// A `trackway serve` accepting [`KEY`], killed when dropped.
struct Collector {
    _child: Running,
    url: String,
}

fn collector(data_dir: &Path) -> Collector {
    let mut child = Running(
        trackway()
            .args(["serve", "--listen", "127.0.0.1:0", "--write-key", KEY])
            .args(["--admin-token", ADMIN_TOKEN])
            .arg("--data-dir")
            .arg(data_dir)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let url = first.trim().rsplit(' ').next().unwrap().to_owned();
    assert!(url.starts_with("http://127.0.0.1:"), "{first}");
    Collector { _child: child, url }
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
fn a_server_that_takes_the_first_lines_then_refuses_everything_stops_the_import() {
    // Lines up to the first checkpoint are taken; after it the server (a proxy now routing
    // elsewhere, say) refuses every request with 400. The lines after the checkpoint were
    // never stored: the import must stop there, not report each as rejected and record it.
    let temp = tempfile::tempdir().unwrap();
    let api = FakeApi::start();
    api.set_rule(|request| {
        let late = request
            .messages()
            .iter()
            .any(|m| m["properties"]["n"].as_u64().unwrap() > 5_000);
        Some(if late { Reply::Status(400) } else { Reply::Ok })
    });
    let lines: Vec<Value> = (1..=5_200).map(track).collect();
    let file = jsonl(temp.path(), &lines);
    let output = import(&file, &api.url(), KEY, &[]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("refused every message"), "{stderr}");
    assert!(stderr.contains("recorded up to line 5000"), "{stderr}");
    assert_eq!(state_of(&file).as_deref(), Some("5000\n"));
    assert_eq!(api.accepted_messages().len(), 5_000);
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
    // And why: what the requests ran into.
    assert!(
        last.contains("connect failed") && last.contains("refused"),
        "{stderr}"
    );
    assert_eq!(state_of(&file), None);
}

/// A line without a `messageId`, so that the import derives one.
fn unnamed(n: u32) -> Value {
    json!({"type": "track", "userId": format!("u{n}"), "event": "Imported", "properties": {"n": n}})
}

#[test]
fn a_restart_sends_every_line_again_and_each_is_stored_once() {
    let temp = tempfile::tempdir().unwrap();
    let server = collector(&temp.path().join("data"));
    let mut lines: Vec<Value> = (1..=6).map(unnamed).collect();
    lines
        .push(json!({"type": "track", "userId": "u7", "event": "Imported", "messageId": "own-id"}));
    let file = jsonl(temp.path(), &lines);

    let first = import(&file, &server.url, KEY, &[]);
    assert!(first.status.success(), "{}", text(&first.stderr));
    assert!(
        text(&first.stdout).contains("0 duplicates"),
        "{}",
        text(&first.stdout)
    );
    let again = import(&file, &server.url, KEY, &["--restart"]);
    let stdout = text(&again.stdout);
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert!(
        stdout.contains("0 already done") && stdout.contains("7 duplicates the server already had"),
        "every line was sent again and the server said it had them: {stdout}"
    );
    let events = stored(&server.url);
    assert_eq!(events.len(), 7, "each line stored once");
    let derived = events
        .iter()
        .filter(|e| {
            e["messageId"]
                .as_str()
                .is_some_and(|id| id.starts_with("import-"))
        })
        .count();
    assert_eq!(derived, 6, "lines without an id got a derived one");
}

#[test]
fn a_stopped_import_resumes_after_its_last_periodic_checkpoint() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const LINES: u32 = 12_000;
    // The server takes the first 6,000 or so messages, then answers 503 for good: the
    // checkpoint at line 5,000 completes, the one at 10,000 never does.
    const TAKEN: usize = 6_000;
    let temp = tempfile::tempdir().unwrap();
    let failing = FakeApi::start();
    let taken = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&taken);
    failing.set_rule(move |request| {
        let before = count.load(Ordering::SeqCst);
        Some(if before < TAKEN {
            count.fetch_add(request.messages().len(), Ordering::SeqCst);
            Reply::Ok
        } else {
            Reply::Status(503)
        })
    });
    let lines: Vec<Value> = (1..=LINES).map(unnamed).collect();
    let file = jsonl(temp.path(), &lines);

    // `--retry-for` is also how long the checkpoint at line 5,000 may take to flush what is
    // still queued to the healthy server: a debug build on a loaded machine needs seconds for
    // that, so it is 10 s (the stop at line 10,000 waits that long against the 503s).
    let stopped = import(&file, &failing.url(), KEY, &["--retry-for", "10s"]);
    let stderr = text(&stopped.stderr);
    assert_eq!(stopped.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("recorded up to line 5000"), "{stderr}");
    assert_eq!(state_of(&file).as_deref(), Some("5000\n"));
    let first_ids: std::collections::HashMap<u64, String> = failing
        .accepted_messages()
        .iter()
        .map(|m| {
            (
                m["properties"]["n"].as_u64().unwrap(),
                m["messageId"].as_str().unwrap().to_owned(),
            )
        })
        .collect();

    // Resumed: only the lines after the checkpoint go, those already sent under the same ids.
    let healthy = FakeApi::start();
    let resumed = import(&file, &healthy.url(), KEY, &[]);
    let stdout = text(&resumed.stdout);
    assert!(resumed.status.success(), "{}", text(&resumed.stderr));
    assert!(
        stdout.contains("imported 7000 events") && stdout.contains("5000 already done"),
        "{stdout}"
    );
    let sent = healthy.accepted_messages();
    assert_eq!(sent.len(), 7_000);
    assert_eq!(sent[0]["properties"]["n"], 5_001);
    let mut resent = 0;
    for message in &sent {
        let n = message["properties"]["n"].as_u64().unwrap();
        if let Some(id) = first_ids.get(&n) {
            assert_eq!(message["messageId"].as_str(), Some(id.as_str()), "line {n}");
            resent += 1;
        }
    }
    assert!(
        resent >= 1_000,
        "lines 5,001 to 6,000 were sent in both runs: {resent}"
    );
    assert_eq!(state_of(&file).as_deref(), Some("12000\n"));
}
