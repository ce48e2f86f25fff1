//! The collector's configuration: where to store, which sources (and their write keys) to
//! accept, the admin token.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

pub(crate) mod origin;
pub(crate) mod public_url;

pub use crate::client_ip::Cidr;
use crate::delivery::kind::{DestinationConfig, DestinationError, Kind};
use crate::storage::sqlite::DEFAULT_DEDUP_WINDOW;
use crate::storage::{StoreLocation, UnknownStore};

/// A source: one application or service sending events, with its write keys.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// A name unique among sources, shown in the debugger and the admin API.
    pub name: String,
    /// Keys that authenticate as this source (several, to rotate keys without downtime).
    pub write_keys: Vec<String>,
    /// Where this source's events are delivered.
    #[serde(default, rename = "destination")]
    pub destinations: Vec<DestinationConfig>,
    /// The origins (`https://shop.example`) whose pages may send as this source and read its
    /// settings; `None` allows any origin, as Segment does: a browser write key is public
    /// anyway. A request from a page elsewhere (its `Origin` header) is refused with a 403.
    #[serde(default)]
    pub allowed_origins: Option<Vec<String>>,
    /// Whether the collector adds `context.ip` (the sender's address) to messages that have
    /// none. Turn off where privacy law forbids collecting it.
    #[serde(default = "collect_ip_default")]
    pub collect_ip: bool,
}

/// Default [`Source::collect_ip`]: on, as Segment's API does.
fn collect_ip_default() -> bool {
    true
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source")
            .field("name", &self.name)
            .field(
                "write_keys",
                &format_args!("<{} redacted>", self.write_keys.len()),
            )
            .field("destinations", &self.destinations)
            .field("allowed_origins", &self.allowed_origins)
            .field("collect_ip", &self.collect_ip)
            .finish()
    }
}

impl Source {
    /// A source with no destinations.
    pub fn new(name: impl Into<String>, write_keys: Vec<String>) -> Source {
        Source {
            name: name.into(),
            write_keys,
            destinations: Vec::new(),
            allowed_origins: None,
            collect_ip: true,
        }
    }
}

/// Everything the collector needs to run.
#[derive(Clone)]
pub struct Config {
    /// Directory of the embedded store.
    pub data_dir: PathBuf,
    /// Accepted sources.
    pub sources: Vec<Source>,
    /// Token of the admin API and the debugger (`Authorization: Bearer <token>`).
    pub admin_token: String,
    /// Same source and messageId within this window: stored once.
    pub dedup_window: Duration,
    /// A client must send its request headers within this long (slowloris).
    pub header_timeout: Duration,
    /// A client must send its whole body within this long once headers are in.
    pub body_timeout: Duration,
    /// Delete events older than this once every destination of their source is done with
    /// them; `None` keeps everything.
    pub retention: Option<Duration>,
    /// How often retention runs.
    pub prune_interval: Duration,
    /// The database shared by a group of collectors; `None`: the embedded store in
    /// [`Config::data_dir`]. With a database, delivery bookkeeping lives there too; the data
    /// directory keeps the collector's lock.
    pub postgres: Option<String>,
    /// The URL browsers reach this collector at (`https://collect.example.com`), which the
    /// settings endpoint hands analytics.js as its `apiHost`; `None` answers with the host
    /// each settings request was sent to, over `http`.
    pub public_url: Option<String>,
    /// Proxies whose `X-Forwarded-For` is believed: the client address of a request that
    /// comes through one of them is read from that header. Empty (the default): the header
    /// is ignored, since any client can send it.
    pub trusted_proxies: Vec<Cidr>,
}

/// Default [`Config::prune_interval`].
pub const DEFAULT_PRUNE_INTERVAL: Duration = Duration::from_secs(60 * 60);

/// Default [`Config::header_timeout`]: generous for any real client, short enough that idle
/// half-open connections cannot pile up.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Default [`Config::body_timeout`]: 500 KB over a slow mobile link fits easily.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sources: Vec<(&str, usize)> = self
            .sources
            .iter()
            .map(|s| (s.name.as_str(), s.write_keys.len()))
            .collect();
        f.debug_struct("Config")
            .field("data_dir", &self.data_dir)
            .field("sources (name, keys)", &sources)
            .field("admin_token", &"<redacted>")
            .field("dedup_window", &self.dedup_window)
            .field("header_timeout", &self.header_timeout)
            .field("body_timeout", &self.body_timeout)
            .field("retention", &self.retention)
            .field(
                "postgres",
                &self.postgres.as_deref().map(crate::storage::mask_password),
            )
            .field("public_url", &self.public_url)
            .field("trusted_proxies", &self.trusted_proxies)
            .finish_non_exhaustive()
    }
}

/// A configuration the collector cannot run with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read {path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        error: String,
    },
    /// The config file is not valid.
    #[error("{path}: {error}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the line.
        error: String,
    },
    /// No source, so no write key would be accepted.
    #[error("no source is configured: give --write-key or a config file with [[source]] entries")]
    NoSources,
    /// A source is misconfigured.
    #[error("source {source_name:?}: {problem}")]
    Source {
        /// The source.
        source_name: String,
        /// What is wrong.
        problem: String,
    },
    /// The operating system gave no random bytes for the admin token.
    #[error("cannot generate an admin token: {0}")]
    Random(String),
    /// Retention shorter than the dedup window would let a late retry be stored twice.
    #[error("retention ({retention:?}) must be at least the dedup window ({dedup:?})")]
    RetentionBelowDedupWindow {
        /// The configured retention.
        retention: Duration,
        /// The dedup window.
        dedup: Duration,
    },
    /// A destination cannot be built.
    #[error("source {source_name:?}, destination {destination:?}: {error}")]
    Destination {
        /// The source it delivers.
        source_name: String,
        /// The destination's name.
        destination: String,
        /// What is wrong, and what to change.
        #[source]
        error: DestinationError,
    },
    /// The admin token is too short to be a secret, or has characters a client cannot send
    /// in an `Authorization` header as they are (whitespace, which is trimmed, or anything
    /// but printable ASCII).
    #[error(
        "the admin token must be at least {MIN_ADMIN_TOKEN} characters of printable ASCII, none of them whitespace"
    )]
    WeakAdminToken,
    /// The public URL is not an `http` or `https` URL of a host.
    #[error(
        "the public URL {0:?} must be http:// or https:// and a host, like https://collect.example.com"
    )]
    PublicUrl(String),
}

/// Shortest admin token accepted.
pub const MIN_ADMIN_TOKEN: usize = 16;

/// The config file's shape.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    source: Vec<Source>,
    /// `sqlite://DIR` or `postgres://...`, as `--store`.
    #[serde(default)]
    store: Option<String>,
}

fn read_file(path: &Path) -> Result<File, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
        path: path.to_owned(),
        error: e.to_string(),
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        error: e.to_string(),
    })
}

impl Config {
    /// A configuration with the default dedup window and timeouts.
    pub fn new(data_dir: impl Into<PathBuf>, sources: Vec<Source>, admin_token: String) -> Config {
        Config {
            data_dir: data_dir.into(),
            sources,
            admin_token,
            dedup_window: DEFAULT_DEDUP_WINDOW,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            retention: None,
            prune_interval: DEFAULT_PRUNE_INTERVAL,
            postgres: None,
            public_url: None,
            trusted_proxies: Vec::new(),
        }
    }

    /// Points the configuration at `location`: a PostgreSQL database, or the embedded store
    /// in another data directory.
    pub fn set_store(&mut self, location: StoreLocation) {
        match location {
            StoreLocation::Sqlite(dir) => {
                self.data_dir = dir;
                self.postgres = None;
            }
            StoreLocation::Postgres(url) => self.postgres = Some(url),
        }
    }

    /// The `store = "..."` entry of a TOML config file, if it has one.
    pub fn store_from_file(path: &Path) -> Result<Option<StoreLocation>, ConfigError> {
        let file = read_file(path)?;
        file.store
            .map(|text| {
                text.parse().map_err(|e: UnknownStore| ConfigError::Parse {
                    path: path.to_owned(),
                    error: e.to_string(),
                })
            })
            .transpose()
    }

    /// Reads the `[[source]]` entries of a TOML file:
    ///
    /// ```toml
    /// [[source]]
    /// name = "web"
    /// write_keys = ["wk_live_..."]
    /// ```
    pub fn sources_from_file(path: &Path) -> Result<Vec<Source>, ConfigError> {
        Ok(read_file(path)?.source)
    }

    /// Checks the configuration and indexes write keys to source names.
    pub(crate) fn key_index(&self) -> Result<HashMap<String, Arc<str>>, ConfigError> {
        // Sixteen spaces are sixteen characters, but no secret, and a client could never send
        // them: the server trims what it is sent, and a header holds printable ASCII.
        let sendable = self.admin_token.bytes().all(|b| b.is_ascii_graphic());
        if !sendable || self.admin_token.len() < MIN_ADMIN_TOKEN {
            return Err(ConfigError::WeakAdminToken);
        }
        if self.sources.is_empty() {
            return Err(ConfigError::NoSources);
        }
        if let Some(retention) = self.retention
            && retention < self.dedup_window
        {
            return Err(ConfigError::RetentionBelowDedupWindow {
                retention,
                dedup: self.dedup_window,
            });
        }
        if let Some(url) = &self.public_url {
            public_url::PublicUrl::parse(url)?;
        }
        let mut keys = HashMap::new();
        let mut names = std::collections::HashSet::new();
        // Each file destination writes `<dir>/<prefix>-<day>.jsonl`: two that share those
        // files would cut each other's lines when a write fails.
        let mut files: HashMap<(PathBuf, String), String> = HashMap::new();
        for source in &self.sources {
            let problem = |problem: &str| ConfigError::Source {
                source_name: source.name.clone(),
                problem: problem.to_owned(),
            };
            if source.name.trim().is_empty() {
                return Err(problem("the name is empty"));
            }
            if !names.insert(source.name.as_str()) {
                return Err(problem("the name is used twice"));
            }
            if source.write_keys.is_empty() {
                return Err(problem("it has no write key"));
            }
            for origin in source.allowed_origins.iter().flatten() {
                if origin::parse_origin(origin).is_none() {
                    return Err(problem(&format!(
                        "allowed origin {origin:?} is not a scheme and host like https://shop.example"
                    )));
                }
            }
            let name: Arc<str> = Arc::from(source.name.as_str());
            for key in &source.write_keys {
                if key.is_empty() || key.contains(':') {
                    return Err(problem("a write key is empty or contains ':'"));
                }
                if keys.insert(key.clone(), Arc::clone(&name)).is_some() {
                    return Err(problem("a write key is also used by another source"));
                }
            }
            let mut destinations = std::collections::HashSet::new();
            for destination in &source.destinations {
                if destination.name.is_empty() || !destinations.insert(destination.name.as_str()) {
                    return Err(problem("destination names must be non-empty and unique"));
                }
                // A destination's cursor and dead letters are keyed `<source>/<destination>`:
                // with no '/' in the second part, no two pairs share a key.
                if destination.name.contains('/') {
                    return Err(problem(&format!(
                        "destination {:?}: a destination name cannot contain '/'",
                        destination.name
                    )));
                }
                if let Kind::File { dir, .. } = &destination.kind {
                    // Resolved as far as it exists (`..`, symbolic links), else made absolute.
                    let dir = std::fs::canonicalize(dir)
                        .or_else(|_| std::path::absolute(dir))
                        .unwrap_or_else(|_| dir.clone());
                    let here = format!("{}/{}", source.name, destination.name);
                    let prefix = crate::delivery::kind::file::file_prefix(&source.name);
                    if let Some(other) = files.insert((dir, prefix), here) {
                        return Err(problem(&format!(
                            "destination {:?} would write the same files as {other:?} \
                             (the same dir, and source names that make the same file names): \
                             give it a dir of its own",
                            destination.name
                        )));
                    }
                }
            }
        }
        Ok(keys)
    }
}

/// A fresh random admin token: 32 hex characters, 128 bits.
///
/// The bytes come from the operating system's secure generator: the token is a secret.
pub fn generate_admin_token() -> Result<String, ConfigError> {
    let mut bytes = [0_u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| ConfigError::Random(e.to_string()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// What the request path needs of a source besides its name: built once at start.
#[derive(Debug, Clone)]
pub(crate) struct SourcePolicy {
    /// [`Source::allowed_origins`], normalized (`scheme://host[:port]`, lower case); `None`:
    /// any origin.
    pub(crate) allowed_origins: Option<std::collections::HashSet<String>>,
    /// [`Source::collect_ip`].
    pub(crate) collect_ip: bool,
}

impl Config {
    /// Each source's [`SourcePolicy`], by source name. Origins were checked by `key_index`.
    pub(crate) fn policies(&self) -> HashMap<Arc<str>, SourcePolicy> {
        self.sources
            .iter()
            .map(|source| {
                let allowed_origins = source.allowed_origins.as_ref().map(|origins| {
                    origins
                        .iter()
                        .filter_map(|o| origin::parse_origin(o))
                        .collect()
                });
                let policy = SourcePolicy {
                    allowed_origins,
                    collect_ip: source.collect_ip,
                };
                (Arc::from(source.name.as_str()), policy)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn browser_settings_of_a_source_are_read_and_checked() {
        let file: File = toml::from_str(
            r#"
            [[source]]
            name = "shop"
            write_keys = ["wk-shop-0123"]
            allowed_origins = ["https://Shop.Example/"]
            collect_ip = false

            [[source]]
            name = "server"
            write_keys = ["wk-server-0123"]
            "#,
        )
        .expect("valid");
        let [shop, server] = &file.source[..] else {
            panic!("two sources")
        };
        assert_eq!(
            shop.allowed_origins,
            Some(vec!["https://Shop.Example/".to_owned()])
        );
        assert!(!shop.collect_ip);
        // Unset: any origin, and addresses collected, as Segment does.
        assert_eq!(
            (server.allowed_origins.as_ref(), server.collect_ip),
            (None, true)
        );
        let mut config = Config::new("unused", file.source, "a".repeat(MIN_ADMIN_TOKEN));
        let policies = config.policies();
        let origins = policies["shop"].allowed_origins.as_ref().expect("a list");
        assert!(origins.contains("https://shop.example"), "normalized");
        config.sources[0].allowed_origins = Some(vec!["shop.example".into()]);
        let error = config.key_index().expect_err("not an origin").to_string();
        assert!(error.contains("is not a scheme and host"), "{error}");
        config.sources[0].allowed_origins = None;
        config.public_url = Some("collect.example.com".into());
        let error = config.key_index().expect_err("no scheme").to_string();
        assert!(error.contains("must be http:// or https://"), "{error}");
    }
}
