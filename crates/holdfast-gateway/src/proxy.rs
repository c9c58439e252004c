//! The client address behind trusted reverse proxies (`server.trusted_proxies`).
//!
//! When the TCP peer is a trusted proxy, the client is the rightmost address of
//! `X-Forwarded-For` that is not itself a trusted proxy (proxies append the address they got
//! the request from, so everything left of the first untrusted hop may be forged by the
//! client). Otherwise the TCP peer is the client and the header is ignored. Per-IP limits and
//! log lines use this address.

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;

/// A trusted address or network (`10.0.0.0/8`, `127.0.0.1`, `::1`, `fd00::/8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `ip` or `ip/prefix`.
    pub fn parse(s: &str) -> Option<Cidr> {
        let s = s.trim();
        let (ip, prefix) = match s.split_once('/') {
            Some((ip, p)) => (ip, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = ip.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max)?,
            None => max,
        };
        Some(Cidr { addr, prefix })
    }

    /// Whether `ip` is in this network (IPv4-mapped IPv6 addresses match IPv4 networks).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// The trusted proxies of a node.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<Cidr>);

impl TrustedProxies {
    /// Parses every entry; the first invalid one is returned as the error.
    pub fn parse(entries: &[String]) -> Result<TrustedProxies, String> {
        entries
            .iter()
            .map(|e| Cidr::parse(e).ok_or_else(|| e.clone()))
            .collect::<Result<Vec<_>, _>>()
            .map(TrustedProxies)
    }

    /// Whether `ip` is a trusted proxy.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|c| c.contains(ip))
    }

    /// The client's address for a request from `peer` with `headers`. The port is the
    /// proxy's when the address came from `X-Forwarded-For` (which carries none).
    pub fn client_addr(&self, peer: SocketAddr, headers: &HeaderMap) -> SocketAddr {
        if self.0.is_empty() || !self.trusts(peer.ip()) {
            return peer;
        }
        let mut client = peer.ip();
        // Every X-Forwarded-For header, in order, read right to left.
        let hops: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect();
        for hop in hops.iter().rev() {
            let Some(ip) = parse_hop(hop) else {
                // Garbage: stop at the last address we could vouch for.
                break;
            };
            client = ip;
            if !self.trusts(ip) {
                break;
            }
        }
        SocketAddr::new(client, peer.port())
    }
}

/// One `X-Forwarded-For` element: an IP, possibly with a port or in brackets.
fn parse_hop(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    if let Ok(ip) = s.parse() {
        return Some(ip);
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    s.strip_prefix('[')?.strip_suffix(']')?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append(
                "x-forwarded-for",
                http::HeaderValue::from_str(v).expect("header"),
            );
        }
        h
    }

    fn proxies(list: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("valid")
    }

    #[test]
    fn cidrs_parse_and_match() {
        assert!(Cidr::parse("10.0.0.0/8")
            .expect("cidr")
            .contains("10.2.3.4".parse().expect("ip")));
        assert!(!Cidr::parse("10.0.0.0/8")
            .expect("cidr")
            .contains("11.0.0.1".parse().expect("ip")));
        assert!(Cidr::parse("127.0.0.1")
            .expect("ip")
            .contains("::ffff:127.0.0.1".parse().expect("ip")));
        assert!(Cidr::parse("0.0.0.0/0")
            .expect("all")
            .contains("8.8.8.8".parse().expect("ip")));
        assert!(Cidr::parse("fd00::/8")
            .expect("v6")
            .contains("fd12::1".parse().expect("ip")));
        assert!(Cidr::parse("10.0.0.0/33").is_none());
        assert!(Cidr::parse("not-an-ip").is_none());
    }

    #[test]
    fn forwarded_for_is_believed_only_from_a_trusted_peer() {
        let p = proxies(&["127.0.0.1", "10.0.0.0/8"]);
        let proxy: SocketAddr = "127.0.0.1:5000".parse().expect("addr");
        let stranger: SocketAddr = "192.0.2.7:5000".parse().expect("addr");
        let h = headers(&["203.0.113.9"]);
        assert_eq!(p.client_addr(proxy, &h).ip().to_string(), "203.0.113.9");
        assert_eq!(p.client_addr(stranger, &h), stranger);
        // A forged leftmost entry is skipped: the rightmost untrusted hop wins.
        let h = headers(&["6.6.6.6, 203.0.113.9, 10.1.1.1"]);
        assert_eq!(p.client_addr(proxy, &h).ip().to_string(), "203.0.113.9");
        let h = headers(&["6.6.6.6", "203.0.113.9"]);
        assert_eq!(p.client_addr(proxy, &h).ip().to_string(), "203.0.113.9");
        // Garbage stops the walk at the last trusted hop.
        let h = headers(&["203.0.113.9, garbage"]);
        assert_eq!(p.client_addr(proxy, &h).ip().to_string(), "127.0.0.1");
        // No list: the header is ignored.
        assert_eq!(
            TrustedProxies::default().client_addr(proxy, &headers(&["1.2.3.4"])),
            proxy
        );
    }
}
