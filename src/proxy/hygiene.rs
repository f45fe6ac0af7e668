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
mod tests;
