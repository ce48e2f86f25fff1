//! JSON writing for the encoder: strings checked for escapes eight bytes at a time, and
//! `Value`s walked without serde. The output is byte for byte what `serde_json::to_writer`
//! writes (the encode fuzz target checks this on every input).
//!
//! Escaping dominated the encoder's profile: serde_json looks each byte up in a table. Most
//! strings in analytics events (names, ids, URLs) need no escape at all, so the writer first
//! asks whether a string needs any, eight bytes per step (SWAR: a few integer operations tell
//! whether any of them is a quote, a backslash or a control character), and copies a clean
//! string whole; only a string that needs escapes is written a byte at a time.
//!
//! It also names JSON's types for error messages ([`json_type_name`]), which both the parser
//! of messages and the validator use: it lives here, below both, so neither imports the other
//! for it.

use serde_json::{Map, Value};

/// The JSON type of `value`, for error messages.
pub(crate) fn json_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Eight copies of `byte`.
const fn splat(byte: u8) -> u64 {
    u64::from_ne_bytes([byte; 8])
}

/// A word with the high bit set in every byte of `word` that must be escaped in a JSON string
/// (`"`, `\` or below 0x20), zero if there is none. Bits above the lowest set one may be false
/// alarms (a borrow carries into the next byte), so only "zero or not" is used.
fn escape_mask(word: u64) -> u64 {
    let high = splat(0x80);
    let zero_byte = |v: u64| v.wrapping_sub(splat(0x01)) & !v & high;
    // A byte below 0x20 is one whose value minus 0x20 borrows, for bytes under 0x80 (the
    // `!word` term drops bytes of 0x80 and above, which are never escaped).
    let control = word.wrapping_sub(splat(0x20)) & !word & high;
    control | zero_byte(word ^ splat(b'"')) | zero_byte(word ^ splat(b'\\'))
}

/// Appends `s` as a JSON string, quotes included.
pub(crate) fn write_str(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    if has_escape(bytes) {
        out.reserve(bytes.len() + 2);
        out.push(b'"');
        write_escaped(out, bytes);
        out.push(b'"');
    } else if bytes.len() <= 16 {
        write_short(out, bytes);
    } else {
        out.reserve(bytes.len() + 2);
        out.push(b'"');
        out.extend_from_slice(bytes);
        out.push(b'"');
    }
}

/// Appends a clean string of at most 16 bytes, quoted, with fixed-size copies (two that
/// overlap, for lengths between two powers of two) instead of a call to `memcpy`: most names
/// and values in events are this short.
fn write_short(out: &mut Vec<u8>, bytes: &[u8]) {
    debug_assert!(bytes.len() <= 16, "write_short takes at most 16 bytes");
    let n = bytes.len();
    let start = out.len();
    out.extend_from_slice(&[b'"'; 18]);
    let quoted = &mut out[start..start + 18];
    let body = &mut quoted[1..];
    if n >= 8 {
        body[..8].copy_from_slice(&bytes[..8]);
        body[n - 8..n].copy_from_slice(&bytes[n - 8..]);
    } else if n >= 4 {
        body[..4].copy_from_slice(&bytes[..4]);
        body[n - 4..n].copy_from_slice(&bytes[n - 4..]);
    } else {
        body[..n].copy_from_slice(bytes);
    }
    body[n] = b'"';
    out.truncate(start + n + 2);
}

/// Whether any byte of `bytes` needs an escape: whole words, then the last word again
/// (overlapping what was checked, which is harmless for a yes/no answer); short strings in
/// two overlapping halves. No byte-at-a-time loop above three bytes.
fn has_escape(bytes: &[u8]) -> bool {
    let n = bytes.len();
    if n >= 8 {
        let mut words = bytes.chunks_exact(8);
        let dirty = |word: &[u8]| {
            <[u8; 8]>::try_from(word).is_ok_and(|w| escape_mask(u64::from_le_bytes(w)) != 0)
        };
        if words.any(dirty) {
            return true;
        }
        !n.is_multiple_of(8) && dirty(&bytes[n - 8..])
    } else if n >= 4 {
        let half = |at: usize| {
            <[u8; 4]>::try_from(&bytes[at..at + 4]).map_or(0, |h| u64::from(u32::from_le_bytes(h)))
        };
        escape_mask(half(0) | half(n - 4) << 32) != 0
    } else {
        bytes.iter().any(|&b| needs_escape(b))
    }
}

/// Appends `bytes` escaped, copying the runs between escapes whole.
fn write_escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    // `clean` is where the run of bytes not yet copied starts.
    let mut clean = 0;
    for (at, &byte) in bytes.iter().enumerate() {
        if needs_escape(byte) {
            out.extend_from_slice(&bytes[clean..at]);
            write_escape(out, byte);
            clean = at + 1;
        }
    }
    out.extend_from_slice(&bytes[clean..]);
}

/// Whether `byte` must be escaped in a JSON string.
fn needs_escape(byte: u8) -> bool {
    byte < 0x20 || byte == b'"' || byte == b'\\'
}

/// The escape of one byte that needs one, as serde_json writes it.
fn write_escape(out: &mut Vec<u8>, byte: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let short = match byte {
        b'"' => b'"',
        b'\\' => b'\\',
        0x08 => b'b',
        0x0c => b'f',
        b'\n' => b'n',
        b'\r' => b'r',
        b'\t' => b't',
        _ => {
            out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(byte >> 4)],
                HEX[usize::from(byte & 0xf)],
            ]);
            return;
        }
    };
    out.extend_from_slice(&[b'\\', short]);
}

/// Appends `value` as compact JSON.
pub(crate) fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        // serde_json's own number formatting (itoa and its float writer), unchanged.
        Value::Number(n) => {
            let _ = serde_json::to_writer(&mut *out, n);
        }
        Value::String(s) => write_str(out, s),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, item);
            }
            out.push(b']');
        }
        Value::Object(map) => write_map(out, map),
    }
}

/// Appends `map` as a compact JSON object.
pub(crate) fn write_map(out: &mut Vec<u8>, map: &Map<String, Value>) {
    let mut object = ObjectWriter::open(out);
    for (name, value) in map {
        object.member(name, value);
    }
    object.close();
}

/// Writes the members of one JSON object, tracking the commas.
pub(crate) struct ObjectWriter<'a> {
    pub(crate) out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> ObjectWriter<'a> {
    pub(crate) fn open(out: &'a mut Vec<u8>) -> ObjectWriter<'a> {
        out.push(b'{');
        ObjectWriter { out, first: true }
    }

    /// `"name":`, after a comma unless it is the first member; the value is the caller's.
    pub(crate) fn key(&mut self, name: &str) {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        write_str(self.out, name);
        self.out.push(b':');
    }

    /// `"name":value`.
    pub(crate) fn member(&mut self, name: &str, value: &Value) {
        self.key(name);
        write_value(self.out, value);
    }

    pub(crate) fn close(self) {
        self.out.push(b'}');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mine(value: &Value) -> String {
        let mut out = Vec::new();
        write_value(&mut out, value);
        String::from_utf8(out).expect("UTF-8")
    }

    #[test]
    fn every_byte_escapes_as_serde_json_does() {
        // Each ASCII byte at every position of strings of 1 to 17 bytes, so it lands in each
        // short-string case, a whole word, the overlapping last word and across words.
        for byte in 0..=0x7f_u8 {
            let c = char::from(byte);
            for len in 1..=17 {
                for at in 0..len {
                    let mut s: String = "abcdefghijklmnopq".chars().take(len - 1).collect();
                    s.insert(at, c);
                    let value = Value::String(s);
                    assert_eq!(
                        mine(&value),
                        serde_json::to_string(&value).expect("serialises"),
                        "byte {byte:#04x} at {at} of {len}"
                    );
                }
            }
        }
    }

    #[test]
    fn strings_of_every_length_and_mix_match_serde_json() {
        let mut rng_state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            rng_state ^= rng_state << 13;
            rng_state ^= rng_state >> 7;
            rng_state ^= rng_state << 17;
            rng_state
        };
        let alphabet = [
            'a', 'Z', '"', '\\', '\n', '\u{1f}', '\u{7f}', 'é', '€', '😀', ' ', '/',
        ];
        for len in 0..40 {
            for _ in 0..50 {
                let s: String = (0..len)
                    .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                    .collect();
                let value = Value::String(s);
                assert_eq!(
                    mine(&value),
                    serde_json::to_string(&value).expect("serialises")
                );
            }
        }
    }

    #[test]
    fn values_match_serde_json() {
        let value = serde_json::json!({
            "null": null, "t": true, "f": false,
            "n": [0, -1, 18446744073709551615_u64, -9223372036854775808_i64, 1.5, -0.0, 1e300, 2.2250738585072014e-308],
            "nested": {"a": [[], {}, [{"k\"ey": "v\u{0}"}]], "": ""},
            "unicode": "naïve 😀 \u{2028}"
        });
        assert_eq!(
            mine(&value),
            serde_json::to_string(&value).expect("serialises")
        );
    }
}
