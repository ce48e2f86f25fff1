//! Why a store (or the delivery bookkeeping beside it) failed, in the terms a caller acts on.
//!
//! The variants follow what the collector does with them. Ingest answers every store error
//! with a 503 and `Retry-After` (the client keeps the events and retries; a 200 would lose
//! them), and `/readyz` turns unready. The admin API answers 503 with `Retry-After` for the
//! errors that clear by themselves or by an operator freeing room ([`StoreError::retry_later`])
//! and 500 for the rest, which need someone to look. Opening a collector fails with the
//! variant's message, which says what to do.

use std::path::PathBuf;
use std::sync::Arc;

/// A store failed; the message says what happened and what to do.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store cannot be reached or is too busy to answer in time: a connection refused or
    /// lost, no pooled connection free within the wait, the database locked, a commit past its
    /// timeout. Usually clears by itself: retry later.
    #[error("the store is unavailable ({detail}); retry later")]
    Unavailable {
        /// What failed, as the database or driver said it.
        detail: String,
    },
    /// There is no room to write: the disk, or the database's quota, is full. Writes resume
    /// once room is freed, without a restart.
    #[error("the store is full ({detail}); free disk space or raise the database's quota")]
    Full {
        /// What failed, as the database said it.
        detail: String,
    },
    /// The store refuses writes: a read-only file or file system, or a database that is a
    /// standby or in recovery.
    #[error(
        "the store is read-only ({detail}); make the data directory writable, or point the collector at the primary database"
    )]
    ReadOnly {
        /// What failed, as the database said it.
        detail: String,
    },
    /// The stored data is damaged, or the file is not a database at all.
    #[error(
        "the store's data is corrupt ({detail}); stop the collector and restore the data from a backup"
    )]
    Corrupt {
        /// What the database found.
        detail: String,
    },
    /// The store is one this collector must not run on: its schema was written for a newer
    /// release, or it lacks the durability settings the collector's answers rely on.
    #[error("the store cannot be used by this collector: {detail}")]
    Incompatible {
        /// Which version or setting, and what to do about it.
        detail: String,
    },
    /// The database refused the connection's settings: not a PostgreSQL URL, a user or
    /// password it does not accept, a database that does not exist.
    #[error("the database refused the connection settings ({detail}); check the --store URL")]
    Misconfigured {
        /// What the database or URL parser said (never the URL, which may hold a password).
        detail: String,
    },
    /// A file system operation on the store's files failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done (`create the data directory`, `lock`).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// A part of the store's machinery stopped or could not start: its writer thread, its
    /// runtime, a task of it. The store will not recover: restart the collector.
    #[error("the store's {part} stopped ({detail}); restart the collector")]
    Stopped {
        /// Which part.
        part: &'static str,
        /// Why, where known.
        detail: String,
    },
    /// The database answered an operation with an error none of the others describe (a bug
    /// more likely than an outage): the detail is its message, to report.
    #[error("the store failed: {detail}")]
    Failed {
        /// The database's message.
        detail: String,
    },
}

impl StoreError {
    /// Whether the same operation may succeed later without a restart or a repair: the store
    /// is unavailable, full or read-only. The admin API answers these 503 with
    /// `Retry-After`, the others 500.
    pub fn retry_later(&self) -> bool {
        matches!(
            self,
            StoreError::Unavailable { .. } | StoreError::Full { .. } | StoreError::ReadOnly { .. }
        )
    }

    /// A file system error on `path` while doing `action`.
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        error: std::io::Error,
    ) -> Self {
        StoreError::Io {
            action,
            path: path.into(),
            source: Arc::new(error),
        }
    }

    /// `part` of the store stopped, for `detail`.
    pub(crate) fn stopped(part: &'static str, detail: impl ToString) -> Self {
        StoreError::Stopped {
            part,
            detail: detail.to_string(),
        }
    }

    /// A SQLite error, by its primary result code.
    pub(crate) fn sqlite(error: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode;
        let detail = error.to_string();
        match error.sqlite_error_code() {
            Some(ErrorCode::DiskFull) => StoreError::Full { detail },
            Some(ErrorCode::ReadOnly) => StoreError::ReadOnly { detail },
            Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => {
                StoreError::Corrupt { detail }
            }
            Some(
                ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::SystemIoFailure
                | ErrorCode::CannotOpen
                | ErrorCode::OutOfMemory,
            ) => StoreError::Unavailable { detail },
            _ => StoreError::Failed { detail },
        }
    }

    /// A tokio-postgres error, by its SQLSTATE, with the database's own message when it gave
    /// one (never the connection URL, which may hold a password).
    pub(crate) fn postgres(error: &tokio_postgres::Error) -> Self {
        let Some(db) = error.as_db_error() else {
            // No answer from the database: the connection failed, closed or timed out.
            return StoreError::Unavailable {
                detail: format!("postgres: {error}"),
            };
        };
        let code = db.code().code();
        let detail = format!("postgres: {} ({code})", db.message());
        match code {
            "53100" => StoreError::Full { detail },
            "25006" => StoreError::ReadOnly { detail },
            "XX001" | "XX002" => StoreError::Corrupt { detail },
            "3D000" => StoreError::Misconfigured { detail },
            // Connection exceptions, insufficient resources, the server shutting down or
            // starting, conflicts a retry resolves (serialization, deadlock, lock wait,
            // cancelled statement).
            _ if code.starts_with("08") || code.starts_with("53") || code.starts_with("57") => {
                StoreError::Unavailable { detail }
            }
            "40001" | "40P01" | "55P03" => StoreError::Unavailable { detail },
            _ if code.starts_with("28") => StoreError::Misconfigured { detail },
            _ => StoreError::Failed { detail },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_codes_become_what_to_do() {
        let code = |code| {
            StoreError::sqlite(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(code),
                None,
            ))
        };
        assert!(matches!(
            code(rusqlite::ffi::SQLITE_FULL),
            StoreError::Full { .. }
        ));
        assert!(matches!(
            code(rusqlite::ffi::SQLITE_READONLY),
            StoreError::ReadOnly { .. }
        ));
        assert!(matches!(
            code(rusqlite::ffi::SQLITE_NOTADB),
            StoreError::Corrupt { .. }
        ));
        assert!(matches!(
            code(rusqlite::ffi::SQLITE_BUSY),
            StoreError::Unavailable { .. }
        ));
        assert!(matches!(
            code(rusqlite::ffi::SQLITE_CONSTRAINT),
            StoreError::Failed { .. }
        ));
        assert!(code(rusqlite::ffi::SQLITE_FULL).retry_later());
        assert!(!code(rusqlite::ffi::SQLITE_CORRUPT).retry_later());
    }
}
