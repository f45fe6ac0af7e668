//! Network guards end to end: IP allowlists (enforce and report, IPv4, IPv6, mapped, through
//! trusted proxies, spoofing ignored), identity-aware rate limits, the pre-authentication
//! limit, and their counters. No refused request reaches the upstream.

use std::io::Write;

use reqwest::header::COOKIE;

use crate::common::browser::sign_in_local;
use crate::common::{
    audit_records, client, hash_password, raw_http, try_raw_http, Fixtures, Ports, Proxy, Upstream,
};

const PASSWORD: &str = "a test password";

fn start(fixtures: &Fixtures, upstream: &Upstream, server: &str, apps: &str) -> Proxy {
    let ports = Ports::new();
    let users = format!(
        "identity_providers:\n  - id: corp\n    kind: local\n    users:\n      - {{ username: alice, password_hash: \"{h}\", user_type: internal-user, entity: acme }}\n      - {{ username: bob, password_hash: \"{h}\", entity: acme }}\n      - {{ username: carol, password_hash: \"{h}\", entity: globex }}\n",
        h = hash_password(PASSWORD)
    );
    let apps = apps.replace("UPSTREAM", &upstream.url());
    let yaml = fixtures
        .config(&ports, server, &apps)
        .replace("session:\n", &format!("{users}session:\n"));
    Proxy::start(fixtures, ports, &yaml)
}

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    /// A request from `ip` (as a trusted proxy would report it in X-Forwarded-For).
    async fn get(&self, path: &str, xff: &str, cookie: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.base))
            .header("x-forwarded-for", xff)
            .header(COOKIE, cookie)
            .header("accept", "application/json")
            .send()
            .await
            .expect("request")
    }

    /// Signs `user` in from `xff`; the session cookie header.
    async fn sign_in(&self, user: &str, xff: &str) -> String {
        let headers = [("x-forwarded-for", xff)];
        sign_in_local(&self.http, &self.base, "corp", user, PASSWORD, &headers).await
    }
}

const OFFICE: &str = r#"  - id: office
    hosts: [a.test]
    upstream: UPSTREAM
    public_paths: [/public]
    ip_allowlist: { cidrs: [10.0.0.0/8, "2001:db8::/32"] }
    access: { user_types: [internal-user, external-user] }
    rate_limits:
      - { key: user, rate: 60/min, burst: 3 }
      - { key: entity, rate: 60/min, burst: 5 }
    rules:
      - name: reports
        paths: [/reports/**]
        ip_allowlist: { mode: report, cidrs: [10.1.0.0/16] }
"#;

#[tokio::test]
async fn allowlists_and_rate_limits_through_a_trusted_proxy() {
    let fixtures = Fixtures::new();
    let upstream = Upstream::start();
    let server =
        "  trusted_proxies: [127.0.0.1/32]\n  pre_auth_rate_limit: { rate: 60/min, burst: 5 }\n";
    let mut proxy = start(&fixtures, &upstream, server, OFFICE);
    let c = Client {
        http: client(&fixtures, &proxy),
        base: format!("https://a.test:{}", proxy.ports.https),
    };

    // Outsiders are refused before any login redirect, on every path (sign-in included).
    for (xff, path) in [
        ("192.0.2.1", "/chat"),
        ("192.0.2.1", "/public"),
        ("192.0.2.1", "/.portcullis/login?idp=corp"),
        ("2001:db9::1", "/chat"),
        ("10.9.9.9, 192.0.2.1", "/chat"),
    ] {
        let r = c.get(path, xff, "").await;
        assert_eq!(r.status(), 403, "{xff} {path}");
    }
    // Insiders still need a session: the allowlist never replaces authentication.
    for xff in [
        "10.1.2.3",
        "::ffff:10.1.2.3",
        "2001:db8::5",
        "192.0.2.1, 10.9.9.9",
    ] {
        let r = c.get("/chat", xff, "").await;
        assert_eq!(r.status(), 401, "{xff}");
    }
    let browser = c
        .http
        .get(format!("{}/chat", c.base))
        .header("x-forwarded-for", "10.1.2.3")
        .header("accept", "text/html")
        .send()
        .await
        .expect("navigate");
    assert_eq!(
        browser.status(),
        302,
        "an allowlisted browser is sent to sign in"
    );
    assert_eq!(c.get("/public", "10.1.2.3", "").await.status(), 200);
    assert_eq!(upstream.hits(), 1, "only the public path was forwarded");

    // Per-user limit (burst 3) and per-entity limit (burst 5).
    let alice = c.sign_in("alice", "10.1.0.1").await;
    let bob = c.sign_in("bob", "10.1.0.2").await;
    let carol = c.sign_in("carol", "10.1.0.3").await;
    let hits = upstream.hits();
    for _ in 0..3 {
        assert_eq!(c.get("/chat", "10.1.0.1", &alice).await.status(), 200);
    }
    let r = c.get("/chat", "10.1.0.1", &alice).await;
    assert_eq!(r.status(), 429, "alice is over her limit");
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .expect("retry-after")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry), "{retry}");
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["error"], "rate_limited");
    // bob shares alice's entity: two more requests fit the entity's burst of 5, then 429.
    assert_eq!(c.get("/chat", "10.1.0.2", &bob).await.status(), 200);
    assert_eq!(c.get("/chat", "10.1.0.2", &bob).await.status(), 200);
    assert_eq!(
        c.get("/chat", "10.1.0.2", &bob).await.status(),
        429,
        "entity-wide"
    );
    // carol (another entity) is unaffected.
    assert_eq!(c.get("/chat", "10.1.0.3", &carol).await.status(), 200);
    assert_eq!(
        upstream.hits(),
        hits + 6,
        "no refused request was forwarded"
    );

    // Report mode: forwarded, flagged.
    let r = c.get("/reports/q3", "10.2.0.1", &carol).await;
    assert_eq!(r.status(), 200);

    // Pre-authentication limit: a flood of callbacks, then of forged cookies.
    let mut statuses = Vec::new();
    for _ in 0..7 {
        let r = c
            .get("/.portcullis/oidc/callback?state=x&code=y", "10.3.3.3", "")
            .await;
        statuses.push(r.status().as_u16());
    }
    assert_eq!(&statuses[5..], &[429, 429], "{statuses:?}");
    let mut statuses = Vec::new();
    for _ in 0..7 {
        let r = c
            .get("/chat", "10.4.4.4", "__Host-portcullis=1.1.k.garbage")
            .await;
        statuses.push(r.status().as_u16());
    }
    assert_eq!(&statuses[..5], &[401; 5], "{statuses:?}");
    assert_eq!(&statuses[5..], &[429, 429], "{statuses:?}");

    let metrics = reqwest::get(format!("http://127.0.0.1:{}/metrics", proxy.ports.admin))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for needle in [
        "portcullis_rate_limited_total{app=\"office\",key=\"user\"} 1",
        "portcullis_rate_limited_total{app=\"office\",key=\"entity\"} 1",
        "portcullis_rate_limited_total{app=\"office\",key=\"ip\"} 4",
        "portcullis_ip_allowlist_reported_total{app=\"office\"} 1",
        "portcullis_denied_total{app=\"office\",reason=\"ip-not-allowed\"} 5",
        "portcullis_auth_failures_total{idp=\"-\",reason=\"state-mismatch\"}",
    ] {
        assert!(metrics.contains(needle), "{needle}\n{metrics}");
    }

    proxy.stop();
    let records = audit_records(&fixtures.audit_log());
    let count = |reason: &str| records.iter().filter(|r| r["reason"] == reason).count();
    assert_eq!(count("ip-not-allowed"), 5);
    assert_eq!(count("rate-limited"), 6);
    assert!(records
        .iter()
        .any(|r| r["path"] == "/reports/q3" && r["ip_reported"] == true && r["rule"] == "reports"));
}

#[tokio::test]
async fn forwarded_for_from_an_untrusted_peer_is_ignored_by_the_server_allowlist() {
    let fixtures = Fixtures::new();
    let upstream = Upstream::start();
    let server = "  ip_allowlist: { cidrs: [10.0.0.0/8] }\n";
    let apps =
        "  - id: open\n    hosts: [a.test]\n    upstream: UPSTREAM\n    public_paths: [\"/**\"]\n";
    let proxy = start(&fixtures, &upstream, server, apps);
    let c = Client {
        http: client(&fixtures, &proxy),
        base: format!("https://a.test:{}", proxy.ports.https),
    };
    // The peer is 127.0.0.1 and not a trusted proxy: its X-Forwarded-For is not believed.
    let r = c.get("/", "10.1.1.1", "").await;
    assert_eq!(r.status(), 403);
    let r = c
        .http
        .get(format!("https://b.test:{}/", proxy.ports.https))
        .send()
        .await
        .expect("unknown host");
    assert_eq!(
        r.status(),
        403,
        "before routing: outsiders learn nothing about hosts"
    );
    assert_eq!(upstream.hits(), 0);
}

/// A client that sends its headers a byte at a time is cut off at `header_timeout`, while a
/// normal client on another connection is served meanwhile; WebSocket connections are not
/// held to the deadline after their upgrade (tests/it/proxy.rs streams over them).
#[tokio::test]
async fn a_slowloris_client_is_cut_off_while_others_are_served() {
    use std::io::Read;
    use std::time::{Duration, Instant};
    let fixtures = Fixtures::new();
    let upstream = Upstream::start();
    let server = "  limits: { header_timeout: 2s }\n";
    let apps = "  - id: open\n    hosts: [a.test]\n    upstream: UPSTREAM\n    allow_plain_http: true\n    public_paths: [\"/**\"]\n";
    let proxy = start(&fixtures, &upstream, server, apps);
    let port = proxy.ports.http;
    let slow = std::thread::spawn(move || {
        let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        conn.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        let started = Instant::now();
        let request = b"GET / HTTP/1.1\r\nHost: a.test\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        for byte in request.iter() {
            if conn.write_all(&[*byte]).is_err() {
                return (started.elapsed(), true);
            }
            let mut buf = [0u8; 256];
            match conn.read(&mut buf) {
                Ok(0) => return (started.elapsed(), true),
                Ok(_) => return (started.elapsed(), false),
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => return (started.elapsed(), true),
            }
            std::thread::sleep(Duration::from_millis(150));
        }
        (started.elapsed(), false)
    });
    std::thread::sleep(Duration::from_millis(500));
    let normal = raw_http(
        port,
        b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
    );
    assert!(normal.starts_with("HTTP/1.1 200"), "{normal}");
    let (after, closed) = slow.join().expect("slow client");
    assert!(closed, "the slow client was cut off");
    assert!(
        after >= Duration::from_millis(1900) && after < Duration::from_secs(5),
        "cut off at the deadline, not before or much later: {after:?}"
    );
}

/// At most `max_connections_per_ip` connections at once from one address; one more is closed
/// at once, and a slot frees up when a connection ends.
#[tokio::test]
async fn connections_per_address_are_capped() {
    use std::io::Read;
    use std::time::Duration;
    let fixtures = Fixtures::new();
    let upstream = Upstream::start();
    let server = "  limits: { max_connections_per_ip: 2 }\n";
    let apps = "  - id: open\n    hosts: [a.test]\n    upstream: UPSTREAM\n    allow_plain_http: true\n    public_paths: [\"/**\"]\n";
    let proxy = start(&fixtures, &upstream, server, apps);
    let port = proxy.ports.http;
    let open = || {
        let conn = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        conn.set_read_timeout(Some(Duration::from_millis(500)))
            .expect("timeout");
        conn
    };
    let first = open();
    let second = open();
    std::thread::sleep(Duration::from_millis(200));
    let mut third = open();
    let mut buf = [0u8; 16];
    let third_read = third.read(&mut buf);
    assert!(
        matches!(third_read, Ok(0))
            || matches!(&third_read, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "the third connection is closed: {third_read:?}"
    );
    drop(first);
    std::thread::sleep(Duration::from_millis(200));
    let answer = raw_http(
        port,
        b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
    );
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "a slot freed up: {answer}"
    );
    drop(second);
}

/// A load balancer speaking the PROXY protocol (v1 or v2) on the plain-HTTP listener: the
/// client address it reports is the one allowlists, limits and X-Forwarded-For see; a
/// connection without the header, or from a peer that is not a trusted proxy, is closed.
#[tokio::test]
async fn proxy_protocol_from_a_trusted_load_balancer() {
    let fixtures = Fixtures::new();
    let upstream = Upstream::start();
    let ports = Ports::new();
    let apps = "  - id: open\n    hosts: [a.test]\n    upstream: UPSTREAM\n    allow_plain_http: true\n    public_paths: [\"/**\"]\n    ip_allowlist: { cidrs: [192.0.2.0/24, \"2001:db8::/32\"] }\n"
        .replace("UPSTREAM", &upstream.url());
    let listen = format!("listen: [\"127.0.0.1:{}\"]\n", ports.http);
    let yaml = fixtures
        .config(&ports, "  trusted_proxies: [127.0.0.1/32]\n", &apps)
        .replacen(&listen, &format!("{listen}    proxy_protocol: true\n"), 1);
    let proxy = Proxy::start(&fixtures, ports, &yaml);
    let port = proxy.ports.http;
    let get = b"GET /echo HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n";
    let send = |header: &[u8]| try_raw_http(port, &[header, &get[..]].concat()).unwrap_or_default();

    let v1 = send(b"PROXY TCP4 192.0.2.7 127.0.0.1 5555 80\r\n");
    assert!(v1.starts_with("HTTP/1.1 200"), "{v1}");
    assert!(
        v1.contains("192.0.2.7"),
        "the upstream sees the client in X-Forwarded-For: {v1}"
    );
    let outsider = send(b"PROXY TCP4 203.0.113.1 127.0.0.1 5555 80\r\n");
    assert!(outsider.starts_with("HTTP/1.1 403"), "{outsider}");
    let mut v2 = vec![
        0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A, 0x21, 0x21, 0, 36,
    ];
    let mut block = [0u8; 36];
    block[..2].copy_from_slice(&[0x20, 0x01]);
    block[2..4].copy_from_slice(&[0x0d, 0xb8]);
    block[15] = 9;
    block[32..34].copy_from_slice(&4000u16.to_be_bytes());
    v2.extend_from_slice(&block);
    let v6 = send(&v2);
    assert!(
        v6.starts_with("HTTP/1.1 200") && v6.contains("2001:db8::9"),
        "{v6}"
    );
    let bare = send(b"");
    assert!(
        bare.is_empty(),
        "no PROXY header: closed without an answer: {bare}"
    );
    assert_eq!(upstream.hits(), 2);
}

/// Portcullis's own endpoints read at most `max_form_bytes` of body: 413 beyond, never more.
#[tokio::test]
async fn oversized_forms_to_own_endpoints_get_413() {
    let fixtures = Fixtures::new();
    let upstream = Upstream::start();
    let server = "  limits: { max_form_bytes: 1024 }\n";
    let apps = "  - id: chat\n    hosts: [a.test]\n    upstream: UPSTREAM\n    access: { user_types: [internal-user] }\n";
    let proxy = start(&fixtures, &upstream, server, apps);
    let c = Client {
        http: client(&fixtures, &proxy),
        base: format!("https://a.test:{}", proxy.ports.https),
    };
    let big = "x".repeat(2000);
    let r = c
        .http
        .post(format!("{}/.portcullis/login", c.base))
        .header("origin", c.base.clone())
        .form(&[("username", big.as_str())])
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 413);
    let small = c
        .http
        .post(format!("{}/.portcullis/login", c.base))
        .header("origin", c.base.clone())
        .form(&[("username", "x")])
        .send()
        .await
        .expect("post");
    assert_eq!(small.status(), 403, "read, then refused by the CSRF check");
    assert_eq!(upstream.hits(), 0);
}

/// A request body that stalls longer than `body_idle_timeout` ends the connection.
#[tokio::test]
async fn a_stalled_request_body_is_cut_off() {
    use std::io::Read;
    use std::time::{Duration, Instant};
    let fixtures = Fixtures::new();
    let upstream = Upstream::start();
    let server = "  limits: { body_idle_timeout: 1s }\n";
    let apps = "  - id: open\n    hosts: [a.test]\n    upstream: UPSTREAM\n    allow_plain_http: true\n    public_paths: [\"/**\"]\n";
    let proxy = start(&fixtures, &upstream, server, apps);
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", proxy.ports.http)).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    conn.write_all(
        b"POST /upload HTTP/1.1\r\nHost: a.test\r\nContent-Length: 100\r\n\r\nonly a little",
    )
    .expect("write");
    let started = Instant::now();
    let mut answer = Vec::new();
    let _ = conn.read_to_end(&mut answer);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "closed after the body idle timeout, not Pingora's 60 s: {waited:?}"
    );
}
