//! Is a request's `Host` (or HTTP/2 `:authority`) well formed? Routing and every URL
//! Portcullis builds (redirects, `X-Forwarded-Host`, `Forwarded`) trust it, so a value that is
//! not a host and an optional port is refused (400, `bad-host`) before anything else runs.
//!
//! RFC 9110 §7.2 / RFC 3986 §3.2: `host [ ":" port ]` where host is an IP-literal (`[v6]`), an
//! IPv4 address or a reg-name (unreserved, sub-delims, percent-encoded octets). No userinfo
//! (`user@host`, which RFC 9110 forbids in `Host`). The port is 1–65535 in plain digits
//! without leading zeros: `019443`, `+19443` and `99999` are not ports, and a backend that
//! parses them differently than we do must never see them.

/// True when `authority` is `host[:port]` as defined in the module docs.
pub fn is_valid_authority(authority: &str) -> bool {
    let (host, port) = match authority.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((literal, after)) => {
                if literal.parse::<std::net::Ipv6Addr>().is_err() {
                    return false;
                }
                match after {
                    "" => return true,
                    _ => match after.strip_prefix(':') {
                        Some(port) => return is_valid_port(port),
                        None => return false,
                    },
                }
            }
            None => return false,
        },
        None => match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    is_reg_name(host) && port.is_none_or(is_valid_port)
}

/// A non-empty reg-name (which also covers IPv4 addresses).
fn is_reg_name(host: &str) -> bool {
    let bytes = host.as_bytes();
    if bytes.is_empty() {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = |at: usize| bytes.get(at).is_some_and(u8::is_ascii_hexdigit);
                if !(hex(i + 1) && hex(i + 2)) {
                    return false;
                }
                i += 3;
                continue;
            }
            b if b.is_ascii_alphanumeric() => {}
            b'-' | b'.' | b'_' | b'~' => {}
            b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=' => {}
            _ => return false,
        }
        i += 1;
    }
    true
}

fn is_valid_port(port: &str) -> bool {
    !port.is_empty()
        && port.len() <= 5
        && port.bytes().all(|b| b.is_ascii_digit())
        && !port.starts_with('0')
        && port.parse::<u32>().is_ok_and(|p| (1..=65535).contains(&p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_ports_that_are_well_formed() {
        for ok in [
            "localhost",
            "chat.example.com",
            "chat.example.com:443",
            "127.0.0.1:19443",
            "127.0.0.1:1",
            "127.0.0.1:65535",
            "[::1]",
            "[::1]:8443",
            "[2001:db8::17]:443",
            "xn--bcher-kva.example",
            "under_score.example",
            "pct%41encoded",
        ] {
            assert!(is_valid_authority(ok), "{ok} should be accepted");
        }
    }

    #[test]
    fn ports_hosts_and_userinfo_that_are_not() {
        for bad in [
            "",
            ":443",
            "127.0.0.1:",
            "127.0.0.1:99999",
            "127.0.0.1:65536",
            "127.0.0.1:0",
            "127.0.0.1:019443",
            "127.0.0.1:+19443",
            "127.0.0.1:-1",
            "127.0.0.1: 443",
            "127.0.0.1:44 3",
            "127.0.0.1:443:443",
            "user@chat.example.com",
            "user:pass@chat.example.com",
            "chat.example.com/evil",
            "chat.example.com\\evil",
            "chat example.com",
            "chat.example.com\t",
            "chat\"quote",
            "<script>",
            "bad%4",
            "bad%zz",
            "[::1",
            "[not-v6]",
            "[::1]x",
            "[::1]:0",
            "[::1]:08443",
            "::1",
            "évil.example",
        ] {
            assert!(!is_valid_authority(bad), "{bad:?} should be refused");
        }
    }
}
