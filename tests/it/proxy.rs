//! End-to-end tests of the proxy core: the real binary, a real upstream, real TLS.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::upstream::{headers_of, SSE_EVENTS, SSE_GAP};
use crate::common::{audit_records, client, raw_http, run_ok, Fixtures, Ports, Proxy, Upstream};

fn apps(upstream: &Upstream) -> String {
    let url = upstream.url();
    format!(
        r#"  - id: main
    hosts: [localhost, a.test]
    upstream: {url}
    public_paths: ["/public/**", "/sse", "/ws", "/set-cookie"]
  - id: api
    hosts: [localhost, a.test]
    path_prefix: /api
    upstream: {url}
    public_paths: ["/api/**"]
  - id: wild
    hosts: ["*.wild.test"]
    upstream: {url}
    public_paths: ["/**"]
  - id: off
    hosts: [b.test]
    enabled: false
    upstream: {url}
    public_paths: ["/**"]
  - id: plain
    hosts: [127.0.0.1]
    upstream: {url}
    allow_plain_http: true
    public_paths: ["/**"]
"#
    )
}

fn start(fixtures: &Fixtures, upstream: &Upstream, extra_server: &str) -> Proxy {
    let ports = Ports::new();
    Proxy::start(
        fixtures,
        ports,
        &fixtures.config(&ports, extra_server, &apps(upstream)),
    )
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn routes_by_host_and_longest_prefix_and_refuses_the_rest() {
    let fixtures = Fixtures::new();
    let upstream = Upstream::start();
    let proxy = start(&fixtures, &upstream, "");
    let http = client(&fixtures, &proxy);
    let port = proxy.ports.https;

    // A public path on the main app is forwarded, normalised.
    let r = http
        .get(format!("https://a.test:{port}/public//x/./y"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    let echo: Value = r.json().await.expect("json");
    assert_eq!(echo["uri"], "/public/x/y");

    // /api belongs to the api app, where everything under /api is public.
    let r = http
        .get(format!("https://a.test:{port}/api/v1/models?x=1"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.expect("json")["uri"],
        "/api/v1/models?x=1"
    );

    // Wildcard host.
    let r = http
        .get(format!("https://x.wild.test:{port}/anything"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);

    let hits = upstream.hits();
    // Protected path on the main app: no session, so 401 JSON for an API client.
    let r = http
        .get(format!("https://a.test:{port}/private"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()["www-authenticate"],
        "Bearer realm=\"portcullis\""
    );
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["error"], "login_required");
    assert!(body["request_id"].as_str().is_some_and(|id| id.len() == 32));
    // A browser navigation is sent to the sign-in page.
    let r = http
        .get(format!("https://a.test:{port}/private"))
        .header("accept", "text/html")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["location"], "/.portcullis/login?rd=%2Fprivate");
    // Unknown host: 404 from Portcullis, never a default upstream (and never a redirect).
    let raw = raw_http(
        proxy.ports.http,
        b"GET / HTTP/1.1\r\nHost: unknown.test\r\nConnection: close\r\n\r\n",
    );
    assert!(raw.starts_with("HTTP/1.1 404"), "{raw}");
    // Disabled app: 503.
    let r = http
        .get(format!("https://b.test:{port}/"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 503);
    assert_eq!(
        r.headers()["content-length"],
        r.content_length().expect("len").to_string().as_str()
    );
    // A path that climbs out of the public prefix is judged where it lands.
    let raw = raw_http(
        proxy.ports.http,
        b"GET /public/../private HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    );
    assert!(
        raw.contains("\"uri\":\"/private\""),
        "plain app forwards the normalised path: {raw}"
    );
    // An unknown Portcullis endpoint is never forwarded.
    let r = http
        .get(format!("https://a.test:{port}/.portcullis/nope"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 404);
    assert_eq!(
        upstream.hits(),
        hits + 1,
        "only the plain-app request reached the upstream"
    );
}

#[tokio::test]
async fn identity_headers_hop_by_hop_and_own_cookies_never_reach_the_upstream() {
    let fixtures = Fixtures::new();
    let upstream = Upstream::start();
    let proxy = start(&fixtures, &upstream, "");
    let http = client(&fixtures, &proxy);
    let r = http
        .get(format!("https://a.test:{}/public/echo", proxy.ports.https))
        .header("X-Portcullis-User", "mallory")
        .header("x_portcullis_user", "mallory")
        .header("X-PORTCULLIS-ROLES", "admin")
        .header("X-Portcullis-Assertion", "forged.jwt.value")
        .header(
            "Connection",
            "x-portcullis-assertion, x-forwarded-for, x-drop-me",
        )
        .header("x-drop-me", "1")
        .header("x-keep-me", "1")
        .header(
            "Cookie",
            "theme=dark; __Host-portcullis=stolen; __Host-portcullis.1=chunk",
        )
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    let headers = headers_of(&r.json().await.expect("json"));
    for (name, _) in &headers {
        let normalised = name.to_ascii_lowercase().replace('_', "-");
        assert!(
            !normalised.starts_with("x-portcullis-"),
            "identity header {name} was forwarded"
        );
    }
    assert_eq!(
        header(&headers, "x-drop-me"),
        None,
        "a header named in Connection is hop-by-hop"
    );
    assert_eq!(header(&headers, "x-keep-me"), Some("1"));
    assert_eq!(header(&headers, "cookie"), Some("theme=dark"));
    assert_eq!(
        header(&headers, "x-forwarded-for"),
        Some("127.0.0.1"),
        "Connection cannot remove X-Forwarded-For"
    );
    assert_eq!(header(&headers, "x-forwarded-proto"), Some("https"));
    assert!(header(&headers, "x-request-id").is_some_and(|id| id.len() == 32));

    // The upstream cannot set our session cookie.
    let r = http
        .get(format!("https://a.test:{}/set-cookie", proxy.ports.https))
        .send()
        .await
        .expect("send");
    let cookies: Vec<_> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(cookies, vec!["app=1; Path=/".to_string()]);
}

#[tokio::test]
async fn forwarded_headers_are_believed_only_from_trusted_proxies() {
    let fixtures = Fixtures::new();
    let upstream = Upstream::start();
    let send = |proxy: &Proxy| {
        let http = client(&fixtures, proxy);
        let url = format!("https://a.test:{}/public/xff", proxy.ports.https);
        async move {
            let r = http
                .get(url)
                .header("X-Forwarded-For", "203.0.113.5")
                .header("X-Forwarded-Proto", "gopher")
                .header("X-Request-Id", "trusted-request-id-123")
                .header("X-Real-IP", "6.6.6.6")
                .send()
                .await
                .expect("send");
            headers_of(&r.json::<Value>().await.expect("json"))
        }
    };
    // Untrusted peer: everything it claims is replaced.
    let mut untrusted = start(&fixtures, &upstream, "");
    let headers = send(&untrusted).await;
    assert_eq!(header(&headers, "x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(header(&headers, "x-forwarded-proto"), Some("https"));
    assert_eq!(
        header(&headers, "x-real-ip"),
        Some("127.0.0.1"),
        "the client's X-Real-IP is replaced by the address Portcullis decided on"
    );
    assert_ne!(
        header(&headers, "x-request-id"),
        Some("trusted-request-id-123")
    );
    untrusted.stop();

    // The loopback peer is a trusted proxy: its chain is extended and its request id kept.
    let trusted_fixtures = Fixtures::new();
    let mut trusted = start(
        &trusted_fixtures,
        &upstream,
        "  trusted_proxies: [127.0.0.0/8]\n",
    );
    let http = client(&trusted_fixtures, &trusted);
    let r = http
        .get(format!("https://a.test:{}/public/xff", trusted.ports.https))
        .header("X-Forwarded-For", "198.51.100.1")
        .header("X-Forwarded-For", "203.0.113.5")
        .header("X-Request-Id", "trusted-request-id-123")
        .send()
        .await
        .expect("send");
    let headers = headers_of(&r.json::<Value>().await.expect("json"));
    assert_eq!(
        header(&headers, "x-forwarded-for"),
        Some("198.51.100.1, 203.0.113.5, 127.0.0.1")
    );
    assert_eq!(
        header(&headers, "x-request-id"),
        Some("trusted-request-id-123")
    );
    assert_eq!(header(&headers, "x-real-ip"), Some("203.0.113.5"));
    assert_eq!(
        header(&headers, "forwarded"),
        Some(
            format!(
                "for=203.0.113.5;proto=https;host=\"a.test:{}\"",
                trusted.ports.https
            )
            .as_str()
        )
    );
    trusted.stop();
    let records = audit_records(&trusted_fixtures.audit_log());
    let access = records
        .iter()
        .find(|r| r["event"] == "access")
        .expect("access record");
    assert_eq!(
        access["client_ip"], "203.0.113.5",
        "the audit names the real client"
    );
    assert_eq!(access["request_id"], "trusted-request-id-123");
}

#[tokio::test]
async fn sse_events_arrive_one_by_one() {
    let fixtures = Fixtures::new();
    let upstream = Upstream::start();
    let proxy = start(&fixtures, &upstream, "");
    let http = client(&fixtures, &proxy);
    for url in [
        format!("https://a.test:{}/sse", proxy.ports.https),
        format!("http://127.0.0.1:{}/sse", proxy.ports.http),
    ] {
        let started = Instant::now();
        let mut response = http.get(&url).send().await.expect("send");
        assert_eq!(response.status(), 200);
        let mut arrivals = Vec::new();
        let mut text = String::new();
        while let Some(chunk) = response.chunk().await.expect("chunk") {
            let s = String::from_utf8_lossy(&chunk).into_owned();
            for _ in 0..s.matches("data: ").count() {
                arrivals.push(started.elapsed());
            }
            text.push_str(&s);
        }
        assert_eq!(arrivals.len(), SSE_EVENTS, "{text}");
        let gap = SSE_GAP;
        // The first event arrives long before the stream ends, and events keep the
        // upstream's spacing: nothing is held back and released in a batch.
        assert!(arrivals[0] < gap * 2, "first event after {:?}", arrivals[0]);
        for pair in arrivals.windows(2) {
            assert!(pair[1] - pair[0] >= gap / 2, "events bunched: {arrivals:?}");
        }
    }
}

#[tokio::test]
async fn websocket_echo_through_tls() {
    use crate::common::wss;
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let fixtures = Fixtures::new();
    let upstream = Upstream::start();
    let proxy = start(&fixtures, &upstream, "");
    let (mut ws, response) = wss(&fixtures.ca, proxy.ports.https, "/ws", None).await;
    assert_eq!(response.status(), 101);
    for text in ["hello", "streaming", "world"] {
        ws.send(Message::text(text)).await.expect("send");
        let echoed = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("echo in time")
            .expect("message")
            .expect("ok");
        assert_eq!(echoed.into_text().expect("text").as_str(), text);
    }
}

#[tokio::test]
async fn plain_http_redirects_to_https_unless_the_app_allows_it() {
    let fixtures = Fixtures::new();
    let upstream = Upstream::start();
    let proxy = start(&fixtures, &upstream, "");
    let raw = raw_http(
        proxy.ports.http,
        b"GET /public/a?q=1 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    assert!(raw.starts_with("HTTP/1.1 308"), "{raw}");
    assert!(
        raw.to_ascii_lowercase().contains(&format!(
            "location: https://localhost:{}/public/a?q=1",
            proxy.ports.https
        )),
        "{raw}"
    );
    let hits = upstream.hits();
    let raw = raw_http(
        proxy.ports.http,
        b"GET /x HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    );
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    assert!(raw.contains("\"x-forwarded-proto\",\"http\""), "{raw}");
    assert_eq!(upstream.hits(), hits + 1);
}

#[tokio::test]
async fn tls_versions_and_http2() {
    let fixtures = Fixtures::new();
    let upstream = Upstream::start();
    let proxy = start(&fixtures, &upstream, "");
    let handshake = |flag: &str| {
        std::process::Command::new("openssl")
            .args([
                "s_client",
                "-connect",
                &proxy.https().to_string(),
                "-servername",
                "a.test",
                flag,
                "-cipher",
                "DEFAULT@SECLEVEL=0",
            ])
            .stdin(std::process::Stdio::null())
            .output()
            .map(|o| {
                o.status.success()
                    && String::from_utf8_lossy(&o.stdout).contains("BEGIN CERTIFICATE")
            })
            .expect("openssl s_client runs")
    };
    assert!(!handshake("-tls1"), "TLS 1.0 must be refused");
    assert!(!handshake("-tls1_1"), "TLS 1.1 must be refused");
    assert!(handshake("-tls1_2"), "TLS 1.2 must be accepted");
    assert!(handshake("-tls1_3"), "TLS 1.3 must be accepted");

    // HTTP/2 (ALPN h2): routed by the :authority, as HTTP/2 has no Host header.
    let http = client(&fixtures, &proxy);
    let r = http
        .get(format!("https://a.test:{}/public/h2", proxy.ports.https))
        .version(reqwest::Version::HTTP_2)
        .send()
        .await
        .expect("send");
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    let headers = headers_of(&r.json().await.expect("json"));
    assert_eq!(
        header(&headers, "host"),
        Some(format!("a.test:{}", proxy.ports.https).as_str())
    );
}

#[tokio::test]
async fn malformed_requests_get_a_clear_answer_and_nothing_breaks() {
    let fixtures = Fixtures::new();
    let upstream = Upstream::start();
    let proxy = start(&fixtures, &upstream, "");
    let port = proxy.ports.http;
    for request in [
        &b"GET /a%zz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"[..],
        b"GET /a%00b HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        b"GET * HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        b"GET /public/..;/private HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        b"GET /public/..%2Fprivate HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        b"GET /public\\..\\private HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    ] {
        let raw = raw_http(port, request);
        assert!(raw.starts_with("HTTP/1.1 400"), "{raw}");
        assert!(
            raw.to_ascii_lowercase().contains("content-length:"),
            "{raw}"
        );
    }
    let garbage = raw_http(port, b"\x16\x03\x01garbage\r\n\r\n");
    assert!(
        garbage.is_empty() || garbage.starts_with("HTTP/1.1 4"),
        "{garbage}"
    );
    let huge = format!(
        "GET /x HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(200_000)
    );
    let raw = raw_http(port, huge.as_bytes());
    assert!(
        raw.starts_with("HTTP/1.1 431"),
        "oversized headers refused: {}",
        &raw[..raw.len().min(200)]
    );
    let many: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    let raw = raw_http(
        port,
        format!("GET /x HTTP/1.1\r\nHost: 127.0.0.1\r\n{many}Connection: close\r\n\r\n").as_bytes(),
    );
    assert!(
        raw.starts_with("HTTP/1.1 431"),
        "too many headers refused: {}",
        &raw[..raw.len().min(200)]
    );
    let long_uri = format!(
        "GET /{} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        "a".repeat(10_000)
    );
    assert!(raw_http(port, long_uri.as_bytes()).starts_with("HTTP/1.1 414"));
    assert_eq!(upstream.hits(), 0, "nothing malformed was forwarded");
    // Still serving.
    let ok = raw_http(
        port,
        b"GET /fine HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    );
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
}

#[tokio::test]
async fn admin_endpoints_and_metrics() {
    let fixtures = Fixtures::new();
    let upstream = Upstream::start();
    let proxy = start(&fixtures, &upstream, "");
    let http = client(&fixtures, &proxy);
    http.get(format!("https://a.test:{}/public/m", proxy.ports.https))
        .send()
        .await
        .expect("send");
    http.get(format!("https://a.test:{}/private", proxy.ports.https))
        .send()
        .await
        .expect("send");
    let admin = format!("http://127.0.0.1:{}", proxy.ports.admin);
    let plain = reqwest::Client::new();
    assert_eq!(
        plain
            .get(format!("{admin}/healthz"))
            .send()
            .await
            .expect("healthz")
            .status(),
        200
    );
    assert_eq!(
        plain
            .get(format!("{admin}/readyz"))
            .send()
            .await
            .expect("readyz")
            .status(),
        200
    );
    let metrics = plain
        .get(format!("{admin}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics
            .contains(r#"portcullis_requests_total{app="main",decision="allow",status="200"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"portcullis_denied_total{app="main",reason="login-required"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("portcullis_audit_queue_depth"),
        "{metrics}"
    );
    assert!(
        metrics.contains("portcullis_request_duration_seconds_bucket"),
        "{metrics}"
    );
}

#[tokio::test]
async fn certificates_are_chosen_by_sni() {
    let fixtures = Fixtures::new();
    let upstream = Upstream::start();
    // A second certificate for c.test from a different CA.
    let second = fixtures.path("second");
    run_ok(&[
        "keys",
        "dev-cert",
        "--out",
        second.to_str().expect("utf8"),
        "--name",
        "c.test",
    ]);
    let ports = Ports::new();
    let yaml = fixtures.config(&ports, "", &apps(&upstream)).replace(
        "    certificates: [",
        &format!(
            "    certificates: [{{ cert: \"{}\", key: \"{}\" }}, ",
            second.join("server.crt").display(),
            second.join("server.key").display()
        ),
    );
    // The first listed certificate is the default; put ours first again so unknown names
    // still get a.test's certificate.
    let yaml = {
        let (head, rest) = yaml.split_once("    certificates: [").expect("certs line");
        let (list, tail) = rest.split_once("]\n").expect("end of list");
        let mut entries: Vec<&str> = list.split("}, ").collect();
        entries.reverse();
        let list = entries
            .iter()
            .map(|e| e.trim_end_matches('}'))
            .map(|e| format!("{e}}}"))
            .collect::<Vec<_>>()
            .join(", ");
        format!("{head}    certificates: [{list}]\n{tail}")
    };
    let proxy = Proxy::start(&fixtures, ports, &yaml);
    let client_trusting = |ca: &std::path::Path| {
        reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(
                reqwest::Certificate::from_pem(&std::fs::read(ca).expect("ca")).expect("pem"),
            )
            .resolve("a.test", proxy.https())
            .resolve("c.test", proxy.https())
            .build()
            .expect("client")
    };
    let second_ca = client_trusting(&second.join("ca.crt"));
    let first_ca = client_trusting(&fixtures.ca);
    let port = proxy.ports.https;
    // c.test is answered with the second certificate (only its CA verifies it)...
    let r = second_ca
        .get(format!("https://c.test:{port}/"))
        .send()
        .await
        .expect("c.test verifies with the second CA");
    assert_eq!(r.status(), 404, "no app serves c.test");
    assert!(first_ca
        .get(format!("https://c.test:{port}/"))
        .send()
        .await
        .is_err());
    // ...and a.test with the first.
    assert!(first_ca
        .get(format!("https://a.test:{port}/public/x"))
        .send()
        .await
        .is_ok());
    assert!(second_ca
        .get(format!("https://a.test:{port}/public/x"))
        .send()
        .await
        .is_err());
}

#[tokio::test]
async fn hsts_on_https_answers_and_handshake_failures_are_counted() {
    let fixtures = Fixtures::new();
    let upstream = Upstream::start();
    let proxy = start(
        &fixtures,
        &upstream,
        "  hsts: { max_age: 180d, include_subdomains: true }\n",
    );
    let http = client(&fixtures, &proxy);
    let port = proxy.ports.https;
    let expected = "max-age=15552000; includeSubDomains";
    let forwarded = http
        .get(format!("https://a.test:{port}/public/x"))
        .send()
        .await
        .expect("send");
    assert_eq!(forwarded.headers()["strict-transport-security"], expected);
    let synthetic = http
        .get(format!("https://a.test:{port}/private"))
        .send()
        .await
        .expect("send");
    assert_eq!(synthetic.headers()["strict-transport-security"], expected);
    let plain = raw_http(
        proxy.ports.http,
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    );
    assert!(
        !plain
            .to_ascii_lowercase()
            .contains("strict-transport-security"),
        "never over plain HTTP: {plain}"
    );

    // A TLS 1.1 client fails its handshake and the failure is counted.
    let _ = std::process::Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &proxy.https().to_string(),
            "-tls1_1",
            "-cipher",
            "DEFAULT@SECLEVEL=0",
        ])
        .stdin(std::process::Stdio::null())
        .output();
    let _ = raw_http(proxy.ports.https, b"this is not a TLS client hello\r\n\r\n");
    let admin = format!("http://127.0.0.1:{}/metrics", proxy.ports.admin);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let metrics = reqwest::get(&admin)
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        let failures = metrics
            .lines()
            .find_map(|l| l.strip_prefix("portcullis_tls_handshake_failures_total "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        if failures >= 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "handshake failures not counted:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every convention a backend may read the client address from, under odd spellings.
const CLIENT_ADDRESS_HEADERS: &[&str] = &[
    "True-Client-IP",
    "CF-Connecting-IP",
    "X-Real-IP",
    "X-Client-IP",
    "X-Cluster-Client-IP",
    "Fastly-Client-IP",
    "Forwarded",
    "cf_connecting_ip",
    "X_REAL_IP",
];

fn with_client_address_headers(path: &str, xff: Option<&str>) -> Vec<u8> {
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for name in CLIENT_ADDRESS_HEADERS {
        request.push_str(&format!("{name}: 6.6.6.6\r\n"));
    }
    if let Some(xff) = xff {
        request.push_str(&format!("X-Forwarded-For: {xff}\r\n"));
    }
    request.push_str("\r\n");
    request.into_bytes()
}

fn echoed_headers(raw: &str) -> Vec<(String, String)> {
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or_default();
    headers_of(&serde_json::from_str(body).expect("echo json"))
}

#[tokio::test]
async fn client_address_headers_never_pass_from_clients_and_backends_read_one_truth() {
    let fixtures = Fixtures::new();
    let upstream = Upstream::start();
    let mut proxy = start(&fixtures, &upstream, "");
    let raw = raw_http(
        proxy.ports.http,
        &with_client_address_headers("/addr", None),
    );
    let headers = echoed_headers(&raw);
    let forged: Vec<_> = headers
        .iter()
        .filter(|(_, v)| v.contains("6.6.6.6"))
        .collect();
    assert!(
        forged.is_empty(),
        "forged client addresses reached the upstream: {forged:?}"
    );
    assert_eq!(header(&headers, "x-real-ip"), Some("127.0.0.1"));
    assert_eq!(header(&headers, "x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(
        header(&headers, "forwarded"),
        Some("for=127.0.0.1;proto=http;host=127.0.0.1")
    );
    proxy.stop();

    // Behind a trusted CDN, the one header it is listed to pass arrives; the rest do not.
    let trusted_fixtures = Fixtures::new();
    let mut trusted = start(
        &trusted_fixtures,
        &upstream,
        "  trusted_proxies: [127.0.0.0/8]\n  client_ip_headers: [CF-Connecting-IP]\n",
    );
    let raw = raw_http(
        trusted.ports.http,
        &with_client_address_headers("/addr", Some("203.0.113.9")),
    );
    let headers = echoed_headers(&raw);
    let passed: Vec<_> = headers
        .iter()
        .filter(|(_, v)| v.contains("6.6.6.6"))
        .map(|(k, _)| k.as_str())
        .collect();
    assert_eq!(passed, vec!["cf-connecting-ip"], "{headers:?}");
    assert_eq!(header(&headers, "x-real-ip"), Some("203.0.113.9"));
    assert_eq!(
        header(&headers, "forwarded"),
        Some("for=203.0.113.9;proto=http;host=127.0.0.1")
    );
    trusted.stop();
}

#[tokio::test]
async fn malformed_or_missing_host_is_refused_with_bad_host() {
    let fixtures = Fixtures::new();
    let upstream = Upstream::start();
    let mut proxy = start(&fixtures, &upstream, "");
    let before = upstream.hits();
    let requests: Vec<String> = [
        "127.0.0.1:99999",
        "127.0.0.1:019443",
        "127.0.0.1:+19443",
        "127.0.0.1:0",
        "user@127.0.0.1",
        "127.0.0.1/evil",
        "127.0.0.1:",
        "[::1",
    ]
    .iter()
    .map(|host| format!("GET /x HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"))
    .chain([
        "GET /x HTTP/1.1\r\nConnection: close\r\n\r\n".to_string(),
        "GET /x HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.test\r\nConnection: close\r\n\r\n"
            .to_string(),
    ])
    .collect();
    for request in &requests {
        let raw = raw_http(proxy.ports.http, request.as_bytes());
        assert!(raw.starts_with("HTTP/1.1 400"), "{request:?}: {raw}");
    }
    assert_eq!(upstream.hits(), before, "nothing forwarded");
    // HTTP/1.0 may omit Host: no app, not a bad request.
    let raw = raw_http(proxy.ports.http, b"GET /x HTTP/1.0\r\n\r\n");
    assert!(raw.starts_with("HTTP/1.1 404"), "{raw}");
    // A well-formed host with a port still routes.
    let raw = raw_http(
        proxy.ports.http,
        b"GET /x HTTP/1.1\r\nHost: 127.0.0.1:80\r\nConnection: close\r\n\r\n",
    );
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    proxy.stop();
    let refused = audit_records(&fixtures.audit_log())
        .into_iter()
        .filter(|r| r["reason"] == "bad-host")
        .count();
    // Userinfo and a repeated Host are refused by Pingora's parser already (400 before any
    // Portcullis code runs, so without an audit record); every other one is audited.
    assert_eq!(
        refused,
        requests.len() - 2,
        "each refusal audited as bad-host"
    );
}

#[tokio::test]
async fn an_idle_websocket_outlives_the_body_timeout_and_ends_at_its_own() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let fixtures = Fixtures::new();
    let upstream = Upstream::start();
    let ports = Ports::new();
    let apps = format!(
        "  - id: chat\n    hosts: [127.0.0.1]\n    upstream: {}\n    allow_plain_http: true\n    public_paths: [\"/ws\"]\n    timeouts: {{ read: 1s, websocket_idle: 4s }}\n",
        upstream.url()
    );
    let yaml = fixtures.config(&ports, "  limits:\n    body_idle_timeout: 1s\n", &apps);
    let _proxy = Proxy::start(&fixtures, ports, &yaml);
    let url = format!("ws://127.0.0.1:{}/ws", ports.http);
    let (mut ws, response) = tokio_tungstenite::connect_async(url)
        .await
        .expect("websocket upgrade");
    assert_eq!(response.status(), 101);
    for (text, quiet_before) in [("before", 0), ("after 2.5 s of silence", 2500)] {
        // Quiet both ways for longer than the body idle timeout and the upstream read timeout.
        tokio::time::sleep(Duration::from_millis(quiet_before)).await;
        ws.send(Message::text(text)).await.expect("send");
        let echoed = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("echo in time")
            .expect("open")
            .expect("message");
        assert_eq!(echoed.into_text().expect("text").as_str(), text);
    }
    // Then quiet past the WebSocket idle timeout: the proxy closes it.
    let quiet = Instant::now();
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => continue,
            }
        }
    })
    .await;
    assert!(end.is_ok(), "closed after websocket_idle");
    let waited = quiet.elapsed();
    assert!(
        waited >= Duration::from_secs(3),
        "closed at the WebSocket idle timeout, not before: {waited:?}"
    );
}

#[tokio::test]
async fn clients_leaving_a_stream_early_are_counted_not_logged_as_errors() {
    let fixtures = Fixtures::new();
    let upstream = Upstream::start();
    let ports = Ports::new();
    // `info` so that an ERROR (or a WARN) from Pingora's own log would show.
    let yaml = fixtures
        .config(&ports, "", &apps(&upstream))
        .replace("level: warn", "level: info");
    let mut proxy = Proxy::start(&fixtures, ports, &yaml);
    for _ in 0..5 {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", ports.http)).expect("connect");
        std::io::Write::write_all(&mut stream, b"GET /sse HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .expect("write");
        let mut first = [0u8; 256];
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let n = std::io::Read::read(&mut stream, &mut first).expect("first event");
        assert!(
            String::from_utf8_lossy(&first[..n]).contains("200"),
            "streaming started"
        );
        // The tab closes mid-answer.
        drop(stream);
    }
    // The proxy notices at its next write (events come every 300 ms).
    let metrics_line = |text: &str| {
        text.lines()
            .find(|l| l.starts_with("portcullis_downstream_closed_early_total{app=\"plain\"}"))
            .map(str::to_string)
    };
    let mut line = None;
    for _ in 0..50 {
        let metrics = raw_http(
            ports.admin,
            b"GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n",
        );
        line = metrics_line(&metrics);
        if line.as_deref().is_some_and(|l| l.ends_with(" 5")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        line.as_deref(),
        Some("portcullis_downstream_closed_early_total{app=\"plain\"} 5")
    );
    let logs = proxy.logs();
    // (The harness's readiness probe opens the HTTPS port without TLS: that ERROR is Pingora's
    // handshake report, counted in portcullis_tls_handshake_failures_total.)
    let errors: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("ERROR") && !l.contains("handshake"))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    assert!(!logs.contains("Prematurely"), "{logs}");
}
