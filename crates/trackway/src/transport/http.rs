//! The default transport: ureq, a small blocking HTTP client, with rustls for TLS.

use std::io::Read;
use std::time::Duration;

use super::resolve::{CachingResolver, Forget};
use super::{Request, Response, Transport, TransportError, TransportErrorKind};

/// Most bytes of a response body kept for error reports.
const MAX_RESPONSE_BODY: u64 = 4096;

/// How the transport finds a proxy.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) enum ProxySetting {
    /// The first set of `ALL_PROXY`, `HTTPS_PROXY` and `HTTP_PROXY` (either case) for every
    /// scheme, and `NO_PROXY` (ureq's rule, not curl's per-scheme one).
    #[default]
    FromEnv,
    /// Connect directly, whatever the environment says.
    Direct,
    /// This proxy URL (`http://user:pass@host:port`, `socks5://host:port`).
    Url(String),
}

/// HTTP/1.1 over a pooled, kept-alive connection.
#[derive(Debug, Clone)]
pub struct HttpTransport {
    agent: ureq::Agent,
    /// Empties the agent's name cache after a failed request (see `resolve`).
    forget: Option<Forget>,
}

impl ProxySetting {
    /// For `Debug` output: a proxy URL's credentials hidden.
    pub(crate) fn redacted(&self) -> String {
        match self {
            ProxySetting::FromEnv => "from environment".into(),
            ProxySetting::Direct => "direct".into(),
            ProxySetting::Url(url) => match url.split_once("://").and_then(|(scheme, rest)| {
                rest.split_once('@')
                    .map(|(_, host)| format!("{scheme}://<credentials>@{host}"))
            }) {
                Some(redacted) => redacted,
                None => url.clone(),
            },
        }
    }
}

impl HttpTransport {
    /// A transport whose requests time out after `timeout` (connect to last body byte), with
    /// the proxy environment variables honoured: for other code that wants the client's HTTP
    /// behaviour (the collector's webhook destination).
    pub fn with_timeout(timeout: Duration) -> HttpTransport {
        // Only an explicit proxy URL can be invalid; FromEnv ignores unreadable variables.
        HttpTransport::new(timeout, &ProxySetting::FromEnv).unwrap_or_else(|_| HttpTransport {
            agent: ureq::Agent::new_with_defaults(),
            forget: None,
        })
    }

    /// A transport whose requests time out after `timeout` (connect to last body byte).
    pub(crate) fn new(timeout: Duration, proxy: &ProxySetting) -> Result<HttpTransport, String> {
        let proxy = match proxy {
            ProxySetting::FromEnv => ureq::Proxy::try_from_env(),
            ProxySetting::Direct => None,
            ProxySetting::Url(url) => {
                Some(ureq::Proxy::new(url).map_err(|e| format!("invalid proxy url: {e}"))?)
            }
        };
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .max_redirects(0)
            .max_redirects_will_error(false)
            .proxy(proxy)
            .build();
        let resolver = CachingResolver::new();
        let forget = Some(resolver.forget());
        Ok(HttpTransport {
            agent: ureq::Agent::with_parts(
                config,
                ureq::unversioned::transport::DefaultConnector::new(),
                resolver,
            ),
            forget,
        })
    }
}

impl Transport for HttpTransport {
    fn send(&self, request: &Request<'_>) -> Result<Response, TransportError> {
        let mut builder = self.agent.post(request.url);
        for (name, value) in request.headers {
            builder = builder.header(*name, value);
        }
        let response = builder.send(request.body).map_err(|error| {
            let error = map_error(error);
            // The host may have moved: look it up again on the retry.
            if let Some(forget) = &self.forget
                && matches!(
                    error.kind,
                    TransportErrorKind::Connect
                        | TransportErrorKind::Timeout
                        | TransportErrorKind::Io
                )
            {
                forget.forget_all();
            }
            error
        })?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut body = Vec::new();
        // A response cut off mid-body is no acknowledgement: the server may not have finished
        // committing, so the batch is retried (the server deduplicates by messageId).
        response
            .into_body()
            .into_reader()
            .take(MAX_RESPONSE_BODY)
            .read_to_end(&mut body)
            .map_err(|e| {
                TransportError::new(TransportErrorKind::Io, format!("response cut off: {e}"))
            })?;
        Ok(Response {
            status,
            retry_after,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }
}

fn map_error(error: ureq::Error) -> TransportError {
    let kind = match &error {
        ureq::Error::Timeout(_) => TransportErrorKind::Timeout,
        ureq::Error::ConnectionFailed | ureq::Error::HostNotFound | ureq::Error::Tls(_) => {
            TransportErrorKind::Connect
        }
        ureq::Error::Io(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            TransportErrorKind::Connect
        }
        ureq::Error::Io(_) | ureq::Error::Protocol(_) => TransportErrorKind::Io,
        _ => TransportErrorKind::Other,
    };
    TransportError::new(kind, error.to_string())
}
