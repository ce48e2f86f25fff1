//! Integration tests of the `trackway` client against a scripted fake of the Tracking API on a
//! loopback port.

mod batching;
mod lifecycle;
mod limits;
mod retries;
mod support;
mod wire;
