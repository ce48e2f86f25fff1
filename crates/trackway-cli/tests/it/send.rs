//! `trackway send` under Segment's cross-library end-to-end contract.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use trackway_testkit::{FakeApi, Reply, basic_auth_write_key};

const WRITE_KEY: &str = "e2e-write-key";

fn trackway() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_trackway"));
    command
        .env_remove("RUST_LOG")
        .env_remove("TRACKWAY_WRITE_KEY")
        .env("NO_PROXY", "*");
    command
}

/// `trackway send --type=track --writeKey=k --userId=u --event=E <extra> --host=<host>`.
fn send_track(host: &str, extra: &[&str]) -> Output {
    trackway()
        .args([
            "send",
            "--type=track",
            "--writeKey=k",
            "--userId=u",
            "--event=E",
        ])
        .args(extra)
        .arg(format!("--host={host}"))
        .output()
        .unwrap()
}

fn fixtures() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/e2e");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("fixtures/e2e")
        .flat_map(|dir| std::fs::read_dir(dir.unwrap().path()).unwrap())
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
}

/// A fixture with its `{{id}}` placeholders filled with a fresh id.
fn load(path: &Path) -> Value {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let id = format!(
        "e2e-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let text = std::fs::read_to_string(path)
        .unwrap()
        .replace("{{id}}", &id);
    serde_json::from_str(&text).unwrap()
}

/// The contract's flags for one fixture message.
fn flags(message: &Value, host: &str) -> Vec<String> {
    let mut flags = vec![format!("--writeKey={WRITE_KEY}"), format!("--host={host}")];
    for (key, value) in message.as_object().unwrap() {
        let text = match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        flags.push(format!("--{key}={text}"));
    }
    flags
}

/// The contract's comparison: ignore ids and times set by libraries and servers,
/// `context.library`, and empty objects.
fn comparable(message: &Value) -> Value {
    let mut message = message.clone();
    let top = message.as_object_mut().unwrap();
    for key in [
        "messageId",
        "timestamp",
        "sentAt",
        "receivedAt",
        "originalTimestamp",
    ] {
        top.remove(key);
    }
    if let Some(Value::Object(context)) = top.get_mut("context") {
        context.remove("library");
    }
    strip_empty_objects(&mut message);
    message
}

fn strip_empty_objects(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.values_mut().for_each(strip_empty_objects);
            map.retain(|_, v| !matches!(v, Value::Object(m) if m.is_empty()));
        }
        Value::Array(items) => items.iter_mut().for_each(strip_empty_objects),
        _ => {}
    }
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn every_e2e_fixture_arrives_intact() {
    let files = fixtures();
    assert_eq!(files.len(), 11, "the tester's 11 fixtures");
    for path in files {
        let api = FakeApi::start();
        let message = load(&path);
        let output = trackway()
            .arg("send")
            .args(flags(&message, &api.url()))
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}: {}",
            path.display(),
            stderr(&output)
        );
        assert!(
            output.stderr.is_empty(),
            "{}: quiet on success",
            path.display()
        );

        let requests = api.requests();
        assert_eq!(requests.len(), 1, "{}", path.display());
        let request = &requests[0];
        assert_eq!(
            request
                .header("authorization")
                .and_then(basic_auth_write_key)
                .as_deref(),
            Some(WRITE_KEY)
        );
        let arrived = request.messages();
        assert_eq!(arrived.len(), 1);
        assert_eq!(
            comparable(&arrived[0]),
            comparable(&message),
            "{}",
            path.display()
        );
        assert_eq!(arrived[0]["context"]["library"]["name"], "trackway");
        assert!(arrived[0]["messageId"].is_string());
    }
}

#[test]
fn invalid_json_in_a_flag_is_a_usage_error_and_sends_nothing() {
    let api = FakeApi::start();
    let output = send_track(&api.url(), &["--properties={not json"]);
    assert_eq!(output.status.code(), Some(2));
    let text = stderr(&output);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains("--properties is not valid JSON"), "{text}");
    assert!(api.requests().is_empty());
}

#[test]
fn a_missing_required_flag_is_a_usage_error() {
    let api = FakeApi::start();
    for (args, named) in [
        (vec!["--type=track", "--userId=u"], "--event"),
        (vec!["--type=group", "--userId=u"], "--groupId"),
        (vec!["--type=alias", "--userId=u"], "--previousId"),
        (vec!["--type=identify"], "userId or an anonymousId"),
    ] {
        let output = trackway()
            .arg("send")
            .args(&args)
            .arg("--writeKey=k")
            .arg(format!("--host={}", api.url()))
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let text = stderr(&output);
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.contains(named), "{args:?}: {text}");
    }
    let no_key = trackway()
        .args(["send", "--type=track", "--event=E", "--userId=u"])
        .output()
        .unwrap();
    assert_eq!(no_key.status.code(), Some(2));
    assert!(stderr(&no_key).contains("--writeKey"));
    assert!(api.requests().is_empty());
}

#[test]
fn an_oversized_message_is_a_usage_error() {
    let api = FakeApi::start();
    let properties = json!({"blob": "x".repeat(40 * 1024)}).to_string();
    let output = send_track(&api.url(), &[&format!("--properties={properties}")]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("over the 32768-byte limit"),
        "{}",
        stderr(&output)
    );
    assert!(api.requests().is_empty());
}

#[test]
fn a_rejection_exits_1_with_the_servers_reason() {
    let api = FakeApi::start();
    api.set_rule(|_| Some(Reply::Status(401)));
    let output = trackway()
        .args(["send", "--type=identify", "--writeKey=wrong", "--userId=u"])
        .arg(format!("--host={}", api.url()))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let text = stderr(&output);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains("rejected") && text.contains("401"), "{text}");
    assert_eq!(api.requests().len(), 1, "a 401 is not retried");
}

/// Longest a `send --timeout=1s` may take in the tests below, start-up included: many times
/// the timeout, and far below what the broken behaviours take (the 10 s default request
/// timeout, a 60 s hang, the 12 h retry window).
const WELL_PAST_ONE_SECOND: Duration = Duration::from_secs(8);

/// Asserts that `text` shows `key` neither as text nor as Basic credentials.
fn assert_no_key(text: &str, key: &str) {
    use base64::Engine;
    let credentials = base64::engine::general_purpose::STANDARD.encode(format!("{key}:"));
    assert!(
        !text.contains(key) && !text.contains(&credentials),
        "the key leaked: {text}"
    );
}

#[test]
fn an_unreachable_server_exits_1_at_the_timeout() {
    const KEY: &str = "unreachable-test-write-key";
    let send = |host: &str| {
        let started = Instant::now();
        let output = trackway()
            .args(["send", "--type=track", "--userId=u", "--event=E"])
            .arg(format!("--writeKey={KEY}"))
            .arg(format!("--host={host}"))
            .arg("--timeout=1s")
            .output()
            .unwrap();
        (output, started.elapsed())
    };

    // Nothing listens: every attempt is refused at once, and the retries stop at the timeout
    // instead of going on for the library's 12-hour window.
    let down = FakeApi::unused_addr();
    let (output, took) = send(&format!("http://{down}"));
    assert_eq!(output.status.code(), Some(1));
    let text = stderr(&output);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert_no_key(&text, KEY);
    assert!(took < WELL_PAST_ONE_SECOND, "took {took:?}");

    // A server that takes the request and never answers: the request itself is cut at the
    // timeout, not after 60 s (or the 10 s default request timeout).
    let hung = FakeApi::start();
    hung.set_rule(|_| Some(Reply::Hang(Duration::from_secs(60))));
    let (output, took) = send(&hung.url());
    assert_eq!(output.status.code(), Some(1));
    let text = stderr(&output);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains("timed out"), "{text}");
    assert_no_key(&text, KEY);
    assert!(
        took >= Duration::from_secs(1),
        "waited the timeout: {took:?}"
    );
    assert!(took < WELL_PAST_ONE_SECOND, "took {took:?}");
    assert_eq!(hung.requests().len(), 1, "the request did reach the server");
}

#[test]
fn retries_then_succeeds() {
    let api = FakeApi::start();
    api.push_replies([Reply::Status(503)]);
    let output = send_track(&api.url(), &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(api.requests().len(), 2);
    assert_eq!(api.accepted_messages().len(), 1);
}

#[test]
fn a_refused_connection_names_the_host_and_what_to_do() {
    let down = FakeApi::unused_addr();
    let output = send_track(&format!("http://{down}"), &["--timeout=1s"]);
    assert_eq!(output.status.code(), Some(1));
    let text = stderr(&output);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.contains(&format!("could not deliver to http://{down}"))
            && text.contains("refused")
            && text.contains("trackway demo"),
        "{text}"
    );
}

#[test]
fn the_default_host_is_named_as_segments_when_it_cannot_be_reached() {
    // Segment's host is made unreachable here without a network: through a proxy that
    // refuses connections.
    let proxy = FakeApi::unused_addr();
    let output = trackway()
        .args([
            "send",
            "--type=track",
            "--writeKey=k",
            "--userId=u",
            "--event=E",
        ])
        .arg("--timeout=1s")
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .env("HTTPS_PROXY", format!("http://{proxy}"))
        .env("ALL_PROXY", format!("http://{proxy}"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let text = stderr(&output);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.contains("could not deliver to Segment's https://api.segment.io (the default --host)")
            && text.contains("pass --host")
            && text.contains("refused"),
        "{text}"
    );
}

#[test]
fn a_wrong_write_key_says_to_check_it() {
    let api = FakeApi::start();
    api.set_rule(|_| {
        Some(Reply::Json(
            401,
            json!({"success": false, "error": "unknown write key"}).to_string(),
        ))
    });
    let output = send_track(&api.url(), &[]);
    assert_eq!(output.status.code(), Some(1));
    let text = stderr(&output);
    assert!(
        text.contains(&format!(
            "{} rejected the message: HTTP 401: unknown write key",
            api.url()
        )) && text.contains("check --write-key"),
        "{text}"
    );
}

#[test]
fn a_success_is_quiet_off_a_terminal_and_said_on_one() {
    let api = FakeApi::start();
    let output = send_track(&api.url(), &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        output.stdout.is_empty() && output.stderr.is_empty(),
        "{output:?}"
    );

    // `script` runs the command on a pseudo-terminal, as a person's shell would.
    let line = format!(
        "'{}' send --type=track --writeKey=k --userId=u --event=E --host={}",
        env!("CARGO_BIN_EXE_trackway"),
        api.url()
    );
    let output = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .env_remove("RUST_LOG")
        .env("NO_PROXY", "*")
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains(&format!("delivered 1 track to {}", api.url())),
        "{text}"
    );
    assert_eq!(api.accepted_messages().len(), 2);
}
