//! Where a user may be sent after login or logout: only a path on the same host.
//!
//! Open redirects turn a trusted login page into a phishing tool. Anything that a browser
//! could read as another origin is refused: `//evil`, `/\evil`, `/%09/evil` (browsers drop
//! tabs and newlines), `https:evil`, `/%2F%2Fevil` and other encodings of the same.

/// Returns `rd` if it is a safe same-host path (with optional query), else `None`.
pub fn safe_return_path(rd: &str) -> Option<&str> {
    if rd.is_empty() || rd.len() > 2048 || !rd.starts_with('/') {
        return None;
    }
    // Check the raw text and its percent-decoded form (decoded repeatedly, so double
    // encoding does not hide a second slash).
    let mut text = rd.to_string();
    for _ in 0..3 {
        if !plain_path(&text) {
            return None;
        }
        let decoded = percent_decode(&text)?;
        if decoded == text {
            break;
        }
        text = decoded;
    }
    plain_path(&text).then_some(rd)
}

fn plain_path(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.first() == Some(&b'/')
        && !matches!(bytes.get(1), Some(b'/' | b'\\'))
        && !text.contains('\\')
        && !text.chars().any(|c| c.is_control() || c.is_whitespace())
        && !text.contains("://")
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::safe_return_path;

    #[test]
    fn same_host_paths_pass() {
        for ok in ["/", "/chat", "/chat?x=1&y=%2Fz", "/a/b#frag", "/caf%C3%A9"] {
            assert_eq!(safe_return_path(ok), Some(ok), "{ok}");
        }
    }

    #[test]
    fn open_redirect_tricks_are_refused() {
        for bad in [
            "",
            "//evil.com",
            "/\\evil.com",
            "\\\\evil.com",
            "/%09/evil.com",
            "/%0a/evil.com",
            "/\t/evil.com",
            "https:evil.com",
            "https://evil.com",
            "evil.com",
            "/%2F%2Fevil.com",
            "/%2f/evil.com",
            "/%5Cevil.com",
            "/%252F%252Fevil.com",
            "/x/../\\evil",
            "//user@evil.com",
            "/redirect?to=https://evil.com",
            "/%",
            "/%zz",
            " /chat",
            "/chat\r\nSet-Cookie: x=1",
        ] {
            assert_eq!(safe_return_path(bad), None, "{bad:?}");
        }
    }
}
