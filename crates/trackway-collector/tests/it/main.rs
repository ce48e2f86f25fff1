//! Integration tests of the collector: the real server on a loopback port 0, real HTTP.

#![expect(
    clippy::unwrap_used,
    reason = "a test fails loudly at the first surprise"
)]

mod admin;
mod delivery;
mod delivery_contract;
mod durability;
mod end_to_end;
mod group;
mod ingest;
mod intercept;
mod postgres;
mod postgres_outages;
mod postgres_tls;
mod slow_clients;
mod store_contract;
mod store_postgres;
mod support;
mod web_mobile;
