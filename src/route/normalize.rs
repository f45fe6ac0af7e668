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
mod tests;
