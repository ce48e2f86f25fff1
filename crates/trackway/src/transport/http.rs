//! The default transport: ureq, a small blocking HTTP client, with rustls for TLS.

use std::io::Read;
use std::net::IpAddr;
use std::time::Duration;

use super::resolve::{CachingResolver, Forget};
use super::{Request, Response, Transport, TransportError, TransportErrorKind};

/// Most bytes of an error answer's body kept, for reports.
const MAX_ERROR_BODY: u64 = 4096;

/// Most bytes of a 2xx answer's body read. A server may list there the messages it stored as
/// rejected (`crate::answer`); our collector's longest such answer, every message of a full
/// batch (2,500) listed with an index, a messageId (at most 100 characters) and a reason of a
/// few hundred bytes, stays well under this.
const MAX_SUCCESS_BODY: u64 = 2 << 20;

/// How the transport finds a proxy.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) enum ProxySetting {
    /// The environment's proxy for the host's scheme, chosen as curl chooses it
    /// ([`env_proxy`]).
    #[default]
    FromEnv,
    /// Connect directly, whatever the environment says.
    Direct,
    /// This HTTP(S) proxy URL (`http://user:pass@host:port`).
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
            ProxySetting::FromEnv => env_proxy(target, |name| std::env::var(name).ok()),
            ProxySetting::Direct => None,
            ProxySetting::Url(url) => Some(http_proxy(url)?),
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

/// The proxy the environment names for requests to `target` (a URL), read through `var`, as
/// curl reads it: `https_proxy` or `HTTPS_PROXY` for an `https` host, `http_proxy` for an
/// `http` one (curl ignores the upper-case one there: a web server's CGI sets `HTTP_PROXY`
/// from a request header), then `all_proxy` or `ALL_PROXY`. A variable that is not an
/// `http://` or `https://` proxy URL is skipped (this build has no SOCKS support). None when
/// `no_proxy` or `NO_PROXY` names the host ([`bypasses`]).
pub(crate) fn env_proxy(target: &str, var: impl Fn(&str) -> Option<String>) -> Option<ureq::Proxy> {
    let https = target
        .parse::<ureq::http::Uri>()
        .is_ok_and(|u| u.scheme_str() == Some("https"));
    let names: &[&str] = if https {
        &["https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"]
    } else {
        &["http_proxy", "all_proxy", "ALL_PROXY"]
    };
    let proxy = names
        .iter()
        .filter_map(|name| var(name).filter(|v| !v.trim().is_empty()))
        .find_map(|url| http_proxy(url.trim()).ok())?;
    let no_proxy = var("no_proxy")
        .or_else(|| var("NO_PROXY"))
        .unwrap_or_default();
    (!bypasses(&no_proxy, &host_of(target))).then_some(proxy)
}

/// `url` as a proxy, if it is an HTTP(S) one: ureq without its SOCKS feature fails every
/// request through any other.
fn http_proxy(url: &str) -> Result<ureq::Proxy, String> {
    let proxy = ureq::Proxy::new(url).map_err(|e| format!("invalid proxy url: {e}"))?;
    match proxy.protocol() {
        ureq::ProxyProtocol::Http | ureq::ProxyProtocol::Https => Ok(proxy),
        _ => Err("only http:// and https:// proxies are supported (no SOCKS)".into()),
    }
}

/// The host of `url` (`scheme://host[:port]/...`), without brackets or port; empty if `url`
/// is not one.
fn host_of(url: &str) -> String {
    let uri = url.parse::<ureq::http::Uri>().ok();
    let host = uri.as_ref().and_then(|u| u.host()).unwrap_or_default();
    // `[::1]` in a URL is the address `::1`.
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned()
}

/// Whether `no_proxy` (comma-separated, as curl reads it) sends requests to `host` direct:
/// `*`; a name, which covers itself and its subdomains (a leading `.` or `*.` and a trailing
/// `.` change nothing); an IP address; or a CIDR range. A port on an entry is ignored.
fn bypasses(no_proxy: &str, host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let host_ip: Option<IpAddr> = host.parse().ok();
    no_proxy.split(',').map(str::trim).any(|entry| {
        if entry == "*" {
            return true;
        }
        if let Some((network, bits)) = entry.split_once('/') {
            return host_ip.is_some_and(|ip| in_range(ip, network, bits));
        }
        let entry = match entry.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or(v6),
            // One colon is a port; more are an IPv6 address.
            None if entry.matches(':').count() == 1 => entry.split(':').next().unwrap_or(entry),
            None => entry,
        };
        let name = entry
            .trim_start_matches('*')
            .trim_start_matches('.')
            .trim_end_matches('.')
            .to_ascii_lowercase();
        if name.is_empty() {
            return false;
        }
        match (name.parse::<IpAddr>(), host_ip) {
            (Ok(ip), Some(host_ip)) => ip == host_ip,
            (Ok(_), None) => false,
            _ => host == name || host.ends_with(&format!(".{name}")),
        }
    })
}

/// Whether `ip` is in the range `network/bits`.
fn in_range(ip: IpAddr, network: &str, bits: &str) -> bool {
    let (Ok(network), Ok(bits)) = (network.trim().parse::<IpAddr>(), bits.trim().parse::<u32>())
    else {
        return false;
    };
    match (ip, network) {
        (IpAddr::V4(ip), IpAddr::V4(network)) if bits <= 32 => {
            let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            u32::from(ip) & mask == u32::from(network) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(network)) if bits <= 128 => {
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            u128::from(ip) & mask == u128::from(network) & mask
        }
        _ => false,
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
        let accept_encoding = response
            .headers()
            .get("accept-encoding")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let limit = if (200..300).contains(&status) {
            MAX_SUCCESS_BODY
        } else {
            MAX_ERROR_BODY
        };
        let mut body = Vec::new();
        // A response cut off mid-body is no acknowledgement: the server may not have finished
        // committing, so the batch is retried (the server deduplicates by messageId).
        response
            .into_body()
            .into_reader()
            .take(limit)
            .read_to_end(&mut body)
            .map_err(|e| {
                TransportError::new(TransportErrorKind::Io, format!("response cut off: {e}"))
            })?;
        Ok(Response {
            status,
            retry_after,
            accept_encoding,
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

    /// The proxy `env_proxy` picks for `target` with these variables set, as `host:port`.
    fn picked(target: &str, vars: &[(&str, &str)]) -> Option<String> {
        let var = |name: &str| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
        };
        env_proxy(target, var).map(|proxy| format!("{}:{}", proxy.host(), proxy.port()))
    }

    const SEGMENT: &str = "https://api.segment.io/v1/batch";
    const LOCAL: &str = "http://127.0.0.1:8080/v1/batch";

    #[test]
    fn the_environment_proxy_is_chosen_by_scheme_as_curl_does() {
        let via = |p: &str| Some(p.to_owned());
        let both = [
            ("ALL_PROXY", "http://all:1"),
            ("HTTPS_PROXY", "http://secure:2"),
            ("http_proxy", "http://plain:3"),
        ];
        assert_eq!(picked(SEGMENT, &both), via("secure:2"));
        assert_eq!(picked(LOCAL, &both), via("plain:3"));
        // Only a plain-HTTP proxy set: an https host goes direct, as with curl.
        assert_eq!(picked(SEGMENT, &[("http_proxy", "http://plain:3")]), None);
        // curl ignores HTTP_PROXY in upper case, which a CGI host sets from a request header.
        assert_eq!(picked(LOCAL, &[("HTTP_PROXY", "http://evil:4")]), None);
        assert_eq!(
            picked(SEGMENT, &[("ALL_PROXY", "http://all:1")]),
            via("all:1")
        );
        // Not a URL, or SOCKS (which this build cannot use): the next variable.
        for skipped in ["not a url", "socks5://127.0.0.1:1080"] {
            let vars = [("https_proxy", skipped), ("ALL_PROXY", "http://all:1")];
            assert_eq!(picked(SEGMENT, &vars), via("all:1"), "{skipped}");
        }
        assert_eq!(
            picked(SEGMENT, &[("ALL_PROXY", "socks5://127.0.0.1:1080")]),
            None
        );
        assert_eq!(picked(SEGMENT, &[]), None);
    }

    #[test]
    fn an_explicit_socks_proxy_is_refused_when_built() {
        let refused = HttpTransport::new(
            Duration::from_secs(1),
            &ProxySetting::Url("socks5://127.0.0.1:1080".into()),
            SEGMENT,
        );
        assert!(refused.is_err_and(|e| e.contains("SOCKS")));
    }

    #[test]
    fn no_proxy_is_read_as_curl_reads_it() {
        let direct = |no_proxy: &str, target: &str| {
            picked(
                target,
                &[
                    ("HTTPS_PROXY", "http://secure:2"),
                    ("http_proxy", "http://plain:3"),
                    ("NO_PROXY", no_proxy),
                ],
            )
            .is_none()
        };
        for no_proxy in [
            "segment.io",
            ".segment.io",
            "*.segment.io",
            "segment.io.",
            " localhost , api.segment.io:443",
            "*",
        ] {
            assert!(
                direct(no_proxy, SEGMENT),
                "{no_proxy:?} covers api.segment.io"
            );
        }
        for no_proxy in [
            "example.com",
            "notsegment.io",
            "",
            ".",
            "*.",
            "io.segment",
            "10.0.0.0/8",
        ] {
            assert!(
                !direct(no_proxy, SEGMENT),
                "{no_proxy:?} does not cover api.segment.io"
            );
        }
        for no_proxy in ["127.0.0.1", "127.0.0.0/8", "10.0.0.0/8,127.0.0.1:8080"] {
            assert!(direct(no_proxy, LOCAL), "{no_proxy:?} covers 127.0.0.1");
        }
        assert!(!direct("127.0.0.2", LOCAL));
        assert!(direct("::1", "http://[::1]:8080/v1/batch"));
        assert!(direct("[::1]:8080", "http://[::1]:8080/v1/batch"));
        assert!(direct("fd00::/8", "http://[fd12::5]/v1/batch"));
        assert!(!direct("fd00::/8", "http://[fe80::1]/v1/batch"));
    }

    #[test]
    fn the_host_of_a_url_is_found() {
        assert_eq!(host_of(SEGMENT), "api.segment.io");
        assert_eq!(
            host_of("http://user:pw@host.example:8080/x?y"),
            "host.example"
        );
        assert_eq!(host_of("http://[::1]:8080/v1"), "::1");
        assert_eq!(host_of("https://proxy.example"), "proxy.example");
    }
}
