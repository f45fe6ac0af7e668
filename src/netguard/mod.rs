//! Network facts about a request: who the client is, and whether its peer is trusted.
//!
//! One function decides the client IP. The TCP peer is the client unless the peer is a
//! trusted proxy; then the right-most `X-Forwarded-For` address that is not itself a
//! trusted proxy is (left-most entries are client-controlled and never believed).

mod allowlist;
mod guards;
mod ratelimit;

use std::net::IpAddr;

use ipnet::IpNet;

pub use allowlist::{AllowlistMode, IpAllowlist};
pub use guards::{OverLimit, RateLimits};
pub use ratelimit::{KeyHasher, LimitKey, LimitSpec, Limiter};

/// IPv4-mapped IPv6 (`::ffff:10.1.2.3`) compares as IPv4.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// True when `ip` is inside any of `nets`.
pub fn is_trusted(ip: IpAddr, nets: &[IpNet]) -> bool {
    let ip = canonical_ip(ip);
    nets.iter().any(|n| n.contains(&ip))
}

/// The client address for `peer`, given every `X-Forwarded-For` header value in order.
///
/// `None` when a trusted proxy's chain holds an entry that is not an address before an
/// untrusted one is found: the client is then unknown, which no IP allowlist admits (never the
/// trusted proxy's own address, which an allowlist might well contain).
pub fn client_ip<'a>(
    peer: IpAddr,
    forwarded_for: impl DoubleEndedIterator<Item = &'a [u8]>,
    trusted: &[IpNet],
) -> Option<IpAddr> {
    let peer = canonical_ip(peer);
    if !is_trusted(peer, trusted) {
        return Some(peer);
    }
    let mut client = peer;
    for value in forwarded_for.rev() {
        let text = std::str::from_utf8(value).ok()?;
        for entry in text.rsplit(',') {
            let ip = parse_forwarded_address(entry)?;
            client = ip;
            if !is_trusted(ip, trusted) {
                return Some(ip);
            }
        }
    }
    // Every hop is a trusted proxy (or there is no header): the request comes from one.
    Some(client)
}

/// Parses one XFF entry: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1`, `[2001:db8::1]:443`.
fn parse_forwarded_address(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(canonical_ip(ip));
    }
    if let Some(rest) = entry.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok().map(canonical_ip);
    }
    let (host, _port) = entry.rsplit_once(':')?;
    host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

/// Request size limits (slowloris and memory abuse are bounded by Pingora's own read
/// timeouts and buffers; these bound what a request may carry into the pipeline).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizeLimits {
    /// Sum of header name and value lengths.
    pub max_header_bytes: usize,
    /// Number of header lines.
    pub max_headers: usize,
    /// Length of the request target (path and query).
    pub max_uri_bytes: usize,
    /// Longest time from a request's first byte to the end of its headers (slowloris).
    pub header_timeout: std::time::Duration,
    /// Longest wait for the next piece of a request body.
    pub body_idle_timeout: std::time::Duration,
    /// Most connections open at once from one peer address (trusted proxies exempt).
    pub max_connections_per_ip: Option<usize>,
    /// Largest body Portcullis reads for its own endpoints (sign-in and sign-out forms,
    /// back-channel logout).
    pub max_form_bytes: usize,
}

impl Default for SizeLimits {
    fn default() -> Self {
        SizeLimits {
            max_header_bytes: 32 * 1024,
            max_headers: 100,
            max_uri_bytes: 8 * 1024,
            header_timeout: std::time::Duration::from_secs(10),
            body_idle_timeout: std::time::Duration::from_secs(60),
            max_connections_per_ip: None,
            max_form_bytes: 16 * 1024,
        }
    }
}

/// Which limit a request broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeViolation {
    /// Too many or too large headers (431).
    Headers,
    /// Request target too long (414).
    Uri,
}

impl SizeLimits {
    /// Checks a request given its target length and `(name, value)` lengths of each header.
    pub fn check(
        &self,
        uri_len: usize,
        headers: impl Iterator<Item = (usize, usize)>,
    ) -> Result<(), SizeViolation> {
        if uri_len > self.max_uri_bytes {
            return Err(SizeViolation::Uri);
        }
        let (mut count, mut bytes) = (0usize, 0usize);
        for (name, value) in headers {
            count += 1;
            bytes += name + value;
            if count > self.max_headers || bytes > self.max_header_bytes {
                return Err(SizeViolation::Headers);
            }
        }
        Ok(())
    }
}

/// Headers that name the client's address under other conventions (CDNs, nginx, RFC 7239).
/// A backend or its rate limiter may believe any of them, so none passes from a client under
/// any spelling. `X-Real-IP` and `Forwarded` are set by Portcullis from the address it decided
/// on; the others pass from a trusted proxy only when listed in `server.client_ip_headers`
/// ([`PASSABLE_CLIENT_ADDRESS_HEADERS`]).
pub const CLIENT_ADDRESS_HEADERS: &[&str] = &[
    "x-real-ip",
    "forwarded",
    "true-client-ip",
    "cf-connecting-ip",
    "x-client-ip",
    "x-cluster-client-ip",
    "fastly-client-ip",
];

/// The client-address headers a trusted proxy may pass on to the upstream.
pub const PASSABLE_CLIENT_ADDRESS_HEADERS: &[&str] = &[
    "true-client-ip",
    "cf-connecting-ip",
    "x-client-ip",
    "x-cluster-client-ip",
    "fastly-client-ip",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_limits() {
        let limits = SizeLimits {
            max_header_bytes: 10,
            max_headers: 2,
            max_uri_bytes: 5,
            ..SizeLimits::default()
        };
        assert_eq!(limits.check(5, [(2, 3)].into_iter()), Ok(()));
        assert_eq!(limits.check(6, std::iter::empty()), Err(SizeViolation::Uri));
        assert_eq!(
            limits.check(1, [(1, 1), (1, 1), (1, 1)].into_iter()),
            Err(SizeViolation::Headers)
        );
        assert_eq!(
            limits.check(1, [(5, 6)].into_iter()),
            Err(SizeViolation::Headers)
        );
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().expect("cidr")).collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn untrusted_peer_is_the_client_whatever_it_claims() {
        let trusted = nets(&["10.0.0.0/8"]);
        let xff: [&[u8]; 1] = [b"1.1.1.1"];
        assert_eq!(
            client_ip(ip("203.0.113.9"), xff.into_iter(), &trusted),
            Some(ip("203.0.113.9"))
        );
    }

    #[test]
    fn trusted_chain_takes_rightmost_untrusted() {
        let trusted = nets(&["10.0.0.0/8", "fd00::/8"]);
        let xff: [&[u8]; 2] = [b"6.6.6.6, 198.51.100.7", b"10.1.1.1"];
        assert_eq!(
            client_ip(ip("10.0.0.2"), xff.into_iter(), &trusted),
            Some(ip("198.51.100.7"))
        );
        let v6: [&[u8]; 1] = [b"[2001:db8::5]:443"];
        assert_eq!(
            client_ip(ip("fd00::1"), v6.into_iter(), &trusted),
            Some(ip("2001:db8::5"))
        );
    }

    #[test]
    fn an_unparsable_hop_makes_the_client_unknown() {
        let trusted = nets(&["10.0.0.0/8"]);
        let xff: [&[u8]; 1] = [b"evil, 10.2.2.2"];
        assert_eq!(client_ip(ip("10.0.0.2"), xff.into_iter(), &trusted), None);
        let after_untrusted: [&[u8]; 1] = [b"evil, 192.0.2.4, 10.2.2.2"];
        assert_eq!(
            client_ip(ip("10.0.0.2"), after_untrusted.into_iter(), &trusted),
            Some(ip("192.0.2.4")),
            "entries left of the client are never read"
        );
        let none: [&[u8]; 0] = [];
        assert_eq!(
            client_ip(ip("10.0.0.2"), none.into_iter(), &trusted),
            Some(ip("10.0.0.2"))
        );
    }

    #[test]
    fn mapped_addresses_compare_as_ipv4() {
        let trusted = nets(&["10.0.0.0/8"]);
        assert!(is_trusted(ip("::ffff:10.1.2.3"), &trusted));
        let xff: [&[u8]; 1] = [b"::ffff:192.0.2.1"];
        assert_eq!(
            client_ip(ip("::ffff:10.0.0.1"), xff.into_iter(), &trusted),
            Some(ip("192.0.2.1"))
        );
    }
}
