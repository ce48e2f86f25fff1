//! Shared set-up for the client's integration tests.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use trackway::{Builder, Observer, Outcome};
use trackway_testkit::FakeApi;

pub(crate) const WRITE_KEY: &str = "test-write-key-0123456789";

/// A deadline long enough never to be reached in a passing test.
pub(crate) const GENEROUS: Duration = Duration::from_secs(30);

/// A client for `api` with test-friendly retry waits.
pub(crate) fn client_for(api: &FakeApi) -> Builder {
    trackway::Analytics::builder(WRITE_KEY)
        .host(api.url())
        .backoff(Duration::from_millis(1), Duration::from_millis(20))
        .request_timeout(Duration::from_secs(5))
        .no_proxy()
}

/// The `messageId`s of `messages`, in order.
pub(crate) fn ids(messages: &[Value]) -> Vec<String> {
    messages
        .iter()
        .map(|m| m["messageId"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Records every outcome the client reports.
#[derive(Clone, Default)]
pub(crate) struct Outcomes(Arc<Mutex<HashMap<String, String>>>);

impl Outcomes {
    pub(crate) fn get(&self, id: &str) -> Option<String> {
        self.0.lock().unwrap().get(id).cloned()
    }

    pub(crate) fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

impl Observer for Outcomes {
    fn on_outcome(&self, message_id: &str, outcome: &Outcome<'_>) {
        let label = match outcome {
            Outcome::Delivered => "delivered".to_owned(),
            Outcome::Rejected { status, .. } => format!("rejected {status}"),
            Outcome::Dropped { reason, .. } => format!("dropped {reason}"),
            _ => "other".to_owned(),
        };
        let previous = self.0.lock().unwrap().insert(message_id.to_owned(), label);
        assert!(previous.is_none(), "{message_id} got two outcomes");
    }
}
