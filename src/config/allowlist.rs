//! IP allowlists (CIDR sets), compiled once into one hash set per prefix length, so a lookup
//! costs one masked hash probe per distinct prefix length in the list, whatever its size.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;

use ipnet::IpNet;

/// IPv4-mapped IPv6 (`::ffff:10.1.2.3`) compares as IPv4.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// What a miss does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllowlistMode {
    /// Refuse (403, audit `ip-not-allowed`), before any login redirect.
    Enforce,
    /// Forward, flag the audit record, count the miss.
    Report,
}

/// A compiled CIDR list.
#[derive(Debug, Clone)]
pub struct IpAllowlist {
    /// Enforce or report.
    pub mode: AllowlistMode,
    /// `(prefix length, networks masked to it)`, longest first.
    v4: Vec<(u8, Set<u32>)>,
    v6: Vec<(u8, Set<u128>)>,
    /// As written, for messages and `explain`.
    pub source: Vec<IpNet>,
}

impl IpAllowlist {
    /// Compiles `nets` (IPv4-mapped IPv6 networks are stored as IPv4).
    pub fn new(mode: AllowlistMode, nets: Vec<IpNet>) -> IpAllowlist {
        let mut v4: Vec<(u8, Set<u32>)> = Vec::new();
        let mut v6: Vec<(u8, Set<u128>)> = Vec::new();
        for net in &nets {
            match net {
                IpNet::V4(n) => insert(&mut v4, n.prefix_len(), u32::from(n.network()), mask4),
                IpNet::V6(n) => match n.network().to_ipv4_mapped() {
                    Some(v4net) if n.prefix_len() >= 96 => {
                        insert(&mut v4, n.prefix_len() - 96, u32::from(v4net), mask4)
                    }
                    _ => insert(&mut v6, n.prefix_len(), u128::from(n.network()), mask6),
                },
            }
        }
        v4.sort_by_key(|(len, _)| std::cmp::Reverse(*len));
        v6.sort_by_key(|(len, _)| std::cmp::Reverse(*len));
        IpAllowlist {
            mode,
            v4,
            v6,
            source: nets,
        }
    }

    /// True when `ip` is inside one of the networks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match canonical_ip(ip) {
            IpAddr::V4(a) => {
                let a = u32::from(a);
                self.v4
                    .iter()
                    .any(|(len, set)| set.contains(&mask4(a, *len)))
            }
            IpAddr::V6(a) => {
                let a = u128::from(a);
                self.v6
                    .iter()
                    .any(|(len, set)| set.contains(&mask6(a, *len)))
            }
        }
    }

    /// The verdict for a client address; an unknown address is never inside.
    pub fn admits(&self, ip: Option<IpAddr>) -> bool {
        ip.is_some_and(|ip| self.contains(ip))
    }
}

/// The sets hold networks from the configuration and are only probed with client addresses
/// (never filled from requests), so a fast multiplicative hash is safe here; SipHash made a
/// 1,000-prefix lookup three times slower.
type Set<T> = HashSet<T, BuildHasherDefault<NetHasher>>;

/// Fibonacci hashing of the integer form of an address.
#[derive(Default)]
struct NetHasher(u64);

impl Hasher for NetHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn write_u128(&mut self, n: u128) {
        self.write_u64(n as u64);
        self.write_u64((n >> 64) as u64);
    }
}

fn insert<T: std::hash::Hash + Eq + Copy>(
    lists: &mut Vec<(u8, Set<T>)>,
    len: u8,
    network: T,
    mask: fn(T, u8) -> T,
) {
    let key = mask(network, len);
    match lists.iter_mut().find(|(l, _)| *l == len) {
        Some((_, set)) => {
            set.insert(key);
        }
        None => {
            let mut set = Set::default();
            set.insert(key);
            lists.push((len, set));
        }
    }
}

fn mask4(a: u32, len: u8) -> u32 {
    match len {
        0 => 0,
        l if l >= 32 => a,
        l => a & (u32::MAX << (32 - l)),
    }
}

fn mask6(a: u128, len: u8) -> u128 {
    match len {
        0 => 0,
        l if l >= 128 => a,
        l => a & (u128::MAX << (128 - l)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(nets: &[&str]) -> IpAllowlist {
        IpAllowlist::new(
            AllowlistMode::Enforce,
            nets.iter().map(|n| n.parse().expect("cidr")).collect(),
        )
    }

    #[test]
    fn v4_v6_and_mapped_addresses() {
        let l = list(&[
            "10.0.0.0/8",
            "192.168.1.7/32",
            "2001:db8::/32",
            "::ffff:172.16.0.0/108",
        ]);
        for (ip, inside) in [
            ("10.1.2.3", true),
            ("11.0.0.1", false),
            ("192.168.1.7", true),
            ("192.168.1.8", false),
            ("::ffff:10.9.9.9", true),
            ("2001:db8:1::5", true),
            ("2001:db9::1", false),
            ("172.16.5.5", true),
            ("172.32.0.1", false),
            ("::1", false),
        ] {
            let ip: IpAddr = ip.parse().expect("ip");
            assert_eq!(l.contains(ip), inside, "{ip}");
        }
        assert!(!l.admits(None), "unknown address: never inside");
        let everyone = list(&["0.0.0.0/0"]);
        assert!(everyone.contains("8.8.8.8".parse().expect("ip")));
        assert!(!everyone.contains("2001:db8::1".parse().expect("ip")));
    }

    #[test]
    fn a_thousand_prefixes_agree_with_a_linear_scan() {
        let nets: Vec<IpNet> = (0..1000u32)
            .map(|i| {
                let len = 8 + (i % 25) as u8;
                let addr = std::net::Ipv4Addr::from(i.wrapping_mul(2_654_435_761));
                IpNet::new(IpAddr::V4(addr), len).expect("net").trunc()
            })
            .collect();
        let l = IpAllowlist::new(AllowlistMode::Enforce, nets.clone());
        for i in 0..20_000u32 {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(
                i.wrapping_mul(40_503).rotate_left(7),
            ));
            assert_eq!(l.contains(ip), nets.iter().any(|n| n.contains(&ip)), "{ip}");
        }
    }
}
