//! The storage seam's contract, checked against both stores: every behaviour that needs no
//! second process is written once here and run on SQLite and on a real PostgreSQL.
//!
//! PostgreSQL-only behaviours (two collectors on one database, transactions held open, the
//! schema's versions) are in `store_postgres`.

use std::sync::Arc;
use std::time::Duration;

use trackway_collector::storage::postgres::PostgresStore;
use trackway_collector::storage::sqlite::SqliteStore;
use trackway_collector::storage::{
    NewEvent, Query, Store, TRAFFIC_BUCKET_MS, TRAFFIC_RETENTION, traffic_minute,
};
use trackway_testkit::postgres::{self as pg, TestPostgres};

/// The dedup window of these tests: Segment's 24 hours.
pub(crate) const WINDOW: Duration = Duration::from_secs(24 * 60 * 60);
const WINDOW_MS: i64 = 24 * 60 * 60 * 1000;

/// A store under test and what keeps it alive (a directory, a database server).
pub(crate) struct Subject {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) runtime: tokio::runtime::Runtime,
    _dir: Option<tempfile::TempDir>,
    _server: Option<Arc<TestPostgres>>,
}

impl Subject {
    fn sqlite() -> Subject {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path(), WINDOW).unwrap();
        Subject {
            store: Arc::new(store),
            runtime: runtime(),
            _dir: Some(dir),
            _server: None,
        }
    }

    fn postgres() -> Subject {
        let (server, url) = postgres_database("contract");
        let store = PostgresStore::open(&url, WINDOW).unwrap();
        Subject {
            store: Arc::new(store),
            runtime: runtime(),
            _dir: None,
            _server: Some(server),
        }
    }

    pub(crate) fn append(&self, events: Vec<NewEvent>) -> (usize, usize) {
        let appended = self.runtime.block_on(self.store.append(events)).unwrap();
        (appended.stored, appended.duplicates)
    }

    fn after(&self, source: &str, after: i64) -> Vec<(i64, String)> {
        let events = self
            .runtime
            .block_on(self.store.read_after(source, after, 10_000))
            .unwrap();
        events
            .into_iter()
            .map(|e| (e.seq, id_of(&e.body)))
            .collect()
    }

    fn query(&self, query: Query) -> Vec<String> {
        let events = self.runtime.block_on(self.store.query(query)).unwrap();
        events.into_iter().map(|e| id_of(&e.body)).collect()
    }

    /// The traffic since `minute`, of `source` or all, as tuples (minute, source, type,
    /// rejected, count).
    fn traffic(&self, minute: i64, source: Option<&str>) -> Vec<(i64, String, String, bool, u64)> {
        let rows = self
            .runtime
            .block_on(self.store.traffic(minute, source))
            .unwrap();
        rows.into_iter()
            .map(|r| (r.minute, r.source, r.kind, r.rejected, r.count))
            .collect()
    }

    fn counts(&self) -> Vec<(String, String, bool, u64)> {
        let mut counts: Vec<_> = self
            .runtime
            .block_on(self.store.counts())
            .unwrap()
            .into_iter()
            .map(|c| (c.source, c.kind, c.rejected, c.count))
            .collect();
        counts.sort();
        counts
    }
}

/// A fresh database on the server shared by the tests running now, and its URL.
pub(crate) fn postgres_database(prefix: &str) -> (Arc<TestPostgres>, String) {
    let server = pg::shared().unwrap();
    let url = server.create_database(&pg::database_name(prefix)).unwrap();
    (server, url)
}

pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The `messageId` written in a body made by [`event`].
fn id_of(body: &str) -> String {
    let value: serde_json::Value = serde_json::from_str(body).unwrap();
    value["messageId"].as_str().unwrap_or_default().to_owned()
}

/// An accepted track event of `source`, received at `at` (ms).
pub(crate) fn event(source: &str, id: &str, at: i64) -> NewEvent {
    NewEvent {
        source: Arc::from(source),
        message_id: id.to_owned(),
        kind: "track".into(),
        user_id: Some(format!("user-{id}")),
        anonymous_id: None,
        label: Some("Clicked".into()),
        received_at: at,
        rejected: None,
        body: serde_json::json!({"type": "track", "messageId": id, "event": "Clicked"}).to_string(),
    }
}

fn rejected(source: &str, id: &str, at: i64) -> NewEvent {
    NewEvent {
        rejected: Some("a reason".into()),
        ..event(source, id, at)
    }
}

fn ids(events: &[(i64, String)]) -> Vec<&str> {
    events.iter().map(|(_, id)| id.as_str()).collect()
}

/// Runs each behaviour against SQLite and against PostgreSQL.
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
    a_repeat_within_the_window_is_stored_once_and_after_it_again,
    a_rejected_copy_never_makes_a_later_valid_event_a_duplicate,
    copies_within_one_request_are_stored_once,
    nul_characters_are_stored_and_never_fail_a_group,
    delivery_reads_accepted_events_in_order_after_a_cursor,
    the_admin_filters_and_paging_select_newest_first,
    counts_follow_appends_and_pruning,
    subscribers_hear_each_committed_event_once_in_order,
    concurrent_copies_of_one_message_are_stored_once,
    traffic_counts_each_minute_by_type_and_status_and_outlives_the_events,
);

fn a_repeat_within_the_window_is_stored_once_and_after_it_again(s: &Subject) {
    assert_eq!(s.append(vec![event("web", "a", 1_000)]), (1, 0));
    assert_eq!(
        s.append(vec![event("web", "a", 1_000 + WINDOW_MS - 1)]),
        (0, 1)
    );
    // Another source's copy is its own event.
    assert_eq!(s.append(vec![event("jobs", "a", 2_000)]), (1, 0));
    // Past the window the same id is a new event, and the window starts again from it.
    assert_eq!(s.append(vec![event("web", "a", 1_000 + WINDOW_MS)]), (1, 0));
    assert_eq!(
        s.append(vec![event("web", "a", 1_000 + WINDOW_MS + 5)]),
        (0, 1)
    );
    assert_eq!(ids(&s.after("web", 0)), ["a", "a"]);
}

fn a_rejected_copy_never_makes_a_later_valid_event_a_duplicate(s: &Subject) {
    assert_eq!(s.append(vec![rejected("web", "r", 10)]), (1, 0));
    // Another rejected copy is a duplicate of the first.
    assert_eq!(s.append(vec![rejected("web", "r", 11)]), (0, 1));
    // The fixed event is stored; after it, a rejected copy is a duplicate of it.
    assert_eq!(s.append(vec![event("web", "r", 12)]), (1, 0));
    assert_eq!(s.append(vec![rejected("web", "r", 13)]), (0, 1));
    assert_eq!(s.append(vec![event("web", "r", 14)]), (0, 1));
    assert_eq!(
        ids(&s.after("web", 0)),
        ["r"],
        "delivery reads accepted events only"
    );
    let all = s.query(Query {
        limit: 10,
        ..Query::default()
    });
    assert_eq!(all, ["r", "r"]);
}

fn copies_within_one_request_are_stored_once(s: &Subject) {
    let request = vec![
        event("web", "x", 1),
        event("web", "x", 2),
        rejected("web", "y", 3),
        event("web", "y", 4),
        rejected("web", "y", 5),
        event("web", "z", 6),
    ];
    assert_eq!(s.append(request), (4, 2));
    assert_eq!(ids(&s.after("web", 0)), ["x", "y", "z"]);
}

fn nul_characters_are_stored_and_never_fail_a_group(s: &Subject) {
    // Today's key for a rejected message whose id is not a string starts with a NUL, and
    // decoded fields may hold one; the body is JSON, where it is escaped.
    let mut odd = rejected("web", "\0{\"id\":12345}", 5);
    odd.kind = "tr\0ck".into();
    odd.user_id = Some("u\0ser".into());
    odd.label = Some("Cl\0icked".into());
    odd.rejected = Some("a reason with \0 in it".into());
    odd.body =
        serde_json::json!({"type": "tr\u{0}ck", "messageId": 12345, "event": "Cl\u{0}icked"})
            .to_string();
    assert!(odd.body.contains("\\u0000"), "{}", odd.body);
    let mut also = event("web", "n\0ul", 6);
    also.anonymous_id = Some("\0".into());
    let neighbours = vec![
        event("web", "before", 4),
        odd.clone(),
        also,
        event("web", "after", 7),
    ];
    assert_eq!(s.append(neighbours), (4, 0));
    // Its repeat is still recognised by its key.
    assert_eq!(s.append(vec![odd.clone()]), (0, 1));
    let stored = s
        .runtime
        .block_on(s.store.query(Query {
            limit: 10,
            ..Query::default()
        }))
        .unwrap();
    let kept = stored.iter().find(|e| e.rejected.is_some()).unwrap();
    assert_eq!(kept.body, odd.body, "the body is kept byte for byte");
    // A filter naming the value with its NUL finds the event.
    let found = s.query(Query {
        limit: 10,
        user_id: Some("u\0ser".into()),
        ..Query::default()
    });
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(ids(&s.after("web", 0)), ["before", "n\0ul", "after"]);
}

fn delivery_reads_accepted_events_in_order_after_a_cursor(s: &Subject) {
    let events: Vec<NewEvent> = (0..10)
        .map(|i| {
            if i % 3 == 0 {
                rejected("web", &format!("e{i}"), i)
            } else {
                event(["web", "jobs"][i as usize % 2], &format!("e{i}"), i)
            }
        })
        .collect();
    s.append(events);
    let web = s.after("web", 0);
    assert_eq!(ids(&web), ["e2", "e4", "e8"]);
    assert!(web.windows(2).all(|w| w[0].0 < w[1].0), "seqs increase");
    assert_eq!(ids(&s.after("web", web[0].0)), ["e4", "e8"]);
    let lag = s.runtime.block_on(s.store.lag("web", web[0].0)).unwrap();
    assert_eq!(lag, 2);
    let limited = s
        .runtime
        .block_on(s.store.read_after("jobs", 0, 2))
        .unwrap();
    assert_eq!(limited.len(), 2);
    let seqs = vec![web[2].0, web[0].0, 1_000_000];
    let got = s.runtime.block_on(s.store.get(seqs)).unwrap();
    let got: Vec<i64> = got.iter().map(|e| e.seq).collect();
    assert_eq!(got, [web[0].0, web[2].0], "existing ones, oldest first");
}

fn the_admin_filters_and_paging_select_newest_first(s: &Subject) {
    let mut identify = event("web", "i1", 1);
    identify.kind = "identify".into();
    identify.label = None;
    let mut by_anon = event("web", "a1", 2);
    by_anon.user_id = None;
    by_anon.anonymous_id = Some("user-t1".into());
    s.append(vec![
        event("web", "t1", 0),
        identify,
        by_anon,
        event("web", "t2", 3),
    ]);
    let all = |query: Query| s.query(Query { limit: 10, ..query });
    assert_eq!(all(Query::default()), ["t2", "a1", "i1", "t1"]);
    let tracks = all(Query {
        kind: Some("track".into()),
        ..Query::default()
    });
    assert_eq!(tracks, ["t2", "a1", "t1"]);
    let user = all(Query {
        user_id: Some("user-t1".into()),
        ..Query::default()
    });
    assert_eq!(user, ["a1", "t1"], "userId or anonymousId");
    let labelled = all(Query {
        label: Some("Clicked".into()),
        ..Query::default()
    });
    assert_eq!(labelled, ["t2", "a1", "t1"]);
    let page = s
        .runtime
        .block_on(s.store.query(Query {
            limit: 2,
            ..Query::default()
        }))
        .unwrap();
    let next = all(Query {
        before: Some(page[1].seq),
        ..Query::default()
    });
    assert_eq!(next, ["i1", "t1"]);
}

fn counts_follow_appends_and_pruning(s: &Subject) {
    let mut other = rejected("jobs", "o", 3);
    other.kind = "made-up".into();
    s.append(vec![
        event("web", "a", 1),
        event("web", "b", 2),
        other,
        rejected("web", "c", 4),
        event("web", "d", 50),
    ]);
    let web_accepted = |n| ("web".to_owned(), "track".to_owned(), false, n);
    assert_eq!(
        s.counts(),
        [
            ("jobs".to_owned(), "other".to_owned(), true, 1),
            web_accepted(3),
            ("web".to_owned(), "track".to_owned(), true, 1),
        ]
    );
    let seq_of_b = s.after("web", 0)[1].0;
    // Received before 10 and at most b's seq: a and b (c was stored after b).
    let pruned = s
        .runtime
        .block_on(s.store.prune("web", 10, seq_of_b))
        .unwrap();
    assert_eq!(pruned, 2);
    assert_eq!(ids(&s.after("web", 0)), ["d"]);
    assert_eq!(s.counts()[1], web_accepted(1));
}

fn subscribers_hear_each_committed_event_once_in_order(s: &Subject) {
    let mut live = s.store.subscribe();
    s.append(vec![event("web", "1", 1), event("web", "1", 1)]);
    s.append(vec![event("web", "2", 2), rejected("jobs", "3", 3)]);
    // Subscribers hear of a commit just after its requests are answered.
    let heard: Vec<String> = s.runtime.block_on(async {
        let mut heard = Vec::new();
        while let Ok(Ok(event)) = tokio::time::timeout(Duration::from_secs(2), live.recv()).await {
            heard.push(id_of(&event.body));
        }
        heard
    });
    assert_eq!(heard, ["1", "2", "3"]);
}

fn concurrent_copies_of_one_message_are_stored_once(s: &Subject) {
    const TASKS: usize = 8;
    const ROUNDS: usize = 20;
    let results = s.runtime.block_on(async {
        let tasks: Vec<_> = (0..TASKS)
            .map(|task| {
                let store = Arc::clone(&s.store);
                tokio::spawn(async move {
                    let mut stored = 0;
                    for round in 0..ROUNDS {
                        let copy = event("web", &format!("m{round}"), (task * 10 + round) as i64);
                        stored += store.append(vec![copy]).await.unwrap().stored;
                    }
                    stored
                })
            })
            .collect();
        let mut total = 0;
        for task in tasks {
            total += task.await.unwrap();
        }
        total
    });
    assert_eq!(results, ROUNDS);
    assert_eq!(s.after("web", 0).len(), ROUNDS);
}

fn traffic_counts_each_minute_by_type_and_status_and_outlives_the_events(s: &Subject) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let m = traffic_minute(now) - 5;
    let at = |minute: i64, second: i64| minute * TRAFFIC_BUCKET_MS + second * 1000;
    let of_kind = |kind: &str, mut e: NewEvent| {
        e.kind = kind.into();
        e
    };
    // Older than the traffic is kept: pruned with the events.
    let old = now - TRAFFIC_RETENTION.as_millis() as i64 - 2 * TRAFFIC_BUCKET_MS;
    s.append(vec![event("web", "old", old)]);
    s.append(vec![
        event("web", "a", at(m, 1)),
        event("web", "b", at(m, 59)),
        of_kind("identify", event("web", "c", at(m, 30))),
        event("web", "d", at(m + 1, 0)),
        rejected("web", "e", at(m + 1, 2)),
        of_kind("made-up", event("jobs", "f", at(m + 1, 3))),
    ]);
    // A duplicate is not traffic.
    assert_eq!(s.append(vec![event("web", "a", at(m + 1, 4))]), (0, 1));
    let row = |minute, source: &str, kind: &str, rejected, n| {
        (minute, source.to_owned(), kind.to_owned(), rejected, n)
    };
    let recent = [
        row(m, "web", "identify", false, 1),
        row(m, "web", "track", false, 2),
        row(m + 1, "jobs", "other", false, 1),
        row(m + 1, "web", "track", false, 1),
        row(m + 1, "web", "track", true, 1),
    ];
    assert_eq!(s.traffic(m, None), recent);
    assert_eq!(s.traffic(m + 1, Some("jobs")), [recent[2].clone()]);
    assert_eq!(s.traffic(m + 1, Some("web")), recent[3..]);
    assert_eq!(s.traffic(traffic_minute(old), Some("web")).len(), 5);
    // Retention takes every web event; the chart still shows them, and only the minutes
    // older than the traffic's own retention go.
    s.runtime
        .block_on(s.store.prune("web", now, i64::MAX))
        .unwrap();
    assert!(s.after("web", 0).is_empty());
    assert_eq!(s.traffic(0, None), recent);
}
