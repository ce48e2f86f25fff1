//! The client's message encoder on arbitrary messages: whatever `Message::from_json` accepts
//! and validation passes, `encode_message` must write valid JSON with the same type, and the
//! messageId range it returns must hold that messageId.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};
use trackway_protocol::{EncodeOptions, Message, encode_message, validate};

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<Value>(data) else { return };
    let Ok(message) = Message::from_json(value) else { return };
    let valid = validate(&message).is_ok();
    let mut default_context = Map::new();
    default_context.insert("app".into(), Value::String("fuzz".into()));
    let options = EncodeOptions::new(Some(("trackway", "0.0.0")), default_context);
    let mut out = Vec::new();
    let id_range = encode_message(&message, &options, &mut out);
    let encoded: Value = serde_json::from_slice(&out).expect("the encoder wrote invalid JSON");
    assert_eq!(encoded["type"].as_str(), Some(message.kind().as_str()));
    if let (Some(range), Some(id)) = (id_range, &message.common().message_id) {
        let written: String = serde_json::from_slice(&out[range]).expect("messageId range is a JSON string");
        assert_eq!(&written, id);
    }
    if valid {
        assert!(encoded["context"]["library"].is_object() || encoded["context"].get("library").is_some());
    }
});
