//! Everything configurable, with named defaults and the reason for each.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use trackway_protocol::{
    MAX_BATCH_MESSAGES, MAX_MESSAGE_BYTES, MAX_REQUEST_BYTES, envelope_overhead,
};

use crate::budget::{LARGEST_ENCODED_COST, Overflow};
use crate::compression::{Compression, Negotiation, ZSTD_BUILT};
use crate::outcome::Observer;
use crate::retry::RetryPolicy;
use crate::spool::settings::{MIN_SPOOL_MAX_BYTES, SpoolSettings};
use crate::spool::{HOST_MAX, SpoolConfig, create_dir_private};
use crate::transport::ProxySetting;
use crate::transport::Transport;

/// Segment's Oregon (US) endpoint, the default host.
pub const OREGON_HOST: &str = "https://api.segment.io";

/// Segment's Dublin (EU) endpoint. EU workspaces must use it: events sent to Oregon are
/// accepted and never appear.
pub const DUBLIN_HOST: &str = "https://events.eu1.segmentapis.com";

/// Default [`Builder::flush_at`]: analytics-java's and analytics-go's batch size. Large enough
/// to amortise a request over many events, small enough (≈ 75 KB of typical events) that a
/// quiet service's events go out in small requests; under load, batches grow to the byte limit.
pub const DEFAULT_FLUSH_AT: usize = 250;

/// Default [`Builder::max_batch_bytes`]: the API's own request limit; the envelope is counted.
pub const DEFAULT_MAX_BATCH_BYTES: usize = MAX_REQUEST_BYTES;

/// Default [`Builder::flush_interval`]: a quiet service still sees its events within about a
/// second, at a cost of at most one request per second. No timer runs while nothing is queued.
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// Default [`Builder::max_queue_bytes`]: 6 MiB holds about 12,800 realistic events (more of
/// smaller ones), more than the 10,000 messages analytics-python queues by default, and keeps
/// the whole client under 32 MB of resident memory at full load (BENCHMARKS.md).
pub const DEFAULT_MAX_QUEUE_BYTES: usize = 6 * 1024 * 1024;

/// Default [`Builder::request_timeout`]: long enough for a 500 KB body over a slow link, short
/// enough that a hung server costs a retry, not the process.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Default [`Builder::drop_timeout`]: how long dropping the last handle may spend delivering
/// what is queued. Bounded so that a dead network never hangs process exit.
pub const DEFAULT_DROP_TIMEOUT: Duration = Duration::from_secs(5);

/// Default [`Builder::gzip_level`]: level 1 gets most of the size win (JSON events compress
/// 4-6x) at a fraction of the CPU of zlib's usual level 6.
pub const DEFAULT_GZIP_LEVEL: u32 = 1;

/// A Segment region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Region {
    /// Oregon, US: [`OREGON_HOST`].
    Oregon,
    /// Dublin, EU: [`DUBLIN_HOST`].
    Dublin,
}

impl Region {
    /// The region's API endpoint.
    pub fn host(self) -> &'static str {
        match self {
            Region::Oregon => OREGON_HOST,
            Region::Dublin => DUBLIN_HOST,
        }
    }
}

/// A setting that [`Builder::build`] refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The write key is empty.
    #[error("the write key is empty")]
    EmptyWriteKey,
    /// The host is neither a region name nor an http(s) URL.
    #[error("host {host:?} is not \"oregon\", \"dublin\" or an http(s) URL: {reason}")]
    InvalidHost {
        /// The host as given.
        host: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A numeric setting is out of range.
    #[error("{setting} must be {expected}")]
    OutOfRange {
        /// The builder method.
        setting: &'static str,
        /// The allowed range.
        expected: String,
    },
    /// The default context is not a JSON object.
    #[error("the default context must be a JSON object")]
    ContextNotAnObject,
    /// The proxy URL is invalid, or not an HTTP(S) proxy.
    #[error("{0}")]
    Proxy(String),
    /// [`Compression::Zstd`] was chosen, but this build of the crate has no `zstd` feature:
    /// turn it on, or choose another compression.
    #[error("zstd compression needs trackway's `zstd` feature, which this build does not have")]
    ZstdNotBuilt,
    /// The spool directory cannot be used: it is not a directory, or cannot be created.
    #[error("spool directory {path}: {reason}")]
    SpoolDir {
        /// The directory as given.
        path: std::path::PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// [`Builder::spool_dir`] and [`Builder::defer_encoding`] were both set: a call must encode
    /// a message to write it into the spool. Choose one.
    #[error("spool_dir and defer_encoding exclude each other: the call writes the encoded message")]
    SpoolWithDeferredEncoding,
}

/// Configures an [`Analytics`](crate::Analytics) client. Every setting has a production-ready default.
#[must_use]
pub struct Builder {
    pub(crate) write_key: String,
    pub(crate) host: String,
    pub(crate) flush_at: usize,
    pub(crate) max_batch_bytes: usize,
    pub(crate) flush_interval: Duration,
    pub(crate) max_queue_bytes: usize,
    pub(crate) overflow: Overflow,
    pub(crate) retry: RetryPolicy,
    pub(crate) request_timeout: Duration,
    pub(crate) compression: Compression,
    pub(crate) gzip_level: u32,
    pub(crate) defer_encoding: bool,
    pub(crate) default_context: Value,
    pub(crate) proxy: ProxySetting,
    pub(crate) transport: Option<Arc<dyn Transport>>,
    pub(crate) observer: Option<Arc<dyn Observer>>,
    pub(crate) drop_timeout: Duration,
    pub(crate) spool: SpoolSettings,
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("write_key", &mask_write_key(&self.write_key))
            .field("host", &self.host)
            .field("flush_at", &self.flush_at)
            .field("max_batch_bytes", &self.max_batch_bytes)
            .field("flush_interval", &self.flush_interval)
            .field("max_queue_bytes", &self.max_queue_bytes)
            .field("overflow", &self.overflow)
            .field("retry", &self.retry)
            .field("request_timeout", &self.request_timeout)
            .field("compression", &self.compression)
            .field("gzip_level", &self.gzip_level)
            .field("defer_encoding", &self.defer_encoding)
            .field("proxy", &self.proxy.redacted())
            .field("custom_transport", &self.transport.is_some())
            .field("observer", &self.observer.is_some())
            .field("spool", &self.spool)
            .finish_non_exhaustive()
    }
}

/// The write key as it may appear in logs and errors: its first four characters and its
/// length, or only its length when it is too short to show any of it.
pub fn mask_write_key(key: &str) -> String {
    let length = key.chars().count();
    if length <= MASK_MIN_CHARS {
        return format!("… ({length} chars)");
    }
    let shown: String = key.chars().take(4).collect();
    format!("{shown}… ({length} chars)")
}

/// Keys this short are not even partly shown.
const MASK_MIN_CHARS: usize = 11;

impl Builder {
    pub(crate) fn new(write_key: impl Into<String>) -> Builder {
        Builder {
            write_key: write_key.into(),
            host: OREGON_HOST.to_owned(),
            flush_at: DEFAULT_FLUSH_AT,
            max_batch_bytes: DEFAULT_MAX_BATCH_BYTES,
            flush_interval: DEFAULT_FLUSH_INTERVAL,
            max_queue_bytes: DEFAULT_MAX_QUEUE_BYTES,
            overflow: Overflow::Reject,
            retry: RetryPolicy::default(),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            compression: Compression::Auto,
            gzip_level: DEFAULT_GZIP_LEVEL,
            defer_encoding: false,
            default_context: Value::Null,
            proxy: ProxySetting::FromEnv,
            transport: None,
            observer: None,
            drop_timeout: DEFAULT_DROP_TIMEOUT,
            spool: Default::default(),
        }
    }

    /// Where to send: `"oregon"` (the default), `"dublin"`, or the base URL of any server that
    /// speaks the Tracking API (`http://localhost:8080`, a RudderStack data plane, a proxy).
    /// The client posts to `<host>/v1/batch`.
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.host = host.into();
        self
    }

    /// Sends to a Segment region.
    pub fn region(mut self, region: Region) -> Self {
        self.host = region.host().to_owned();
        self
    }

    /// Sends a batch as soon as this many messages are queued (1 to 2500). While earlier
    /// batches are still on their way (a slow server, or more traffic than one request at a
    /// time carries), the next batch takes everything queued meanwhile, up to
    /// [`Builder::max_batch_bytes`] and 2500 messages: under load, fewer and larger requests.
    pub fn flush_at(mut self, messages: usize) -> Self {
        self.flush_at = messages;
        self
    }

    /// Largest request body, envelope included, before compression.
    pub fn max_batch_bytes(mut self, bytes: usize) -> Self {
        self.max_batch_bytes = bytes;
        self
    }

    /// Sends what is queued once the oldest message has waited this long.
    pub fn flush_interval(mut self, interval: Duration) -> Self {
        self.flush_interval = interval;
        self
    }

    /// The memory budget: bytes of messages held at once, queued, in flight or waiting to
    /// retry. Each message costs its encoded size (or, with [`Builder::defer_encoding`], an
    /// estimate of the heap memory it holds) plus its slot in the queue. With a spool,
    /// [`Builder::spool_max_bytes`] bounds what is queued instead.
    pub fn max_queue_bytes(mut self, bytes: usize) -> Self {
        self.max_queue_bytes = bytes;
        self
    }

    /// What a call does when the budget is full: reject at once (the default) or wait.
    pub fn overflow(mut self, overflow: Overflow) -> Self {
        self.overflow = overflow;
        self
    }

    /// Retries after the first attempt, not counting waits the server asked for (a
    /// `Retry-After` shorter than the backoff's own wait, such as `0`, counts: see
    /// [`crate::RetryPolicy::retry_wait`]).
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.retry.max_retries = retries;
        self
    }

    /// Exponential backoff: first ceiling `base`, doubling up to `cap`.
    pub fn backoff(mut self, base: Duration, cap: Duration) -> Self {
        self.retry.backoff_base = base;
        self.retry.backoff_cap = cap;
        self
    }

    /// Whether each backoff is drawn at random below its ceiling (on by default).
    pub fn jitter(mut self, jitter: bool) -> Self {
        self.retry.jitter = jitter;
        self
    }

    /// Total time one batch may be retried before its messages are dropped.
    pub fn max_retry_duration(mut self, limit: Duration) -> Self {
        self.retry.max_retry_duration = limit;
        self
    }

    /// The whole retry policy at once.
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Time limit of one request, connect to last byte (default transport only).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// How request bodies are compressed: [`Compression::Auto`] by default, which sends gzip
    /// (Segment and every Tracking API server take it) and moves to zstd once the server lists
    /// it in an answer's `Accept-Encoding`, as our collector does. Compressing with zstd costs
    /// about 0.6x gzip's CPU and writes about half the bytes (BENCHMARKS.md).
    pub fn compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    /// Compress request bodies (`true`, the default: [`Compression::Auto`]) or not (`false`:
    /// [`Compression::None`]). Kept from before [`Builder::compression`], which says more.
    pub fn gzip(mut self, gzip: bool) -> Self {
        self.compression = if gzip {
            Compression::Auto
        } else {
            Compression::None
        };
        self
    }

    /// Leave encoding messages to the background thread instead of the call (off by default).
    ///
    /// A call then only checks, sizes and queues the message: about half the time (a few
    /// hundred nanoseconds). The process spends more CPU per event in all, though: the
    /// background thread reads each message back from memory after it has gone cold, and
    /// frees its allocations on another thread than the one that made them, which glibc's
    /// allocator in particular handles slowly. Worth it where the calling thread's latency
    /// matters more than total CPU; BENCHMARKS.md has both measured.
    pub fn defer_encoding(mut self, defer: bool) -> Self {
        self.defer_encoding = defer;
        self
    }

    /// gzip level from 1 (fastest, the default) to 9 (smallest). Higher levels trade the
    /// client's CPU for fewer bytes on the wire. Measured on realistic events (BENCHMARKS.md):
    /// level 1 about 0.5 µs and 115 bytes per event, level 2 1.2 µs and 84 bytes, level 6
    /// 2.6 µs and 73 bytes. Where egress is metered and volumes are high, the bytes saved by
    /// level 2 usually cost more than the CPU spent.
    pub fn gzip_level(mut self, level: u32) -> Self {
        self.gzip_level = level;
        self
    }

    /// Context keys added to every message that does not set them itself (a JSON object).
    pub fn default_context(mut self, context: Value) -> Self {
        self.default_context = context;
        self
    }

    /// Send through this HTTP proxy (`http://user:pass@host:port` or `https://...`; SOCKS
    /// is not supported, and [`Builder::build`] refuses it with [`ConfigError::Proxy`]).
    /// Without this, the environment's proxy is used as curl would use it: `https_proxy` or
    /// `HTTPS_PROXY` for an `https` host, `http_proxy` for an `http` one, else `all_proxy` or
    /// `ALL_PROXY` (a SOCKS one is ignored); none for the hosts `no_proxy` or `NO_PROXY`
    /// covers (names with their subdomains, IP addresses, CIDR ranges, or `*`).
    pub fn proxy(mut self, url: impl Into<String>) -> Self {
        self.proxy = ProxySetting::Url(url.into());
        self
    }

    /// Ignore proxy environment variables and connect directly.
    pub fn no_proxy(mut self) -> Self {
        self.proxy = ProxySetting::Direct;
        self
    }

    /// Use your own HTTP stack (or [`crate::testing::Recorder`]) instead of the built-in one.
    pub fn transport(mut self, transport: impl Transport) -> Self {
        self.transport = Some(Arc::new(transport));
        self
    }

    /// Receive the outcome of every accepted message.
    pub fn observer(mut self, observer: impl Observer) -> Self {
        self.observer = Some(Arc::new(observer));
        self
    }

    /// How long dropping the last handle may spend delivering what is queued.
    pub fn drop_timeout(mut self, timeout: Duration) -> Self {
        self.drop_timeout = timeout;
        self
    }

    pub(crate) fn validate(self) -> Result<Validated, ConfigError> {
        if self.write_key.is_empty() {
            return Err(ConfigError::EmptyWriteKey);
        }
        let batch_url = batch_url(&self.host)?;
        let spool = validate_spool(self.spool, self.defer_encoding, &batch_url)?;
        let range = |setting: &'static str, ok: bool, expected: String| {
            if ok {
                Ok(())
            } else {
                Err(ConfigError::OutOfRange { setting, expected })
            }
        };
        range(
            "flush_at",
            (1..=MAX_BATCH_MESSAGES).contains(&self.flush_at),
            format!("between 1 and {MAX_BATCH_MESSAGES}"),
        )?;
        let smallest_batch = MAX_MESSAGE_BYTES + envelope_overhead(&self.write_key);
        range(
            "max_batch_bytes",
            (smallest_batch..=MAX_REQUEST_BYTES).contains(&self.max_batch_bytes),
            format!("between {smallest_batch} and {MAX_REQUEST_BYTES}"),
        )?;
        let smallest_budget = LARGEST_ENCODED_COST;
        range(
            "max_queue_bytes",
            self.max_queue_bytes as u64 >= smallest_budget,
            format!("at least {smallest_budget}"),
        )?;
        range(
            "gzip_level",
            (1..=9).contains(&self.gzip_level),
            "between 1 and 9".into(),
        )?;
        if self.compression == Compression::Zstd && !ZSTD_BUILT {
            return Err(ConfigError::ZstdNotBuilt);
        }
        let positive = |setting, d: Duration| range(setting, !d.is_zero(), "above zero".into());
        positive("flush_interval", self.flush_interval)?;
        positive("request_timeout", self.request_timeout)?;
        range(
            "backoff",
            self.retry.backoff_base <= self.retry.backoff_cap,
            "a base no larger than its cap".into(),
        )?;
        let default_context = match self.default_context {
            Value::Null => Map::new(),
            Value::Object(map) => map,
            _ => return Err(ConfigError::ContextNotAnObject),
        };
        let transport = match self.transport {
            Some(transport) => transport,
            None => Arc::new(
                crate::transport::HttpTransport::new(self.request_timeout, &self.proxy, &batch_url)
                    .map_err(ConfigError::Proxy)?,
            ),
        };
        Ok(Validated {
            write_key: self.write_key,
            batch_url,
            flush_at: self.flush_at,
            max_batch_bytes: self.max_batch_bytes,
            flush_interval: self.flush_interval,
            max_queue_bytes: self.max_queue_bytes as u64,
            overflow: self.overflow,
            retry: self.retry,
            negotiation: Arc::new(Negotiation::new(self.compression)),
            gzip_level: self.gzip_level,
            defer_encoding: self.defer_encoding,
            default_context,
            transport,
            observer: self.observer,
            drop_timeout: self.drop_timeout,
            spool,
        })
    }
}

/// Settings that passed [`Builder::build`]'s checks.
pub(crate) struct Validated {
    pub(crate) write_key: String,
    pub(crate) batch_url: String,
    pub(crate) flush_at: usize,
    pub(crate) max_batch_bytes: usize,
    pub(crate) flush_interval: Duration,
    pub(crate) max_queue_bytes: u64,
    pub(crate) overflow: Overflow,
    pub(crate) retry: RetryPolicy,
    /// The encoding of the next request body, shared by the encoder and the sender.
    pub(crate) negotiation: Arc<Negotiation>,
    pub(crate) gzip_level: u32,
    pub(crate) defer_encoding: bool,
    pub(crate) default_context: Map<String, Value>,
    pub(crate) transport: Arc<dyn Transport>,
    pub(crate) observer: Option<Arc<dyn Observer>>,
    pub(crate) drop_timeout: Duration,
    pub(crate) spool: Option<crate::spool::SpoolConfig>,
}

impl Validated {
    /// Bytes of encoded messages, commas included, that fit in one request beside the
    /// envelope: what the worker batches to and the encoder cuts requests by.
    pub(crate) fn message_bytes_per_request(&self) -> usize {
        self.max_batch_bytes - envelope_overhead(&self.write_key)
    }
}

/// The batch endpoint (`<host>/v1/batch`) for a [`Builder::host`] value, a region name or a
/// base URL, or why it is refused: for code that sends [`crate::BatchBody`] requests itself.
pub fn batch_url(host: &str) -> Result<String, ConfigError> {
    let base = match host.trim().to_ascii_lowercase().as_str() {
        "oregon" | "us" => OREGON_HOST.to_owned(),
        "dublin" | "eu" => DUBLIN_HOST.to_owned(),
        _ => {
            let invalid = |reason| ConfigError::InvalidHost {
                host: host.to_owned(),
                reason,
            };
            let rest = host
                .strip_prefix("https://")
                .or_else(|| host.strip_prefix("http://"))
                .ok_or_else(|| invalid("it must start with http:// or https://"))?;
            let authority = rest.split('/').next().unwrap_or_default();
            if authority.is_empty() || authority.contains(char::is_whitespace) {
                return Err(invalid("it has no host name"));
            }
            if host.contains(['?', '#']) {
                return Err(invalid("it must not have a query or fragment"));
            }
            host.trim_end_matches('/').to_owned()
        }
    };
    Ok(format!("{base}/v1/batch"))
}

impl Builder {
    /// Keep accepted events in files in `dir` until they are delivered, so that they survive
    /// the process dying at any instant (off by default). The crate documentation's "The
    /// spool" says what survives what. Creates `dir` (readable by its owner only) if it does
    /// not exist; refuses a path that exists and is not a directory. [`Builder::build`] then
    /// takes the directory (one client per directory), delivers what earlier processes left
    /// in it, and refuses a spool written for another write key or host.
    ///
    /// Excludes [`Builder::defer_encoding`]: the call must encode a message to write it.
    pub fn spool_dir(mut self, dir: impl Into<PathBuf>) -> Result<Self, ConfigError> {
        let dir = dir.into();
        let refuse = |reason: String| ConfigError::SpoolDir {
            path: dir.clone(),
            reason,
        };
        if dir.as_os_str().is_empty() {
            return Err(refuse("the path is empty".into()));
        }
        if dir.exists() && !dir.is_dir() {
            return Err(refuse("it exists and is not a directory".into()));
        }
        create_dir_private(&dir).map_err(|error| refuse(error.to_string()))?;
        self.spool.dir = Some(dir);
        Ok(self)
    }

    /// How often accepted events are synced to disk while they arrive: what power loss (not
    /// a crash of the process, which loses nothing) may cost. `Duration::ZERO` syncs before
    /// each call returns: nothing accepted is lost to power loss, but every call waits for the
    /// disk (milliseconds on most disks), so use it only for rare, precious events.
    pub fn spool_sync_interval(mut self, interval: Duration) -> Self {
        self.spool.sync_interval = interval;
        self
    }

    /// The spool's size limit: bytes of accepted events not yet settled (each event's
    /// encoded size plus 12). With a spool it replaces [`Builder::max_queue_bytes`] as the
    /// bound on what is queued; when it is full, a call does what [`Builder::overflow`] says.
    /// The files take up to two segments (at most 4 MiB) more.
    pub fn spool_max_bytes(mut self, bytes: u64) -> Self {
        self.spool.max_bytes = bytes;
        self
    }

    /// For the crash test only: the call writing the `nth` event into the spool (counting
    /// from 1, recovered ones included) writes half of it and aborts the process.
    #[doc(hidden)]
    pub fn spool_abort_in_write(mut self, nth: u64) -> Self {
        self.spool.abort_in_write = Some(nth);
        self
    }
}

/// The spool's configuration, if there is one, checked against the rest of the settings.
fn validate_spool(
    settings: SpoolSettings,
    defer_encoding: bool,
    batch_url: &str,
) -> Result<Option<SpoolConfig>, ConfigError> {
    let Some(dir) = settings.dir else {
        return Ok(None);
    };
    if defer_encoding {
        return Err(ConfigError::SpoolWithDeferredEncoding);
    }
    if settings.max_bytes < MIN_SPOOL_MAX_BYTES {
        return Err(ConfigError::OutOfRange {
            setting: "spool_max_bytes",
            expected: format!("at least {MIN_SPOOL_MAX_BYTES}"),
        });
    }
    if batch_url.len() > HOST_MAX {
        return Err(ConfigError::OutOfRange {
            setting: "host",
            expected: format!(
                "at most {} bytes long with a spool (its files record it)",
                HOST_MAX - "/v1/batch".len()
            ),
        });
    }
    Ok(Some(SpoolConfig {
        dir,
        sync_interval: settings.sync_interval,
        max_bytes: settings.max_bytes,
        abort_in_write: settings.abort_in_write,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BuildError;

    #[test]
    fn hosts_resolve_to_batch_urls() {
        assert_eq!(
            batch_url("oregon").as_deref(),
            Ok("https://api.segment.io/v1/batch")
        );
        assert_eq!(
            batch_url("Dublin").as_deref(),
            Ok("https://events.eu1.segmentapis.com/v1/batch")
        );
        assert_eq!(
            batch_url("http://127.0.0.1:8080/").as_deref(),
            Ok("http://127.0.0.1:8080/v1/batch")
        );
        assert_eq!(
            batch_url("https://proxy.example/segment").as_deref(),
            Ok("https://proxy.example/segment/v1/batch")
        );
        for bad in ["", "api.segment.io", "ftp://x", "http://", "http://h?x=1"] {
            assert!(
                matches!(batch_url(bad), Err(ConfigError::InvalidHost { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn build_rejects_out_of_range_settings() {
        let check = |builder: Builder, setting: &str| match builder.build() {
            Err(BuildError::Config(ConfigError::OutOfRange { setting: s, .. })) => {
                assert_eq!(s, setting)
            }
            other => panic!("{setting}: {:?}", other.map(|_| ())),
        };
        check(Builder::new("k").flush_at(0), "flush_at");
        check(Builder::new("k").flush_at(2501), "flush_at");
        check(Builder::new("k").max_batch_bytes(1000), "max_batch_bytes");
        check(Builder::new("k").max_queue_bytes(10), "max_queue_bytes");
        check(Builder::new("k").gzip_level(0), "gzip_level");
        check(Builder::new("k").gzip_level(10), "gzip_level");
        check(
            Builder::new("k").flush_interval(Duration::ZERO),
            "flush_interval",
        );
        check(
            Builder::new("k").backoff(Duration::from_secs(2), Duration::from_secs(1)),
            "backoff",
        );
        assert!(matches!(
            Builder::new("").build(),
            Err(BuildError::Config(ConfigError::EmptyWriteKey))
        ));
        assert!(matches!(
            Builder::new("k")
                .default_context(serde_json::json!([1]))
                .build(),
            Err(BuildError::Config(ConfigError::ContextNotAnObject))
        ));
    }

    #[test]
    fn debug_output_masks_the_write_key() {
        let shown = format!("{:?}", Builder::new("sk_live_abcdefghijklmnop"));
        assert!(!shown.contains("abcdefghijklmnop"), "{shown}");
        assert!(shown.contains("sk_l… (24 chars)"), "{shown}");
    }
}
