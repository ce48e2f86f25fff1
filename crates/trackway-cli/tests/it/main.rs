//! Integration tests of the `trackway` binary against a scripted fake of the Tracking API.

#![expect(
    clippy::unwrap_used,
    reason = "a test fails loudly at the first surprise"
)]

mod bench;
mod demo;
mod flags;
mod group;
mod import;
mod logging;
mod readme;
mod replay;
mod secrets;
mod send;
mod serve;
mod spool;
mod stdout;
