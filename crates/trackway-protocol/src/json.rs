//! JSON writing for the encoder: strings escaped eight bytes at a time, and `Value`s walked
//! without serde. The output is byte for byte what `serde_json::to_writer` writes (the encode
//! fuzz target checks this on every input).
//!
//! Escaping dominated the encoder's profile: serde_json looks each byte up in a table. Most
//! strings in analytics events (names, ids, URLs) need no escape at all, so testing eight bytes
//! per step (SWAR: a few integer operations tell whether any of them is a quote, a backslash or
//! a control character) and copying clean runs whole costs a fraction of that.

use serde_json::{Map, Value};

/// Eight copies of `byte`.
const fn splat(byte: u8) -> u64 {
    u64::from_ne_bytes([byte; 8])
}

/// A word with the high bit set in every byte of `word` that must be escaped in a JSON string
/// (`"`, `\` or below 0x20). Bits above the lowest set one may be false alarms (a borrow
/// carries into the next byte); the lowest set bit is always exact.
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
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    // `clean` is where the run of bytes not yet copied starts.
    let mut clean = 0;
    let mut at = 0;
    while at < bytes.len() {
        let found = match bytes
            .get(at..at + 8)
            .and_then(|c| <[u8; 8]>::try_from(c).ok())
        {
            Some(word) => {
                let mask = escape_mask(u64::from_le_bytes(word));
                if mask == 0 {
                    at += 8;
                    continue;
                }
                at + (mask.trailing_zeros() / 8) as usize
            }
            // Fewer than eight bytes left: one at a time.
            None => match bytes[at..].iter().position(|&b| needs_escape(b)) {
                Some(i) => at + i,
                None => break,
            },
        };
        out.extend_from_slice(&bytes[clean..found]);
        write_escape(out, bytes[found]);
        at = found + 1;
        clean = at;
    }
    out.extend_from_slice(&bytes[clean..]);
    out.push(b'"');
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
    out.push(b'{');
    for (i, (name, item)) in map.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(out, name);
        out.push(b':');
        write_value(out, item);
    }
    out.push(b'}');
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
        // Each ASCII byte alone, and at every position of a 17-byte string, so it lands in a
        // full word, the padded tail and across the word boundary.
        for byte in 0..=0x7f_u8 {
            let c = char::from(byte);
            for at in 0..17 {
                let mut s: String = "abcdefghijklmnopq".chars().take(16).collect();
                s.insert(at, c);
                let value = Value::String(s);
                assert_eq!(
                    mine(&value),
                    serde_json::to_string(&value).expect("serialises"),
                    "byte {byte:#04x} at {at}"
                );
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
