//! Which encoding request bodies go out in, and how the client learns that its host takes
//! zstd.
//!
//! Segment takes gzip only; our collector takes zstd too and says so on every answer with
//! `Accept-Encoding: zstd, gzip` (RFC 7694, the header by which a server lists the request
//! encodings it takes). With [`Compression::Auto`], the default, the client therefore starts
//! with gzip and moves to zstd once an answer from its host lists it:
//!
//! ```text
//!             an answer lists zstd
//!    gzip ─────────────────────────────▶ zstd
//!      ▲                                   │
//!      └───────────────────────────────────┘
//!        an answer lists encodings without zstd, or a 415 to a zstd body (that body
//!        goes out again in gzip at once, and answers listing zstd are then ignored
//!        for ZSTD_PAUSE_AFTER_REFUSAL)
//! ```
//!
//! A 415 comes from an instance that does not take zstd (an older one behind the same load
//! balancer): the body it refused goes out again in gzip, so nothing is lost or rejected,
//! and zstd waits out a pause before an answer listing it counts again. An answer without
//! the header (a proxy's error page) changes nothing.
//!
//! The state is shared by the encoder thread, which writes each batch's first body ahead,
//! and the sender thread, which reads the answers: a body written ahead in an encoding the
//! sender has since left is written again.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::transport::Response;

/// How long zstd stays off after a server refused it with a 415. Long enough that a fleet
/// in the middle of a rolling upgrade costs at most one gzip resend per batch every few
/// minutes, short enough that a finished upgrade is noticed within the hour.
pub(crate) const ZSTD_PAUSE_AFTER_REFUSAL: Duration = Duration::from_secs(10 * 60);

/// How request bodies are compressed ([`crate::Builder::compression`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Compression {
    /// gzip, and zstd once an answer from the host lists it in `Accept-Encoding` (our
    /// collector does; Segment does not, so the client keeps gzip there). A 415 to a zstd
    /// body sends it again in gzip and goes back to gzip for a while. The default. Without
    /// the crate's `zstd` feature, always gzip.
    #[default]
    Auto,
    /// Always gzip, at [`crate::Builder::gzip_level`].
    Gzip,
    /// Always zstd, for a server known to take it, whether or not it says so. A 415 to a
    /// zstd body still sends it again in gzip, and the next bodies too for a while. Needs
    /// the crate's `zstd` feature (on by default).
    Zstd,
    /// No compression.
    None,
}

/// The encoding of one request body, and its `Content-Encoding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyEncoding {
    Identity,
    Gzip,
    Zstd,
}

impl BodyEncoding {
    /// The `Content-Encoding` header's value, if the body has one.
    pub(crate) fn header(self) -> Option<&'static str> {
        match self {
            BodyEncoding::Identity => None,
            BodyEncoding::Gzip => Some("gzip"),
            BodyEncoding::Zstd => Some("zstd"),
        }
    }
}

/// True when this build can write zstd (the `zstd` feature).
pub(crate) const ZSTD_BUILT: bool = cfg!(feature = "zstd");

/// What the client knows of its host's encodings. Shared between threads.
#[derive(Debug)]
pub(crate) struct Negotiation {
    preference: Compression,
    /// An answer listed zstd, and no later answer listed encodings without it.
    listed: AtomicBool,
    /// When a server last refused zstd with a 415, in milliseconds since `epoch`, plus one;
    /// zero when none has.
    refused_at: AtomicU64,
    epoch: Instant,
}

/// What the sender does after an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Heard {
    /// Judge the answer as usual.
    Judge,
    /// The server refused the body's encoding (zstd): send it again, at once, in the
    /// encoding [`Negotiation::current`] now gives (gzip).
    SendAgain,
}

impl Negotiation {
    pub(crate) fn new(preference: Compression) -> Negotiation {
        Negotiation {
            preference,
            listed: AtomicBool::new(false),
            refused_at: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// The encoding of the next body.
    pub(crate) fn current(&self) -> BodyEncoding {
        match self.preference {
            Compression::None => BodyEncoding::Identity,
            Compression::Gzip => BodyEncoding::Gzip,
            Compression::Zstd if ZSTD_BUILT && !self.paused() => BodyEncoding::Zstd,
            Compression::Auto
                if ZSTD_BUILT && self.listed.load(Ordering::Relaxed) && !self.paused() =>
            {
                BodyEncoding::Zstd
            }
            Compression::Zstd | Compression::Auto => BodyEncoding::Gzip,
        }
    }

    /// Learns from `response`, the answer to a body sent in `sent`.
    pub(crate) fn heard(&self, response: &Response, sent: BodyEncoding) -> Heard {
        if response.status == 415 && sent == BodyEncoding::Zstd {
            self.listed.store(false, Ordering::Relaxed);
            let now = self.epoch.elapsed().as_millis() as u64;
            self.refused_at.store(now + 1, Ordering::Relaxed);
            tracing::warn!(
                "trackway: the server does not take zstd (415); sending in gzip, and trying \
                 zstd again in {ZSTD_PAUSE_AFTER_REFUSAL:?} at the earliest"
            );
            return Heard::SendAgain;
        }
        if let Some(accepted) = &response.accept_encoding {
            let zstd = lists_zstd(accepted);
            let before = self.listed.swap(zstd, Ordering::Relaxed);
            if zstd && !before && self.preference == Compression::Auto && !self.paused() {
                tracing::debug!("trackway: the server takes zstd; compressing with zstd");
            }
        }
        Heard::Judge
    }

    /// True within [`ZSTD_PAUSE_AFTER_REFUSAL`] of the last 415 to zstd.
    fn paused(&self) -> bool {
        match self.refused_at.load(Ordering::Relaxed) {
            0 => false,
            at => {
                let since = Duration::from_millis(at - 1);
                self.epoch.elapsed().saturating_sub(since) < ZSTD_PAUSE_AFTER_REFUSAL
            }
        }
    }
}

/// True when an `Accept-Encoding` value lists zstd with a non-zero weight.
fn lists_zstd(accepted: &str) -> bool {
    accepted.split(',').any(|entry| {
        let mut parts = entry.split(';');
        let coding = parts.next().unwrap_or_default().trim();
        let refused = parts.any(|p| {
            let p = p.trim();
            p.strip_prefix("q=")
                .or_else(|| p.strip_prefix("Q="))
                .and_then(|q| q.trim().parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        coding.eq_ignore_ascii_case("zstd") && !refused
    })
}

#[cfg(feature = "zstd")]
mod frame {
    /// zstd level of request bodies: level 1, zstd's fastest standard level, already writes
    /// fewer bytes than gzip's level 6 at 0.6x gzip level 1's CPU on realistic events
    /// (BENCHMARKS.md); higher levels cost more CPU than the bytes they save are worth here.
    const ZSTD_LEVEL: i32 = 1;

    /// A zstd compression context, kept from body to body as the deflate stream is.
    pub(crate) struct ZstdWriter(zstd::bulk::Compressor<'static>);

    impl ZstdWriter {
        /// A writer, or `None` should zstd fail to set up (out of memory).
        pub(crate) fn new() -> Option<ZstdWriter> {
            zstd::bulk::Compressor::new(ZSTD_LEVEL).ok().map(ZstdWriter)
        }

        /// Replaces `out` with `raw` as one zstd frame (its size in the header).
        pub(crate) fn write(&mut self, raw: &[u8], out: &mut Vec<u8>) -> std::io::Result<()> {
            out.clear();
            out.reserve(zstd::zstd_safe::compress_bound(raw.len()));
            self.0.compress_to_buffer(raw, out).map(|_| ())
        }
    }

    /// `body` decompressed, for [`crate::testing::Recorder`].
    pub(crate) fn unzstd(body: &[u8]) -> std::io::Result<Vec<u8>> {
        zstd::stream::decode_all(body)
    }
}

#[cfg(not(feature = "zstd"))]
mod frame {
    /// No zstd in this build: no writer can exist.
    pub(crate) enum ZstdWriter {}

    impl ZstdWriter {
        pub(crate) fn new() -> Option<ZstdWriter> {
            None
        }

        pub(crate) fn write(&mut self, _raw: &[u8], _out: &mut Vec<u8>) -> std::io::Result<()> {
            match *self {}
        }
    }

    /// Always an error: this build has no zstd.
    pub(crate) fn unzstd(_body: &[u8]) -> std::io::Result<Vec<u8>> {
        Err(std::io::Error::other(
            "a zstd body, but this build of trackway has no `zstd` feature",
        ))
    }
}

pub(crate) use frame::{ZstdWriter, unzstd};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_encoding_lists_are_read_as_rfc_9110_writes_them() {
        for yes in ["zstd, gzip", "gzip,zstd", "ZSTD", "gzip, zstd;q=0.5"] {
            assert!(lists_zstd(yes), "{yes}");
        }
        for no in [
            "gzip",
            "",
            "identity",
            "zstd;q=0",
            "gzip, zstd; q=0.0",
            "xzstd",
        ] {
            assert!(!lists_zstd(no), "{no}");
        }
    }

    #[test]
    fn auto_moves_to_zstd_when_listed_and_back_to_gzip_on_a_415() {
        let negotiation = Negotiation::new(Compression::Auto);
        assert_eq!(negotiation.current(), BodyEncoding::Gzip);
        let plain = Response::new(200, "");
        assert_eq!(negotiation.heard(&plain, BodyEncoding::Gzip), Heard::Judge);
        assert_eq!(negotiation.current(), BodyEncoding::Gzip);
        let listing = Response::new(200, "").with_accept_encoding("zstd, gzip");
        negotiation.heard(&listing, BodyEncoding::Gzip);
        let expected = if ZSTD_BUILT {
            BodyEncoding::Zstd
        } else {
            BodyEncoding::Gzip
        };
        assert_eq!(negotiation.current(), expected);
        // A 415 to gzip is the server's business, not an encoding to leave.
        let refusal = Response::new(415, "").with_accept_encoding("gzip");
        assert_eq!(
            negotiation.heard(&Response::new(415, ""), BodyEncoding::Gzip),
            Heard::Judge
        );
        assert_eq!(
            negotiation.heard(&refusal, BodyEncoding::Zstd),
            Heard::SendAgain
        );
        assert_eq!(negotiation.current(), BodyEncoding::Gzip);
        // Within the pause, a listing does not bring zstd back.
        negotiation.heard(&listing, BodyEncoding::Gzip);
        assert_eq!(negotiation.current(), BodyEncoding::Gzip);
    }

    #[test]
    fn explicit_choices_ignore_what_answers_list() {
        let listing = Response::new(200, "").with_accept_encoding("zstd, gzip");
        for (preference, expected) in [
            (Compression::Gzip, BodyEncoding::Gzip),
            (Compression::None, BodyEncoding::Identity),
        ] {
            let negotiation = Negotiation::new(preference);
            negotiation.heard(&listing, BodyEncoding::Gzip);
            assert_eq!(negotiation.current(), expected);
        }
        if ZSTD_BUILT {
            let negotiation = Negotiation::new(Compression::Zstd);
            assert_eq!(negotiation.current(), BodyEncoding::Zstd);
            negotiation.heard(
                &Response::new(200, "").with_accept_encoding("gzip"),
                BodyEncoding::Zstd,
            );
            assert_eq!(negotiation.current(), BodyEncoding::Zstd);
        }
    }
}
