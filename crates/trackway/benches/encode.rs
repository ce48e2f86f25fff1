//! What the client's background work costs per event: encoding a message (at the call by
//! default, on the encoder thread with `defer_encoding`), sizing it without encoding (the
//! deferred call's `footprint`), and writing plus compressing (gzip or zstd) a batch body (the
//! encoder thread).
//!
//! Messages are the realistic samples of `trackway-samples` with fresh ids. The baseline
//! in the same run serialises the same messages as `serde_json::Value`s, as a naive client
//! would. Run: `cargo bench -p trackway --bench encode`.

use std::io::Write;
use std::sync::LazyLock;
use std::time::SystemTime;

use divan::Bencher;
use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::Value;
use trackway::Message;
use trackway_protocol::{EncodeOptions, encode_message, footprint, write_batch};
use trackway_samples as samples;

fn main() {
    divan::main();
}

/// Messages per batch: the client's default `flush_at`.
const BATCH: usize = 250;

/// The sample messages as JSON values, with messageIds.
static VALUES: LazyLock<Vec<Value>> = LazyLock::new(|| {
    let templates: Vec<&str> = samples::templates().collect();
    let mut rng = fastrand::Rng::with_seed(7);
    (0..BATCH)
        .filter_map(|n| samples::fill(templates[n % templates.len()], &mut rng).ok())
        .collect()
});

/// The same messages as the library's types.
static MESSAGES: LazyLock<Vec<Message>> = LazyLock::new(|| {
    VALUES
        .iter()
        .filter_map(|v| Message::from_json(v.clone()).ok())
        .collect()
});

static OPTIONS: LazyLock<EncodeOptions> =
    LazyLock::new(|| EncodeOptions::new(Some(("trackway", "0.1.0")), serde_json::Map::new()));

/// Each batch's messages encoded back to back, as the encoder thread holds them.
static ENCODED: LazyLock<Vec<Vec<u8>>> = LazyLock::new(|| {
    MESSAGES
        .iter()
        .map(|m| {
            let mut out = Vec::new();
            encode_message(m, &OPTIONS, &mut out);
            out
        })
        .collect()
});

/// `encode_message` of one batch's messages into a reused buffer; per message = time / 250.
#[divan::bench(sample_count = 100)]
fn encode_messages(bencher: Bencher) {
    let mut out = Vec::with_capacity(256 * 1024);
    bencher
        .counter(divan::counter::ItemsCount::new(MESSAGES.len()))
        .bench_local(|| {
            out.clear();
            for message in MESSAGES.iter() {
                divan::black_box(encode_message(message, &OPTIONS, &mut out));
            }
        });
}

/// `footprint` of the same messages: what a deferred call spends sizing one.
#[divan::bench(sample_count = 100)]
fn footprint_messages(bencher: Bencher) {
    bencher
        .counter(divan::counter::ItemsCount::new(MESSAGES.len()))
        .bench_local(|| {
            for message in MESSAGES.iter() {
                divan::black_box(footprint(message, &OPTIONS, Some(36)));
            }
        });
}

/// Baseline: `serde_json::to_writer` of the same messages as `Value`s.
#[divan::bench(sample_count = 100)]
fn baseline_serialize_values(bencher: Bencher) {
    let mut out = Vec::with_capacity(256 * 1024);
    bencher
        .counter(divan::counter::ItemsCount::new(VALUES.len()))
        .bench_local(|| {
            out.clear();
            for value in VALUES.iter() {
                divan::black_box(serde_json::to_writer(&mut out, value)).ok();
            }
        });
}

/// The envelope around one batch of encoded messages, then gzip at `level` (0: none), as
/// the encoder thread writes a request body. Prints the body's bytes per event once.
#[divan::bench(args = [0, 1, 2, 6], sample_count = 50)]
#[expect(
    clippy::print_stderr,
    reason = "the size is a result; divan owns stdout"
)]
fn batch_body(bencher: Bencher, level: u32) {
    let mut raw = Vec::with_capacity(256 * 1024);
    let mut body = Vec::with_capacity(256 * 1024);
    let write = |raw: &mut Vec<u8>, body: &mut Vec<u8>| {
        raw.clear();
        write_batch(
            ENCODED.iter().map(Vec::as_slice),
            SystemTime::now(),
            "bench-write-key",
            raw,
        );
        if level > 0 {
            body.clear();
            let mut gz = GzEncoder::new(&mut *body, Compression::new(level));
            gz.write_all(raw).ok();
            gz.finish().ok();
        }
    };
    write(&mut raw, &mut body);
    let size = if level > 0 { body.len() } else { raw.len() };
    eprintln!(
        "batch_body level {level}: {:.1} bytes per event",
        size as f64 / ENCODED.len() as f64
    );
    bencher
        .counter(divan::counter::ItemsCount::new(ENCODED.len()))
        .bench_local(|| write(&mut raw, &mut body));
}

/// [`batch_body`] with zstd at level 1, as the client compresses for a server that takes
/// zstd: the same envelope, one compression context kept from body to body. Prints the
/// body's bytes per event once.
#[divan::bench(sample_count = 50)]
#[expect(
    clippy::print_stderr,
    reason = "the size is a result; divan owns stdout"
)]
fn batch_body_zstd(bencher: Bencher) {
    let mut raw = Vec::with_capacity(256 * 1024);
    let mut body = Vec::with_capacity(256 * 1024);
    let Ok(mut zstd) = zstd::bulk::Compressor::new(1) else {
        eprintln!("batch_body_zstd: no zstd context");
        return;
    };
    let mut write = |raw: &mut Vec<u8>, body: &mut Vec<u8>| {
        raw.clear();
        write_batch(
            ENCODED.iter().map(Vec::as_slice),
            SystemTime::now(),
            "bench-write-key",
            raw,
        );
        body.clear();
        body.reserve(zstd::zstd_safe::compress_bound(raw.len()));
        zstd.compress_to_buffer(&raw[..], body).ok();
    };
    write(&mut raw, &mut body);
    eprintln!(
        "batch_body_zstd level 1: {:.1} bytes per event",
        body.len() as f64 / ENCODED.len() as f64
    );
    bencher
        .counter(divan::counter::ItemsCount::new(ENCODED.len()))
        .bench_local(|| write(&mut raw, &mut body));
}
