//! `trackway demo` as a new user meets it: what it prints must work when pasted.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::Running;

/// The directory of the binary under test, so that `trackway` on `PATH` is that binary.
fn bin_dir() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_trackway")).parent().unwrap()
}

/// `PATH` with the binary under test first (`installed`), or without it.
fn path(installed: bool) -> std::ffi::OsString {
    let rest = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&rest).filter(|d| d != bin_dir());
    let dirs: Vec<_> = if installed {
        std::iter::once(bin_dir().to_path_buf())
            .chain(dirs)
            .collect()
    } else {
        dirs.collect()
    };
    std::env::join_paths(dirs).unwrap()
}

/// Starts the demo on a free port; returns it and the lines it printed before its commands
/// ended (through the `tail` command).
pub(crate) fn demo(data_dir: &Path, installed: bool, cwd: &Path) -> (Running, Vec<String>) {
    demo_on("127.0.0.1:0", data_dir, installed, cwd)
}

/// [`demo`], listening on `listen`.
fn demo_on(listen: &str, data_dir: &Path, installed: bool, cwd: &Path) -> (Running, Vec<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_trackway"))
        .args(["demo", "--listen", listen, "--rate", "0", "--data-dir"])
        .arg(data_dir)
        .env("PATH", path(installed))
        .env("NO_PROXY", "*")
        .env_remove("RUST_LOG")
        .current_dir(cwd)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut lines = Vec::new();
    for line in stdout.lines() {
        let line = line.unwrap();
        let done = line.contains(" tail ");
        lines.push(line);
        if done {
            break;
        }
    }
    (Running(child), lines)
}

/// The printed line that runs `subcommand`, trimmed.
fn command_line<'a>(lines: &'a [String], subcommand: &str) -> &'a str {
    lines
        .iter()
        .map(|l| l.trim())
        .find(|l| l.contains(&format!(" {subcommand} --")))
        .unwrap_or_else(|| panic!("no {subcommand} command in {lines:#?}"))
}

/// Runs `line` as a user's shell would.
pub(crate) fn shell(line: &str, installed: bool) -> Command {
    let mut command = Command::new("sh");
    command
        .args(["-c", line])
        .env("PATH", path(installed))
        .env("NO_PROXY", "*")
        .env_remove("TRACKWAY_WRITE_KEY")
        .env_remove("TRACKWAY_ADMIN_TOKEN")
        .env_remove("RUST_LOG");
    command
}

pub(crate) fn field<'a>(lines: &'a [String], name: &str) -> &'a str {
    lines
        .iter()
        .find_map(|l| l.trim().strip_prefix(name))
        .unwrap_or_else(|| panic!("no {name} in {lines:#?}"))
        .trim()
}

#[test]
fn the_demo_prints_its_key_and_commands_that_work_as_pasted() {
    let temp = tempfile::tempdir().unwrap();
    let (_demo, lines) = demo(&temp.path().join("data"), true, temp.path());
    assert_eq!(field(&lines, "write key:"), "demo-write-key", "{lines:#?}");
    let debugger = field(&lines, "debugger:");
    let (base, token) = debugger.split_once("/#token=").unwrap();
    let send = command_line(&lines, "send");
    let tail = command_line(&lines, "tail");
    assert!(
        send.starts_with("trackway send ") && send.contains(base),
        "{send}"
    );
    assert!(
        tail.starts_with("trackway tail ") && tail.contains(token),
        "{tail}"
    );

    // The tail command, as printed, shows the event the send command, as printed, sends.
    let mut tail = Running(
        shell(tail, true)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut tail_out = BufReader::new(tail.0.stdout.take().unwrap());
    let (seen, seen_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        while tail_out.read_line(&mut line).unwrap_or(0) > 0 {
            if seen.send(std::mem::take(&mut line)).is_err() {
                return;
            }
        }
    });
    // The stream may not be open yet when the first event arrives: send until tail shows one
    // (among the demo's own sample events, which may still be arriving). Bounded by time,
    // not by a count of sends: on a loaded machine tail can take seconds to connect, and only
    // a tail that never shows the event reaches the deadline.
    let mut shown = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    'sending: while Instant::now() < deadline {
        let output = shell(send, true).output().unwrap();
        assert!(
            output.status.success(),
            "{send}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        while let Ok(line) = seen_rx.recv_timeout(Duration::from_millis(500)) {
            // The samples have events of that name too, never from user u1.
            if line.contains("Signed Up") && line.contains("user=u1 ") {
                shown = Some(line);
                break 'sending;
            }
        }
    }
    shown.expect("tail showed an event sent by the printed send command");

    // The debugger's token opens the admin API the page reads.
    let response = ureq::get(format!("{base}/api/events?event=Signed%20Up"))
        .header("authorization", format!("Bearer {token}"))
        .call()
        .unwrap();
    let body: Value =
        serde_json::from_str(&response.into_body().read_to_string().unwrap()).unwrap();
    assert!(!body["events"].as_array().unwrap().is_empty(), "{body}");
}

#[test]
fn from_a_checkout_the_demo_prints_cargo_run_commands() {
    let temp = tempfile::tempdir().unwrap();
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let (_demo, lines) = demo(&temp.path().join("data"), false, &workspace);
    let send = command_line(&lines, "send");
    let rest = send
        .strip_prefix("cargo run -p trackway-cli -- ")
        .unwrap_or_else(|| panic!("{send}"));
    // What `cargo run` would run: this build, with the printed arguments.
    let line = format!("'{}' {rest}", env!("CARGO_BIN_EXE_trackway"));
    let output = shell(&line, false).output().unwrap();
    let mut stderr = String::new();
    output
        .stderr
        .as_slice()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(output.status.success(), "{line}: {stderr}");
}

#[test]
fn a_taken_port_names_listen_and_creates_nothing() {
    let temp = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    for subcommand in [
        &["demo"][..],
        &["serve", "--write-key", "taken-port-write-key"][..],
    ] {
        let data_dir = temp.path().join("data");
        let output = Command::new(env!("CARGO_BIN_EXE_trackway"))
            .args(subcommand)
            .args(["--listen", &addr, "--data-dir"])
            .arg(&data_dir)
            .env_remove("RUST_LOG")
            .env_remove("TRACKWAY_WRITE_KEY")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{subcommand:?}: {stderr}");
        assert!(
            stderr.contains(&addr) && stderr.contains("--listen 127.0.0.1:0"),
            "{subcommand:?} says how to choose another port: {stderr}"
        );
        assert!(!data_dir.exists(), "{subcommand:?} created {data_dir:?}");
    }
}

#[test]
fn on_all_interfaces_the_printed_commands_use_the_loopback() {
    let temp = tempfile::tempdir().unwrap();
    let (_demo, lines) = demo_on("0.0.0.0:0", &temp.path().join("data"), true, temp.path());
    let send = command_line(&lines, "send");
    assert!(send.contains("--host http://127.0.0.1:"), "{send}");
    assert!(
        field(&lines, "debugger:").starts_with("http://127.0.0.1:"),
        "{lines:#?}"
    );
    let output = shell(send, true).output().unwrap();
    assert!(
        output.status.success(),
        "{send}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}
