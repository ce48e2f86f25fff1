//! `trackway serve`: a real process, stopped by SIGTERM, keeps every acknowledged event.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Lines};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use trackway::Analytics;

use crate::{Running, serve_command};

const ADMIN_TOKEN: &str = "serve-test-admin-token-0123";
const KEY: &str = "serve-test-write-key";

/// A running `trackway serve`, its base URL, and the rest of its standard output.
struct Served {
    child: Running,
    url: String,
    stdout: Lines<BufReader<ChildStdout>>,
}

/// Starts `trackway serve` on a free port with `sources` (flags naming write keys or a config
/// file) and the store in `data_dir`.
fn spawn_serve<S: AsRef<OsStr>>(sources: impl IntoIterator<Item = S>, data_dir: &Path) -> Served {
    let mut child = Running(
        serve_command(ADMIN_TOKEN, data_dir)
            .args(sources)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = stdout.next().unwrap().unwrap();
    let url = first.rsplit(' ').next().unwrap().to_owned();
    assert!(url.starts_with("http://127.0.0.1:"), "{first}");
    Served { child, url, stdout }
}

/// Starts `trackway serve` accepting `KEY`; returns the process and its base URL.
fn start(data_dir: &Path) -> (Running, String) {
    let Served { child, url, stdout } = spawn_serve(["--write-key", KEY], data_dir);
    let rest: Vec<String> = stdout.take(3).map(Result::unwrap).collect();
    assert!(
        rest[2].contains("debugger: http://127.0.0.1:") && !rest[2].contains(ADMIN_TOKEN),
        "the debugger URL is printed, without the token the operator supplied: {rest:?}"
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

/// Events in the upload that is on the wire when SIGTERM arrives.
const IN_FLIGHT_EVENTS: usize = 100;

#[test]
fn sigterm_during_a_slow_upload_lets_it_commit_and_be_answered() {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Instant;

    let temp = tempfile::tempdir().unwrap();
    let (mut server, url) = start(temp.path());
    let addr = url.trim_start_matches("http://").to_owned();
    let batch: Vec<Value> = (0..IN_FLIGHT_EVENTS)
        .map(|n| {
            json!({"type": "track", "event": "In Flight", "userId": "slow-user",
                   "messageId": format!("in-flight-{n}"), "properties": {"n": n}})
        })
        .collect();
    let body = json!({"batch": batch, "writeKey": KEY}).to_string();
    let head = format!(
        "POST /v1/batch HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nexpect: 100-continue\r\n\r\n",
        body.len()
    );
    let (first_half, second_half) = body.as_bytes().split_at(body.len() / 2);
    let mut upload = TcpStream::connect(&addr).unwrap();
    upload
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    upload.write_all(head.as_bytes()).unwrap();
    // The server says `100 Continue` once its handler reads the body: the request is in
    // flight from then on.
    let continued = b"HTTP/1.1 100 Continue\r\n\r\n";
    let mut interim = vec![0; continued.len()];
    upload.read_exact(&mut interim).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&interim),
        String::from_utf8_lossy(continued)
    );
    upload.write_all(first_half).unwrap();

    let status = Command::new("kill")
        .arg("-TERM")
        .arg(server.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    // The server has taken the signal once it stops listening: new connections are refused.
    let patience = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(&addr).is_ok() {
        assert!(Instant::now() < patience, "still listening after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }

    // The rest of the body, after the signal: the request still commits and is answered.
    upload.write_all(second_half).unwrap();
    let mut response = String::new();
    let _ = upload.read_to_string(&mut response);
    assert!(
        response.starts_with("HTTP/1.1 200"),
        "in-flight request answered: {response:?}"
    );
    assert!(response.ends_with(r#"{"success":true}"#), "{response}");
    assert_eq!(
        server.wait().unwrap().code(),
        Some(0),
        "SIGTERM is a clean exit"
    );

    let (mut server, url) = start(temp.path());
    let mut ids: Vec<String> = stored(&url)
        .iter()
        .map(|e| e["messageId"].as_str().unwrap().to_owned())
        .collect();
    ids.sort_by_key(|id| id["in-flight-".len()..].parse::<usize>().unwrap());
    let expected: Vec<String> = (0..IN_FLIGHT_EVENTS)
        .map(|n| format!("in-flight-{n}"))
        .collect();
    assert_eq!(
        ids, expected,
        "every event of the answered request was kept"
    );
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

/// Runs `trackway serve` with `flags`, which must refuse to start: its exit status and
/// stderr. A collector that starts instead is killed after 10 s (and the test fails), so a
/// broken check cannot hang the test.
fn must_refuse_to_serve(flags: &[&str], data_dir: &Path) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_trackway"))
        .arg("serve")
        .args(flags)
        .arg("--data-dir")
        .arg(data_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!(
                "`trackway serve {}` started instead of refusing",
                flags.join(" ")
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn serve_on_all_interfaces_needs_a_public_url() {
    let temp = tempfile::tempdir().unwrap();
    let (code, text) = must_refuse_to_serve(
        &["--listen", "0.0.0.0:0", "--write-key", "wk-public-0123"],
        temp.path(),
    );
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("--public-url is required"), "{text}");
    // Behind a proxy, the listen address is not what browsers reach either.
    let (code, text) = must_refuse_to_serve(
        &[
            "--listen",
            "127.0.0.1:0",
            "--trusted-proxy",
            "10.0.0.0/8",
            "--write-key",
            "wk-public-0123",
        ],
        temp.path(),
    );
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("required behind a proxy"), "{text}");
    // A malformed one, or a malformed proxy network, is refused before listening too.
    for flags in [
        ["--public-url", "collect.example.com"],
        ["--trusted-proxy", "10.0.0.0/33"],
    ] {
        let mut all = vec!["--listen", "127.0.0.1:0", "--write-key", "wk-public-0123"];
        all.extend(flags);
        let (code, text) = must_refuse_to_serve(&all, temp.path());
        assert_eq!(code, Some(2), "{flags:?}: {text}");
    }
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
    let Served {
        mut child,
        url,
        stdout: mut lines,
    } = spawn_serve(
        [OsStr::new("--config"), config.as_os_str()],
        &temp.path().join("data"),
    );
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

#[test]
fn a_collector_killed_mid_delivery_resumes_without_resending_history() {
    use std::collections::HashMap;
    use trackway_testkit::{FakeApi, Reply};

    let hook = FakeApi::start();
    hook.set_rule(|_| Some(Reply::Delay(Duration::from_millis(20))));
    let temp = tempfile::tempdir().unwrap();
    let config = temp.path().join("collector.toml");
    std::fs::write(
        &config,
        format!(
            "[[source]]\nname = \"web\"\nwrite_keys = [\"{KEY}\"]\n\n[[source.destination]]\n\
             name = \"Webhook\"\nkind = \"webhook\"\nurl = \"{}/hook\"\nbackoff_base_ms = 5\n",
            hook.url()
        ),
    )
    .unwrap();
    let data = temp.path().join("data");
    let start = || {
        let served = spawn_serve([OsStr::new("--config"), config.as_os_str()], &data);
        (served.child, served.url)
    };
    let acknowledged = || {
        let mut seen: HashMap<String, usize> = HashMap::new();
        for request in hook.requests().iter().filter(|r| r.reply.is_success()) {
            let id = request.json.as_ref().unwrap()["properties"]["n"].to_string();
            *seen.entry(id).or_default() += 1;
        }
        seen
    };
    let wait_for = |what: &str, condition: &dyn Fn() -> bool| {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !condition() {
            assert!(
                std::time::Instant::now() < deadline,
                "never happened: {what}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    let send = |url: &str, range: std::ops::Range<u32>| {
        let analytics = Analytics::builder(KEY)
            .host(url)
            .no_proxy()
            .build()
            .unwrap();
        for n in range {
            analytics.track("u", "Resumed", json!({"n": n})).unwrap();
        }
        assert!(analytics.shutdown(Duration::from_secs(30)).is_clean());
    };

    let (mut first, url) = start();
    send(&url, 0..30);
    wait_for("the history is delivered", &|| acknowledged().len() == 30);
    send(&url, 30..60);
    wait_for("delivery of the second half is under way", &|| {
        acknowledged().len() >= 40
    });
    first.kill().unwrap(); // SIGKILL: no chance to store anything more
    first.wait().unwrap();

    let (mut second, _) = start();
    wait_for("everything is delivered after the restart", &|| {
        acknowledged().len() == 60
    });
    let seen = acknowledged();
    for n in 0..30 {
        assert_eq!(seen[&n.to_string()], 1, "history event {n} was sent again");
    }
    assert_eq!(terminate(&mut second).code(), Some(0));
}

#[test]
fn import_loads_a_file_reports_bad_lines_and_resumes() {
    let temp = tempfile::tempdir().unwrap();
    let (mut server, url) = start(&temp.path().join("data"));
    let file = temp.path().join("history.jsonl");
    let line = |n: u32| {
        json!({"type": "track", "userId": format!("u{n}"), "event": "Imported",
               "timestamp": format!("2020-01-0{}T00:00:00.000Z", n % 9 + 1), "properties": {"n": n}})
        .to_string()
    };
    let mut text = String::new();
    for n in 0..5 {
        text.push_str(&line(n));
        text.push('\n');
    }
    text.push_str("{not json\n");
    text.push_str(&json!({"type": "track", "userId": "u"}).to_string());
    text.push('\n');
    std::fs::write(&file, &text).unwrap();
    let import = || {
        Command::new(env!("CARGO_BIN_EXE_trackway"))
            .args(["import", "--write-key", KEY, "--host", &url])
            .arg(&file)
            .env("NO_PROXY", "*")
            .output()
            .unwrap()
    };
    let output = import();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stdout.contains("imported 5 events"), "{stdout}");
    assert!(stdout.contains("2 invalid lines skipped"), "{stdout}");
    assert!(
        stderr.contains("line 6: skipped: not valid JSON"),
        "{stderr}"
    );
    assert!(
        stderr
            .contains("line 7: skipped: invalid message: track message needs a non-empty `event`"),
        "{stderr}"
    );
    let events = stored(&url);
    assert_eq!(events.len(), 5);
    let first = events.iter().find(|e| e["userId"] == "u1").unwrap();
    assert_eq!(
        first["originalTimestamp"], "2020-01-02T00:00:00.000Z",
        "history keeps its time"
    );

    // Run again: nothing new is sent. Then append and run: only the new lines go.
    let again = import();
    assert!(String::from_utf8_lossy(&again.stdout).contains("imported 0 events"));
    let mut more = std::fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .unwrap();
    use std::io::Write;
    writeln!(more, "{}", line(7)).unwrap();
    writeln!(more, "{}", line(8)).unwrap();
    let third = import();
    let text = String::from_utf8_lossy(&third.stdout);
    assert!(
        text.contains("imported 2 events") && text.contains("7 already done"),
        "{text}"
    );
    assert_eq!(stored(&url).len(), 7);
    assert_eq!(terminate(&mut server).code(), Some(0));
}

#[test]
fn tail_follows_events_with_filters() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let temp = tempfile::tempdir().unwrap();
    let (mut server, url) = start(temp.path());
    let mut tail = Running(
        Command::new(env!("CARGO_BIN_EXE_trackway"))
            .args([
                "tail",
                "--url",
                &url,
                "--admin-token",
                ADMIN_TOKEN,
                "--type",
                "track",
            ])
            .env("NO_PROXY", "*")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let tailed = crate::lines_of(tail.stdout.take().unwrap());
    // Keep sending until tail (which connects asynchronously, after an unknown delay) has
    // seen one.
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let (url, stop) = (url.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let analytics = Analytics::builder(KEY)
                .host(&url)
                .no_proxy()
                .flush_at(1)
                .build()
                .unwrap();
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                analytics.identify("someone", json!({"n": n})).unwrap();
                analytics
                    .track("someone", "Tailed", json!({"n": n}))
                    .unwrap();
                let _ = analytics.flush(Duration::from_secs(5));
                std::thread::sleep(Duration::from_millis(25));
                n += 1;
            }
        })
    };
    // Generous: tail prints within milliseconds of connecting; a tail that never does is
    // the defect.
    let line = tailed.recv_timeout(Duration::from_secs(60));
    stop.store(true, Ordering::SeqCst);
    let line = line.expect("tail printed nothing within 60 s").unwrap();
    assert!(
        line.contains("track") && line.contains("Tailed") && line.contains("user=someone"),
        "{line}"
    );
    assert!(!line.contains("identify"), "filtered by type: {line}");
    tail.kill().unwrap();
    let _ = tail.wait();
    sender.join().unwrap();
    assert_eq!(terminate(&mut server).code(), Some(0));
}

#[test]
fn replay_with_a_wrong_token_is_a_usage_error() {
    let temp = tempfile::tempdir().unwrap();
    let (mut server, url) = start(temp.path());
    let wrong = Command::new(env!("CARGO_BIN_EXE_trackway"))
        .args(["replay", "--url", &url, "--admin-token", "not-the-token"])
        .env("NO_PROXY", "*")
        .output()
        .unwrap();
    assert_eq!(wrong.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("admin token was refused"));
    let nothing = Command::new(env!("CARGO_BIN_EXE_trackway"))
        .args(["replay", "--url", &url, "--admin-token", ADMIN_TOKEN])
        .env("NO_PROXY", "*")
        .output()
        .unwrap();
    assert!(nothing.status.success());
    assert_eq!(
        String::from_utf8_lossy(&nothing.stdout).trim(),
        "replayed 0, failed again 0, missing 0"
    );
    assert_eq!(terminate(&mut server).code(), Some(0));
}

/// Every stored event, paging through the admin API.
fn all_stored(url: &str) -> Vec<Value> {
    let mut all = Vec::new();
    let mut before: Option<i64> = None;
    loop {
        let query = before.map_or(String::new(), |b| format!("&before={b}"));
        let response = ureq::get(format!("{url}/api/events?limit=10000{query}"))
            .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
            .call()
            .unwrap();
        let body: Value =
            serde_json::from_str(&response.into_body().read_to_string().unwrap()).unwrap();
        let page = body["events"].as_array().unwrap().clone();
        if page.is_empty() {
            return all;
        }
        before = page.last().unwrap()["_trackway"]["seq"].as_i64();
        all.extend(page);
    }
}

#[test]
fn a_collector_killed_under_load_keeps_every_acknowledged_event_exactly_once() {
    use std::collections::{HashMap, HashSet};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    let temp = tempfile::tempdir().unwrap();
    let (mut server, url) = start(temp.path());
    let acknowledged = Arc::new(Mutex::new(HashSet::<String>::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let auth = {
        use base64::Engine;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{KEY}:"))
        )
    };
    std::thread::scope(|scope| {
        for client in 0..4 {
            let (url, auth, acknowledged, count) =
                (&url, &auth, Arc::clone(&acknowledged), Arc::clone(&count));
            scope.spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    // One slow answer on a loaded machine must not stop a client for
                    // good; the server's death ends every request at once anyway.
                    .timeout_global(Some(Duration::from_secs(30)))
                    .proxy(None)
                    .build()
                    .into();
                for request in 0..250 {
                    let ids: Vec<String> = (0..100).map(|i| format!("c{client}-r{request}-{i}")).collect();
                    let batch: Vec<Value> = ids
                        .iter()
                        .map(|id| json!({"type": "track", "userId": "u", "event": "Loaded", "messageId": id}))
                        .collect();
                    let body = json!({ "batch": batch }).to_string();
                    let answer = agent.post(format!("{url}/v1/batch")).header("authorization", auth).send(body.as_bytes());
                    match answer {
                        Ok(response) if response.status().as_u16() == 200 => {
                            acknowledged.lock().unwrap().extend(ids);
                            count.fetch_add(100, Ordering::SeqCst);
                        }
                        // The server is gone: this client stops.
                        _ => return,
                    }
                }
            });
        }
        // Kill -9 part-way through the 100,000 events (the deadline only ends a run whose
        // load never got there, which the assertion below reports).
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while count.load(Ordering::SeqCst) < 30_000 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        server.kill().unwrap();
        server.wait().unwrap();
    });
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        acknowledged.len() >= 30_000,
        "the kill came during the load: {}",
        acknowledged.len()
    );
    assert!(acknowledged.len() < 100_000, "the kill came before the end");

    let (mut restarted, url) = start(temp.path());
    let mut stored: HashMap<String, usize> = HashMap::new();
    for event in all_stored(&url) {
        *stored
            .entry(event["messageId"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    let missing: Vec<&String> = acknowledged
        .iter()
        .filter(|id| !stored.contains_key(*id))
        .take(5)
        .collect();
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
    let doubled: Vec<_> = stored.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(doubled.is_empty(), "stored twice: {doubled:?}");
    assert_eq!(terminate(&mut restarted).code(), Some(0));
}

#[test]
fn the_stdout_destination_prints_each_event() {
    let temp = tempfile::tempdir().unwrap();
    let config = temp.path().join("collector.toml");
    std::fs::write(
        &config,
        format!("[[source]]\nname = \"web\"\nwrite_keys = [\"{KEY}\"]\n\n[[source.destination]]\nname = \"Console\"\nkind = \"stdout\"\n"),
    )
    .unwrap();
    let Served {
        mut child,
        url,
        stdout: lines,
    } = spawn_serve(
        [OsStr::new("--config"), config.as_os_str()],
        &temp.path().join("data"),
    );
    let analytics = Analytics::builder(KEY)
        .host(&url)
        .no_proxy()
        .build()
        .unwrap();
    analytics
        .track("printed-user", "Printed", json!({"n": 1}))
        .unwrap();
    assert!(analytics.shutdown(Duration::from_secs(30)).is_clean());
    let printed = lines
        .map(Result::unwrap)
        .find(|line| line.starts_with('{'))
        .expect("a JSON line on stdout");
    let event: Value = serde_json::from_str(&printed).unwrap();
    assert_eq!(
        (event["event"].as_str(), event["userId"].as_str()),
        (Some("Printed"), Some("printed-user"))
    );
    assert_eq!(terminate(&mut child).code(), Some(0));
}

/// Runs `trackway serve` expecting it to refuse to start; returns its standard error. One
/// that starts instead prints its address first: it is stopped and the test fails.
fn refused_serve(args: &[&OsStr]) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_trackway"))
        .args(["serve", "--listen", "127.0.0.1:0", "--write-key", KEY])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    if !first.is_empty() {
        terminate(&mut child);
        panic!("a second collector started: {first}");
    }
    let output = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(2), "{text}");
    text
}

#[test]
fn a_second_collector_on_the_same_files_is_refused_until_the_first_stops() {
    let temp = tempfile::tempdir().unwrap();
    let (data, other_data, out) = (
        temp.path().join("data"),
        temp.path().join("other"),
        temp.path().join("out"),
    );
    let served = spawn_serve(
        [
            OsStr::new("--write-key"),
            OsStr::new(KEY),
            OsStr::new("--file-dir"),
            out.as_os_str(),
        ],
        &data,
    );
    let url = served.url;
    // Stopped even when an assertion fails, so no collector outlives the test.
    let mut first = served.child;
    let pid = first.0.id();

    let text = refused_serve(&[OsStr::new("--data-dir"), data.as_os_str()]);
    assert!(
        text.contains(&format!("{} is in use by process {pid}", data.display())),
        "{text}"
    );
    let text = refused_serve(&[
        OsStr::new("--data-dir"),
        other_data.as_os_str(),
        OsStr::new("--file-dir"),
        out.as_os_str(),
    ]);
    assert!(
        text.contains("-*.jsonl are being written by another collector"),
        "{text}"
    );

    // The first one still works, and once it has stopped the directory is free again.
    let analytics = Analytics::builder(KEY)
        .host(&url)
        .no_proxy()
        .build()
        .unwrap();
    analytics.identify("u-1", json!({})).unwrap();
    assert!(analytics.shutdown(Duration::from_secs(30)).is_clean());
    assert_eq!(terminate(&mut first.0).code(), Some(0));
    let (mut second, url) = start(&data);
    assert_eq!(stored(&url).len(), 1);
    assert_eq!(terminate(&mut second).code(), Some(0));
}
