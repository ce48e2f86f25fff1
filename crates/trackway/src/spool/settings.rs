//! The builder's spool settings, with their defaults. Apart from `config.rs` because they
//! belong to the spool; the builder holds them as one field, and its methods (`spool_dir`,
//! `spool_sync_interval`, `spool_max_bytes`) and their check live with the other settings'.

use std::path::PathBuf;
use std::time::Duration;

/// Default [`Builder::spool_sync_interval`](crate::Builder::spool_sync_interval): power loss costs at most the last second of
/// accepted events, for one `fdatasync` a second while events arrive.
pub const DEFAULT_SPOOL_SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// Default [`Builder::spool_max_bytes`](crate::Builder::spool_max_bytes): 256 MiB of disk holds about 500,000 realistic events,
/// hours of a busy service's traffic through an outage, and stays small beside a server's
/// disk.
pub const DEFAULT_SPOOL_MAX_BYTES: u64 = 256 * 1024 * 1024;

/// The smallest [`Builder::spool_max_bytes`](crate::Builder::spool_max_bytes): four segments of the smallest size.
pub const MIN_SPOOL_MAX_BYTES: u64 = 1024 * 1024;

/// The spool settings as given to the builder.
#[derive(Debug, Clone)]
pub(crate) struct SpoolSettings {
    pub(crate) dir: Option<PathBuf>,
    pub(crate) sync_interval: Duration,
    pub(crate) max_bytes: u64,
    pub(crate) abort_in_write: Option<u64>,
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
