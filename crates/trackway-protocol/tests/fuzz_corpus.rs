//! Replays the committed fuzzing corpus (`fuzz/corpus/encode_message`) through the encoder's
//! properties on every test run, without libFuzzer.

use std::path::Path;

use serde_json::{Map, Value};
use trackway_protocol::{EncodeOptions, Message, encode_message};

#[test]
fn every_encoder_corpus_entry_encodes_to_valid_json() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/encode_message");
    let options = EncodeOptions::new(Some(("trackway", "0.0.0")), Map::new());
    let mut encoded = 0;
    for entry in std::fs::read_dir(&dir).expect("fuzz/corpus/encode_message") {
        let data = std::fs::read(entry.expect("entry").path()).expect("corpus file");
        let Ok(value) = serde_json::from_slice::<Value>(&data) else {
            continue;
        };
        let Ok(message) = Message::from_json(value) else {
            continue;
        };
        let mut out = Vec::new();
        let id_range = encode_message(&message, &options, &mut out);
        let written: Value = serde_json::from_slice(&out).expect("valid JSON");
        assert_eq!(written["type"].as_str(), Some(message.kind().as_str()));
        if let (Some(range), Some(id)) = (id_range, &message.common().message_id) {
            let at: String = serde_json::from_slice(&out[range]).expect("a JSON string");
            assert_eq!(&at, id);
        }
        encoded += 1;
    }
    assert!(encoded >= 10, "the corpus is there ({encoded} messages)");
}
