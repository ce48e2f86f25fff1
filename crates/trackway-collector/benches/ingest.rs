//! Ingest throughput and acknowledgement latency of the collector on its embedded store.
//!
//! Batches of 100 realistic events (gzipped, as `trackway` and analytics-python send them)
//! from 8 concurrent keep-alive connections; every 200 means the batch was fsynced. Phase 1
//! sends as fast as the server acknowledges; phase 2 sends at half that rate and reports the
//! latency distribution. Server and clients share this machine's cores.
//!
//! Run: `cargo bench -p trackway-collector --bench ingest [-- EVENTS] [--store postgres|URL]
//! [--collectors N]` (default and most 200,000 events, in whole batches; each body is sent
//! once, phase 2 included, so nothing is deduplicated). `--store postgres` starts a PostgreSQL
//! of its own (Debian's package, as the tests do) and also reports the database's CPU and WAL
//! bytes per event; `--collectors N` runs N collectors on that database, the connections
//! spread over them. On SQLite it reports the bytes the store's writer thread wrote (the WAL:
//! it writes nothing else but the rare log restart's copy) and the checkpointer's (the copy
//! into the database file) per event, from the threads' own I/O counters in `/proc`.

mod support;

use std::time::{Duration, Instant};

use support::{BATCH, CONNECTIONS, WRITE_KEY, bodies, percentiles, report, run};
use trackway_collector::{Config, Source};
use trackway_testkit::postgres::TestPostgres;

/// Where the benchmark's events go.
enum Target {
    Sqlite,
    /// A PostgreSQL database; the server too when the bench started it (for its CPU and WAL).
    Postgres(String, Option<TestPostgres>),
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let asked: usize = args.iter().find_map(|a| a.parse().ok()).unwrap_or(200_000);
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
    };
    let collectors: usize = flag("--collectors")
        .and_then(|n| n.parse().ok())
        .unwrap_or(1)
        .max(1);
    let target = match flag("--store").map(String::as_str) {
        None => Target::Sqlite,
        Some("postgres") => {
            let server = TestPostgres::new().expect("a test postgres");
            let url = server.create_database("bench").expect("database");
            Target::Postgres(url, Some(server))
        }
        Some(url) => Target::Postgres(url.to_owned(), None),
    };
    // Whole batches, each with its own messageIds: a body sent twice would be deduplicated.
    let requests = (asked / BATCH).clamp(2, support::MAX_REQUESTS * 2 / 3);
    let events = requests * BATCH;
    let temp = tempfile::tempdir().expect("temp dir");
    let runtime = support::runtime();
    let urls: Vec<String> = (0..collectors)
        .map(|n| {
            let mut config = Config::new(
                temp.path().join(format!("collector-{n}")),
                vec![Source::new("bench", vec![WRITE_KEY.into()])],
                support::ADMIN_TOKEN.into(),
            );
            if let Target::Postgres(url, _) = &target {
                config.postgres = Some(url.clone());
            }
            format!("{}/v1/batch", support::start(&runtime, &config))
        })
        .collect();
    let store = match &target {
        Target::Sqlite => "sqlite".to_owned(),
        Target::Postgres(url, _) => trackway_collector::storage::mask_password(url),
    };
    report("store", &format!("{store}; {collectors} collector(s)"));

    // Phase 2 sends bodies of its own: repeats of phase 1's would only be deduplicated.
    let all = bodies(requests + requests / 2);
    let (bodies, later) = all.split_at(requests);
    let raw_bytes: usize = bodies.iter().map(|b| b.1).sum::<usize>() / bodies.len();
    report(
        "setup",
        &format!(
            "{events} events in {requests} requests of {BATCH}; {CONNECTIONS} connections; \
         {} KiB per request before gzip, {} KiB after",
            raw_bytes / 1024,
            bodies.iter().map(|b| b.0.len()).sum::<usize>() / bodies.len() / 1024
        ),
    );

    let baseline = match &target {
        Target::Sqlite => raw_store(&runtime, bodies, requests, None),
        Target::Postgres(_, Some(server)) => {
            let url = server.create_database("baseline").expect("database");
            raw_store(&runtime, bodies, requests, Some(&url))
        }
        Target::Postgres(_, None) => f64::NAN,
    };
    report(
        "baseline",
        &format!(
            "{baseline:.0} events/s: the same events appended straight to a second store, 8 concurrent writers, no HTTP"
        ),
    );

    let server = match &target {
        Target::Postgres(_, Some(server)) => Some(server),
        _ => None,
    };
    let wal_bytes = || {
        server.map_or(0.0, |s| {
            s.psql("SELECT wal_bytes FROM pg_stat_wal")
                .ok()
                .and_then(|b| b.parse::<f64>().ok())
                .unwrap_or(0.0)
        })
    };
    let (cpu_before, db_before, wal_before) = (
        process_cpu(),
        server.map_or(0.0, |s| s.cpu_seconds()),
        wal_bytes(),
    );
    let sqlite_before = SqliteWrites::now();
    let (elapsed, mut latencies) = run(&urls, bodies, requests, None);
    let sqlite = SqliteWrites::now().since(&sqlite_before);
    let (cpu, db, wal) = (
        process_cpu() - cpu_before,
        server.map_or(0.0, |s| s.cpu_seconds()) - db_before,
        if server.is_some() {
            wal_bytes() - wal_before
        } else {
            sqlite.wal as f64
        },
    );
    let rate = events as f64 / elapsed.as_secs_f64();
    report(
        "full speed",
        &format!(
            "{:.0} events/s ({:.2?}, {:.2} of baseline); ack {}",
            rate,
            elapsed,
            rate / baseline,
            percentiles(&mut latencies)
        ),
    );

    let per_event = |seconds: f64| seconds / events as f64 * 1e6;
    report(
        "cost",
        &format!(
            "{:.1} us CPU per event in this process (collectors and load generator), \
             {:.1} us in the database, {:.0} WAL bytes per event",
            per_event(cpu),
            per_event(db),
            wal / events as f64
        ),
    );

    if let Target::Sqlite = target {
        report("sqlite", &sqlite.per_event(events));
    }

    let half = rate / 2.0;
    let sqlite_before = SqliteWrites::now();
    let (elapsed, mut latencies) = run(&urls, later, requests / 2, Some(half / BATCH as f64));
    let sqlite = SqliteWrites::now().since(&sqlite_before);
    report(
        "half load",
        &format!(
            "{:.0} events/s offered, {:.0} achieved; ack {}",
            half,
            (requests / 2 * BATCH) as f64 / elapsed.as_secs_f64(),
            percentiles(&mut latencies)
        ),
    );
    if let Target::Sqlite = target {
        report("sqlite", &sqlite.per_event(requests / 2 * BATCH));
        let wal = temp.path().join("collector-0").join(format!(
            "{}-wal",
            trackway_collector::storage::sqlite::DATABASE_FILE
        ));
        report(
            "log",
            &format!(
                "{} MiB of WAL at the end",
                std::fs::metadata(wal).map_or(0, |m| m.len()) >> 20
            ),
        );
    }
}

/// Bytes written by the SQLite store's threads, from their I/O counters (`wchar` in
/// `/proc/self/task/TID/io`: bytes passed to write calls, so the page cache does not hide them).
#[derive(Default)]
struct SqliteWrites {
    /// The writer threads' (`trackway-store`): WAL frames, page and frame header.
    wal: u64,
    /// The checkpointer threads' (`trackway-checkpoint`, 15 characters in `comm`).
    checkpoint: u64,
    /// Per thread id, to take differences thread by thread.
    threads: std::collections::HashMap<String, (u64, u64)>,
}

impl SqliteWrites {
    fn now() -> SqliteWrites {
        let mut writes = SqliteWrites::default();
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return writes;
        };
        for task in tasks.flatten() {
            let path = task.path();
            let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
            let io = std::fs::read_to_string(path.join("io")).unwrap_or_default();
            let wchar = io
                .lines()
                .find_map(|l| l.strip_prefix("wchar:"))
                .and_then(|n| n.trim().parse::<u64>().ok())
                .unwrap_or(0);
            let entry = match name.trim() {
                "trackway-store" => (wchar, 0),
                "trackway-checkp" => (0, wchar),
                _ => continue,
            };
            writes.wal += entry.0;
            writes.checkpoint += entry.1;
            writes
                .threads
                .insert(task.file_name().to_string_lossy().into_owned(), entry);
        }
        writes
    }

    /// What the threads alive now wrote since `before` (a thread started since counts whole).
    fn since(&self, before: &SqliteWrites) -> SqliteWrites {
        let mut delta = SqliteWrites::default();
        for (tid, (wal, checkpoint)) in &self.threads {
            let (wal_0, checkpoint_0) = before.threads.get(tid).copied().unwrap_or((0, 0));
            delta.wal += wal - wal_0;
            delta.checkpoint += checkpoint - checkpoint_0;
        }
        delta
    }

    fn per_event(&self, events: usize) -> String {
        format!(
            "{:.0} WAL bytes per event written by the store's writer, {:.0} by its checkpointer",
            self.wal as f64 / events as f64,
            self.checkpoint as f64 / events as f64
        )
    }
}

/// CPU seconds this process has used (user and system), from `/proc/self/stat`; 0 elsewhere.
fn process_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    // utime and stime are fields 14 and 15, counting from 1 (the rest starts at field 3).
    let ticks: u64 = [14, 15]
        .iter()
        .filter_map(|&n| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok()))
        .sum();
    // USER_HZ: 100 on Linux.
    ticks as f64 / 100.0
}

/// The store alone (SQLite, or the PostgreSQL database at `postgres`): every request's events
/// appended by 8 concurrent tasks, as the ingest path would after parsing. Events/s.
fn raw_store(
    runtime: &tokio::runtime::Runtime,
    bodies: &[(Vec<u8>, usize)],
    requests: usize,
    postgres: Option<&str>,
) -> f64 {
    use std::io::Read;
    use std::sync::Arc;
    use trackway_collector::storage::postgres::PostgresStore;
    use trackway_collector::storage::{NewEvent, Store, sqlite::SqliteStore};

    let temp = tempfile::tempdir().expect("temp dir");
    let window = Duration::from_secs(86_400);
    let store: Arc<dyn Store> = match postgres {
        Some(url) => Arc::new(PostgresStore::open(url, window).expect("store")),
        None => Arc::new(SqliteStore::open(temp.path(), window).expect("store")),
    };
    let source: Arc<str> = Arc::from("bench");
    let batches: Vec<Vec<NewEvent>> = (0..requests)
        .map(|n| {
            let mut raw = String::new();
            flate2::read::GzDecoder::new(&bodies[n % bodies.len()].0[..])
                .read_to_string(&mut raw)
                .expect("gunzip");
            let body: serde_json::Value = serde_json::from_str(&raw).expect("json");
            body["batch"]
                .as_array()
                .expect("batch")
                .iter()
                .map(|m| NewEvent {
                    source: Arc::clone(&source),
                    message_id: format!("{n}-{}", m["messageId"]),
                    kind: m["type"].as_str().unwrap_or_default().to_owned(),
                    user_id: m["userId"].as_str().map(str::to_owned),
                    anonymous_id: m["anonymousId"].as_str().map(str::to_owned),
                    label: m["event"].as_str().map(str::to_owned),
                    received_at: 0,
                    rejected: None,
                    body: m.to_string(),
                })
                .collect()
        })
        .collect();
    let started = Instant::now();
    runtime.block_on(async {
        let mut lanes: Vec<Vec<Vec<NewEvent>>> = (0..CONNECTIONS).map(|_| Vec::new()).collect();
        for (n, batch) in batches.into_iter().enumerate() {
            lanes[n % CONNECTIONS].push(batch);
        }
        let tasks: Vec<_> = lanes
            .into_iter()
            .map(|lane| {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    for batch in lane {
                        store.append(batch).await.expect("append");
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("task");
        }
    });
    (requests * BATCH) as f64 / started.elapsed().as_secs_f64()
}
