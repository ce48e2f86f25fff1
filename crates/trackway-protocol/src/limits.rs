//! The size limits of the Tracking API, as Segment documents and enforces them.
//!
//! Segment's own libraries count kilobytes as 1024 bytes (analytics-java's `MSG_MAX_SIZE`,
//! analytics-node's `MAX_EVENT_SIZE_IN_KB`), so these do too.

/// Largest encoded message the API accepts: 32 KB.
pub const MAX_MESSAGE_BYTES: usize = 32 * 1024;

/// Largest request body the API accepts, batch envelope included: 500 KB.
pub const MAX_REQUEST_BYTES: usize = 500 * 1024;

/// Most messages one batch request may carry.
pub const MAX_BATCH_MESSAGES: usize = 2500;

/// A `messageId` must be shorter than this many characters.
pub const MESSAGE_ID_CHAR_LIMIT: usize = 100;
