//! Path globs for `public_paths` (and, later, per-path rules), compiled once at load.
//!
//! Syntax, matched segment by segment on the normalised path:
//! - a literal segment matches itself exactly;
//! - `*` inside a segment matches any run of characters except `/`;
//! - a final `**` segment matches any remainder, including nothing (`/static/**` matches
//!   `/static`, `/static/` and `/static/a/b`).

/// A pattern that is not a path glob; each variant holds the pattern as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GlobError {
    /// It does not start with `/`.
    #[error("`{0}` must start with '/'")]
    NotAbsolute(String),
    /// `**` somewhere other than as the whole last segment.
    #[error("`{0}`: `**` is only allowed as the last segment")]
    DoubleStarNotLast(String),
    /// `//` before the end.
    #[error("`{0}` has an empty segment (`//`)")]
    EmptySegment(String),
    /// A `.` or `..` segment, which a normalised request path never has.
    #[error("`{0}` has a dot segment; paths are matched normalised")]
    DotSegment(String),
}

/// A compiled path glob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathGlob {
    source: String,
    segments: Vec<Segment>,
    open_ended: bool,
    /// Every matching path starts with this (the literal text up to the first `*`): one
    /// `starts_with` rejects most paths before segment matching, which keeps an app with
    /// hundreds of rules cheap.
    prefix: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// Pieces split at `*`: first must be a prefix, last a suffix, the rest in order.
    Wildcard(Vec<String>),
}

impl PathGlob {
    /// Compiles `pattern`, which must start with `/`; `**` is allowed only as the last segment.
    pub fn parse(pattern: &str) -> Result<PathGlob, GlobError> {
        let pattern_string = || pattern.to_string();
        let Some(rest) = pattern.strip_prefix('/') else {
            return Err(GlobError::NotAbsolute(pattern_string()));
        };
        let mut parts: Vec<&str> = rest.split('/').collect();
        let open_ended = parts.last() == Some(&"**");
        if open_ended {
            parts.pop();
        }
        let mut segments = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            if part.contains("**") {
                return Err(GlobError::DoubleStarNotLast(pattern_string()));
            }
            if part.is_empty() && i + 1 != parts.len() {
                return Err(GlobError::EmptySegment(pattern_string()));
            }
            if matches!(*part, "." | "..") {
                return Err(GlobError::DotSegment(pattern_string()));
            }
            segments.push(if part.contains('*') {
                Segment::Wildcard(part.split('*').map(str::to_string).collect())
            } else {
                Segment::Literal(part.to_string())
            });
        }
        let mut prefix = String::new();
        for segment in &segments {
            prefix.push('/');
            match segment {
                Segment::Literal(text) => prefix.push_str(text),
                Segment::Wildcard(pieces) => {
                    prefix.push_str(pieces.first().map_or("", String::as_str));
                    break;
                }
            }
        }
        Ok(PathGlob {
            source: pattern.to_string(),
            segments,
            open_ended,
            prefix,
        })
    }

    /// The pattern as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Matches a normalised path.
    pub fn matches(&self, path: &str) -> bool {
        if !path.starts_with(self.prefix.as_str()) {
            return false;
        }
        let rest = path.strip_prefix('/').unwrap_or(path);
        let mut actual = rest.split('/');
        for want in &self.segments {
            let Some(got) = actual.next() else {
                return false;
            };
            if !segment_matches(want, got) {
                return false;
            }
        }
        if self.open_ended {
            return true;
        }
        // Exact length: `/a` matches `/a` but not `/a/b`; a trailing slash is tolerated.
        match actual.next() {
            None => true,
            Some("") => actual.next().is_none(),
            Some(_) => false,
        }
    }
}

fn segment_matches(want: &Segment, got: &str) -> bool {
    match want {
        Segment::Literal(text) => text == got,
        Segment::Wildcard(pieces) => {
            let (first, rest) = match pieces.split_first() {
                Some(split) => split,
                None => return true,
            };
            let Some(mut remaining) = got.strip_prefix(first.as_str()) else {
                return false;
            };
            let Some((last, middle)) = rest.split_last() else {
                return true;
            };
            for piece in middle {
                match remaining.find(piece.as_str()) {
                    Some(at) => remaining = &remaining[at + piece.len()..],
                    None => return false,
                }
            }
            remaining.len() >= last.len() && remaining.ends_with(last.as_str())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn glob(p: &str) -> PathGlob {
        PathGlob::parse(p).expect("valid glob")
    }

    #[test]
    fn table() {
        let cases = [
            ("/healthz", "/healthz", true),
            ("/healthz", "/healthz/", true),
            ("/healthz", "/healthz/x", false),
            ("/healthz", "/healthzx", false),
            ("/static/**", "/static", true),
            ("/static/**", "/static/", true),
            ("/static/**", "/static/app.js", true),
            ("/static/**", "/static/a/b/c", true),
            ("/static/**", "/staticx/a", false),
            ("/**", "/", true),
            ("/**", "/anything/at/all", true),
            ("/api/*/status", "/api/v1/status", true),
            ("/api/*/status", "/api/v1/x/status", false),
            ("/files/*.png", "/files/cat.png", true),
            ("/files/*.png", "/files/cat.png.exe", false),
            ("/files/*.png", "/files/.png", true),
            ("/a*b*c", "/abc", true),
            ("/a*b*c", "/axxbyyc", true),
            ("/a*b*c", "/axxc", false),
            ("/api/tools/t1/**", "/api/tools/t1", true),
            ("/api/tools/t1/**", "/api/tools/t19/run", false),
            ("/api/*/run", "/api/x/run", true),
            ("/", "/", true),
            ("/", "/x", false),
            ("/a/b", "/a", false),
        ];
        for (pattern, path, want) in cases {
            assert_eq!(glob(pattern).matches(path), want, "{pattern} vs {path}");
        }
    }

    #[test]
    fn refusals() {
        assert!(PathGlob::parse("static/**").is_err());
        assert!(PathGlob::parse("/a/**/b").is_err());
        assert!(PathGlob::parse("/a//b").is_err());
        assert!(PathGlob::parse("/a/../b").is_err());
    }
}
