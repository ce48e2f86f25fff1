//! The `trackway` client to the collector to the admin API, byte for byte.

use std::time::{Duration, UNIX_EPOCH};

use serde_json::{Map, Value, json};
use std::sync::{Arc, Mutex};

use trackway::transport::{HttpTransport, Request, Response, Transport, TransportError};
use trackway::{Analytics, Compression, Identify, Message, Track};
use trackway_protocol::{EncodeOptions, encode_message};

use crate::support::{TestServer, WRITE_KEY};

#[test]
fn what_the_client_sends_is_what_the_admin_api_returns() {
    round_trip(Compression::Auto, "gzip");
}

#[test]
fn what_the_client_sends_in_zstd_is_what_the_admin_api_returns() {
    round_trip(Compression::Zstd, "zstd");
}

/// A transport that notes each request's `Content-Encoding`, then sends it for real.
struct Noting {
    inner: HttpTransport,
    encodings: Arc<Mutex<Vec<String>>>,
}

impl Transport for Noting {
    fn send(&self, request: &Request<'_>) -> Result<Response, TransportError> {
        let encoding = request.header("content-encoding").unwrap_or("none");
        self.encodings.lock().unwrap().push(encoding.to_owned());
        self.inner.send(request)
    }
}

#[test]
fn the_client_moves_to_zstd_after_the_collectors_first_answer() {
    let server = TestServer::start();
    let encodings = Arc::new(Mutex::new(Vec::new()));
    let analytics = Analytics::builder(WRITE_KEY)
        .host(&server.url)
        .transport(Noting {
            inner: HttpTransport::with_timeout(Duration::from_secs(30)),
            encodings: Arc::clone(&encodings),
        })
        .build()
        .unwrap();
    for n in 0..3 {
        analytics
            .enqueue(
                Track::new("Step")
                    .user_id("u1")
                    .message_id(format!("step-{n}")),
            )
            .unwrap();
        let report = analytics.flush(Duration::from_secs(30));
        assert!(report.is_clean(), "{report}");
    }
    assert_eq!(*encodings.lock().unwrap(), ["gzip", "zstd", "zstd"]);
    let stored = server.events("");
    let mut ids: Vec<&str> = stored
        .iter()
        .map(|e| e["messageId"].as_str().unwrap_or_default())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, ["step-0", "step-1", "step-2"]);
}

/// Sends two messages compressed as `compression` says, in one request whose encoding must
/// be `encoding` (taken at once: a 415 would make the client send it again in gzip), and
/// checks that they are stored byte for byte.
fn round_trip(compression: Compression, encoding: &str) {
    let server = TestServer::start();
    let encodings = Arc::new(Mutex::new(Vec::new()));
    let analytics = Analytics::builder(WRITE_KEY)
        .host(&server.url)
        .transport(Noting {
            inner: HttpTransport::with_timeout(Duration::from_secs(30)),
            encodings: Arc::clone(&encodings),
        })
        .compression(compression)
        .build()
        .unwrap();
    let at = UNIX_EPOCH + Duration::from_millis(1_790_000_000_123);
    let messages: Vec<Message> = vec![
        Track::new("Order Completed")
            .user_id("user-é-1")
            .properties(json!({"revenue": 42.5, "items": [{"sku": "A\"1", "qty": 2}], "note": "line\nbreak"}))
            .context(json!({"ip": "203.0.113.7"}))
            .integration("Mixpanel", false)
            .message_id("e2e-1")
            .timestamp(at)
            .into(),
        Identify::new()
            .anonymous_id("anon-9")
            .traits(json!({"zeta": 1, "alpha": {"nested": [true, null, 1.5e-7]}}))
            .message_id("e2e-2")
            .timestamp(at)
            .into(),
    ];
    for message in &messages {
        analytics.enqueue(message.clone()).unwrap();
    }
    let report = analytics.shutdown(Duration::from_secs(30));
    assert!(report.is_clean(), "{report}");
    assert_eq!(*encodings.lock().unwrap(), [encoding]);

    let library = ("trackway", env!("CARGO_PKG_VERSION"));
    let options = EncodeOptions::new(Some(library), Map::new());
    let stored = server.events("");
    // Newest first: reversed, they are in the order sent. Checked before the zip below, which
    // would compare nothing if nothing was stored.
    let stored_ids: Vec<&str> = stored
        .iter()
        .rev()
        .map(|e| e["messageId"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(stored_ids, ["e2e-1", "e2e-2"]);
    for (message, event) in messages.iter().zip(stored.iter().rev()) {
        let mut sent = Vec::new();
        encode_message(message, &options, &mut sent);
        // Undo what the server adds: its own fields, and the skew-corrected timestamp
        // (the client's is kept as originalTimestamp).
        let mut event = event.as_object().unwrap().clone();
        let original = event.remove("originalTimestamp").unwrap();
        event.insert("timestamp".into(), original);
        for server_field in ["receivedAt", "sentAt", "_trackway"] {
            event.remove(server_field);
        }
        // And the sender's address, added where the message has none (a message's own is
        // kept: the first one's 203.0.113.7).
        if let Some(Value::Object(context)) = event.get_mut("context")
            && context.get("ip") == Some(&json!("127.0.0.1"))
        {
            context.remove("ip");
        }
        assert_eq!(
            Value::Object(event).to_string(),
            String::from_utf8(sent).unwrap(),
            "byte for byte, key order included"
        );
    }
}
