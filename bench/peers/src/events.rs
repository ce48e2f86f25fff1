//! The event pool: the track messages of the samples' `Traffic` stream, built once before
//! timing as both libraries' own message types, so that each timed call gets the same event.

use anyhow::{Context as _, bail};
use fastrand::Rng;
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The same events as each library's message type, index for index.
pub struct Pool {
    /// For `trackway`, without `messageId` so that the client assigns one.
    pub trackway: Vec<trackway::Message>,
    /// For `segment`, without `messageId` (the caller adds a fresh one per event, untimed).
    pub segment: Vec<segment::message::Track>,
    /// How many distinct track templates the stream draws from.
    pub templates: usize,
    /// Mean compact JSON size of the pool's events (no `messageId`, `timestamp`).
    pub mean_json_bytes: f64,
}

/// The first `size` track messages of the samples' `Traffic` stream seeded with `seed`
/// (returning users in sessions; properties as the fixtures vary them), without messageId or
/// timestamp: trackway stamps both in the call, and the bench stamps segment's in the loop.
pub fn build_pool(size: usize, seed: u64) -> anyhow::Result<Pool> {
    let mut pool = Pool {
        trackway: Vec::with_capacity(size),
        segment: Vec::with_capacity(size),
        templates: trackway_samples::templates()
            .filter(|t| t.contains(r#""type": "track""#))
            .count(),
        mean_json_bytes: 0.0,
    };
    let mut json_bytes = 0usize;
    let tracks = trackway_samples::Traffic::new(seed)
        .filter(|m| m["type"] == "track")
        .take(size);
    for value in tracks {
        let Value::Object(mut fields) = value else {
            bail!("a sample message is not an object");
        };
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
