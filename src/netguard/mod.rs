//! Network facts about a request: who the client is, and whether its peer is trusted.
//!
//! One function decides the client IP. The TCP peer is the client unless the peer is a
//! trusted proxy; then the right-most `X-Forwarded-For` address that is not itself a
//! trusted proxy is (left-most entries are client-controlled and never believed).

mod guards;
mod ratelimit;

use std::net::IpAddr;

use ipnet::IpNet;

pub use crate::config::{
    canonical_ip, AllowlistMode, IpAllowlist, LimitKey, LimitSpec, SizeError, SizeLimits,
    CLIENT_ADDRESS_HEADERS, PASSABLE_CLIENT_ADDRESS_HEADERS,
};
pub use guards::{RateLimitError, RateLimits};
pub use ratelimit::{KeyHasher, Limiter};

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
        assert_eq!(limits.check(6, std::iter::empty()), Err(SizeError::Uri));
        assert_eq!(
            limits.check(1, [(1, 1), (1, 1), (1, 1)].into_iter()),
            Err(SizeError::Headers)
        );
        assert_eq!(
            limits.check(1, [(5, 6)].into_iter()),
            Err(SizeError::Headers)
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
