//! The delivery bookkeeping seam's contract (`DeliveryBook`: cursors, counts, dead letters,
//! replay, what retention must keep, leases), checked against both books: every behaviour
//! that needs no second collector is written once here and run on SQLite and on a real
//! PostgreSQL. What only a shared book has (a lease contended by two collectors, fencing,
//! takeovers) follows, on PostgreSQL.

use std::sync::Arc;

use trackway_collector::delivery::state::{Batch, DeliveryBook, Lease, SqliteBook};
use trackway_collector::storage::postgres::{PostgresBook, PostgresStore};
use trackway_testkit::postgres::TestPostgres;

use crate::store_contract::{WINDOW, postgres_database, runtime};

/// Where a book under test lives, so that it can be opened again (a restart).
enum Home {
    Sqlite(tempfile::TempDir),
    Postgres {
        _server: Arc<TestPostgres>,
        url: String,
    },
}

/// A book under test and what keeps it alive.
struct Subject {
    book: Arc<dyn DeliveryBook>,
    runtime: tokio::runtime::Runtime,
    home: Home,
}

impl Subject {
    fn sqlite() -> Subject {
        let dir = tempfile::tempdir().unwrap();
        let book = SqliteBook::open(dir.path()).unwrap();
        Subject {
            book: Arc::new(book),
            runtime: runtime(),
            home: Home::Sqlite(dir),
        }
    }

    fn postgres() -> Subject {
        let (server, url) = postgres_database("book");
        let book = postgres_book(&url);
        Subject {
            book,
            runtime: runtime(),
            home: Home::Postgres {
                _server: server,
                url,
            },
        }
    }

    /// The same bookkeeping opened again, as by a restarted collector.
    fn reopen(&self) -> Arc<dyn DeliveryBook> {
        match &self.home {
            Home::Sqlite(dir) => Arc::new(SqliteBook::open(dir.path()).unwrap()),
            Home::Postgres { url, .. } => postgres_book(url),
        }
    }

    fn on<T>(&self, work: impl std::future::Future<Output = T>) -> T {
        self.runtime.block_on(work)
    }

    /// (cursor, delivered, dead-lettered, skipped) of `destination`.
    fn progress(&self, destination: &str) -> (i64, u64, u64, u64) {
        progress_of(self, &*self.book, destination)
    }

    fn lease(&self, destination: &str) -> Lease {
        self.on(self.book.acquire(destination))
            .unwrap()
            .expect("a lone collector's lease")
    }

    fn advance(&self, destination: &str, batch: Batch) {
        let lease = self.lease(destination);
        assert!(
            self.on(self.book.advance(destination, lease, batch))
                .unwrap()
        );
    }

    /// Open dead letters as (destination, seq, reason), oldest first.
    fn letters(
        &self,
        destination: Option<&str>,
        id: Option<i64>,
        limit: usize,
    ) -> Vec<(String, i64, String)> {
        self.on(self
            .book
            .dead_letters(destination.map(str::to_owned), id, limit))
            .unwrap()
            .into_iter()
            .map(|d| (d.destination, d.seq, d.reason))
            .collect()
    }

    fn letter_id(&self, destination: &str, seq: i64) -> i64 {
        self.on(self.book.dead_letters(Some(destination.into()), None, 1000))
            .unwrap()
            .into_iter()
            .find(|d| d.seq == seq)
            .map(|d| d.id)
            .expect("an open dead letter")
    }
}

fn postgres_book(url: &str) -> Arc<dyn DeliveryBook> {
    Arc::new(PostgresBook::new(Arc::new(
        PostgresStore::open(url, WINDOW).unwrap(),
    )))
}

fn progress_of(s: &Subject, book: &dyn DeliveryBook, destination: &str) -> (i64, u64, u64, u64) {
    let p = s.on(book.progress(destination, 0)).unwrap();
    (p.cursor, p.delivered, p.dead_lettered, p.skipped)
}

fn batch(cursor: i64, delivered: u64, skipped: u64, dead: &[(i64, &str)]) -> Batch {
    Batch {
        cursor,
        delivered,
        skipped,
        dead: dead.iter().map(|(s, r)| (*s, (*r).to_owned())).collect(),
        redelivered: 0,
    }
}

/// Runs each behaviour against the SQLite book and against the PostgreSQL one.
macro_rules! contract {
    ($($behaviour:ident),* $(,)?) => {
        mod sqlite {
            $( #[test] fn $behaviour() { super::$behaviour(&super::Subject::sqlite()) } )*
        }
        mod postgres {
            $( #[test] fn $behaviour() { super::$behaviour(&super::Subject::postgres()) } )*
        }
    };
}

contract!(
    a_new_destination_starts_where_it_is_told_and_keeps_its_place,
    a_batch_moves_the_cursor_and_adds_its_counts_in_one_step,
    dead_letters_are_listed_oldest_first_by_destination_id_and_limit,
    a_replayed_dead_letter_counts_as_delivered_once_even_when_replayed_twice,
    a_failed_replay_keeps_the_letter_open_with_its_new_reason,
    retention_keeps_from_the_oldest_open_dead_letter,
    a_dead_letters_reason_is_found_by_destination_and_seq_while_open,
    a_reason_holding_nul_never_fails_a_batch,
    the_bookkeeping_survives_a_restart,
    a_lone_collector_holds_every_lease_and_keeps_it,
);

fn a_new_destination_starts_where_it_is_told_and_keeps_its_place(s: &Subject) {
    let p = s.on(s.book.progress("web/New", 42)).unwrap();
    assert_eq!((p.cursor, p.delivered, p.redelivered), (42, 0, 0));
    s.advance("web/New", batch(50, 8, 0, &[]));
    // Asked again with another start (a restart): the stored place wins.
    let p = s.on(s.book.progress("web/New", 0)).unwrap();
    assert_eq!((p.cursor, p.delivered), (50, 8));
    // Destinations are apart.
    assert_eq!(s.progress("web/Other"), (0, 0, 0, 0));
}

fn a_batch_moves_the_cursor_and_adds_its_counts_in_one_step(s: &Subject) {
    s.progress("web/Hook");
    s.advance("web/Hook", batch(10, 7, 2, &[(4, "HTTP 400")]));
    s.advance("web/Hook", batch(25, 10, 5, &[]));
    assert_eq!(s.progress("web/Hook"), (25, 17, 1, 7));
    assert_eq!(
        s.letters(Some("web/Hook"), None, 100),
        [("web/Hook".to_owned(), 4, "HTTP 400".to_owned())]
    );
}

fn dead_letters_are_listed_oldest_first_by_destination_id_and_limit(s: &Subject) {
    for destination in ["web/A", "web/B"] {
        s.progress(destination);
    }
    s.advance("web/A", batch(3, 0, 0, &[(1, "a1"), (3, "a3")]));
    s.advance("web/B", batch(2, 1, 0, &[(2, "b2")]));
    s.advance("web/A", batch(9, 0, 0, &[(9, "a9")]));
    let seqs = |list: Vec<(String, i64, String)>| -> Vec<(String, i64)> {
        list.into_iter().map(|(d, s, _)| (d, s)).collect()
    };
    let all = seqs(s.letters(None, None, 100));
    assert_eq!(
        all,
        [
            ("web/A".into(), 1),
            ("web/A".into(), 3),
            ("web/B".into(), 2),
            ("web/A".into(), 9)
        ]
    );
    assert_eq!(
        seqs(s.letters(Some("web/A"), None, 100)),
        [
            ("web/A".into(), 1),
            ("web/A".into(), 3),
            ("web/A".into(), 9)
        ]
    );
    assert_eq!(seqs(s.letters(Some("web/A"), None, 2)).len(), 2);
    let id = s.letter_id("web/B", 2);
    assert_eq!(s.letters(None, Some(id), 100)[0].2, "b2");
    assert!(s.letters(Some("web/A"), Some(id), 100).is_empty());
    assert!(s.letters(Some("web/None"), None, 100).is_empty());
}

fn a_replayed_dead_letter_counts_as_delivered_once_even_when_replayed_twice(s: &Subject) {
    s.progress("web/Hook");
    s.advance(
        "web/Hook",
        batch(5, 3, 0, &[(2, "HTTP 400"), (4, "HTTP 422")]),
    );
    let id = s.letter_id("web/Hook", 2);
    // Two replays finishing at once (say, on two collectors): counted once.
    let (x, y) = s.on(async { tokio::join!(s.book.replayed(id, None), s.book.replayed(id, None)) });
    x.unwrap();
    y.unwrap();
    s.on(s.book.replayed(id, None)).unwrap();
    assert_eq!(s.progress("web/Hook"), (5, 4, 1, 0));
    let open: Vec<i64> = s
        .letters(Some("web/Hook"), None, 100)
        .iter()
        .map(|l| l.1)
        .collect();
    assert_eq!(open, [4]);
}

fn a_failed_replay_keeps_the_letter_open_with_its_new_reason(s: &Subject) {
    s.progress("web/Hook");
    s.advance("web/Hook", batch(3, 2, 0, &[(3, "HTTP 400")]));
    let id = s.letter_id("web/Hook", 3);
    s.on(s.book.replayed(id, Some("HTTP 500 on replay".into())))
        .unwrap();
    assert_eq!(
        s.letters(Some("web/Hook"), None, 100),
        [("web/Hook".to_owned(), 3, "HTTP 500 on replay".to_owned())]
    );
    assert_eq!(s.progress("web/Hook"), (3, 2, 1, 0));
}

fn retention_keeps_from_the_oldest_open_dead_letter(s: &Subject) {
    s.progress("web/Hook");
    assert_eq!(
        s.on(s.book.oldest_open_dead_letter("web/Hook")).unwrap(),
        None
    );
    s.advance("web/Hook", batch(10, 7, 0, &[(3, "x"), (6, "y"), (8, "z")]));
    let oldest = |s: &Subject| s.on(s.book.oldest_open_dead_letter("web/Hook")).unwrap();
    assert_eq!(oldest(s), Some(3));
    // Another destination's letters do not hold this one's events.
    assert_eq!(
        s.on(s.book.oldest_open_dead_letter("web/Else")).unwrap(),
        None
    );
    s.on(s.book.replayed(s.letter_id("web/Hook", 3), None))
        .unwrap();
    assert_eq!(oldest(s), Some(6));
    // A failed replay keeps it.
    s.on(s
        .book
        .replayed(s.letter_id("web/Hook", 6), Some("still".into())))
        .unwrap();
    assert_eq!(oldest(s), Some(6));
    for seq in [6, 8] {
        s.on(s.book.replayed(s.letter_id("web/Hook", seq), None))
            .unwrap();
    }
    assert_eq!(oldest(s), None);
}

fn a_dead_letters_reason_is_found_by_destination_and_seq_while_open(s: &Subject) {
    for destination in ["web/A", "web/B"] {
        s.progress(destination);
    }
    s.advance("web/A", batch(5, 4, 0, &[(5, "HTTP 400: bad")]));
    let reason = |d: &str, seq: i64| s.on(s.book.dead_reason(d, seq)).unwrap();
    assert_eq!(reason("web/A", 5).as_deref(), Some("HTTP 400: bad"));
    assert_eq!(reason("web/A", 4), None);
    assert_eq!(reason("web/B", 5), None);
    s.on(s.book.replayed(s.letter_id("web/A", 5), None))
        .unwrap();
    assert_eq!(reason("web/A", 5), None);
}

fn a_reason_holding_nul_never_fails_a_batch(s: &Subject) {
    s.progress("web/Hook");
    // A destination's answer is quoted in the reason, and may hold anything.
    s.advance("web/Hook", batch(2, 1, 0, &[(2, "HTTP 400: bad \0 byte")]));
    assert_eq!(s.progress("web/Hook"), (2, 1, 1, 0));
    let letters = s.letters(Some("web/Hook"), None, 100);
    assert_eq!(letters.len(), 1);
    assert!(
        letters[0].2.starts_with("HTTP 400: bad ") && letters[0].2.ends_with(" byte"),
        "{:?}",
        letters[0].2
    );
    // A failed replay's reason too.
    let id = s.letter_id("web/Hook", 2);
    s.on(s.book.replayed(id, Some("again \0".into()))).unwrap();
    assert!(
        s.letters(Some("web/Hook"), None, 100)[0]
            .2
            .starts_with("again ")
    );
}

fn the_bookkeeping_survives_a_restart(s: &Subject) {
    s.progress("web/Hook");
    s.advance(
        "web/Hook",
        batch(12, 9, 1, &[(7, "HTTP 400"), (11, "HTTP 413")]),
    );
    s.on(s.book.replayed(s.letter_id("web/Hook", 7), None))
        .unwrap();
    let again = s.reopen();
    assert_eq!(progress_of(s, &*again, "web/Hook"), (12, 10, 1, 1));
    let letters = s
        .on(again.dead_letters(Some("web/Hook".into()), None, 100))
        .unwrap();
    let open: Vec<(i64, &str)> = letters.iter().map(|d| (d.seq, d.reason.as_str())).collect();
    assert_eq!(open, [(11, "HTTP 413")]);
    assert_eq!(
        s.on(again.oldest_open_dead_letter("web/Hook")).unwrap(),
        Some(11)
    );
}

fn a_lone_collector_holds_every_lease_and_keeps_it(s: &Subject) {
    let lease = s.lease("web/Hook");
    assert!(!lease.took_over, "nobody held it before");
    assert!(s.on(s.book.renew("web/Hook", lease)).unwrap());
    s.on(s.book.progress("web/Hook", 0)).unwrap();
    assert!(
        s.on(s.book.advance("web/Hook", lease, batch(4, 4, 0, &[])))
            .unwrap()
    );
    // Released on a clean stop, and taken again on the next start.
    s.on(s.book.release("web/Hook", lease)).unwrap();
    let again = s.lease("web/Hook");
    assert!(!again.took_over, "a released lease is no takeover");
    assert!(
        s.on(s.book.advance("web/Hook", again, batch(6, 2, 0, &[])))
            .unwrap()
    );
    assert_eq!(s.progress("web/Hook"), (6, 6, 0, 0));
}

// What only a shared book has: two collectors on one database.

/// Two collectors' books on one fresh database.
fn two_books() -> (Subject, Arc<dyn DeliveryBook>) {
    let s = Subject::postgres();
    let other = s.reopen();
    (s, other)
}

/// Makes `destination`'s lease expire now, as if its holder stopped renewing it long ago.
fn expire(s: &Subject, destination: &str) {
    let Home::Postgres { url, .. } = &s.home else {
        panic!("leases expire only in a shared book");
    };
    s.on(async {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
            .execute(
                "UPDATE delivery_cursors SET expires_at = now() - interval '1 second'
                 WHERE destination = $1",
                &[&destination],
            )
            .await
            .unwrap();
    });
}

#[test]
fn a_shared_lease_is_held_by_one_collector_until_released() {
    let (s, other) = two_books();
    let first = s.lease("web/Hook");
    assert_eq!(s.on(other.acquire("web/Hook")).unwrap(), None, "held twice");
    // The holder taking it again (a restart of its lane) keeps it, with a new epoch.
    s.on(s.book.release("web/Hook", first)).unwrap();
    let second = s
        .on(other.acquire("web/Hook"))
        .unwrap()
        .expect("free once released");
    assert!(second.epoch > first.epoch, "{first:?} then {second:?}");
    assert!(!second.took_over, "a released lease is no takeover");
    assert_eq!(s.on(s.book.acquire("web/Hook")).unwrap(), None);
}

#[test]
fn a_lost_lease_moves_no_cursor_writes_no_dead_letter_and_cannot_be_renewed() {
    let (s, other) = two_books();
    let old = s.lease("web/Hook");
    s.advance("web/Hook", batch(5, 5, 0, &[]));
    expire(&s, "web/Hook");
    let new = s
        .on(other.acquire("web/Hook"))
        .unwrap()
        .expect("an expired lease is free");
    assert!(new.took_over && new.epoch > old.epoch, "{old:?} {new:?}");
    // The old holder, paused past its expiry, wakes up and reports a batch: fenced.
    let fenced = s
        .on(s
            .book
            .advance("web/Hook", old, batch(9, 3, 0, &[(8, "HTTP 400")])))
        .unwrap();
    assert!(!fenced, "a lost lease moved the cursor");
    assert!(
        !s.on(s.book.renew("web/Hook", old)).unwrap(),
        "renewed a lost lease"
    );
    // Its release does not free the new holder's lease either.
    s.on(s.book.release("web/Hook", old)).unwrap();
    assert_eq!(s.on(s.book.acquire("web/Hook")).unwrap(), None);
    assert_eq!(s.progress("web/Hook"), (5, 5, 0, 0));
    assert!(s.letters(None, None, 100).is_empty());
    // The new holder moves on from the stored cursor.
    assert!(
        s.on(other.advance("web/Hook", new, batch(9, 4, 0, &[])))
            .unwrap()
    );
    assert_eq!(s.progress("web/Hook"), (9, 9, 0, 0));
}

#[test]
fn events_resent_after_a_takeover_are_counted_as_redelivered() {
    let (s, other) = two_books();
    s.lease("web/Hook");
    s.advance("web/Hook", batch(5, 5, 0, &[]));
    expire(&s, "web/Hook");
    let new = s.on(other.acquire("web/Hook")).unwrap().unwrap();
    assert!(new.took_over);
    let mut first = batch(8, 3, 0, &[]);
    first.redelivered = 3;
    assert!(s.on(other.advance("web/Hook", new, first)).unwrap());
    let p = s.on(s.book.progress("web/Hook", 0)).unwrap();
    assert_eq!((p.cursor, p.delivered, p.redelivered), (8, 8, 3));
}
