//! Integration tests of the `trackway` binary against a scripted fake of the Tracking API.

mod send;
