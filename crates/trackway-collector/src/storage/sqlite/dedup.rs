//! Deduplication: which messageIds each source stored within the window, kept in memory.
//!
//! An event is a duplicate when its source stored the same messageId within the window before
//! it (a rejected copy never makes an accepted event a duplicate; any copy makes a rejected
//! one a duplicate). That used to be a lookup in an index keyed by (source, messageId): random
//! keys, so each insert dirtied its own 4 KiB leaf page, which the WAL wrote at the commit and
//! the checkpoint copied again (about 4 KiB per event on top of the event's own bytes).
//!
//! Now the writer thread keeps the window's events in memory under a 64-bit key, and the
//! events table is only appended to (its rowid and the `events_received` index, both in
//! arrival order):
//!
//! ```text
//!  key = hash(source, messageId)    keyed by a per-process random seed (no crafted collisions)
//!  keys:  key -> seq                the window's events; a key stored twice keeps every seq
//!  order: (received_at, key, seq)   in arrival order, to forget events past the window
//!
//!  check(event):
//!    the memory may lack an event that could match (arrival before `floor` + window)?
//!      -> ask the database: the `events_received` index over the window (rare: a clock
//!         stepped back, or old test data)
//!    otherwise every seq under the event's key -> read that row by rowid -> same source,
//!      same messageId, inside the window, accepted or the event is rejected? -> duplicate
//! ```
//!
//! The full messageId is always compared, so two ids that share a key (one chance in 2^64
//! per pair) are two events. Invariants: `keys` holds every stored event whose arrival is
//! later than `floor` (events forgotten or never loaded all arrived at or before it); the
//! writer is the only writer, so memory and table cannot disagree except inside a transaction
//! that fails, whose additions are taken back ([`Dedup::truncate`]). Pruned events leave
//! stale seqs behind until they pass the window; their rows are gone, so they match nothing.
//!
//! Opening loads the window's events from `events_received` (a covering index: no event
//! body is read). Memory: 45-90 bytes per event in the window (a map slot of 17 bytes and a
//! queue entry of 24, each with its collection's spare capacity; DESIGN.md).

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};

use rusqlite::{Connection, OptionalExtension, params};

use super::connection::sql_error;
use crate::storage::{NewEvent, StoreError};

/// Events stay in memory this long past the window, so that a clock slewed back a little
/// never sends the check to the database.
pub(super) const DEDUP_SLACK_MS: i64 = 60_000;

/// How events are keyed: by a random seed (the store's), or all alike (tests forcing the
/// full comparison on every event).
#[derive(Clone)]
pub(super) enum Keys {
    Seeded(RandomState),
    #[cfg(test)]
    Colliding,
}

impl Keys {
    pub(super) fn seeded() -> Keys {
        Keys::Seeded(RandomState::new())
    }

    fn key(&self, source: &str, message_id: &str) -> u64 {
        match self {
            Keys::Seeded(seed) => seed.hash_one((source, message_id)),
            #[cfg(test)]
            Keys::Colliding => 7,
        }
    }
}

/// The keys are hashes already: the map uses them as they are.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used; this keeps any other use correct.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type KeyMap<V> = HashMap<u64, V, BuildHasherDefault<PassThrough>>;

/// The window's events, by key (module docs).
pub(super) struct Dedup {
    keys: Keys,
    window_ms: i64,
    /// One seq per key, for almost every key.
    first: KeyMap<i64>,
    /// Further seqs of keys stored more than once (the same id past the window, a rejected
    /// copy and the fixed event, or two ids sharing a key).
    more: KeyMap<Vec<i64>>,
    /// (received_at, key, seq), in the order events were added.
    order: VecDeque<(i64, u64, i64)>,
    /// Every event stored with a later arrival is in memory.
    floor: i64,
    /// The latest arrival added.
    latest: i64,
}

impl Dedup {
    /// Loads the window's events of the store `conn` opens: those that arrived within the
    /// window (and its slack) before the latest arrival stored.
    pub(super) fn load(conn: &Connection, window_ms: i64, keys: Keys) -> Result<Dedup, StoreError> {
        let latest: Option<i64> = conn
            .query_row("SELECT MAX(received_at) FROM events", [], |row| row.get(0))
            .map_err(sql_error)?;
        let mut dedup = Dedup {
            keys,
            window_ms,
            first: KeyMap::default(),
            more: KeyMap::default(),
            order: VecDeque::new(),
            floor: i64::MIN,
            latest: i64::MIN,
        };
        let Some(latest) = latest else {
            return Ok(dedup);
        };
        dedup.floor = latest.saturating_sub(window_ms + DEDUP_SLACK_MS);
        let mut statement = conn
            .prepare(
                "SELECT received_at, source, message_id, seq FROM events INDEXED BY events_received
                 WHERE received_at > ?1 ORDER BY received_at",
            )
            .map_err(sql_error)?;
        let mut rows = statement.query(params![dedup.floor]).map_err(sql_error)?;
        while let Some(row) = rows.next().map_err(sql_error)? {
            let received_at: i64 = row.get(0).map_err(sql_error)?;
            let seq: i64 = row.get(3).map_err(sql_error)?;
            // Borrowed from the row: no allocation per event of the window.
            let text = |n: usize| {
                row.get_ref(n)
                    .and_then(|v| v.as_str().map_err(rusqlite::Error::from))
                    .map_err(sql_error)
            };
            let key = dedup.keys.key(text(1)?, text(2)?);
            dedup.add(key, seq, received_at);
        }
        Ok(dedup)
    }

    /// The key `event` is kept under.
    pub(super) fn key_of(&self, event: &NewEvent) -> u64 {
        self.keys.key(&event.source, &event.message_id)
    }

    /// Whether `conn` (the writer's open transaction) holds a copy that makes `event` a
    /// duplicate.
    pub(super) fn is_duplicate(
        &self,
        conn: &Connection,
        key: u64,
        event: &NewEvent,
    ) -> Result<bool, StoreError> {
        let horizon = event.received_at.saturating_sub(self.window_ms);
        if horizon < self.floor {
            // A copy the memory no longer holds (or never loaded) could still count.
            return conn
                .prepare_cached(
                    "SELECT 1 FROM events INDEXED BY events_received
                     WHERE received_at > ?3 AND source = ?1 AND message_id = ?2
                       AND (rejected IS NULL OR ?4) LIMIT 1",
                )
                .and_then(|mut s| {
                    s.query_row(
                        params![
                            &*event.source,
                            event.message_id,
                            horizon,
                            event.rejected.is_some()
                        ],
                        |_| Ok(()),
                    )
                    .optional()
                })
                .map(|found| found.is_some())
                .map_err(sql_error);
        }
        let Some(&first) = self.first.get(&key) else {
            return Ok(false);
        };
        let more = self.more.get(&key).map_or(&[][..], Vec::as_slice);
        let mut copy = conn
            .prepare_cached(
                "SELECT source, message_id, received_at, rejected IS NOT NULL FROM events
                 WHERE seq = ?1",
            )
            .map_err(sql_error)?;
        for &seq in std::iter::once(&first).chain(more) {
            let row = copy
                .query_row(params![seq], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, i64>(2)?,
                        row.get::<_, bool>(3)?,
                    ))
                })
                .optional()
                .map_err(sql_error)?;
            let Some((source, message_id, received_at, rejected)) = row else {
                continue; // pruned
            };
            if *source == *event.source
                && message_id == event.message_id
                && received_at > horizon
                && (!rejected || event.rejected.is_some())
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Remembers a stored event.
    pub(super) fn add(&mut self, key: u64, seq: i64, received_at: i64) {
        match self.first.entry(key) {
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(seq);
            }
            std::collections::hash_map::Entry::Occupied(_) => {
                self.more.entry(key).or_default().push(seq);
            }
        }
        self.order.push_back((received_at, key, seq));
        self.latest = self.latest.max(received_at);
    }

    /// How many events are remembered: a mark for [`Dedup::truncate`].
    pub(super) fn mark(&self) -> usize {
        self.order.len()
    }

    /// Forgets the events added since `mark`, whose transaction failed.
    pub(super) fn truncate(&mut self, mark: usize) {
        while self.order.len() > mark {
            if let Some((_, key, seq)) = self.order.pop_back() {
                self.remove(key, seq);
            }
        }
    }

    /// Forgets events that arrived more than the window (and its slack) before the latest
    /// one: no event arriving later can be their duplicate.
    pub(super) fn expire(&mut self) {
        let cutoff = self.latest.saturating_sub(self.window_ms + DEDUP_SLACK_MS);
        while let Some(&(received_at, key, seq)) = self.order.front() {
            if received_at > cutoff {
                break;
            }
            self.order.pop_front();
            self.remove(key, seq);
            self.floor = self.floor.max(received_at);
        }
    }

    fn remove(&mut self, key: u64, seq: i64) {
        if let Some(seqs) = self.more.get_mut(&key) {
            if self.first.get(&key) == Some(&seq) {
                if let Some(next) = seqs.pop() {
                    self.first.insert(key, next);
                }
            } else {
                seqs.retain(|&s| s != seq);
            }
            if seqs.is_empty() {
                self.more.remove(&key);
            }
        } else if self.first.get(&key) == Some(&seq) {
            self.first.remove(&key);
        }
    }
}
