//! Which app a request belongs to: host (exact, then longest `*.suffix`), then the longest
//! path prefix on a segment boundary. Built once from the config; lookups never allocate
//! for already-lower-case hosts.

mod authority;
mod endpoint;
mod glob;
mod normalize;

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

pub use authority::is_valid_authority;
pub use endpoint::Endpoint;
pub use glob::{GlobError, PathGlob};
pub use normalize::normalize_path;

/// A host an app answers to, as configured.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    /// `chat.example.com`
    Exact(String),
    /// `*.example.com`: any host ending in `.example.com` (one label or more), stored as the
    /// suffix including its leading dot.
    Wildcard(String),
}

/// Text that is not a host pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not a host name (use `chat.example.com` or `*.example.com`, no port)")]
pub struct HostPatternError {
    /// The text as written.
    pub text: String,
}

impl HostPattern {
    /// Parses a configured host name (lower-cased; ports are not part of a host pattern).
    pub fn parse(text: &str) -> Result<HostPattern, HostPatternError> {
        let lower = text.trim().to_ascii_lowercase();
        let (wildcard, name) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest.to_string()),
            None => (false, lower.clone()),
        };
        let valid = match name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
            Some(ipv6) => !wildcard && ipv6.parse::<std::net::Ipv6Addr>().is_ok(),
            None => {
                !name.is_empty()
                    && !name.starts_with('.')
                    && !name.ends_with('.')
                    && !name.contains("..")
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.'))
            }
        };
        if !valid {
            return Err(HostPatternError {
                text: text.to_string(),
            });
        }
        Ok(if wildcard {
            HostPattern::Wildcard(format!(".{name}"))
        } else {
            HostPattern::Exact(name)
        })
    }
}

/// What the router routes to: something served on host patterns under a path prefix.
/// (The config's apps; kept abstract so routing stays below the config.)
pub trait Routable {
    /// The host patterns it answers.
    fn hosts(&self) -> &[HostPattern];
    /// Its normalised path prefix (`/` for everything).
    fn path_prefix(&self) -> &str;
}

/// The routing table.
#[derive(Debug)]
pub struct Router<T> {
    exact: HashMap<String, Vec<Arc<T>>>,
    /// Longest suffix first.
    wildcard: Vec<(String, Vec<Arc<T>>)>,
}

impl<T: Routable> Router<T> {
    /// Builds the table; each candidate list is ordered longest path prefix first.
    pub fn new(apps: &[Arc<T>]) -> Router<T> {
        let mut router = Router {
            exact: HashMap::new(),
            wildcard: Vec::new(),
        };
        for app in apps {
            for host in app.hosts() {
                match host {
                    HostPattern::Exact(name) => router
                        .exact
                        .entry(name.clone())
                        .or_default()
                        .push(app.clone()),
                    HostPattern::Wildcard(suffix) => {
                        match router.wildcard.iter_mut().find(|(s, _)| s == suffix) {
                            Some((_, list)) => list.push(app.clone()),
                            None => router.wildcard.push((suffix.clone(), vec![app.clone()])),
                        }
                    }
                }
            }
        }
        let by_prefix = |list: &mut Vec<Arc<T>>| {
            list.sort_by_key(|app| std::cmp::Reverse(app.path_prefix().len()));
        };
        router.exact.values_mut().for_each(by_prefix);
        router.wildcard.iter_mut().for_each(|(_, l)| by_prefix(l));
        router
            .wildcard
            .sort_by_key(|(suffix, _)| std::cmp::Reverse(suffix.len()));
        router
    }

    /// The app for `host` (as sent: may carry a port or upper case) and a normalised `path`.
    ///
    /// Host patterns are tried most specific first (the exact name, then wildcards from the
    /// longest suffix); within one, the longest path prefix wins.
    pub fn route(&self, host: &str, path: &str) -> Option<&Arc<T>> {
        let host = normalize_host(host)?;
        let found = self
            .candidate_lists(&host)
            .flat_map(|list| list.iter())
            .find(|app| prefix_matches(app.path_prefix(), path));
        found
    }

    /// Any app on `host` (the one with the shortest prefix of the most specific pattern):
    /// Portcullis's own endpoints exist on every app host, whatever the app's prefix.
    pub fn route_host(&self, host: &str) -> Option<&Arc<T>> {
        let host = normalize_host(host)?;
        let found = self.candidate_lists(&host).find_map(|list| list.last());
        found
    }

    fn candidate_lists<'s, 'h>(
        &'s self,
        host: &'h str,
    ) -> impl Iterator<Item = &'s Vec<Arc<T>>> + use<'s, 'h, T> {
        let wildcards = self
            .wildcard
            .iter()
            .filter(move |(suffix, _)| host.len() > suffix.len() && host.ends_with(suffix.as_str()))
            .map(|(_, list)| list);
        self.exact.get(host).into_iter().chain(wildcards)
    }
}

/// `/chat` matches `/chat` and `/chat/x`, never `/chatter`; `/` matches everything.
fn prefix_matches(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// Lower-cases, drops the port and a trailing dot. `None` for an empty or absurd host.
pub fn normalize_host(host: &str) -> Option<Cow<'_, str>> {
    let without_port = if host.starts_with('[') {
        // IPv6 literal: keep through the closing bracket.
        &host[..=host.find(']')?]
    } else {
        host.rsplit_once(':').map_or(host, |(name, _)| name)
    };
    let name = without_port.strip_suffix('.').unwrap_or(without_port);
    if name.is_empty() || name.len() > 253 {
        return None;
    }
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        Some(Cow::Owned(name.to_ascii_lowercase()))
    } else {
        Some(Cow::Borrowed(name))
    }
}

#[cfg(test)]
mod tests;
