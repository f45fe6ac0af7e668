//! Two replicas of one deployment sharing a real redis-server, with the real identity
//! providers: rate limits, replay memory, back-channel logout and OIDC refresh count once
//! across replicas; without Redis, limits hold per replica and replays are refused.

use std::time::{Duration, Instant};

use reqwest::header::COOKIE;

use crate::common::browser::{cookie_header, form_value, sign_in_local, Jar};
use crate::common::op::{finish, sign_in_at_op, Op};
use crate::common::redis::{Redis, RedisCluster};
use crate::common::saml::{post_acs, sign_in_at_idp, SamlIdp};
use crate::common::{client, hash_password, plain, Fixtures, Ports, Proxy, Upstream};
use crate::store::{refused_within, PASSWORD};

/// The public origin every replica serves (clients resolve it to their replica).
pub(crate) const BASE: &str = "https://a.test";

/// The admin API tokens every replica's config names (`admin.tokens`): `ops` may do
/// everything, `viewer` only read.
pub(crate) const OPS_TOKEN: &str = "ops-0123456789abcdef0123456789abcdef";
pub(crate) const VIEWER_TOKEN: &str = "viewer-0123456789abcdef0123456789abcdef";
const ADMIN_TOKENS: &str = "  tokens:\n    - { name: ops, token: file:ops.token, scopes: [read, revoke, disable, reload] }\n    - { name: viewer, token: file:viewer.token, scopes: [read] }\n";

/// What the replicas of one deployment share: session key, certificate, public URL, the
/// identity providers (`sections`), one app (`app`, its upstream as `UPSTREAM`) and Redis.
pub(crate) struct Deployment {
    shared: Fixtures,
    sections: String,
    app: String,
    /// The Redis lines of `store:` (`url:`, `cluster:`).
    servers: String,
}

/// One replica: its own ports, audit file and client (which resolves a.test to it).
pub(crate) struct Replica {
    /// Stopped on drop.
    pub(crate) proxy: Proxy,
    pub(crate) fixtures: Fixtures,
    pub(crate) http: reqwest::Client,
}

impl Deployment {
    pub(crate) fn new(
        upstream: &Upstream,
        servers: &str,
        sections: &str,
        app_extra: &str,
    ) -> Deployment {
        let app = format!(
            "  - id: chat\n    hosts: [a.test]\n    upstream: {}\n    access: {{ user_types: [internal-user, external-user] }}\n{app_extra}",
            upstream.url()
        );
        Deployment {
            shared: Fixtures::new(),
            sections: sections.to_string(),
            app,
            servers: servers.to_string(),
        }
    }

    /// The CA that signed the replicas' shared certificate.
    pub(crate) fn shared_ca(&self) -> std::path::PathBuf {
        self.shared.ca.clone()
    }

    pub(crate) fn replica(&self) -> Replica {
        self.replica_on(Ports::new())
    }

    fn replica_on(&self, ports: Ports) -> Replica {
        let own = Fixtures::new();
        // The OIDC provider's client secret, next to the replica's config.
        std::fs::write(own.path("oidc.secret"), "op-client-secret").expect("write");
        std::fs::write(own.path("ops.token"), OPS_TOKEN).expect("write");
        std::fs::write(own.path("viewer.token"), VIEWER_TOKEN).expect("write");
        let store = format!(
            "store:\n  kind: redis\n{}  key_prefix: \"t:\"\n",
            self.servers
        );
        let apps = format!("{}{store}", self.app);
        let yaml = own
            .replica_config(&self.shared, &ports, &self.sections, &apps)
            .replace("admin:\n", &format!("admin:\n{ADMIN_TOKENS}"));
        let proxy = Proxy::start(&own, ports, &yaml);
        let http = client(&self.shared, &proxy);
        Replica {
            proxy,
            fixtures: own,
            http,
        }
    }
}

impl Replica {
    /// Audit `detail`s of refused sign-ins and logout messages, once there are `count`.
    async fn refusals(&self, count: usize) -> Vec<String> {
        crate::common::refusals(&self.fixtures.audit_log(), count).await
    }
}

/// `store:`'s lines for one redis-server.
pub(crate) fn on(redis: &Redis) -> String {
    format!("  url: redis://127.0.0.1:{}/0\n", redis.port)
}

fn local_users() -> String {
    format!(
        "identity_providers:\n  - id: corp\n    kind: local\n    users:\n      - {{ username: alice, password_hash: \"{}\" }}\n",
        hash_password(PASSWORD)
    )
}

/// `GET /chat` with `cookie`: its status and how long the answer took.
pub(crate) async fn timed_get(http: &reqwest::Client, cookie: &str) -> (u16, Duration) {
    let started = Instant::now();
    let r = http
        .get(format!("{BASE}/chat"))
        .header(COOKIE, cookie)
        .header("accept", "application/json")
        .send()
        .await
        .expect("request");
    if r.status() == 429 {
        assert!(r.headers().contains_key("retry-after"), "429 says when");
    }
    (r.status().as_u16(), started.elapsed())
}

/// `n` requests with `cookie` at once, every other one to `b`: their statuses.
async fn at_once(n: usize, a: &Replica, b: &Replica, cookie: &str) -> Vec<u16> {
    let calls = (0..n).map(|i| timed_get(if i % 2 == 0 { &a.http } else { &b.http }, cookie));
    futures_util::future::join_all(calls)
        .await
        .into_iter()
        .map(|(status, _)| status)
        .collect()
}

/// Thirty requests of one user at once, spread over `a` and `b`, under a limit of 10/min:
/// one bucket, so ten pass (one more per replica at most).
async fn thirty_at_once(a: &Replica, b: &Replica, cookie: &str) {
    let statuses = at_once(30, a, b, cookie).await;
    let passed = statuses.iter().filter(|s| **s == 200).count();
    assert!(
        (10..=12).contains(&passed),
        "10/min across both replicas: {statuses:?}"
    );
    assert!(statuses.iter().all(|s| *s == 200 || *s == 429));
}

const TEN_PER_MINUTE: &str = "    rate_limits: [{ key: user, rate: 10/min, burst: 10 }]\n";
/// The same and a looser per-address limit: both buckets asked in one round trip.
const TEN_PER_MINUTE_AND_ONE_MORE: &str = "    rate_limits:\n      - { key: ip, rate: 1000/min, burst: 1000 }\n      - { key: user, rate: 10/min, burst: 10 }\n";

#[tokio::test]
async fn a_per_user_limit_holds_across_replicas_and_per_replica_while_redis_is_away() {
    let redis = Redis::start();
    let upstream = Upstream::start();
    let d = Deployment::new(
        &upstream,
        &on(&redis),
        &local_users(),
        TEN_PER_MINUTE_AND_ONE_MORE,
    );
    let (a, b) = (d.replica(), d.replica());
    redis.wait_for_subscribers(2);
    let cookie = sign_in_local(&a.http, BASE, "corp", "alice", PASSWORD, &[]).await;
    thirty_at_once(&a, &b, &cookie).await;
    let keys = redis.cli(&["KEYS", "t:rl:chat.1:*"]);
    assert_eq!(keys.lines().count(), 1, "one shared bucket: {keys}");

    // Redis gone: each replica limits on its own, and nobody waits for Redis.
    let port = redis.port;
    drop(redis);
    let mut passed_on_a = 0;
    for _ in 0..15 {
        let (status, took) = timed_get(&a.http, &cookie).await;
        assert!(took < Duration::from_secs(1), "answered in {took:?}");
        passed_on_a += usize::from(status == 200);
    }
    assert!(
        (10..=11).contains(&passed_on_a),
        "A's own bucket: {passed_on_a}"
    );

    // Redis back (empty): the replicas take from shared buckets again, without a restart.
    let redis = Redis::start_on(port);
    let started = Instant::now();
    while redis.cli(&["KEYS", "t:rl:chat.1:*"]).is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never shared again"
        );
        timed_get(&b.http, &cookie).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn on_a_redis_cluster_a_per_user_limit_and_the_session_index_hold_across_replicas() {
    let cluster = RedisCluster::start();
    let upstream = Upstream::start();
    let servers = format!("  cluster: {}\n", cluster.seeds());
    let d = Deployment::new(&upstream, &servers, &local_users(), TEN_PER_MINUTE);
    let (a, b) = (d.replica(), d.replica());
    cluster.wait_for_subscribers(2);
    let cookie = sign_in_local(&a.http, BASE, "corp", "alice", PASSWORD, &[]).await;
    let second = sign_in_local(&b.http, BASE, "corp", "alice", PASSWORD, &[]).await;
    thirty_at_once(&a, &b, &cookie).await;
    assert_eq!(
        timed_get(&b.http, &second).await.0,
        429,
        "alice's other session shares her bucket"
    );
    let sessions = cluster.cli(&["ZCARD", "t:sessions:user:alice"]);
    assert_eq!(sessions, "2", "both sessions indexed once for all replicas");
}

#[tokio::test]
async fn a_saml_response_taken_by_one_replica_is_a_replay_on_another() {
    let redis = Redis::start();
    let upstream = Upstream::start();
    let idp = SamlIdp::start(
        &format!("{BASE}/.portcullis/saml/metadata"),
        &format!("{BASE}/.portcullis/saml/acs"),
        &format!("{BASE}/.portcullis/saml/slo"),
        &[],
    );
    let sections = format!(
        "identity_providers:\n  - id: corp\n    kind: saml\n    idp_metadata: {}\n",
        idp.metadata_file().display()
    );
    let d = Deployment::new(&upstream, &on(&redis), &sections, "");
    let (a, b) = (d.replica(), d.replica());
    redis.wait_for_subscribers(2);
    let start = format!("{BASE}/.portcullis/login?idp=corp&rd=%2Fchat");

    let mut jar = Jar::new();
    let posted = sign_in_at_idp(&a.http, &start, "alice@corp.test", &mut jar).await;
    let cookies = cookie_header(&jar);
    assert_eq!(post_acs(&a.http, &posted, &cookies).await.status(), 303);
    let again = post_acs(&b.http, &posted, &cookies).await;
    assert_eq!(again.status(), 403, "B knows A took it");
    assert_eq!(b.refusals(1).await, ["replayed"]);

    // Without Redis a replay cannot be ruled out: refused, and the IdP's user can retry.
    let mut jar = Jar::new();
    let posted = sign_in_at_idp(&b.http, &start, "alice@corp.test", &mut jar).await;
    drop(redis);
    let r = post_acs(&b.http, &posted, &cookie_header(&jar)).await;
    assert_eq!(r.status(), 503);
    assert_eq!(
        b.refusals(2).await,
        ["replayed", "replay-check-unavailable"]
    );
    assert_eq!(upstream.hits(), 0);
}

/// The OP (tokens living `access_ttl` seconds, back-channel logout delivered to the first
/// replica) and two replicas signing in through it.
pub(crate) fn oidc_deployment(
    upstream: &Upstream,
    redis: &Redis,
    access_ttl: &str,
) -> (Op, Deployment, Replica, Replica) {
    let ports_a = Ports::new();
    let backchannel = format!(
        "https://a.test:{}/.portcullis/oidc/backchannel-logout",
        ports_a.https
    );
    let op = Op::start(
        &format!("{BASE}/.portcullis/oidc/callback"),
        &[
            ("OP_BACKCHANNEL", backchannel.as_str()),
            ("OP_ACCESS_TTL", access_ttl),
        ],
    );
    let sections = format!(
        "identity_providers:\n  - id: corp\n    kind: oidc\n    issuer: {}\n    client_id: portcullis\n    client_secret: file:oidc.secret\n    scopes: [openid, email, profile, offline_access]\n",
        op.issuer
    );
    let d = Deployment::new(upstream, &on(redis), &sections, "");
    let a = d.replica_on(ports_a);
    let b = d.replica();
    redis.wait_for_subscribers(2);
    (op, d, a, b)
}

/// Signs `user` in at the OP through replica `on`: Portcullis's cookies, and the OP's.
pub(crate) async fn oidc_sign_in(op: &Op, on: &Replica, user: &str) -> (Jar, Jar) {
    let (mut ours, mut theirs) = (Jar::new(), Jar::new());
    let start = format!("{BASE}/.portcullis/login?idp=corp&rd=%2F");
    let callback = sign_in_at_op(&on.http, op, BASE, &start, user, &mut ours, &mut theirs).await;
    assert_eq!(finish(&on.http, &callback, &mut ours).await, 303);
    (ours, theirs)
}

#[tokio::test]
async fn a_back_channel_logout_delivered_to_one_replica_ends_the_session_on_both() {
    let redis = Redis::start();
    let upstream = Upstream::start();
    let (op, _d, a, b) = oidc_deployment(&upstream, &redis, "300");
    let (ours, theirs) = oidc_sign_in(&op, &a, "acme-bea").await;
    let cookie = cookie_header(&ours);
    assert_eq!(timed_get(&b.http, &cookie).await.0, 200);

    // The user signs out at the OP, which tells replica A.
    let plain = plain();
    let page = plain
        .get(format!("{}/session/end", op.issuer))
        .header(COOKIE, cookie_header(&theirs))
        .send()
        .await
        .expect("end session");
    let html = page.text().await.expect("html");
    let xsrf = form_value(&html, "xsrf").expect("xsrf");
    plain
        .post(format!("{}/session/end/confirm", op.issuer))
        .header(COOKIE, cookie_header(&theirs))
        .form(&[("xsrf", xsrf.as_str()), ("logout", "yes")])
        .send()
        .await
        .expect("confirm");
    let started = Instant::now();
    while op.count("BACKCHANNEL-OK") == 0 {
        assert!(started.elapsed() < Duration::from_secs(5), "no delivery");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    refused_within(
        &b.http,
        &cookie,
        Duration::from_secs(1),
        "B still takes a session the OP ended at A",
    )
    .await;
}

#[tokio::test]
async fn twenty_requests_at_refresh_time_over_two_replicas_refresh_once() {
    let redis = Redis::start();
    let upstream = Upstream::start();
    // Tokens live 4 s: refreshed once less than half of that is left.
    let (op, _d, a, b) = oidc_deployment(&upstream, &redis, "4");
    let (ours, _) = oidc_sign_in(&op, &a, "acme-rita").await;
    let cookie = cookie_header(&ours);
    tokio::time::sleep(Duration::from_millis(2600)).await;
    let statuses = at_once(20, &a, &b, &cookie).await;
    assert!(
        statuses.iter().all(|s| *s == 200),
        "nobody is logged out: {statuses:?}"
    );
    let (mut a, mut b) = (a, b);
    let refreshes = op.count("REFRESH");
    if refreshes != 1 {
        let logs = (a.proxy.logs(), b.proxy.logs());
        panic!(
            "{refreshes} refreshes at the OP for both replicas, not 1\nA: {}\nB: {}",
            logs.0, logs.1
        );
    }
}
