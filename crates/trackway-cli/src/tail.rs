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
    let mut events = ServerSentEvents::default();
    for line in reader.lines() {
        let line = line.map_err(|e| Failure::Failed(format!("the stream broke: {e}")))?;
        let Some(event) = events.feed(&line) else {
            continue;
        };
        let Some(text) = args.render(&event) else {
            continue;
        };
        let written = match text {
            Rendered::Event(text) => writeln!(out, "{text}").and_then(|()| out.flush()),
            Rendered::Notice(text) => {
                // Flushed first so that the notice lands between the right lines.
                let _ = out.flush();
                let _ = writeln!(std::io::stderr(), "{text}");
                Ok(())
            }
        };
        // The reader closed the pipe (`| head`): stop quietly.
        if written.is_err() {
            return Ok(());
        }
    }
    Err(Failure::Failed("the collector closed the stream".into()))
}

/// One event of a `text/event-stream`: its type and its data lines joined.
#[derive(Debug, PartialEq, Eq)]
struct StreamEvent {
    kind: String,
    data: String,
}

/// Reads a `text/event-stream` line by line: `event:` and `data:` fields, dispatched at a
/// blank line; comments (the keep-alives) and other fields ignored.
#[derive(Debug, Default)]
struct ServerSentEvents {
    kind: Option<String>,
    data: Option<String>,
}

impl ServerSentEvents {
    /// Takes one line (without its line ending); returns the event it completes, if any.
    fn feed(&mut self, line: &str) -> Option<StreamEvent> {
        if line.is_empty() {
            let data = self.data.take();
            let kind = self.kind.take();
            return data.map(|data| StreamEvent {
                kind: kind.unwrap_or_else(|| "message".into()),
                data,
            });
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => self.kind = Some(value.to_owned()),
            "data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            _ => {}
        }
        None
    }
}

/// What `tail` prints for one stream event.
#[derive(Debug, PartialEq, Eq)]
enum Rendered {
    /// An arriving event, to stdout.
    Event(String),
    /// Something the reader must know about the stream itself, to stderr.
    Notice(String),
}

impl TailArgs {
    /// The line to print for `event`, or `None` when the filters leave it out.
    fn render(&self, event: &StreamEvent) -> Option<Rendered> {
        let value = serde_json::from_str::<Value>(&event.data).ok();
        if event.kind == "lagged" {
            // The collector skipped events for this reader because it fell behind: they are
            // stored, but this terminal will never show them.
            let missed = value
                .as_ref()
                .and_then(|v| v["missed"].as_u64())
                .map_or_else(|| "some".to_owned(), |n| n.to_string());
            return Some(Rendered::Notice(format!(
                "trackway tail: {missed} events not shown: this reader fell behind the stream \
                 (they are stored; the admin API and the debugger have them)"
            )));
        }
        let event = value?;
        if !self.matches(&event) {
            return None;
        }
        Some(Rendered::Event(if self.json {
            event.to_string()
        } else {
            summary(&event)
        }))
    }

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
///
/// Every field is sent by whoever holds a write key: control characters in it (an event
/// named `\x1b[31m...`) are shown escaped, so that they cannot colour or rewrite the reader's
/// terminal, nor put escape codes into a file or pipe the output goes to.
fn summary(event: &Value) -> String {
    let line = summary_of(event);
    if !line.contains(char::is_control) {
        return line;
    }
    line.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn summary_of(event: &Value) -> String {
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn args(json: bool, kind: Option<&str>) -> TailArgs {
        TailArgs {
            admin: AdminArgs {
                url: String::new(),
                admin_token: String::new(),
            },
            kind: kind.map(str::to_owned),
            user: None,
            event: None,
            json,
        }
    }

    fn events(stream: &str) -> Vec<StreamEvent> {
        let mut parser = ServerSentEvents::default();
        stream.lines().filter_map(|l| parser.feed(l)).collect()
    }

    #[test]
    fn the_stream_is_read_as_events_with_their_types() {
        let stream = ": keep-alive\n\nevent: event\ndata: {\"type\":\"track\"}\n\n\
                      data: a\ndata:b\n\nevent: lagged\ndata: {\"missed\":7}\n\n";
        assert_eq!(
            events(stream),
            [
                StreamEvent {
                    kind: "event".into(),
                    data: r#"{"type":"track"}"#.into()
                },
                StreamEvent {
                    kind: "message".into(),
                    data: "a\nb".into()
                },
                StreamEvent {
                    kind: "lagged".into(),
                    data: r#"{"missed":7}"#.into()
                },
            ]
        );
    }

    #[test]
    fn a_lagged_stream_is_reported_even_when_filtered() {
        let lagged = StreamEvent {
            kind: "lagged".into(),
            data: r#"{"missed":7}"#.into(),
        };
        for args in [args(false, Some("track")), args(true, None)] {
            let Some(Rendered::Notice(text)) = args.render(&lagged) else {
                panic!("no notice for {lagged:?}");
            };
            assert!(text.contains("7 events not shown"), "{text}");
        }
    }

    #[test]
    fn events_are_filtered_and_summarised() {
        let event = |kind: &str| StreamEvent {
            kind: "event".into(),
            data: json!({"type": kind, "event": "Signed Up", "userId": "u1",
                "receivedAt": "2026-11-27T12:00:01.234Z", "_trackway": {"source": "web"}})
            .to_string(),
        };
        let filtered = args(false, Some("track"));
        assert_eq!(filtered.render(&event("identify")), None);
        let Some(Rendered::Event(line)) = filtered.render(&event("track")) else {
            panic!("a track event is shown");
        };
        assert!(
            line.starts_with("12:00:01.234  track") && line.contains("user=u1  source=web"),
            "{line}"
        );
    }
}
