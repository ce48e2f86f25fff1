//! A batch and the forms it takes on its way through the pipeline (`worker.rs`'s note):
//! accepted messages ([`Pending`]) the worker gathers and hands on ([`Handed`]), encoded back
//! to back ([`Encoded`]) and cut into request-sized parts with the first body written
//! ([`Prepared`]) by the encoder, then sent and settled by the sender.
//!
//! These types are what the threads pass each other, so they live apart from every thread:
//! each module imports them from here, and none reaches into another's for them.

use std::collections::VecDeque;
use std::ops::Range;
use std::time::{Instant, SystemTime};

use trackway_protocol::{Checked, EncodeOptions, Message, encode_message_with_id};

/// An accepted message on its way to the encoder thread.
#[derive(Debug)]
pub(crate) struct Pending {
    pub(crate) payload: Payload,
    /// Bytes reserved in the budget.
    pub(crate) cost: u64,
}

/// A message as the call left it.
#[derive(Debug)]
pub(crate) enum Payload {
    /// As the caller built it, for the encoder thread to write
    /// ([`crate::Builder::defer_encoding`]).
    Message {
        /// Boxed: the queues move every entry a few times, and a message is large.
        message: Box<Message>,
        /// The random bits of the `messageId` to fill in, if the message has none.
        generated_id: Option<u128>,
        /// Its estimated encoded size ([`trackway_protocol::Footprint::json`]).
        estimated_json: usize,
    },
    /// Written by the call, with where its `messageId` value sits in the bytes.
    Encoded { bytes: Box<[u8]>, id: Range<usize> },
}

impl Pending {
    /// The encoded size, or its estimate before encoding: what batches are cut by.
    pub(crate) fn json_size(&self) -> usize {
        match &self.payload {
            Payload::Encoded { bytes, .. } => bytes.len(),
            Payload::Message { estimated_json, .. } => *estimated_json,
        }
    }

    /// The `messageId` the message has or will have.
    pub(crate) fn message_id(&self) -> String {
        match &self.payload {
            Payload::Encoded { bytes, id } => message_id_at(bytes, id),
            Payload::Message {
                message,
                generated_id,
                ..
            } => match (&message.common().message_id, generated_id) {
                (Some(id), _) => id.clone(),
                (None, Some(bits)) => uuid_str(*bits, &mut [0; UUID_LEN]).to_owned(),
                (None, None) => String::new(),
            },
        }
    }
}

/// Gives the message a `timestamp` when it has none (and no raw one of its own, which
/// `checked` tells), and returns the random bits of the `messageId` to fill in when it is
/// encoded, when it has none.
pub(crate) fn fill_defaults(message: &mut Message, checked: Checked) -> Option<u128> {
    let common = message.common_mut();
    if common.timestamp.is_none() && !checked.has_timestamp_field {
        common.timestamp = Some(SystemTime::now());
    }
    common.message_id.is_none().then(|| fastrand::u128(..))
}

/// Length of a hyphenated UUID.
pub(crate) const UUID_LEN: usize = 36;

/// Appends `message` encoded to `out`, with the messageId made of `generated_id` if it has
/// none; returns where the messageId value sits in `out`. The one place both the call and
/// the encoder thread encode.
pub(crate) fn encode_into(
    message: &Message,
    generated_id: Option<u128>,
    options: &EncodeOptions,
    out: &mut Vec<u8>,
) -> Range<usize> {
    let mut buffer = [0; UUID_LEN];
    let generated = generated_id.map(|bits| uuid_str(bits, &mut buffer));
    encode_message_with_id(message, generated, options, out).unwrap_or(0..0)
}

/// The `messageId` whose JSON string value sits at `at` in `bytes`, unescaped.
fn message_id_at(bytes: &[u8], at: &Range<usize>) -> String {
    serde_json::from_slice(&bytes[at.clone()]).unwrap_or_default()
}

/// The hyphenated UUID (version 4 bits set) made of `bits`, written into `buffer`.
pub(crate) fn uuid_str(bits: u128, buffer: &mut [u8; UUID_LEN]) -> &str {
    uuid::Builder::from_random_bytes(bits.to_le_bytes())
        .into_uuid()
        .hyphenated()
        .encode_lower(buffer)
}

/// One batch's messages, encoded back to back into one buffer.
#[derive(Debug, Default)]
pub(crate) struct Encoded {
    pub(crate) bytes: Vec<u8>,
    pub(crate) slots: Vec<Slot>,
}

/// Where one message of an [`Encoded`] batch sits.
#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) bytes: Range<usize>,
    /// The `messageId` value (a JSON string) within `bytes` of the batch.
    pub(crate) id: Range<usize>,
    pub(crate) cost: u64,
}

impl Encoded {
    /// The encoded messages of `part` (a range of slots).
    pub(crate) fn messages(&self, part: Range<usize>) -> impl Iterator<Item = &[u8]> {
        self.slots[part]
            .iter()
            .map(|slot| &self.bytes[slot.bytes.clone()])
    }

    /// The `messageId` of `slot`, one of this batch's, unescaped.
    pub(crate) fn message_id(&self, slot: &Slot) -> String {
        message_id_at(&self.bytes, &slot.id)
    }
}

/// A batch handed to the encoder, and where it ends among the messages received (the first
/// message is 0): the number the sender reports it by.
pub(crate) struct Handed {
    pub(crate) end: u64,
    pub(crate) messages: Vec<Pending>,
}

/// A batch, encoded, cut into parts that each fit one request, and the body of the first
/// part's first request.
pub(crate) struct Prepared {
    /// The batch's number in the worker's order ([`Handed`]), for the sender's
    /// report.
    pub(crate) end: u64,
    pub(crate) batch: Encoded,
    pub(crate) parts: VecDeque<Range<usize>>,
    pub(crate) body: Vec<u8>,
    /// The encoding `body` was written in.
    pub(crate) encoding: crate::compression::BodyEncoding,
    pub(crate) written_at: Instant,
}

#[cfg(test)]
impl Prepared {
    /// For tests: a batch of `count` messages `{}` of 64 bytes' cost each, ending at `end`.
    pub(crate) fn tiny(end: u64, count: usize) -> Prepared {
        let mut batch = Encoded::default();
        for _ in 0..count {
            let start = batch.bytes.len();
            batch.bytes.extend_from_slice(b"{}");
            batch.slots.push(Slot {
                bytes: start..batch.bytes.len(),
                id: 0..0,
                cost: 64,
            });
        }
        Prepared {
            end,
            parts: std::iter::once(0..count).collect(),
            batch,
            body: Vec::new(),
            encoding: crate::compression::BodyEncoding::Identity,
            written_at: Instant::now(),
        }
    }
}
