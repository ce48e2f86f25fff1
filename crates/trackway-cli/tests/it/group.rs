//! `trackway serve --store postgres://...`: several collectors on one database.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::{Value, json};
use trackway_testkit::postgres::TestPostgres;

use crate::{Running, serve_command};

const ADMIN_TOKEN: &str = "group-test-admin-token-0123";
const KEY: &str = "group-test-write-key";
const PASSWORD: &str = "s3cr3t-pw-never-logged";

/// A `trackway serve` on a free port, with `store` given as `how` says; its URL.
fn serve(how: &str, url: &str, dir: &Path) -> (Running, String) {
    let data_dir = dir.join(format!("data-{how}"));
    let mut command = serve_command(ADMIN_TOKEN, &data_dir);
    command
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
    let mut child = Running(command.spawn().unwrap());
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
    let mut collectors: Vec<(Running, String)> = ["flag", "env", "file"]
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

/// Starts `trackway serve` with `config` (a TOML file naming the store and the sources);
/// returns the process and its base URL.
fn serve_config(config: &Path, data_dir: &Path) -> (Running, String) {
    let mut child = serve_command(ADMIN_TOKEN, data_dir)
        .arg("--config")
        .arg(config)
        .env_remove("TRACKWAY_STORE")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut first).unwrap();
    let address = first.trim().rsplit(' ').next().unwrap().to_owned();
    assert!(address.starts_with("http://127.0.0.1:"), "{first}");
    // Keep reading (and dropping) its output, so it never blocks on a full pipe.
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    (Running(child), address)
}

/// The destinations' epochs (how many times each lease was taken), by destination.
fn epochs(server: &TestPostgres) -> Vec<i64> {
    server
        .psql("SELECT epoch FROM delivery_cursors ORDER BY destination")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// messageIds of the lines in every file under `dir`, with how often each appears.
fn archived(dir: &Path) -> std::collections::HashMap<String, usize> {
    let mut seen = std::collections::HashMap::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        for line in std::fs::read_to_string(entry.path())
            .unwrap_or_default()
            .lines()
        {
            if let Ok(event) = serde_json::from_str::<Value>(line)
                && let Some(id) = event["messageId"].as_str()
            {
                *seen.entry(id.to_owned()).or_default() += 1;
            }
        }
    }
    seen
}

#[test]
fn three_collectors_with_one_killed_mid_load_lose_nothing_and_hand_delivery_over() {
    use std::collections::{HashMap, HashSet};
    use std::time::{Duration, Instant};
    use trackway_testkit::{FakeApi, Reply};

    let server = TestPostgres::new().unwrap();
    let hook = FakeApi::start();
    // Slow enough that delivery is under way when the collector is killed.
    hook.set_rule(|_| Some(Reply::Delay(Duration::from_millis(5))));
    let temp = tempfile::tempdir().unwrap();
    let archive = temp.path().join("archive");
    let config = temp.path().join("group.toml");
    std::fs::write(
        &config,
        format!(
            "store = \"{}\"\n\n[[source]]\nname = \"web\"\nwrite_keys = [\"{KEY}\"]\n\n\
             [[source.destination]]\nname = \"Webhook\"\nkind = \"webhook\"\nurl = \"{}/hook\"\nbackoff_base_ms = 5\n\n\
             [[source.destination]]\nname = \"File\"\nkind = \"file\"\ndir = \"{}\"\n",
            server.url(),
            hook.url(),
            archive.display()
        ),
    )
    .unwrap();
    let data = |n: usize| temp.path().join(format!("data-{n}"));
    // The first collector takes both leases before the others start: it is the one killed.
    let (mut first, first_url) = serve_config(&config, &data(0));
    // A destination's row is inserted at epoch 0 just before the lease is taken (epoch 1):
    // wait for both leases taken, and keep their epochs, which only a takeover raises
    // (renewals do not).
    let deadline = Instant::now() + Duration::from_secs(30);
    let before = loop {
        let now = epochs(&server);
        if now.len() == 2 && now.iter().all(|epoch| *epoch > 0) {
            break now;
        }
        assert!(
            Instant::now() < deadline,
            "the first collector did not take both leases: epochs {now:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut collectors = vec![(first_url.clone(), None::<Running>)];
    for n in 1..3 {
        let (child, url) = serve_config(&config, &data(n));
        collectors.push((url, Some(child)));
    }
    let urls: Vec<String> = collectors.iter().map(|(u, _)| u.clone()).collect();

    // The official libraries' shapes: batches (analytics-python, -node, trackway) and single
    // calls (the HTTP API), spread over the three collectors as a load balancer would.
    const SENDERS: usize = 3;
    const REQUESTS: usize = 120;
    let killed_at = std::sync::Mutex::new(None::<Instant>);
    let acknowledged: Vec<String> = std::thread::scope(|scope| {
        let senders: Vec<_> = (0..SENDERS)
            .map(|s| {
                let urls = &urls;
                scope.spawn(move || {
                    let agent: ureq::Agent = ureq::Agent::config_builder()
                        .http_status_as_error(false)
                        .timeout_global(Some(Duration::from_secs(10)))
                        .build()
                        .into();
                    let mut acknowledged = Vec::new();
                    for n in 0..REQUESTS {
                        let ids: Vec<String> = (0..5).map(|i| format!("{s}-{n}-{i}")).collect();
                        let (path, body) = if n % 4 == 0 {
                            let id = &ids[0];
                            (
                                "/v1/track",
                                json!({"userId": "u", "event": "Single", "messageId": id}),
                            )
                        } else {
                            let batch: Vec<Value> = ids
                                .iter()
                                .map(|id| json!({"type": "track", "userId": "u", "event": "Batched", "messageId": id}))
                                .collect();
                            ("/v1/batch", json!({"batch": batch}))
                        };
                        let sent: Vec<String> = if n % 4 == 0 { ids[..1].to_vec() } else { ids };
                        // A refused connection (the killed collector) is retried on the next.
                        for attempt in 0..urls.len() {
                            let url = &urls[(n + s + attempt) % urls.len()];
                            let answer = agent
                                .post(format!("{url}{path}"))
                                .header("authorization", format!("Basic {}", base64_key()))
                                .header("content-type", "application/json")
                                .send(body.to_string().as_bytes());
                            if answer.is_ok_and(|r| r.status() == 200) {
                                acknowledged.extend(sent.iter().cloned());
                                break;
                            }
                        }
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    acknowledged
                })
            })
            .collect();
        // In the middle of the load: kill -9 the collector holding the leases.
        std::thread::sleep(Duration::from_millis(1200));
        first.0.kill().unwrap();
        first.0.wait().unwrap();
        *killed_at.lock().unwrap() = Some(Instant::now());
        senders
            .into_iter()
            .flat_map(|s| s.join().unwrap())
            .collect()
    });
    let killed_at = killed_at.into_inner().unwrap().unwrap();
    // The takeover: both leases taken again by a surviving collector.
    let mut taken_over = None;
    while taken_over.is_none() {
        let now = epochs(&server);
        if now.iter().zip(&before).all(|(n, b)| n > b)
            || killed_at.elapsed() > Duration::from_secs(30)
        {
            taken_over = Some(killed_at.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let taken_over = taken_over.unwrap();
    assert!(
        taken_over <= Duration::from_secs(15),
        "the leases were taken over after {taken_over:?}"
    );
    // The killed collector comes back (a new process on its data directory).
    let (_restarted, _) = serve_config(&config, &data(0));

    let expected: HashSet<&String> = acknowledged.iter().collect();
    assert!(expected.len() > 1000, "{} acknowledged", expected.len());
    let hooked = || {
        let mut seen: HashMap<String, usize> = HashMap::new();
        for request in hook.requests().iter().filter(|r| r.reply.is_success()) {
            if let Some(id) = request.json.as_ref().and_then(|j| j["messageId"].as_str()) {
                *seen.entry(id.to_owned()).or_default() += 1;
            }
        }
        seen
    };
    // What each destination got twice, against what /api/destinations counts as sent again:
    // the fake records a request before answering it and the count is committed after the
    // batch, so both are read until they agree (or the deadline says they never do).
    let sent_again = || {
        let (webhook, file) = (hooked(), archived(&archive));
        if !expected
            .iter()
            .all(|id| webhook.contains_key(*id) && file.contains_key(*id))
        {
            return None;
        }
        let response = ureq::get(format!("{}/api/destinations", urls[1]))
            .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
            .call()
            .unwrap();
        let status: Value =
            serde_json::from_str(&response.into_body().read_to_string().unwrap()).unwrap();
        let counts: Vec<(&str, usize, usize)> = [("Webhook", &webhook), ("File", &file)]
            .into_iter()
            .map(|(name, seen)| {
                let again: usize = seen.values().map(|n| n - 1).sum();
                let counted = status["destinations"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|d| d["name"] == name)
                    .and_then(|d| d["redelivered"].as_u64())
                    .unwrap();
                (name, again, counted as usize)
            })
            .collect();
        Some(counts)
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let counts = sent_again();
        if let Some(counts) = &counts {
            // Sent again after the takeover: at most the batch in flight (1,000 events),
            // and counted in /api/destinations.
            for (name, again, _) in counts {
                assert!(*again <= 1000, "{name}: {again} events sent again");
            }
            if counts.iter().all(|(_, again, counted)| counted >= again) {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "not every acknowledged event was delivered and counted: \
             (destination, sent again, counted) {counts:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Every acknowledged messageId is stored exactly once, seen from any collector.
    let response = ureq::get(format!("{}/api/events?limit=10000", urls[1]))
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .call()
        .unwrap();
    let body: Value =
        serde_json::from_str(&response.into_body().read_to_string().unwrap()).unwrap();
    let mut stored: HashMap<String, usize> = HashMap::new();
    for event in body["events"].as_array().unwrap() {
        *stored
            .entry(event["messageId"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    for id in &expected {
        assert_eq!(
            stored.get(*id),
            Some(&1),
            "{id} stored {:?} times",
            stored.get(*id)
        );
    }
    drop(collectors);
}

/// Runs `trackway serve` on `url`, expecting it to refuse to start; its exit code and stderr.
fn refused(url: &str, dir: &Path) -> (Option<i32>, String) {
    let mut child = Running(
        serve_command(ADMIN_TOKEN, dir)
            .args(["--store", url, "--write-key", KEY])
            .env_remove("TRACKWAY_STORE")
            .env("RUST_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut stderr = child.0.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "serve started on a store it should refuse"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    (status.code(), reader.join().unwrap())
}

#[test]
fn a_store_refused_for_tls_stops_serve_naming_why_and_never_the_password() {
    // A server without TLS.
    let server = TestPostgres::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let base = format!(
        "postgres://trackway:{PASSWORD}@127.0.0.1:{}/postgres",
        server.port()
    );
    for (query, why) in [
        ("sslmode=require", "TLS"),
        (
            "sslmode=verify-full&sslrootcert=/no/such/root.pem",
            "sslrootcert /no/such/root.pem",
        ),
        ("sslmode=verify-everything", "sslmode=verify-everything"),
    ] {
        let (code, stderr) = refused(&format!("{base}?{query}"), dir.path());
        assert_ne!(code, Some(0), "{query}: {stderr}");
        assert!(stderr.contains(why), "{query}: {stderr}");
        assert!(
            !stderr.contains(PASSWORD),
            "{query}: the password shown: {stderr}"
        );
    }
}
