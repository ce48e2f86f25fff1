//! The durable spool ([`crate::Builder::spool_dir`]): accepted messages kept in files, so an
//! event a call accepted survives the process dying at any instant.
//!
//! ```text
//!  call ──encode──▶ append (writer lock, memcpy into the tail's mapping) ──▶ doorbell
//!                      │ the page cache writes the pages back; the keeper syncs them
//!                      ▼
//!   0000000000000003.seg  0000000000000004.seg  0000000000000005.seg (tail) [spare]
//!        ▲ released when settled    ▲ progress in its header    ▲ written
//!        └──────────── worker: reads records in order, batches them, records progress ───┘
//! ```
//!
//! Invariants:
//! - A call that returns `Ok` has copied its whole record (header, then payload) into the
//!   mapping of the tail segment. The data is then in the page cache: a crash of the process
//!   loses none of it; power loss loses what the keeper has not synced yet (at most
//!   `spool_sync_interval` of calls, or none with `Duration::ZERO`, where the call syncs).
//! - Records are appended under one lock, so a torn record (a crash mid-write) can only be the
//!   last of the segment being written. A segment is never appended to after its process
//!   ends: the next process starts a new one, so a torn tail is cut off by ignoring it.
//! - Segments are created whole (header, then zeros to their full size, renamed into place;
//!   synced with their first records) by the keeper thread, ahead of need: a full disk shows as a refused call at a
//!   segment's creation, never as a fault in the middle of a write, and a call makes no system
//!   call (unless the spare is not ready yet, when it creates the segment itself).
//! - The worker numbers records in the order written (recovered ones first), the same order
//!   its flushes count in. When every batch up to a record is settled, it writes the count of
//!   settled records into the segment's header (a store into a mapping: no system call), and a
//!   segment whose records are all settled is handed to the keeper to delete. Messages still
//!   unsettled at a shutdown are not dropped: they stay in the spool for the next start.
//! - Memory holds only the batches the worker has read and not settled; the rest stays in
//!   files. The spool's size limit takes the memory budget's place (the same `Budget`, counting
//!   record bytes instead of heap bytes).
//! - One process per directory: the `LOCK` file's advisory lock, taken at build and held
//!   until the keeper thread ends.

mod format;
mod keeper;
mod map;
pub(crate) mod settings;

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crossbeam_channel::Sender;
use memmap2::MmapMut;

use crate::batch::{Payload, Pending};

pub(crate) use format::HOST_MAX;
use format::{HEADER_LEN, HeaderError, Read};
use keeper::Chore;
pub(crate) use keeper::Keeper;

/// Why a spool could not be opened: [`crate::BuildError::Spool`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpoolError {
    /// A file or the directory could not be read or written; check the path and permissions.
    #[error("spool {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// Another client (in this process or another) has the directory. Give each process its
    /// own spool directory.
    #[error("spool directory {dir} is in use by another client (its LOCK file is locked)")]
    Locked {
        /// The directory.
        dir: PathBuf,
    },
    /// The spool holds events for another write key. Deliver them with that key (`trackway
    /// spool drain`), or use another directory.
    #[error("spool directory {dir} holds events for another write key")]
    OtherWriteKey {
        /// The directory.
        dir: PathBuf,
    },
    /// The spool holds events for another host. Deliver them there, or use another directory.
    #[error("spool directory {dir} holds events for {host}, not {expected}")]
    OtherHost {
        /// The directory.
        dir: PathBuf,
        /// The batch URL its events are for.
        host: String,
        /// This client's batch URL.
        expected: String,
    },
    /// A segment was written by a newer version of trackway; run that version to deliver it.
    #[error(
        "{path} was written by a newer trackway (spool format {version}; this one reads {})",
        format::FORMAT_VERSION
    )]
    NewerFormat {
        /// The segment.
        path: PathBuf,
        /// Its format version.
        version: u32,
    },
    /// A file in the directory is not a readable spool segment (not one, or its header is
    /// damaged); move it away.
    #[error("{path} is not a readable spool segment: {reason}")]
    NotASegment {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_owned(),
        source,
    }
}

/// What a client found in its spool when it started: see
/// [`crate::Observer::on_spool_recovered`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Recovery {
    /// Messages earlier processes accepted and did not deliver: this client delivers them
    /// first, in order.
    pub messages: u64,
    /// Torn records cut off: writes a crash interrupted (the calls had not returned, so no
    /// accepted message is lost with them).
    pub truncated_tails: u64,
}

/// The spool settings that passed the builder's checks.
#[derive(Debug, Clone)]
pub(crate) struct SpoolConfig {
    pub(crate) dir: PathBuf,
    pub(crate) sync_interval: Duration,
    pub(crate) max_bytes: u64,
    /// For the crash test: the call writing this record (from 1) aborts the process halfway.
    pub(crate) abort_in_write: Option<u64>,
}

impl SpoolConfig {
    /// The size of each segment: an eighth of the limit, between 256 KiB and 2 MiB. Small
    /// enough that a settled segment is deleted soon and the mapped pages stay few; large
    /// enough that segment creation is rare.
    fn segment_bytes(&self) -> usize {
        let eighth = (self.max_bytes / 8) as usize;
        eighth.clamp(MIN_SEGMENT_BYTES, MAX_SEGMENT_BYTES)
    }
}

const MIN_SEGMENT_BYTES: usize = 256 * 1024;
const MAX_SEGMENT_BYTES: usize = 2 * 1024 * 1024;

/// Who the events are for, as each segment's header records it.
#[derive(Debug, Clone)]
struct Identity {
    key: [u8; 16],
    host: String,
}

/// One segment file.
struct Segment {
    path: PathBuf,
    file: File,
    /// Bytes of whole records from the start of the file: readers read below this.
    end: AtomicUsize,
    /// No more records will be written.
    sealed: AtomicBool,
    /// The reader's own mapping, made with the file, taken when the reader reaches it.
    reader_map: Mutex<Option<MmapMut>>,
    /// The first record to read (records before it were settled by an earlier process), and
    /// where it starts.
    first_index: u64,
    first_pos: usize,
}

/// A new segment and the writer's mapping of it.
struct Fresh {
    segment: Arc<Segment>,
    map: MmapMut,
}

/// The tail segment, being written.
struct Writer {
    segment: Arc<Segment>,
    map: MmapMut,
    pos: usize,
}

/// State the keeper thread shares with the writers.
struct Shared {
    dir: PathBuf,
    identity: Identity,
    segment_bytes: usize,
    next_id: AtomicU64,
    /// The next segment, made ahead by the keeper.
    spare: Mutex<Option<Fresh>>,
    /// Records were written since the keeper last synced.
    dirty: AtomicBool,
    /// Each call syncs its record (`spool_sync_interval` zero).
    sync_each_call: bool,
}

/// The spool, as the calls see it.
pub(crate) struct Spool {
    shared: Arc<Shared>,
    writer: Mutex<Writer>,
    /// Segments the reader has not reached yet, in order.
    unread: Arc<Mutex<VecDeque<Arc<Segment>>>>,
    keeper: Sender<Chore>,
    sync_each_call: bool,
    /// Records written (recovered ones included): where a flush's mark goes.
    appended: Arc<AtomicU64>,
    abort_in_write: Option<u64>,
}

/// Why a call could not write its record.
#[derive(Debug)]
pub(crate) struct AppendError(pub(crate) String);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // What these locks guard stays consistent at every step a panic could interrupt.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// A file in the spool directory, readable and writable by its owner only (events carry
/// personal data).
fn create_private(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:016x}.seg"))
}

impl Shared {
    /// Creates segment `next_id` whole: header and zeros written and synced under a temporary
    /// name, then renamed into place, and mapped twice (writer and reader).
    fn create_segment(&self) -> Result<Fresh, io::Error> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let path = segment_path(&self.dir, id);
        let temporary = path.with_extension("tmp");
        let written = (|| {
            let mut file = create_private(&temporary)?;
            let mut chunk = vec![0; 64 * 1024];
            format::write_header(&mut chunk, &self.identity.key, id, &self.identity.host);
            let mut left = self.segment_bytes;
            while left > 0 {
                let n = left.min(chunk.len());
                file.write_all(&chunk[..n])?;
                if left == self.segment_bytes {
                    chunk[..HEADER_LEN].fill(0);
                }
                left -= n;
            }
            // Synced now only if each call syncs its record: otherwise the keeper's next sync
            // of the tail (and the directory) makes the segment durable with its first
            // records, and an unsynced one found after power loss holds none (`recover`).
            if self.sync_each_call {
                file.sync_all()?;
            }
            std::fs::rename(&temporary, &path)?;
            if self.sync_each_call {
                File::open(&self.dir)?.sync_all()?;
            }
            Ok(file)
        })();
        let file = match written {
            Ok(file) => file,
            Err(error) => {
                let _ = std::fs::remove_file(&temporary);
                return Err(error);
            }
        };
        let map = map::map_segment(&file)?;
        let reader_map = map::map_segment(&file)?;
        let segment = Segment {
            path,
            file,
            end: AtomicUsize::new(HEADER_LEN),
            sealed: AtomicBool::new(false),
            reader_map: Mutex::new(Some(reader_map)),
            first_index: 0,
            first_pos: HEADER_LEN,
        };
        Ok(Fresh {
            segment: Arc::new(segment),
            map,
        })
    }
}

/// A spool opened at build: the calls' side, the worker's, the keeper's, and what it held.
pub(crate) struct Opened {
    pub(crate) spool: Arc<Spool>,
    pub(crate) reader: SpoolReader,
    pub(crate) keeper: Keeper,
    pub(crate) recovery: Recovery,
}

impl Spool {
    /// Opens (or creates) the spool in `config.dir` for `write_key` and `host` (the batch
    /// URL): takes the lock, reads what earlier processes left, and makes the first segment.
    pub(crate) fn open(
        config: &SpoolConfig,
        write_key: &str,
        host: &str,
    ) -> Result<Opened, SpoolError> {
        let dir = config.dir.clone();
        create_dir_private(&dir)?;
        let lock_path = dir.join("LOCK");
        let lock_file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(io_error(&lock_path))?;
        match lock_file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(SpoolError::Locked { dir });
            }
            Err(std::fs::TryLockError::Error(source)) => {
                return Err(SpoolError::Io {
                    path: lock_path,
                    source,
                });
            }
        }
        let identity = Identity {
            key: format::fingerprint(write_key),
            host: host.to_owned(),
        };
        let Recovered {
            segments: recovered,
            recovery,
            bytes: recovered_bytes,
            last_id,
        } = recover(&dir, &identity)?;
        let shared = Arc::new(Shared {
            dir: dir.clone(),
            identity,
            segment_bytes: config.segment_bytes(),
            next_id: AtomicU64::new(last_id.map_or(1, |id| id + 1)),
            spare: Mutex::new(None),
            dirty: AtomicBool::new(false),
            sync_each_call: config.sync_interval.is_zero(),
        });
        let first = shared.create_segment().map_err(io_error(&dir))?;
        let mut unread: VecDeque<Arc<Segment>> = recovered.into();
        unread.push_back(Arc::clone(&first.segment));
        let unread = Arc::new(Mutex::new(unread));
        let appended = Arc::new(AtomicU64::new(recovery.messages));
        let (chores, keeper) = Keeper::new(
            Arc::clone(&shared),
            Arc::clone(&first.segment),
            config.sync_interval,
            lock_file,
        );
        let spool = Arc::new(Spool {
            shared,
            writer: Mutex::new(Writer {
                segment: first.segment,
                map: first.map,
                pos: HEADER_LEN,
            }),
            unread: Arc::clone(&unread),
            keeper: chores.clone(),
            sync_each_call: config.sync_interval.is_zero(),
            appended: Arc::clone(&appended),
            abort_in_write: config.abort_in_write,
        });
        let reader = SpoolReader {
            appended,
            unread,
            keeper: chores,
            spans: VecDeque::new(),
            next_number: 0,
            recovered: recovery.messages,
            recovered_bytes,
        };
        Ok(Opened {
            spool,
            reader,
            keeper,
            recovery,
        })
    }

    /// Bytes a record of `payload` bytes takes: what the size limit counts.
    pub(crate) fn cost(payload: usize) -> u64 {
        format::record_len(payload) as u64
    }

    /// Appends one encoded message whose messageId's JSON string sits at `id`. No system call
    /// unless a new segment is needed and none is ready, or the sync interval is zero.
    pub(crate) fn append(&self, payload: &[u8], id: &Range<usize>) -> Result<(), AppendError> {
        let need = format::record_len(payload.len());
        let mut writer = lock(&self.writer);
        if writer.pos + need > writer.map.len() {
            self.roll(&mut writer)?;
        }
        let at = writer.pos;
        let header = format::record_header(payload, id);
        let count = self.appended.load(Ordering::Relaxed) + 1;
        let record = &mut writer.map[at..at + need];
        record[..format::RECORD_HEADER].copy_from_slice(&header);
        if self.abort_in_write.is_some_and(|n| n == count) {
            // The crash test's fault: half the payload written, then the process dies.
            let half = format::RECORD_HEADER + payload.len() / 2;
            record[format::RECORD_HEADER..half].copy_from_slice(&payload[..payload.len() / 2]);
            std::process::abort();
        }
        record[format::RECORD_HEADER..].copy_from_slice(payload);
        writer.pos = at + need;
        writer.segment.end.store(writer.pos, Ordering::Release);
        if self.sync_each_call
            && let Err(error) = writer.map.flush_range(at, need)
        {
            tracing::warn!("trackway: could not sync the spool: {error}");
        }
        // Under the writer's lock: a plain store, no contended read-modify-write.
        self.appended.store(count, Ordering::Release);
        drop(writer);
        // Read before swapping: most calls find the flag set and write nothing shared.
        if !self.sync_each_call
            && !self.shared.dirty.load(Ordering::Acquire)
            && !self.shared.dirty.swap(true, Ordering::AcqRel)
        {
            // The first write since the keeper's last sync starts its timer.
            let _ = self.keeper.send(Chore::Sync);
        }
        Ok(())
    }

    /// Seals the tail and moves the writer to the spare (or to a segment made here, if the
    /// keeper has none ready).
    fn roll(&self, writer: &mut Writer) -> Result<(), AppendError> {
        // Under the spare's lock: if the keeper is making the spare, wait for it rather than
        // make another (segments must be made in the order they are used).
        let mut spare = lock(&self.shared.spare);
        let fresh = match spare.take() {
            Some(fresh) => fresh,
            None => self.shared.create_segment().map_err(|error| {
                AppendError(format!(
                    "could not create a spool segment in {}: {error}",
                    self.shared.dir.display()
                ))
            })?,
        };
        drop(spare);
        let old = std::mem::replace(
            writer,
            Writer {
                segment: Arc::clone(&fresh.segment),
                map: fresh.map,
                pos: HEADER_LEN,
            },
        );
        old.segment.sealed.store(true, Ordering::Release);
        lock(&self.unread).push_back(fresh.segment.clone());
        // The keeper syncs and unmaps the old one (off the call's path) and makes a spare.
        let _ = self.keeper.send(Chore::Rolled {
            old: old.map,
            sealed: old.segment,
            tail: fresh.segment,
        });
        Ok(())
    }
}

/// Creates the directory (owner only) if it does not exist.
pub(crate) fn create_dir_private(dir: &Path) -> Result<(), SpoolError> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(io_error(dir))
}

/// What earlier processes left in a spool.
struct Recovered {
    /// Segments with unsettled records, in order.
    segments: Vec<Arc<Segment>>,
    recovery: Recovery,
    /// Bytes of their unsettled records.
    bytes: u64,
    /// The highest segment id found.
    last_id: Option<u64>,
}

/// Reads the segments earlier processes left; deletes the settled ones and leftovers of an
/// interrupted creation.
fn recover(dir: &Path, identity: &Identity) -> Result<Recovered, SpoolError> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
        let path = entry.map_err(io_error(dir))?.path();
        match path.extension().and_then(|e| e.to_str()) {
            Some("seg") => found.push(path),
            // A segment whose creation a crash interrupted: never used.
            Some("tmp") => std::fs::remove_file(&path).map_err(io_error(&path))?,
            _ => {}
        }
    }
    found.sort();
    let mut recovery = Recovery::default();
    let mut segments = Vec::new();
    let mut bytes = 0;
    let mut last_id = None;
    for path in found {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_error(&path))?;
        let len = file.metadata().map_err(io_error(&path))?.len();
        let mut head = [0; HEADER_LEN];
        let unwritten = len < HEADER_LEN as u64
            || (std::io::Read::read_exact(&mut &file, &mut head).is_ok()
                && head.iter().all(|b| *b == 0));
        // Ids keep rising past every file seen, written or not.
        let named = path
            .file_stem()
            .and_then(|stem| stem.to_str())
            .and_then(|stem| u64::from_str_radix(stem, 16).ok());
        if let Some(id) = named {
            last_id = Some(last_id.map_or(id, |last: u64| last.max(id)));
        }
        if unwritten {
            // Made ahead, then power was lost before anything synced it: no record in it was
            // ever synced either (a sync of its records writes its header too).
            std::fs::remove_file(&path).map_err(io_error(&path))?;
            continue;
        }
        let mut map = map::map_segment(&file).map_err(io_error(&path))?;
        let header = match format::read_header(&map) {
            Ok(header) => header,
            Err(HeaderError::Newer(version)) => {
                return Err(SpoolError::NewerFormat { path, version });
            }
            Err(HeaderError::Invalid(reason)) => {
                return Err(SpoolError::NotASegment { path, reason });
            }
        };
        last_id = Some(last_id.map_or(header.id, |last: u64| last.max(header.id)));
        let scan = format::scan(&map);
        if scan.torn {
            recovery.truncated_tails += 1;
            tracing::warn!(
                "trackway: {}: a record torn by a crash cut off after {} whole ones",
                path.display(),
                scan.records
            );
            // Zeros over the torn record's header, so the next start does not count it again.
            map[scan.end..scan.end + format::RECORD_HEADER].fill(0);
        }
        let settled = header.progress.min(scan.records);
        if settled == scan.records {
            drop(map);
            std::fs::remove_file(&path).map_err(io_error(&path))?;
            continue;
        }
        // Only a segment with undelivered events must be for this key and host: a settled
        // one (such as the empty tail of a run against another host) is just deleted.
        if header.key != identity.key {
            return Err(SpoolError::OtherWriteKey {
                dir: dir.to_owned(),
            });
        }
        if header.host != identity.host {
            return Err(SpoolError::OtherHost {
                dir: dir.to_owned(),
                host: header.host,
                expected: identity.host.clone(),
            });
        }
        recovery.messages += scan.records - settled;
        let first_pos = format::offset_of(&map, settled);
        bytes += (scan.end - first_pos) as u64;
        segments.push(Arc::new(Segment {
            path,
            file,
            end: AtomicUsize::new(scan.end),
            sealed: AtomicBool::new(true),
            reader_map: Mutex::new(Some(map)),
            first_index: settled,
            first_pos,
        }));
    }
    if recovery.messages > 0 {
        tracing::info!(
            "trackway: {} undelivered messages found in the spool {}",
            recovery.messages,
            dir.display()
        );
    }
    Ok(Recovered {
        segments,
        recovery,
        bytes,
        last_id,
    })
}

/// The records of one segment the reader has reached.
struct Span {
    segment: Arc<Segment>,
    map: MmapMut,
    /// The number (in the worker's order) of the first record read from it.
    first_number: u64,
    /// Records read, and where the next starts.
    read: u64,
    pos: usize,
    /// Records settled (progress written).
    settled: u64,
}

impl Span {
    fn fully_read(&self) -> bool {
        self.segment.sealed.load(Ordering::Acquire)
            && self.pos >= self.segment.end.load(Ordering::Acquire)
    }
}

/// The worker's side: reads records in order and records their settlement.
pub(crate) struct SpoolReader {
    appended: Arc<AtomicU64>,
    unread: Arc<Mutex<VecDeque<Arc<Segment>>>>,
    keeper: Sender<Chore>,
    spans: VecDeque<Span>,
    next_number: u64,
    /// Records numbered below this were recovered at start.
    recovered: u64,
    recovered_bytes: u64,
}

/// A record read back: the message, and whether an earlier process accepted it.
pub(crate) struct Spooled {
    pub(crate) pending: Pending,
    pub(crate) recovered: bool,
}

impl SpoolReader {
    /// Records written so far, recovered ones included: the mark a flush waits for.
    pub(crate) fn appended(&self) -> u64 {
        self.appended.load(Ordering::Acquire)
    }

    /// Bytes of the records recovered at start, as the size limit counts them.
    pub(crate) fn recovered_bytes(&self) -> u64 {
        self.recovered_bytes
    }

    /// The next record in order, if one is written.
    pub(crate) fn next(&mut self) -> Option<Spooled> {
        loop {
            if let Some(span) = self.spans.back_mut() {
                // `sealed` first: once it is set, `end` is final.
                let sealed = span.segment.sealed.load(Ordering::Acquire);
                let end = span.segment.end.load(Ordering::Acquire);
                if span.pos < end {
                    match format::read_record(&span.map[..end], span.pos) {
                        Read::Record { payload, id, next } => {
                            let bytes: Box<[u8]> = span.map[payload.clone()].into();
                            span.pos = next;
                            span.read += 1;
                            let number = self.next_number;
                            self.next_number += 1;
                            return Some(Spooled {
                                pending: Pending {
                                    cost: Spool::cost(payload.len()),
                                    payload: Payload::Encoded { bytes, id },
                                },
                                recovered: number < self.recovered,
                            });
                        }
                        // Checked at recovery, or written by this process: cannot happen
                        // unless the file was changed under us. Skip the rest of it.
                        Read::End | Read::Torn => {
                            tracing::error!(
                                "trackway: {}: unreadable record at byte {}; its segment's \
                                 remaining records are skipped",
                                span.segment.path.display(),
                                span.pos
                            );
                            span.pos = end;
                            continue;
                        }
                    }
                }
                if !sealed {
                    return None;
                }
            }
            let segment = lock(&self.unread).pop_front()?;
            let Some(map) = lock(&segment.reader_map).take() else {
                continue;
            };
            self.spans.push_back(Span {
                first_number: self.next_number,
                read: 0,
                pos: segment.first_pos,
                settled: 0,
                map,
                segment,
            });
        }
    }

    /// Every record numbered below `prefix` is settled: writes each segment's progress and
    /// hands fully settled segments to the keeper to delete.
    pub(crate) fn settled(&mut self, prefix: u64) {
        for span in &mut self.spans {
            let settled = prefix.saturating_sub(span.first_number).min(span.read);
            if settled > span.settled {
                span.settled = settled;
                format::write_progress(&mut span.map, span.segment.first_index + settled);
            }
        }
        while self
            .spans
            .front()
            .is_some_and(|span| span.settled == span.read && span.fully_read())
        {
            if let Some(span) = self.spans.pop_front() {
                let _ = self.keeper.send(Chore::Release {
                    map: span.map,
                    path: span.segment.path.clone(),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests;
