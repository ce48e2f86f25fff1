//! Secrets stay out of what others can read: the command line (keys come from the
//! environment), the collector's start-up output (a token the operator chose), and the logs
//! at any level (the HTTP stack's wire dump at TRACE).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::Running;
use base64::Engine;
use trackway_testkit::{FakeApi, basic_auth_write_key};

const ADMIN_TOKEN: &str = "secrets-test-admin-token-4711";
const WRITE_KEY: &str = "secrets-test-write-key-0815";
const FORWARD_KEY: &str = "secrets-test-upstream-key-2342";

/// `trackway` with none of the variables these tests set inherited from the test's
/// environment.
fn trackway() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_trackway"));
    command
        .env("NO_PROXY", "*")
        .env_remove("RUST_LOG")
        .env_remove("TRACKWAY_WRITE_KEY")
        .env_remove("TRACKWAY_ADMIN_TOKEN")
        .env_remove("TRACKWAY_FORWARD_WRITE_KEY");
    command
}

/// Starts `command` (a `trackway serve` on port 0) and returns it with its four lines of
/// start-up output; the first ends with the base URL.
fn serve(mut command: Command) -> (Running, Vec<String>) {
    let mut child = Running(command.stdout(Stdio::piped()).spawn().unwrap());
    let stdout = BufReader::new(child.0.stdout.take().unwrap());
    let lines: Vec<String> = stdout.lines().take(4).map(Result::unwrap).collect();
    assert_eq!(lines.len(), 4, "the collector did not start: {lines:?}");
    (child, lines)
}

fn serve_command(data_dir: &Path) -> Command {
    let mut command = trackway();
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir);
    command
}

fn base_url(announced: &[String]) -> String {
    announced[0].rsplit(' ').next().unwrap().to_owned()
}

#[test]
fn serve_prints_the_admin_token_only_when_it_generated_it() {
    let temp = tempfile::tempdir().unwrap();
    // Supplied by flag, then by the environment: never printed.
    let mut by_flag = serve_command(&temp.path().join("a"));
    by_flag.args(["--write-key", WRITE_KEY, "--admin-token", ADMIN_TOKEN]);
    let mut by_env = serve_command(&temp.path().join("b"));
    by_env
        .args(["--write-key", WRITE_KEY])
        .env("TRACKWAY_ADMIN_TOKEN", ADMIN_TOKEN);
    for command in [by_flag, by_env] {
        let (running, announced) = serve(command);
        let text = announced.join("\n");
        assert!(!text.contains(ADMIN_TOKEN), "{text}");
        assert!(text.contains("debugger: http://127.0.0.1:"), "{text}");
        drop(running);
    }

    // Generated: printed, since nobody else knows it, and it opens the admin API.
    let mut generated = serve_command(&temp.path().join("c"));
    generated.args(["--write-key", WRITE_KEY]);
    let (running, announced) = serve(generated);
    let token = announced[3]
        .split_once("#token=")
        .map(|(_, token)| token.trim().to_owned())
        .unwrap_or_default();
    assert!(
        token.len() >= 16,
        "a generated token is printed: {announced:?}"
    );
    let stats = ureq::get(format!("{}/api/stats", base_url(&announced)))
        .header("authorization", format!("Bearer {token}"))
        .call()
        .unwrap();
    assert_eq!(stats.status(), 200);
    drop(running);
}

#[test]
fn send_and_serve_take_the_write_key_from_the_environment() {
    // `send` with no `--writeKey`: the variable's key is the one sent.
    let api = FakeApi::start();
    let output = trackway()
        .args(["send", "--type=track", "--userId=u", "--event=E"])
        .arg(format!("--host={}", api.url()))
        .env("TRACKWAY_WRITE_KEY", WRITE_KEY)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let requests = api.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(
        requests[0]
            .header("authorization")
            .and_then(basic_auth_write_key)
            .as_deref(),
        Some(WRITE_KEY)
    );

    // `serve` with no `--write-key`: the variable's key is accepted, another one is not.
    let temp = tempfile::tempdir().unwrap();
    let mut command = serve_command(&temp.path().join("data"));
    command.env("TRACKWAY_WRITE_KEY", WRITE_KEY);
    let (running, announced) = serve(command);
    let url = base_url(&announced);
    assert!(
        announced.join("\n").contains("sources:  default"),
        "{announced:?}"
    );
    let post = |key: &str| {
        ureq::post(format!("{url}/v1/track"))
            .header("authorization", basic(key))
            .config()
            .http_status_as_error(false)
            .build()
            .header("content-type", "application/json")
            .send(r#"{"userId":"u","event":"E"}"#)
            .unwrap()
            .status()
    };
    assert_eq!(post(WRITE_KEY), 200);
    assert_eq!(post("some-other-key"), 401);
    drop(running);
}

fn basic(key: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{key}:"))
    )
}

/// Removes ANSI escape sequences (`ESC [ ... letter`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The bytes of the HTTP stack's wire dump in `log`, its rows joined back together. Each row
/// is a log line from `ureq_proto` whose message is eight groups of four hex digits (`--`
/// past the end of the data), then the same bytes as text: a header longer than a row is
/// split over lines, so searching the log itself never finds the key.
fn rejoined_wire_dump(log: &str) -> Vec<u8> {
    let mut bytes = Vec::new();
    for line in strip_ansi(log).lines() {
        let Some((_, message)) = line.split_once("ureq_proto") else {
            continue;
        };
        let Some((_, message)) = message.split_once(": ") else {
            continue;
        };
        let groups: Vec<&str> = message.split_whitespace().take(8).collect();
        if groups.len() != 8 || groups.iter().any(|g| g.len() != 4) {
            continue;
        }
        for group in groups {
            for pair in [&group[..2], &group[2..]] {
                if let Ok(byte) = u8::from_str_radix(pair, 16) {
                    bytes.push(byte);
                }
            }
        }
    }
    bytes
}

/// Asserts that `log` carries `key` in no form: neither as text, nor base64-encoded in a
/// Basic authorization, nor in the wire dump's rows once joined.
fn assert_no_key(log: &str, key: &str) {
    let credentials = base64::engine::general_purpose::STANDARD.encode(format!("{key}:"));
    let dump = String::from_utf8_lossy(&rejoined_wire_dump(log)).into_owned();
    for (what, text) in [("the log", log), ("the rejoined wire dump", &dump)] {
        assert!(!text.contains(key), "{what} carries the key {key}");
        assert!(
            !text.contains(&credentials),
            "{what} carries the key {key} as Basic credentials"
        );
    }
}

#[test]
fn at_trace_no_log_line_carries_a_write_key() {
    // `send`: its own request.
    let api = FakeApi::start();
    let output = trackway()
        .args(["send", "--type=track", "--userId=u", "--event=E"])
        .arg(format!("--writeKey={WRITE_KEY}"))
        .arg(format!("--host={}", api.url()))
        .env("RUST_LOG", "trace")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{log}");
    assert!(log.contains("TRACE"), "the log is at TRACE: {log}");
    assert_no_key(&log, WRITE_KEY);
    // A directive naming the dump's own module does not bring it back.
    let output = trackway()
        .args(["send", "--type=track", "--userId=u", "--event=E"])
        .arg(format!("--writeKey={WRITE_KEY}"))
        .arg(format!("--host={}", api.url()))
        .env("RUST_LOG", "trace,ureq_proto::util=trace")
        .output()
        .unwrap();
    assert!(output.status.success());
    assert_no_key(&String::from_utf8_lossy(&output.stderr), WRITE_KEY);

    // The collector: the forward destination's requests upstream, and the requests it takes.
    let upstream = FakeApi::start();
    let temp = tempfile::tempdir().unwrap();
    let log_path = temp.path().join("serve.log");
    let mut command = serve_command(&temp.path().join("data"));
    command
        .args(["--write-key", WRITE_KEY, "--admin-token", ADMIN_TOKEN])
        .arg(format!("--forward={}", upstream.url()))
        .env("TRACKWAY_FORWARD_WRITE_KEY", FORWARD_KEY)
        .env("RUST_LOG", "trace")
        .stderr(std::fs::File::create(&log_path).unwrap());
    let (running, announced) = serve(command);
    let accepted = ureq::post(format!("{}/v1/track", base_url(&announced)))
        .header("authorization", basic(WRITE_KEY))
        .header("content-type", "application/json")
        .send(r#"{"userId":"u","event":"Forwarded"}"#)
        .unwrap();
    assert_eq!(accepted.status(), 200);
    assert!(
        upstream.wait_for_requests(1, Duration::from_secs(30)),
        "the event was forwarded"
    );
    assert_eq!(
        upstream.requests()[0]
            .header("authorization")
            .and_then(basic_auth_write_key)
            .as_deref(),
        Some(FORWARD_KEY)
    );
    drop(running);
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("TRACE"), "the log is at TRACE");
    for secret in [FORWARD_KEY, WRITE_KEY, ADMIN_TOKEN] {
        assert_no_key(&log, secret);
    }
}
