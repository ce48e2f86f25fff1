//! `forward`: relay to another Tracking API endpoint (Segment, RudderStack, another Trackway
//! collector), so the collector is an edge buffer: it keeps accepting while the upstream is
//! down, and delivers once it is back.
//!
//! The relayed message is the one the client sent: the server's own fields (`receivedAt`,
//! `sentAt`) are removed and the client's `timestamp` restored from `originalTimestamp`, so
//! the upstream applies its own clock correction. The `messageId` is kept, so the upstream
//! deduplicates what a crash makes us send twice.
//!
//! The webhook's shape, with the `trackway` library's pieces: one attempt per chunk,
//!
//! ```text
//!  chunk ──▶ BatchBody (checked and encoded as a call would; cut into 500 KB requests)
//!        ──▶ spawn_blocking: for each request in order: write body (gzip, sentAt now)
//!                            ──▶ HttpTransport ──▶ retry::decide
//!        ──▶ one Attempt: delivered when every request was; else the first failure's
//! ```
//!
//! No retries of its own: the engine retries, durably and with its cursor. A chunk whose
//! later request fails is sent whole again; the upstream deduplicates the requests that had
//! gone through by `messageId`.

use std::time::SystemTime;

use serde_json::Value;
use trackway::retry::{Decision, decide};
use trackway::transport::{HttpTransport, Request, Transport};
use trackway::{BatchBody, DEFAULT_REQUEST_TIMEOUT, Message};

use crate::delivery::kind::DestinationError;
use crate::delivery::{Attempt, Destination};
use crate::storage::{BoxFuture, StoredEvent};

/// Messages relayed per attempt: several requests' worth of realistic events, so that an
/// attempt's fixed costs (a read, a cursor write) are shared by many.
const CHUNK: usize = 1000;

/// Whether request bodies are gzipped: the client's default, and what Segment expects.
const GZIP: bool = true;

pub(crate) struct Forward {
    /// The upstream's batch endpoint.
    url: String,
    write_key: String,
    transport: HttpTransport,
}

impl Forward {
    pub(crate) fn new(host: &str, write_key: &str) -> Result<Forward, DestinationError> {
        let url = trackway::batch_url(host).map_err(DestinationError::ForwardHost)?;
        Ok(Forward {
            url,
            write_key: write_key.to_owned(),
            transport: HttpTransport::with_timeout(DEFAULT_REQUEST_TIMEOUT),
        })
    }
}

/// The message as its client sent it.
fn as_sent(body: &str) -> Option<Message> {
    let Ok(Value::Object(mut message)) = serde_json::from_str::<Value>(body) else {
        return None;
    };
    message.remove("receivedAt");
    message.remove("sentAt");
    if let Some(original) = message.remove("originalTimestamp") {
        message.insert("timestamp".into(), original);
    }
    Message::from_json(Value::Object(message)).ok()
}

impl Destination for Forward {
    fn deliver<'a>(&'a self, events: &'a [StoredEvent]) -> BoxFuture<'a, Attempt> {
        Box::pin(async move {
            let mut body = BatchBody::new(&self.write_key, GZIP);
            for event in events {
                let Some(message) = as_sent(&event.body) else {
                    return Attempt::Reject {
                        reason: format!("event {} is not a message", event.seq),
                    };
                };
                // Our own message broke the rules: no retry can help.
                if let Err(e) = body.push(message) {
                    return Attempt::Reject {
                        reason: format!("forward: event {}: {e}", event.seq),
                    };
                }
            }
            let transport = self.transport.clone();
            let url = self.url.clone();
            tokio::task::spawn_blocking(move || send_all(&transport, &url, &mut body))
                .await
                .unwrap_or_else(|_| Attempt::Retry {
                    after: None,
                    reason: "forward: the request task failed".into(),
                })
        })
    }

    fn chunk_size(&self) -> usize {
        CHUNK
    }
}

/// Sends `body`'s requests in order, each body written just before it goes (so its `sentAt`
/// is fresh). The first request not delivered ends the attempt with the library's decision.
fn send_all(transport: &HttpTransport, url: &str, body: &mut BatchBody) -> Attempt {
    let mut bytes = Vec::new();
    for index in 0..body.requests() {
        body.write_request(index, &mut bytes);
        let result = transport.send(&Request {
            url,
            headers: body.request_headers(),
            body: &bytes,
        });
        match decide(&result, SystemTime::now()) {
            Decision::Delivered => {}
            Decision::Retry { after, reason } => {
                return Attempt::Retry {
                    after,
                    reason: format!("upstream: {reason}"),
                };
            }
            Decision::Reject { reason, .. } => {
                return Attempt::Reject {
                    reason: format!(
                        "upstream refused {} messages: {reason}",
                        body.messages_in(index)
                    ),
                };
            }
            // A case a later library tells apart: retrying loses nothing.
            other => {
                return Attempt::Retry {
                    after: None,
                    reason: format!("upstream: {other:?}"),
                };
            }
        }
    }
    Attempt::Delivered
}
