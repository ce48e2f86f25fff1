//! `file`: JSON lines, one file per source and UTC day (`<source>-<YYYY-MM-DD>.jsonl`), rotated
//! to `<source>-<YYYY-MM-DD>.<n>.jsonl` once a file reaches `max_bytes`. A delivery counts as
//! done only after the lines are fsynced.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::delivery::{Attempt, Destination};
use crate::storage::{BoxFuture, StoredEvent};

/// Events written per fsync at most.
const CHUNK: usize = 500;

pub(crate) struct JsonLines {
    inner: Arc<Mutex<Writer>>,
}

struct Writer {
    dir: PathBuf,
    prefix: String,
    max_bytes: u64,
    /// The open file: its day, its rotation index, its size.
    current: Option<(String, u32, u64, File)>,
}

impl JsonLines {
    pub(crate) fn open(dir: &Path, source: &str, max_bytes: u64) -> Result<JsonLines, String> {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        // A source name becomes part of a file name: keep it to safe characters.
        let prefix: String = source
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        Ok(JsonLines {
            inner: Arc::new(Mutex::new(Writer {
                dir: dir.to_owned(),
                prefix,
                max_bytes,
                current: None,
            })),
        })
    }
}

impl Writer {
    fn path(&self, day: &str, index: u32) -> PathBuf {
        match index {
            0 => self.dir.join(format!("{}-{day}.jsonl", self.prefix)),
            n => self.dir.join(format!("{}-{day}.{n}.jsonl", self.prefix)),
        }
    }

    /// The file to append to now: today's, past any full ones.
    fn file(&mut self) -> std::io::Result<&mut (String, u32, u64, File)> {
        let day = trackway_protocol::format_timestamp(SystemTime::now())[..10].to_owned();
        let stale = match &self.current {
            Some((open_day, _, size, _)) => *open_day != day || *size >= self.max_bytes,
            None => true,
        };
        if stale {
            let mut index = match &self.current {
                Some((open_day, index, _, _)) if *open_day == day => index + 1,
                _ => 0,
            };
            // Skip past files a previous run filled.
            loop {
                let size = std::fs::metadata(self.path(&day, index)).map_or(0, |m| m.len());
                if size < self.max_bytes {
                    break;
                }
                index += 1;
            }
            let path = self.path(&day, index);
            let file = OpenOptions::new().create(true).append(true).open(&path)?;
            let size = file.metadata()?.len();
            self.current = Some((day, index, size, file));
        }
        self.current
            .as_mut()
            .ok_or_else(|| std::io::Error::other("no file"))
    }

    fn append(&mut self, events: &[StoredEvent]) -> std::io::Result<()> {
        let mut lines = Vec::new();
        for event in events {
            lines.extend_from_slice(event.body.as_bytes());
            lines.push(b'\n');
        }
        let (_, _, size, file) = self.file()?;
        file.write_all(&lines)?;
        file.sync_data()?;
        *size += lines.len() as u64;
        Ok(())
    }
}

impl Destination for JsonLines {
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
