//! Integration tests of the `trackway` client against a scripted fake of the Tracking API on a
//! loopback port.

#![expect(
    clippy::unwrap_used,
    reason = "a test fails loudly at the first surprise"
)]

mod answers;
mod batching;
mod compression;
mod deferred;
mod faults;
mod lifecycle;
mod limits;
mod logging;
mod reports;
mod retries;
mod spool;
mod support;
mod typed;
mod wire;
