//! The quickstart: identify a user, track what they do, and shut down cleanly.
//!
//! With `TRACKWAY_WRITE_KEY` set it sends to `TRACKWAY_HOST` (default: Segment's Oregon
//! endpoint). Without it, it runs in test mode and prints the JSON that would have been sent.
//!
//! ```text
//! cargo run -p trackway --example quickstart
//! # to the collector `cargo run -p trackway-cli -- demo` runs, with the key it prints:
//! TRACKWAY_WRITE_KEY=demo-write-key TRACKWAY_HOST=http://127.0.0.1:8080 cargo run -p trackway --example quickstart
//! ```

#![expect(clippy::print_stdout, reason = "an example shows what it sent")]

use std::time::Duration;

use serde_json::json;
use trackway::testing::Recorder;
use trackway::{Analytics, Track};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let recorder = Recorder::new();
    let analytics = match std::env::var("TRACKWAY_WRITE_KEY") {
        Ok(key) => Analytics::builder(key)
            .host(std::env::var("TRACKWAY_HOST").unwrap_or_else(|_| trackway::OREGON_HOST.into()))
            .build()?,
        Err(_) => Analytics::builder("test-mode")
            .transport(recorder.clone())
            .build()?,
    };

    analytics.identify(
        "user-42",
        json!({"email": "ada@example.com", "plan": "trial"}),
    )?;
    analytics.track("user-42", "Signed Up", json!({"plan": "trial"}))?;
    analytics.enqueue(
        Track::new("Order Completed")
            .user_id("user-42")
            .properties(json!({"revenue": 42.5, "currency": "EUR"}))
            .context(json!({"ip": "203.0.113.7"}))
            .integration("Mixpanel", false),
    )?;
    analytics.page("user-42", "Pricing", json!({"path": "/pricing"}))?;

    let report = analytics.shutdown(Duration::from_secs(10));
    println!("{report}");
    for message in recorder.messages() {
        println!("{}", serde_json::to_string_pretty(&message)?);
    }
    Ok(())
}
