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

pub mod encode;
pub mod limits;
pub mod message;
pub mod time;
pub mod validate;

pub use encode::{EncodeOptions, encode_message, envelope_overhead, write_batch};
pub use limits::{MAX_BATCH_MESSAGES, MAX_MESSAGE_BYTES, MAX_REQUEST_BYTES, MESSAGE_ID_CHAR_LIMIT};
pub use message::{Alias, Common, Custom, Group, Identify, Kind, Message, Page, Screen, Track};
pub use time::{format_timestamp, write_timestamp};
pub use validate::{ValidationError, validate, validate_json};
