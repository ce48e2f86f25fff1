//! Replays the committed fuzzing corpus (`fuzz/corpus/ingest_batch`) through the ingest path on
//! every test run: whatever the fuzzer once found interesting keeps being exercised, without
//! libFuzzer. A binary of its own so a panic names this suite.

use std::path::Path;

#[test]
fn every_ingest_corpus_entry_is_handled_without_panicking() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/ingest_batch");
    let mut count = 0;
    let mut accepted = 0;
    for entry in std::fs::read_dir(&dir).expect("fuzz/corpus/ingest_batch") {
        let data = std::fs::read(entry.expect("entry").path()).expect("corpus file");
        let Some((first, body)) = data.split_first() else {
            continue;
        };
        if trackway_collector::fuzz_batch(body, first & 1 == 1).is_ok() {
            accepted += 1;
        }
        count += 1;
    }
    assert!(count >= 20, "the corpus is there ({count} entries)");
    assert!(accepted > 0, "some entries are valid batches");
}
