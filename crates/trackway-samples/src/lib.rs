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

#![forbid(unsafe_code)]

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

#[cfg(test)]
mod tests {
    use super::*;

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
