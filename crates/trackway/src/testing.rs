//! Test mode: a transport that records what would have been sent and answers 200.
//!
//! ```
//! use std::time::Duration;
//! use serde_json::json;
//! use trackway::{Analytics, testing::Recorder};
//!
//! let recorder = Recorder::new();
//! let analytics = Analytics::builder("test-key").transport(recorder.clone()).build()?;
//! analytics.track("user-1", "Signed Up", json!({"plan": "trial"}))?;
//! analytics.flush(Duration::from_secs(5));
//! let sent = recorder.messages();
//! assert_eq!(sent[0]["event"], "Signed Up");
//! assert_eq!(sent[0]["properties"]["plan"], "trial");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::io::Read;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::transport::{Request, Response, Transport, TransportError, TransportErrorKind};

/// One request the client made, decoded. Its `Debug` hides the `authorization` header and
/// masks the body's `writeKey` (tests often run with real keys, and a failed assertion prints
/// what it compared).
#[derive(Clone)]
pub struct RecordedRequest {
    /// The URL posted to.
    pub url: String,
    /// The headers, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body as JSON (decompressed when it was gzipped).
    pub body: Value,
}

impl std::fmt::Debug for RecordedRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str(),
                    if n == "authorization" {
                        "<redacted>"
                    } else {
                        v.as_str()
                    },
                )
            })
            .collect();
        let mut body = self.body.clone();
        if let Some(Value::String(key)) = body.get_mut("writeKey") {
            *key = crate::config::mask_write_key(key);
        }
        f.debug_struct("RecordedRequest")
            .field("url", &self.url)
            .field("headers", &headers)
            .field("body", &body)
            .finish()
    }
}

/// An in-memory [`Transport`] for tests: records every request and answers `200`.
/// Clones share the same record.
#[derive(Debug, Clone, Default)]
pub struct Recorder {
    requests: Arc<Mutex<Vec<RecordedRequest>>>,
}

impl Recorder {
    /// An empty recorder.
    pub fn new() -> Recorder {
        Recorder::default()
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Every message of every request so far, in order.
    pub fn messages(&self) -> Vec<Value> {
        self.requests()
            .into_iter()
            .flat_map(|r| match r.body.get("batch") {
                Some(Value::Array(batch)) => batch.clone(),
                _ => Vec::new(),
            })
            .collect()
    }

    /// Forgets everything recorded.
    pub fn clear(&self) {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

impl Transport for Recorder {
    fn send(&self, request: &Request<'_>) -> Result<Response, TransportError> {
        let mut raw = Vec::new();
        let undecodable =
            |e: std::io::Error| TransportError::new(TransportErrorKind::Other, e.to_string());
        match request.header("content-encoding") {
            Some("gzip") => {
                flate2::read::GzDecoder::new(request.body)
                    .read_to_end(&mut raw)
                    .map_err(undecodable)?;
            }
            Some("zstd") => raw = crate::compression::unzstd(request.body).map_err(undecodable)?,
            _ => raw.extend_from_slice(request.body),
        }
        let body = serde_json::from_slice(&raw)
            .map_err(|e| TransportError::new(TransportErrorKind::Other, e.to_string()))?;
        let headers = request
            .headers
            .iter()
            .map(|(n, v)| ((*n).to_owned(), v.clone()))
            .collect();
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(RecordedRequest {
                url: request.url.to_owned(),
                headers,
                body,
            });
        Ok(Response::new(200, r#"{"success":true}"#))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::Analytics;

    #[test]
    fn debug_output_shows_no_write_key() {
        let key = "sk_live_SECRETSECRETSECRET";
        let recorder = Recorder::new();
        let analytics = Analytics::builder(key)
            .transport(recorder.clone())
            .build()
            .unwrap();
        analytics
            .track("user-1", "Signed Up", serde_json::json!({}))
            .unwrap();
        assert!(analytics.flush(Duration::from_secs(30)).is_clean());
        assert_eq!(
            recorder.requests()[0].body["writeKey"],
            key,
            "recorded as sent"
        );
        let printed = format!("{recorder:?}");
        assert!(printed.contains("RecordedRequest"), "{printed}");
        assert!(!printed.contains("SECRETSECRET"), "{printed}");
    }
}
