//! The collector's ingest path on arbitrary request bodies: decompression (when the first
//! byte is odd), batch decoding, limits, enrichment and validation. It must never panic,
//! whatever arrives.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((first, body)) = data.split_first() else { return };
    let _ = trackway_collector::fuzz_batch(body, first & 1 == 1);
});
