//! Where the events live, as the operator names it: `--store URL`, `TRACKWAY_STORE`, or
//! `store = "..."` in the config file.
//!
//! - `sqlite://DIR` (or no store at all): the embedded store in the data directory `DIR`.
//! - `postgres://user:password@host:port/database` (or `postgresql://`): the database shared
//!   by every collector of a group.
//!
//! A URL may carry a password, so [`StoreLocation`]'s `Display` and `Debug` mask it: printing
//! one (at start, in an error) never shows it.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// A parsed `--store` value.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreLocation {
    /// The embedded SQLite store in this data directory.
    Sqlite(PathBuf),
    /// A PostgreSQL database, by its connection URL (which may hold a password).
    Postgres(String),
}

/// A `--store` value that names no store this release knows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown store {0}: give sqlite://DIR or postgres://user@host/database")]
pub struct UnknownStore(String);

impl FromStr for StoreLocation {
    type Err = UnknownStore;

    fn from_str(text: &str) -> Result<StoreLocation, UnknownStore> {
        if let Some(dir) = text.strip_prefix("sqlite://") {
            if dir.is_empty() {
                return Err(UnknownStore(format!("{text:?} (no directory)")));
            }
            return Ok(StoreLocation::Sqlite(PathBuf::from(dir)));
        }
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            return Ok(StoreLocation::Postgres(text.to_owned()));
        }
        // Only the scheme is named: the rest may hold a password.
        let scheme = text.split_once("://").map_or("", |(scheme, _)| scheme);
        Err(UnknownStore(format!("with scheme {scheme:?}")))
    }
}

impl fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreLocation::Sqlite(dir) => write!(f, "sqlite://{}", dir.display()),
            StoreLocation::Postgres(url) => f.write_str(&mask_password(url)),
        }
    }
}

impl fmt::Debug for StoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoreLocation({self})")
    }
}

/// `url` with the password of its `user:password@` part, if any, replaced by `***`; a
/// `password=` query parameter too.
pub fn mask_password(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let (authority_end, _) = rest
        .char_indices()
        .find(|(_, c)| matches!(c, '/' | '?'))
        .unwrap_or((rest.len(), '/'));
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((user_info, host)) => match user_info.split_once(':') {
            Some((user, _password)) => format!("{user}:***@{host}"),
            None => authority.to_owned(),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_owned(),
    };
    if scheme.is_empty() {
        format!("{authority}{tail}")
    } else {
        format!("{scheme}://{authority}{tail}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_is_never_shown() {
        let location: StoreLocation = "postgres://trackway:s3cr3t@db.internal:5432/trackway"
            .parse()
            .expect("a postgres url");
        for shown in [location.to_string(), format!("{location:?}")] {
            assert!(!shown.contains("s3cr3t"), "{shown}");
            assert!(
                shown.contains("trackway:***@db.internal:5432/trackway"),
                "{shown}"
            );
        }
        let query = mask_password("postgresql://db/t?user=me&password=s3cr3t&sslmode=require");
        assert_eq!(
            query,
            "postgresql://db/t?user=me&password=***&sslmode=require"
        );
        assert_eq!(mask_password("postgres://me@db/t"), "postgres://me@db/t");
        let refused = "mysql://root:s3cr3t@db/t"
            .parse::<StoreLocation>()
            .expect_err("not a store we know");
        assert!(!refused.to_string().contains("s3cr3t"), "{refused}");
    }

    #[test]
    fn sqlite_names_a_data_directory() {
        assert_eq!(
            "sqlite:///var/lib/trackway".parse::<StoreLocation>(),
            Ok(StoreLocation::Sqlite("/var/lib/trackway".into()))
        );
        assert!("sqlite://".parse::<StoreLocation>().is_err());
    }
}
