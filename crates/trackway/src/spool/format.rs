//! The bytes of a spool segment: its header and its records. Pure functions over byte slices,
//! so every rule (and every way a crash can leave a record) is tested without a file.
//!
//! ```text
//!  offset  size  header (HEADER_LEN bytes)
//!       0     8  magic "TRKSPOOL"
//!       8     4  format version (u32 LE)
//!      12     4  header length (u32 LE)
//!      16    16  write key fingerprint: SipHash-1-3 (128 bit) of the key, never the key
//!      32     8  segment id (u64 LE): segments are read in id order
//!      40     2  host length (u16 LE), then the batch URL's bytes (at most HOST_MAX)
//!     448     4  CRC-32 of bytes 0..448
//!     504     8  progress: records from the first that are settled (u64 LE; outside the CRC,
//!                rewritten in place as batches are acknowledged)
//!
//!  records, back to back from HEADER_LEN, then zeros to the end of the preallocated file:
//!       0     4  payload length (u32 LE; 0 = no more records)
//!       4     4  CRC-32 of bytes 8..12 and the payload
//!       8     2  start of the messageId's JSON string within the payload (u16 LE)
//!      10     2  its end
//!      12     n  the encoded message (JSON)
//! ```
//!
//! A record's header is written before its payload, so a write cut short by a crash leaves a
//! length whose checksum does not match: a torn tail, which recovery cuts off and counts. A
//! crash before the length leaves zeros, which read as the end.

use std::ops::Range;

use siphasher::sip128::{Hasher128, SipHasher13};
use trackway_protocol::MAX_MESSAGE_BYTES;

/// The first bytes of every segment file.
pub(crate) const MAGIC: [u8; 8] = *b"TRKSPOOL";

/// The segment format this client writes and reads. A segment with a higher one was written
/// by a newer client and is refused rather than misread.
pub(crate) const FORMAT_VERSION: u32 = 1;

/// Bytes before the first record.
pub(crate) const HEADER_LEN: usize = 512;

/// The longest batch URL a header holds.
pub(crate) const HOST_MAX: usize = 400;

const HOST_AT: usize = 42;
const CRC_AT: usize = 448;

/// Where the progress count sits in the header.
pub(crate) const PROGRESS_AT: usize = 504;

/// Bytes of a record before its payload.
pub(crate) const RECORD_HEADER: usize = 12;

/// The fingerprint of a write key: enough to tell two keys apart, not to recover either.
pub(crate) fn fingerprint(write_key: &str) -> [u8; 16] {
    // Fixed keys: the fingerprint must be the same in every process and version.
    let mut hasher = SipHasher13::new_with_keys(0x7472_6163_6b77_6179, 0x7370_6f6f_6c5f_6b31);
    std::hash::Hasher::write(&mut hasher, write_key.as_bytes());
    hasher.finish128().as_bytes()
}

/// What a segment's header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) key: [u8; 16],
    pub(crate) id: u64,
    pub(crate) host: String,
    pub(crate) progress: u64,
}

/// Why a header could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HeaderError {
    /// Not a segment this format describes (or a damaged one): why.
    Invalid(&'static str),
    /// A segment of a later format version.
    Newer(u32),
}

/// Writes a new segment's header (progress zero) into `out`, which holds at least
/// [`HEADER_LEN`] bytes. `host` is at most [`HOST_MAX`] bytes (the configuration checks).
pub(crate) fn write_header(out: &mut [u8], key: &[u8; 16], id: u64, host: &str) {
    let out = &mut out[..HEADER_LEN];
    out.fill(0);
    out[0..8].copy_from_slice(&MAGIC);
    out[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    out[12..16].copy_from_slice(&(HEADER_LEN as u32).to_le_bytes());
    out[16..32].copy_from_slice(key);
    out[32..40].copy_from_slice(&id.to_le_bytes());
    let host = &host.as_bytes()[..host.len().min(HOST_MAX)];
    out[40..42].copy_from_slice(&(host.len() as u16).to_le_bytes());
    out[HOST_AT..HOST_AT + host.len()].copy_from_slice(host);
    let crc = crc32fast::hash(&out[..CRC_AT]);
    out[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

/// Reads a segment's header.
pub(crate) fn read_header(bytes: &[u8]) -> Result<Header, HeaderError> {
    if bytes.len() < HEADER_LEN {
        return Err(HeaderError::Invalid("shorter than a segment header"));
    }
    if bytes[0..8] != MAGIC {
        return Err(HeaderError::Invalid("no spool magic at its start"));
    }
    let version = u32_at(bytes, 8);
    if version > FORMAT_VERSION {
        return Err(HeaderError::Newer(version));
    }
    if version == 0 || u32_at(bytes, 12) as usize != HEADER_LEN {
        return Err(HeaderError::Invalid("an unknown header layout"));
    }
    if crc32fast::hash(&bytes[..CRC_AT]) != u32_at(bytes, CRC_AT) {
        return Err(HeaderError::Invalid("its header checksum does not match"));
    }
    let host_len = u16_at(bytes, 40) as usize;
    if host_len > HOST_MAX {
        return Err(HeaderError::Invalid("its host is too long"));
    }
    let host = std::str::from_utf8(&bytes[HOST_AT..HOST_AT + host_len])
        .map_err(|_| HeaderError::Invalid("its host is not UTF-8"))?
        .to_owned();
    let mut key = [0; 16];
    key.copy_from_slice(&bytes[16..32]);
    Ok(Header {
        key,
        id: u64_at(bytes, 32),
        host,
        progress: u64_at(bytes, PROGRESS_AT),
    })
}

/// Writes the progress count into a header.
pub(crate) fn write_progress(header: &mut [u8], settled: u64) {
    header[PROGRESS_AT..PROGRESS_AT + 8].copy_from_slice(&settled.to_le_bytes());
}

/// Bytes a record of a `payload`-byte message takes.
pub(crate) fn record_len(payload: usize) -> usize {
    RECORD_HEADER + payload
}

/// A record's header for `payload`, whose messageId's JSON string sits at `id`.
pub(crate) fn record_header(payload: &[u8], id: &Range<usize>) -> [u8; RECORD_HEADER] {
    let mut header = [0; RECORD_HEADER];
    header[0..4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    // Offsets fit: a message is at most 32 KB. A range past that (never produced) reads as
    // "no id".
    let (start, end) = match (u16::try_from(id.start), u16::try_from(id.end)) {
        (Ok(start), Ok(end)) => (start, end),
        _ => (0, 0),
    };
    header[8..10].copy_from_slice(&start.to_le_bytes());
    header[10..12].copy_from_slice(&end.to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&header[8..12]);
    crc.update(payload);
    header[4..8].copy_from_slice(&crc.finalize().to_le_bytes());
    header
}

/// What is at an offset of a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Read {
    /// A whole record: where its payload and messageId sit, and where the next one starts.
    Record {
        payload: Range<usize>,
        id: Range<usize>,
        next: usize,
    },
    /// No more records: zeros, or no room for another.
    End,
    /// A record cut short or damaged: a crash in the middle of its write.
    Torn,
}

/// Reads the record at `at` of a segment's bytes.
pub(crate) fn read_record(segment: &[u8], at: usize) -> Read {
    let Some(header) = segment.get(at..at + RECORD_HEADER) else {
        return Read::End;
    };
    let len = u32_at(header, 0) as usize;
    if len == 0 {
        return if header.iter().all(|b| *b == 0) {
            Read::End
        } else {
            Read::Torn
        };
    }
    let start = at + RECORD_HEADER;
    if len > MAX_MESSAGE_BYTES || start + len > segment.len() {
        return Read::Torn;
    }
    let payload = start..start + len;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&header[8..12]);
    crc.update(&segment[payload.clone()]);
    if crc.finalize() != u32_at(header, 4) {
        return Read::Torn;
    }
    let (id_start, id_end) = (u16_at(header, 8) as usize, u16_at(header, 10) as usize);
    if id_start > id_end || id_end > len {
        return Read::Torn;
    }
    Read::Record {
        payload,
        id: id_start..id_end,
        next: start + len,
    }
}

/// What a scan of a whole segment found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Scan {
    /// Whole records from the first.
    pub(crate) records: u64,
    /// Where the last whole record ends.
    pub(crate) end: usize,
    /// A torn record follows the last whole one.
    pub(crate) torn: bool,
}

/// Reads every record of a segment, stopping at the end or at a torn record.
pub(crate) fn scan(segment: &[u8]) -> Scan {
    let mut at = HEADER_LEN;
    let mut records = 0;
    loop {
        match read_record(segment, at) {
            Read::Record { next, .. } => {
                records += 1;
                at = next;
            }
            Read::End => {
                return Scan {
                    records,
                    end: at,
                    torn: false,
                };
            }
            Read::Torn => {
                return Scan {
                    records,
                    end: at,
                    torn: true,
                };
            }
        }
    }
}

/// Where record `index` (from the first) starts, or the end if there are fewer.
pub(crate) fn offset_of(segment: &[u8], index: u64) -> usize {
    let mut at = HEADER_LEN;
    for _ in 0..index {
        match read_record(segment, at) {
            Read::Record { next, .. } => at = next,
            Read::End | Read::Torn => break,
        }
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment_with(messages: &[&[u8]]) -> Vec<u8> {
        let mut bytes = vec![0; 4096];
        write_header(&mut bytes, &fingerprint("key"), 7, "http://h/v1/batch");
        let mut at = HEADER_LEN;
        for message in messages {
            let header = record_header(message, &(1..message.len().min(3)));
            bytes[at..at + RECORD_HEADER].copy_from_slice(&header);
            bytes[at + RECORD_HEADER..at + RECORD_HEADER + message.len()].copy_from_slice(message);
            at += record_len(message.len());
        }
        bytes
    }

    #[test]
    fn a_header_reads_back_and_a_newer_version_is_refused() {
        let mut bytes = segment_with(&[]);
        let header = read_header(&bytes).unwrap();
        assert_eq!(header.id, 7);
        assert_eq!(header.host, "http://h/v1/batch");
        assert_eq!(header.key, fingerprint("key"));
        assert_ne!(header.key, fingerprint("other key"));
        assert_eq!(header.progress, 0);
        write_progress(&mut bytes, 12);
        assert_eq!(read_header(&bytes).unwrap().progress, 12);

        let mut newer = bytes.clone();
        newer[8..12].copy_from_slice(&2u32.to_le_bytes());
        assert_eq!(read_header(&newer), Err(HeaderError::Newer(2)));
        let mut damaged = bytes.clone();
        damaged[45] ^= 1;
        assert!(matches!(
            read_header(&damaged),
            Err(HeaderError::Invalid(_))
        ));
        assert!(matches!(
            read_header(b"{\"not\": \"a segment\"}"),
            Err(HeaderError::Invalid(_))
        ));
    }

    #[test]
    fn records_read_back_in_order_and_end_at_zeros() {
        let bytes = segment_with(&[b"{\"a\":1}", b"{\"b\":22}"]);
        let first = read_record(&bytes, HEADER_LEN);
        let Read::Record { payload, id, next } = first else {
            panic!("{first:?}")
        };
        assert_eq!(&bytes[payload], b"{\"a\":1}");
        assert_eq!(id, 1..3);
        assert!(matches!(read_record(&bytes, next), Read::Record { .. }));
        assert_eq!(
            scan(&bytes),
            Scan {
                records: 2,
                end: HEADER_LEN + 2 * RECORD_HEADER + 15,
                torn: false
            }
        );
        assert_eq!(offset_of(&bytes, 1), HEADER_LEN + RECORD_HEADER + 7);
        assert_eq!(offset_of(&bytes, 5), scan(&bytes).end);
    }

    #[test]
    fn a_write_cut_anywhere_reads_as_torn_or_as_the_end() {
        let message: &[u8] = b"{\"messageId\":\"m-1\",\"event\":\"x\"}";
        let whole = segment_with(&[b"{}", message]);
        let second = offset_of(&whole, 1);
        let last = second + record_len(message.len());
        // Every prefix of the second record's bytes, as a crash would leave it (header first,
        // then payload), followed by zeros.
        for cut in second..last {
            let mut bytes = whole.clone();
            bytes[cut..].fill(0);
            let found = scan(&bytes);
            assert_eq!(found.records, 1, "cut at {cut}");
            assert_eq!(found.end, second, "cut at {cut}");
            // Only a cut before any of the length is written leaves no trace.
            assert_eq!(found.torn, cut > second, "cut at {cut}");
        }
        // A flipped bit anywhere in the record is caught too.
        for at in second..last {
            let mut bytes = whole.clone();
            bytes[at] ^= 0x10;
            assert_eq!(scan(&bytes).records, 1, "bit flipped at {at}");
        }
        // A length running past the segment is torn, not a panic.
        let mut bytes = whole.clone();
        bytes[second..second + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(scan(&bytes).torn);
        assert_eq!(read_record(&bytes, bytes.len() - 3), Read::End);
    }
}
