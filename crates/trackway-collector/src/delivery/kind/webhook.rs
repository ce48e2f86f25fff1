//! `webhook`: POST each message, or a JSON array of up to `batch_size`, to a URL.
//!
//! Requests go through the `trackway` client's HTTP transport and are classified by its retry
//! policy (`trackway::retry::decide`), so both halves of the system agree on what is worth
//! retrying. With a `secret`, `X-Signature` carries the lower-case hex HMAC-SHA256 of the exact
//! body bytes, so the receiver can check the request came from this collector.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use trackway::retry::{Decision, decide};
use trackway::transport::{HttpTransport, Request, Transport};

use crate::delivery::{Attempt, Destination};
use crate::storage::{BoxFuture, StoredEvent};

/// Header carrying the body's signature.
pub const SIGNATURE_HEADER: &str = "x-signature";

pub(crate) struct Webhook {
    url: String,
    headers: Vec<(&'static str, String)>,
    secret: Option<Vec<u8>>,
    batch_size: usize,
    transport: HttpTransport,
}

impl Webhook {
    pub(crate) fn new(
        url: &str,
        headers: &BTreeMap<String, String>,
        secret: Option<&str>,
        batch_size: usize,
        timeout: Duration,
    ) -> Result<Webhook, String> {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!(
                "webhook url {url:?} must start with http:// or https://"
            ));
        }
        // Header names are leaked once per destination at start-up so the transport's
        // `&'static str` names can carry them.
        let mut all = vec![
            ("content-type", "application/json".to_owned()),
            (
                "user-agent",
                format!("trackway-collector/{}", env!("CARGO_PKG_VERSION")),
            ),
        ];
        for (name, value) in headers {
            let name: &'static str = Box::leak(name.to_ascii_lowercase().into_boxed_str());
            all.push((name, value.clone()));
        }
        Ok(Webhook {
            url: url.to_owned(),
            headers: all,
            secret: secret.map(|s| s.as_bytes().to_vec()),
            batch_size,
            transport: HttpTransport::with_timeout(timeout),
        })
    }

    fn body(&self, events: &[StoredEvent]) -> String {
        if self.batch_size == 1 && events.len() == 1 {
            return events[0].body.clone();
        }
        let mut body = String::from("[");
        for (i, event) in events.iter().enumerate() {
            if i > 0 {
                body.push(',');
            }
            body.push_str(&event.body);
        }
        body.push(']');
        body
    }
}

/// Lower-case hex HMAC-SHA256 of `body` under `secret`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    // HMAC accepts keys of any length.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Destination for Webhook {
    fn deliver<'a>(&'a self, events: &'a [StoredEvent]) -> BoxFuture<'a, Attempt> {
        let body = self.body(events);
        let mut headers = self.headers.clone();
        if let Some(secret) = &self.secret {
            headers.push((SIGNATURE_HEADER, sign(secret, body.as_bytes())));
        }
        let transport = self.transport.clone();
        let url = self.url.clone();
        Box::pin(async move {
            let result = tokio::task::spawn_blocking(move || {
                transport.send(&Request {
                    url: &url,
                    headers: &headers,
                    body: body.as_bytes(),
                })
            })
            .await;
            let Ok(result) = result else {
                return Attempt::Retry {
                    after: None,
                    reason: "the request task failed".into(),
                };
            };
            match decide(&result, SystemTime::now()) {
                Decision::Delivered => Attempt::Delivered,
                Decision::Retry { after, reason } => Attempt::Retry { after, reason },
                Decision::Reject { reason, .. } => Attempt::Reject { reason },
            }
        })
    }

    fn chunk_size(&self) -> usize {
        self.batch_size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hmac_sha256_in_hex() {
        // RFC 4231, test case 2.
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
