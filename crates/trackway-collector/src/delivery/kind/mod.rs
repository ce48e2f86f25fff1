//! The destination kinds, each one module behind [`super::Destination`], and their
//! configuration.

mod error;
pub(crate) mod file;
mod forward;
mod stdout;
mod webhook;

pub use error::DestinationError;
pub use webhook::{DEFAULT_SIGNATURE_TOLERANCE, SIGNATURE_HEADER, SignatureError, sign, verify};

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::Destination;

/// Default `retry_window_secs`: an event keeps being retried this long before it becomes a
/// dead letter, long enough to ride out a receiving service's bad day; what is left after it
/// an operator replays.
pub const DEFAULT_RETRY_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);
/// Default `backoff_base_ms`: first wait after a transient failure.
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_secs(1);
/// Default `backoff_cap_ms`: longest wait between attempts.
pub const DEFAULT_BACKOFF_CAP: Duration = Duration::from_secs(5 * 60);
/// Default webhook timeout.
pub const DEFAULT_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

/// One destination of a source, as configured.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct DestinationConfig {
    /// The name messages' `integrations` refer to (case-sensitive), unique per source, without
    /// `/`.
    pub name: String,
    /// What it is.
    #[serde(flatten)]
    pub kind: Kind,
    /// How long an event is retried before it becomes a dead letter.
    #[serde(default, rename = "retry_window_secs", with = "secs")]
    pub retry_window: Option<Duration>,
    /// First backoff wait, in ms.
    #[serde(default, rename = "backoff_base_ms", with = "millis")]
    pub backoff_base: Option<Duration>,
    /// Longest backoff wait, in ms.
    #[serde(default, rename = "backoff_cap_ms", with = "millis")]
    pub backoff_cap: Option<Duration>,
    /// Chunks delivered at once. Unset or 1 keeps the order of events; more trades order
    /// for throughput (for receivers that do not care, such as most webhooks).
    #[serde(default)]
    pub concurrency: Option<usize>,
}

/// The destination kinds.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
#[non_exhaustive]
pub enum Kind {
    /// POST each message (or batches of `batch_size`, as a JSON array) to `url`.
    Webhook {
        /// Where to POST.
        url: String,
        /// Extra headers.
        #[serde(default)]
        headers: BTreeMap<String, String>,
        /// When set, `X-Signature` carries `t=<unix seconds>,v1=<hex HMAC-SHA256 of
        /// "<t>.<body>">` under this secret (see [`verify`]). Must not be empty.
        #[serde(default)]
        secret: Option<String>,
        /// Messages per request: 1 posts each message as an object; more posts arrays.
        #[serde(default = "one")]
        batch_size: usize,
        /// Request timeout in ms.
        #[serde(default, rename = "timeout_ms", with = "millis")]
        timeout: Option<Duration>,
    },
    /// JSON lines, one file per source and day, rotated by size, fsynced per delivery.
    File {
        /// Directory of the files.
        dir: PathBuf,
        /// Rotate once a file reaches this many bytes.
        #[serde(default = "default_max_bytes")]
        max_bytes: u64,
    },
    /// Relay to another Tracking API (Segment, RudderStack, another collector) through the
    /// `trackway` client.
    Forward {
        /// The upstream's base URL or region name.
        host: String,
        /// The upstream's write key.
        write_key: String,
    },
    /// One JSON line per message on standard output, for debugging.
    Stdout {},
}

fn one() -> usize {
    1
}

/// Default `max_bytes` of a file destination: 100 MiB.
fn default_max_bytes() -> u64 {
    100 * 1024 * 1024
}

impl std::fmt::Debug for Kind {
    /// Secrets (a webhook's `secret` and header values, a forward's `write_key`) are hidden.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Kind::Webhook {
                url,
                headers,
                secret,
                batch_size,
                timeout,
            } => f
                .debug_struct("Webhook")
                .field("url", url)
                .field("headers", &headers.keys().collect::<Vec<_>>())
                .field("secret", &secret.as_ref().map(|_| "<redacted>"))
                .field("batch_size", batch_size)
                .field("timeout", timeout)
                .finish(),
            Kind::File { dir, max_bytes } => f
                .debug_struct("File")
                .field("dir", dir)
                .field("max_bytes", max_bytes)
                .finish(),
            Kind::Forward { host, .. } => f
                .debug_struct("Forward")
                .field("host", host)
                .field("write_key", &"<redacted>")
                .finish(),
            Kind::Stdout {} => f.write_str("Stdout"),
        }
    }
}

impl Kind {
    /// The kind's name, for the admin API.
    pub fn label(&self) -> &'static str {
        match self {
            Kind::Webhook { .. } => "webhook",
            Kind::File { .. } => "file",
            Kind::Forward { .. } => "forward",
            Kind::Stdout {} => "stdout",
        }
    }
}

/// Builds the destination for `config`, delivering events of `source`.
pub fn build(
    config: &DestinationConfig,
    source: &str,
) -> Result<Arc<dyn Destination>, DestinationError> {
    build_leased(config, source, false)
}

/// As [`build`]; with `leased`, what only the delivering collector may hold (a file
/// destination's directory lock) is taken with the destination's lease
/// ([`Destination::claim`]), not now.
pub fn build_leased(
    config: &DestinationConfig,
    source: &str,
    leased: bool,
) -> Result<Arc<dyn Destination>, DestinationError> {
    Ok(match &config.kind {
        Kind::Webhook {
            url,
            headers,
            secret,
            batch_size,
            timeout,
        } => Arc::new(webhook::Webhook::new(
            url,
            headers,
            secret.as_deref(),
            (*batch_size).max(1),
            timeout.unwrap_or(DEFAULT_WEBHOOK_TIMEOUT),
        )?),
        Kind::File { dir, max_bytes } => {
            if *max_bytes == 0 {
                return Err(DestinationError::ZeroMaxBytes);
            }
            Arc::new(file::JsonLines::open(dir, source, *max_bytes, leased)?)
        }
        Kind::Forward { host, write_key } => Arc::new(forward::Forward::new(host, write_key)?),
        Kind::Stdout {} => Arc::new(stdout::Stdout::new()?),
    })
}

/// `Option<Duration>` as whole milliseconds.
mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

/// `Option<Duration>` as whole seconds.
mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_secs))
    }
}
