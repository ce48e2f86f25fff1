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
    /// The environment's proxy for the host's scheme, chosen as curl chooses it
    /// ([`env_proxy`]).
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
    ///
    /// Its requests may go to hosts of either scheme, so the proxy is ureq's choice: the first
    /// set of `ALL_PROXY`, `HTTPS_PROXY` and `HTTP_PROXY` (either case), unless `NO_PROXY`
    /// names the host.
    pub fn with_timeout(timeout: Duration) -> HttpTransport {
        HttpTransport::with_proxy(timeout, ureq::Proxy::try_from_env())
    }

    /// A transport for requests to `target` (a URL) that time out after `timeout` (connect to
    /// last body byte).
    pub(crate) fn new(
        timeout: Duration,
        proxy: &ProxySetting,
        target: &str,
    ) -> Result<HttpTransport, String> {
        let proxy = match proxy {
            ProxySetting::FromEnv => {
                let https = target
                    .get(..8)
                    .is_some_and(|s| s.eq_ignore_ascii_case("https://"));
                env_proxy(https, |name| std::env::var(name).ok())
            }
            ProxySetting::Direct => None,
            ProxySetting::Url(url) => {
                Some(ureq::Proxy::new(url).map_err(|e| format!("invalid proxy url: {e}"))?)
            }
        };
        Ok(HttpTransport::with_proxy(timeout, proxy))
    }

    fn with_proxy(timeout: Duration, proxy: Option<ureq::Proxy>) -> HttpTransport {
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .max_redirects(0)
            .max_redirects_will_error(false)
            .proxy(proxy)
            .build();
        let resolver = CachingResolver::new();
        let forget = Some(resolver.forget());
        HttpTransport {
            agent: ureq::Agent::with_parts(
                config,
                ureq::unversioned::transport::DefaultConnector::new(),
                resolver,
            ),
            forget,
        }
    }
}

/// The proxy the environment names for a host of this scheme, read through `var`, as curl
/// reads it: `https_proxy` or `HTTPS_PROXY` for `https`, `http_proxy` for `http` (curl ignores
/// the upper-case one there: a web server's CGI sets `HTTP_PROXY` from a request header),
/// then `all_proxy` or `ALL_PROXY`. A variable that is not a proxy URL is skipped.
/// `no_proxy` or `NO_PROXY` lists the hosts that go direct: `*`, or names that match
/// themselves and their subdomains (`example.com`, `.example.com`).
pub(crate) fn env_proxy(https: bool, var: impl Fn(&str) -> Option<String>) -> Option<ureq::Proxy> {
    let names: &[&str] = if https {
        &["https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"]
    } else {
        &["http_proxy", "all_proxy", "ALL_PROXY"]
    };
    let proxy = names
        .iter()
        .filter_map(|name| var(name).filter(|v| !v.trim().is_empty()))
        .find_map(|url| ureq::Proxy::new(url.trim()).ok())?;
    let Some(no_proxy) = var("no_proxy").or_else(|| var("NO_PROXY")) else {
        return Some(proxy);
    };
    // Built again with the exceptions, which only ureq's own reading of the environment
    // attaches otherwise.
    let mut builder = ureq::Proxy::builder(proxy.protocol())
        .host(proxy.host())
        .port(proxy.port());
    if let Some(username) = proxy.username() {
        builder = builder.username(username);
    }
    if let Some(password) = proxy.password() {
        builder = builder.password(password);
    }
    for entry in no_proxy.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let name = entry.trim_start_matches('*').trim_start_matches('.');
        builder = if entry == "*" || name.is_empty() {
            builder.no_proxy("*")
        } else {
            // curl's "example.com" covers its subdomains too; ureq's covers only itself.
            builder.no_proxy(name).no_proxy(&format!(".{name}"))
        };
    }
    builder.build().ok()
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The proxy `env_proxy` picks, as `host:port`, for a host of this scheme, with these
    /// variables set, and whether it leaves `host` out.
    fn picked(https: bool, vars: &[(&str, &str)], host: &str) -> Option<(String, bool)> {
        let var = |name: &str| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
        };
        let proxy = env_proxy(https, var)?;
        let scheme = if https { "https" } else { "http" };
        let uri: ureq::http::Uri = format!("{scheme}://{host}/v1/batch").parse().unwrap();
        Some((
            format!("{}:{}", proxy.host(), proxy.port()),
            proxy.is_no_proxy(&uri),
        ))
    }

    #[test]
    fn the_environment_proxy_is_chosen_by_scheme_as_curl_does() {
        let direct = |https, vars: &[(&str, &str)]| picked(https, vars, "api.segment.io");
        let via = |p: &str| Some((p.to_owned(), false));
        let both = [
            ("ALL_PROXY", "http://all:1"),
            ("HTTPS_PROXY", "http://secure:2"),
            ("http_proxy", "http://plain:3"),
        ];
        assert_eq!(direct(true, &both), via("secure:2"));
        assert_eq!(direct(false, &both), via("plain:3"));
        // Only a plain-HTTP proxy set: an https host goes direct, as with curl.
        assert_eq!(direct(true, &[("http_proxy", "http://plain:3")]), None);
        // curl ignores HTTP_PROXY in upper case, which a CGI host sets from a request header.
        assert_eq!(direct(false, &[("HTTP_PROXY", "http://evil:4")]), None);
        assert_eq!(direct(true, &[("ALL_PROXY", "http://all:1")]), via("all:1"));
        assert_eq!(
            direct(
                true,
                &[("https_proxy", "not a url"), ("ALL_PROXY", "http://all:1")]
            ),
            via("all:1")
        );
        assert_eq!(direct(true, &[]), None);
    }

    #[test]
    fn no_proxy_names_cover_their_subdomains() {
        let with = |no_proxy: &str, host: &str| {
            let vars = [
                ("HTTPS_PROXY", "http://user:p%40ss@secure:2"),
                ("NO_PROXY", no_proxy),
            ];
            picked(true, &vars, host).map(|(_, bypass)| bypass)
        };
        assert_eq!(with("segment.io", "api.segment.io"), Some(true));
        assert_eq!(with("segment.io", "segment.io"), Some(true));
        assert_eq!(
            with(" .segment.io , localhost", "api.segment.io"),
            Some(true)
        );
        assert_eq!(with("*.segment.io", "api.segment.io"), Some(true));
        assert_eq!(with("*", "anything.example"), Some(true));
        assert_eq!(with("example.com", "api.segment.io"), Some(false));
        assert_eq!(with("notsegment.io", "api.segment.io"), Some(false));
        // The proxy's credentials survive being built again with the exceptions.
        let vars = [
            ("HTTPS_PROXY", "http://user:p%40ss@secure:2"),
            ("NO_PROXY", "localhost"),
        ];
        let proxy = env_proxy(true, |name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
        })
        .unwrap();
        assert_eq!(
            (proxy.username(), proxy.password()),
            (Some("user"), Some("p@ss"))
        );
    }
}
