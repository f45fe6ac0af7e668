//! Header hygiene for the upstream request: what to remove before anything is injected.
//!
//! Applies to every request, anonymous or not. Names are compared normalised (ASCII
//! case-folded, `_` read as `-`) because some servers and frameworks treat
//! `X_Portcullis_User` and `x-portcullis-user` as the same header.

use crate::netguard;

/// Prefix of every header Portcullis owns.
pub const IDENTITY_PREFIX: &str = "x-portcullis-";

/// Hop-by-hop headers (RFC 9110 §7.6.1) that never travel upstream as sent. `Upgrade` and
/// `Connection` are re-added by the proxy for WebSocket upgrades.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "proxy-authenticate",
    "proxy-authorization",
];

/// Headers only believed from a trusted proxy; removed (then set by us) otherwise.
const FORWARDING: &[&str] = &[
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-request-id",
];

/// Lower-cases and maps `_` to `-` for comparison.
pub fn normalized_eq_prefix(name: &str, prefix: &str) -> bool {
    name.len() >= prefix.len()
        && name.bytes().zip(prefix.bytes()).all(|(a, b)| {
            let a = if a == b'_' {
                b'-'
            } else {
                a.to_ascii_lowercase()
            };
            a == b
        })
}

fn normalized_eq(name: &str, other: &str) -> bool {
    name.len() == other.len() && normalized_eq_prefix(name, other)
}

/// True for headers a client may never send upstream under any spelling.
pub fn is_identity_header(name: &str) -> bool {
    normalized_eq_prefix(name, IDENTITY_PREFIX)
}

/// Headers Portcullis sets itself; a client cannot remove them through `Connection:`.
fn is_protected(name: &str) -> bool {
    is_identity_header(name)
        || FORWARDING.iter().any(|f| normalized_eq(name, f))
        || netguard::CLIENT_ADDRESS_HEADERS
            .iter()
            .any(|f| normalized_eq(name, f))
        || normalized_eq(name, "host")
}

/// True for a client-address header (see [`netguard::CLIENT_ADDRESS_HEADERS`]) under any
/// spelling, unless a trusted peer sent it under its own name and it is in `passed`. A CDN
/// overwrites `CF-Connecting-IP` but forwards a client's `cf_connecting_ip` untouched, and
/// some frameworks read the one as the other: only the exact name may pass.
fn is_spoofable_address(name: &str, trusted_peer: bool, passed: &[String]) -> bool {
    netguard::CLIENT_ADDRESS_HEADERS
        .iter()
        .any(|h| normalized_eq(name, h))
        && !(trusted_peer && passed.iter().any(|p| name.eq_ignore_ascii_case(p)))
}

/// The names to remove from an upstream request, given all header names and the values
/// of its `Connection` headers. `trusted_peer` keeps forwarding headers from a trusted proxy,
/// and those client-address headers named in `passed` (`server.client_ip_headers`).
pub fn headers_to_remove<'a>(
    names: impl Iterator<Item = &'a str>,
    connection_values: &[&str],
    trusted_peer: bool,
    passed: &[String],
) -> Vec<String> {
    let named_by_connection: Vec<&str> = connection_values
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty() && !is_protected(t))
        .collect();
    let mut out: Vec<String> = Vec::new();
    for name in names {
        let remove = is_identity_header(name)
            || HOP_BY_HOP.iter().any(|h| normalized_eq(name, h))
            || named_by_connection.iter().any(|c| normalized_eq(name, c))
            || (!trusted_peer && FORWARDING.iter().any(|f| normalized_eq(name, f)))
            || is_spoofable_address(name, trusted_peer, passed);
        if remove && !out.iter().any(|o| o.eq_ignore_ascii_case(name)) {
            out.push(name.to_string());
        }
    }
    out
}

/// Removes Portcullis's cookies (the session cookie, its chunks and flow cookies all start
/// with `cookie_prefix`) from one `Cookie` header value. `None` = nothing left.
pub fn strip_own_cookies(value: &str, cookie_prefix: &str) -> Option<String> {
    let kept: Vec<&str> = value
        .split(';')
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .filter(|pair| {
            let name = pair.split_once('=').map_or(*pair, |(n, _)| n).trim();
            !name.starts_with(cookie_prefix)
        })
        .collect();
    (!kept.is_empty()).then(|| kept.join("; "))
}

/// True when a `Set-Cookie` value from the upstream would set one of our cookies.
pub fn sets_own_cookie(set_cookie: &str, cookie_prefix: &str) -> bool {
    set_cookie.trim_start().starts_with(cookie_prefix)
}

/// A request id from a trusted proxy is kept only if it is short and plain.
pub fn acceptable_request_id(value: &[u8]) -> bool {
    (8..=128).contains(&value.len())
        && value
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn removed(names: &[&str], connection: &[&str], trusted: bool) -> Vec<String> {
        let mut out = headers_to_remove(names.iter().copied(), connection, trusted, &[]);
        out.iter_mut().for_each(|n| *n = n.to_ascii_lowercase());
        out.sort();
        out
    }

    #[test]
    fn identity_headers_under_every_spelling() {
        let names = [
            "X-Portcullis-User",
            "x_portcullis_user",
            "X-PORTCULLIS-ROLES",
            "x-portcullis-assertion",
            "X_Portcullis-Entity",
            "x-portcullisx",
            "accept",
        ];
        assert_eq!(
            removed(&names, &[], true),
            vec![
                "x-portcullis-assertion",
                "x-portcullis-roles",
                "x-portcullis-user",
                "x_portcullis-entity",
                "x_portcullis_user"
            ]
        );
    }

    #[test]
    fn connection_cannot_strip_protected_headers() {
        let names = [
            "connection",
            "x-forwarded-for",
            "x-custom",
            "x-portcullis-assertion",
            "keep-alive",
        ];
        let got = removed(
            &names,
            &["x-portcullis-assertion, X-Forwarded-For, x-custom, host"],
            true,
        );
        // x-custom goes (named in Connection), x-forwarded-for stays for a trusted peer,
        // the identity header is removed for being an identity header, not because Connection named it.
        assert_eq!(
            got,
            vec![
                "connection",
                "keep-alive",
                "x-custom",
                "x-portcullis-assertion"
            ]
        );
    }

    #[test]
    fn forwarding_headers_only_from_trusted_peers() {
        let names = ["X-Forwarded-For", "X-Request-Id", "X-Forwarded-Proto"];
        assert_eq!(removed(&names, &[], false).len(), 3);
        assert!(removed(&names, &[], true).is_empty());
    }

    #[test]
    fn client_address_headers_under_every_spelling_unless_passed_from_a_trusted_proxy() {
        let names = [
            "True-Client-IP",
            "cf_connecting_ip",
            "CF-Connecting-IP",
            "X-REAL-IP",
            "x-client-ip",
            "X-Cluster-Client-Ip",
            "Fastly-Client-IP",
            "Forwarded",
            "accept",
        ];
        let all: Vec<String> = names[..8].iter().map(|n| n.to_ascii_lowercase()).collect();
        let mut all_sorted = all.clone();
        all_sorted.sort();
        assert_eq!(removed(&names, &[], false), all_sorted);
        assert_eq!(
            removed(&names, &[], true),
            all_sorted,
            "not listed: removed"
        );
        let passed = vec!["cf-connecting-ip".to_string()];
        let from_untrusted = headers_to_remove(names.iter().copied(), &[], false, &passed);
        assert_eq!(from_untrusted.len(), 8, "a client never passes them");
        let mut from_trusted: Vec<String> =
            headers_to_remove(names.iter().copied(), &[], true, &passed)
                .into_iter()
                .map(|n| n.to_ascii_lowercase())
                .collect();
        from_trusted.sort();
        // Only the exact name passes; `cf_connecting_ip` is not the listed header (a client
        // could add it behind the CDN).
        let expected: Vec<String> = all_sorted
            .iter()
            .filter(|n| n.as_str() != "cf-connecting-ip")
            .cloned()
            .collect();
        assert_eq!(from_trusted, expected);
    }

    #[test]
    fn own_cookies_are_removed() {
        let prefix = "__Host-portcullis";
        assert_eq!(
            strip_own_cookies("a=1; __Host-portcullis=xyz; b=2", prefix).as_deref(),
            Some("a=1; b=2")
        );
        assert_eq!(
            strip_own_cookies("__Host-portcullis.1=x;__Host-portcullis-flow=y", prefix),
            None
        );
        assert_eq!(
            strip_own_cookies("theme=dark", prefix).as_deref(),
            Some("theme=dark")
        );
        assert!(sets_own_cookie("__Host-portcullis=evil; Path=/", prefix));
        assert!(!sets_own_cookie("session=ok", prefix));
    }

    #[test]
    fn request_ids() {
        assert!(acceptable_request_id(b"0123456789abcdef"));
        assert!(!acceptable_request_id(b"short"));
        assert!(!acceptable_request_id(b"has space in it"));
        assert!(!acceptable_request_id(b"<script>alert(1)</script>"));
    }
}
