//! Shared state on a real redis-server (`store.kind: redis`): replicas behave as one.

use std::time::{Duration, Instant};

use reqwest::header::COOKIE;

use crate::common::browser::{
    set_cookie, sign_in_local, sign_out, Jar, CSRF_COOKIE, SESSION_COOKIE,
};
use crate::common::redis::{Redis, REDIS_PASSWORD};
use crate::common::{client, free_port, hash_password, raw_http, Fixtures, Ports, Proxy, Upstream};

pub(crate) const PASSWORD: &str = "a test password";
/// One replica: its own ports, pid file and audit file; the public URL, session key and
/// certificate of `shared` (replicas of one deployment share them).
fn replica(shared: &Fixtures, own: &Fixtures, upstream: &Upstream, redis: &Redis) -> Proxy {
    let url = format!("redis://127.0.0.1:{}/0", redis.port);
    replica_at(shared, own, upstream, &url)
}

/// A replica whose `store.url` is `url_spec` as written (a URL, or `env:`/`file:`).
pub(crate) fn replica_at(
    shared: &Fixtures,
    own: &Fixtures,
    upstream: &Upstream,
    url_spec: &str,
) -> Proxy {
    replica_with(shared, own, upstream, &format!("  url: \"{url_spec}\"\n"))
}

/// A replica whose `store:` is `kind: redis`, `key_prefix: "t:"` and `servers`: more keys
/// of `store:`, each line indented by two spaces (`url`, `cluster`, `sentinel`, `tls`).
pub(crate) fn replica_with(
    shared: &Fixtures,
    own: &Fixtures,
    upstream: &Upstream,
    servers: &str,
) -> Proxy {
    let ports = Ports::new();
    let users = format!(
        "identity_providers:\n  - id: corp\n    kind: local\n    users:\n      - {{ username: alice, password_hash: \"{}\" }}\n",
        hash_password(PASSWORD)
    );
    let apps = format!(
        "  - id: chat\n    hosts: [a.test]\n    upstream: {}\n    access: {{ user_types: [external-user] }}\nstore:\n  kind: redis\n{servers}  key_prefix: \"t:\"\n",
        upstream.url(),
    );
    let yaml = own.replica_config(shared, &ports, &users, &apps);
    Proxy::start(own, ports, &yaml)
}

pub(crate) fn readyz(proxy: &Proxy) -> String {
    raw_http(
        proxy.ports.admin,
        b"GET /readyz HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n",
    )
}

/// Signs the session of `cookie` out at the replica `on`, as a browser does.
pub(crate) async fn sign_out_on(on: &reqwest::Client, cookie: &str) {
    let mut jar = Jar::new();
    let session = cookie.trim_start_matches(&format!("{SESSION_COOKIE}="));
    jar.insert(SESSION_COOKIE.into(), session.to_string());
    assert_eq!(sign_out(on, "https://a.test", &mut jar).await.status(), 200);
}

/// Waits until the replica `on` refuses `cookie` (401), at most `limit`.
pub(crate) async fn refused_within(
    on: &reqwest::Client,
    cookie: &str,
    limit: Duration,
    what: &str,
) {
    let started = Instant::now();
    while status(on, cookie).await != 401 {
        assert!(started.elapsed() < limit, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(crate) async fn status(http: &reqwest::Client, cookie: &str) -> u16 {
    http.get("https://a.test/chat")
        .header(COOKIE, cookie)
        .header("accept", "application/json")
        .send()
        .await
        .expect("request")
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_sign_out_on_one_replica_ends_the_session_on_every_replica() {
    let redis = Redis::start();
    let upstream = Upstream::start();
    let (fa, fb, fc) = (Fixtures::new(), Fixtures::new(), Fixtures::new());
    let a = replica(&fa, &fa, &upstream, &redis);
    let b = replica(&fa, &fb, &upstream, &redis);
    redis.wait_for_subscribers(2);
    let (on_a, on_b) = (client(&fa, &a), client(&fa, &b));
    // Whole once the shared set was read: plain "ready", not degraded.
    let synced = Instant::now();
    loop {
        let ready = readyz(&b);
        if ready.ends_with("\r\n\r\nready\n") {
            break;
        }
        assert!(synced.elapsed() < Duration::from_secs(3), "{ready}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let cookie = sign_in_local(&on_a, "https://a.test", "corp", "alice", PASSWORD, &[]).await;
    assert_eq!(
        status(&on_b, &cookie).await,
        200,
        "one deployment: B takes A's cookie"
    );

    sign_out_on(&on_a, &cookie).await;
    assert_eq!(
        status(&on_a, &cookie).await,
        401,
        "refused where it signed out"
    );
    refused_within(
        &on_b,
        &cookie,
        Duration::from_secs(1),
        "B still takes the signed-out cookie after 1 s",
    )
    .await;

    // A replica started afterwards learns it from the shared set, not from the channel.
    let c = replica(&fa, &fc, &upstream, &redis);
    redis.wait_for_subscribers(3);
    let on_c = client(&fa, &c);
    refused_within(
        &on_c,
        &cookie,
        Duration::from_secs(2),
        "a new replica takes the signed-out cookie",
    )
    .await;
    assert_eq!(redis.cli(&["ZCARD", "t:revocations"]), "1");
}

#[tokio::test]
async fn without_redis_requests_go_on_and_a_sign_out_reaches_the_others_when_it_is_back() {
    let redis = Redis::start();
    let upstream = Upstream::start();
    let (fa, fb) = (Fixtures::new(), Fixtures::new());
    let a = replica(&fa, &fa, &upstream, &redis);
    let b = replica(&fa, &fb, &upstream, &redis);
    redis.wait_for_subscribers(2);
    let (on_a, on_b) = (client(&fa, &a), client(&fa, &b));
    let cookie = sign_in_local(&on_a, "https://a.test", "corp", "alice", PASSWORD, &[]).await;

    // Redis goes away: nothing waits on it, the request path never touches it.
    let port = redis.port;
    drop(redis);
    for on in [&on_a, &on_b] {
        let started = Instant::now();
        assert_eq!(status(on, &cookie).await, 200);
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "{:?}",
            started.elapsed()
        );
    }
    // Ready, and says the store is missing (the check runs every 5 s).
    let degraded = Instant::now();
    loop {
        let ready = readyz(&b);
        if ready.contains("ready, degraded: the shared store is unreachable") {
            assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
            break;
        }
        assert!(degraded.elapsed() < Duration::from_secs(8), "{ready}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A sign-out during the outage holds where it was made at once...
    sign_out_on(&on_a, &cookie).await;
    assert_eq!(status(&on_a, &cookie).await, 401);

    // ...and everywhere once Redis is back: written again, read again, no restart.
    let redis = Redis::start_on(port);
    refused_within(
        &on_b,
        &cookie,
        Duration::from_secs(15),
        "B never learned of the sign-out made while Redis was away",
    )
    .await;
    assert_eq!(redis.cli(&["ZCARD", "t:revocations"]), "1");
}

/// One sign-in attempt with `password` at the replica `on`; the answer's status.
async fn attempt(on: &reqwest::Client, password: &str) -> u16 {
    let page = on
        .get("https://a.test/.portcullis/login")
        .send()
        .await
        .expect("login page");
    let csrf = set_cookie(page.headers(), CSRF_COOKIE).expect("csrf cookie");
    on.post("https://a.test/.portcullis/login")
        .header(COOKIE, format!("{CSRF_COOKIE}={csrf}"))
        .header("origin", "https://a.test")
        .form(&[
            ("idp", "corp"),
            ("username", "alice"),
            ("password", password),
            ("rd", "/"),
            ("csrf", csrf.as_str()),
        ])
        .send()
        .await
        .expect("login")
        .status()
        .as_u16()
}

#[tokio::test]
async fn failed_sign_ins_on_every_replica_count_towards_one_lock_out() {
    let redis = Redis::start();
    let upstream = Upstream::start();
    let (fa, fb) = (Fixtures::new(), Fixtures::new());
    let a = replica(&fa, &fa, &upstream, &redis);
    let b = replica(&fa, &fb, &upstream, &redis);
    redis.wait_for_subscribers(2);
    let (on_a, on_b) = (client(&fa, &a), client(&fa, &b));
    // Five failures are free; the sixth locks (1 s, then doubling). All five on A...
    for _ in 0..5 {
        assert_ne!(attempt(&on_a, "wrong").await, 429, "five are free");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // ...count on B: it locks within three attempts of its own, where alone it would allow six.
    let mut tries = 0;
    while attempt(&on_b, "wrong").await != 429 {
        tries += 1;
        assert!(tries < 3, "B does not count the failures made on A");
    }
}

#[tokio::test]
async fn a_redis_with_a_password_is_reached_with_the_url_from_a_file() {
    let port = free_port();
    let redis = Redis::start_with(port, &["--requirepass", REDIS_PASSWORD]);
    let upstream = Upstream::start();
    let (fa, fb) = (Fixtures::new(), Fixtures::new());
    let url_file = fa.path("redis.url");
    std::fs::write(
        &url_file,
        format!("redis://:{REDIS_PASSWORD}@127.0.0.1:{port}/0\n"),
    )
    .expect("write");
    let spec = format!("file:{}", url_file.display());
    let a = replica_at(&fa, &fa, &upstream, &spec);
    let b = replica_at(&fa, &fb, &upstream, &spec);
    redis.wait_for_subscribers(2);
    let (on_a, on_b) = (client(&fa, &a), client(&fa, &b));
    let cookie = sign_in_local(&on_a, "https://a.test", "corp", "alice", PASSWORD, &[]).await;
    sign_out_on(&on_a, &cookie).await;
    refused_within(&on_b, &cookie, Duration::from_secs(1), "not shared").await;
    assert_eq!(redis.cli(&["ZCARD", "t:revocations"]), "1");
}
