//! `trackway replay` against a real `trackway serve`: an unknown destination is a usage
//! error naming the real ones, and a replay moves the counts.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use trackway_testkit::{FakeApi, Reply};

use crate::{Running, serve_command};

const ADMIN_TOKEN: &str = "replay-test-admin-token-0123";
const KEY: &str = "replay-test-write-key";

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .proxy(None)
        .build()
        .into()
}

fn webhook_status(url: &str) -> Value {
    let response = agent()
        .get(format!("{url}/api/destinations"))
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .call()
        .unwrap();
    let body: Value =
        serde_json::from_str(&response.into_body().read_to_string().unwrap()).unwrap();
    body["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "Webhook")
        .unwrap()
        .clone()
}

fn replay(url: &str, destination: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_trackway"))
        .args(["replay", "--url", url, "--admin-token", ADMIN_TOKEN])
        .args(["--destination", destination])
        .env("NO_PROXY", "*")
        .output()
        .unwrap()
}

fn serve(config: &std::path::Path, data: &std::path::Path) -> (Running, String) {
    let mut child = Running(
        serve_command(ADMIN_TOKEN, data)
            .arg("--config")
            .arg(config)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let url = first.trim().rsplit(' ').next().unwrap().to_owned();
    assert!(url.starts_with("http://127.0.0.1:"), "{first}");
    (child, url)
}

#[test]
fn replay_names_the_destinations_when_one_is_unknown_and_moves_the_counts() {
    let hook = FakeApi::start();
    let broken = Arc::new(AtomicBool::new(true));
    let rule_broken = Arc::clone(&broken);
    hook.set_rule(move |_| {
        rule_broken
            .load(Ordering::SeqCst)
            .then_some(Reply::Status(400))
    });
    let temp = tempfile::tempdir().unwrap();
    let config = temp.path().join("collector.toml");
    std::fs::write(
        &config,
        format!(
            "[[source]]\nname = \"web\"\nwrite_keys = [\"{KEY}\"]\n\n\
             [[source.destination]]\nname = \"Webhook\"\nkind = \"webhook\"\nurl = \"{}/hook\"\n\n\
             [[source.destination]]\nname = \"Archive\"\nkind = \"file\"\ndir = \"{}\"\n",
            hook.url(),
            temp.path().join("archive").display()
        ),
    )
    .unwrap();
    let (mut child, url) = serve(&config, &temp.path().join("data"));

    let unknown = replay(&url, "Nope");
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert_eq!(unknown.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("\"Nope\"") && stderr.contains("Archive, Webhook"),
        "{stderr}"
    );
    assert!(
        !String::from_utf8_lossy(&unknown.stdout).contains("replayed"),
        "no report of a replay that did not happen"
    );

    use base64::Engine;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{KEY}:"));
    let batch = json!({"batch": [
        {"type": "track", "userId": "u", "event": "Refused", "messageId": "r1"},
        {"type": "track", "userId": "u", "event": "Refused", "messageId": "r2"},
    ]});
    let response = agent()
        .post(format!("{url}/v1/batch"))
        .header("authorization", format!("Basic {auth}"))
        .header("content-type", "application/json")
        .send(batch.to_string())
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let deadline = Instant::now() + Duration::from_secs(30);
    while webhook_status(&url)["dead_lettered"] != 2 {
        assert!(Instant::now() < deadline, "never dead-lettered");
        std::thread::sleep(Duration::from_millis(20));
    }

    broken.store(false, Ordering::SeqCst);
    let fixed = replay(&url, "Webhook");
    assert!(
        fixed.status.success(),
        "{}",
        String::from_utf8_lossy(&fixed.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&fixed.stdout).trim(),
        "replayed 2, failed again 0, missing 0"
    );
    let status = webhook_status(&url);
    assert_eq!(
        (
            status["delivered"].as_u64(),
            status["dead_lettered"].as_u64()
        ),
        (Some(2), Some(0)),
        "{status}"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}
