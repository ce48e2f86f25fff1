//! The derive through `trackway`'s re-export, as users write it: a tracking plan in one
//! module, sent to a fake Tracking API that really speaks HTTP.

#![expect(
    clippy::unwrap_used,
    reason = "a test fails loudly at the first surprise"
)]

use std::time::Duration;

use serde_json::json;
use trackway::{Analytics, Event, User};
use trackway_testkit::FakeApi;

/// The whole plan, as a team would keep it: one type per event.
mod plan {
    use serde::Serialize;

    #[derive(Serialize, trackway::Event)]
    #[event(name = "Order Completed")]
    pub(crate) struct OrderCompleted {
        pub(crate) order_id: String,
        pub(crate) revenue: f64,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub(crate) coupon: Option<String>,
    }

    #[derive(Serialize, trackway::Event)]
    #[event(name = "Signed Out")]
    pub(crate) struct SignedOut;

    /// Generic events work too: the bound is the derive's caller's business.
    #[derive(Serialize, trackway::Event)]
    #[event(name = "Item Viewed")]
    pub(crate) struct ItemViewed<T: Serialize + 'static> {
        pub(crate) item: T,
    }
}

fn client(api: &FakeApi) -> Analytics {
    Analytics::builder("derive-write-key-0123456789")
        .host(api.url())
        .no_proxy()
        .build()
        .unwrap()
}

#[test]
fn derived_events_arrive_with_their_names_and_fields() {
    let api = FakeApi::start();
    let analytics = client(&api);
    analytics
        .track_event(
            "user-1",
            plan::OrderCompleted {
                order_id: "o-1".into(),
                revenue: 42.5,
                coupon: None,
            },
        )
        .unwrap();
    analytics
        .track_event(User::anonymous("anon-7"), plan::SignedOut)
        .unwrap();
    analytics
        .track_event(User::id("user-2"), plan::ItemViewed { item: 7_u32 })
        .unwrap();
    // The builder form, for anything else a track carries.
    analytics
        .enqueue(
            plan::SignedOut
                .into_track()
                .user_id("user-3")
                .message_id("m-4"),
        )
        .unwrap();
    let report = analytics.flush(Duration::from_secs(30));
    assert!(report.is_clean(), "{report}");
    let messages = api.accepted_messages();
    assert_eq!(messages.len(), 4);
    assert_eq!(messages[0]["event"], "Order Completed");
    assert_eq!(messages[0]["userId"], "user-1");
    assert_eq!(
        messages[0]["properties"],
        json!({"order_id": "o-1", "revenue": 42.5})
    );
    assert_eq!(messages[1]["event"], "Signed Out");
    assert_eq!(messages[1]["anonymousId"], "anon-7");
    assert!(messages[1].get("userId").is_none(), "{}", messages[1]);
    assert!(messages[1].get("properties").is_none(), "{}", messages[1]);
    assert_eq!(messages[2]["event"], "Item Viewed");
    assert_eq!(messages[2]["properties"], json!({"item": 7}));
    assert_eq!(messages[3]["userId"], "user-3");
    assert_eq!(messages[3]["messageId"], "m-4");
    assert_eq!(plan::OrderCompleted::NAME, "Order Completed");
}
