//! The sender's address, which the collector adds to messages as `context.ip` (as Segment's
//! API does), and the trusted proxies whose `X-Forwarded-For` may say it instead.
//!
//! The address is the connection's peer, unless that peer is a trusted proxy: then the
//! `X-Forwarded-For` list is walked from its right end (the entry the nearest proxy added),
//! past every trusted address, and the first untrusted one is the client. Entries further
//! left were written by whoever sent the request to the first proxy, so they are never
//! believed; nor is the header at all when no proxy is trusted (the default).
//!
//! ```text
//! client 203.0.113.9 -> proxy 10.0.0.2 -> proxy 10.0.0.1 -> collector
//!   X-Forwarded-For: <forged>, 203.0.113.9, 10.0.0.2        peer: 10.0.0.1
//!   trusted 10.0.0.0/8:  10.0.0.1 -> 10.0.0.2 -> 203.0.113.9 (untrusted: the client)
//! ```

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use axum::http::HeaderMap;

/// The connection's peer address, put in each request's extensions by the server.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PeerAddr(pub(crate) SocketAddr);

/// An IP network in CIDR notation (`10.0.0.0/8`, `2001:db8::/32`), or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

/// Why a `--trusted-proxy` value is not a network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an IP address or network like 10.0.0.0/8 or 2001:db8::/32")]
pub struct CidrError(String);

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(text: &str) -> Result<Cidr, CidrError> {
        let error = || CidrError(text.to_owned());
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = address.trim().parse().map_err(|_| error())?;
        let bits = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(prefix) => prefix.trim().parse::<u8>().map_err(|_| error())?,
            None => bits,
        };
        if prefix > bits {
            return Err(error());
        }
        Ok(Cidr { network, prefix })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl Cidr {
    /// Whether `address` is in this network. IPv4 addresses mapped into IPv6
    /// (`::ffff:10.0.0.1`) count as the IPv4 address they are.
    pub fn contains(&self, address: IpAddr) -> bool {
        match (self.network, address.to_canonical()) {
            (IpAddr::V4(network), IpAddr::V4(address)) => {
                masked(u32::from(network).into(), self.prefix, 32)
                    == masked(u32::from(address).into(), self.prefix, 32)
            }
            (IpAddr::V6(network), IpAddr::V6(address)) => {
                masked(network.into(), self.prefix, 128) == masked(address.into(), self.prefix, 128)
            }
            _ => false,
        }
    }
}

/// The top `prefix` bits of a `bits`-wide address.
fn masked(address: u128, prefix: u8, bits: u32) -> u128 {
    let host_bits = bits - u32::from(prefix);
    address.checked_shr(host_bits).unwrap_or(0)
}

/// The client's address: see the module doc.
pub(crate) fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[Cidr]) -> IpAddr {
    let mut candidate = peer.to_canonical();
    if trusted.is_empty() {
        return candidate;
    }
    // Several headers are one list, in order.
    let entries: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .collect();
    for entry in entries.iter().rev() {
        if !trusted.iter().any(|cidr| cidr.contains(candidate)) {
            break;
        }
        // An entry that is no address ends what can be believed: the proxy that sent it is
        // the last known hop.
        match entry.trim().parse::<IpAddr>() {
            Ok(address) => candidate = address.to_canonical(),
            Err(_) => break,
        }
    }
    candidate
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(text: &str) -> Cidr {
        text.parse().expect("cidr")
    }

    #[test]
    fn networks_contain_their_addresses_only() {
        let ten = cidr("10.0.0.0/8");
        assert!(ten.contains("10.200.0.1".parse().expect("ip")));
        assert!(ten.contains("::ffff:10.0.0.1".parse().expect("ip")));
        assert!(!ten.contains("11.0.0.1".parse().expect("ip")));
        assert!(cidr("0.0.0.0/0").contains("8.8.8.8".parse().expect("ip")));
        assert!(cidr("127.0.0.1").contains("127.0.0.1".parse().expect("ip")));
        assert!(!cidr("127.0.0.1").contains("127.0.0.2".parse().expect("ip")));
        assert!(cidr("2001:db8::/32").contains("2001:db8:1::1".parse().expect("ip")));
        assert!(!cidr("2001:db8::/32").contains("10.0.0.1".parse().expect("ip")));
        for bad in ["10.0.0.0/33", "10.0.0/8", "", "host/8", "::/129"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn forwarded_for_is_believed_only_through_trusted_proxies() {
        let mut headers = HeaderMap::new();
        headers.append(
            "x-forwarded-for",
            "6.6.6.6, 203.0.113.9".parse().expect("header"),
        );
        headers.append("x-forwarded-for", "10.0.0.2".parse().expect("header"));
        let peer: IpAddr = "10.0.0.1".parse().expect("ip");
        let ip = |trusted: &[Cidr]| client_ip(peer, &headers, trusted).to_string();
        // No proxy trusted: the peer, whatever the header says.
        assert_eq!(ip(&[]), "10.0.0.1");
        // The proxies trusted: the first untrusted address from the right; the forged
        // leftmost entry is never reached.
        assert_eq!(ip(&[cidr("10.0.0.0/8")]), "203.0.113.9");
        // Only the nearest proxy trusted: what it says, and no further.
        assert_eq!(ip(&[cidr("10.0.0.1/32")]), "10.0.0.2");
        // A peer that is not a trusted proxy: its header is ignored.
        let stranger: IpAddr = "198.51.100.7".parse().expect("ip");
        assert_eq!(
            client_ip(stranger, &headers, &[cidr("10.0.0.0/8")]).to_string(),
            "198.51.100.7"
        );
    }
}
