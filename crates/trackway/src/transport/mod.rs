//! The client's one I/O seam: something that POSTs a request body and returns the status.
//!
//! [`HttpTransport`] (ureq over rustls, proxy variables honoured) is the default; implement
//! [`Transport`] to use your own HTTP stack, and use [`crate::testing::Recorder`] in tests.
//! The transport runs on the client's own sender thread, so a blocking implementation is right.

mod http;
mod resolve;

pub use http::HttpTransport;
pub(crate) use http::ProxySetting;

/// One HTTP request the client wants made. Its `Debug` hides the `authorization` header and
/// the body (which names the write key).
pub struct Request<'a> {
    /// The full URL, such as `https://api.segment.io/v1/batch`.
    pub url: &'a str,
    /// Headers to send, names in lower case: `content-type`, `authorization`, `user-agent`,
    /// and when they apply `content-encoding` and `x-retry-count`.
    pub headers: &'a [(&'static str, String)],
    /// The body, already compressed when `content-encoding` says so (gzip or zstd).
    pub body: &'a [u8],
}

impl std::fmt::Debug for Request<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(name, value)| {
                (
                    *name,
                    if *name == "authorization" {
                        "<redacted>"
                    } else {
                        value.as_str()
                    },
                )
            })
            .collect();
        f.debug_struct("Request")
            .field("url", &self.url)
            .field("headers", &headers)
            .field("body_bytes", &self.body.len())
            .finish()
    }
}

impl Request<'_> {
    /// The value of header `name` (lower case), if set.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What the server answered.
///
/// Non-exhaustive, since later versions may carry more of the answer (more headers): a
/// [`Transport`] outside this crate builds one with [`Response::new`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Response {
    /// The HTTP status code.
    pub status: u16,
    /// The `Retry-After` header, verbatim.
    pub retry_after: Option<String>,
    /// The `Accept-Encoding` header, verbatim: the request encodings the server takes (RFC
    /// 7694). The client moves to zstd when it lists zstd ([`crate::Compression::Auto`]), so
    /// a transport should return it.
    pub accept_encoding: Option<String>,
    /// The body. Of an error, its start is enough (for reports). Of a 2xx, the client reads
    /// the list of messages the server stored as rejected from it (our collector sends one),
    /// so a transport should keep at least the first megabyte.
    pub body: String,
}

impl Response {
    /// An answer with `status` and the start of its `body`, and no `Retry-After` or
    /// `Accept-Encoding`.
    pub fn new(status: u16, body: impl Into<String>) -> Response {
        Response {
            status,
            retry_after: None,
            accept_encoding: None,
            body: body.into(),
        }
    }

    /// The same answer with the server's `Retry-After` header, verbatim.
    pub fn with_retry_after(mut self, retry_after: impl Into<String>) -> Response {
        self.retry_after = Some(retry_after.into());
        self
    }

    /// The same answer with the server's `Accept-Encoding` header, verbatim.
    pub fn with_accept_encoding(mut self, accept_encoding: impl Into<String>) -> Response {
        self.accept_encoding = Some(accept_encoding.into());
        self
    }
}

/// The request did not produce a response; always retried.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct TransportError {
    /// What kind of failure.
    pub kind: TransportErrorKind,
    /// Details, for logs.
    pub message: String,
}

impl TransportError {
    /// A failure of `kind` described by `message`.
    pub fn new(kind: TransportErrorKind, message: impl Into<String>) -> TransportError {
        TransportError {
            kind,
            message: message.into(),
        }
    }
}

/// Kinds of [`TransportError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransportErrorKind {
    /// Could not connect (refused, DNS, TLS handshake).
    Connect,
    /// No complete answer within the request timeout.
    Timeout,
    /// The connection failed mid-request or mid-response.
    Io,
    /// Anything else.
    Other,
}

impl std::fmt::Display for TransportErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TransportErrorKind::Connect => "connect failed",
            TransportErrorKind::Timeout => "timed out",
            TransportErrorKind::Io => "connection failed",
            TransportErrorKind::Other => "request failed",
        })
    }
}

/// Sends requests. Called from the client's sender thread, one request at a time.
pub trait Transport: Send + Sync + 'static {
    /// Makes `request` and returns the server's answer, or why there was none. Enforce a
    /// timeout: the client waits as long as this call takes.
    fn send(&self, request: &Request<'_>) -> Result<Response, TransportError>;
}
