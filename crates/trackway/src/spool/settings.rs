//! The builder's spool settings, with their defaults. Apart from `config.rs` because they
//! belong to the spool; the builder holds them as one field.

use std::path::PathBuf;
use std::time::Duration;

use crate::config::{Builder, ConfigError};

use super::SpoolConfig;

/// Default [`Builder::spool_sync_interval`]: power loss costs at most the last second of
/// accepted events, for one `fdatasync` a second while events arrive.
pub const DEFAULT_SPOOL_SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// Default [`Builder::spool_max_bytes`]: 256 MiB of disk holds about 500,000 realistic events,
/// hours of a busy service's traffic through an outage, and stays small beside a server's
/// disk.
pub const DEFAULT_SPOOL_MAX_BYTES: u64 = 256 * 1024 * 1024;

/// The smallest [`Builder::spool_max_bytes`]: four segments of the smallest size.
pub const MIN_SPOOL_MAX_BYTES: u64 = 1024 * 1024;

/// The spool settings as given to the builder.
#[derive(Debug, Clone)]
pub(crate) struct SpoolSettings {
    dir: Option<PathBuf>,
    sync_interval: Duration,
    max_bytes: u64,
    abort_in_write: Option<u64>,
}

impl Default for SpoolSettings {
    fn default() -> SpoolSettings {
        SpoolSettings {
            dir: None,
            sync_interval: DEFAULT_SPOOL_SYNC_INTERVAL,
            max_bytes: DEFAULT_SPOOL_MAX_BYTES,
            abort_in_write: None,
        }
    }
}

impl SpoolSettings {
    /// The spool's configuration, if there is one, checked against the rest of the settings.
    pub(crate) fn validate(
        self,
        defer_encoding: bool,
        batch_url: &str,
    ) -> Result<Option<SpoolConfig>, ConfigError> {
        let Some(dir) = self.dir else {
            return Ok(None);
        };
        if defer_encoding {
            return Err(ConfigError::SpoolWithDeferredEncoding);
        }
        if self.max_bytes < MIN_SPOOL_MAX_BYTES {
            return Err(ConfigError::OutOfRange {
                setting: "spool_max_bytes",
                expected: format!("at least {MIN_SPOOL_MAX_BYTES}"),
            });
        }
        if batch_url.len() > super::HOST_MAX {
            return Err(ConfigError::OutOfRange {
                setting: "host",
                expected: format!(
                    "at most {} bytes long with a spool (its files record it)",
                    super::HOST_MAX - "/v1/batch".len()
                ),
            });
        }
        Ok(Some(SpoolConfig {
            dir,
            sync_interval: self.sync_interval,
            max_bytes: self.max_bytes,
            abort_in_write: self.abort_in_write,
        }))
    }
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
        super::create_dir_private(&dir).map_err(|error| refuse(error.to_string()))?;
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
