//! `file`: JSON lines, one file per source and UTC day (`<source>-<YYYY-MM-DD>.jsonl`), rotated
//! to `<source>-<YYYY-MM-DD>.<n>.jsonl` once a file reaches `max_bytes`. A delivery counts as
//! done only after the lines are fsynced.
//!
//! A file only ever ends with a whole line: a write or fsync that fails cuts the file back to
//! its size before the attempt, so the retry neither appends after a partial line nor repeats
//! the lines that did get written; and a file opened with a partial last line (a crash in the
//! middle of a write, or a cut that failed too) has it cut off first. Whole lines of a chunk
//! a crash interrupted stay, and are written again: at least once.
//!
//! The destination holds `.<source>.lock` (empty) in its directory locked while it runs, so
//! that no second collector writes the same files. On a lone collector it is taken at start
//! (a second collector on the same files refuses to start); in a group sharing a database it
//! is taken with the destination's lease and dropped with it, so every collector of the group
//! can be configured alike and the one delivering holds it.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::delivery::kind::DestinationError;
use crate::delivery::{Attempt, Destination};
use crate::lock::{FileLock, LockError};
use crate::storage::{BoxFuture, StoredEvent};

/// Events written per fsync at most.
const CHUNK: usize = 500;

/// Bytes read at a time when looking back for a file's last newline.
const SCAN_BLOCK: usize = 64 * 1024;

pub(crate) struct JsonLines {
    inner: Arc<Mutex<Writer>>,
}

struct Writer {
    dir: PathBuf,
    prefix: String,
    max_bytes: u64,
    /// The open file: its day, its rotation index, its size.
    current: Option<(String, u32, u64, File)>,
    /// `.<prefix>.lock` in `dir`: no other collector writes these files while it is held.
    lock: Option<FileLock>,
    /// Taken with the lease, not at start: dropped when the lease ends.
    leased: bool,
}

impl JsonLines {
    /// Opens the destination; its directory lock is taken now, or with the lease when
    /// `leased`.
    pub(crate) fn open(
        dir: &Path,
        source: &str,
        max_bytes: u64,
        leased: bool,
    ) -> Result<JsonLines, DestinationError> {
        std::fs::create_dir_all(dir).map_err(|source| DestinationError::CreateDir {
            dir: dir.to_owned(),
            source,
        })?;
        let prefix = file_prefix(source);
        let lock = if leased {
            None
        } else {
            take_lock(dir, &prefix)?
        };
        Ok(JsonLines {
            inner: Arc::new(Mutex::new(Writer {
                dir: dir.to_owned(),
                prefix,
                max_bytes,
                current: None,
                lock,
                leased,
            })),
        })
    }
}

/// Locks `.<prefix>.lock` in `dir` (`None` on a file system without locks).
fn take_lock(dir: &Path, prefix: &str) -> Result<Option<FileLock>, DestinationError> {
    FileLock::acquire_empty(&dir.join(format!(".{prefix}.lock"))).map_err(|e| match e {
        LockError::Held { .. } => DestinationError::FilesInUse {
            dir: dir.to_owned(),
            prefix: prefix.to_owned(),
        },
        LockError::Io { path, source } => DestinationError::Lock { path, source },
    })
}

/// What a source's files are named after: its name, kept to safe characters. Two sources can
/// share one (`web.app` and `web_app`); the configuration refuses two file destinations that
/// would write the same files.
pub(crate) fn file_prefix(source: &str) -> String {
    source
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl Writer {
    fn path(&self, day: &str, index: u32) -> PathBuf {
        match index {
            0 => self.dir.join(format!("{}-{day}.jsonl", self.prefix)),
            n => self.dir.join(format!("{}-{day}.{n}.jsonl", self.prefix)),
        }
    }

    /// The file to append to on `day`: that day's, past any full ones.
    fn file(&mut self, day: &str) -> std::io::Result<&mut (String, u32, u64, File)> {
        let stale = match &self.current {
            Some((open_day, _, size, _)) => *open_day != day || *size >= self.max_bytes,
            None => true,
        };
        if stale {
            let mut index = match &self.current {
                Some((open_day, index, _, _)) if open_day == day => index + 1,
                _ => 0,
            };
            // Skip past files a previous run filled.
            loop {
                let size = std::fs::metadata(self.path(day, index)).map_or(0, |m| m.len());
                if size < self.max_bytes {
                    break;
                }
                index += 1;
            }
            let path = self.path(day, index);
            let mut file = OpenOptions::new()
                .create(true)
                .read(true)
                .append(true)
                .open(&path)?;
            let found = file.metadata()?.len();
            let size = cut_partial_line(&mut file, found)?;
            if size < found {
                tracing::warn!(file = %path.display(), "file destination: cut off a partial last line");
            }
            self.current = Some((day.to_owned(), index, size, file));
        }
        self.current
            .as_mut()
            .ok_or_else(|| std::io::Error::other("no file"))
    }

    /// Appends `events` to today's file.
    fn append(&mut self, events: &[StoredEvent]) -> std::io::Result<()> {
        let day = trackway_protocol::format_timestamp(SystemTime::now())[..10].to_owned();
        self.append_on(&day, events)
    }

    fn append_on(&mut self, day: &str, events: &[StoredEvent]) -> std::io::Result<()> {
        let mut lines = Vec::new();
        for event in events {
            lines.extend_from_slice(event.body.as_bytes());
            lines.push(b'\n');
        }
        let (_, _, size, file) = self.file(day)?;
        match append_lines(file, *size, &lines) {
            Ok(new_size) => {
                *size = new_size;
                Ok(())
            }
            Err(Failed::CutBack(e)) => Err(e),
            Err(Failed::PartialLeft(e)) => {
                // Reopened next time, and the partial line cut off then.
                self.current = None;
                Err(e)
            }
        }
    }
}

/// What [`append_lines`] needs of a file; tests put one in its place that counts syncs or
/// fails partway.
trait LineSink: Write {
    /// Makes what was written durable (`fdatasync`): a delivery is acknowledged only after.
    fn sync_data(&mut self) -> std::io::Result<()>;
    fn truncate(&mut self, len: u64) -> std::io::Result<()>;
}

impl LineSink for File {
    fn sync_data(&mut self) -> std::io::Result<()> {
        File::sync_data(self)
    }

    fn truncate(&mut self, len: u64) -> std::io::Result<()> {
        self.set_len(len)
    }
}

/// Why [`append_lines`] failed, and whether the file is whole again.
#[derive(Debug)]
enum Failed {
    /// The file is back to its size before the attempt.
    CutBack(std::io::Error),
    /// Cutting back failed too: part of the attempt may be left at the end of the file.
    PartialLeft(std::io::Error),
}

/// Appends `lines` to `sink`, which holds `size` bytes of whole lines, and syncs them; returns
/// the new size. On failure the sink is cut back to `size`, so a retry starts clean.
fn append_lines(sink: &mut impl LineSink, size: u64, lines: &[u8]) -> Result<u64, Failed> {
    let written = sink.write_all(lines).and_then(|()| sink.sync_data());
    match written {
        Ok(()) => Ok(size + lines.len() as u64),
        Err(error) => match sink.truncate(size) {
            Ok(()) => Err(Failed::CutBack(error)),
            Err(cut) => Err(Failed::PartialLeft(std::io::Error::new(
                error.kind(),
                format!("{error} (and cutting off the partial write failed: {cut})"),
            ))),
        },
    }
}

/// Cuts whatever follows the last newline off `file` (whose length is `len`); returns the
/// length kept.
fn cut_partial_line(file: &mut File, len: u64) -> std::io::Result<u64> {
    let mut block = vec![0; SCAN_BLOCK];
    let mut end = len;
    let keep = loop {
        if end == 0 {
            break 0;
        }
        let start = end.saturating_sub(SCAN_BLOCK as u64);
        let chunk = &mut block[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(chunk)?;
        if let Some(i) = chunk.iter().rposition(|b| *b == b'\n') {
            break start + i as u64 + 1;
        }
        end = start;
    };
    if keep < len {
        file.set_len(keep)?;
    }
    Ok(keep)
}

impl Destination for JsonLines {
    fn claim(&self) -> Result<(), DestinationError> {
        let mut writer = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if writer.leased && writer.lock.is_none() {
            writer.lock = take_lock(&writer.dir, &writer.prefix)?;
        }
        Ok(())
    }

    fn release(&self) {
        let mut writer = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if writer.leased {
            // Another collector may write the files next: forget the open file too.
            writer.lock = None;
            writer.current = None;
        }
    }

    fn deliver<'a>(&'a self, events: &'a [StoredEvent]) -> BoxFuture<'a, Attempt> {
        let inner = Arc::clone(&self.inner);
        let events = events.to_vec();
        Box::pin(async move {
            let written = tokio::task::spawn_blocking(move || {
                inner
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .append(&events)
            })
            .await;
            match written {
                Ok(Ok(())) => Attempt::Delivered,
                Ok(Err(e)) => Attempt::Retry {
                    after: None,
                    reason: format!("write failed: {e}"),
                },
                Err(e) => Attempt::Retry {
                    after: None,
                    reason: format!("write task failed: {e}"),
                },
            }
        })
    }

    fn chunk_size(&self) -> usize {
        CHUNK
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file in memory that takes `budget` more bytes, then fails every write; it records
    /// its length at each sync, and fails syncs while `sync_fails`.
    struct Failing {
        bytes: Vec<u8>,
        budget: usize,
        synced_at: Vec<usize>,
        sync_fails: bool,
    }

    impl Failing {
        fn holding(bytes: &[u8], budget: usize) -> Failing {
            Failing {
                bytes: bytes.to_vec(),
                budget,
                synced_at: Vec::new(),
                sync_fails: false,
            }
        }
    }

    impl Write for Failing {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.budget == 0 {
                return Err(std::io::Error::other("disk full"));
            }
            let n = buf.len().min(self.budget);
            self.bytes.extend_from_slice(&buf[..n]);
            self.budget -= n;
            Ok(n)
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl LineSink for Failing {
        fn sync_data(&mut self) -> std::io::Result<()> {
            if self.sync_fails {
                return Err(std::io::Error::other("fsync failed"));
            }
            self.synced_at.push(self.bytes.len());
            Ok(())
        }

        fn truncate(&mut self, len: u64) -> std::io::Result<()> {
            self.bytes.truncate(len as usize);
            Ok(())
        }
    }

    #[test]
    fn a_write_that_fails_partway_leaves_no_partial_line_for_the_retry() {
        let mut sink = Failing::holding(b"{\"old\":1}\n", 15);
        let lines = b"{\"a\":1}\n{\"b\":2}\n{\"c\":3}\n";
        let size = sink.bytes.len() as u64;
        assert!(matches!(
            append_lines(&mut sink, size, lines),
            Err(Failed::CutBack(_))
        ));
        assert_eq!(
            sink.bytes, b"{\"old\":1}\n",
            "cut back to the last good size"
        );
        sink.budget = usize::MAX;
        let size = append_lines(&mut sink, size, lines).expect("the retry works");
        let expected = b"{\"old\":1}\n{\"a\":1}\n{\"b\":2}\n{\"c\":3}\n";
        assert_eq!(sink.bytes, expected, "each line once, whole");
        assert_eq!(size, expected.len() as u64);
    }

    #[test]
    fn each_append_is_synced_once_after_all_its_lines_are_written() {
        // Without the sync a delivery would be acknowledged (and the cursor moved past it)
        // with the lines only in the page cache: a power cut would lose them.
        let mut sink = Failing::holding(b"", usize::MAX);
        let size = append_lines(&mut sink, 0, b"{\"a\":1}\n{\"b\":2}\n").expect("appends");
        assert_eq!(
            sink.synced_at,
            [size as usize],
            "one sync, after every line"
        );
        let size = append_lines(&mut sink, size, b"{\"c\":3}\n").expect("appends");
        assert_eq!(sink.synced_at, [16, size as usize], "one sync per append");
    }

    #[test]
    fn a_failed_sync_fails_the_append_and_cuts_the_lines_back() {
        let mut sink = Failing::holding(b"{\"old\":1}\n", usize::MAX);
        sink.sync_fails = true;
        let size = sink.bytes.len() as u64;
        assert!(matches!(
            append_lines(&mut sink, size, b"{\"a\":1}\n"),
            Err(Failed::CutBack(_))
        ));
        assert_eq!(sink.bytes, b"{\"old\":1}\n", "not durable: not kept");
    }

    #[test]
    fn a_partial_line_found_when_a_file_is_opened_is_cut_off() {
        // What a crash in the middle of a write leaves: whole lines, then part of one.
        let dir = tempfile::tempdir().expect("temp dir");
        let day = "2026-01-01";
        let mut writer = JsonLines::open(dir.path(), "web", 1 << 20, false)
            .expect("opens")
            .inner;
        let writer = Arc::get_mut(&mut writer)
            .expect("only handle")
            .get_mut()
            .expect("not poisoned");
        let path = writer.path(day, 0);
        std::fs::write(&path, "{\"a\":1}\n{\"b\":2}\n{\"c\"").expect("writes");
        let event = StoredEvent {
            seq: 1,
            source: Arc::from("web"),
            kind: "track".into(),
            received_at: 0,
            rejected: None,
            body: "{\"c\":3}".into(),
        };
        writer.append_on(day, &[event]).expect("appends");
        let text = std::fs::read_to_string(&path).expect("reads");
        assert_eq!(text, "{\"a\":1}\n{\"b\":2}\n{\"c\":3}\n");
    }
}
