//! Request-path normalisation: the one form that routing, policy and the upstream all see.
//!
//! Authorising one spelling of a path and forwarding another is the classic proxy bypass
//! (`/public/../admin`, `/%61dmin`, `//admin`). We normalise once, match on the result and
//! forward exactly that result.

use thiserror::Error;

/// Why a request path cannot be normalised; the client gets 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum PathError {
    /// The path does not start with `/` (origin-form is required).
    #[error("the request path must start with '/'")]
    NotAbsolute,
    /// A `%` not followed by two hex digits.
    #[error("the request path has an invalid percent-encoding")]
    BadPercentEncoding,
    /// NUL or another control character, raw or percent-encoded.
    #[error("the request path contains a control character")]
    ControlCharacter,
    /// An encoded `/` or `\`, or a raw `\`: servers disagree on whether these separate
    /// segments, so a path that uses them could be judged one way and served another.
    #[error("the request path contains an encoded or alternative path separator")]
    AmbiguousSeparator,
    /// A dot segment with parameters (`..;x`), which Java servers resolve like `..`.
    #[error("the request path contains a dot segment with parameters")]
    DotSegmentParameters,
}

/// Normalises a request path (no query string):
/// - percent-encoded unreserved characters (RFC 3986 §2.3) are decoded, other escapes are
///   kept with upper-case hex (`%2f` stays encoded: decoding it would change the segments);
/// - runs of `/` fold into one;
/// - `.` and `..` segments are removed (RFC 3986 §5.2.4), never climbing above `/`.
///
/// Refused (the client gets 400): `%2F`, `%5C` and `\` (Apache's `AllowEncodedSlashes Off`
/// does the same), and `.`/`..` segments carrying `;` parameters (Tomcat resolves
/// `/public/..;/admin` to `/admin`).
pub fn normalize_path(raw: &str) -> Result<String, PathError> {
    if !raw.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let decoded = decode_unreserved(raw)?;
    if decoded.contains('\\') || decoded.contains("%2F") || decoded.contains("%5C") {
        return Err(PathError::AmbiguousSeparator);
    }
    let dot_with_parameters = |segment: &str| {
        segment
            .split_once(';')
            .is_some_and(|(base, _)| matches!(base, "." | ".."))
    };
    if decoded.split('/').any(dot_with_parameters) {
        return Err(PathError::DotSegmentParameters);
    }
    let mut segments: Vec<&str> = Vec::with_capacity(8);
    let trailing_slash =
        decoded.ends_with('/') || decoded.ends_with("/.") || decoded.ends_with("/..");
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() || (trailing_slash && !segments.is_empty()) {
        out.push('/');
    }
    Ok(out)
}

fn decode_unreserved(raw: &str) -> Result<String, PathError> {
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b < 0x20 || b == 0x7f {
            return Err(PathError::ControlCharacter);
        }
        if b != b'%' {
            // Multi-byte UTF-8 is copied through unchanged; `raw` is already a valid str.
            let ch_len = utf8_len(b);
            out.push_str(
                raw.get(i..i + ch_len)
                    .ok_or(PathError::BadPercentEncoding)?,
            );
            i += ch_len;
            continue;
        }
        let hex = raw.get(i + 1..i + 3).ok_or(PathError::BadPercentEncoding)?;
        let value = u8::from_str_radix(hex, 16).map_err(|_| PathError::BadPercentEncoding)?;
        if !hex.bytes().all(|h| h.is_ascii_hexdigit()) {
            return Err(PathError::BadPercentEncoding);
        }
        if value < 0x20 || value == 0x7f {
            return Err(PathError::ControlCharacter);
        }
        if value.is_ascii_alphanumeric() || matches!(value, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(value));
        } else {
            out.push('%');
            out.push_str(&hex.to_ascii_uppercase());
        }
        i += 3;
    }
    Ok(out)
}

fn utf8_len(first: u8) -> usize {
    match first {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let cases = [
            ("/", "/"),
            ("/a/b", "/a/b"),
            ("/a/b/", "/a/b/"),
            ("//admin", "/admin"),
            ("/a//b///c", "/a/b/c"),
            ("/public/../admin", "/admin"),
            ("/public/%2e%2e/admin", "/admin"),
            ("/public/%2E%2E/admin", "/admin"),
            ("/a/./b", "/a/b"),
            ("/../../etc", "/etc"),
            ("/..", "/"),
            ("/a/..", "/"),
            ("/a/b/..", "/a/"),
            ("/%61dmin", "/admin"),
            ("/a;b=c", "/a;b=c"),
            ("/caf%C3%A9", "/caf%C3%A9"),
            ("/~user", "/~user"),
            ("/%7euser", "/~user"),
        ];
        for (input, want) in cases {
            assert_eq!(normalize_path(input).as_deref(), Ok(want), "input {input}");
        }
    }

    #[test]
    fn refusals() {
        assert_eq!(normalize_path("admin"), Err(PathError::NotAbsolute));
        assert_eq!(normalize_path("*"), Err(PathError::NotAbsolute));
        assert_eq!(normalize_path("/a%zz"), Err(PathError::BadPercentEncoding));
        assert_eq!(normalize_path("/a%2"), Err(PathError::BadPercentEncoding));
        assert_eq!(normalize_path("/a%+1"), Err(PathError::BadPercentEncoding));
        assert_eq!(normalize_path("/a%00b"), Err(PathError::ControlCharacter));
        assert_eq!(normalize_path("/a%0ab"), Err(PathError::ControlCharacter));
        assert_eq!(normalize_path("/a\tb"), Err(PathError::ControlCharacter));
        assert_eq!(normalize_path("/a%2fb"), Err(PathError::AmbiguousSeparator));
        assert_eq!(
            normalize_path("/static/..%2Fadmin"),
            Err(PathError::AmbiguousSeparator)
        );
        assert_eq!(
            normalize_path("/a%5c..%5cb"),
            Err(PathError::AmbiguousSeparator)
        );
        assert_eq!(
            normalize_path("/a\\..\\b"),
            Err(PathError::AmbiguousSeparator)
        );
        assert_eq!(
            normalize_path("/static/..;/admin"),
            Err(PathError::DotSegmentParameters)
        );
        assert_eq!(
            normalize_path("/static/.;x/admin"),
            Err(PathError::DotSegmentParameters)
        );
        assert_eq!(
            normalize_path("/static/%2e%2e;/admin"),
            Err(PathError::DotSegmentParameters)
        );
    }

    /// Random paths built from the pieces attackers use: whatever comes out is already
    /// normal (idempotent), has no dot segments or empty segments, and never panics.
    #[test]
    fn random_paths_normalise_to_a_fixed_point() {
        use rand::{Rng, SeedableRng};
        let pieces = [
            "/", "//", ".", "..", "%2e", "%2E%2e", "%2f", "%5c", "\\", "a", "%61", "~", "%7E", "%",
            "%0", "%zz", "%00", "é", "%C3%A9", "?", ";", "%25",
        ];
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
        for _ in 0..20_000 {
            let mut path = String::from("/");
            for _ in 0..rng.random_range(0..12) {
                path.push_str(pieces[rng.random_range(0..pieces.len())]);
            }
            let Ok(normal) = normalize_path(&path) else {
                continue;
            };
            assert_eq!(
                normalize_path(&normal).as_deref(),
                Ok(normal.as_str()),
                "not idempotent for {path:?}"
            );
            assert!(normal.starts_with('/'), "{path:?} -> {normal:?}");
            let interior = normal.strip_suffix('/').unwrap_or(&normal);
            for segment in interior.split('/').skip(1) {
                assert!(
                    !matches!(segment, "" | "." | ".."),
                    "{path:?} -> {normal:?}"
                );
            }
        }
    }
}
