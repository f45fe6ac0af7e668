//! Shared state on real Redis deployments other than one plain server: TLS with a private CA,
//! a Redis Cluster, and a Sentinel-managed master that fails over.

use std::time::{Duration, Instant};

use crate::common::browser::sign_in_local;
use crate::common::redis::{Redis, RedisCluster, RedisSentinel, SENTINEL_MASTER};
use crate::common::{client, Fixtures, Proxy, Upstream};
use crate::store::{readyz, refused_within, replica_with, sign_out_on, status, PASSWORD};

/// Waits until `proxy`'s `/readyz` is plain `ready` (the shared set was read), at most 5 s.
async fn store_up(proxy: &Proxy) {
    let started = Instant::now();
    loop {
        let ready = readyz(proxy);
        if ready.ends_with("\r\n\r\nready\n") {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "{ready}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn over_tls_with_the_configured_ca_a_sign_out_reaches_every_replica() {
    // The fixtures' dev CA signed a certificate for 127.0.0.1: Redis serves it.
    let (fa, fb) = (Fixtures::new(), Fixtures::new());
    let redis = Redis::start_tls(&fa.cert, &fa.key, &fa.ca);
    let upstream = Upstream::start();
    let servers = format!(
        "  url: rediss://127.0.0.1:{}/0\n  tls: {{ ca_file: \"{}\" }}\n",
        redis.port,
        fa.ca.display()
    );
    let a = replica_with(&fa, &fa, &upstream, &servers);
    let b = replica_with(&fa, &fb, &upstream, &servers);
    redis.wait_for_subscribers(2);
    store_up(&b).await;
    let (on_a, on_b) = (client(&fa, &a), client(&fa, &b));
    let cookie = sign_in_local(&on_a, "https://a.test", "corp", "alice", PASSWORD, &[]).await;
    assert_eq!(status(&on_b, &cookie).await, 200);
    sign_out_on(&on_a, &cookie).await;
    refused_within(
        &on_b,
        &cookie,
        Duration::from_secs(1),
        "not shared over TLS",
    )
    .await;
    assert_eq!(redis.cli(&["ZCARD", "t:revocations"]), "1");
}

#[tokio::test]
async fn over_tls_without_the_right_ca_the_store_stays_down_and_requests_go_on() {
    let (fa, fb, fc, other_ca) = (
        Fixtures::new(),
        Fixtures::new(),
        Fixtures::new(),
        Fixtures::new(),
    );
    let redis = Redis::start_tls(&fa.cert, &fa.key, &fa.ca);
    let upstream = Upstream::start();
    let url = format!("  url: rediss://127.0.0.1:{}/0\n", redis.port);
    let trusted = replica_with(
        &fa,
        &fa,
        &upstream,
        &format!("{url}  tls: {{ ca_file: \"{}\" }}\n", fa.ca.display()),
    );
    // The system's roots, which do not hold the dev CA; and another CA.
    let system_roots = replica_with(&fa, &fb, &upstream, &url);
    let wrong_ca = replica_with(
        &fa,
        &fc,
        &upstream,
        &format!("{url}  tls: {{ ca_file: \"{}\" }}\n", other_ca.ca.display()),
    );
    // By the time the trusted replica has read the set, the others have tried too.
    store_up(&trusted).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cookie = {
        let on = client(&fa, &trusted);
        sign_in_local(&on, "https://a.test", "corp", "alice", PASSWORD, &[]).await
    };
    for (name, proxy) in [("system roots", &system_roots), ("wrong CA", &wrong_ca)] {
        let ready = readyz(proxy);
        assert!(
            ready.starts_with("HTTP/1.1 200") && ready.contains("degraded"),
            "{name}: {ready}"
        );
        assert_eq!(
            proxy.metric("portcullis_store_up").as_deref(),
            Some("0"),
            "{name}"
        );
        let started = Instant::now();
        assert_eq!(status(&client(&fa, proxy), &cookie).await, 200, "{name}");
        assert!(started.elapsed() < Duration::from_millis(500), "{name}");
    }
    assert_eq!(redis.subscribers(), 1, "only the trusted replica got in");
}

#[tokio::test]
async fn on_a_redis_cluster_a_sign_out_reaches_every_replica() {
    let cluster = RedisCluster::start();
    let upstream = Upstream::start();
    let (fa, fb) = (Fixtures::new(), Fixtures::new());
    let servers = format!("  cluster: {}\n", cluster.seeds());
    let a = replica_with(&fa, &fa, &upstream, &servers);
    let b = replica_with(&fa, &fb, &upstream, &servers);
    cluster.wait_for_subscribers(2);
    store_up(&b).await;
    let (on_a, on_b) = (client(&fa, &a), client(&fa, &b));
    let cookie = sign_in_local(&on_a, "https://a.test", "corp", "alice", PASSWORD, &[]).await;
    sign_out_on(&on_a, &cookie).await;
    refused_within(
        &on_b,
        &cookie,
        Duration::from_secs(1),
        "not shared on the cluster",
    )
    .await;
    assert_eq!(cluster.cli(&["ZCARD", "t:revocations"]), "1");
}

#[tokio::test]
async fn behind_sentinel_the_replicas_follow_a_failover() {
    let redis = RedisSentinel::start();
    let upstream = Upstream::start();
    let (fa, fb, fc) = (Fixtures::new(), Fixtures::new(), Fixtures::new());
    let servers = format!(
        "  sentinel:\n    master: {SENTINEL_MASTER}\n    nodes: [redis://127.0.0.1:{}]\n",
        redis.sentinel.port
    );
    let a = replica_with(&fa, &fa, &upstream, &servers);
    let b = replica_with(&fa, &fb, &upstream, &servers);
    redis.master.wait_for_subscribers(2);
    store_up(&b).await;
    let (on_a, on_b) = (client(&fa, &a), client(&fa, &b));
    let before = sign_in_local(&on_a, "https://a.test", "corp", "alice", PASSWORD, &[]).await;
    sign_out_on(&on_a, &before).await;
    refused_within(&on_b, &before, Duration::from_secs(1), "not shared").await;
    // Replication is asynchronous: the failover test starts once the replica has it.
    let deadline = Instant::now() + Duration::from_secs(5);
    while redis.replica.cli(&["ZCARD", "t:revocations"]) != "1" {
        assert!(
            Instant::now() < deadline,
            "the replica never got the revocation: master {} replica {} role {}",
            redis
                .master
                .cli(&["ZRANGE", "t:revocations", "0", "-1", "WITHSCORES"]),
            redis.replica.cli(&["ZCARD", "t:revocations"]),
            redis.replica.cli(&["ROLE"]),
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    redis.failover();
    redis.replica.wait_for_subscribers(2);
    let after = sign_in_local(&on_a, "https://a.test", "corp", "alice", PASSWORD, &[]).await;
    sign_out_on(&on_a, &after).await;
    refused_within(
        &on_b,
        &after,
        Duration::from_secs(5),
        "a sign-out after the failover did not reach B",
    )
    .await;

    // A replica started now reads the set on the new master: both revocations are there.
    let c = replica_with(&fa, &fc, &upstream, &servers);
    let on_c = client(&fa, &c);
    for cookie in [&before, &after] {
        refused_within(
            &on_c,
            cookie,
            Duration::from_secs(3),
            "lost in the failover",
        )
        .await;
    }
    assert_eq!(redis.replica.cli(&["ZCARD", "t:revocations"]), "2");
}
