//! Log lines written to a file or a pipe are plain text: no ANSI colour codes, whichever
//! command writes them.

use std::process::{Command, Stdio};
use std::time::Duration;

use trackway_testkit::FakeApi;

use crate::Running;

fn trackway() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_trackway"));
    command
        .env("NO_PROXY", "*")
        .env_remove("TRACKWAY_WRITE_KEY")
        .env_remove("TRACKWAY_ADMIN_TOKEN");
    command
}

const ESCAPE: char = '\u{1b}';

#[test]
fn logs_to_a_pipe_or_a_file_carry_no_colour_codes() {
    // `send` into a pipe.
    let api = FakeApi::start();
    let output = trackway()
        .args([
            "send",
            "--type=track",
            "--writeKey=k",
            "--userId=u",
            "--event=E",
        ])
        .arg(format!("--host={}", api.url()))
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{log}");
    assert!(log.contains("DEBUG"), "something was logged: {log}");
    assert!(!log.contains(ESCAPE), "colour codes in a pipe: {log:?}");

    // `serve` into a file.
    let temp = tempfile::tempdir().unwrap();
    let log_path = temp.path().join("serve.log");
    let mut child = Running(
        trackway()
            .args(["serve", "--listen", "127.0.0.1:0", "--write-key", "k"])
            .args(["--admin-token", "logging-test-token"])
            .arg("--data-dir")
            .arg(temp.path().join("data"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .unwrap(),
    );
    let mut first = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut first,
    )
    .unwrap();
    let url = first.trim().rsplit(' ').next().unwrap().to_owned();
    // Once it answers, its signal handler is in place: SIGTERM is a clean stop, logged.
    let health = ureq::get(format!("{url}/healthz")).call().unwrap();
    assert_eq!(health.status(), 200);
    std::thread::sleep(Duration::from_millis(100));
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let _ = child.wait();
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("INFO"), "something was logged: {log}");
    assert!(!log.contains(ESCAPE), "colour codes in a file: {log:?}");
}

/// A command run as a colour-capable terminal's user would run it, but into pipes.
fn piped() -> Command {
    let mut command = trackway();
    command
        .env("TERM", "xterm-256color")
        .env_remove("CLICOLOR_FORCE")
        .env_remove("NO_COLOR")
        .env_remove("RUST_LOG");
    command
}

fn assert_plain(what: &str, bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    assert!(!text.contains(ESCAPE), "escape codes in {what}: {text:?}");
}

#[test]
fn no_output_to_a_pipe_carries_escape_codes() {
    // The command line's own help and errors.
    let help = piped().arg("--help").output().unwrap();
    assert_plain("--help", &help.stdout);
    let wrong = piped().args(["send", "--bogus"]).output().unwrap();
    assert_eq!(wrong.status.code(), Some(2));
    assert!(!wrong.stderr.is_empty());
    assert_plain("a usage error", &wrong.stderr);

    // A collector, and events whose names carry escape codes (anyone with a key can send them).
    let temp = tempfile::tempdir().unwrap();
    let mut server = Running(
        piped()
            .args(["serve", "--listen", "127.0.0.1:0", "--write-key", "k"])
            .args(["--admin-token", "logging-test-token"])
            .arg("--data-dir")
            .arg(temp.path().join("data"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut first = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(server.stdout.take().unwrap()),
        &mut first,
    )
    .unwrap();
    let url = first.trim().rsplit(' ').next().unwrap().to_owned();

    // `tail` into a pipe.
    let mut tail = Running(
        piped()
            .args([
                "tail",
                "--host",
                &url,
                "--admin-token",
                "logging-test-token",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let tailed = crate::lines_of(tail.stdout.take().unwrap());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sender = {
        let (url, stop) = (url.clone(), stop.clone());
        std::thread::spawn(move || {
            let analytics = trackway::Analytics::builder("k")
                .host(&url)
                .no_proxy()
                .flush_at(1)
                .build()
                .unwrap();
            // Until tail has shown one (it connects asynchronously).
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                analytics
                    .track("u1", "\u{1b}[31mRed\u{1b}[0m", serde_json::json!({}))
                    .unwrap();
                let _ = analytics.flush(Duration::from_secs(5));
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    // Generous: tail prints within milliseconds of connecting; one that never does is a defect.
    let line = tailed.recv_timeout(Duration::from_secs(60));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let line = line.expect("tail printed nothing within 60 s").unwrap();
    sender.join().unwrap();
    assert!(line.contains("Red"), "{line}");
    assert_plain("tail's output", line.as_bytes());
    let _ = tail.kill();
    let _ = tail.wait();

    // `import` into pipes: no progress bar's codes.
    let file = temp.path().join("events.jsonl");
    std::fs::write(
        &file,
        "{\"type\":\"track\",\"userId\":\"u2\",\"event\":\"Imported\"}\n",
    )
    .unwrap();
    let import = piped()
        .arg("import")
        .arg(&file)
        .args(["--host", &url, "--write-key", "k"])
        .output()
        .unwrap();
    assert!(
        import.status.success(),
        "{}",
        String::from_utf8_lossy(&import.stderr)
    );
    assert_plain("import's output", &import.stdout);
    assert_plain("import's errors", &import.stderr);

    let _ = server.kill();
    let _ = server.wait();
}
