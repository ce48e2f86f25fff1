//! `trackway spool drain DIR`: deliver what an application left in its spool
//! (`trackway::Builder::spool_dir`) when that application will not come back to do it.
//!
//! The command opens the spool as the application would (so it refuses a directory in use,
//! or one written for another write key or host), delivers every event in order, and exits 0
//! once all are settled. Events the server does not take before `--retry-for` stay in the
//! spool, and the command exits 1 saying how many: run it again later.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use trackway::{Analytics, BuildError};

use crate::Failure;
use crate::send::parse_duration;

/// Default `--retry-for`: long enough to ride out a restart of the server; what is not
/// delivered by then stays in the spool for the next run.
const DEFAULT_RETRY_FOR: &str = "120s";

/// How long the client may spend on a last request when the command gives up.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// `trackway spool ...`.
#[derive(Debug, Args)]
pub(crate) struct SpoolArgs {
    #[command(subcommand)]
    action: SpoolAction,
}

#[derive(Debug, Subcommand)]
enum SpoolAction {
    /// Deliver every event in a spool directory, then exit.
    Drain(DrainArgs),
}

/// Flags of `trackway spool drain`.
#[derive(Debug, Args)]
struct DrainArgs {
    /// The spool directory (the application's `spool_dir`).
    dir: PathBuf,
    /// Where its events go: the host the application sent to ("oregon", "dublin", or a base
    /// URL). The spool records it, and refuses another.
    #[arg(long, default_value = trackway::OREGON_HOST)]
    host: String,
    /// The application's write key. From `TRACKWAY_WRITE_KEY` when not given.
    #[arg(long = "write-key", env = "TRACKWAY_WRITE_KEY", hide_env_values = true)]
    write_key: String,
    /// How long to keep trying a server that does not take the events (such as 120s or 10m)
    /// before stopping; what is left stays in the spool.
    #[arg(long, default_value = DEFAULT_RETRY_FOR, value_parser = parse_duration)]
    retry_for: Duration,
}

pub(crate) fn run(args: SpoolArgs) -> Result<(), Failure> {
    match args.action {
        SpoolAction::Drain(args) => drain(args),
    }
}

fn drain(args: DrainArgs) -> Result<(), Failure> {
    if !args.dir.is_dir() {
        return Err(Failure::Usage(format!(
            "{} is not a directory: no spool to drain",
            args.dir.display()
        )));
    }
    let analytics = Analytics::builder(&args.write_key)
        .host(&args.host)
        .spool_dir(&args.dir)
        .map_err(|e| Failure::Usage(e.to_string()))?
        .build()
        .map_err(|e| match e {
            BuildError::Config(e) => Failure::Usage(e.to_string()),
            other => Failure::Failed(other.to_string()),
        })?;
    let recovered = analytics.stats().recovered;
    // The counts below say what happened, across the flush and the shutdown.
    let _ = analytics.flush(args.retry_for);
    let last_error = analytics.last_request_error();
    let end = analytics.shutdown(SHUTDOWN_GRACE);
    let stats = analytics.stats();
    let dir = args.dir.display();
    if stats.spooled > 0 {
        let why = last_error.map_or_else(String::new, |e| format!(" (last error: {e})"));
        return Err(Failure::Failed(format!(
            "{} of {recovered} events are still in the spool {dir}{why}; run again to deliver \
             them",
            stats.spooled
        )));
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{dir}: {recovered} events found, {} delivered, {} rejected, {} dropped",
        stats.delivered,
        stats.rejected,
        stats.dropped.total(),
    );
    if stats.rejected > 0 || stats.dropped.total() > 0 {
        return Err(Failure::Failed(format!(
            "not every event was delivered: {end}"
        )));
    }
    Ok(())
}
