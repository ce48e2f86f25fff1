//! `trackway bench`: it runs to the end, every event reaches the sink, and the report holds
//! every figure. (Speed itself is measured by running it, not asserted here.)

use std::process::Command;

use serde_json::Value;
use trackway_testkit::FakeApi;

fn bench(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_trackway"))
        .env_remove("RUST_LOG")
        .env("NO_PROXY", "*")
        .arg("bench")
        .args(args)
        .output()
        .unwrap()
}

fn report(args: &[&str]) -> Value {
    let output = bench(args);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

const FIGURES: [&str; 12] = [
    "caller_ns_p50",
    "caller_ns_p99",
    "end_to_end_events_per_second",
    "process_cpu_seconds",
    "client_cpu_seconds",
    "client_cpu_us_per_event",
    "sink_cpu_seconds",
    "harness_cpu_seconds",
    "peak_rss_mib",
    "wire_bytes_per_event",
    "enqueue_seconds",
    "requests",
];

#[test]
fn every_event_reaches_the_null_sink_in_each_mode() {
    let gzip = report(&["--events", "3000", "--producers", "3", "--json"]);
    let plain = report(&["--events", "3000", "--no-gzip", "--json"]);
    let deferred = report(&["--events", "3000", "--defer-encoding", "--json"]);
    let zstd = report(&["--events", "3000", "--compression", "zstd", "--json"]);
    let auto = report(&["--events", "3000", "--compression", "auto", "--json"]);
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().to_str().unwrap();
    let spooled = report(&["--events", "3000", "--spool", spool, "--json"]);
    // Again on the same directory, which the first run left empty (for another null sink).
    let spooled_again = report(&["--events", "3000", "--spool", spool, "--json"]);
    for run in [
        &gzip,
        &plain,
        &deferred,
        &zstd,
        &auto,
        &spooled,
        &spooled_again,
    ] {
        assert_eq!(run["events"], 3000, "{run}");
        assert_eq!(
            run["sink_events"], 3000,
            "the sink counted every event: {run}"
        );
        for figure in FIGURES {
            assert!(
                run[figure].as_f64().is_some_and(|v| v >= 0.0),
                "{figure}: {run}"
            );
        }
        // Batches grow under load, but 3,000 events never fit one request (2,500 at most).
        assert!(run["requests"].as_u64().unwrap() >= 2, "{run}");
        // The build the tests run in says what it is.
        let allocator = if cfg!(feature = "jemalloc") {
            "jemalloc"
        } else {
            "system"
        };
        let maps = if cfg!(feature = "ordered-keys") {
            "ordered"
        } else {
            "sorted"
        };
        assert_eq!(run["allocator"], allocator, "{run}");
        assert_eq!(run["json_maps"], maps, "{run}");
    }
    assert_eq!(gzip["compression"], "gzip");
    assert_eq!(plain["compression"], "none");
    assert_eq!(zstd["compression"], "zstd");
    // zstd writes fewer bytes than gzip on the same events.
    assert!(
        zstd["wire_bytes_per_event"].as_f64() < gzip["wire_bytes_per_event"].as_f64(),
        "{zstd} {gzip}"
    );
    assert_eq!(deferred["defer_encoding"], true);
    assert_eq!(
        (&spooled["spool"], &gzip["spool"]),
        (&Value::Bool(true), &Value::Bool(false))
    );
    let wire = |run: &Value| run["wire_bytes_per_event"].as_f64().unwrap();
    assert!(wire(&gzip) < wire(&plain) / 2.0, "{gzip} vs {plain}");
}

#[test]
fn a_real_target_receives_every_event() {
    let api = FakeApi::start();
    let run = report(&["--events", "1000", "--target", &api.url(), "--json"]);
    assert_eq!(run["events"], 1000);
    assert_eq!(api.accepted_messages().len(), 1000);
}

#[test]
fn zero_events_is_a_usage_error() {
    let output = bench(&["--events", "0"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--events"), "{stderr}");
}
