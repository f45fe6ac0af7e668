//! Many open streams at once: a revocation ends exactly the revoked user's, within a second.

use std::time::{Duration, Instant};

use crate::common::browser::sign_in_local;
use crate::common::{hash_password, Fixtures, Ports, Proxy, Upstream};

const PASSWORD: &str = "a test password";
const OPS_TOKEN: &str = "ops-0123456789abcdef0123456789abcdef";
const USERS: usize = 50;
const STREAMS_PER_USER: usize = 20;

fn open_streams(proxy: &Proxy) -> Option<usize> {
    proxy.metric("portcullis_streams_open")?.parse().ok()
}

#[tokio::test]
async fn a_thousand_streams_of_fifty_users_a_revoked_user_loses_exactly_theirs() {
    let fixtures = Fixtures::new();
    let upstream = Upstream::start();
    let ports = Ports::new();
    std::fs::write(fixtures.path("ops.token"), OPS_TOKEN).expect("write");
    let hash = hash_password(PASSWORD);
    let users: String = (0..USERS)
        .map(|i| format!("      - {{ username: u{i:02}, password_hash: \"{hash}\" }}\n"))
        .collect();
    let apps = format!(
        "  - id: chat\n    hosts: [a.test]\n    upstream: {}\n    access: {{ user_types: [external-user] }}\n",
        upstream.url()
    );
    let yaml = fixtures
        .config(&ports, "  pre_auth_rate_limit: { rate: off }\n", &apps)
        .replace(
            "session:\n",
            &format!(
                "identity_providers:\n  - id: corp\n    kind: local\n    users:\n{users}session:\n"
            ),
        )
        .replace(
            "admin:\n",
            "admin:\n  tokens: [{ name: ops, token: file:ops.token, scopes: [revoke] }]\n",
        );
    let proxy = Proxy::start(&fixtures, ports, &yaml);
    // HTTP/1.1: one connection per stream, as browsers' EventSource mostly has it.
    let ca = std::fs::read(&fixtures.ca).expect("ca");
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("pem"))
        .resolve("a.test", proxy.https())
        .http1_only()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let base = format!("https://a.test:{}", proxy.ports.https);
    let mut cookies = Vec::new();
    for i in 0..USERS {
        let user = format!("u{i:02}");
        cookies.push(sign_in_local(&http, &base, "corp", &user, PASSWORD, &[]).await);
    }

    // A thousand SSE answers, twenty per user, all open at once.
    let opens = (0..USERS * STREAMS_PER_USER).map(|n| {
        let (http, cookie, url) = (
            http.clone(),
            cookies[n % USERS].clone(),
            format!("{base}/slow-sse"),
        );
        async move {
            let r = http
                .get(url)
                .header("cookie", cookie)
                .header("accept", "text/event-stream")
                .send()
                .await
                .expect("sse");
            assert_eq!(r.status(), 200);
            (n % USERS, r)
        }
    });
    let mut streams = futures_util::future::join_all(opens).await;
    let started = Instant::now();
    while open_streams(&proxy) != Some(USERS * STREAMS_PER_USER) {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?} open",
            open_streams(&proxy)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let revoked_user = 7;
    let r = reqwest::Client::new()
        .post(format!(
            "http://127.0.0.1:{}/api/v1/revoke",
            proxy.ports.admin
        ))
        .bearer_auth(OPS_TOKEN)
        .json(&serde_json::json!({ "user": format!("u{revoked_user:02}") }))
        .send()
        .await
        .expect("revoke");
    assert_eq!(r.status(), 200);
    let revoked_at = Instant::now();
    let reads = streams.iter_mut().map(|(user, stream)| async move {
        if *user == revoked_user {
            // Ends: whatever was in flight, then the end, within a second.
            loop {
                match tokio::time::timeout(Duration::from_secs(3), stream.chunk()).await {
                    Ok(Ok(Some(_))) => continue,
                    Ok(Ok(None) | Err(_)) => return Some(revoked_at.elapsed()),
                    Err(_) => panic!("a revoked stream stayed open"),
                }
            }
        }
        // Goes on: its next event comes (one a second).
        let next = tokio::time::timeout(Duration::from_secs(3), stream.chunk()).await;
        assert!(
            matches!(next, Ok(Ok(Some(_)))),
            "a bystander's stream broke: {next:?}"
        );
        None
    });
    let ended: Vec<Duration> = futures_util::future::join_all(reads)
        .await
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(ended.len(), STREAMS_PER_USER);
    let slowest = ended.iter().max().copied().unwrap_or_default();
    assert!(
        slowest < Duration::from_millis(1200),
        "the last revoked stream ended after {slowest:?}"
    );
    assert_eq!(open_streams(&proxy), Some((USERS - 1) * STREAMS_PER_USER));
    eprintln!("1,000 streams of 50 users: the revoked user's 20 ended within {slowest:?}");
}
