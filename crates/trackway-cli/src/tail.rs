//! `trackway tail`: follow arriving events in the terminal.

use std::io::{BufRead, BufReader, Write};

use clap::Args;
use serde_json::Value;

use crate::Failure;
use crate::admin_api::AdminArgs;

/// Flags of `trackway tail`.
#[derive(Debug, Args)]
pub(crate) struct TailArgs {
    #[command(flatten)]
    admin: AdminArgs,
    /// Only this message type.
    #[arg(long = "type")]
    kind: Option<String>,
    /// Only this userId or anonymousId.
    #[arg(long)]
    user: Option<String>,
    /// Only this event (or page/screen name).
    #[arg(long)]
    event: Option<String>,
    /// Print each event as one JSON line instead of a summary.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(args: TailArgs) -> Result<(), Failure> {
    let response = args.admin.stream("/api/stream")?;
    let reader = BufReader::new(response.into_body().into_reader());
    let mut out = std::io::stdout().lock();
    for line in reader.lines() {
        let line = line.map_err(|e| Failure::Failed(format!("the stream broke: {e}")))?;
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        let Ok(event) = serde_json::from_str::<Value>(data) else {
            continue;
        };
        if !args.matches(&event) {
            continue;
        }
        let text = if args.json {
            event.to_string()
        } else {
            summary(&event)
        };
        // The reader closed the pipe (`| head`): stop quietly.
        if writeln!(out, "{text}").and_then(|()| out.flush()).is_err() {
            return Ok(());
        }
    }
    Err(Failure::Failed("the collector closed the stream".into()))
}

impl TailArgs {
    fn matches(&self, event: &Value) -> bool {
        let field = |name: &str| event.get(name).and_then(Value::as_str);
        self.kind
            .as_deref()
            .is_none_or(|k| field("type") == Some(k))
            && self
                .user
                .as_deref()
                .is_none_or(|u| field("userId") == Some(u) || field("anonymousId") == Some(u))
            && self
                .event
                .as_deref()
                .is_none_or(|e| field("event").or(field("name")) == Some(e))
    }
}

/// `12:00:01.234  track     Signed Up            user=u1  source=web`.
fn summary(event: &Value) -> String {
    let field = |name: &str| event.get(name).and_then(Value::as_str).unwrap_or("");
    let time = field("receivedAt").get(11..23).unwrap_or("");
    let user = if field("userId").is_empty() {
        field("anonymousId")
    } else {
        field("userId")
    };
    let label = if field("event").is_empty() {
        field("name")
    } else {
        field("event")
    };
    let meta = &event["_trackway"];
    let mut line = format!(
        "{time}  {:<8}  {:<24}  user={user}  source={}",
        field("type"),
        label,
        meta["source"].as_str().unwrap_or("")
    );
    if let Some(reason) = meta["rejected"].as_str() {
        line.push_str(&format!("  REJECTED: {reason}"));
    }
    line
}
