//! Log lines written to a file or a pipe are plain text: no ANSI colour codes, whichever
//! command writes them.

use std::process::{Command, Stdio};
use std::time::Duration;

use trackway_testkit::FakeApi;

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
    let mut child = trackway()
        .args(["serve", "--listen", "127.0.0.1:0", "--write-key", "k"])
        .args(["--admin-token", "logging-test-token"])
        .arg("--data-dir")
        .arg(temp.path().join("data"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
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
