//! Messages and batch envelopes as JSON bytes, written straight into a buffer.
//!
//! A message is encoded once, when it is accepted; the bytes are then immutable: every retry of
//! a batch reuses them and only the envelope (with a fresh `sentAt`) is written anew. The fields
//! are written by hand instead of through a derived `Serialize` so that the library's context
//! and the client's default context can be merged into the message's own without cloning maps.
//!
//! ```text
//! message:  {"type":"track","messageId":"…","timestamp":"…","userId":"…","event":"…",
//!            "properties":{…},"context":{<message keys>,<default keys not overridden>,"library":{…}},
//!            "integrations":{…}}
//! envelope: {"batch":[<message>,<message>,…],"sentAt":"…","writeKey":"…"}
//! ```

use std::ops::Range;
use std::time::SystemTime;

use serde_json::{Map, Value};

use crate::message::{Common, Message};
use crate::time::write_timestamp;

/// What the encoder adds to every message it writes.
#[derive(Debug, Clone, Default)]
pub struct EncodeOptions {
    library: Option<Vec<u8>>,
    default_context: Map<String, Value>,
}

impl EncodeOptions {
    /// Adds `context.library = {"name": name, "version": version}` to messages that do not
    /// already name a library, and `default_context`'s keys to messages that lack them.
    pub fn new(
        library: Option<(&str, &str)>,
        default_context: Map<String, Value>,
    ) -> EncodeOptions {
        let library = library.map(|(name, version)| {
            let mut bytes = Vec::new();
            write_json(
                &mut bytes,
                &serde_json::json!({ "name": name, "version": version }),
            );
            bytes
        });
        EncodeOptions {
            library,
            default_context,
        }
    }
}

/// Appends `message` as one JSON object to `out`, merging in what `options` adds.
///
/// Returns the byte range, within `out`, of the `messageId` value (the JSON string with its
/// quotes), or `None` when the message has no `messageId`. Validation is the caller's job.
pub fn encode_message(
    message: &Message,
    options: &EncodeOptions,
    out: &mut Vec<u8>,
) -> Option<Range<usize>> {
    let mut obj = ObjectWriter::open(out);
    obj.key("type");
    write_json(obj.out, message.kind().as_str());
    let common = message.common();
    let id_range = common.message_id.as_ref().map(|id| {
        obj.key("messageId");
        let start = obj.out.len();
        write_json(obj.out, id);
        start..obj.out.len()
    });
    if let Some(at) = common.timestamp {
        obj.key("timestamp");
        obj.out.push(b'"');
        write_timestamp(at, obj.out);
        obj.out.push(b'"');
    }
    obj.optional_str("userId", common.user_id.as_deref());
    obj.optional_str("anonymousId", common.anonymous_id.as_deref());
    match message {
        Message::Identify(m) => obj.optional_value("traits", &m.traits),
        Message::Track(m) => {
            obj.optional_str("event", Some(&m.event));
            obj.optional_value("properties", &m.properties);
        }
        Message::Page(m) => {
            obj.optional_str("name", m.name.as_deref());
            obj.optional_str("category", m.category.as_deref());
            obj.optional_value("properties", &m.properties);
        }
        Message::Screen(m) => {
            obj.optional_str("name", m.name.as_deref());
            obj.optional_str("category", m.category.as_deref());
            obj.optional_value("properties", &m.properties);
        }
        Message::Group(m) => {
            obj.optional_str("groupId", Some(&m.group_id));
            obj.optional_value("traits", &m.traits);
        }
        Message::Alias(m) => obj.optional_str("previousId", Some(&m.previous_id)),
        Message::Custom(m) => {
            for (name, value) in &m.fields {
                obj.key(name);
                write_json(obj.out, value);
            }
        }
    }
    write_context(&mut obj, common, options);
    if let Some(integrations) = &common.integrations {
        obj.key("integrations");
        write_json(obj.out, integrations);
    }
    obj.close();
    id_range
}

fn write_context(obj: &mut ObjectWriter<'_>, common: &Common, options: &EncodeOptions) {
    let own = match &common.context {
        Some(Value::Object(map)) => Some(map),
        _ => None,
    };
    let has = |name: &str| {
        own.is_some_and(|map| map.contains_key(name)) || options.default_context.contains_key(name)
    };
    let library = options.library.as_deref().filter(|_| !has("library"));
    if own.is_none_or(Map::is_empty) && options.default_context.is_empty() && library.is_none() {
        return;
    }
    obj.key("context");
    let mut context = ObjectWriter::open(obj.out);
    for (name, value) in own.into_iter().flatten() {
        context.key(name);
        write_json(context.out, value);
    }
    for (name, value) in &options.default_context {
        if !own.is_some_and(|map| map.contains_key(name)) {
            context.key(name);
            write_json(context.out, value);
        }
    }
    if let Some(library) = library {
        context.key("library");
        context.out.extend_from_slice(library);
    }
    context.close();
}

/// Appends a batch request body holding `messages` (each already encoded) to `out`.
///
/// `sent_at` should be the time of this attempt: the server corrects each message's timestamp
/// by `receivedAt - sentAt`, so a stale `sentAt` would shift every retried event.
pub fn write_batch<'a>(
    messages: impl IntoIterator<Item = &'a [u8]>,
    sent_at: SystemTime,
    write_key: &str,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(b"{\"batch\":[");
    for (i, message) in messages.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(message);
    }
    out.extend_from_slice(b"],\"sentAt\":\"");
    write_timestamp(sent_at, out);
    out.extend_from_slice(b"\",\"writeKey\":");
    write_json(out, write_key);
    out.push(b'}');
}

/// Bytes a batch envelope adds around its messages, not counting the commas between them.
pub fn envelope_overhead(write_key: &str) -> usize {
    let mut out = Vec::new();
    write_batch([], SystemTime::UNIX_EPOCH, write_key, &mut out);
    out.len()
}

/// Serialises a JSON-able value into `out`.
fn write_json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    // Writing to a Vec cannot fail, and serde_json::Value and strings always serialise.
    let _ = serde_json::to_writer(out, value);
}

/// Writes the members of one JSON object, tracking the commas.
struct ObjectWriter<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> ObjectWriter<'a> {
    fn open(out: &'a mut Vec<u8>) -> ObjectWriter<'a> {
        out.push(b'{');
        ObjectWriter { out, first: true }
    }

    fn key(&mut self, name: &str) {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        write_json(self.out, name);
        self.out.push(b':');
    }

    fn optional_str(&mut self, name: &str, value: Option<&str>) {
        if let Some(value) = value {
            self.key(name);
            write_json(self.out, value);
        }
    }

    fn optional_value(&mut self, name: &str, value: &Value) {
        if !value.is_null() {
            self.key(name);
            write_json(self.out, value);
        }
    }

    fn close(self) {
        self.out.push(b'}');
    }
}
