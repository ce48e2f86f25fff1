//! `trackway import`: bulk-load historical events from a JSON-lines file through the
//! `trackway` library, to any Tracking API host.
//!
//! Resumable: every [`CHECKPOINT_LINES`] lines the import flushes, and once the server has
//! taken everything so far it records the line number in a state file
//! (`<file>.import-state`). A second run skips what the state file says is done. Lines sent
//! after the last checkpoint may be sent again on resume; they keep their messageId (a line
//! without one gets an id derived from its content and line number), so the server
//! deduplicates them.
//!
//! What the server says decides how it goes on:
//!
//! - a message it stores as rejected (listed in its 200 answer) or refuses alone with a 400
//!   (the library splits a refused batch down to the messages at fault) is that line's
//!   rejection: reported by line number, counted, and the import goes on;
//! - a request refused as a whole (401, 403, 404, 413, any other final status, or a 400 for
//!   every message with nothing taken) stops the import with exit 1 and one line saying why;
//!   the state file is not advanced past anything the server did not store;
//! - while the server does not answer, the progress shows the retries; after `--retry-for`
//!   without its answer the import stops with exit 1, saying how to resume.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;
use siphasher::sip::SipHasher13;
use std::hash::Hasher;
use trackway::{Analytics, DropReason, EnqueueError, Message, Observer, Outcome, Overflow};

use crate::Failure;
use crate::send::parse_duration;

/// Lines between checkpoints.
const CHECKPOINT_LINES: u64 = 5_000;
/// Default `--retry-for`: long enough to ride out a restart of the server or a short network
/// outage, short enough that an import against a host that is down ends within minutes.
const DEFAULT_RETRY_FOR: &str = "120s";
/// How often the progress shows the client's state; off a terminal, the shortest time
/// between two status lines (written only while the client retries).
const STATUS_INTERVAL: Duration = Duration::from_secs(1);
/// How long a stopped import lets the client settle what it still holds before exiting
/// (what is not delivered by then is sent again on resume).
const STOP_GRACE: Duration = Duration::from_secs(1);

/// Flags of `trackway import`.
#[derive(Debug, Args)]
pub(crate) struct ImportArgs {
    /// The JSON-lines file: one message per line.
    file: PathBuf,
    /// Where to send: "oregon", "dublin", or a base URL.
    #[arg(long, default_value = trackway::OREGON_HOST)]
    host: String,
    /// The source's write key.
    #[arg(long = "write-key", env = "TRACKWAY_WRITE_KEY", hide_env_values = true)]
    write_key: String,
    /// Where progress is recorded (default: <file>.import-state).
    #[arg(long)]
    state: Option<PathBuf>,
    /// Ignore the state file and start from the first line.
    #[arg(long)]
    restart: bool,
    /// How long to keep retrying a server that does not take the events (down, or answering
    /// 5xx) before stopping; a re-run resumes. Such as 120s or 10m.
    #[arg(long, default_value = DEFAULT_RETRY_FOR, value_parser = parse_duration)]
    retry_for: Duration,
}

pub(crate) fn run(args: ImportArgs) -> Result<(), Failure> {
    let state_path = args.state.clone().unwrap_or_else(|| {
        let mut name = args.file.clone().into_os_string();
        name.push(".import-state");
        PathBuf::from(name)
    });
    let done = if args.restart {
        0
    } else {
        read_state(&state_path)?
    };
    let file = File::open(&args.file)
        .map_err(|e| Failure::Usage(format!("cannot open {}: {e}", args.file.display())))?;
    let total_bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
    let tracker = Tracker::default();
    let analytics = Analytics::builder(&args.write_key)
        .host(&args.host)
        // Backpressure instead of refusals: the file waits for the network.
        .overflow(Overflow::Wait(args.retry_for))
        .observer(tracker.clone())
        .build()
        .map_err(|e| Failure::Usage(e.to_string()))?;

    let progress = ProgressBar::new(total_bytes);
    progress.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {msg} ({eta} left)",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let status = Status::start(&analytics, &progress, &args.host)?;
    let mut import = Import {
        analytics,
        tracker,
        progress,
        state: state_path,
        host: args.host.clone(),
        retry_for: args.retry_for,
        recorded: done,
        delivered_before: 0,
        lines: HashMap::new(),
        counts: Counts::default(),
    };
    let result = import.lines(file, done, &status.lines_read);
    status.stop();
    import.progress.finish_and_clear();
    if let Err(failure) = result {
        // What the client still holds is sent again on resume.
        let _ = import.analytics.shutdown(STOP_GRACE);
        return Err(failure);
    }
    let stats = import.analytics.stats();
    let counts = &import.counts;
    let _ = writeln!(
        std::io::stdout(),
        "imported {} events from {} ({} invalid lines skipped, {} rejected by the server, {} already done, {} duplicates the server already had)",
        stats.delivered,
        args.file.display(),
        counts.invalid,
        counts.rejected,
        counts.skipped,
        stats.duplicates
    );
    Ok(())
}

/// One run of the import.
struct Import {
    analytics: Analytics,
    tracker: Tracker,
    progress: ProgressBar,
    /// The state file.
    state: PathBuf,
    host: String,
    retry_for: Duration,
    /// The last line the state file records as done.
    recorded: u64,
    /// The library's delivered count at the last checkpoint: what a checkpoint's lines took
    /// is the difference.
    delivered_before: u64,
    /// The line of each message sent since the last checkpoint, by messageId: to report a
    /// rejection by line number.
    lines: HashMap<String, u64>,
    counts: Counts,
}

#[derive(Default)]
struct Counts {
    /// Lines the server listed or refused alone.
    rejected: u64,
    invalid: u64,
    skipped: u64,
}

impl Import {
    /// Sends every line after `done`, with a checkpoint every [`CHECKPOINT_LINES`] and at the
    /// end.
    fn lines(&mut self, file: File, done: u64, lines_read: &AtomicU64) -> Result<(), Failure> {
        let mut line_number = 0_u64;
        for line in BufReader::new(file).lines() {
            line_number += 1;
            lines_read.store(line_number, Ordering::Relaxed);
            let line =
                line.map_err(|e| Failure::Failed(format!("reading line {line_number}: {e}")))?;
            self.progress.inc(line.len() as u64 + 1);
            if line_number <= done || line.trim().is_empty() {
                self.counts.skipped += u64::from(line_number <= done);
                continue;
            }
            match message(&line, line_number) {
                Ok((message, id)) => match self.analytics.enqueue(message) {
                    Ok(()) => {
                        self.lines.insert(id, line_number);
                    }
                    Err(e @ (EnqueueError::Invalid(_) | EnqueueError::TooLarge { .. })) => {
                        self.invalid(line_number, &e.to_string());
                    }
                    Err(e) => {
                        return Err(self.stopped(
                            line_number,
                            &format!("{e} ({} is not taking events)", self.host),
                        ));
                    }
                },
                Err(reason) => self.invalid(line_number, &reason),
            }
            if let Some(refusal) = self.tracker.refusal() {
                return Err(self.stopped(line_number, &refusal));
            }
            if line_number.is_multiple_of(CHECKPOINT_LINES) {
                self.checkpoint(line_number)?;
            }
        }
        self.checkpoint(line_number)
    }

    fn invalid(&mut self, line: u64, reason: &str) {
        self.counts.invalid += 1;
        self.say(&format!("line {line}: skipped: {reason}"));
    }

    /// Writes `text` as a line on stderr, above the progress bar.
    fn say(&self, text: &str) {
        self.progress.suspend(|| {
            let _ = writeln!(std::io::stderr(), "{text}");
        });
    }

    /// The failure of an import stopped at `line` because of `reason`.
    fn stopped(&self, line: u64, reason: &str) -> Failure {
        Failure::Failed(format!(
            "{reason}; stopped at line {line}, progress is recorded up to line {}: fix that and \
             run the same command again to resume",
            self.recorded
        ))
    }

    /// Waits until everything sent so far has an outcome, reports the lines the server
    /// rejected, then records `line` as done. Stops, recording nothing, if the server refused
    /// a request as a whole or did not take everything within `--retry-for`.
    fn checkpoint(&mut self, line: u64) -> Result<(), Failure> {
        let deadline = Instant::now() + self.retry_for;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let report = self.analytics.flush(STATUS_INTERVAL.min(left));
            if let Some(refusal) = self.tracker.refusal() {
                return Err(self.stopped(line, &refusal));
            }
            if report.completed {
                break;
            }
            if left.is_zero() {
                let stats = self.analytics.stats();
                // Why, in the client's words (it names the URL; the line names the host).
                let why = self
                    .analytics
                    .last_request_error()
                    .map(|e| {
                        let e = e.split_once("/v1/batch: ").map_or(e.as_str(), |(_, r)| r);
                        format!(": {e}")
                    })
                    .unwrap_or_default();
                return Err(self.stopped(
                    line,
                    &format!(
                        "{} did not take every event within {:?} ({} waiting, {} retries){why}",
                        self.host,
                        self.retry_for,
                        stats.pending(),
                        stats.retried
                    ),
                ));
            }
        }
        let rejected = self.tracker.take_rejected();
        let (mut alone_400, mut listed) = (0_u64, 0_u64);
        for rejection in &rejected {
            if rejection.status == 400 {
                alone_400 += 1;
            } else {
                listed += 1;
            }
        }
        // A server that refuses every request with 400 (the library split each batch down to
        // single messages) refused the requests, not the lines. Counted since the last
        // checkpoint: a server that took the first lines and refuses everything after (a
        // proxy now routing elsewhere) must stop the import too, not have the refused lines
        // recorded as done.
        let delivered = self.analytics.stats().delivered;
        let taken = delivered - self.delivered_before + listed;
        if alone_400 > 1 && taken == 0 {
            let reason = rejected
                .first()
                .map_or("", |r| r.reason.as_str())
                .to_owned();
            return Err(self.stopped(line, &format!("the server refused every message: {reason}")));
        }
        let mut reported: Vec<(u64, &Rejection)> = rejected
            .iter()
            .map(|r| (self.lines.get(&r.message_id).copied().unwrap_or(0), r))
            .collect();
        reported.sort_by_key(|(line, _)| *line);
        for (number, rejection) in reported {
            self.say(&format!(
                "line {number}: rejected by the server: {}",
                rejection.reason
            ));
        }
        self.counts.rejected += rejected.len() as u64;
        self.lines.clear();
        // Lines refused at the call are counted as invalid; these were accepted and lost.
        let dropped = self.analytics.stats().dropped;
        let given_up: u64 = [
            DropReason::RetriesExhausted,
            DropReason::RetryWindowExceeded,
            DropReason::Shutdown,
        ]
        .into_iter()
        .map(|reason| dropped.get(reason))
        .sum();
        if given_up > 0 {
            return Err(self.stopped(
                line,
                &format!("the client gave up on {given_up} events (dropped: {dropped})"),
            ));
        }
        std::fs::write(&self.state, format!("{line}\n")).map_err(|e| {
            Failure::Failed(format!(
                "cannot record progress in {}: {e}",
                self.state.display()
            ))
        })?;
        self.recorded = line;
        self.delivered_before = delivered;
        Ok(())
    }
}

/// A line the server rejected.
struct Rejection {
    message_id: String,
    status: u16,
    reason: String,
}

/// The outcomes the import acts on, from the client's threads.
#[derive(Clone, Default)]
struct Tracker(Arc<TrackerState>);

#[derive(Default)]
struct TrackerState {
    /// Set once a request was refused as a whole: checked after every line.
    refused: AtomicBool,
    refusal: Mutex<Option<String>>,
    rejected: Mutex<Vec<Rejection>>,
}

impl Tracker {
    /// Why the server refused a request as a whole, if it did.
    fn refusal(&self) -> Option<String> {
        if !self.0.refused.load(Ordering::Acquire) {
            return None;
        }
        self.0
            .refusal
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn take_rejected(&self) -> Vec<Rejection> {
        std::mem::take(&mut *self.0.rejected.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Observer for Tracker {
    fn on_outcome(&self, message_id: &str, outcome: &Outcome<'_>) {
        let Outcome::Rejected { status, reason } = outcome else {
            return;
        };
        // A 2xx lists the message as stored rejected; a 400 reaches a message alone only
        // after the library split its batch down to it. Anything else refused the request.
        if *status == 400 || (200..300).contains(status) {
            self.0
                .rejected
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(Rejection {
                    message_id: message_id.to_owned(),
                    status: *status,
                    reason: (*reason).to_owned(),
                });
            return;
        }
        let mut refusal = self.0.refusal.lock().unwrap_or_else(|e| e.into_inner());
        if refusal.is_none() {
            *refusal = Some(format!("the server refused the import: {reason}"));
            self.0.refused.store(true, Ordering::Release);
        }
    }
}

/// Shows the client's state while the import runs: in the progress bar's message on a
/// terminal; off a terminal (a log file, a pipe), as a status line whenever the client has
/// retried since the last one, so that an import waiting on a server that is down says so.
struct Status {
    lines_read: Arc<AtomicU64>,
    stop: mpsc::Sender<()>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Status {
    fn start(analytics: &Analytics, progress: &ProgressBar, host: &str) -> Result<Status, Failure> {
        let lines_read = Arc::new(AtomicU64::new(0));
        let (stop, stopped) = mpsc::channel::<()>();
        let (analytics, progress, host) = (analytics.clone(), progress.clone(), host.to_owned());
        let read = Arc::clone(&lines_read);
        let terminal = std::io::stderr().is_terminal();
        let thread = std::thread::Builder::new()
            .name("trackway-import-status".into())
            .spawn(move || {
                let started = Instant::now();
                // Retries since the server last took something: the client is stuck on them.
                let (mut delivered, mut retried_then) = (0, 0);
                let mut retries_written = 0;
                while let Err(mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(STATUS_INTERVAL)
                {
                    let stats = analytics.stats();
                    if stats.delivered > delivered {
                        (delivered, retried_then) = (stats.delivered, stats.retried);
                    }
                    let rate = stats.delivered as f64 / started.elapsed().as_secs_f64().max(0.001);
                    let mut text = format!(
                        "{} lines read, {} imported ({rate:.0} events/s), {} waiting",
                        read.load(Ordering::Relaxed),
                        stats.delivered,
                        stats.pending()
                    );
                    let retrying = stats.retried > retried_then && stats.pending() > 0;
                    if retrying {
                        text.push_str(&format!(
                            "; {host} has not taken them yet, retrying ({} retries so far)",
                            stats.retried
                        ));
                    }
                    if terminal {
                        progress.set_message(text);
                    } else if retrying && stats.retried > retries_written {
                        let _ = writeln!(std::io::stderr(), "import: {text}");
                        retries_written = stats.retried;
                    }
                }
            })
            .map_err(|e| Failure::Failed(format!("cannot start the status thread: {e}")))?;
        Ok(Status {
            lines_read,
            stop,
            thread: Some(thread),
        })
    }

    fn stop(mut self) {
        drop(self.stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn read_state(path: &Path) -> Result<u64, Failure> {
    match std::fs::read_to_string(path) {
        Ok(text) => text.trim().parse().map_err(|_| {
            Failure::Usage(format!(
                "{} is not an import state file (use --restart)",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(Failure::Failed(format!(
            "cannot read {}: {e}",
            path.display()
        ))),
    }
}

/// The messageId of line `number`, whose text is `line`, when it has none: the same on every
/// run, build and Rust release, so that a resumed import's repeats are deduplicated. It is
/// SipHash-1-3 with zero keys over the line and a 0xff byte: exactly what std's
/// `DefaultHasher` gave earlier builds, whose ids it keeps, fixed here since std's algorithm
/// may change.
fn derived_id(line: &str, number: u64) -> String {
    let mut hasher = SipHasher13::new_with_keys(0, 0);
    hasher.write(line.as_bytes());
    hasher.write_u8(0xff);
    format!("import-{:016x}-{number}", hasher.finish())
}

/// One line as a message, with a stable messageId when it has none; and that messageId.
fn message(line: &str, number: u64) -> Result<(Message, String), String> {
    let mut value: Value =
        serde_json::from_str(line).map_err(|e| format!("not valid JSON: {e}"))?;
    let Some(object) = value.as_object_mut() else {
        return Err("not a JSON object".into());
    };
    let id = match object.get("messageId") {
        Some(Value::String(id)) => id.clone(),
        _ => {
            let id = derived_id(line, number);
            object.insert("messageId".into(), Value::String(id.clone()));
            id
        }
    };
    Ok((Message::from_json(value).map_err(|e| e.to_string())?, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_are_fixed_by_the_line_and_its_number() {
        // Pinned: a resumed import must give a line the id the first run gave it, whichever
        // build ran that. This is also what std's `DefaultHasher` derived in earlier builds
        // (checked against it on Rust 1.95, the toolchain of those builds).
        assert_eq!(
            derived_id(r#"{"type":"track","event":"A","userId":"u"}"#, 7),
            "import-c6fbe00596c12043-7"
        );
        assert_ne!(derived_id("x", 1), derived_id("x", 2));
        assert_ne!(derived_id("x", 1), derived_id("y", 1));
    }
}
