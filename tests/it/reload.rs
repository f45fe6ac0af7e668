//! In-place reload (`POST /api/v1/reload`, `SIGHUP`): under steady signed-in load, nothing is
//! dropped; a broken file changes nothing; open streams go on unless their app went away.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::browser::sign_in_local;
use crate::common::{audit_until, client, hash_password, Fixtures, Ports, Proxy, Upstream};

const PASSWORD: &str = "a test password";
const OPS_TOKEN: &str = "ops-0123456789abcdef0123456789abcdef";

/// A proxy with one app and alice, whose config file a test rewrites and reloads.
struct Running {
    fixtures: Fixtures,
    upstream: Upstream,
    ports: Ports,
    hash: String,
    proxy: Proxy,
}

impl Running {
    fn start() -> Running {
        let fixtures = Fixtures::new();
        let upstream = Upstream::start();
        let ports = Ports::new();
        std::fs::write(fixtures.path("ops.token"), OPS_TOKEN).expect("write");
        let hash = hash_password(PASSWORD);
        let proxy = Proxy::start(
            &fixtures,
            ports,
            &config(&fixtures, &ports, &upstream, &hash, ""),
        );
        Running {
            fixtures,
            upstream,
            ports,
            hash,
            proxy,
        }
    }

    /// The config with `extra` lines at the end of the app.
    fn yaml(&self, extra: &str) -> String {
        config(
            &self.fixtures,
            &self.ports,
            &self.upstream,
            &self.hash,
            extra,
        )
    }
}

/// The config with `extra` lines at the end of the app (a rule, `enabled: false`, …).
fn config(
    fixtures: &Fixtures,
    ports: &Ports,
    upstream: &Upstream,
    hash: &str,
    extra: &str,
) -> String {
    let apps = format!(
        "  - id: chat\n    hosts: [a.test]\n    upstream: {}\n    public_paths: [/status]\n    access: {{ user_types: [external-user] }}\n{extra}",
        upstream.url()
    );
    fixtures
        .config(ports, "  pre_auth_rate_limit: { rate: off }\n", &apps)
        .replace(
            "session:\n",
            &format!("identity_providers:\n  - id: corp\n    kind: local\n    users:\n      - {{ username: alice, password_hash: \"{hash}\" }}\nsession:\n"),
        )
        .replace(
            "admin:\n",
            "admin:\n  tokens: [{ name: ops, token: file:ops.token, scopes: [reload] }]\n",
        )
}

async fn reload(proxy: &Proxy) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!(
            "http://127.0.0.1:{}/api/v1/reload",
            proxy.ports.admin
        ))
        .bearer_auth(OPS_TOKEN)
        .send()
        .await
        .expect("reload");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Reads `stream` until it ends (true), or until nothing came for 3 s (false).
async fn ends(stream: &mut reqwest::Response) -> bool {
    loop {
        match tokio::time::timeout(Duration::from_secs(3), stream.chunk()).await {
            Ok(Ok(Some(_))) => continue,
            Ok(_) => return true,
            Err(_) => return false,
        }
    }
}

#[tokio::test]
async fn ten_reloads_under_load_drop_nothing_and_a_broken_file_changes_nothing() {
    let w = Running::start();
    let (fixtures, proxy) = (&w.fixtures, &w.proxy);
    let http = client(fixtures, proxy);
    let base = format!("https://a.test:{}", proxy.ports.https);
    let cookie = sign_in_local(&http, &base, "corp", "alice", PASSWORD, &[]).await;

    // A stream that runs through every reload, and steady signed-in requests.
    let mut stream = http
        .get(format!("{base}/long-sse"))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("sse");
    assert_eq!(stream.status(), 200);
    let (stop, sent, failed) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (http, url, cookie) = (http.clone(), format!("{base}/chat"), cookie.clone());
            let (stop, sent, failed) = (stop.clone(), sent.clone(), failed.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let r = http.get(&url).header("cookie", &cookie).send().await;
                    sent.fetch_add(1, Ordering::Relaxed);
                    if !matches!(r, Ok(ref r) if r.status() == 200) {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for i in 0..10 {
        // Each reload changes something real: a rule the requests do not match.
        let rule = format!(
            "    rules:\n      - {{ name: r{i}, paths: [\"/admin{i}/**\"], deny: true }}\n"
        );
        std::fs::write(&proxy.config, w.yaml(&rule)).expect("write");
        let (status, answer) = reload(proxy).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["applied"], true);
        assert_eq!(answer["needs_handover"], json!([]));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let denied = http
            .get(format!("{base}/admin{i}/x"))
            .header("cookie", &cookie)
            .header("accept", "application/json")
            .send()
            .await
            .expect("rule");
        assert_eq!(denied.status(), 403, "reload {i} is in force");
    }
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.expect("load");
    }
    assert!(sent.load(Ordering::Relaxed) > 20, "load ran");
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "no request failed across ten reloads"
    );
    let next = tokio::time::timeout(Duration::from_secs(2), stream.chunk()).await;
    assert!(
        matches!(next, Ok(Ok(Some(_)))),
        "the stream went on: {next:?}"
    );

    // A broken file: 422 with check's messages; the running configuration goes on.
    std::fs::write(&proxy.config, "server: [oops\n").expect("write");
    let (status, answer) = reload(proxy).await;
    assert_eq!(status, 422, "{answer}");
    assert!(
        answer["problems"][0]
            .as_str()
            .is_some_and(|p| p.contains("portcullis.yaml")),
        "{answer}"
    );
    let r = http
        .get(format!("{base}/chat"))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("still");
    assert_eq!(r.status(), 200);
    assert_eq!(
        proxy
            .metric("portcullis_config_reloads_total{result=\"applied\"}")
            .as_deref(),
        Some("10")
    );
    assert_eq!(
        proxy
            .metric("portcullis_config_reloads_total{result=\"refused\"}")
            .as_deref(),
        Some("1")
    );

    // A reload whose policy no longer admits a stream's request ends that stream, and only it.
    let mut agent = http
        .get(format!("{base}/agents/long-sse"))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("sse");
    assert_eq!(agent.status(), 200);
    let rule = "    rules:\n      - { name: agents, paths: [\"/agents/**\"], deny: true }\n";
    std::fs::write(&proxy.config, w.yaml(rule)).expect("write");
    assert_eq!(reload(proxy).await.0, 200);
    assert!(
        ends(&mut agent).await,
        "the stream the new rule refuses ended"
    );
    let next = tokio::time::timeout(Duration::from_secs(2), stream.chunk()).await;
    assert!(
        matches!(next, Ok(Ok(Some(_)))),
        "the other stream went on: {next:?}"
    );

    // The app disabled by a reload: its open stream ends, on the record.
    let disabled = w.yaml("    enabled: false\n");
    std::fs::write(&proxy.config, disabled).expect("write");
    assert_eq!(reload(proxy).await.0, 200);
    assert!(
        ends(&mut stream).await,
        "the stream of the disabled app ended"
    );
    let records = audit_until(&fixtures.audit_log(), 2, |r| r["event"] == "stream-ended").await;
    let why: Vec<&str> = records
        .iter()
        .filter_map(|r| r["detail"].as_str())
        .collect();
    assert_eq!(why, ["access-removed", "app-removed"]);
    let r = http
        .get(format!("{base}/chat"))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("503");
    assert_eq!(r.status(), 503);
}

#[tokio::test]
async fn sighup_reloads_and_a_listener_change_waits_for_the_handover() {
    let w = Running::start();
    let (fixtures, proxy) = (&w.fixtures, &w.proxy);
    let http = client(fixtures, proxy);
    let base = format!("https://a.test:{}", proxy.ports.https);
    let public = |path: &'static str| {
        let (http, url) = (http.clone(), format!("{base}{path}"));
        async move {
            http.get(url)
                .header("accept", "application/json")
                .send()
                .await
                .expect("get")
                .status()
                .as_u16()
        }
    };
    assert_eq!(public("/news").await, 401);
    let yaml = w
        .yaml("")
        .replace("public_paths: [/status]", "public_paths: [/status, /news]");
    std::fs::write(&proxy.config, yaml).expect("write");
    proxy.signal("-HUP");
    let started = Instant::now();
    while public("/news").await != 200 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "SIGHUP did not reload"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let loaded = audit_until(&fixtures.audit_log(), 2, |r| r["event"] == "config-loaded").await;
    assert_eq!(loaded[1]["operator"], "SIGHUP");

    // A new thread count cannot apply to running listeners: said, and the rest applies.
    let yaml = w.yaml("").replace("threads: 1", "threads: 2").replace(
        "public_paths: [/status]",
        "public_paths: [/status, /weather]",
    );
    std::fs::write(&proxy.config, yaml).expect("write");
    let out = std::process::Command::new(crate::common::binary())
        .args([
            "admin",
            "--url",
            &format!("http://127.0.0.1:{}", proxy.ports.admin),
        ])
        .args([
            "--token",
            &format!("file:{}", fixtures.path("ops.token").display()),
        ])
        .arg("reload")
        .output()
        .expect("portcullis admin reload");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.ends_with("changed but applied only at the next upgrade: server.threads\n"),
        "{text}"
    );
    assert_eq!(public("/weather").await, 200);
}

#[tokio::test]
async fn a_reload_serves_new_certificates_to_new_handshakes() {
    let (w, other) = (Running::start(), Fixtures::new());
    let (fixtures, proxy) = (&w.fixtures, &w.proxy);
    let status = |trusting: &Fixtures| {
        let http = client(trusting, proxy);
        let url = format!("https://a.test:{}/status", proxy.ports.https);
        async move { http.get(url).send().await.map(|r| r.status().as_u16()).ok() }
    };
    assert!(
        status(fixtures).await.is_some(),
        "the first certificate is served"
    );
    assert_eq!(
        status(&other).await,
        None,
        "another CA's client refuses the first certificate"
    );
    let yaml = w
        .yaml("")
        .replace(
            &fixtures.cert.display().to_string(),
            &other.cert.display().to_string(),
        )
        .replace(
            &fixtures.key.display().to_string(),
            &other.key.display().to_string(),
        );
    std::fs::write(&proxy.config, yaml).expect("write");
    assert_eq!(reload(proxy).await.0, 200);
    assert!(
        status(&other).await.is_some(),
        "new handshakes get the new certificate"
    );
    assert_eq!(status(fixtures).await, None, "and no longer the old one");
}
