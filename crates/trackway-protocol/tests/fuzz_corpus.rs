//! Replays the committed fuzzing corpus (`fuzz/corpus/encode_message`) through the encoder's
//! properties (`trackway_protocol::fuzz_encode`) on every test run, without libFuzzer.

use std::path::Path;

#[test]
fn every_encoder_corpus_entry_keeps_the_encoders_properties() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/encode_message");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).expect("fuzz/corpus/encode_message") {
        let data = std::fs::read(entry.expect("entry").path()).expect("corpus file");
        trackway_protocol::fuzz_encode(&data);
        count += 1;
    }
    assert!(count >= 10, "the corpus is there ({count} entries)");
}
