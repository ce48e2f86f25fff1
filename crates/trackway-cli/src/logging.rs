//! The command's logs: stderr, filtered by `RUST_LOG`, with the HTTP stack's wire dump capped,
//! coloured only on a terminal (a file or a pipe gets plain text that tools can search).
//!
//! At TRACE, ureq's protocol module (`ureq_proto`) logs every request's bytes in rows of 16
//! (hex, then text), headers included, so `Authorization: Basic ...` (the write key) of `send`,
//! `import`, `bench` and the collector's forward destination would reach the log, split over
//! rows where a plain search does not find it. That module is held at
//! [`WIRE_DUMP_MAX_LEVEL`] whatever `RUST_LOG` says: its DEBUG lines name protocol states only,
//! and nothing else this process logs carries a key or token (the client logs a masked key).

use std::io::IsTerminal;

use tracing::{Level, Metadata};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The target (and prefix of the targets) of the HTTP stack's wire dump.
const WIRE_DUMP_TARGET: &str = "ureq_proto";

/// The most verbose level let through from [`WIRE_DUMP_TARGET`]: its TRACE lines are the
/// bytes on the wire, secrets included.
const WIRE_DUMP_MAX_LEVEL: Level = Level::DEBUG;

/// Logs go to stderr, filtered by `RUST_LOG` (else `default`), never with the wire dump, and
/// with colours only when stderr is a terminal.
pub(crate) fn init(default: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // A filter of its own rather than a directive added to `RUST_LOG`'s: a more specific
    // directive there (`ureq_proto::util=trace`) would win over an added one.
    let cap = filter_fn(|metadata| !is_wire_dump(metadata));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .finish()
        .with(cap)
        .init();
}

/// Whether `metadata` is a line of the HTTP stack's wire dump (or anything more verbose than
/// [`WIRE_DUMP_MAX_LEVEL`] from its module).
fn is_wire_dump(metadata: &Metadata<'_>) -> bool {
    let target = metadata.target();
    let in_module = target
        .strip_prefix(WIRE_DUMP_TARGET)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"));
    in_module && *metadata.level() > WIRE_DUMP_MAX_LEVEL
}
