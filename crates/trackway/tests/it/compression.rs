//! Which encoding bodies go out in: gzip to a server that does not list zstd, zstd once one
//! does, and gzip again, with nothing lost, when one refuses zstd with a 415.

use serde_json::json;
use trackway::{Analytics, Compression};
use trackway_testkit::{FakeApi, Received, Reply};

use crate::support::{GENEROUS, client_for, ids};

/// Sends `batches` batches of two tracks each, one flush at a time, each delivered in full,
/// their ids starting with `prefix`. Returns the ids sent, in order.
fn send_batches(analytics: &Analytics, prefix: &str, batches: usize) -> Vec<String> {
    let mut sent = Vec::new();
    for batch in 0..batches {
        for n in 0..2 {
            let id = format!("{prefix}{batch}-m{n}");
            analytics
                .enqueue(
                    trackway::Track::new("Order Completed")
                        .user_id("u1")
                        .properties(json!({"batch": batch, "n": n}))
                        .message_id(&id),
                )
                .unwrap();
            sent.push(id);
        }
        let report = analytics.flush(GENEROUS);
        assert!(report.is_clean(), "batch {batch}: {report}");
        assert_eq!(report.delivered, 2, "batch {batch}: {report}");
    }
    sent
}

/// Each request's `Content-Encoding`, in order ("none" for none).
fn encodings(requests: &[Received]) -> Vec<String> {
    requests
        .iter()
        .map(|r| r.header("content-encoding").unwrap_or("none").to_owned())
        .collect()
}

/// The ids of the messages the fake accepted, in order.
fn accepted_ids(api: &FakeApi) -> Vec<String> {
    ids(&api.accepted_messages())
}

#[test]
fn a_server_that_does_not_list_zstd_gets_gzip_throughout() {
    // Segment lists nothing; another server may list what it takes without zstd.
    for listed in [None, Some("gzip, deflate"), Some("zstd;q=0, gzip")] {
        let api = FakeApi::start();
        api.set_accept_encoding(listed);
        let analytics = client_for(&api).build().unwrap();
        let sent = send_batches(&analytics, "b", 4);
        let requests = api.requests();
        assert_eq!(encodings(&requests), ["gzip"; 4], "{listed:?}");
        assert_eq!(accepted_ids(&api), sent, "{listed:?}");
    }
}

#[test]
fn a_server_that_lists_zstd_gets_zstd_from_its_first_answer_on() {
    let api = FakeApi::start();
    api.set_accept_encoding(Some("zstd, gzip"));
    let analytics = client_for(&api).build().unwrap();
    let sent = send_batches(&analytics, "b", 4);
    let requests = api.requests();
    assert_eq!(encodings(&requests), ["gzip", "zstd", "zstd", "zstd"]);
    // The fake decoded each zstd body: the same messages, byte for byte as JSON.
    assert_eq!(accepted_ids(&api), sent);
    let gzip_message = &requests[0].messages()[0];
    let zstd_message = &requests[1].messages()[0];
    assert_eq!(zstd_message["properties"], json!({"batch": 1, "n": 0}));
    assert_eq!(gzip_message["context"], zstd_message["context"]);
    let stats = analytics.stats();
    assert_eq!((stats.delivered, stats.rejected, stats.retried), (8, 0, 0));
}

#[test]
fn a_415_to_zstd_sends_that_batch_again_in_gzip_and_the_next_ones_too() {
    let api = FakeApi::start();
    // Every answer lists zstd: behind one load balancer, the instances that take it keep
    // saying so. After a 415 the client must not believe them at once.
    api.set_accept_encoding(Some("zstd, gzip"));
    let analytics = client_for(&api).build().unwrap();
    let mut sent = send_batches(&analytics, "b", 2);
    assert_eq!(encodings(&api.requests()), ["gzip", "zstd"]);
    // An instance that does not take zstd answers from now on.
    api.set_rule(|request| {
        (request.header("content-encoding") == Some("zstd")).then_some(Reply::Status(415))
    });
    sent.extend(
        send_batches(&analytics, "b", 3)
            .into_iter()
            .map(|id| id.replacen('b', "c", 0)),
    );
    let requests = api.requests();
    assert_eq!(
        encodings(&requests),
        ["gzip", "zstd", "zstd", "gzip", "gzip", "gzip"]
    );
    assert_eq!(requests[2].reply, Reply::Status(415));
    // The refused batch went out again with the same messages (same ids), and each message
    // was taken exactly once.
    assert_eq!(ids(&requests[2].messages()), ids(&requests[3].messages()));
    assert_eq!(
        accepted_ids(&api),
        sent,
        "each message taken once, in order"
    );
    let stats = analytics.stats();
    assert_eq!(stats.delivered, 10, "{stats:?}");
    assert_eq!(stats.rejected, 0, "{stats:?}");
    assert_eq!(stats.dropped.total(), 0, "{stats:?}");
    assert_eq!(stats.pending(), 0, "{stats:?}");
}

#[test]
fn an_explicit_choice_holds_whatever_the_server_lists() {
    let cases: [(Compression, Option<&str>, [&str; 3]); 3] = [
        (Compression::Gzip, Some("zstd, gzip"), ["gzip"; 3]),
        (Compression::None, Some("zstd, gzip"), ["none"; 3]),
        (Compression::Zstd, None, ["zstd"; 3]),
    ];
    for (compression, listed, expected) in cases {
        let api = FakeApi::start();
        api.set_accept_encoding(listed);
        let analytics = client_for(&api).compression(compression).build().unwrap();
        let sent = send_batches(&analytics, "b", 3);
        assert_eq!(encodings(&api.requests()), expected, "{compression:?}");
        assert_eq!(accepted_ids(&api), sent, "{compression:?}");
    }
}
