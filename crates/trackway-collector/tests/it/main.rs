//! Integration tests of the collector: the real server on a loopback port 0, real HTTP.

#![expect(
    clippy::unwrap_used,
    reason = "a test fails loudly at the first surprise"
)]

mod admin;
mod delivery;
mod durability;
mod end_to_end;
mod ingest;
mod slow_clients;
mod support;
mod web_mobile;
