//! What the request path asks Redis, against a real redis-server started here.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fred::prelude::*;

use super::{connect, SharedStore};
use crate::config::{LimitKey, LimitSpec, RedisServers, RedisStore, Secret};
use crate::metrics::Metrics;
use crate::store::SessionRecord;

/// A redis-server on a loopback port below the integration tests' range, killed on drop.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start() -> Server {
        // Each test its own port: a counter, from a place that differs per run.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        loop {
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let port = u16::try_from(5000 + (std::process::id() + n) % 4000).expect("port");
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
                continue;
            }
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server (Debian package redis-server)");
            let deadline = Instant::now() + Duration::from_secs(5);
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(Instant::now() < deadline, "redis-server did not start");
                std::thread::sleep(Duration::from_millis(10));
            }
            return Server { child, port };
        }
    }

    /// A store on this server, and a plain client to look at what it wrote.
    async fn store(&self) -> (SharedStore, Client) {
        let settings = RedisStore {
            servers: RedisServers::Single(Secret::inline(&format!(
                "redis://127.0.0.1:{}/0",
                self.port
            ))),
            tls: false,
            ca_file: None,
            key_prefix: "u:".into(),
            timeout: Duration::from_millis(200),
        };
        let (client, _subscriber) = connect::clients(&settings).expect("clients");
        client.init().await.expect("connected");
        let metrics = Arc::new(Metrics::new().expect("metrics"));
        (SharedStore::new(client.clone(), "u:", metrics), client)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn shared_store_operations_hold_on_a_real_redis() {
    let server = Server::start();
    let (store, client) = server.store().await;

    // GCRA: a burst of 3, then a wait of about one interval (1 s at 60/min).
    let spec = LimitSpec {
        key: LimitKey::User,
        rate: std::num::NonZeroU32::new(60).expect("rate"),
        per: Duration::from_secs(60),
        burst: std::num::NonZeroU32::new(3).expect("burst"),
    };
    for _ in 0..3 {
        assert_eq!(store.take("app.0", &spec, 7).await.expect("redis"), Ok(()));
    }
    let wait = store
        .take("app.0", &spec, 7)
        .await
        .expect("redis")
        .expect_err("empty");
    assert!(
        wait > Duration::from_millis(900) && wait <= Duration::from_secs(1),
        "{wait:?}"
    );
    assert_eq!(
        store.take("app.0", &spec, 8).await.expect("redis"),
        Ok(()),
        "another key, another bucket"
    );
    assert_eq!(
        store.take("app.1", &spec, 7).await.expect("redis"),
        Ok(()),
        "another limit, another bucket"
    );

    // Replay memory: the first use only.
    let until = super::unix_now() + 60;
    assert!(store.first_use("t", "id-1", until).await.expect("redis"));
    assert!(!store.first_use("t", "id-1", until).await.expect("redis"));
    assert!(store.first_use("u", "id-1", until).await.expect("redis"));

    // One flight: one claim, its outcome for the others, the claim gone after.
    assert!(store
        .claim("f", Duration::from_secs(5))
        .await
        .expect("redis"));
    assert!(!store
        .claim("f", Duration::from_secs(5))
        .await
        .expect("redis"));
    assert!(store.claimed("f").await.expect("redis"));
    assert_eq!(store.outcome("f").await.expect("redis"), None);
    store
        .finish("f", Some("sealed"), Duration::from_secs(60))
        .await
        .expect("redis");
    assert!(!store.claimed("f").await.expect("redis"));
    assert_eq!(
        store.outcome("f").await.expect("redis").as_deref(),
        Some("sealed")
    );

    // The live-session index: filed, listed while live, touched, removed on sign-out.
    let now = super::unix_now();
    let record = |sid: &str, expires_at| SessionRecord {
        sid: sid.into(),
        user_id: "alice".into(),
        entity: Some("acme".into()),
        idp: "corp".into(),
        issued_at: now,
        expires_at,
        last_seen: now,
    };
    let owners = ["user:alice".to_string(), "entity:acme".to_string()];
    let s1 = record("s1", now + 100);
    store.index_session(&owners, &s1).await.expect("redis");
    store
        .index_session(&owners[..1], &record("s2", now + 50))
        .await
        .expect("redis");
    let listed = store
        .indexed_sessions("user:alice", now)
        .await
        .expect("redis");
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(listed.contains(&s1));
    store.touch_session("s1", now + 5).await.expect("redis");
    store.touch_session("gone", now + 5).await.expect("redis");
    let later = store
        .indexed_sessions("user:alice", now + 60)
        .await
        .expect("redis");
    assert_eq!(later.len(), 1, "expired sessions are not listed");
    assert_eq!(later[0].last_seen, now + 5);
    let gone: i64 = client.exists("u:session:gone").await.expect("redis");
    assert_eq!(gone, 0, "touching an unknown session creates nothing");
    store.unindex_session(&owners, "s1").await.expect("redis");
    assert_eq!(
        store
            .indexed_sessions("entity:acme", now)
            .await
            .expect("redis"),
        []
    );
    let ttl: i64 = client.ttl("u:sessions:user:alice").await.expect("redis");
    assert!(
        ttl > 0 && ttl <= 100,
        "the set expires with its last session: {ttl}"
    );
}

#[tokio::test]
async fn an_unreachable_redis_fails_within_the_timeout() {
    let server = Server::start();
    let (store, _) = server.store().await;
    drop(server);
    let started = Instant::now();
    assert!(store
        .first_use("t", "id", super::unix_now() + 60)
        .await
        .is_err());
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}
