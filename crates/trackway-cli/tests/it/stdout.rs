//! The stdout destination with a reader that stopped reading: only the stdout destinations
//! stall, never ingest, `/healthz` or the other destinations.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use trackway_testkit::FakeApi;

use crate::{Running, serve_command};

const ADMIN_TOKEN: &str = "stdout-test-admin-token-0123";
const KEY: &str = "stdout-test-write-key";
/// Events sent: with two stdout destinations, far more than a pipe holds (64 KiB on Linux).
const EVENTS: usize = 1000;
/// Events per request.
const PER_REQUEST: usize = 250;
/// A request that takes this long is a hang (the one guarded against never ends): a healthy
/// collector answers in milliseconds, a debug build committing to a busy disk in seconds.
const PATIENCE: Duration = Duration::from_secs(30);

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(PATIENCE))
        .proxy(None)
        .build()
        .into()
}

fn basic() -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{KEY}:"))
    )
}

/// POSTs a batch of `count` events starting at `first`; the status, or the error.
fn ingest(url: &str, first: usize, count: usize) -> Result<u16, ureq::Error> {
    let padding = "x".repeat(300);
    let batch: Vec<Value> = (first..first + count)
        .map(|n| json!({"type": "track", "userId": "u", "event": "Piped", "messageId": format!("m{n}"), "properties": {"n": n, "padding": padding}}))
        .collect();
    let response = agent()
        .post(format!("{url}/v1/batch"))
        .header("authorization", basic())
        .header("content-type", "application/json")
        .send(json!({ "batch": batch }).to_string())?;
    Ok(response.status().as_u16())
}

fn destinations(url: &str) -> Value {
    let response = agent()
        .get(format!("{url}/api/destinations"))
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .call()
        .unwrap();
    serde_json::from_str(&response.into_body().read_to_string().unwrap()).unwrap()
}

#[test]
fn a_stalled_stdout_stops_only_the_stdout_destinations() {
    let hook = FakeApi::start();
    let temp = tempfile::tempdir().unwrap();
    let config = temp.path().join("collector.toml");
    std::fs::write(
        &config,
        format!(
            "[[source]]\nname = \"web\"\nwrite_keys = [\"{KEY}\"]\n\n\
             [[source.destination]]\nname = \"Out\"\nkind = \"stdout\"\n\n\
             [[source.destination]]\nname = \"Echo\"\nkind = \"stdout\"\n\n\
             [[source.destination]]\nname = \"Webhook\"\nkind = \"webhook\"\nurl = \"{}/hook\"\n",
            hook.url()
        ),
    )
    .unwrap();
    let mut child = Running(
        serve_command(ADMIN_TOKEN, temp.path().join("data"))
            .arg("--config")
            .arg(&config)
            // As many runtime workers as stdout destinations: writing on a worker, they took
            // every one (whatever the machine's core count).
            .env("TOKIO_WORKER_THREADS", "2")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Read the address, then never read again: the pipe fills and writes to it block.
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    let url = first.trim().rsplit(' ').next().unwrap().to_owned();
    assert!(url.starts_with("http://127.0.0.1:"), "{first}");

    for first in (0..EVENTS).step_by(PER_REQUEST) {
        assert_eq!(ingest(&url, first, PER_REQUEST).unwrap(), 200);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    // The webhook posts one message per request.
    let delivered = || {
        hook.requests()
            .iter()
            .filter(|r| r.reply.is_success())
            .count()
    };
    while delivered() < EVENTS {
        assert!(
            Instant::now() < deadline,
            "the webhook got {} of {EVENTS} events",
            delivered()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = destinations(&url);
    let stalled: Vec<u64> = status["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["kind"] == "stdout")
        .map(|d| d["lag"].as_u64().unwrap())
        .collect();
    assert!(
        stalled.len() == 2 && stalled.iter().all(|lag| *lag > 0),
        "stdout is stalled (the premise): lags {stalled:?}"
    );
    let health = agent().get(format!("{url}/healthz")).call();
    assert_eq!(health.map(|r| r.status().as_u16()).ok(), Some(200));
    assert_eq!(ingest(&url, EVENTS, 1).ok(), Some(200), "ingest goes on");

    // And it still stops on SIGTERM, the writer thread blocked or not.
    let signalled = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(signalled.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("SIGTERM did not stop the collector");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
    drop(stdout);
}
