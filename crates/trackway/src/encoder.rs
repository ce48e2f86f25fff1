//! The encoder thread: turns each batch of accepted messages into JSON and writes the body of
//! its first request, while the sender has the previous batch on the wire.
//!
//! Messages arrive encoded by the call, or as the caller built them when
//! [`crate::Builder::defer_encoding`] is on, which keeps the call itself to a few hundred
//! nanoseconds. Batches pass through in the order the worker hands them on, so message order
//! is kept.
//!
//! A batch whose encoded messages exceed one request (the worker batches by estimated size)
//! is cut into parts that fit; the body is written ahead for the first part only.

use std::collections::VecDeque;
use std::io::Write;
use std::ops::Range;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, Sender};
use flate2::write::DeflateEncoder;
use flate2::{Compression, Crc};
use trackway_protocol::{EncodeOptions, write_batch};

use crate::config::Validated;
use crate::ledger::{Encoded, Payload, Pending, Slot, encode_into};
use crate::worker::Handed;

/// How long a body written ahead stays good: past this, its `sentAt` would be noticeably
/// older than the request, so the sender writes it again.
pub(crate) const STALE_AFTER: Duration = Duration::from_millis(250);

/// A batch, encoded, cut into parts that each fit one request, and the body of the first
/// part's first request.
pub(crate) struct Prepared {
    /// The batch's number in the worker's order ([`crate::worker::Handed`]), for the sender's
    /// report.
    pub(crate) end: u64,
    pub(crate) batch: Encoded,
    pub(crate) parts: VecDeque<Range<usize>>,
    pub(crate) body: Vec<u8>,
    pub(crate) written_at: Instant,
}

#[cfg(test)]
impl Prepared {
    /// For tests: a batch of `count` messages `{}` of 64 bytes' cost each, ending at `end`.
    pub(crate) fn tiny(end: u64, count: usize) -> Prepared {
        let mut batch = Encoded::default();
        for _ in 0..count {
            let start = batch.bytes.len();
            batch.bytes.extend_from_slice(b"{}");
            batch.slots.push(Slot {
                bytes: start..batch.bytes.len(),
                id: 0..0,
                cost: 64,
            });
        }
        Prepared {
            end,
            parts: std::iter::once(0..count).collect(),
            batch,
            body: Vec::new(),
            written_at: Instant::now(),
        }
    }
}

/// The fixed ten bytes that start every gzip member written here (RFC 1952): magic, deflate,
/// no flags, no modification time, no extra flags, unknown OS. What flate2's `GzEncoder`
/// writes by default too, but for the extra-flags byte, which readers ignore.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

/// Writes request bodies: the envelope around encoded messages, gzipped when configured.
pub(crate) struct BodyWriter {
    write_key: String,
    /// The deflate stream, kept from body to body: a new one allocates and clears about
    /// 300 KB of tables, a cost per request that `reset` avoids. `None` sends bodies
    /// uncompressed.
    deflate: Option<DeflateEncoder<Vec<u8>>>,
    /// The gzip level, for a new stream.
    level: Compression,
    /// The uncompressed envelope, when gzipping.
    raw: Vec<u8>,
}

impl BodyWriter {
    pub(crate) fn new(config: &Validated) -> BodyWriter {
        let level = Compression::new(config.gzip_level);
        BodyWriter {
            write_key: config.write_key.clone(),
            deflate: config.gzip.then(|| DeflateEncoder::new(Vec::new(), level)),
            level,
            raw: Vec::new(),
        }
    }

    /// Replaces `out` with the body for `part` of `batch`, with a `sentAt` of now.
    pub(crate) fn write(&mut self, batch: &Encoded, part: Range<usize>, out: &mut Vec<u8>) {
        out.clear();
        let envelope = if self.deflate.is_some() {
            &mut self.raw
        } else {
            &mut *out
        };
        envelope.clear();
        write_batch(
            batch.messages(part),
            SystemTime::now(),
            &self.write_key,
            envelope,
        );
        if let Some(deflate) = &mut self.deflate
            && gzip_into(deflate, &self.raw, out).is_err()
        {
            // Not seen with a Vec as the output; should the stream ever fail, a fresh one
            // keeps this body and every later one from continuing a broken stream.
            *deflate = DeflateEncoder::new(Vec::new(), self.level);
            let _ = gzip_into(deflate, &self.raw, out);
        }
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

/// Everything the encoder thread needs.
pub(crate) struct Encoder {
    options: EncodeOptions,
    writer: BodyWriter,
    /// Bytes of messages (commas included) that fit in one request beside the envelope.
    part_bytes: usize,
}

impl Encoder {
    pub(crate) fn new(config: &Validated, options: EncodeOptions) -> Encoder {
        Encoder {
            options,
            writer: BodyWriter::new(config),
            part_bytes: config.message_bytes_per_request(),
        }
    }

    /// Encodes batches until the worker goes away.
    pub(crate) fn run(mut self, batches: &Receiver<Handed>, prepared: &Sender<Prepared>) {
        let mut capacity = (0, 0);
        while let Ok(Handed { end, messages }) = batches.recv() {
            let batch = self.encode(messages, capacity.0);
            let parts = self.parts(&batch);
            let mut body = Vec::with_capacity(capacity.1);
            if let Some(first) = parts.front() {
                self.writer.write(&batch, first.clone(), &mut body);
            }
            capacity = (
                capacity.0.max(batch.bytes.len()),
                capacity.1.max(body.len()),
            );
            let written = Prepared {
                end,
                batch,
                parts,
                body,
                written_at: Instant::now(),
            };
            // The worker keeps a receiver to take unsent batches back at a shutdown
            // deadline, so this fails only once the worker is gone too.
            if prepared.send(written).is_err() {
                return;
            }
        }
    }

    /// Encodes each message into one buffer, filling in generated messageIds. The messages
    /// are dropped here, off the callers' threads.
    fn encode(&self, pending: Vec<Pending>, capacity: usize) -> Encoded {
        let mut batch = Encoded {
            bytes: Vec::with_capacity(capacity),
            slots: Vec::with_capacity(pending.len()),
        };
        for Pending { payload, cost } in pending {
            let start = batch.bytes.len();
            let id = match payload {
                Payload::Encoded { bytes, id } => {
                    batch.bytes.extend_from_slice(&bytes);
                    start + id.start..start + id.end
                }
                Payload::Message {
                    message,
                    generated_id,
                    ..
                } => encode_into(&message, generated_id, &self.options, &mut batch.bytes),
            };
            batch.slots.push(Slot {
                bytes: start..batch.bytes.len(),
                id,
                cost,
            });
        }
        batch
    }

    /// Cuts `batch` into runs of messages that fit one request each. Every message fits
    /// alone: the call refused anything over the per-message limit, which is below this.
    fn parts(&self, batch: &Encoded) -> VecDeque<Range<usize>> {
        let mut parts = VecDeque::new();
        let mut start = 0;
        let mut bytes = 0;
        for (i, slot) in batch.slots.iter().enumerate() {
            let size = slot.bytes.len() + 1;
            if i > start && bytes + size > self.part_bytes {
                parts.push_back(start..i);
                start = i;
                bytes = 0;
            }
            bytes += size;
        }
        if start < batch.slots.len() {
            parts.push_back(start..batch.slots.len());
        }
        parts
    }
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
}
