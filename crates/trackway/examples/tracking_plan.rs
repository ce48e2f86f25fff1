//! A tracking plan the compiler checks: every event of the product is a type in one module,
//! named once, its fields its properties. A misspelt event or property name is a compile
//! error, not a column nobody finds.
//!
//! Without `TRACKWAY_WRITE_KEY` it prints the JSON that would have been sent.
//!
//! ```text
//! cargo run -p trackway --features derive --example tracking_plan
//! ```

#![expect(clippy::print_stdout, reason = "an example shows what it sent")]

use std::time::Duration;

use trackway::testing::Recorder;
use trackway::{Analytics, User};

/// The plan: one module, reviewed like any other code.
mod plan {
    use serde::Serialize;

    /// A visitor created an account.
    #[derive(Serialize, trackway::Event)]
    #[event(name = "Signed Up")]
    pub(crate) struct SignedUp {
        pub(crate) plan: Plan,
        pub(crate) referrer: Option<String>,
    }

    /// The plans a user can start on: a typo in a plan's name does not compile.
    #[derive(Serialize)]
    #[serde(rename_all = "lowercase")]
    pub(crate) enum Plan {
        Trial,
    }

    /// A checkout went through.
    #[derive(Serialize, trackway::Event)]
    #[event(name = "Order Completed")]
    pub(crate) struct OrderCompleted {
        pub(crate) order_id: String,
        pub(crate) revenue: f64,
        pub(crate) currency: &'static str,
    }
}

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

    analytics.track_event(
        User::anonymous("anon-7"),
        plan::SignedUp {
            plan: plan::Plan::Trial,
            referrer: Some("newsletter".into()),
        },
    )?;
    analytics.track_event(
        "user-42",
        plan::OrderCompleted {
            order_id: "o-1001".into(),
            revenue: 42.5,
            currency: "EUR",
        },
    )?;

    let report = analytics.shutdown(Duration::from_secs(10));
    println!("{report}");
    for message in recorder.messages() {
        println!("{}", serde_json::to_string_pretty(&message)?);
    }
    Ok(())
}
