//! `trackway spool drain`: what an application left in its spool, delivered by the command.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::json;
use trackway::Analytics;
use trackway_testkit::FakeApi;

const KEY: &str = "spool-drain-test-write-key";

/// An application that accepted `events` while its server was down, and shut down: they
/// stay in its spool in `dir`.
fn leave_events(dir: &Path, host: &str, events: usize) {
    let analytics = Analytics::builder(KEY)
        .host(host)
        .no_proxy()
        .spool_dir(dir)
        .unwrap()
        .build()
        .unwrap();
    for n in 0..events {
        analytics
            .track("u-1", "Left Behind", json!({"n": n}))
            .unwrap();
    }
    let report = analytics.shutdown(Duration::from_millis(100));
    assert_eq!(report.spooled, events as u64, "{report}");
    drop(analytics);
    wait_until_released(dir);
}

/// Waits for the spool's thread to release the `LOCK` file: it is not joined, and syncs the
/// segments and the directory after the last handle drops, which can take seconds on a busy
/// disk. The command must find the spool free, so the test waits on the lock itself; the
/// deadline is generous because only a thread that never ends would reach it.
fn wait_until_released(dir: &Path) {
    let lock = std::fs::File::open(dir.join("LOCK")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match lock.try_lock() {
            Ok(()) => {
                lock.unlock().unwrap();
                return;
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                assert!(
                    Instant::now() < deadline,
                    "the spool in {} is still locked 30 s after its last handle dropped",
                    dir.display()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(std::fs::TryLockError::Error(error)) => {
                panic!("cannot test the LOCK file: {error}")
            }
        }
    }
}

fn trackway() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_trackway"));
    command
        .env("NO_PROXY", "*")
        .env_remove("RUST_LOG")
        .env_remove("TRACKWAY_WRITE_KEY");
    command
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn drain(dir: &Path, host: &str, key: Option<&str>) -> Output {
    let mut command = trackway();
    command
        .args(["spool", "drain"])
        .arg(dir)
        .args(["--host", host]);
    match key {
        Some(key) => command.args(["--write-key", key]),
        // From the environment, as the other subcommands take it.
        None => command.env("TRACKWAY_WRITE_KEY", KEY),
    };
    command.output().unwrap()
}

#[test]
fn drain_delivers_a_spool_once_and_leaves_it_empty() {
    let dir = tempfile::tempdir().unwrap();
    let addr = FakeApi::unused_addr();
    let host = format!("http://{addr}");
    leave_events(dir.path(), &host, 30);
    let api = FakeApi::start_at(addr);
    let output = drain(dir.path(), &host, None);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert!(stdout.contains("30 events found, 30 delivered"), "{stdout}");
    let delivered: Vec<i64> = api
        .accepted_messages()
        .iter()
        .map(|m| m["properties"]["n"].as_i64().unwrap())
        .collect();
    assert_eq!(delivered, (0..30).collect::<Vec<_>>());
    // Nothing is left: a second drain delivers nothing.
    let output = drain(dir.path(), &host, Some(KEY));
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(text(&output.stdout).contains("0 events found"));
    assert_eq!(api.accepted_messages().len(), 30);
}

#[test]
fn drain_refuses_another_key_and_keeps_what_it_cannot_deliver() {
    let dir = tempfile::tempdir().unwrap();
    let addr = FakeApi::unused_addr();
    let host = format!("http://{addr}");
    leave_events(dir.path(), &host, 5);
    let output = drain(dir.path(), &host, Some("another-write-key-0123"));
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("holds events for another write key"),
        "{stderr}"
    );
    assert!(!stderr.contains("another-write-key-0123"), "{stderr}");
    // The server is still down: the events stay in the spool, and the command says so.
    let output = trackway()
        .args(["spool", "drain"])
        .arg(dir.path())
        .args(["--host", &host, "--write-key", KEY, "--retry-for", "300ms"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("5 of 5 events are still in the spool"),
        "{stderr}"
    );
}
