//! Exclusive locks on the files a collector writes, so that a second collector started on
//! the same data directory, or writing the same file destination, stops with a clear error
//! instead of running beside the first (every event delivered twice, two sets of counts, two
//! writers appending to one file).
//!
//! A lock is the operating system's advisory file lock (`flock` on Unix, `LockFileEx` on
//! Windows, through `std::fs::File::try_lock`): the kernel releases it when its holder exits,
//! however it exits, so a crash never leaves a stale lock behind. A data directory's lock
//! file keeps the holder's process id, for the error message only; a file destination's stays
//! empty, so that a consumer reading every file in its directory as JSON lines finds none in
//! it.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};

/// A held lock; released when dropped.
#[derive(Debug)]
pub(crate) struct FileLock {
    _file: File,
}

/// Why a lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LockError {
    /// Another process (or another part of this one) holds it.
    #[error("{} is locked by {}", path.display(), holder(*pid))]
    Held {
        /// The lock file.
        path: PathBuf,
        /// The holder's process id, as it wrote it, if it could be read.
        pid: Option<u32>,
    },
    /// The lock file could not be created or locked.
    #[error("cannot lock {}: {source}", path.display())]
    Io {
        /// The lock file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
}

/// How an error names a lock's holder.
pub(crate) fn holder(pid: Option<u32>) -> String {
    match pid {
        Some(pid) if pid == std::process::id() => format!("this process ({pid})"),
        Some(pid) => format!("process {pid}"),
        None => "another process".to_owned(),
    }
}

impl FileLock {
    /// Takes the lock on `path` (created if needed) without waiting, and writes this
    /// process's id into it. `Ok(None)` where the file system has no locks: the caller goes on
    /// unprotected, as a warning says.
    pub(crate) fn acquire(path: &Path) -> Result<Option<FileLock>, LockError> {
        FileLock::take(path, true)
    }

    /// Like [`FileLock::acquire`], leaving the file empty.
    pub(crate) fn acquire_empty(path: &Path) -> Result<Option<FileLock>, LockError> {
        FileLock::take(path, false)
    }

    fn take(path: &Path, record_pid: bool) -> Result<Option<FileLock>, LockError> {
        let io = |source| LockError::Io {
            path: path.to_owned(),
            source,
        };
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let pid = std::fs::read_to_string(path)
                    .ok()
                    .and_then(|text| text.trim().parse().ok());
                return Err(LockError::Held {
                    path: path.to_owned(),
                    pid,
                });
            }
            Err(TryLockError::Error(e)) if e.kind() == std::io::ErrorKind::Unsupported => {
                tracing::warn!(
                    lock = %path.display(),
                    "this file system has no file locks: nothing stops a second collector from using the same files"
                );
                return Ok(None);
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        if record_pid {
            file.set_len(0).map_err(io)?;
            writeln!(file, "{}", std::process::id()).map_err(io)?;
        }
        Ok(Some(FileLock { _file: file }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_is_refused_naming_its_holder_until_it_is_dropped() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("LOCK");
        let first = FileLock::acquire(&path).expect("first lock");
        assert!(first.is_some(), "the test's file system has locks");
        match FileLock::acquire(&path) {
            Err(LockError::Held { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("a second lock was not refused: {other:?}"),
        }
        drop(first);
        assert!(matches!(FileLock::acquire(&path), Ok(Some(_))));
    }

    #[test]
    fn an_empty_lock_stays_empty_and_its_holder_unnamed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join(".web.lock");
        let _held = FileLock::acquire_empty(&path).expect("first lock");
        assert_eq!(std::fs::read(&path).expect("lock file"), b"");
        match FileLock::acquire_empty(&path) {
            Err(e @ LockError::Held { pid: None, .. }) => {
                assert!(
                    e.to_string().ends_with("is locked by another process"),
                    "{e}"
                );
            }
            other => panic!("a second lock was not refused: {other:?}"),
        }
    }
}
