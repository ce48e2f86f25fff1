//! The caller's cost of one call: validate, stamp, encode (unless deferred), reserve budget,
//! enqueue.
//!
//! The client sends to a null transport that acknowledges at once, so the worker and sender
//! threads run as they would against a fast server (and share the machine's cores with the
//! callers, as they would in production). Run: `cargo bench -p trackway --bench enqueue`.

use std::sync::LazyLock;
use std::time::Duration;

use divan::Bencher;
use serde_json::json;
use trackway::transport::{Request, Response, Transport, TransportError};
use trackway::{Analytics, Track};

fn main() {
    divan::main();
}

/// Acknowledges every request without reading it.
struct NullSink;

impl Transport for NullSink {
    fn send(&self, _: &Request<'_>) -> Result<Response, TransportError> {
        Ok(Response::new(200, ""))
    }
}

/// One client for all benches, with a budget large enough that no call is refused.
static CLIENT: LazyLock<Analytics> = LazyLock::new(|| {
    Analytics::builder("bench-write-key")
        .transport(NullSink)
        .max_queue_bytes(1 << 30)
        .build()
        .expect("client")
});

/// `track(user, event, json!({...3 properties}))`, building the properties included: what a
/// caller's line of code costs.
#[divan::bench(threads = [1, 2], sample_count = 200, sample_size = 500)]
fn track_three_properties() {
    let result = CLIENT.track(
        divan::black_box("user-1234"),
        "Order Completed",
        json!({"revenue": 42.5, "currency": "EUR", "items": 3}),
    );
    debug_assert!(result.is_ok());
    divan::black_box(result).ok();
}

/// The same three properties as a type of the caller's own.
#[derive(serde::Serialize)]
struct OrderProperties {
    revenue: f64,
    currency: &'static str,
    items: u32,
}

/// `track(user, event, OrderProperties {...})`: [`track_three_properties`] with a typed
/// value, written to JSON straight from the struct (no `Value` tree).
#[divan::bench(threads = [1, 2], sample_count = 200, sample_size = 500)]
fn track_three_typed_properties() {
    track_typed_with(&CLIENT);
}

/// [`track_three_properties`] on the deferring client: the `Value` baseline of
/// [`track_three_typed_properties_deferred`] in the same run.
#[divan::bench(threads = [1, 2], sample_count = 200, sample_size = 500)]
fn track_three_properties_deferred() {
    let result = DEFERRING.track(
        divan::black_box("user-1234"),
        "Order Completed",
        json!({"revenue": 42.5, "currency": "EUR", "items": 3}),
    );
    debug_assert!(result.is_ok());
    divan::black_box(result).ok();
}

/// [`track_three_typed_properties`] on the deferring client.
#[divan::bench(threads = [1, 2], sample_count = 200, sample_size = 500)]
fn track_three_typed_properties_deferred() {
    track_typed_with(&DEFERRING);
}

fn track_typed_with(client: &Analytics) {
    let result = client.track(
        divan::black_box("user-1234"),
        "Order Completed",
        OrderProperties {
            revenue: divan::black_box(42.5),
            currency: "EUR",
            items: 3,
        },
    );
    debug_assert!(result.is_ok());
    divan::black_box(result).ok();
}

/// `enqueue` of a prebuilt track with three properties: the client's share alone.
#[divan::bench(threads = [1, 2], sample_count = 200, sample_size = 500)]
fn enqueue_prebuilt(bencher: Bencher) {
    enqueue_prebuilt_with(bencher, &CLIENT);
}

/// Times `client.enqueue` of a track with three properties, built outside the timing.
fn enqueue_prebuilt_with(bencher: Bencher, client: &Analytics) {
    bencher
        .with_inputs(|| {
            Track::new("Order Completed")
                .user_id("user-1234")
                .properties(json!({"revenue": 42.5, "currency": "EUR", "items": 3}))
        })
        .bench_values(|message| divan::black_box(client.enqueue(message)).ok());
}

/// The same client with [`trackway::Builder::defer_encoding`]: the encoder thread writes
/// the message, the call only checks, sizes and queues it.
static DEFERRING: LazyLock<Analytics> = LazyLock::new(|| {
    Analytics::builder("bench-write-key")
        .transport(NullSink)
        .max_queue_bytes(1 << 30)
        .defer_encoding(true)
        .build()
        .expect("client")
});

/// `enqueue` of a prebuilt track with three properties, encoding deferred.
#[divan::bench(threads = [1, 2], sample_count = 200, sample_size = 500)]
fn enqueue_prebuilt_deferred(bencher: Bencher) {
    enqueue_prebuilt_with(bencher, &DEFERRING);
}

/// The same client with a spool ([`trackway::Builder::spool_dir`]): the call copies the
/// encoded message into a mapped segment file instead of queueing it in memory. The spool is
/// in the build's temporary directory (on the same disk as the build).
static SPOOLING: LazyLock<Analytics> = LazyLock::new(|| {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("enqueue-bench-spool");
    // A spool left by an interrupted run would be delivered first: start empty.
    let _ = std::fs::remove_dir_all(&dir);
    Analytics::builder("bench-write-key")
        .transport(NullSink)
        .spool_dir(dir)
        .expect("spool directory")
        .spool_max_bytes(1 << 30)
        .build()
        .expect("client")
});

/// `enqueue` of a prebuilt track with three properties, written into a spool.
#[divan::bench(threads = [1, 2], sample_count = 200, sample_size = 500)]
fn enqueue_prebuilt_spooled(bencher: Bencher) {
    enqueue_prebuilt_with(bencher, &SPOOLING);
}

/// Keeps the sender busy-free between benches: drain what the previous one queued.
#[divan::bench]
fn flush_between() {
    let _ = CLIENT.flush(Duration::from_secs(10));
    let _ = DEFERRING.flush(Duration::from_secs(10));
    let _ = SPOOLING.flush(Duration::from_secs(10));
}

/// Baseline for ratios in the same run: build the same message as a `json!` value and
/// serialise it, which is what a naive client does before it even queues anything.
#[divan::bench(threads = [1, 2], sample_count = 200, sample_size = 500)]
fn baseline_serialize_json_value() {
    let message = json!({
        "type": "track",
        "userId": divan::black_box("user-1234"),
        "event": "Order Completed",
        "properties": {"revenue": 42.5, "currency": "EUR", "items": 3},
        "messageId": "8f1c8a47-3e5b-4c1e-9d3a-2b7f0e6c5a91",
        "timestamp": "2026-11-26T12:00:00.000Z",
        "context": {"library": {"name": "trackway", "version": "0.1.0"}},
    });
    divan::black_box(serde_json::to_vec(&message)).ok();
}
