//! The encoder thread: turns each batch of accepted messages into JSON and writes the body of
//! its first request, while the sender has the previous batch on the wire.
//!
//! Messages arrive encoded by the call, or as the caller built them when
//! [`crate::Builder::defer_encoding`] is on, which keeps the call itself to a few hundred
//! nanoseconds. Batches pass through in the order the worker hands them on, so message order
//! is kept.
//!
//! A batch whose encoded messages exceed one request (the worker batches by estimated size)
//! is cut into parts that fit; the body is written ahead for the first part only.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};
use trackway_protocol::EncodeOptions;

use crate::batch::{Encoded, Handed, Payload, Pending, Prepared, Slot, encode_into};
use crate::body::BodyWriter;
use crate::compression::Negotiation;
use crate::config::Validated;

/// Everything the encoder thread needs.
pub(crate) struct Encoder {
    options: EncodeOptions,
    writer: BodyWriter,
    negotiation: Arc<Negotiation>,
    /// Bytes of messages (commas included) that fit in one request beside the envelope.
    part_bytes: usize,
}

impl Encoder {
    pub(crate) fn new(config: &Validated, options: EncodeOptions) -> Encoder {
        Encoder {
            options,
            writer: BodyWriter::new(config),
            negotiation: Arc::clone(&config.negotiation),
            part_bytes: config.message_bytes_per_request(),
        }
    }

    /// Encodes batches until the worker goes away.
    pub(crate) fn run(mut self, batches: &Receiver<Handed>, prepared: &Sender<Prepared>) {
        let mut capacity = (0, 0);
        while let Ok(Handed { end, messages }) = batches.recv() {
            let batch = self.encode(messages, capacity.0);
            let parts = self.parts(&batch);
            let mut body = Vec::with_capacity(capacity.1);
            let mut encoding = self.negotiation.current();
            if let Some(first) = parts.front() {
                encoding = self
                    .writer
                    .write(&batch, first.clone(), encoding, &mut body);
            }
            capacity = (
                capacity.0.max(batch.bytes.len()),
                capacity.1.max(body.len()),
            );
            let written = Prepared {
                end,
                batch,
                parts,
                body,
                encoding,
                written_at: Instant::now(),
            };
            // The worker keeps a receiver to take unsent batches back at a shutdown
            // deadline, so this fails only once the worker is gone too.
            if prepared.send(written).is_err() {
                return;
            }
        }
    }

    /// Encodes each message into one buffer, filling in generated messageIds. The messages
    /// are dropped here, off the callers' threads.
    fn encode(&self, pending: Vec<Pending>, capacity: usize) -> Encoded {
        let mut batch = Encoded {
            bytes: Vec::with_capacity(capacity),
            slots: Vec::with_capacity(pending.len()),
        };
        for Pending { payload, cost } in pending {
            let start = batch.bytes.len();
            let id = match payload {
                Payload::Encoded { bytes, id } => {
                    batch.bytes.extend_from_slice(&bytes);
                    start + id.start..start + id.end
                }
                Payload::Message {
                    message,
                    generated_id,
                    ..
                } => encode_into(&message, generated_id, &self.options, &mut batch.bytes),
            };
            batch.slots.push(Slot {
                bytes: start..batch.bytes.len(),
                id,
                cost,
            });
        }
        batch
    }

    /// Cuts `batch` into runs of messages that fit one request each. Every message fits
    /// alone: the call refused anything over the per-message limit, which is below this.
    fn parts(&self, batch: &Encoded) -> VecDeque<Range<usize>> {
        let mut parts = VecDeque::new();
        let mut start = 0;
        let mut bytes = 0;
        for (i, slot) in batch.slots.iter().enumerate() {
            let size = slot.bytes.len() + 1;
            if i > start && bytes + size > self.part_bytes {
                parts.push_back(start..i);
                start = i;
                bytes = 0;
            }
            bytes += size;
        }
        if start < batch.slots.len() {
            parts.push_back(start..batch.slots.len());
        }
        parts
    }
}
