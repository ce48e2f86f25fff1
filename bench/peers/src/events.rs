//! The event pool: track messages made from the templated fixtures, built once before timing
//! as both libraries' own message types, so that each timed call gets the same event.

use std::fs;
use std::path::Path;

use anyhow::{Context as _, bail};
use fastrand::Rng;
use serde_json::{Map, Value};
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

/// The same events as each library's message type, index for index.
pub struct Pool {
    /// For `trackway`, without `messageId` so that the client assigns one.
    pub trackway: Vec<trackway::Message>,
    /// For `segment`, without `messageId` (the caller adds a fresh one per event, untimed).
    pub segment: Vec<segment::message::Track>,
    /// How many distinct track templates the pool was drawn from.
    pub templates: usize,
    /// Mean compact JSON size of the pool's events (as in the fixture, no `messageId`).
    pub mean_json_bytes: f64,
}

/// Reads the `track` lines of every `*.jsonl` file in `dir` and fills `size` events from them,
/// cycling through the templates with fresh placeholder values each time.
pub fn build_pool(dir: &Path, size: usize, seed: u64) -> anyhow::Result<Pool> {
    let templates = track_templates(dir)?;
    if templates.is_empty() {
        bail!("no track templates in {}", dir.display());
    }
    let mut rng = Rng::with_seed(seed);
    let mut pool = Pool {
        trackway: Vec::with_capacity(size),
        segment: Vec::with_capacity(size),
        templates: templates.len(),
        mean_json_bytes: 0.0,
    };
    let mut json_bytes = 0usize;
    for i in 0..size {
        let template = &templates[i % templates.len()];
        let filled = fill(template, &mut rng);
        let value: Value = serde_json::from_str(&filled)
            .with_context(|| format!("template did not fill to JSON: {filled}"))?;
        let Value::Object(mut fields) = value else {
            bail!("template is not an object: {filled}");
        };
        fields.remove("messageId");
        // `segment` always sends `properties` (null when unset); give both the same object.
        if fields.get("properties").is_none_or(Value::is_null) {
            fields.insert("properties".into(), Value::Object(Map::new()));
        }
        json_bytes += serde_json::to_vec(&fields)?.len();
        pool.segment.push(to_segment(fields.clone())?);
        pool.trackway
            .push(trackway::Message::from_json(Value::Object(fields))?);
    }
    pool.mean_json_bytes = json_bytes as f64 / size.max(1) as f64;
    Ok(pool)
}

/// The lines of `dir/*.jsonl` whose `type` is `track`, still templated.
fn track_templates(dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut files: Vec<_> = fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    let mut rng = Rng::with_seed(0);
    let mut out = Vec::new();
    for file in files {
        let text = fs::read_to_string(&file)?;
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let value: Value = serde_json::from_str(&fill(line, &mut rng))
                .with_context(|| format!("{}: bad template line: {line}", file.display()))?;
            if value.get("type").and_then(Value::as_str) == Some("track") {
                out.push(line.to_owned());
            }
        }
    }
    Ok(out)
}

/// A wire-format track message as a `segment::message::Track`.
fn to_segment(mut fields: Map<String, Value>) -> anyhow::Result<segment::message::Track> {
    use segment::message::{Track, User};
    fields.remove("type");
    let mut take_string = |name: &str| match fields.remove(name) {
        Some(Value::String(s)) => Some(s),
        _ => None,
    };
    let user_id = take_string("userId");
    let anonymous_id = take_string("anonymousId");
    let event = take_string("event").context("track without event")?;
    let timestamp = take_string("timestamp")
        .map(|t| OffsetDateTime::parse(&t, &Rfc3339))
        .transpose()?;
    let user = match (user_id, anonymous_id) {
        (Some(user_id), Some(anonymous_id)) => User::Both {
            user_id,
            anonymous_id,
        },
        (Some(user_id), None) => User::UserId { user_id },
        (None, Some(anonymous_id)) => User::AnonymousId { anonymous_id },
        (None, None) => bail!("track without userId or anonymousId"),
    };
    Ok(Track {
        user,
        event,
        properties: fields.remove("properties").unwrap_or(Value::Null),
        timestamp,
        context: fields.remove("context"),
        integrations: fields.remove("integrations"),
        extra: fields,
    })
}

/// A fresh random UUID (v4 layout), hyphenated, as `trackway` makes its `messageId`s.
pub fn uuid(rng: &mut Rng) -> String {
    uuid::Builder::from_random_bytes(rng.u128(..).to_le_bytes())
        .into_uuid()
        .hyphenated()
        .to_string()
}

/// Replaces every `{{placeholder}}` in `template` with a plausible value.
fn fill(template: &str, rng: &mut Rng) -> String {
    let mut out = String::with_capacity(template.len() + 128);
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            out.push_str(&rest[open..]);
            return out;
        };
        out.push_str(&placeholder(&after[..close], rng));
        rest = &after[close + 2..];
    }
    out.push_str(rest);
    out
}

const FIRST: &[&str] = &[
    "Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken",
];
const LAST: &[&str] = &[
    "Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen",
];
const WORDS: &[&str] = &[
    "acme", "globex", "initech", "umbrella", "hooli", "stark", "wayne",
];
const ADJECTIVES: &[&str] = &[
    "Ergonomic",
    "Rustic",
    "Sleek",
    "Handmade",
    "Gorgeous",
    "Small",
];
const NOUNS: &[&str] = &[
    "Chair", "Keyboard", "Lamp", "Shirt", "Table", "Gloves", "Bike",
];

fn pick<'a>(rng: &mut Rng, from: &[&'a str]) -> &'a str {
    from[rng.usize(..from.len())]
}

fn placeholder(name: &str, rng: &mut Rng) -> String {
    match name.trim() {
        "id" => (0..20).map(|_| rng.alphanumeric()).collect(),
        "uuid" => uuid(rng),
        "now.utc" => {
            let ago = Duration::milliseconds(rng.i64(0..86_400_000));
            let at = OffsetDateTime::now_utc() - ago;
            let at = at.replace_millisecond(at.millisecond()).unwrap_or(at);
            at.format(&Rfc3339)
                .unwrap_or_else(|_| "2026-01-01T00:00:00Z".into())
        }
        "double" => format!("{:.2}", rng.f64() * 500.0),
        "name" => format!("{} {}", pick(rng, FIRST), pick(rng, LAST)),
        "name.first" => pick(rng, FIRST).to_owned(),
        "name.last" => pick(rng, LAST).to_owned(),
        "username" => format!("{}{}", pick(rng, FIRST).to_lowercase(), rng.u16(1..9999)),
        "email" => format!(
            "{}.{}@{}.com",
            pick(rng, FIRST).to_lowercase(),
            pick(rng, LAST).to_lowercase(),
            pick(rng, WORDS)
        ),
        "domain" => format!("{}.com", pick(rng, WORDS)),
        "avatar" => format!(
            "https://cdn.{}.com/avatars/{}.png",
            pick(rng, WORDS),
            rng.u32(..)
        ),
        "ipv4" => format!(
            "{}.{}.{}.{}",
            rng.u8(1..224),
            rng.u8(..),
            rng.u8(..),
            rng.u8(1..255)
        ),
        "product.name" => format!("{} {}", pick(rng, ADJECTIVES), pick(rng, NOUNS)),
        _ => pick(rng, WORDS).to_owned(),
    }
}
