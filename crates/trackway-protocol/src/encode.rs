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

use crate::json::{ObjectWriter, write_map, write_str, write_value};
use crate::message::{Common, Message};
use crate::object::{Form, Object};
use crate::time::write_timestamp;

/// What the encoder adds to every message it writes.
#[derive(Debug, Clone, Default)]
pub struct EncodeOptions {
    library: Option<Vec<u8>>,
    default_context: Map<String, Value>,
    /// [`Footprint`] of what the default context and the library may add to a message.
    added: Tally,
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
            write_value(
                &mut bytes,
                &serde_json::json!({ "name": name, "version": version }),
            );
            bytes
        });
        let mut added = Tally::default();
        added.member("context");
        added.fixed(2);
        for (name, value) in &default_context {
            added.member(name);
            added.value(value);
        }
        if let Some(library) = &library {
            added.member("library");
            added.fixed(library.len());
        }
        // Only the JSON sizes count: the options' memory is not the message's.
        added.heap = 0;
        EncodeOptions {
            library,
            default_context,
            added,
        }
    }
}

/// What a message will cost once encoded, found by walking it without writing anything: a
/// bound on its JSON size, an estimate of that size, and the heap memory it holds now.
///
/// A client can check the size limit and reserve memory at the call, and leave the encoding
/// to a background thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footprint {
    /// No encoding of the message with these options is longer than this: every string byte
    /// is counted as the six of a `\u00XX` escape, every number at its longest.
    pub max_json: usize,
    /// The encoded size if no string needs escaping (numbers estimated): close enough to
    /// batch by.
    pub json: usize,
    /// Bytes the message's strings, maps and arrays hold on the heap, allocator headers
    /// included (an estimate).
    pub heap: usize,
}

/// The [`Footprint`] of `message` as [`encode_message`] would write it with `options`.
/// `extra_id` adds a `messageId` of that length, for a message whose id will be filled in
/// when it is encoded.
pub fn footprint(message: &Message, options: &EncodeOptions, extra_id: Option<usize>) -> Footprint {
    let mut t = Tally::default();
    t.fixed(2);
    t.member("type");
    t.str(message.type_name());
    let common = message.common();
    if let Some(id) = &common.message_id {
        t.member("messageId");
        t.string(id);
    } else if let Some(len) = extra_id {
        t.member("messageId");
        t.fixed(len + 2);
    }
    if common.timestamp.is_some() {
        t.member("timestamp");
        t.fixed(MAX_TIMESTAMP_JSON);
    }
    if let Message::Custom(m) = message
        && let crate::Kind::Other(kind) = &m.kind
    {
        t.heap += heap_of(kind.capacity());
    }
    visit_fields(message, &mut t);
    // The message's own context is written member by member, merged with the options'.
    if let Some(context) = &common.context {
        t.value(context);
    }
    t.add(&options.added);
    if let Some(integrations) = &common.integrations {
        t.member("integrations");
        t.map(integrations);
    }
    Footprint {
        max_json: t.max,
        json: t.json,
        heap: t.heap,
    }
}

/// The longest `timestamp` value, quotes included (a year beyond 9999 takes more digits).
const MAX_TIMESTAMP_JSON: usize = 40;

/// Running sums behind a [`Footprint`].
#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    max: usize,
    json: usize,
    heap: usize,
}

impl Tally {
    fn fixed(&mut self, n: usize) {
        self.fixed_both(n, n);
    }

    fn fixed_both(&mut self, max: usize, json: usize) {
        self.max += max;
        self.json += json;
    }

    fn add(&mut self, other: &Tally) {
        self.max += other.max;
        self.json += other.json;
        self.heap += other.heap;
    }

    /// A JSON string's size, without its heap.
    fn str(&mut self, s: &str) {
        self.fixed_both(s.len() * 6 + 2, s.len() + 2);
    }

    /// An owned string: its JSON and its allocation.
    fn string(&mut self, s: &String) {
        self.str(s);
        self.heap += heap_of(s.capacity());
    }

    /// `"name":` and the comma before it (counted for the first member too).
    fn member(&mut self, name: &str) {
        self.str(name);
        self.fixed(2);
    }

    fn map(&mut self, map: &Map<String, Value>) {
        self.fixed(2);
        self.heap += heap_of(map.len() * MAP_ENTRY_BYTES);
        for (name, value) in map {
            self.str(name);
            self.heap += heap_of(name.capacity());
            self.fixed(2);
            self.value(value);
        }
    }

    fn value(&mut self, value: &Value) {
        match value {
            Value::Null => self.fixed(4),
            Value::Bool(_) => self.fixed(5),
            Value::Number(n) => {
                let digits = |v: u64| v.checked_ilog10().unwrap_or(0) as usize + 1;
                let json = match (n.as_u64(), n.as_i64()) {
                    (Some(v), _) => digits(v),
                    (None, Some(v)) => digits(v.unsigned_abs()) + 1,
                    // Floats: the shortest round-trip form; 24 is the longest.
                    (None, None) => 18,
                };
                self.fixed_both(MAX_NUMBER_JSON, json);
            }
            Value::String(s) => self.string(s),
            Value::Array(items) => {
                self.fixed(2);
                self.heap += heap_of(items.capacity() * std::mem::size_of::<Value>());
                for item in items {
                    self.fixed(1);
                    self.value(item);
                }
            }
            Value::Object(map) => self.map(map),
        }
    }
}

/// The longest number serde_json writes (`-2.2250738585072014e-308`).
const MAX_NUMBER_JSON: usize = 24;

/// Heap bytes per map entry: the key and value slots and the index (an estimate that holds
/// for both of serde_json's map implementations).
const MAP_ENTRY_BYTES: usize = std::mem::size_of::<(String, Value)>() + 16;

/// What an allocation of `bytes` takes from a typical allocator: a header, rounded to 16.
fn heap_of(bytes: usize) -> usize {
    if bytes == 0 {
        0
    } else {
        (bytes + 8).next_multiple_of(16).max(32)
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
    encode_message_with_id(message, None, options, out)
}

/// [`encode_message`], writing `id` as the `messageId` when the message has none (a client
/// filling in a generated id need not allocate a `String` for it).
pub fn encode_message_with_id(
    message: &Message,
    id: Option<&str>,
    options: &EncodeOptions,
    out: &mut Vec<u8>,
) -> Option<Range<usize>> {
    let mut obj = ObjectWriter::open(out);
    obj.key("type");
    write_str(obj.out, message.type_name());
    let common = message.common();
    let id_range = common.message_id.as_deref().or(id).map(|id| {
        obj.key("messageId");
        let start = obj.out.len();
        write_str(obj.out, id);
        start..obj.out.len()
    });
    if let Some(at) = common.timestamp {
        obj.key("timestamp");
        obj.out.push(b'"');
        write_timestamp(at, obj.out);
        obj.out.push(b'"');
    }
    visit_fields(message, &mut obj);
    write_context(&mut obj, common, options);
    if let Some(integrations) = &common.integrations {
        obj.key("integrations");
        write_map(obj.out, integrations);
    }
    obj.close();
    id_range
}

/// Receives the fields that depend on a message's type, in wire order.
trait Fields {
    /// A string field, skipped when `None`.
    fn text(&mut self, name: &str, value: Option<&String>);
    /// An object field, skipped when absent.
    fn object(&mut self, name: &str, value: &Object);
    /// A custom message's own fields, written as members of the message.
    fn members(&mut self, fields: &Map<String, Value>);
}

/// The identity fields and each type's own fields, in the order the encoder writes them.
/// [`encode_message`] and [`footprint`] both walk a message through this, so the bound
/// cannot miss a field the encoder writes.
fn visit_fields(message: &Message, fields: &mut impl Fields) {
    let common = message.common();
    fields.text("userId", common.user_id.as_ref());
    fields.text("anonymousId", common.anonymous_id.as_ref());
    match message {
        Message::Identify(m) => fields.object("traits", &m.traits),
        Message::Track(m) => {
            fields.text("event", Some(&m.event));
            fields.object("properties", &m.properties);
        }
        Message::Page(m) => {
            fields.text("name", m.name.as_ref());
            fields.text("category", m.category.as_ref());
            fields.object("properties", &m.properties);
        }
        Message::Screen(m) => {
            fields.text("name", m.name.as_ref());
            fields.text("category", m.category.as_ref());
            fields.object("properties", &m.properties);
        }
        Message::Group(m) => {
            fields.text("groupId", Some(&m.group_id));
            fields.object("traits", &m.traits);
        }
        Message::Alias(m) => fields.text("previousId", Some(&m.previous_id)),
        Message::Custom(m) => fields.members(&m.fields),
    }
}

impl Fields for ObjectWriter<'_> {
    fn text(&mut self, name: &str, value: Option<&String>) {
        if let Some(value) = value {
            self.key(name);
            write_str(self.out, value);
        }
    }

    fn object(&mut self, name: &str, value: &Object) {
        match value.form() {
            Form::Absent => {}
            Form::Value(value) => {
                self.key(name);
                write_value(self.out, value);
            }
            Form::Text(text) => {
                self.key(name);
                self.out.extend_from_slice(text.as_bytes());
            }
        }
    }

    fn members(&mut self, fields: &Map<String, Value>) {
        for (name, value) in fields {
            self.member(name, value);
        }
    }
}

impl Fields for Tally {
    fn text(&mut self, name: &str, value: Option<&String>) {
        if let Some(value) = value {
            self.member(name);
            self.string(value);
        }
    }

    fn object(&mut self, name: &str, value: &Object) {
        match value.form() {
            Form::Absent => {}
            Form::Value(value) => {
                self.member(name);
                Tally::value(self, value);
            }
            // Exact: the text is what is written.
            Form::Text(text) => {
                self.member(name);
                self.fixed(text.len());
                self.heap += heap_of(text.len());
            }
        }
    }

    fn members(&mut self, fields: &Map<String, Value>) {
        // `map` adds two braces too many: harmless in a bound.
        self.map(fields);
    }
}

fn write_context(obj: &mut ObjectWriter<'_>, common: &Common, options: &EncodeOptions) {
    let own = match &common.context {
        Some(Value::Object(map)) => Some(map),
        _ => None,
    };
    if own.is_none_or(Map::is_empty)
        && options.default_context.is_empty()
        && options.library.is_none()
    {
        return;
    }
    obj.key("context");
    let mut context = ObjectWriter::open(obj.out);
    // Whether either context names a library, noted while writing (a scan of names already
    // being visited is cheaper than a hashed lookup).
    let mut named_library = false;
    for (name, value) in own.into_iter().flatten() {
        named_library |= name == "library";
        context.member(name, value);
    }
    for (name, value) in &options.default_context {
        named_library |= name == "library";
        if !own.is_some_and(|map| map.contains_key(name)) {
            context.member(name, value);
        }
    }
    if let Some(library) = options.library.as_deref().filter(|_| !named_library) {
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
    write_str(out, write_key);
    out.push(b'}');
}

/// Bytes a batch envelope adds around its messages, not counting the commas between them.
pub fn envelope_overhead(write_key: &str) -> usize {
    let mut out = Vec::new();
    write_batch([], SystemTime::UNIX_EPOCH, write_key, &mut out);
    out.len()
}
