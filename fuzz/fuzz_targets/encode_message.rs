//! The client's message encoder on arbitrary messages: see `trackway_protocol::fuzz_encode`
//! for the properties checked.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| trackway_protocol::fuzz_encode(data));
