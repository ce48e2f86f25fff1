//! `trackway send`: one message, Segment's cross-library end-to-end contract.
//!
//! The flags are the contract's, spelled as it spells them (`--writeKey`, `--userId`, ...), so
//! Segment's library-e2e-tester can drive this binary unchanged. The command exits 0 only once
//! the server has acknowledged the message.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde_json::Value;
use trackway::{
    Alias, Analytics, EnqueueError, Group, Identify, Message, Observer, Outcome, Page, Screen,
    Track,
};

use crate::Failure;

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
    /// Where to send: "oregon", "dublin", or a base URL.
    #[arg(long, default_value = trackway::OREGON_HOST)]
    host: String,
    /// How long to try before giving up, such as 10s or 500ms.
    #[arg(long, default_value = DEFAULT_TIMEOUT, value_parser = parse_duration)]
    timeout: Duration,
}

pub(crate) fn run(args: SendArgs) -> Result<(), Failure> {
    let message = build_message(&args)?;
    let outcome = LastOutcome::default();
    let analytics = Analytics::builder(&args.write_key)
        .host(&args.host)
        .flush_at(1)
        .request_timeout(args.timeout)
        .max_retry_duration(args.timeout)
        .observer(outcome.clone())
        .build()
        .map_err(|e| Failure::Usage(e.to_string()))?;
    analytics.enqueue(message).map_err(|e| match e {
        EnqueueError::Invalid(_) | EnqueueError::TooLarge { .. } => Failure::Usage(e.to_string()),
        other => Failure::Failed(other.to_string()),
    })?;
    let report = analytics.shutdown(args.timeout);
    if report.delivered == 1 {
        return Ok(());
    }
    let detail = outcome.take().unwrap_or_else(|| {
        format!(
            "no acknowledgement from {} within {:?}",
            args.host, args.timeout
        )
    });
    Err(Failure::Failed(detail))
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

/// Keeps the last non-delivered outcome's description, for the error line.
#[derive(Clone, Default)]
struct LastOutcome(Arc<Mutex<Option<String>>>);

impl LastOutcome {
    fn take(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

impl Observer for LastOutcome {
    fn on_outcome(&self, _message_id: &str, outcome: &Outcome<'_>) {
        let text = match outcome {
            Outcome::Delivered => return,
            Outcome::Rejected { reason, .. } => {
                format!("the server rejected the message: {reason}")
            }
            Outcome::Dropped { reason, detail } => format!("message dropped ({reason}): {detail}"),
            _ => "message not delivered".to_owned(),
        };
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(text);
    }
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
