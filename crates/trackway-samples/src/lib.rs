//! Realistic sample events for the Segment Tracking API: templated payloads shaped like
//! scrubbed production traffic (this crate's `realistic/`), compiled in and filled with fresh
//! values. `trackway demo` sends them, and `trackway bench` and the workspace's
//! benchmarks measure with them.
//!
//! ```
//! let mut rng = fastrand::Rng::with_seed(7);
//! let template = trackway_samples::templates().next().expect("templates are compiled in");
//! let message = trackway_samples::fill(template, &mut rng)?;
//! assert!(message["type"].is_string());
//! # Ok::<(), serde_json::Error>(())
//! ```
//!
//! [`Traffic`] strings them into a stream shaped like a day of real traffic, which the
//! benchmarks draw from: the same users come back (a population of [`USERS`], drawn
//! Zipf-distributed), each with one `anonymousId`, in sessions of several events.
//!
//! ```
//! let mut traffic = trackway_samples::Traffic::new(7);
//! let message = traffic.next_message();
//! // The client stamps these, as it does for any caller.
//! assert!(message.get("messageId").is_none() && message.get("timestamp").is_none());
//! ```

#![forbid(unsafe_code)]

use std::ops::RangeInclusive;
use std::time::SystemTime;

use serde_json::Value;

/// Every template, one JSON message per line.
const TEMPLATES: &[&str] = &[
    include_str!("../realistic/identify.jsonl"),
    include_str!("../realistic/track.jsonl"),
    include_str!("../realistic/track-extended.jsonl"),
    include_str!("../realistic/page.jsonl"),
    include_str!("../realistic/screen.jsonl"),
    include_str!("../realistic/group.jsonl"),
    include_str!("../realistic/ecommerce.jsonl"),
    include_str!("../realistic/ecommerce-extended.jsonl"),
    include_str!("../realistic/mobile-spec.jsonl"),
    include_str!("../realistic/user-journey.jsonl"),
];

const FIRST_NAMES: &[&str] = &[
    "Ada", "Grace", "Alan", "Edsger", "Barbara", "Ken", "Margaret",
];
const LAST_NAMES: &[&str] = &[
    "Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Thompson",
];
const PRODUCTS: &[&str] = &[
    "Men's 501 Jeans",
    "Trail Runner 2",
    "Espresso Maker",
    "Desk Lamp",
];
const DOMAINS: &[&str] = &["example.com", "shop.example.org", "news.example.net"];

/// The templates, one per line, blank lines skipped.
pub fn templates() -> impl Iterator<Item = &'static str> {
    TEMPLATES
        .iter()
        .flat_map(|file| file.lines())
        .map(str::trim)
        .filter(|l| !l.is_empty())
}

/// Fills a template's placeholders with fresh values and parses it.
pub fn fill(template: &str, rng: &mut fastrand::Rng) -> Result<Value, serde_json::Error> {
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find("}}") else {
            break;
        };
        let name = &rest[start + 2..start + end];
        out.push_str(&value_for(name, rng));
        rest = &rest[start + end + 2..];
    }
    out.push_str(rest);
    serde_json::from_str(&out)
}

fn value_for(placeholder: &str, rng: &mut fastrand::Rng) -> String {
    let pick = |rng: &mut fastrand::Rng, items: &[&str]| items[rng.usize(..items.len())].to_owned();
    let first = pick(rng, FIRST_NAMES);
    let last = pick(rng, LAST_NAMES);
    match placeholder {
        "id" => format!("{:016x}", rng.u64(..)),
        "uuid" => uuid_like(rng),
        "now.utc" => trackway_protocol::format_timestamp(SystemTime::now()),
        "double" => format!("{:.2}", rng.f64() * 100.0),
        "domain" => pick(rng, DOMAINS),
        "product.name" => pick(rng, PRODUCTS),
        "name" => format!("{first} {last}"),
        "name.first" => first,
        "name.last" => last,
        "username" => format!("{}{}", first.to_lowercase(), rng.u16(..1000)),
        "email" => format!(
            "{}.{}@example.com",
            first.to_lowercase(),
            last.to_lowercase()
        ),
        "avatar" => format!("https://{}/avatars/{}.png", pick(rng, DOMAINS), rng.u32(..)),
        other => other.to_owned(),
    }
}

fn uuid_like(rng: &mut fastrand::Rng) -> String {
    let n = rng.u128(..);
    let hex = format!("{n:032x}");
    format!(
        "{}-{}-4{}-a{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..]
    )
}

/// Users in [`Traffic`]'s population.
pub const USERS: usize = 10_000;

/// The exponent of the Zipf distribution users are drawn from: the user of rank k comes back
/// in proportion to 1 / k^1.1, so a few users make much of the traffic and most are rare,
/// as in real products.
pub const ZIPF_EXPONENT: f64 = 1.1;

/// Events in one session, drawn uniformly.
pub const SESSION_EVENTS: RangeInclusive<usize> = 3..=12;

/// Sessions under way at once; their events interleave in the stream, as several users'
/// do in one process's traffic.
pub const OPEN_SESSIONS: usize = 8;

/// One user of the population: the ids every one of their events carries.
struct User {
    user_id: String,
    anonymous_id: String,
}

/// A session under way: whose, and how many events it still has.
struct Session {
    user: usize,
    left: usize,
}

/// A stream of realistic messages from a fixed population of users: [`USERS`] users, each
/// with one `userId` and one `anonymousId`, drawn with a Zipf distribution of exponent
/// [`ZIPF_EXPONENT`]; each draw starts a session of [`SESSION_EVENTS`] events, and
/// [`OPEN_SESSIONS`] sessions interleave. Each event is a random template filled as [`fill`]
/// fills it (property values vary as the fixtures vary them), its ids replaced by its user's
/// (a template's `"userId": null`, an anonymous visit, stays null). Messages come without
/// `messageId` and `timestamp`: a client library stamps those.
///
/// The same seed gives the same stream (but for the times some templates' traits carry).
pub struct Traffic {
    rng: fastrand::Rng,
    templates: Vec<&'static str>,
    users: Vec<User>,
    /// Cumulative Zipf weights of the users, by rank, ending at 1.
    cumulative: Vec<f64>,
    sessions: Vec<Session>,
}

impl Traffic {
    /// A stream seeded with `seed`.
    pub fn new(seed: u64) -> Traffic {
        let mut rng = fastrand::Rng::with_seed(seed);
        let users = (0..USERS)
            .map(|_| User {
                user_id: format!("{:016x}", rng.u64(..)),
                anonymous_id: uuid_like(&mut rng),
            })
            .collect();
        let mut total = 0.0;
        let mut cumulative: Vec<f64> = (1..=USERS)
            .map(|rank| {
                total += (rank as f64).powf(-ZIPF_EXPONENT);
                total
            })
            .collect();
        for weight in &mut cumulative {
            *weight /= total;
        }
        let mut traffic = Traffic {
            rng,
            templates: templates().collect(),
            users,
            cumulative,
            sessions: Vec::with_capacity(OPEN_SESSIONS),
        };
        for _ in 0..OPEN_SESSIONS {
            let session = traffic.new_session();
            traffic.sessions.push(session);
        }
        traffic
    }

    /// A session of a user drawn from the Zipf distribution.
    fn new_session(&mut self) -> Session {
        let draw = self.rng.f64();
        let user = self
            .cumulative
            .partition_point(|&w| w < draw)
            .min(USERS - 1);
        Session {
            user,
            left: self.rng.usize(SESSION_EVENTS),
        }
    }

    /// The next message of the stream.
    pub fn next_message(&mut self) -> Value {
        let open = self.rng.usize(..self.sessions.len());
        let user = self.sessions[open].user;
        self.sessions[open].left -= 1;
        if self.sessions[open].left == 0 {
            self.sessions[open] = self.new_session();
        }
        let template = self.templates[self.rng.usize(..self.templates.len())];
        let mut message = fill(template, &mut self.rng).unwrap_or(Value::Null);
        if let Some(fields) = message.as_object_mut() {
            fields.remove("messageId");
            fields.remove("timestamp");
            let user = &self.users[user];
            if fields.get("userId").is_some_and(Value::is_string) {
                fields.insert("userId".into(), Value::String(user.user_id.clone()));
            }
            if fields.get("anonymousId").is_some_and(Value::is_string) {
                fields.insert(
                    "anonymousId".into(),
                    Value::String(user.anonymous_id.clone()),
                );
            }
        }
        message
    }
}

impl Iterator for Traffic {
    type Item = Value;

    /// Never `None`: the stream does not end.
    fn next(&mut self) -> Option<Value> {
        Some(self.next_message())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traffic_comes_from_returning_users_in_sessions() {
        let events: Vec<Value> = Traffic::new(7).take(20_000).collect();
        // Every template fills (a template that did not would give null).
        assert!(events.iter().all(|e| e["type"].is_string()));
        assert!(
            events
                .iter()
                .all(|e| e.get("messageId").is_none() && e.get("timestamp").is_none())
        );
        let mut per_user: std::collections::HashMap<&str, usize> = Default::default();
        for e in &events {
            if let Some(id) = e["anonymousId"].as_str() {
                *per_user.entry(id).or_default() += 1;
            }
        }
        // Returning users: far fewer distinct ones than events, the busiest with hundreds.
        let busiest = per_user.values().max().copied().unwrap_or(0);
        assert!(per_user.len() < 5_000, "{} users", per_user.len());
        assert!(busiest > 200, "busiest user: {busiest} events");
        // One anonymousId per user: a userId always comes with the same one.
        let mut anonymous_of: std::collections::HashMap<&str, &str> = Default::default();
        for e in &events {
            if let (Some(user), Some(anonymous)) = (e["userId"].as_str(), e["anonymousId"].as_str())
            {
                assert_eq!(*anonymous_of.entry(user).or_insert(anonymous), anonymous);
            }
        }
        // Seeded: the same stream again (but for times some traits carry: `{{now.utc}}`).
        let who = |e: &Value| (e["type"].to_string(), e["anonymousId"].to_string());
        let again: Vec<_> = Traffic::new(7).take(100).map(|e| who(&e)).collect();
        assert_eq!(again, events[..100].iter().map(who).collect::<Vec<_>>());
    }

    #[test]
    fn every_template_fills_into_a_json_message() {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut count = 0;
        for template in templates() {
            let message = fill(template, &mut rng).expect(template);
            assert!(message["type"].is_string(), "{template}");
            assert!(!message.to_string().contains("{{"), "{message}");
            count += 1;
        }
        assert_eq!(count, 98);
    }
}
