//! Request bodies: the batch envelope around encoded messages, compressed (gzip or zstd) as
//! [`crate::compression`] decides. The
//! encoder writes each batch's first body ahead; the sender writes the rest (later parts,
//! retries, bodies grown stale). [`BatchBody`] offers the same to code that sends batches
//! itself.

use std::io::Write;
use std::ops::Range;
use std::time::{Duration, SystemTime};

use flate2::write::DeflateEncoder;
use flate2::{Compression, Crc};
use serde_json::Map;
use trackway_protocol::{
    EncodeOptions, MAX_BATCH_MESSAGES, MAX_MESSAGE_BYTES, MAX_REQUEST_BYTES, Message,
    ValidationError, check, envelope_overhead, write_batch,
};

use crate::batch::{Encoded, Slot, encode_into, fill_defaults};
use crate::compression::{BodyEncoding, ZstdWriter};
use crate::config::{DEFAULT_GZIP_LEVEL, Validated};

/// How long a body written ahead stays good: past this, its `sentAt` would be noticeably
/// older than the request, so the sender writes it again.
pub(crate) const STALE_AFTER: Duration = Duration::from_millis(250);

/// The fixed ten bytes that start every gzip member written here (RFC 1952): magic, deflate,
/// no flags, no modification time, no extra flags, unknown OS. What flate2's `GzEncoder`
/// writes by default too, but for the extra-flags byte, which readers ignore.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

/// Writes request bodies: the envelope around encoded messages, compressed as asked.
pub(crate) struct BodyWriter {
    write_key: String,
    /// The deflate stream, kept from body to body: a new one allocates and clears about
    /// 300 KB of tables, a cost per request that `reset` avoids. Made at the first gzip body.
    deflate: Option<DeflateEncoder<Vec<u8>>>,
    /// The gzip level, for a new stream.
    level: Compression,
    /// The zstd context, kept from body to body likewise. Made at the first zstd body.
    zstd: Option<ZstdWriter>,
    /// The uncompressed envelope, when compressing.
    raw: Vec<u8>,
}

impl BodyWriter {
    pub(crate) fn new(config: &Validated) -> BodyWriter {
        BodyWriter::with(&config.write_key, config.gzip_level)
    }

    /// Bodies for `write_key`, gzipped (when gzipped) at `gzip_level`.
    fn with(write_key: &str, gzip_level: u32) -> BodyWriter {
        BodyWriter {
            write_key: write_key.to_owned(),
            deflate: None,
            level: Compression::new(gzip_level),
            zstd: None,
            raw: Vec::new(),
        }
    }

    /// Replaces `out` with the body for `part` of `batch`, with a `sentAt` of now, in
    /// `encoding`. Returns the encoding written: gzip instead of zstd should zstd fail
    /// (not seen; it would take running out of memory).
    pub(crate) fn write(
        &mut self,
        batch: &Encoded,
        part: Range<usize>,
        encoding: BodyEncoding,
        out: &mut Vec<u8>,
    ) -> BodyEncoding {
        out.clear();
        let envelope = if encoding == BodyEncoding::Identity {
            &mut *out
        } else {
            &mut self.raw
        };
        envelope.clear();
        write_batch(
            batch.messages(part),
            SystemTime::now(),
            &self.write_key,
            envelope,
        );
        if encoding == BodyEncoding::Zstd {
            if self.zstd.is_none() {
                self.zstd = ZstdWriter::new();
            }
            if let Some(zstd) = &mut self.zstd {
                if zstd.write(&self.raw, out).is_ok() {
                    return BodyEncoding::Zstd;
                }
                // A context that failed is in no known state.
                self.zstd = None;
            }
        }
        if encoding == BodyEncoding::Identity {
            return BodyEncoding::Identity;
        }
        let level = self.level;
        let deflate = self
            .deflate
            .get_or_insert_with(|| DeflateEncoder::new(Vec::new(), level));
        if gzip_into(deflate, &self.raw, out).is_err() {
            // Not seen with a Vec as the output; should the stream ever fail, a fresh one
            // keeps this body and every later one from continuing a broken stream.
            *deflate = DeflateEncoder::new(Vec::new(), level);
            let _ = gzip_into(deflate, &self.raw, out);
        }
        BodyEncoding::Gzip
    }
}

/// The headers of a batch request for `write_key`: what the client sends (without
/// `content-encoding`, which depends on the body, and `x-retry-count`, which only a retry
/// adds).
pub(crate) fn request_headers(write_key: &str) -> Vec<(&'static str, String)> {
    use base64::Engine;
    let credentials = base64::engine::general_purpose::STANDARD.encode(format!("{write_key}:"));
    vec![
        ("content-type", "application/json".to_owned()),
        ("authorization", format!("Basic {credentials}")),
        (
            "user-agent",
            format!("trackway/{}", env!("CARGO_PKG_VERSION")),
        ),
    ]
}

/// Why [`BatchBody::push`] refused a message. Nothing was added.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PushError {
    /// The message breaks the API's rules; no server will take it, so do not send it again.
    #[error("invalid message: {0}")]
    Invalid(#[from] ValidationError),
    /// The encoded message is over the API's 32 KB limit; no server will take it either.
    #[error("message is {size} bytes encoded, over the {limit}-byte limit")]
    TooLarge {
        /// Its encoded size.
        size: usize,
        /// The limit.
        limit: usize,
    },
}

/// Batch requests written exactly as the client writes its own, for code that sends them
/// itself (the collector's forward destination relays stored events this way): each message
/// checked and completed as a call would (`messageId`, `timestamp`, `context.library` unless
/// it names one), the messages cut into as few requests as the API's limits allow (500 KB,
/// 2500 messages), each body written with a fresh `sentAt` and gzipped.
///
/// Send each body with [`request_headers`](BatchBody::request_headers) through a
/// [`Transport`](crate::transport::Transport), and judge the answer with
/// [`retry::decide`](crate::retry::decide).
pub struct BatchBody {
    options: EncodeOptions,
    batch: Encoded,
    /// Runs of `batch`'s messages that each fit one request, in order.
    parts: Vec<Range<usize>>,
    /// Bytes of the last part's messages, commas included.
    last_part_bytes: usize,
    /// Bytes of messages (commas included) that fit one request beside the envelope.
    part_limit: usize,
    writer: BodyWriter,
    encoding: BodyEncoding,
    headers: Vec<(&'static str, String)>,
}

impl std::fmt::Debug for BatchBody {
    /// The write key is left out: it is a secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchBody")
            .field("messages", &self.len())
            .field("requests", &self.requests())
            .finish_non_exhaustive()
    }
}

impl BatchBody {
    /// Requests for `write_key`, gzipped (at [`DEFAULT_GZIP_LEVEL`]) when `gzip` is true.
    pub fn new(write_key: &str, gzip: bool) -> BatchBody {
        let library = ("trackway", env!("CARGO_PKG_VERSION"));
        let (encoding, mut headers) = (BodyEncoding::Identity, request_headers(write_key));
        let encoding = if gzip {
            headers.push(("content-encoding", "gzip".to_owned()));
            BodyEncoding::Gzip
        } else {
            encoding
        };
        BatchBody {
            options: EncodeOptions::new(Some(library), Map::new()),
            batch: Encoded::default(),
            parts: Vec::new(),
            last_part_bytes: 0,
            part_limit: MAX_REQUEST_BYTES - envelope_overhead(write_key),
            writer: BodyWriter::with(write_key, DEFAULT_GZIP_LEVEL),
            encoding,
            headers,
        }
    }

    /// Adds `message` after those added before, or says why no server would take it.
    pub fn push(&mut self, mut message: Message) -> Result<(), PushError> {
        let checked = check(&message)?;
        let generated_id = fill_defaults(&mut message, checked);
        let start = self.batch.bytes.len();
        let id = encode_into(&message, generated_id, &self.options, &mut self.batch.bytes);
        let size = self.batch.bytes.len() - start;
        if size > MAX_MESSAGE_BYTES {
            self.batch.bytes.truncate(start);
            return Err(PushError::TooLarge {
                size,
                limit: MAX_MESSAGE_BYTES,
            });
        }
        let index = self.batch.slots.len();
        self.batch.slots.push(Slot {
            bytes: start..start + size,
            id,
            cost: 0,
        });
        // A message and its comma; one alone always fits (32 KB against 500 KB).
        let bytes = size + 1;
        match self.parts.last_mut() {
            Some(part)
                if self.last_part_bytes + bytes <= self.part_limit
                    && part.len() < MAX_BATCH_MESSAGES =>
            {
                part.end = index + 1;
                self.last_part_bytes += bytes;
            }
            _ => {
                self.parts.push(index..index + 1);
                self.last_part_bytes = bytes;
            }
        }
        Ok(())
    }

    /// Messages added.
    pub fn len(&self) -> usize {
        self.batch.slots.len()
    }

    /// True when no message was added.
    pub fn is_empty(&self) -> bool {
        self.batch.slots.is_empty()
    }

    /// Requests the messages need: send them in order, from 0.
    pub fn requests(&self) -> usize {
        self.parts.len()
    }

    /// Messages in request `index`.
    pub fn messages_in(&self, index: usize) -> usize {
        self.parts.get(index).map_or(0, |part| part.len())
    }

    /// Replaces `out` with the body of request `index`, its `sentAt` now (write it just
    /// before sending it, and again for a retry). Empty past the last request.
    pub fn write_request(&mut self, index: usize, out: &mut Vec<u8>) {
        match self.parts.get(index) {
            Some(part) => {
                self.writer
                    .write(&self.batch, part.clone(), self.encoding, out);
            }
            None => out.clear(),
        }
    }

    /// The headers each request carries (content type, authorization, user agent, and
    /// `content-encoding` when gzipped).
    pub fn request_headers(&self) -> &[(&'static str, String)] {
        &self.headers
    }
}

/// Replaces `out` with `raw` as one gzip member, through `deflate`, which is left reset for
/// the next body. An error leaves `deflate` in no known state: replace it.
fn gzip_into(
    deflate: &mut DeflateEncoder<Vec<u8>>,
    raw: &[u8],
    out: &mut Vec<u8>,
) -> std::io::Result<()> {
    out.clear();
    out.extend_from_slice(&GZIP_HEADER);
    // The stream writes after the header, straight into `out`.
    std::mem::swap(deflate.get_mut(), out);
    let written = deflate.write_all(raw).and_then(|()| deflate.try_finish());
    std::mem::swap(deflate.get_mut(), out);
    written?;
    deflate.reset(Vec::new())?;
    let mut crc = Crc::new();
    crc.update(raw);
    out.extend_from_slice(&crc.sum().to_le_bytes());
    // ISIZE: the input's length modulo 2^32 (a body is at most 500 KB).
    out.extend_from_slice(&(raw.len() as u32).to_le_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use flate2::read::GzDecoder;

    use super::*;

    fn gunzip(body: &[u8]) -> Vec<u8> {
        let mut decoder = GzDecoder::new(body);
        let mut raw = Vec::new();
        decoder.read_to_end(&mut raw).unwrap();
        // One member, nothing after it.
        assert!(decoder.into_inner().is_empty());
        raw
    }

    #[test]
    fn one_deflate_stream_writes_body_after_body() {
        let mut deflate = DeflateEncoder::new(Vec::new(), Compression::new(1));
        let mut out = b"left from before".to_vec();
        let bodies: [&[u8]; 4] = [
            br#"{"batch":[{"type":"track","event":"a"}],"writeKey":"k"}"#,
            b"",
            &[b'x'; 70_000],
            br#"{"batch":[{"type":"track","event":"a"}],"writeKey":"k"}"#,
        ];
        let mut written = Vec::new();
        for raw in bodies {
            gzip_into(&mut deflate, raw, &mut out).unwrap();
            assert_eq!(out[..10], GZIP_HEADER);
            assert_eq!(gunzip(&out), raw);
            written.push(out.clone());
        }
        // A reused stream starts afresh: the same input gives the same bytes.
        assert_eq!(written[0], written[3]);
    }

    #[test]
    fn batch_body_cuts_requests_within_the_limits_in_order() {
        let mut body = BatchBody::new("key", true);
        // 40 messages of ~20 KB: 500 KB holds 24 of them.
        let big = "x".repeat(20_000);
        for i in 0..40 {
            let message = trackway_protocol::Track::new(format!("e{i}"))
                .user_id("u")
                .properties(serde_json::json!({ "pad": big }));
            body.push(message.into()).unwrap();
        }
        assert_eq!(body.len(), 40);
        assert_eq!(body.requests(), 2);
        let mut out = Vec::new();
        let mut events = Vec::new();
        for index in 0..body.requests() {
            body.write_request(index, &mut out);
            let raw = gunzip(&out);
            assert!(raw.len() <= MAX_REQUEST_BYTES, "{}", raw.len());
            let json: serde_json::Value = serde_json::from_slice(&raw).unwrap();
            assert_eq!(json["writeKey"], "key");
            let batch = json["batch"].as_array().unwrap();
            assert_eq!(batch.len(), body.messages_in(index));
            events.extend(
                batch
                    .iter()
                    .map(|m| m["event"].as_str().unwrap().to_owned()),
            );
        }
        let expected: Vec<String> = (0..40).map(|i| format!("e{i}")).collect();
        assert_eq!(events, expected);
        let oversized = trackway_protocol::Track::new("big")
            .user_id("u")
            .properties(serde_json::json!({ "pad": "x".repeat(40_000) }));
        assert!(matches!(
            body.push(oversized.into()),
            Err(PushError::TooLarge { .. })
        ));
        assert_eq!(body.len(), 40);
    }
}
