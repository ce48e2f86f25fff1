//! `webhook`: POST each message, or a JSON array of up to `batch_size`, to a URL.
//!
//! Requests go through the `trackway` client's HTTP transport and are classified by its retry
//! policy (`trackway::retry::decide`), so both halves of the system agree on what is worth
//! retrying.
//!
//! # Signatures
//!
//! With a `secret`, every request carries `X-Signature: t=<unix seconds>,v1=<hex>` (Stripe's
//! scheme), where `<hex>` is the lower-case hex HMAC-SHA256, under the secret, of the
//! timestamp, a `.`, and the exact body bytes. The timestamp is signed with the body, so a
//! captured request cannot be sent again later with a fresh one. A receiver:
//!
//! 1. splits the header at `,` into `key=value` pairs, and takes `t` and every `v1`;
//! 2. computes the HMAC of `<t>.<raw body>` and compares it with each `v1` in constant time;
//! 3. refuses the request unless one matches and `t` is within a tolerance of its own clock
//!    (five minutes: [`DEFAULT_SIGNATURE_TOLERANCE`]), and
//! 4. to refuse a replay inside that window too, remembers the `messageId`s it took for as
//!    long (it should deduplicate by them anyway: delivery is at least once).
//!
//! [`verify`] does exactly that, for receivers in Rust and for the tests. Each attempt is
//! signed afresh, so a retry an hour later carries a fresh timestamp.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use trackway::retry::{Decision, decide};
use trackway::transport::{HttpTransport, Request, Transport};

use crate::delivery::kind::DestinationError;
use crate::delivery::{Attempt, Destination};
use crate::storage::{BoxFuture, StoredEvent};

/// Header carrying the signature: `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`.
pub const SIGNATURE_HEADER: &str = "x-signature";

/// How far a signature's timestamp may be from the receiver's clock before [`verify`] refuses
/// it: Stripe's default, wide enough for clock skew and a slow request, narrow enough that a
/// captured request is soon useless.
pub const DEFAULT_SIGNATURE_TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// Why [`verify`] refused a signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// The header is not `t=<unix seconds>,v1=<hex>[,v1=<hex>...]`.
    #[error("the signature header is malformed: {0}")]
    Malformed(&'static str),
    /// The timestamp is further from now than the tolerance: an old request sent again, or
    /// a clock far off.
    #[error("the signature's timestamp is {off_by_secs} s from now, over the tolerance")]
    OutsideTolerance {
        /// How far, in seconds.
        off_by_secs: u64,
    },
    /// No `v1` matches: another secret, or the timestamp or body were changed.
    #[error("the signature does not match")]
    Mismatch,
}

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
    ) -> Result<Webhook, DestinationError> {
        if secret.is_some_and(|s| s.trim().is_empty()) {
            return Err(DestinationError::EmptySecret);
        }
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(DestinationError::WebhookUrl {
                url: url.to_owned(),
            });
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

/// The [`SIGNATURE_HEADER`] value for `body` sent at `timestamp` (unix seconds).
pub fn sign(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    format!("t={timestamp},v1={}", signed_hex(secret, timestamp, body))
}

/// Checks a [`SIGNATURE_HEADER`] value against the raw `body`, the shared `secret`, and the
/// receiver's clock `now`: some `v1` must be the HMAC of `<t>.<body>` (compared in constant
/// time), and `t` within `tolerance` of `now` (see the module documentation).
pub fn verify(
    secret: &[u8],
    header: &str,
    body: &[u8],
    now: SystemTime,
    tolerance: Duration,
) -> Result<(), SignatureError> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for pair in header.split(',') {
        match pair.trim().split_once('=') {
            Some(("t", value)) => {
                let seconds = value
                    .parse::<u64>()
                    .map_err(|_| SignatureError::Malformed("t is not a number of seconds"))?;
                timestamp = Some(seconds);
            }
            Some(("v1", value)) => signatures.push(value),
            // Other schemes (a later v2) are for other receivers.
            Some(_) => {}
            None => return Err(SignatureError::Malformed("a part is not key=value")),
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed("no t="))?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed("no v1="));
    }
    let now = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let off_by_secs = now.abs_diff(timestamp);
    if off_by_secs > tolerance.as_secs() {
        return Err(SignatureError::OutsideTolerance { off_by_secs });
    }
    let expected = signed_hex(secret, timestamp, body);
    let matches = !expected.is_empty()
        && signatures
            .iter()
            .any(|given| constant_time_eq::constant_time_eq(given.as_bytes(), expected.as_bytes()));
    if matches {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// Lower-case hex HMAC-SHA256 of `<timestamp>.<body>` under `secret`.
fn signed_hex(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    hmac_hex(secret, &[timestamp.to_string().as_bytes(), b".", body])
}

/// Lower-case hex HMAC-SHA256 of the concatenated `parts` under `secret`.
fn hmac_hex(secret: &[u8], parts: &[&[u8]]) -> String {
    // HMAC takes keys of any length; were it ever to fail, the empty answer matches nothing.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return String::new();
    };
    for part in parts {
        mac.update(part);
    }
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
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            headers.push((SIGNATURE_HEADER, sign(secret, now, body.as_bytes())));
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
                // A case a later library tells apart: retrying loses nothing.
                other => Attempt::Retry {
                    after: None,
                    reason: format!("{other:?}"),
                },
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
            hmac_hex(b"Jefe", &[b"what do ya want for nothing?"]),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            signed_hex(b"Jefe", 7, b"body"),
            hmac_hex(b"Jefe", &[b"7.body"])
        );
    }

    #[test]
    fn a_signature_verifies_within_the_tolerance_only() {
        let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let header = sign(b"s3cret", 1_700_000_000, b"{}");
        assert!(header.starts_with("t=1700000000,v1="), "{header}");
        let check = |header: &str, body: &[u8], now| {
            verify(b"s3cret", header, body, now, DEFAULT_SIGNATURE_TOLERANCE)
        };
        assert_eq!(check(&header, b"{}", at), Ok(()));
        assert_eq!(check(&header, b"{}", at + Duration::from_secs(300)), Ok(()));
        assert_eq!(
            check(&header, b"{}", at + Duration::from_secs(301)),
            Err(SignatureError::OutsideTolerance { off_by_secs: 301 })
        );
        assert_eq!(
            check(&header, b"{}", at - Duration::from_secs(301)),
            Err(SignatureError::OutsideTolerance { off_by_secs: 301 })
        );
        assert_eq!(check(&header, b"{ }", at), Err(SignatureError::Mismatch));
        // A fresh timestamp on a captured signature does not verify.
        let moved = header.replace("t=1700000000", "t=1700000100");
        assert_eq!(
            check(&moved, b"{}", at + Duration::from_secs(100)),
            Err(SignatureError::Mismatch)
        );
        // A rotated secret: either v1 may match.
        let both = format!("{header},v1={}", "0".repeat(64));
        assert_eq!(check(&both, b"{}", at), Ok(()));
        assert!(matches!(
            check("v1=abc", b"{}", at),
            Err(SignatureError::Malformed(_))
        ));
    }
}
