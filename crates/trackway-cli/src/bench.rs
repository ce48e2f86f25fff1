//! `trackway bench`: the load generator. Sends realistic events through the `trackway` library
//! from several producer threads to a target, and reports what the caller, the process and the
//! wire paid.
//!
//! The built-in `null` target is an HTTP sink in this process that decodes every request
//! (gunzip or zstd, JSON) and counts: it shares the machine's cores with the client, as a local
//! collector would.

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use clap::Args;
use hdrhistogram::Histogram;
use serde::Deserialize;
use serde_json::{Value, json};
use trackway::{Analytics, Message, Overflow};
use trackway_samples as samples;

use crate::Failure;

/// Distinct sample messages cycled through (cloned per call, outside the timed part).
const POOL: usize = 1024;

/// Flags of `trackway bench`.
#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// Events to send in all.
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    /// Producer threads calling the library.
    #[arg(long, default_value_t = 2)]
    producers: usize,
    /// `null` (a decoding sink in this process) or a Tracking API base URL.
    #[arg(long, visible_alias = "host", default_value = "null")]
    target: String,
    /// Write key for a real target.
    #[arg(long = "write-key", default_value = "bench-write-key")]
    write_key: String,
    /// How request bodies are compressed. `auto` moves to zstd after the null sink's first
    /// answer, which lists zstd as our collector's do.
    #[arg(long, value_enum, default_value_t = CompressionFlag::Gzip)]
    compression: CompressionFlag,
    /// Send uncompressed bodies (`--compression none`).
    #[arg(long, conflicts_with = "compression")]
    no_gzip: bool,
    /// Messages per batch (default: the library's).
    #[arg(long, value_name = "N")]
    flush_at: Option<usize>,
    /// The client's memory budget in bytes (default: the library's).
    #[arg(long, value_name = "BYTES")]
    max_queue_bytes: Option<usize>,
    /// Leave encoding to the library's background thread (`Builder::defer_encoding`).
    #[arg(long)]
    defer_encoding: bool,
    /// Keep accepted events in a spool in this directory (`Builder::spool_dir`), to measure
    /// what durability costs.
    #[arg(long, value_name = "DIR")]
    spool: Option<std::path::PathBuf>,
    /// gzip level, 1 (fastest) to 9 (smallest).
    #[arg(long, default_value_t = trackway::DEFAULT_GZIP_LEVEL)]
    gzip_level: u32,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Only run the null sink on this address until killed, so that a benchmark in another
    /// process measures the client's memory and CPU alone (`--target http://ADDR`).
    #[arg(long, value_name = "ADDR")]
    serve_null: Option<std::net::SocketAddr>,
}

/// `--compression`, of `trackway bench` and `trackway send`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum CompressionFlag {
    /// gzip, then zstd once the server lists it in `Accept-Encoding`.
    Auto,
    /// Always gzip.
    Gzip,
    /// Always zstd.
    Zstd,
    /// No compression.
    None,
}

impl CompressionFlag {
    /// The library's setting.
    pub(crate) fn setting(self) -> trackway::Compression {
        match self {
            CompressionFlag::Auto => trackway::Compression::Auto,
            CompressionFlag::Gzip => trackway::Compression::Gzip,
            CompressionFlag::Zstd => trackway::Compression::Zstd,
            CompressionFlag::None => trackway::Compression::None,
        }
    }

    /// The flag's own spelling, for reports.
    fn name(self) -> &'static str {
        match self {
            CompressionFlag::Auto => "auto",
            CompressionFlag::Gzip => "gzip",
            CompressionFlag::Zstd => "zstd",
            CompressionFlag::None => "none",
        }
    }
}

/// What the null sink counted.
#[derive(Default)]
struct Sink {
    events: AtomicU64,
    wire_bytes: AtomicU64,
    requests: AtomicU64,
}

#[derive(Deserialize)]
struct Batch {
    batch: Vec<serde::de::IgnoredAny>,
}

/// Decodes and counts one request; answers as our collector does, listing the encodings it
/// takes (so that `--compression auto` moves to zstd here as it would there).
async fn sink(
    State(sink): State<Arc<Sink>>,
    headers: HeaderMap,
    body: Bytes,
) -> ([(&'static str, &'static str); 1], axum::Json<Value>) {
    sink.wire_bytes
        .fetch_add(body.len() as u64, Ordering::Relaxed);
    sink.requests.fetch_add(1, Ordering::Relaxed);
    let encoding = headers
        .get("content-encoding")
        .and_then(|v| v.to_str().ok());
    let mut raw = Vec::new();
    let decoded = match encoding {
        Some("gzip") => flate2::read::GzDecoder::new(&body[..])
            .read_to_end(&mut raw)
            .map(|_| &raw[..]),
        Some("zstd") => zstd::stream::read::Decoder::new(&body[..])
            .and_then(|mut decoder| decoder.read_to_end(&mut raw))
            .map(|_| &raw[..]),
        _ => Ok(&body[..]),
    };
    if let Ok(Ok(batch)) = decoded.map(serde_json::from_slice::<Batch>) {
        sink.events
            .fetch_add(batch.batch.len() as u64, Ordering::Relaxed);
    }
    (
        [("accept-encoding", "zstd, gzip")],
        axum::Json(json!({"success": true})),
    )
}

pub(crate) fn run(args: BenchArgs) -> Result<(), Failure> {
    if args.producers == 0 || args.events == 0 {
        return Err(Failure::Usage(
            "--events and --producers must be above zero".into(),
        ));
    }
    let counted = Arc::new(Sink::default());
    // The sink's runtime lives as long as the benchmark.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("bench-sink")
        .enable_all()
        .build()
        .map_err(|e| Failure::Failed(e.to_string()))?;
    if let Some(addr) = args.serve_null {
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(addr))
            .map_err(|e| Failure::Failed(format!("cannot listen on {addr}: {e}")))?;
        let app = axum::Router::new()
            .route("/v1/batch", axum::routing::post(sink))
            .with_state(Arc::clone(&counted));
        return runtime
            .block_on(async move { axum::serve(listener, app).await })
            .map_err(|e| Failure::Failed(format!("the null sink failed: {e}")));
    }
    let host = if args.target == "null" {
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .map_err(|e| Failure::Failed(format!("cannot start the null sink: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Failure::Failed(e.to_string()))?;
        let app = axum::Router::new()
            .route("/v1/batch", axum::routing::post(sink))
            .with_state(Arc::clone(&counted));
        runtime.spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}")
    } else {
        args.target.clone()
    };

    let compression = if args.no_gzip {
        CompressionFlag::None
    } else {
        args.compression
    };
    let pool = message_pool();
    let mut builder = Analytics::builder(&args.write_key);
    if let Some(bytes) = args.max_queue_bytes {
        builder = builder.max_queue_bytes(bytes);
    }
    if let Some(n) = args.flush_at {
        builder = builder.flush_at(n);
    }
    if let Some(dir) = &args.spool {
        builder = builder
            .spool_dir(dir)
            .map_err(|e| Failure::Usage(e.to_string()))?;
    }
    let analytics = builder
        .host(&host)
        .compression(compression.setting())
        .gzip_level(args.gzip_level)
        .defer_encoding(args.defer_encoding)
        .no_proxy()
        // Wait for room rather than refuse: the benchmark measures a loss-free run.
        .overflow(Overflow::Wait(Duration::from_secs(60)))
        .build()
        .map_err(|e| Failure::Usage(e.to_string()))?;

    let per_producer = args.events / args.producers;
    // The producers calibrate their harness cost first, then wait at the gate, which opens
    // when all have: the clocks measure the run alone.
    let gate = std::sync::RwLock::new(());
    let (ready, calibrated) = std::sync::mpsc::channel::<()>();
    let mut started = Instant::now();
    let mut cpu_at_start = 0.0;
    let (latencies, callers_cpu, harness_cpu): (Histogram<u64>, f64, f64) =
        std::thread::scope(|scope| {
            let closed = gate.write().map_err(|e| Failure::Failed(e.to_string()))?;
            let workers: Vec<_> = (0..args.producers)
                .map(|p| {
                    let analytics = analytics.clone();
                    let pool = &pool;
                    let (gate, ready) = (&gate, ready.clone());
                    std::thread::Builder::new()
                        .name(format!("bench-producer-{p}"))
                        .spawn_scoped(scope, move || {
                            let harness_cost = harness_cost_per_call(pool, p, per_producer);
                            let _ = ready.send(());
                            drop(ready);
                            drop(gate.read());
                            let harness_cost = harness_cost?;
                            let cpu_before = this_thread_cpu_seconds();
                            let mut latencies = latency_histogram()?;
                            for n in 0..per_producer {
                                let message = pool[(p * 7919 + n) % pool.len()].clone();
                                let before = Instant::now();
                                let result = analytics.enqueue(message);
                                let nanos = before.elapsed().as_nanos();
                                latencies
                                    .saturating_record(u64::try_from(nanos).unwrap_or(u64::MAX));
                                if let Err(e) = result {
                                    return Err(e.to_string());
                                }
                            }
                            let cpu = this_thread_cpu_seconds() - cpu_before;
                            let harness = harness_cost * per_producer as f64;
                            Ok((latencies, (cpu - harness).max(0.0), harness))
                        })
                })
                .collect::<Result<_, _>>()
                .map_err(|e| Failure::Failed(format!("cannot start a producer: {e}")))?;
            drop(ready);
            // Ends early only if a producer died before it was ready; its join says why.
            while calibrated.recv().is_ok() {}
            started = Instant::now();
            cpu_at_start = process_cpu_seconds();
            drop(closed);
            let mut all = latency_histogram().map_err(Failure::Failed)?;
            let mut callers_cpu = 0.0;
            let mut harness_cpu = 0.0;
            for worker in workers {
                let outcome = worker
                    .join()
                    .map_err(|_| Failure::Failed("a producer panicked".into()))?;
                let (latencies, cpu, cloning) =
                    outcome.map_err(|e| Failure::Failed(format!("a call failed: {e}")))?;
                all.add(latencies)
                    .map_err(|e| Failure::Failed(e.to_string()))?;
                callers_cpu += cpu;
                harness_cpu += cloning;
            }
            Ok::<_, Failure>((all, callers_cpu, harness_cpu))
        })?;
    let enqueued_in = started.elapsed();
    let report = analytics.shutdown(Duration::from_secs(600));
    let elapsed = started.elapsed();
    let stats = analytics.stats();
    let sent = latencies.len();
    if stats.delivered != sent {
        return Err(Failure::Failed(format!(
            "not everything was delivered: {} of {sent}; at shutdown: {report}",
            stats.delivered
        )));
    }
    let percentile = |p: f64| latencies.value_at_quantile(p);
    // The library's threads, plus the producers' CPU less their cloning of messages.
    let client_cpu = thread_cpu_seconds(&[
        "trackway-worker",
        "trackway-encoder",
        "trackway-sender",
        "trackway-spool",
        "trackway-fsync",
    ]) + callers_cpu;
    let result = json!({
        "events": sent,
        "producers": args.producers,
        "target": args.target,
        "compression": compression.name(),
        "gzip_level": args.gzip_level,
        "defer_encoding": args.defer_encoding,
        "spool": args.spool.is_some(),
        "allocator": crate::ALLOCATOR_NAME,
        "json_maps": json_maps(),
        "caller_ns_p50": percentile(0.50),
        "caller_ns_p99": percentile(0.99),
        "enqueue_seconds": enqueued_in.as_secs_f64(),
        "end_to_end_events_per_second": sent as f64 / elapsed.as_secs_f64(),
        "process_cpu_seconds": process_cpu_seconds() - cpu_at_start,
        "client_cpu_seconds": client_cpu,
        "client_cpu_us_per_event": client_cpu * 1e6 / sent as f64,
        "sink_cpu_seconds": thread_cpu_seconds(&["bench-sink"]),
        "harness_cpu_seconds": harness_cpu,
        "peak_rss_mib": peak_rss_kib() as f64 / 1024.0,
        "wire_bytes_per_event": stats.bytes_sent as f64 / sent as f64,
        "requests": if args.target == "null" { counted.requests.load(Ordering::Relaxed) } else { 0 },
        "sink_events": if args.target == "null" { counted.events.load(Ordering::Relaxed) } else { sent },
    });
    print(&args, &result);
    Ok(())
}

fn print(args: &BenchArgs, result: &Value) {
    use std::io::Write;
    let text = if args.json {
        result.to_string()
    } else {
        let f = |k: &str| result[k].as_f64().unwrap_or(0.0);
        format!(
            "{} events, {} producers, target {}, compression {} (gzip level {}), defer encoding {}, spool {}\n  process:    {} allocator, {} serde_json maps\n  caller:     p50 {:.0} ns, p99 {:.0} ns per call\n  end to end: {:.0} events/s\n  cpu:        {:.2} s process: client {:.2} s ({:.2} µs per event), sink {:.2} s, harness (building, timing and dropping messages) {:.2} s\n  memory:     {:.1} MiB peak RSS\n  wire:       {:.1} bytes per event",
            result["events"],
            result["producers"],
            args.target,
            result["compression"].as_str().unwrap_or_default(),
            result["gzip_level"],
            result["defer_encoding"],
            result["spool"],
            result["allocator"].as_str().unwrap_or_default(),
            result["json_maps"].as_str().unwrap_or_default(),
            f("caller_ns_p50"),
            f("caller_ns_p99"),
            f("end_to_end_events_per_second"),
            f("process_cpu_seconds"),
            f("client_cpu_seconds"),
            f("client_cpu_us_per_event"),
            f("sink_cpu_seconds"),
            f("harness_cpu_seconds"),
            f("peak_rss_mib"),
            f("wire_bytes_per_event"),
        )
    };
    let _ = writeln!(std::io::stdout(), "{text}");
}

/// How serde_json's maps are built in this binary: `ordered` (an index map, because some
/// crate in the build turns on its `preserve_order` feature: here the collector, which keeps
/// stored events in the order their library sent) or `sorted` (a B-tree, serde_json's default
/// and what an application with `trackway` alone gets). Messages cost less to build, clone
/// and drop with `sorted` maps, so the figures of the two builds differ.
fn json_maps() -> &'static str {
    let mut map = serde_json::Map::new();
    map.insert("b".into(), Value::Null);
    map.insert("a".into(), Value::Null);
    if map.keys().next().is_some_and(|k| k == "b") {
        "ordered"
    } else {
        "sorted"
    }
}

/// Caller latencies in nanoseconds, to three significant digits: a few kilobytes however
/// many calls are recorded.
fn latency_histogram() -> Result<Histogram<u64>, String> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).map_err(|e| e.to_string())
}

/// A pool of realistic messages without messageIds or timestamps (the client stamps them):
/// the start of the samples' [`samples::Traffic`], returning users in sessions.
fn message_pool() -> Vec<Message> {
    samples::Traffic::new(42)
        .take(POOL)
        .filter_map(|value| Message::from_json(value).ok())
        .collect()
}

/// Clock ticks per second of /proc's CPU times (USER_HZ, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// User + system CPU seconds of this process.
fn process_cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/self/stat").map_or(0.0, |stat| cpu_of(&stat))
}

/// User + system CPU seconds of this process's threads whose names start with one of
/// `prefixes`.
fn thread_cpu_seconds(prefixes: &[&str]) -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    tasks
        .flatten()
        .filter(|task| {
            let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            prefixes
                .iter()
                .any(|p| name.trim().starts_with(&p[..p.len().min(15)]))
        })
        .map(|task| std::fs::read_to_string(task.path().join("stat")).map_or(0.0, |s| cpu_of(&s)))
        .sum()
}

/// CPU seconds of the calling thread, to the nanosecond.
fn this_thread_cpu_seconds() -> f64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    now.tv_sec as f64 + now.tv_nsec as f64 / 1e9
}

/// What a producer's own work around each call costs its thread: cloning the message from the
/// pool, reading the clock twice, recording the latency, and dropping the message, as a caller
/// that built a message and then threw it away would. Taken out of the callers' CPU, so that
/// the client's figure is what the library adds to such a caller. (The library's dropping of
/// the message it was given stands in for the caller's own; a caller who never built the
/// message would save that too: about 3,500 instructions per realistic event, by callgrind.)
fn harness_cost_per_call(pool: &[Message], p: usize, per_producer: usize) -> Result<f64, String> {
    let calls = per_producer.clamp(1, 100_000);
    let mut latencies = latency_histogram()?;
    let before = this_thread_cpu_seconds();
    for n in 0..calls {
        let message = pool[(p * 7919 + n) % pool.len()].clone();
        let started = Instant::now();
        drop(std::hint::black_box(message));
        let nanos = started.elapsed().as_nanos();
        latencies.saturating_record(u64::try_from(nanos).unwrap_or(u64::MAX));
    }
    Ok((this_thread_cpu_seconds() - before) / calls as f64)
}

fn cpu_of(stat: &str) -> f64 {
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / TICKS_PER_SECOND
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}
