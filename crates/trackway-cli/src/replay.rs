//! `trackway replay`: re-deliver dead letters after the destination is fixed.

use std::io::Write;

use clap::Args;

use crate::Failure;
use crate::admin_api::AdminArgs;

/// Flags of `trackway replay`.
#[derive(Debug, Args)]
pub(crate) struct ReplayArgs {
    #[command(flatten)]
    admin: AdminArgs,
    /// Only this destination's dead letters.
    #[arg(long)]
    destination: Option<String>,
    /// Only the dead letter with this id.
    #[arg(long)]
    id: Option<i64>,
}

pub(crate) fn run(args: ReplayArgs) -> Result<(), Failure> {
    let mut query = Vec::new();
    if let Some(destination) = &args.destination {
        query.push(format!("destination={}", encode(destination)));
    }
    if let Some(id) = args.id {
        query.push(format!("id={id}"));
    }
    let report = args
        .admin
        .post(&format!("/api/replay?{}", query.join("&")))?;
    let count = |name: &str| report[name].as_u64().unwrap_or(0);
    let line = format!(
        "replayed {}, failed again {}, missing {}",
        count("replayed"),
        count("failed"),
        count("missing")
    );
    let _ = writeln!(std::io::stdout(), "{line}");
    if count("failed") > 0 || count("missing") > 0 {
        return Err(Failure::Failed(format!(
            "not every dead letter was delivered: {line}"
        )));
    }
    Ok(())
}

/// Percent-encodes a query value.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
