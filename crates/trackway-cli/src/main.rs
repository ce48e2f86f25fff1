//! `trackway`: send one event from a shell (Segment's cross-library test contract), run the
//! collector or the demo, follow events, replay dead letters, import files, drain a spool.
//!
//! Arguments are parsed by clap into a validated command; every failure becomes a
//! [`Failure`] and is mapped to an exit code here, in one place: 0 success, 1 the work failed
//! (a server refused, the deadline passed), 2 the command line was wrong and nothing was sent.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// With `--features jemalloc`, the whole process allocates through jemalloc.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The process's allocator, as `trackway bench` reports it.
pub(crate) const ALLOCATOR_NAME: &str = if cfg!(feature = "jemalloc") {
    "jemalloc"
} else {
    "system"
};

mod admin_api;
mod bench;
mod import;
mod logging;
mod replay;
mod send;
mod serve;
mod spool;
mod tail;

/// Product analytics for Rust: the Trackway command line.
#[derive(Debug, Parser)]
#[command(name = "trackway", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Send one message and wait until the server acknowledges it.
    Send(Box<send::SendArgs>),
    /// Run the collector: a Tracking API server with an embedded store and a live debugger.
    Serve(Box<serve::ServeArgs>),
    /// Run the collector and send it realistic sample events through the trackway library.
    Demo(serve::DemoArgs),
    /// Follow arriving events in the terminal.
    Tail(tail::TailArgs),
    /// Re-deliver dead letters.
    Replay(replay::ReplayArgs),
    /// Bulk-load a JSON-lines file of events to any Tracking API host (resumable).
    Import(import::ImportArgs),
    /// Load-generate through the library and report caller cost, throughput, CPU, memory and
    /// wire bytes.
    Bench(bench::BenchArgs),
    /// Work on a client's spool directory: `drain` delivers what an application left in it.
    Spool(spool::SpoolArgs),
}

/// Why a command failed, and so its exit code.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The command line was wrong; nothing was sent. Exit code 2.
    Usage(String),
    /// The work could not be done. Exit code 1.
    Failed(String),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `send` is silent by default so that a failing command prints exactly one line; the
    // server commands log warnings and errors.
    logging::init(match cli.command {
        // `import` reports every outcome itself, by line number.
        Command::Send(_) | Command::Import(_) => "off",
        Command::Spool(_) => "warn",
        Command::Serve(_) | Command::Demo(_) => "warn",
        Command::Tail(_) | Command::Replay(_) | Command::Bench(_) => "error",
    });
    let result = match cli.command {
        Command::Send(args) => send::run(*args),
        Command::Serve(args) => serve::serve(*args),
        Command::Demo(args) => serve::demo(args),
        Command::Tail(args) => tail::run(args),
        Command::Replay(args) => replay::run(args),
        Command::Import(args) => import::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Spool(args) => spool::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(message)) => {
            report(&message);
            ExitCode::from(2)
        }
        Err(Failure::Failed(message)) => {
            report(&message);
            ExitCode::from(1)
        }
    }
}

#[expect(clippy::print_stderr, reason = "the command's one line of diagnosis")]
fn report(message: &str) {
    eprintln!("trackway: {message}");
}
