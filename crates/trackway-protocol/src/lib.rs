//! The Segment Tracking API as Rust types: the messages, the rules that make one valid, the
//! size limits, and their JSON encoding. No I/O and no async: both the `trackway` client and
//! the `trackway-collector` server build on it, so the two sides cannot drift apart.
//!
//! ```
//! use std::time::SystemTime;
//! use serde_json::json;
//! use trackway_protocol::{encode_message, validate, EncodeOptions, Message, Track};
//!
//! let message: Message = Track::new("Signed Up")
//!     .user_id("user-1")
//!     .properties(json!({"plan": "trial"}))
//!     .message_id("m-1")
//!     .timestamp(SystemTime::UNIX_EPOCH)
//!     .into();
//! validate(&message)?;
//! let mut bytes = Vec::new();
//! encode_message(&message, &EncodeOptions::new(Some(("demo", "1.0")), Default::default()), &mut bytes);
//! let wire: serde_json::Value = serde_json::from_slice(&bytes)?;
//! assert_eq!(wire["event"], "Signed Up");
//! assert_eq!(wire["timestamp"], "1970-01-01T00:00:00.000Z");
//! assert_eq!(wire["context"]["library"]["name"], "demo");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]

pub mod encode;
mod json;
pub mod limits;
pub mod message;
pub mod object;
pub mod time;
pub mod validate;

pub use encode::{
    EncodeOptions, Footprint, encode_message, encode_message_with_id, envelope_overhead, footprint,
    write_batch,
};
pub use limits::{MAX_BATCH_MESSAGES, MAX_MESSAGE_BYTES, MAX_REQUEST_BYTES, MESSAGE_ID_CHAR_LIMIT};
pub use message::{Alias, Common, Custom, Group, Identify, Kind, Message, Page, Screen, Track};
pub use object::Object;
pub use time::{format_timestamp, write_timestamp};
pub use validate::{Checked, ValidationError, check, validate, validate_json};

/// Runs `data` through the encoder's properties, panicking if one fails: whatever
/// [`Message::from_json`] accepts, [`encode_message`] writes valid JSON of the same `type`, and
/// the messageId range it returns holds the messageId; and the encoder's JSON writer writes
/// any value byte for byte as serde_json does. Shared by the fuzz target and the test
/// that replays its corpus.
#[doc(hidden)]
pub fn fuzz_encode(data: &[u8]) {
    use serde_json::{Map, Value};
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let mut written = Vec::new();
    json::write_value(&mut written, &value);
    assert!(
        serde_json::to_vec(&value).is_ok_and(|expected| expected == written),
        "the JSON writer differs from serde_json on {value}"
    );
    let Ok(message) = Message::from_json(value) else {
        return;
    };
    let mut default_context = Map::new();
    default_context.insert("app".into(), Value::String("fuzz".into()));
    let options = EncodeOptions::new(Some(("trackway", "0.0.0")), default_context);
    let mut out = Vec::new();
    let bound = crate::footprint(&message, &options, None);
    let id_range = encode_message(&message, &options, &mut out);
    assert!(
        out.len() <= bound.max_json,
        "encoded {} bytes, over the footprint's bound of {}",
        out.len(),
        bound.max_json
    );
    let encoded: Value = match serde_json::from_slice(&out) {
        Ok(encoded) => encoded,
        Err(e) => panic!(
            "the encoder wrote invalid JSON ({e}): {}",
            String::from_utf8_lossy(&out)
        ),
    };
    assert_eq!(encoded["type"].as_str(), Some(message.kind().as_str()));
    if let (Some(range), Some(id)) = (id_range, &message.common().message_id) {
        let written: Result<String, _> = serde_json::from_slice(&out[range]);
        assert_eq!(
            written.ok().as_ref(),
            Some(id),
            "the messageId range holds the messageId"
        );
    }
}
