//! [`Config::public_url`](crate::config::Config::public_url): where browsers reach the
//! collector, which the settings endpoint hands analytics.js.

use crate::config::ConfigError;

/// Where browsers reach the collector, split the way analytics.js's settings want it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PublicUrl {
    /// `http` or `https`.
    pub(crate) protocol: String,
    /// Host, port and any path prefix, no scheme and no trailing `/`.
    pub(crate) host: String,
}

impl PublicUrl {
    /// Parses `http[s]://host[:port][/prefix]`.
    pub(crate) fn parse(url: &str) -> Result<PublicUrl, ConfigError> {
        let error = || ConfigError::PublicUrl(url.to_owned());
        let (protocol, rest) = url.trim().split_once("://").ok_or_else(error)?;
        let protocol = protocol.to_ascii_lowercase();
        if protocol != "http" && protocol != "https" {
            return Err(error());
        }
        let host = rest.trim_end_matches('/');
        let authority = host.split('/').next().unwrap_or_default();
        if authority.is_empty() || host.contains(['?', '#', '@', ' ']) {
            return Err(error());
        }
        Ok(PublicUrl {
            protocol,
            host: host.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_urls_split_into_protocol_and_host() {
        let url = PublicUrl::parse("https://collect.example.com/").expect("valid");
        assert_eq!(
            (url.protocol.as_str(), url.host.as_str()),
            ("https", "collect.example.com")
        );
        let url = PublicUrl::parse("HTTP://10.0.0.1:8080/trackway").expect("valid");
        assert_eq!(
            (url.protocol.as_str(), url.host.as_str()),
            ("http", "10.0.0.1:8080/trackway")
        );
        for bad in [
            "collect.example.com",
            "ftp://x",
            "https://",
            "https:///x",
            "https://a?b",
        ] {
            assert!(PublicUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
