//! `trackway send`: one message, Segment's cross-library end-to-end contract.
//!
//! The flags are the contract's, spelled as it spells them (`--writeKey`, `--userId`, ...), so
//! Segment's library-e2e-tester can drive this binary unchanged. The command exits 0 only once
//! the server has acknowledged the message.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use serde_json::Value;
use trackway::{
    Alias, Analytics, DropReason, EnqueueError, FlushReport, Group, Identify, Message, Page,
    Screen, Track,
};

use crate::Failure;
use crate::bench::CompressionFlag;

/// Default `--timeout`: enough for a few retries against a slow server.
const DEFAULT_TIMEOUT: &str = "10s";

/// The message types the contract knows.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum MessageType {
    Identify,
    Track,
    Page,
    Screen,
    Group,
    Alias,
}

/// Flags of `trackway send`.
#[derive(Debug, Args)]
pub(crate) struct SendArgs {
    /// Message type.
    #[arg(long = "type", value_enum)]
    kind: MessageType,
    /// The source's write key. From `TRACKWAY_WRITE_KEY` when not given, so that it need not
    /// appear in the command line (which other users of the machine can read). Spelled as the
    /// cross-library contract spells it, and as the other subcommands do (the alias).
    #[arg(
        long = "writeKey",
        visible_alias = "write-key",
        env = "TRACKWAY_WRITE_KEY",
        hide_env_values = true
    )]
    write_key: String,
    /// userId.
    #[arg(long = "userId")]
    user_id: Option<String>,
    /// anonymousId.
    #[arg(long = "anonymousId")]
    anonymous_id: Option<String>,
    /// context, a JSON object.
    #[arg(long)]
    context: Option<String>,
    /// integrations, a JSON object.
    #[arg(long)]
    integrations: Option<String>,
    /// track: the event name.
    #[arg(long)]
    event: Option<String>,
    /// track, page, screen: properties, a JSON object.
    #[arg(long)]
    properties: Option<String>,
    /// page, screen: the name.
    #[arg(long)]
    name: Option<String>,
    /// page, screen: the category.
    #[arg(long)]
    category: Option<String>,
    /// identify, group: traits, a JSON object.
    #[arg(long)]
    traits: Option<String>,
    /// group: the group's id.
    #[arg(long = "groupId")]
    group_id: Option<String>,
    /// alias: the previous id.
    #[arg(long = "previousId")]
    previous_id: Option<String>,
    /// messageId (a UUID is generated when absent).
    #[arg(long = "messageId")]
    message_id: Option<String>,
    /// Where to send: "oregon", "dublin", or a base URL [default: Segment's
    /// https://api.segment.io].
    #[arg(long)]
    host: Option<String>,
    /// How long to try before giving up, such as 10s or 500ms.
    #[arg(long, default_value = DEFAULT_TIMEOUT, value_parser = parse_duration)]
    timeout: Duration,
    /// How the request body is compressed (`auto`: gzip, as the host's answers have not
    /// been seen yet; zstd only where asked).
    #[arg(long, value_enum, default_value_t = CompressionFlag::Auto)]
    compression: CompressionFlag,
}

pub(crate) fn run(args: SendArgs) -> Result<(), Failure> {
    let message = build_message(&args)?;
    // The type as the contract spells it (`track`).
    let kind = format!("{:?}", args.kind).to_lowercase();
    let host = args.host.as_deref().unwrap_or(trackway::OREGON_HOST);
    let analytics = Analytics::builder(&args.write_key)
        .host(host)
        .flush_at(1)
        .request_timeout(args.timeout)
        .max_retry_duration(args.timeout)
        .compression(args.compression.setting())
        .build()
        .map_err(|e| Failure::Usage(e.to_string()))?;
    let started = Instant::now();
    analytics.enqueue(message).map_err(|e| match e {
        EnqueueError::Invalid(_) | EnqueueError::TooLarge { .. } => Failure::Usage(e.to_string()),
        other => Failure::Failed(other.to_string()),
    })?;
    let report = analytics.shutdown(args.timeout);
    let target = Target {
        host,
        chosen: args.host.is_some(),
    };
    if report.delivered == 1 {
        // The contract wants a quiet success; a person at a terminal wants to know where it went.
        if std::io::stderr().is_terminal() {
            tell(&format!("delivered 1 {kind} to {target}"));
        }
        return Ok(());
    }
    Err(Failure::Failed(diagnosis(
        &target,
        &report,
        started.elapsed(),
        args.timeout,
    )))
}

/// Where `send` sent, as a person should read it.
struct Target<'a> {
    host: &'a str,
    /// Given with --host, rather than the default.
    chosen: bool,
}

impl std::fmt::Display for Target<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.chosen {
            f.write_str(self.host)
        } else {
            write!(f, "Segment's {} (the default --host)", self.host)
        }
    }
}

/// The one line that says why the message did not arrive, where it was sent, and what to do.
fn diagnosis(
    target: &Target<'_>,
    report: &FlushReport,
    took: Duration,
    timeout: Duration,
) -> String {
    if let Some(reason) = report.last_rejection() {
        let hint = if reason.starts_with("HTTP 401") || reason.starts_with("HTTP 403") {
            "; check --write-key: it must be a key of one of the server's sources"
        } else {
            ""
        };
        return format!("{target} rejected the message: {reason}{hint}");
    }
    let error = [
        DropReason::RetryWindowExceeded,
        DropReason::RetriesExhausted,
        DropReason::Shutdown,
    ]
    .into_iter()
    .find_map(|reason| report.last_error(reason));
    // The library names the URL it posted to; the line names the host already.
    let error = error.map(|e| e.split_once("/v1/batch: ").map_or(e, |(_, rest)| rest));
    let when = if took + Duration::from_millis(100) < timeout {
        format!(
            "gave up after {:.1}s: the next retry would have passed --timeout {timeout:?}",
            took.as_secs_f64()
        )
    } else {
        format!("no answer within --timeout {timeout:?}")
    };
    let Some(error) = error else {
        return format!("could not deliver to {target}: {when}");
    };
    let lower = error.to_lowercase();
    let hint = if lower.contains("refused") {
        if target.chosen {
            "; is a collector listening there? (`trackway demo` or `trackway serve` starts one; \
             --host says where to send)"
        } else {
            "; to send to a local collector instead, pass --host (`trackway demo` prints it)"
        }
    } else if lower.contains("lookup") || lower.contains("dns") || lower.contains("resolve") {
        if target.chosen {
            "; check the host name in --host and the network"
        } else {
            "; this machine cannot reach Segment: check the network, or pass --host to send \
             to a local collector (`trackway demo` prints the command)"
        }
    } else if lower.contains("timed out") {
        "; the server did not answer in time: check it, or allow more with --timeout"
    } else {
        ""
    };
    format!("could not deliver to {target} ({when}): {error}{hint}")
}

#[expect(
    clippy::print_stderr,
    reason = "what a person at a terminal sees of a success"
)]
fn tell(line: &str) {
    eprintln!("trackway: {line}");
}

fn build_message(args: &SendArgs) -> Result<Message, Failure> {
    let properties = json_object("properties", args.properties.as_deref())?;
    let traits = json_object("traits", args.traits.as_deref())?;
    let mut message: Message = match args.kind {
        MessageType::Identify => Identify::new().traits(traits).into(),
        MessageType::Track => Track::new(required("event", &args.event)?)
            .properties(properties)
            .into(),
        MessageType::Page => view(
            Page::new().properties(properties),
            args,
            Page::name,
            Page::category,
        )
        .into(),
        MessageType::Screen => view(
            Screen::new().properties(properties),
            args,
            Screen::name,
            Screen::category,
        )
        .into(),
        MessageType::Group => Group::new(required("groupId", &args.group_id)?)
            .traits(traits)
            .into(),
        MessageType::Alias => Alias::new(
            required("userId", &args.user_id)?,
            required("previousId", &args.previous_id)?,
        )
        .into(),
    };
    let common = message.common_mut();
    common.user_id = args.user_id.clone();
    common.anonymous_id = args.anonymous_id.clone();
    common.message_id = args.message_id.clone();
    if let Value::Object(context) = json_object("context", args.context.as_deref())? {
        common.context = Some(Value::Object(context));
    }
    if let Value::Object(integrations) = json_object("integrations", args.integrations.as_deref())?
    {
        common.integrations = Some(integrations);
    }
    Ok(message)
}

fn view<T>(
    mut message: T,
    args: &SendArgs,
    name: fn(T, String) -> T,
    category: fn(T, String) -> T,
) -> T {
    if let Some(value) = &args.name {
        message = name(message, value.clone());
    }
    if let Some(value) = &args.category {
        message = category(message, value.clone());
    }
    message
}

fn required(flag: &str, value: &Option<String>) -> Result<String, Failure> {
    value
        .clone()
        .ok_or_else(|| Failure::Usage(format!("--{flag} is required for this --type")))
}

/// Parses a flag holding a JSON object; absent means `Null`.
fn json_object(flag: &str, text: Option<&str>) -> Result<Value, Failure> {
    let Some(text) = text else {
        return Ok(Value::Null);
    };
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(Value::Object(map)),
        Ok(_) => Err(Failure::Usage(format!("--{flag} must be a JSON object"))),
        Err(e) => Err(Failure::Usage(format!("--{flag} is not valid JSON: {e}"))),
    }
}

/// Parses `500ms`, `10s`, `2m`, or a bare number of seconds.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((text, "s"), |i| text.split_at(i));
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 10s"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("{text:?} has an unknown unit (use ms, s or m)")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5h").is_err());
    }
}
