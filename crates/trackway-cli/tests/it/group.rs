//! `trackway serve --store postgres://...`: several collectors on one database.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};
use trackway_testkit::postgres::TestPostgres;

const ADMIN_TOKEN: &str = "group-test-admin-token-0123";
const KEY: &str = "group-test-write-key";
const PASSWORD: &str = "s3cr3t-pw-never-logged";

/// A `trackway serve` on a free port, with `store` given as `how` says; its URL.
fn serve(how: &str, url: &str, dir: &Path) -> (Child, String) {
    let data_dir = dir.join(format!("data-{how}"));
    let mut command = Command::new(env!("CARGO_BIN_EXE_trackway"));
    command
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-token",
            ADMIN_TOKEN,
        ])
        .arg("--data-dir")
        .arg(&data_dir)
        .env_remove("TRACKWAY_STORE")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    match how {
        "flag" => {
            command.args(["--store", url, "--write-key", KEY]);
        }
        "env" => {
            command
                .env("TRACKWAY_STORE", url)
                .args(["--write-key", KEY]);
        }
        _ => {
            let file = dir.join("trackway.toml");
            std::fs::write(
                &file,
                format!("store = \"{url}\"\n\n[[source]]\nname = \"default\"\nwrite_keys = [\"{KEY}\"]\n"),
            )
            .unwrap();
            command.arg("--config").arg(file);
        }
    }
    let mut child = command.spawn().unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut first).unwrap();
    let address = first.trim().rsplit(' ').next().unwrap().to_owned();
    assert!(address.starts_with("http://127.0.0.1:"), "{first}");
    let mut rest = String::new();
    for _ in 0..3 {
        std::io::BufRead::read_line(&mut stdout, &mut rest).unwrap();
    }
    assert!(!rest.contains(PASSWORD), "the password was printed: {rest}");
    assert!(rest.contains("postgres://trackway:***@127.0.0.1"), "{rest}");
    (child, address)
}

fn post(url: &str, body: &Value) -> u16 {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    agent
        .post(format!("{url}/v1/batch"))
        .header("authorization", format!("Basic {}", base64_key()))
        .header("content-type", "application/json")
        .send(body.to_string().as_bytes())
        .unwrap()
        .status()
        .as_u16()
}

fn base64_key() -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("{KEY}:"))
}

fn message_ids(url: &str) -> Vec<String> {
    let response = ureq::get(format!("{url}/api/events?limit=1000"))
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .call()
        .unwrap();
    let body: Value =
        serde_json::from_str(&response.into_body().read_to_string().unwrap()).unwrap();
    let mut ids: Vec<String> = body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["messageId"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

#[test]
fn collectors_given_one_database_by_flag_env_or_file_share_it_and_never_log_its_password() {
    let server = TestPostgres::new().unwrap();
    server
        .psql(&format!("CREATE ROLE trackway LOGIN PASSWORD '{PASSWORD}'"))
        .unwrap();
    server
        .psql("CREATE DATABASE trackway OWNER trackway")
        .unwrap();
    let url = format!(
        "postgres://trackway:{PASSWORD}@127.0.0.1:{}/trackway",
        server.port()
    );
    let dir = tempfile::tempdir().unwrap();
    let mut collectors: Vec<(Child, String)> = ["flag", "env", "file"]
        .iter()
        .map(|how| serve(how, &url, dir.path()))
        .collect();
    let batch = json!({"batch": [
        {"type": "track", "event": "A", "userId": "u", "messageId": "m-1"},
        {"type": "track", "event": "B", "userId": "u", "messageId": "m-2"},
    ]});
    // The client's retry after a timeout reaches another collector: stored once.
    for (_, address) in &collectors {
        assert_eq!(post(address, &batch), 200);
    }
    for (_, address) in &collectors {
        assert_eq!(message_ids(address), ["m-1", "m-2"], "seen from {address}");
    }
    for (child, _) in &mut collectors {
        Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .unwrap();
        child.wait().unwrap();
        let mut logs = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut logs)
            .unwrap();
        assert!(!logs.contains(PASSWORD), "the password was logged: {logs}");
    }
}
