//! The Tracking API endpoints: `POST /v1/{identify,track,page,screen,group,alias}`,
//! `/v1/batch` and `/v1/import`, and the aliases Segment's other libraries post to:
//! analytics.js's one-letter paths (`/v1/i`, `/v1/t`, `/v1/p`, `/v1/s`, `/v1/g`, `/v1/a`)
//! and the mobile libraries' (and analytics.js's batching mode's) `/v1/b`. An alias goes
//! through exactly its endpoint's steps; the body is read whatever its `Content-Type`
//! (analytics.js sends `text/plain`, so that nothing but its Basic auth needs a preflight).
//!
//! One request goes through these steps, and answers 200 only after the last:
//!
//! 1. a Basic-auth key no source has is a 401 at once, before the request waits for anything;
//! 2. read the body, at most [`MAX_REQUEST_BYTES`] (400 past that), within the body timeout
//!    and at [`MIN_UPLOAD_BYTES_PER_SECOND`] at least once [`MIN_UPLOAD_GRACE`] has passed
//!    (408 otherwise, which clients retry); its bytes count against
//!    [`MAX_BUFFERED_BODY_BYTES`](crate::MAX_BUFFERED_BODY_BYTES) as they arrive (503 with
//!    `Retry-After` after [`INGEST_SLOT_WAIT`] without room);
//! 3. take one of the [`MAX_CONCURRENT_INGEST`](crate::MAX_CONCURRENT_INGEST) ingest slots,
//!    held until the answer, waiting at most [`INGEST_SLOT_WAIT`] (503 with `Retry-After` past
//!    that). Only a request whose body is all in takes one, so slow or stalled uploads, keyed
//!    or not, never keep a slot from anyone;
//! 4. decompress a `Content-Encoding: gzip` or `zstd` body, capped at the same size (a gzip
//!    or zstd bomb is a 400 after at most that much output); any other encoding is a 415.
//!    Every answer carries `Accept-Encoding: zstd, gzip` (RFC 7694), which is how the client
//!    library learns that it may send zstd here;
//! 5. parse the envelope only: a batch's messages, `context` and `integrations` stay raw JSON
//!    (checked for syntax, nothing built), and of a single message only its `writeKey` is
//!    read (400 if the body is not JSON);
//! 6. authenticate: the Basic key, or else the body's `writeKey` (401 for a missing or unknown
//!    key), and refuse a page whose origin the source does not allow (403; see `cors`). Nothing of the messages has been built yet, so an unauthenticated body costs one
//!    pass over its bytes, not the many times its size that parsed JSON takes;
//! 7. parse the messages: each one's size is checked against [`MAX_MESSAGE_BYTES`] exactly as
//!    sent, and a batch's count against [`MAX_BATCH_MESSAGES`] (400 naming the message index);
//! 8. per message: merge the batch's `context` and `integrations` (the message's keys win),
//!    set `receivedAt`, keep the client's time as `originalTimestamp`, correct `timestamp` by
//!    the clock skew `sentAt - receivedAt`, assign a missing or null `messageId` (any other
//!    non-string one is left for step 9 to reject), drop any `writeKey`;
//! 9. validate each message (`trackway_protocol::validate_json`, and a type other than the six):
//!    invalid ones are stored as rejected with their reason and listed in the response, never
//!    dropped silently;
//! 10. append to the store, durably; a store failure is a 503 with `Retry-After`.

use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Extension;
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use http_body_util::BodyExt;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};
use tokio::sync::{OwnedSemaphorePermit, SemaphorePermit};
use tokio::time::Instant;
use trackway_protocol::{
    Kind, MAX_BATCH_MESSAGES, MAX_MESSAGE_BYTES, MAX_REQUEST_BYTES, validate_json, write_timestamp,
};

use crate::client_ip::{PeerAddr, client_ip};
use crate::error::ApiError;
use crate::state::AppState;
use crate::storage::NewEvent;

/// Ingest requests decoded and stored at once; more wait their turn, for at most
/// [`INGEST_SLOT_WAIT`], once their bodies have arrived.
///
/// This bounds how many bodies are decompressed and decoded at once, not memory in bytes.
/// Decoded JSON takes many times its size: measured with a counting allocator, decoding and
/// validating a 500 KB batch peaks at about 6 MB of heap for realistic track messages and
/// about 28 MB for a body made of tiny JSON objects (`{"a":0}` repeated), so 256 such requests
/// at once can hold several GB. Only authenticated requests get that far: the write key is
/// checked before any message is built.
///
/// A request takes its slot only once its whole body is in, so a client that sends its body
/// slowly (or not at all) never holds one: slow uploads are bounded by
/// [`MIN_UPLOAD_BYTES_PER_SECOND`] and [`MAX_BUFFERED_BODY_BYTES`] instead.
pub const MAX_CONCURRENT_INGEST: usize = 256;

/// The slowest average rate, after [`MIN_UPLOAD_GRACE`], at which an ingest body may arrive;
/// a body that falls behind is answered 408 (retryable) and its connection closed.
///
/// Bodies are read before they take an ingest slot, so a slow body holds no slot; this frees
/// the connection (a file descriptor) and the bytes it holds from a client that trickles
/// bytes or stops sending. 2 KiB/s is below any real uplink (GPRS manages about 5 KB/s), and
/// a body of the largest size needs 17 KB/s anyway to arrive within the default body timeout.
pub const MIN_UPLOAD_BYTES_PER_SECOND: u64 = 2048;

/// How long an ingest body may take before [`MIN_UPLOAD_BYTES_PER_SECOND`] applies: room for
/// a slow link's first round trips (and a `100-continue` exchange) before the rate counts.
/// A client that sends its headers and then nothing is answered 408 after this long.
pub const MIN_UPLOAD_GRACE: Duration = Duration::from_secs(5);

/// The longest an ingest body may pause, once it has started, before it is answered 408 and
/// its connection closed, however far ahead of [`MIN_UPLOAD_BYTES_PER_SECOND`] it is.
///
/// The average rate alone lets a client send 500 KB at once and then stop for minutes (the
/// rate allows 250 s for that much), holding its share of [`MAX_BUFFERED_BODY_BYTES`]
/// until the body timeout: a few hundred such keyless connections, renewed every 30 s, would
/// fill the budget with 4 MB/s. With this bound the same needs about 13 MB/s, a flood rather
/// than a slow client. 10 s rides out the pauses of a real link (TCP's retransmission backoff
/// reaches 3 s, then 6 s).
pub const MAX_BODY_PAUSE: Duration = Duration::from_secs(10);

/// Most bytes of ingest bodies being received at once, over all requests: the memory that
/// bodies still arriving can hold, as much as [`MAX_CONCURRENT_INGEST`] full-size bodies
/// (128 MB). What counts is each body's buffer as allocated (it grows by doubling as bytes
/// arrive), not the declared length, so connections that declare a large
/// `Content-Length` and send little hold next to nothing. A request whose next bytes find the
/// budget spent waits [`INGEST_SLOT_WAIT`] for room, then gets a 503 with `Retry-After`.
pub const MAX_BUFFERED_BODY_BYTES: usize =
    MAX_CONCURRENT_INGEST * trackway_protocol::MAX_REQUEST_BYTES;

/// How long an ingest request waits for one of the [`MAX_CONCURRENT_INGEST`] slots (or for
/// room in [`MAX_BUFFERED_BODY_BYTES`]) before it is answered 503 with `Retry-After` (which
/// clients retry). A request holds a slot for milliseconds (decoding and the commit), so this
/// rides out a burst; a store slow to commit holding every slot delays the others by at most
/// this, and then tells them to back off, instead of keeping their connections waiting.
pub const INGEST_SLOT_WAIT: Duration = Duration::from_secs(2);

/// A batch body, with its messages and batch-wide objects still raw: parsing this checks the
/// whole body's syntax and builds nothing but the list of message slices.
#[derive(Deserialize)]
struct RawBatch<'a> {
    #[serde(borrow)]
    batch: Vec<&'a RawValue>,
    #[serde(default, borrow, rename = "sentAt")]
    sent_at: Option<&'a RawValue>,
    #[serde(default, borrow)]
    context: Option<&'a RawValue>,
    #[serde(default, borrow)]
    integrations: Option<&'a RawValue>,
    #[serde(default, rename = "writeKey")]
    write_key: Option<String>,
}

// The six message types the collector accepts (`Kind::STANDARD`) are also the single-message
// endpoints' paths. `trackway_protocol`'s validation lets any other type through (a client
// may send custom types to other servers); the collector stores those as rejected.

/// `POST /v1/batch` and `POST /v1/b`.
pub(crate) async fn batch(
    State(state): State<Arc<AppState>>,
    peer: Option<Extension<PeerAddr>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    with_accepted_encodings(batch_from(state, peer, headers, body).await)
}

/// `POST /v1/import`: a batch, as [`batch`], except that no `context.ip` is added. This is
/// the path of backfills (`trackway import` sends a file of past events here), where the
/// request comes from the operator's machine: its address on every event would be wrong
/// data that nobody could tell apart afterwards. (analytics-java also posts its live traffic
/// here; a server library's address is not its users' either.)
pub(crate) async fn import(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    with_accepted_encodings(batch_from(state, None, headers, body).await)
}

/// A batch from `peer` (none: no `context.ip` is added).
async fn batch_from(
    state: Arc<AppState>,
    peer: Option<Extension<PeerAddr>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let basic_key = known_basic_key(&state, &headers)?;
    let received = read_body(&state, body).await?;
    let _slot = admit(&state).await?;
    let raw = decode_body(&headers, received, basic_key)?;
    let parsed = parse_batch(&raw.bytes)?;
    let source = authenticate(
        &state,
        raw.basic_key.as_deref(),
        parsed.write_key.as_deref(),
    )?;
    let ip = sender_ip(&state, &source, peer, &headers)?;
    let mut decoded = decode_batch(&parsed)?;
    decoded.envelope.ip = ip;
    store(&state, source, decoded.messages, &decoded.envelope).await
}

/// A batch body, checked and split into messages.
struct Decoded {
    messages: Vec<Map<String, Value>>,
    envelope: Envelope,
}

/// Step 5 of the module doc: the body as a batch envelope, its messages still raw.
fn parse_batch(bytes: &[u8]) -> Result<RawBatch<'_>, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::bad(format!(
            "body must be a JSON object with a `batch` array: {e}"
        ))
    })
}

/// Step 7 of the module doc: the batch's messages, each size-checked, and its envelope.
fn decode_batch(parsed: &RawBatch<'_>) -> Result<Decoded, ApiError> {
    if parsed.batch.len() > MAX_BATCH_MESSAGES {
        return Err(ApiError::bad(format!(
            "batch has {} messages; the limit is {MAX_BATCH_MESSAGES}",
            parsed.batch.len()
        )));
    }
    let mut messages = Vec::with_capacity(parsed.batch.len());
    for (index, message) in parsed.batch.iter().enumerate() {
        messages.push(parse_message(message.get(), index)?);
    }
    let envelope = Envelope {
        sent_at: parsed.sent_at.map(raw_value).transpose()?,
        context: object(parsed.context, "context")?,
        integrations: object(parsed.integrations, "integrations")?,
        ip: None,
    };
    Ok(Decoded { messages, envelope })
}

/// A raw value already checked for syntax, built.
fn raw_value(raw: &RawValue) -> Result<Value, ApiError> {
    serde_json::from_str(raw.get())
        .map_err(|e| ApiError::bad(format!("body is not valid JSON: {e}")))
}

/// Runs a batch body through exactly what `POST /v1/batch` does to it, minus authentication
/// and storage: decompression (when `gzip`), decoding, limits, enrichment and validation.
/// Returns how many events would be stored, or the 400's message. For fuzzing.
#[doc(hidden)]
pub fn fuzz_batch(body: &[u8], gzip: bool) -> Result<usize, String> {
    if body.len() > MAX_REQUEST_BYTES {
        return Err("over the request limit".into());
    }
    let bytes = if gzip {
        gunzip_capped(body).map_err(|e| e.to_string())?
    } else {
        body.to_vec()
    };
    let parsed = parse_batch(&bytes).map_err(|e| e.to_string())?;
    let decoded = decode_batch(&parsed).map_err(|e| e.to_string())?;
    let source: Arc<str> = Arc::from("fuzz");
    let (events, _) = prepare(
        &source,
        decoded.messages,
        &decoded.envelope,
        SystemTime::now(),
    );
    Ok(events.len())
}

/// The message type an analytics.js path names: the type's first letter (its `Segment.io`
/// plugin posts to `<apiHost>/<type.charAt(0)>`).
fn kind_of_alias(path: &str) -> Option<&'static str> {
    match path {
        "i" => Some("identify"),
        "t" => Some("track"),
        "p" => Some("page"),
        "s" => Some("screen"),
        "g" => Some("group"),
        "a" => Some("alias"),
        _ => None,
    }
}

/// `POST /v1/{type}` (or its one-letter alias): one message whose type the path names.
pub(crate) async fn single(
    State(state): State<Arc<AppState>>,
    Path(kind): Path<String>,
    peer: Option<Extension<PeerAddr>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    with_accepted_encodings(single_message(state, kind, peer, headers, body).await)
}

/// One message whose type `kind` (a path segment) names.
async fn single_message(
    state: Arc<AppState>,
    kind: String,
    peer: Option<Extension<PeerAddr>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let kind = match kind_of_alias(&kind) {
        Some(full) => full.to_owned(),
        None if Kind::STANDARD.contains(&kind.as_str()) => kind,
        None => return Err(ApiError::bad(format!("unknown endpoint /v1/{kind}"))),
    };
    let basic_key = known_basic_key(&state, &headers)?;
    let received = read_body(&state, body).await?;
    let _slot = admit(&state).await?;
    let raw = decode_body(&headers, received, basic_key)?;
    let text =
        std::str::from_utf8(&raw.bytes).map_err(|_| ApiError::bad("body is not valid UTF-8"))?;
    // Step 5: the body key, read without building the message (needed only without Basic).
    let body_key = match &raw.basic_key {
        Some(_) => None,
        None => single_write_key(text)?,
    };
    let source = authenticate(&state, raw.basic_key.as_deref(), body_key.as_deref())?;
    let ip = sender_ip(&state, &source, peer, &headers)?;
    let mut message = parse_message(text, 0)?;
    message.insert("type".into(), Value::String(kind));
    let envelope = Envelope {
        sent_at: message.get("sentAt").cloned(),
        context: None,
        integrations: None,
        ip,
    };
    store(&state, source, vec![message], &envelope).await
}

/// The `writeKey` of a single-message body, if it has a string one; the body's syntax is
/// checked, nothing is built.
fn single_write_key(text: &str) -> Result<Option<String>, ApiError> {
    let LastWriteKey(raw) = serde_json::from_str(text).map_err(|e| match e.classify() {
        // Valid JSON of another shape: the answer `parse_message` gives.
        serde_json::error::Category::Data => not_an_object(0),
        _ => not_json(0, &e),
    })?;
    // A key that is not a string is no key (as before): `authenticate` says so.
    Ok(raw.and_then(|raw| serde_json::from_str::<String>(raw.get()).ok()))
}

/// A JSON object's last `writeKey` member, left raw. Every other member is skipped as it is
/// read, so an object of any number of members costs no memory before authentication.
struct LastWriteKey<'a>(Option<&'a RawValue>);

impl<'de> Deserialize<'de> for LastWriteKey<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Members;
        impl<'de> serde::de::Visitor<'de> for Members {
            type Value = LastWriteKey<'de>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut members: A,
            ) -> Result<Self::Value, A::Error> {
                let mut key = None;
                // Names are owned only one at a time; a repeated `writeKey` keeps its last
                // value, as when the message is built.
                while let Some(name) = members.next_key::<std::borrow::Cow<'de, str>>()? {
                    if name == "writeKey" {
                        key = Some(members.next_value()?);
                    } else {
                        members.next_value::<serde::de::IgnoredAny>()?;
                    }
                }
                Ok(LastWriteKey(key))
            }
        }
        deserializer.deserialize_map(Members)
    }
}

/// The body, decompressed, and the Basic-auth write key if the request had one.
struct RawBody {
    bytes: Vec<u8>,
    basic_key: Option<String>,
}

/// Step 1 of the module doc: the request's Basic-auth key, if it has one; a key no source
/// has is refused before the request reads or waits for anything.
fn known_basic_key(state: &AppState, headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let basic_key = basic_auth_key(headers);
    if let Some(key) = &basic_key
        && !state.keys.contains_key(key)
    {
        return Err(ApiError::Unauthorized("unknown write key"));
    }
    Ok(basic_key)
}

/// A body as it arrived, and its share of the bytes budget, given back when it is dropped.
struct Received {
    bytes: Vec<u8>,
    _budget: Option<OwnedSemaphorePermit>,
}

/// Step 2 of the module doc.
///
/// Each frame must arrive by the time the bytes so far would fall behind the minimum rate
/// (`grace + (received + 1) / rate` after the start), within [`MAX_BODY_PAUSE`] of the frame
/// before, and within the body timeout, whichever is soonest. So a client that sends a byte
/// and stops is cut off after the grace, one that sends a byte a second soon after, and one
/// that sends most of a body and stops after the pause; either way its connection is freed
/// within seconds, and it never held an ingest slot. (tower-http's body timeout layer only
/// bounds the gaps between frames by the whole body timeout.)
///
/// The buffer is charged to the bytes budget as it is allocated, before it grows: it grows by
/// doubling, as a `Vec` would, so the charge is at most twice the bytes received, and exact.
async fn read_body(state: &AppState, body: Body) -> Result<Received, ApiError> {
    let started = Instant::now();
    let body_deadline = started + state.body_timeout;
    let mut last_frame = started;
    let mut body = body;
    // Not sized by the declared length: a client that declares 500 KB and sends one byte
    // must not make the server hold 500 KB.
    let mut bytes = Vec::new();
    let mut budget: Option<OwnedSemaphorePermit> = None;
    loop {
        let behind = started + MIN_UPLOAD_GRACE + rate_time(bytes.len() as u64 + 1);
        let paused = last_frame + MAX_BODY_PAUSE;
        let deadline = behind.min(paused).min(body_deadline);
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(Some(frame)) => frame.map_err(|e| unreadable(state, &e))?,
            Ok(None) => break,
            Err(_) if deadline == body_deadline => {
                return Err(ApiError::Timeout(state.body_timeout));
            }
            Err(_) => return Err(ApiError::TooSlow(MIN_UPLOAD_BYTES_PER_SECOND)),
        };
        last_frame = Instant::now();
        // Trailers carry no body bytes.
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let needed = bytes.len() + data.len();
        if needed > MAX_REQUEST_BYTES {
            return Err(too_long());
        }
        if needed > bytes.capacity() {
            let grown = needed.max(bytes.capacity() * 2).min(MAX_REQUEST_BYTES);
            let share = take_budget(state, grown - bytes.capacity()).await?;
            match &mut budget {
                Some(held) => held.merge(share),
                None => budget = Some(share),
            }
            bytes.reserve_exact(grown - bytes.len());
        }
        bytes.extend_from_slice(&data);
    }
    Ok(Received {
        bytes,
        _budget: budget,
    })
}

/// How long `bytes` take at [`MIN_UPLOAD_BYTES_PER_SECOND`].
fn rate_time(bytes: u64) -> Duration {
    Duration::from_millis(bytes.saturating_mul(1000) / MIN_UPLOAD_BYTES_PER_SECOND)
}

/// `len` bytes of [`MAX_BUFFERED_BODY_BYTES`](crate::MAX_BUFFERED_BODY_BYTES), waiting at
/// most [`INGEST_SLOT_WAIT`] for them.
async fn take_budget(state: &AppState, len: usize) -> Result<OwnedSemaphorePermit, ApiError> {
    // A frame is never over the request limit, checked before, so it fits a u32.
    let len = u32::try_from(len).map_err(|_| too_long())?;
    tokio::time::timeout(
        INGEST_SLOT_WAIT,
        Arc::clone(&state.body_bytes).acquire_many_owned(len),
    )
    .await
    .map_err(|_| ApiError::Busy)?
    // The semaphore is never closed.
    .map_err(|_| ApiError::Busy)
}

/// The 400 for a body over [`MAX_REQUEST_BYTES`].
fn too_long() -> ApiError {
    ApiError::bad(format!("request body is over {MAX_REQUEST_BYTES} bytes"))
}

/// The answer to a body that could not be read: 408 when the server's idle timeout between
/// frames (tower-http's layer) stopped it, which clients retry (a 400 would make them drop a
/// batch that was never stored); else a 400 (the connection failed, or the framing was bad).
fn unreadable(state: &AppState, error: &axum::Error) -> ApiError {
    let timed_out = std::iter::successors(Some(error as &dyn std::error::Error), |e| e.source())
        .any(|e| e.is::<tower_http::timeout::TimeoutError>());
    if timed_out {
        return ApiError::Timeout(state.body_timeout);
    }
    ApiError::bad(format!("could not read the request body: {error}"))
}

/// Step 3 of the module doc: an ingest slot, held until the handler returns.
async fn admit(state: &AppState) -> Result<SemaphorePermit<'_>, ApiError> {
    tokio::time::timeout(INGEST_SLOT_WAIT, state.ingest_slots.acquire())
        .await
        .map_err(|_| ApiError::Busy)?
        // The semaphore is never closed.
        .map_err(|_| ApiError::Busy)
}

/// The request encodings the collector takes, as its answers list them (RFC 7694): zstd
/// first, the one it prefers.
pub(crate) const ACCEPTED_ENCODINGS: &str = "zstd, gzip";

/// Largest zstd window a body may use: 8 MiB (2^23), the limit RFC 9659 sets for zstd over
/// HTTP. A frame asking for more is refused before its window is allocated, so a small body
/// cannot make the collector reserve zstd's own maximum (2 GiB).
const ZSTD_WINDOW_LOG_MAX: u32 = 23;

/// `answer` with `Accept-Encoding: zstd, gzip`, error or not: any answer tells a client
/// which encodings it may send (RFC 7694).
fn with_accepted_encodings(answer: Result<Json<Value>, ApiError>) -> Response {
    let mut response = answer.into_response();
    response.headers_mut().insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static(ACCEPTED_ENCODINGS),
    );
    response
}

/// Step 4 of the module doc.
fn decode_body(
    headers: &HeaderMap,
    received: Received,
    basic_key: Option<String>,
) -> Result<RawBody, ApiError> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase());
    let bytes = match encoding.as_deref() {
        None | Some("" | "identity") => received.bytes,
        Some("gzip") => gunzip_capped(&received.bytes)?,
        Some("zstd") => unzstd_capped(&received.bytes)?,
        Some(other) => {
            return Err(ApiError::UnsupportedEncoding(format!(
                "unsupported content-encoding {other:?}; use zstd or gzip"
            )));
        }
    };
    Ok(RawBody { bytes, basic_key })
}

/// Decompresses at most [`MAX_REQUEST_BYTES`]; more is an error, whatever the ratio.
fn gunzip_capped(compressed: &[u8]) -> Result<Vec<u8>, ApiError> {
    read_capped(flate2::read::GzDecoder::new(compressed), compressed.len())
        .map_err(|e| ApiError::bad(format!("body is not valid gzip: {e}")))?
        .ok_or_else(decompressed_too_long)
}

/// Decompresses at most [`MAX_REQUEST_BYTES`], exactly as [`gunzip_capped`], with a window
/// of at most 2^[`ZSTD_WINDOW_LOG_MAX`] bytes.
fn unzstd_capped(compressed: &[u8]) -> Result<Vec<u8>, ApiError> {
    let not_zstd = |e: std::io::Error| ApiError::bad(format!("body is not valid zstd: {e}"));
    let mut decoder = zstd::stream::read::Decoder::new(compressed).map_err(not_zstd)?;
    decoder
        .window_log_max(ZSTD_WINDOW_LOG_MAX)
        .map_err(not_zstd)?;
    read_capped(decoder, compressed.len())
        .map_err(not_zstd)?
        .ok_or_else(decompressed_too_long)
}

/// All of `decoder`'s output if it is at most [`MAX_REQUEST_BYTES`], `None` if longer; never
/// reads more than one byte past the limit.
fn read_capped(decoder: impl Read, compressed: usize) -> std::io::Result<Option<Vec<u8>>> {
    let mut out = Vec::with_capacity(compressed.saturating_mul(4).min(MAX_REQUEST_BYTES + 1));
    let limit = MAX_REQUEST_BYTES as u64 + 1;
    decoder.take(limit).read_to_end(&mut out)?;
    Ok((out.len() <= MAX_REQUEST_BYTES).then_some(out))
}

/// The 400 for a body that decompresses to more than [`MAX_REQUEST_BYTES`].
fn decompressed_too_long() -> ApiError {
    ApiError::bad(format!(
        "decompressed body is over {MAX_REQUEST_BYTES} bytes"
    ))
}

/// The write key of an `Authorization: Basic base64(key:)` header.
fn basic_auth_key(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, credentials) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(credentials.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    // "key:" (the password part is empty, and ignored if not).
    Some(
        text.split_once(':')
            .map_or(text.as_str(), |(key, _)| key)
            .to_owned(),
    )
}

fn authenticate(
    state: &AppState,
    basic_key: Option<&str>,
    body_key: Option<&str>,
) -> Result<Arc<str>, ApiError> {
    let key = basic_key.or(body_key).ok_or(ApiError::Unauthorized(
        "no write key: send Basic auth or a writeKey in the body",
    ))?;
    state
        .keys
        .get(key)
        .cloned()
        .ok_or(ApiError::Unauthorized("unknown write key"))
}

/// After authentication: refuses a page on an origin `source` does not allow, and returns
/// the address to add as `context.ip` (none when the source does not collect them).
fn sender_ip(
    state: &AppState,
    source: &Arc<str>,
    peer: Option<Extension<PeerAddr>>,
    headers: &HeaderMap,
) -> Result<Option<String>, ApiError> {
    let policy = state.policies.get(source);
    crate::cors::check_origin(policy, headers)?;
    if !policy.is_none_or(|p| p.collect_ip) {
        return Ok(None);
    }
    Ok(peer.map(|Extension(PeerAddr(peer))| {
        client_ip(peer.ip(), headers, &state.trusted_proxies).to_string()
    }))
}

/// One raw message as an object, its size checked.
fn parse_message(raw: &str, index: usize) -> Result<Map<String, Value>, ApiError> {
    if raw.len() > MAX_MESSAGE_BYTES {
        return Err(ApiError::BadRequest {
            message: format!(
                "message {index} is {} bytes; the limit is {MAX_MESSAGE_BYTES}",
                raw.len()
            ),
            index: Some(index),
            field: None,
        });
    }
    match serde_json::from_str(raw) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(not_an_object(index)),
        Err(e) => Err(not_json(index, &e)),
    }
}

/// The 400 for message `index`, valid JSON but not an object.
fn not_an_object(index: usize) -> ApiError {
    ApiError::BadRequest {
        message: format!("message {index} is not a JSON object"),
        index: Some(index),
        field: None,
    }
}

/// The 400 for message `index`, not JSON at all.
fn not_json(index: usize, error: &serde_json::Error) -> ApiError {
    ApiError::bad(format!("message {index} is not valid JSON: {error}"))
}

/// A batch-wide object (`context`, `integrations`), built once the request is authenticated.
fn object(
    raw: Option<&RawValue>,
    field: &'static str,
) -> Result<Option<Map<String, Value>>, ApiError> {
    match raw.map(raw_value).transpose()? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(map)) => Ok(Some(map)),
        Some(_) => Err(ApiError::BadRequest {
            message: format!("the batch's `{field}` must be a JSON object"),
            index: None,
            field: Some(field),
        }),
    }
}

/// What a batch (or the server) adds to each of its messages.
struct Envelope {
    sent_at: Option<Value>,
    context: Option<Map<String, Value>>,
    integrations: Option<Map<String, Value>>,
    /// The sender's address, for `context.ip`.
    ip: Option<String>,
}

async fn store(
    state: &AppState,
    source: Arc<str>,
    messages: Vec<Map<String, Value>>,
    envelope: &Envelope,
) -> Result<Json<Value>, ApiError> {
    let (events, rejected) = prepare(&source, messages, envelope, SystemTime::now());
    let appended = state.store.append(events).await;
    // Evidence for `/readyz`: the outcome of a real write.
    state.readiness.record(appended.as_ref().map(|_| ()));
    let appended = appended.map_err(|e| {
        tracing::error!("ingest: {e}");
        ApiError::Unavailable
    })?;
    let mut body = json!({"success": true});
    if appended.duplicates > 0 {
        body["duplicates"] = json!(appended.duplicates);
    }
    if !rejected.is_empty() {
        body["rejected"] = Value::Array(rejected);
    }
    Ok(Json(body))
}

/// Steps 8 and 9: the events to store, and the rejections to list in the answer.
fn prepare(
    source: &Arc<str>,
    messages: Vec<Map<String, Value>>,
    envelope: &Envelope,
    received: SystemTime,
) -> (Vec<NewEvent>, Vec<Value>) {
    let mut rejected = Vec::new();
    let mut events = Vec::with_capacity(messages.len());
    for (index, mut message) in messages.into_iter().enumerate() {
        // Taken from the message as sent, before the server adds its fields.
        let special_key = dedup_key(&message);
        enrich(&mut message, envelope, received);
        let verdict = match validate_json(&message) {
            Ok(Kind::Other(name)) => Err(format!(
                "unknown message type {name:?}: the type must be one of {}",
                Kind::STANDARD.join(", ")
            )),
            Ok(_) => Ok(()),
            Err(error) => Err(error.to_string()),
        };
        if let Err(reason) = &verdict {
            rejected.push(json!({
                "index": index,
                "messageId": message.get("messageId"),
                "reason": reason,
            }));
        }
        events.push(new_event(
            source,
            message,
            received,
            verdict.err(),
            special_key,
        ));
    }
    (events, rejected)
}

/// Applies step 8 of the module doc to one message.
fn enrich(message: &mut Map<String, Value>, envelope: &Envelope, received: SystemTime) {
    message.remove("writeKey");
    for (field, batch_value) in [
        ("context", &envelope.context),
        ("integrations", &envelope.integrations),
    ] {
        let Some(batch_value) = batch_value else {
            continue;
        };
        match message.get_mut(field) {
            Some(Value::Object(own)) => {
                for (key, value) in batch_value {
                    if !own.contains_key(key) {
                        own.insert(key.clone(), value.clone());
                    }
                }
            }
            None | Some(Value::Null) => {
                message.insert(field.to_owned(), Value::Object(batch_value.clone()));
            }
            // Not an object: left for validation to reject.
            Some(_) => {}
        }
    }
    if let Some(ip) = &envelope.ip {
        match message.get_mut("context") {
            Some(Value::Object(context)) => {
                context
                    .entry("ip")
                    .or_insert_with(|| Value::String(ip.clone()));
            }
            None | Some(Value::Null) => {
                message.insert("context".into(), json!({ "ip": ip }));
            }
            // Not an object: left for validation to reject.
            Some(_) => {}
        }
    }
    // Only a missing id is assigned: any other value is the client's, left for validation to
    // reject (a fresh id would hide the mistake and store each retry again).
    if matches!(message.get("messageId"), None | Some(Value::Null)) {
        let id = uuid::Builder::from_random_bytes(fastrand::u128(..).to_le_bytes()).into_uuid();
        message.insert(
            "messageId".into(),
            Value::String(id.hyphenated().to_string()),
        );
    }
    let received_ms = millis(received);
    let sent_at = envelope
        .sent_at
        .as_ref()
        .or(message.get("sentAt"))
        .and_then(parse_time);
    if let Some(Value::String(sent)) = &envelope.sent_at {
        message
            .entry("sentAt")
            .or_insert_with(|| Value::String(sent.clone()));
    }
    let original = message.get("timestamp").cloned();
    let corrected = match (original.as_ref().and_then(parse_time), sent_at) {
        (Some(original_ms), Some(sent_ms)) => received_ms - (sent_ms - original_ms),
        (Some(original_ms), None) => original_ms,
        (None, _) => received_ms,
    };
    if let Some(original) = original {
        message.insert("originalTimestamp".into(), original);
    }
    message.insert("timestamp".into(), Value::String(format_millis(corrected)));
    message.insert(
        "receivedAt".into(),
        Value::String(format_millis(received_ms)),
    );
}

/// What a message `as_sent` is deduplicated by when its `messageId` cannot serve (such a
/// message is rejected), or `None` when it can (or will be assigned one). The keys start with
/// a NUL, so that no string id is taken for them (only one starting with that NUL and `json:`
/// or `empty:` could be):
/// - an id that is not a string: its JSON text, so that a retry is stored once and `12345`
///   is not taken for `"12345"`;
/// - an empty id: a digest of the message as sent, so that a retry is stored once and
///   different messages each are.
fn dedup_key(as_sent: &Map<String, Value>) -> Option<String> {
    match as_sent.get("messageId") {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) if !id.is_empty() => None,
        Some(Value::String(_)) => {
            use sha2::Digest;
            let digest = sha2::Sha256::digest(serde_json::to_vec(as_sent).unwrap_or_default());
            let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
            Some(format!("\0empty:{hex}"))
        }
        Some(other) => Some(format!("\0json:{other}")),
    }
}

fn new_event(
    source: &Arc<str>,
    message: Map<String, Value>,
    received: SystemTime,
    rejected: Option<String>,
    dedup_key: Option<String>,
) -> NewEvent {
    let text = |name: &str| message.get(name).and_then(Value::as_str).map(str::to_owned);
    NewEvent {
        source: Arc::clone(source),
        message_id: dedup_key.unwrap_or_else(|| text("messageId").unwrap_or_default()),
        kind: text("type").unwrap_or_default(),
        user_id: text("userId"),
        anonymous_id: text("anonymousId"),
        label: text("event").or_else(|| text("name")),
        received_at: millis(received),
        rejected,
        body: Value::Object(message).to_string(),
    }
}

fn millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn format_millis(ms: i64) -> String {
    let at = if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms as u64)
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    };
    let mut out = Vec::with_capacity(24);
    write_timestamp(at, &mut out);
    String::from_utf8(out).unwrap_or_default()
}

/// Milliseconds since the epoch of an ISO-8601 time: RFC 3339, or with a `+0000` offset
/// (older analytics-java).
fn parse_time(value: &Value) -> Option<i64> {
    let text = value.as_str()?;
    chrono::DateTime::parse_from_rfc3339(text)
        .or_else(|_| chrono::DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f%z"))
        .ok()
        .map(|t| t.timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_message_s_write_key_is_read_without_building_it() {
        let key = |text: &str| single_write_key(text).map_err(|e| e.to_string());
        assert_eq!(key(r#"{"writeKey":"a","event":"E"}"#), Ok(Some("a".into())));
        // Repeated: the last one, as when the message is built; escapes in the name count.
        assert_eq!(
            key(r#"{"writeKey":"a","writeKey":"b"}"#),
            Ok(Some("b".into()))
        );
        assert_eq!(key(r#"{"write\u004bey":"c"}"#), Ok(Some("c".into())));
        // Not a string: no key (the request is then a 401).
        assert_eq!(key(r#"{"writeKey":7,"nested":{"writeKey":"x"}}"#), Ok(None));
        assert_eq!(key("{}"), Ok(None));
        // Many members, skipped as read.
        let many = format!(
            "{{{},\"writeKey\":\"d\"}}",
            (0..80_000)
                .map(|n| format!("\"a{n}\":0"))
                .collect::<Vec<_>>()
                .join(",")
        );
        assert_eq!(key(&many), Ok(Some("d".into())));
        let not_object = key("[1,2]").unwrap_err();
        assert!(not_object.contains("not a JSON object"), "{not_object}");
        let not_json = key(r#"{"writeKey":"#).unwrap_err();
        assert!(not_json.contains("not valid JSON"), "{not_json}");
    }

    fn enriched(message: Value, envelope: &Envelope, received_ms: u64) -> Value {
        let mut map = message.as_object().cloned().expect("object");
        enrich(
            &mut map,
            envelope,
            UNIX_EPOCH + Duration::from_millis(received_ms),
        );
        Value::Object(map)
    }

    #[test]
    fn timestamps_are_corrected_by_the_clock_skew() {
        // The client's clock is 10 s fast: it says it sent at 00:00:20, the server got it at
        // 00:00:10; the event happened 5 s before sending, so at 00:00:05 server time.
        let sent_at = json!("1970-01-01T00:00:20.000Z");
        let envelope = Envelope {
            sent_at: Some(sent_at),
            context: None,
            integrations: None,
            ip: None,
        };
        let message =
            json!({"type": "track", "timestamp": "1970-01-01T00:00:15.000Z", "writeKey": "secret"});
        let out = enriched(message, &envelope, 10_000);
        assert_eq!(out["timestamp"], "1970-01-01T00:00:05.000Z");
        assert_eq!(out["originalTimestamp"], "1970-01-01T00:00:15.000Z");
        assert_eq!(out["receivedAt"], "1970-01-01T00:00:10.000Z");
        assert_eq!(out["sentAt"], "1970-01-01T00:00:20.000Z");
        assert!(out.get("writeKey").is_none(), "write keys are never stored");
        assert_eq!(
            out["messageId"].as_str().map(str::len),
            Some(36),
            "assigned"
        );
    }

    #[test]
    fn missing_or_odd_timestamps() {
        let none = Envelope {
            sent_at: None,
            context: None,
            integrations: None,
            ip: None,
        };
        let out = enriched(json!({"type": "track"}), &none, 1_000);
        assert_eq!(out["timestamp"], "1970-01-01T00:00:01.000Z");
        assert!(out.get("originalTimestamp").is_none());
        let java = enriched(
            json!({"timestamp": "2021-10-27T10:00:00.000+0000"}),
            &none,
            0,
        );
        assert_eq!(java["timestamp"], "2021-10-27T10:00:00.000Z");
        let offset = enriched(json!({"timestamp": "2021-10-27T12:00:00+02:00"}), &none, 0);
        assert_eq!(offset["timestamp"], "2021-10-27T10:00:00.000Z");
    }

    #[test]
    fn batch_context_and_integrations_merge_under_the_messages_own() {
        let context = json!({"ip": "1.1.1.1", "locale": "en"});
        let integrations = json!({"All": false});
        let envelope = Envelope {
            sent_at: None,
            context: context.as_object().cloned(),
            integrations: integrations.as_object().cloned(),
            ip: None,
        };
        let out = enriched(json!({"context": {"locale": "fr"}}), &envelope, 0);
        assert_eq!(out["context"], json!({"locale": "fr", "ip": "1.1.1.1"}));
        assert_eq!(out["integrations"], json!({"All": false}));
    }

    #[test]
    fn basic_auth_keys_are_read_with_or_without_the_colon() {
        let mut headers = HeaderMap::new();
        let encode = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        for (credentials, key) in [("abc:", "abc"), ("abc", "abc"), ("abc:ignored", "abc")] {
            let value = format!("Basic {}", encode(credentials));
            headers.insert(header::AUTHORIZATION, value.parse().expect("header"));
            assert_eq!(basic_auth_key(&headers).as_deref(), Some(key));
        }
        headers.insert(header::AUTHORIZATION, "Bearer xyz".parse().expect("header"));
        assert_eq!(basic_auth_key(&headers), None);
    }
}
