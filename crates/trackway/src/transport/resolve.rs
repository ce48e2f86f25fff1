//! Host name resolution for the HTTP transport, cached.
//!
//! ureq resolves the host of every request before it looks in its connection pool, and with
//! a timeout set (the client always sets one) its default resolver starts a thread for each
//! lookup so it can give up on time. At one request per batch that is thousands of thread
//! starts and name lookups a minute under load, for an answer that rarely changes.
//!
//! [`CachingResolver`] keeps each answer for [`RESOLVE_TTL`], which is shorter than typical
//! DNS TTLs for API hosts, and answers an IP address in the URL without any lookup. A failed
//! lookup is not cached: the next request asks again. Nor is an answer trusted after a request
//! fails: the transport calls [`Forget::forget_all`] on a connection or I/O error, so a host
//! that moved (a DNS failover) is looked up again on the retry, as it would have been without
//! the cache.
//!
//! It assumes ureq's default of any IP family (the client never sets another): unlike
//! ureq's resolver it does not filter an IP address in the URL by family.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ureq::config::Config;
use ureq::http::Uri;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::NextTimeout;

/// How long a resolved address list is reused.
pub(crate) const RESOLVE_TTL: Duration = Duration::from_secs(30);

/// Most host names remembered; the client talks to one host (and perhaps a proxy).
const MAX_ENTRIES: usize = 16;

/// A [`Resolver`] that remembers answers for a while. See the module docs.
#[derive(Debug)]
pub(crate) struct CachingResolver<R = DefaultResolver> {
    inner: R,
    ttl: Duration,
    cache: Arc<Cache>,
}

type Cache = Mutex<HashMap<String, (Instant, ResolvedSocketAddrs)>>;

/// Empties a [`CachingResolver`]'s cache from outside it (the agent owns the resolver).
#[derive(Debug, Clone)]
pub(crate) struct Forget(Arc<Cache>);

impl Forget {
    /// Drops every remembered answer: the next request to each host looks it up again.
    pub(crate) fn forget_all(&self) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

impl CachingResolver {
    /// Caches the default resolver's answers for [`RESOLVE_TTL`].
    pub(crate) fn new() -> CachingResolver {
        CachingResolver::wrapping(DefaultResolver::default(), RESOLVE_TTL)
    }
}

impl<R: Resolver> CachingResolver<R> {
    /// Caches `inner`'s answers for `ttl`.
    pub(crate) fn wrapping(inner: R, ttl: Duration) -> CachingResolver<R> {
        CachingResolver {
            inner,
            ttl,
            cache: Arc::default(),
        }
    }

    /// A handle that empties this resolver's cache.
    pub(crate) fn forget(&self) -> Forget {
        Forget(Arc::clone(&self.cache))
    }
}

impl<R: Resolver> Resolver for CachingResolver<R> {
    fn resolve(
        &self,
        uri: &Uri,
        config: &Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let Some(authority) = uri.authority() else {
            return self.inner.resolve(uri, config, timeout);
        };
        let port = authority.port_u16().or_else(|| match uri.scheme_str() {
            Some("https") => Some(443),
            Some("http") => Some(80),
            Some("socks4" | "socks4a" | "socks5" | "socks5h") => Some(1080),
            _ => None,
        });
        let host = authority.host();
        // `[::1]` in a URL is the address `::1`.
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        if let (Ok(ip), Some(port)) = (literal.parse::<IpAddr>(), port) {
            let mut addrs = self.empty();
            addrs.push(SocketAddr::new(ip, port));
            return Ok(addrs);
        }
        // The answer holds ports, so the key is host and port: `http://h` and `https://h` are
        // two entries. (The authority would also hold a proxy's credentials.)
        let Some(port) = port else {
            return self.inner.resolve(uri, config, timeout);
        };
        let key = format!("{host}:{port}");
        let now = Instant::now();
        let cached = self
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            .filter(|(at, _)| now.duration_since(*at) < self.ttl)
            .map(|(_, addrs)| addrs.clone());
        if let Some(addrs) = cached {
            return Ok(addrs);
        }
        let addrs = self.inner.resolve(uri, config, timeout)?;
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= MAX_ENTRIES {
            cache.retain(|_, (at, _)| now.duration_since(*at) < self.ttl);
        }
        if cache.len() < MAX_ENTRIES {
            cache.insert(key, (now, addrs.clone()));
        }
        Ok(addrs)
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Answers 10.0.0.1 (with the URL's port) for any name and counts the lookups.
    #[derive(Debug, Default)]
    struct Counting {
        lookups: AtomicUsize,
    }

    impl Resolver for &'static Counting {
        fn resolve(
            &self,
            uri: &Uri,
            _config: &Config,
            _timeout: NextTimeout,
        ) -> Result<ResolvedSocketAddrs, ureq::Error> {
            self.lookups.fetch_add(1, Ordering::SeqCst);
            if uri.host() == Some("nowhere.invalid") {
                return Err(ureq::Error::HostNotFound);
            }
            let port = uri
                .port_u16()
                .unwrap_or(if uri.scheme_str() == Some("http") {
                    80
                } else {
                    443
                });
            let mut addrs = self.empty();
            addrs.push(SocketAddr::new(Ipv4Addr::new(10, 0, 0, 1).into(), port));
            Ok(addrs)
        }
    }

    fn resolve(resolver: &impl Resolver, url: &str) -> Result<Vec<SocketAddr>, ureq::Error> {
        let uri: Uri = url.parse().unwrap();
        let config = Config::default();
        let timeout = NextTimeout {
            after: ureq::unversioned::transport::time::Duration::NotHappening,
            reason: ureq::Timeout::Global,
            per_read: None,
            per_write: None,
        };
        resolver
            .resolve(&uri, &config, timeout)
            .map(|addrs| addrs.iter().copied().collect())
    }

    /// A resolver caching for `ttl` over a fresh counting one.
    fn caching(ttl: Duration) -> (&'static Counting, CachingResolver<&'static Counting>) {
        let inner: &'static Counting = Box::leak(Box::default());
        (inner, CachingResolver::wrapping(inner, ttl))
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn a_name_is_looked_up_once_within_the_ttl() {
        let (inner, resolver) = caching(HOUR);
        let first = resolve(&resolver, "https://api.segment.io/v1/batch").unwrap();
        let second = resolve(&resolver, "https://api.segment.io/v1/batch").unwrap();
        assert_eq!(first, second);
        assert_eq!(inner.lookups.load(Ordering::SeqCst), 1);
        // Another host (or port) is another entry.
        resolve(&resolver, "https://events.eu1.segmentapis.com/v1/batch").unwrap();
        resolve(&resolver, "https://api.segment.io:8443/v1/batch").unwrap();
        assert_eq!(inner.lookups.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn the_same_host_under_two_schemes_keeps_each_port() {
        let (inner, resolver) = caching(HOUR);
        let https = resolve(&resolver, "https://collector.example/v1/batch").unwrap();
        let http = resolve(&resolver, "http://collector.example/v1/batch").unwrap();
        assert_eq!(https, ["10.0.0.1:443".parse::<SocketAddr>().unwrap()]);
        assert_eq!(http, ["10.0.0.1:80".parse::<SocketAddr>().unwrap()]);
        // Credentials in the URL (a proxy's) do not make another entry.
        resolve(&resolver, "http://user:secret@collector.example/v1/batch").unwrap();
        assert_eq!(inner.lookups.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn forgetting_makes_the_next_request_look_up_again() {
        let (inner, resolver) = caching(HOUR);
        let forget = resolver.forget();
        resolve(&resolver, "https://api.segment.io/v1/batch").unwrap();
        forget.forget_all();
        resolve(&resolver, "https://api.segment.io/v1/batch").unwrap();
        resolve(&resolver, "https://api.segment.io/v1/batch").unwrap();
        assert_eq!(inner.lookups.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn an_expired_answer_is_looked_up_again() {
        let (inner, resolver) = caching(Duration::ZERO);
        resolve(&resolver, "https://api.segment.io/v1/batch").unwrap();
        resolve(&resolver, "https://api.segment.io/v1/batch").unwrap();
        assert_eq!(inner.lookups.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_failed_lookup_is_not_cached() {
        let (inner, resolver) = caching(HOUR);
        for _ in 0..2 {
            let error = resolve(&resolver, "https://nowhere.invalid/v1/batch").unwrap_err();
            assert!(matches!(error, ureq::Error::HostNotFound), "{error:?}");
        }
        assert_eq!(inner.lookups.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn an_ip_address_needs_no_lookup() {
        let (inner, resolver) = caching(HOUR);
        assert_eq!(
            resolve(&resolver, "http://127.0.0.1:8080/v1/batch").unwrap(),
            ["127.0.0.1:8080".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(
            resolve(&resolver, "http://[::1]/v1/batch").unwrap(),
            ["[::1]:80".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(
            resolve(&resolver, "https://10.1.2.3/v1/batch").unwrap(),
            ["10.1.2.3:443".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(inner.lookups.load(Ordering::SeqCst), 0);
    }
}
