use std::sync::Arc;

use super::*;

/// What the router routes in these tests: an app as far as routing sees it.
struct Entry {
    id: String,
    hosts: Vec<HostPattern>,
    path_prefix: String,
}

impl Routable for Entry {
    fn hosts(&self) -> &[HostPattern] {
        &self.hosts
    }

    fn path_prefix(&self) -> &str {
        &self.path_prefix
    }
}

fn router() -> Router<Entry> {
    let entry = |id: &str, host: &str, path_prefix: &str| {
        Arc::new(Entry {
            id: id.into(),
            hosts: vec![HostPattern::parse(host).expect("host pattern")],
            path_prefix: path_prefix.into(),
        })
    };
    Router::new(&[
        entry("chat", "chat.example.com", "/"),
        entry("chat-api", "chat.example.com", "/api"),
        entry("chat-api-admin", "chat.example.com", "/api/admin"),
        entry("tenants", "*.example.com", "/"),
        entry("deep", "*.eu.example.com", "/"),
        entry("prefixed", "prefixed.example.com", "/only"),
    ])
}

#[test]
fn host_then_longest_prefix() {
    let r = router();
    let id = |host: &str, path: &str| r.route(host, path).map(|a| a.id.clone());
    assert_eq!(id("chat.example.com", "/"), Some("chat".into()));
    assert_eq!(id("chat.example.com", "/apix"), Some("chat".into()));
    assert_eq!(id("chat.example.com", "/api"), Some("chat-api".into()));
    assert_eq!(id("chat.example.com", "/api/x"), Some("chat-api".into()));
    assert_eq!(
        id("chat.example.com", "/api/admin/users"),
        Some("chat-api-admin".into())
    );
    assert_eq!(id("CHAT.Example.COM:8443", "/"), Some("chat".into()));
    assert_eq!(id("chat.example.com.", "/"), Some("chat".into()));
    assert_eq!(id("acme.example.com", "/"), Some("tenants".into()));
    assert_eq!(id("a.b.example.com", "/"), Some("tenants".into()));
    assert_eq!(id("x.eu.example.com", "/"), Some("deep".into()));
    assert_eq!(id("example.com", "/"), None);
    assert_eq!(id("evil.com", "/"), None);
    assert_eq!(id("example.com.evil.com", "/"), None);
    assert_eq!(id("", "/"), None);
    // An exact host whose apps do not cover the path falls back to a matching wildcard.
    assert_eq!(id("prefixed.example.com", "/docs"), Some("tenants".into()));
    assert_eq!(
        id("prefixed.example.com", "/only/x"),
        Some("prefixed".into())
    );
    // Portcullis endpoints exist on every app host, whatever the prefixes.
    assert_eq!(
        r.route_host("prefixed.example.com").map(|a| a.id.as_str()),
        Some("prefixed")
    );
    assert_eq!(
        r.route_host("chat.example.com").map(|a| a.id.as_str()),
        Some("chat")
    );
    assert!(r.route_host("evil.com").is_none());
}

#[test]
fn host_normalisation() {
    assert_eq!(normalize_host("A.Test:443").as_deref(), Some("a.test"));
    assert_eq!(normalize_host("[::1]:8443").as_deref(), Some("[::1]"));
    assert_eq!(normalize_host("[::1").as_deref(), None);
    assert_eq!(normalize_host(":80").as_deref(), None);
}

#[test]
fn host_patterns() {
    assert_eq!(
        HostPattern::parse("Chat.Example.com"),
        Ok(HostPattern::Exact("chat.example.com".into()))
    );
    assert_eq!(
        HostPattern::parse("*.example.com"),
        Ok(HostPattern::Wildcard(".example.com".into()))
    );
    assert!(HostPattern::parse("chat.example.com:443").is_err());
    assert!(HostPattern::parse("*").is_err());
    assert!(HostPattern::parse("a..b").is_err());
    assert!(HostPattern::parse("a b").is_err());
    assert_eq!(
        HostPattern::parse("[::1]"),
        Ok(HostPattern::Exact("[::1]".into()))
    );
    assert!(HostPattern::parse("[nope]").is_err());
}
