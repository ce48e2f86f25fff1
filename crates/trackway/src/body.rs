//! Request bodies: the batch envelope around encoded messages, gzipped when configured. The
//! encoder writes each batch's first body ahead; the sender writes the rest (later parts,
//! retries, bodies grown stale).

use std::io::Write;
use std::ops::Range;
use std::time::{Duration, SystemTime};

use flate2::write::DeflateEncoder;
use flate2::{Compression, Crc};
use trackway_protocol::write_batch;

use crate::batch::Encoded;
use crate::config::Validated;

/// How long a body written ahead stays good: past this, its `sentAt` would be noticeably
/// older than the request, so the sender writes it again.
pub(crate) const STALE_AFTER: Duration = Duration::from_millis(250);

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
