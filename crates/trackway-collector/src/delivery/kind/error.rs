//! Why a destination could not be built or claimed.

use std::path::PathBuf;

/// A destination that cannot be built from its configuration, or whose files another
/// collector holds. Each message says what to change.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DestinationError {
    /// A webhook's `secret` is empty or blank, so signatures would prove nothing.
    #[error(
        "a webhook's secret is empty: anyone could sign requests with it; set a long random secret, or remove the line to send unsigned requests"
    )]
    EmptySecret,
    /// A webhook's `url` is not an `http` or `https` URL.
    #[error("webhook url {url:?} must start with http:// or https://")]
    WebhookUrl {
        /// The configured URL.
        url: String,
    },
    /// A forward destination's `host` is not a region name or an `http(s)` URL of a host.
    #[error("forward: {0}")]
    ForwardHost(#[source] trackway::ConfigError),
    /// A file destination's `max_bytes` is zero, so no line would fit in a file.
    #[error("a file destination's max_bytes must be above zero")]
    ZeroMaxBytes,
    /// A file destination's directory cannot be created.
    #[error("cannot create {}: {source}; create it, or give the destination another dir", dir.display())]
    CreateDir {
        /// The configured directory.
        dir: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// Another collector (or another destination, on a file system that ignores case)
    /// writes the files a file destination would write.
    #[error(
        "{}/{prefix}-*.jsonl are being written by another collector (or, on a file system that ignores case, for a source whose name differs only in case): stop it, or give this destination another dir",
        dir.display()
    )]
    FilesInUse {
        /// The destination's directory.
        dir: PathBuf,
        /// The file names' prefix, from the source's name.
        prefix: String,
    },
    /// A file destination's lock file cannot be created or locked.
    #[error("cannot lock {}: {source}", path.display())]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The thread that writes every stdout destination's lines could not start.
    #[error("cannot start the stdout writer thread: {0}")]
    StdoutThread(#[source] std::io::Error),
}
