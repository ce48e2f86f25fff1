//! `peers`: sends the same realistic track events through `trackway` and through the `segment`
//! crate, in one process, to one loopback null sink, and compares what each costs.
//!
//! Run from this directory: `cargo run --release -- --events 100000`.

mod events;
mod procfs;
mod sink;

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::Value;

use crate::procfs::Cpu;
use crate::sink::{Sink, Snapshot, THREAD_NAME};

const WRITE_KEY: &str = "bench-write-key";

struct Args {
    events: usize,
    pool: usize,
    sink_threads: usize,
    segment_first: bool,
    /// Diagnostic: send trackway's batches uncompressed.
    trackway_no_gzip: bool,
    /// trackway compresses with zstd instead of gzip (the sink does not list zstd, so the
    /// library's default would keep gzip).
    trackway_zstd: bool,
    /// Diagnostic: trackway's `flush_at` (default: the library's).
    trackway_flush_at: Option<usize>,
}

const USAGE: &str = "usage: peers [--events N] [--pool N] [--sink-threads N] [--segment-first] \
                     [--trackway-no-gzip] [--trackway-zstd] [--trackway-flush-at N]";

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        events: 100_000,
        pool: 4096,
        sink_threads: 2,
        segment_first: false,
        trackway_no_gzip: false,
        trackway_zstd: false,
        trackway_flush_at: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) => (f.to_owned(), Some(v.to_owned())),
            None => (arg.clone(), None),
        };
        let mut value = |name: &str| {
            inline
                .clone()
                .or_else(|| it.next())
                .with_context(|| format!("{name} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "--events" => args.events = value("--events")?.replace('_', "").parse()?,
            "--pool" => args.pool = value("--pool")?.parse()?,
            "--sink-threads" => args.sink_threads = value("--sink-threads")?.parse()?,
            "--segment-first" => args.segment_first = true,
            "--trackway-no-gzip" => args.trackway_no_gzip = true,
            "--trackway-zstd" => args.trackway_zstd = true,
            "--trackway-flush-at" => {
                args.trackway_flush_at = Some(value("--trackway-flush-at")?.parse()?);
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}\n{USAGE}"),
        }
    }
    if args.events == 0 || args.pool == 0 || args.sink_threads == 0 {
        bail!("--events, --pool and --sink-threads must be positive");
    }
    Ok(args)
}

/// What one library's phase measured.
struct Phase {
    /// Per-call durations in ns, sorted.
    calls: Vec<u64>,
    call_errors: u64,
    /// From the first call until the last call returned.
    loop_wall: Duration,
    /// From the first call until every event was counted by the sink.
    wall: Duration,
    cpu_process: f64,
    cpu_sink: f64,
    sink: Snapshot,
    sink_reached: bool,
    hwm_after_kib: u64,
    notes: Vec<String>,
}

impl Phase {
    /// Nearest-rank percentile of the call durations.
    fn percentile(&self, q: f64) -> f64 {
        let n = self.calls.len();
        let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
        self.calls[rank - 1] as f64
    }

    fn mean(&self) -> f64 {
        self.calls.iter().sum::<u64>() as f64 / self.calls.len() as f64
    }
}

fn elapsed_ns(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Waits until the sink has counted `target` messages; false if `timeout` passed first.
fn wait_for_sink(sink: &Sink, target: u64, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while sink.snapshot().messages < target {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    true
}

/// Assembles a phase from what was measured around it.
struct Before {
    sink: Snapshot,
    cpu: Cpu,
    start: Instant,
}

impl Before {
    fn now(sink: &Sink) -> Before {
        Before {
            sink: sink.snapshot(),
            cpu: Cpu::now(THREAD_NAME),
            start: Instant::now(),
        }
    }

    fn finish(
        &self,
        sink: &Sink,
        n: usize,
        loop_wall: Duration,
        mut calls: Vec<u64>,
        call_errors: u64,
    ) -> Phase {
        let sink_reached =
            wait_for_sink(sink, self.sink.messages + n as u64, Duration::from_secs(30));
        let wall = self.start.elapsed();
        let (cpu_process, cpu_sink) = Cpu::now(THREAD_NAME).since(&self.cpu);
        calls.sort_unstable();
        Phase {
            calls,
            call_errors,
            loop_wall,
            wall,
            cpu_process,
            cpu_sink,
            sink: sink.snapshot().since(&self.sink),
            sink_reached,
            hwm_after_kib: procfs::vm_hwm_kib(),
            notes: Vec::new(),
        }
    }
}

fn run_trackway(pool: &[trackway::Message], args: &Args, sink: &Sink) -> anyhow::Result<Phase> {
    let n = args.events;
    let mut builder = trackway::Analytics::builder(WRITE_KEY)
        .host(sink.url())
        .no_proxy()
        .overflow(trackway::Overflow::Wait(Duration::from_secs(60)));
    if args.trackway_no_gzip {
        builder = builder.gzip(false);
    }
    if args.trackway_zstd {
        builder = builder.compression(trackway::Compression::Zstd);
    }
    if let Some(flush_at) = args.trackway_flush_at {
        builder = builder.flush_at(flush_at);
    }
    let analytics = builder.build()?;
    let mut calls = Vec::with_capacity(n);
    let mut call_errors = 0;
    let before = Before::now(sink);
    for message in pool.iter().cycle().take(n) {
        let message = message.clone();
        let t = Instant::now();
        let result = analytics.enqueue(message);
        calls.push(elapsed_ns(t));
        if result.is_err() {
            call_errors += 1;
        }
    }
    let loop_wall = before.start.elapsed();
    let report = analytics.shutdown(Duration::from_secs(600));
    let mut phase = before.finish(sink, n, loop_wall, calls, call_errors);
    let stats = analytics.stats();
    phase.notes.push(format!("shutdown report: {report}"));
    phase.notes.push(format!(
        "stats: enqueued {} delivered {} rejected {} retried {} dropped {} bytes_sent {}",
        stats.enqueued,
        stats.delivered,
        stats.rejected,
        stats.retried,
        stats.dropped.total(),
        stats.bytes_sent
    ));
    if stats.delivered != n as u64 {
        phase
            .notes
            .push(format!("WARNING: delivered {} of {n}", stats.delivered));
    }
    Ok(phase)
}

fn run_segment(pool: &[segment::message::Track], n: usize, sink: &Sink) -> anyhow::Result<Phase> {
    // The README's usage: one AutoBatcher on a current-thread runtime, push().await per event.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(10))
            .build()?;
        let client = segment::HttpClient::new(http, sink.url().to_owned());
        let mut batcher =
            segment::AutoBatcher::new(client, segment::Batcher::new(None), WRITE_KEY.to_owned());
        // segment stamps neither messageId nor timestamp, which trackway stamps in its call;
        // the loop stamps them here (outside the timed call, inside the end-to-end time).
        let mut rng = fastrand::Rng::with_seed(7);
        let mut calls = Vec::with_capacity(n);
        let mut call_errors = 0;
        let before = Before::now(sink);
        for track in pool.iter().cycle().take(n) {
            let mut track = track.clone();
            track
                .extra
                .insert("messageId".into(), Value::String(events::uuid(&mut rng)));
            track.timestamp = Some(time::OffsetDateTime::now_utc());
            let t = Instant::now();
            let result = batcher.push(track).await;
            calls.push(elapsed_ns(t));
            if result.is_err() {
                call_errors += 1;
            }
        }
        let loop_wall = before.start.elapsed();
        let flushed = batcher.flush().await;
        let mut phase = before.finish(sink, n, loop_wall, calls, call_errors);
        if let Err(error) = flushed {
            phase.notes.push(format!("final flush failed: {error}"));
        }
        Ok(phase)
    })
}

fn print_report(args: &Args, tw: &Phase, sg: &Phase) {
    let n = args.events as f64;
    type Figure = fn(&Phase, f64) -> f64;
    let rows: &[(&str, Figure, usize)] = &[
        ("caller ns/call p50", |p, _| p.percentile(0.50), 0),
        ("caller ns/call p99", |p, _| p.percentile(0.99), 0),
        ("caller ns/call p99.9", |p, _| p.percentile(0.999), 0),
        ("caller ns/call max", |p, _| p.percentile(1.0), 0),
        ("caller ns/call mean", |p, _| p.mean(), 0),
        ("end-to-end events/s", |p, n| n / p.wall.as_secs_f64(), 0),
        ("end-to-end wall s", |p, _| p.wall.as_secs_f64(), 3),
        (
            "  of which calling loop s",
            |p, _| p.loop_wall.as_secs_f64(),
            3,
        ),
        ("CPU s, whole process", |p, _| p.cpu_process, 2),
        ("CPU s, sink threads", |p, _| p.cpu_sink, 2),
        ("CPU s, excl. sink", |p, _| p.cpu_process - p.cpu_sink, 2),
        ("process CPU us/event", |p, n| p.cpu_process * 1e6 / n, 2),
        (
            "client CPU us/event",
            |p, n| (p.cpu_process - p.cpu_sink) * 1e6 / n,
            2,
        ),
        ("wire bytes/event", |p, n| p.sink.body_bytes as f64 / n, 1),
        (
            "JSON bytes/event (decoded)",
            |p, n| p.sink.json_bytes as f64 / n,
            1,
        ),
        (
            "events lost",
            |p, n| n - p.sink.messages.min(n as u64) as f64,
            0,
        ),
        ("requests", |p, _| p.sink.requests as f64, 0),
        (
            "events/request",
            |p, _| p.sink.messages as f64 / p.sink.requests.max(1) as f64,
            1,
        ),
        ("VmHWM after phase KiB", |p, _| p.hwm_after_kib as f64, 0),
    ];
    let (first, second) = if args.segment_first {
        ("segment", "trackway")
    } else {
        ("trackway", "segment")
    };
    println!("phase order: {first}, then {second}; VmHWM is cumulative (never decreases)");
    println!();
    println!(
        "| {:<27} | {:>14} | {:>14} | {:>16} |",
        "figure", "trackway", "segment", "trackway/segment"
    );
    println!("|{:-<29}|{:->16}|{:->16}|{:->18}|", "", "", "", "");
    for (label, figure, decimals) in rows {
        let (a, b) = (figure(tw, n), figure(sg, n));
        let ratio = if b == 0.0 {
            "n/a".to_owned()
        } else {
            format!("{:.3}", a / b)
        };
        println!(
            "| {label:<27} | {a:>14.prec$} | {b:>14.prec$} | {ratio:>16} |",
            prec = *decimals
        );
    }
    println!();
    for (name, p) in [("trackway", tw), ("segment", sg)] {
        let s = &p.sink;
        println!(
            "{name}: sink counted {} of {} events{} in {} requests ({} gzip, {} zstd, {} bad); \
             non-track {}; without messageId {}; call errors {}",
            s.messages,
            args.events,
            if p.sink_reached {
                ""
            } else {
                " (TIMED OUT waiting)"
            },
            s.requests,
            s.gzip_requests,
            s.zstd_requests,
            s.bad_requests,
            s.non_track,
            s.without_message_id,
            p.call_errors
        );
        for note in &p.notes {
            println!("  {note}");
        }
    }
    println!();
    println!("VmHWM at end: {} KiB", procfs::vm_hwm_kib());
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let built = Instant::now();
    let pool = events::build_pool(args.pool, 42)?;
    let sink = Sink::start(args.sink_threads)?;
    println!(
        "peers: {} events per library; pool of {} track events of the samples' Traffic \
         ({} track templates; mean {:.0} JSON bytes before messageId, timestamp, \
         context.library), built in {:.0} ms",
        args.events,
        args.pool,
        pool.templates,
        pool.mean_json_bytes,
        built.elapsed().as_secs_f64() * 1e3
    );
    println!(
        "trackway {} (path) vs segment {} (crates.io); sink {} on {} tokio threads; {} CPUs",
        env!("TRACKWAY_VERSION"),
        env!("SEGMENT_VERSION"),
        sink.url(),
        args.sink_threads,
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    if args.trackway_no_gzip || args.trackway_flush_at.is_some() {
        println!(
            "DIAGNOSTIC trackway settings: gzip {}, flush_at {}",
            !args.trackway_no_gzip,
            args.trackway_flush_at
                .map_or_else(|| "default".to_owned(), |f| f.to_string())
        );
    }
    println!("VmHWM before phases: {} KiB", procfs::vm_hwm_kib());
    let (tw, sg) = if args.segment_first {
        let sg = run_segment(&pool.segment, args.events, &sink)?;
        (run_trackway(&pool.trackway, &args, &sink)?, sg)
    } else {
        let tw = run_trackway(&pool.trackway, &args, &sink)?;
        (tw, run_segment(&pool.segment, args.events, &sink)?)
    };
    println!();
    print_report(&args, &tw, &sg);
    Ok(())
}
