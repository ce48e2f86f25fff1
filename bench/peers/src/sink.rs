//! The loopback "null sink": a Tracking API batch endpoint that decodes (gzip, zstd or none)
//! and counts every request, then answers `200 {"success":true}`.

use std::borrow::Cow;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context as _;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::header::{CONTENT_ENCODING, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Deserialize;
use serde::de::IgnoredAny;

/// Prefix of the sink's thread names, so its CPU time can be told apart from the libraries'.
pub const THREAD_NAME: &str = "sink-worker";

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    gzip_requests: AtomicU64,
    zstd_requests: AtomicU64,
    bad_requests: AtomicU64,
    messages: AtomicU64,
    non_track: AtomicU64,
    without_message_id: AtomicU64,
    body_bytes: AtomicU64,
    json_bytes: AtomicU64,
}

/// What the sink has counted so far.
#[derive(Debug, Clone, Copy, Default)]
pub struct Snapshot {
    /// Requests received.
    pub requests: u64,
    /// Requests with `Content-Encoding: gzip`.
    pub gzip_requests: u64,
    /// Requests with `Content-Encoding: zstd`.
    pub zstd_requests: u64,
    /// Requests that could not be decoded (answered 400).
    pub bad_requests: u64,
    /// Messages in the `batch` arrays of decoded requests.
    pub messages: u64,
    /// Of those, messages whose `type` was not `track`.
    pub non_track: u64,
    /// Of those, messages without a `messageId`.
    pub without_message_id: u64,
    /// Request body bytes as received (compressed when gzipped).
    pub body_bytes: u64,
    /// Request body bytes after decompression.
    pub json_bytes: u64,
}

impl Snapshot {
    /// The counts from `earlier` to `self`.
    pub fn since(&self, earlier: &Snapshot) -> Snapshot {
        Snapshot {
            requests: self.requests - earlier.requests,
            gzip_requests: self.gzip_requests - earlier.gzip_requests,
            zstd_requests: self.zstd_requests - earlier.zstd_requests,
            bad_requests: self.bad_requests - earlier.bad_requests,
            messages: self.messages - earlier.messages,
            non_track: self.non_track - earlier.non_track,
            without_message_id: self.without_message_id - earlier.without_message_id,
            body_bytes: self.body_bytes - earlier.body_bytes,
            json_bytes: self.json_bytes - earlier.json_bytes,
        }
    }
}

/// A running sink on its own multi-threaded tokio runtime.
pub struct Sink {
    url: String,
    counters: Arc<Counters>,
    _runtime: tokio::runtime::Runtime,
}

impl Sink {
    /// Binds 127.0.0.1:0 and starts serving on `threads` worker threads.
    pub fn start(threads: usize) -> anyhow::Result<Sink> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name(THREAD_NAME)
            .enable_all()
            .build()
            .context("building the sink runtime")?;
        let counters = Arc::new(Counters::default());
        let app = Router::new()
            .route("/v1/batch", post(batch))
            .layer(DefaultBodyLimit::max(16 << 20))
            .with_state(Arc::clone(&counters));
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(SocketAddr::from((
                [127, 0, 0, 1],
                0,
            ))))
            .context("binding the sink")?;
        let addr = listener.local_addr()?;
        runtime.spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                eprintln!("sink stopped: {error}");
            }
        });
        Ok(Sink {
            url: format!("http://{addr}"),
            counters,
            _runtime: runtime,
        })
    }

    /// The base URL to give a client as its host.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The counters now.
    pub fn snapshot(&self) -> Snapshot {
        let c = &*self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Acquire);
        Snapshot {
            requests: get(&c.requests),
            gzip_requests: get(&c.gzip_requests),
            zstd_requests: get(&c.zstd_requests),
            bad_requests: get(&c.bad_requests),
            messages: get(&c.messages),
            non_track: get(&c.non_track),
            without_message_id: get(&c.without_message_id),
            body_bytes: get(&c.body_bytes),
            json_bytes: get(&c.json_bytes),
        }
    }
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    batch: Vec<Item<'a>>,
}

#[derive(Deserialize)]
struct Item<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(rename = "messageId")]
    message_id: Option<IgnoredAny>,
}

async fn batch(State(c): State<Arc<Counters>>, headers: HeaderMap, body: Bytes) -> Response {
    c.requests.fetch_add(1, Ordering::Relaxed);
    c.body_bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
    let encoding = headers
        .get(CONTENT_ENCODING)
        .map(|v| v.as_bytes().to_ascii_lowercase());
    let json: Cow<'_, [u8]> = match encoding.as_deref() {
        Some(b"gzip") => {
            c.gzip_requests.fetch_add(1, Ordering::Relaxed);
            let mut out = Vec::with_capacity(body.len() * 8);
            match flate2::read::MultiGzDecoder::new(&body[..]).read_to_end(&mut out) {
                Ok(_) => Cow::Owned(out),
                Err(_) => return bad(&c),
            }
        }
        Some(b"zstd") => {
            c.zstd_requests.fetch_add(1, Ordering::Relaxed);
            match zstd::stream::decode_all(&body[..]) {
                Ok(out) => Cow::Owned(out),
                Err(_) => return bad(&c),
            }
        }
        None | Some(b"identity") => Cow::Borrowed(&body[..]),
        Some(_) => return bad(&c),
    };
    c.json_bytes.fetch_add(json.len() as u64, Ordering::Relaxed);
    let Ok(envelope) = serde_json::from_slice::<Envelope<'_>>(&json) else {
        return bad(&c);
    };
    let non_track = envelope.batch.iter().filter(|m| m.kind != "track").count();
    let without_id = envelope
        .batch
        .iter()
        .filter(|m| m.message_id.is_none())
        .count();
    c.non_track.fetch_add(non_track as u64, Ordering::Relaxed);
    c.without_message_id
        .fetch_add(without_id as u64, Ordering::Relaxed);
    // Last, with Release, so that a reader who sees the count sees the rest.
    c.messages
        .fetch_add(envelope.batch.len() as u64, Ordering::Release);
    (
        StatusCode::OK,
        [(CONTENT_TYPE, "application/json")],
        r#"{"success":true}"#,
    )
        .into_response()
}

fn bad(c: &Counters) -> Response {
    c.bad_requests.fetch_add(1, Ordering::Release);
    (StatusCode::BAD_REQUEST, r#"{"success":false}"#).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Posts `body` with `encoding` to a fresh sink; the sink's counts after it.
    fn post(encoding: &str, body: Vec<u8>) -> Snapshot {
        let sink = Sink::start(1).expect("sink");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let status = runtime.block_on(async {
            reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("client")
                .post(format!("{}/v1/batch", sink.url()))
                .header("content-encoding", encoding)
                .body(body)
                .send()
                .await
                .expect("request")
                .status()
        });
        assert!(status.is_success() || status.as_u16() == 400);
        sink.snapshot()
    }

    const BATCH: &str =
        r#"{"batch":[{"type":"track","messageId":"a"},{"type":"identify"}],"sentAt":"x"}"#;

    #[test]
    fn the_sink_decodes_zstd_and_counts_it() {
        let body = zstd::stream::encode_all(BATCH.as_bytes(), 3).expect("zstd");
        let sent = body.len() as u64;
        let counted = post("zstd", body);
        assert_eq!(
            (counted.zstd_requests, counted.messages, counted.non_track),
            (1, 2, 1)
        );
        assert_eq!(counted.without_message_id, 1);
        assert_eq!(
            (counted.body_bytes, counted.json_bytes),
            (sent, BATCH.len() as u64)
        );
    }

    #[test]
    fn a_body_that_is_not_the_encoding_it_names_is_counted_bad() {
        let counted = post("zstd", BATCH.as_bytes().to_vec());
        assert_eq!((counted.bad_requests, counted.messages), (1, 0));
        let counted = post("br", BATCH.as_bytes().to_vec());
        assert_eq!((counted.bad_requests, counted.messages), (1, 0));
    }
}
