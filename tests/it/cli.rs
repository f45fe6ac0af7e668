//! The command line: `check` reports every problem at once; `audit verify` finds tampering.

use std::process::Command;

use crate::common::{audit_records, binary, client, run_ok, Fixtures, Ports, Proxy, Upstream};

#[test]
fn check_reports_every_problem_at_once_with_paths_lines_and_hints() {
    let fixtures = Fixtures::new();
    let config = fixtures.path("bad.yaml");
    std::fs::write(
        &config,
        "server:\n  public_url: https://chat.example.com\n  http:\n    listen: [\"127.0.0.1:8080\"]\n  trusted_proxies: [10.0.0.0/33]\nsession:\n  encryption_keys: [env:PORTCULLIS_TEST_UNSET_SECRET]\napps:\n  - id: chat\n    hosts: [chat.example.com]\n    upstream: http://127.0.0.1:3000\n    timeouts: { read: forever }\n    upstreem: typo\n  - id: other\n    hosts: [other.example.com]\n    upstream: http://127.0.0.1:3001\n    timeouts: { connect: soon }\n",
    )
    .expect("write");
    let out = Command::new(binary())
        .args(["check", "-c", config.to_str().expect("utf8")])
        .env_remove("PORTCULLIS_TEST_UNSET_SECRET")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8_lossy(&out.stderr);
    let file = config.display().to_string();
    for expected in [
        format!("{file}:3: server.http: every request here would be redirected to HTTPS"),
        format!("{file}:5: server.trusted_proxies[0]: `10.0.0.0/33` is not a CIDR"),
        format!("{file}:7: session.encryption_keys[0]: environment variable PORTCULLIS_TEST_UNSET_SECRET is not set"),
        format!("{file}:13: apps[0].upstreem: unknown field `upstreem`"),
        format!("{file}:17: apps[1].timeouts.connect: `soon` is not a duration"),
    ] {
        assert!(text.contains(&expected), "missing `{expected}` in:\n{text}");
    }
    assert!(text.matches("hint:").count() >= 5, "{text}");
    assert!(text.contains("5 problems in"), "{text}");

    // `run` refuses to start on the same problems.
    let run = Command::new(binary())
        .args(["run", "-c", config.to_str().expect("utf8")])
        .output()
        .expect("run");
    assert_eq!(run.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&run.stderr).contains("refusing to start"));
}

#[test]
fn check_accepts_a_valid_file_and_summarises_it() {
    let fixtures = Fixtures::new();
    let upstream = Upstream::start();
    let config = fixtures.path("ok.yaml");
    let apps = format!("  - id: chat\n    hosts: [chat.example.com]\n    upstream: {}\n    access: {{ user_types: [internal-user] }}\n", upstream.url());
    std::fs::write(&config, fixtures.config(&Ports::new(), "", &apps)).expect("write");
    let out = Command::new(binary())
        .args(["check", "-c", config.to_str().expect("utf8")])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("app chat: chat.example.com ->"), "{text}");
    assert!(
        !text.contains(&std::fs::read_to_string(&fixtures.session_key).expect("key")),
        "secrets never printed"
    );
}

#[tokio::test]
async fn audit_chain_verifies_and_then_detects_edits_deletions_reorders_and_truncation() {
    let fixtures = Fixtures::new();
    let upstream = Upstream::start();
    let ports = Ports::new();
    let apps = format!("  - id: chat\n    hosts: [a.test]\n    upstream: {}\n    public_paths: [\"/public/**\"]\n  - id: off\n    hosts: [b.test]\n    enabled: false\n    upstream: {}\n", upstream.url(), upstream.url());
    let mut proxy = Proxy::start(&fixtures, ports, &fixtures.config(&ports, "", &apps));
    let http = client(&fixtures, &proxy);
    for path in ["/public/1", "/private", "/public/2"] {
        http.get(format!("https://a.test:{}{path}", ports.https))
            .send()
            .await
            .expect("send");
    }
    http.get(format!("https://b.test:{}/", ports.https))
        .send()
        .await
        .expect("send");
    proxy.stop();

    let log = fixtures.audit_log();
    let records = audit_records(&log);
    let events: Vec<&str> = records.iter().filter_map(|r| r["event"].as_str()).collect();
    assert_eq!(events.first(), Some(&"config-loaded"));
    assert_eq!(
        events.last(),
        Some(&"checkpoint"),
        "a clean stop seals the file"
    );
    let denied = records
        .iter()
        .find(|r| r["path"] == "/private")
        .expect("denied record");
    assert_eq!(
        (
            denied["event"].as_str(),
            denied["reason"].as_str(),
            denied["status"].as_u64()
        ),
        (Some("access-denied"), Some("login-required"), Some(401))
    );
    let disabled = records
        .iter()
        .find(|r| r["event"] == "app-disabled")
        .expect("app-disabled record");
    assert_eq!(disabled["app"], "off");
    let access = records.iter().filter(|r| r["event"] == "access").count();
    assert_eq!(access, 2, "one access record per forwarded request");
    for r in &records {
        assert!(
            r["seq"].is_u64()
                && r["ts"].is_string()
                && r["prev"].is_string()
                && r["hash"].is_string(),
            "{r}"
        );
    }

    let (ok, text) = fixtures.verify_audit(&log);
    assert!(ok, "{text}");
    let lines: Vec<String> = std::fs::read_to_string(&log)
        .expect("log")
        .lines()
        .map(str::to_string)
        .collect();
    let tampered = fixtures.path("tampered.jsonl");
    let write =
        |lines: &[String]| std::fs::write(&tampered, lines.join("\n") + "\n").expect("write");

    let mut edited = lines.clone();
    edited[2] = edited[2].replace("\"status\":", "\"status\":1");
    write(&edited);
    let (ok, text) = fixtures.verify_audit(&tampered);
    assert!(
        !ok && text.contains("line 3") && text.contains("edited"),
        "{text}"
    );

    let mut deleted = lines.clone();
    deleted.remove(2);
    write(&deleted);
    let (ok, text) = fixtures.verify_audit(&tampered);
    assert!(!ok && text.contains("line 3"), "{text}");

    let mut reordered = lines.clone();
    reordered.swap(2, 3);
    write(&reordered);
    let (ok, text) = fixtures.verify_audit(&tampered);
    assert!(!ok && text.contains("line 3"), "{text}");

    write(&lines[..lines.len() - 2]);
    let (ok, text) = fixtures.verify_audit(&tampered);
    assert!(!ok && text.contains("after the last checkpoint"), "{text}");

    // A checkpoint signed by another key is refused when the key is pinned.
    let other = run_ok(&["keys", "generate"]);
    let other_public = other
        .lines()
        .find_map(|l| l.strip_prefix("PORTCULLIS_AUDIT_PUBLIC_KEY="))
        .expect("public key");
    let out = Command::new(binary())
        .args([
            "audit",
            "verify",
            log.to_str().expect("utf8"),
            "--key",
            other_public,
        ])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("signature does not verify"));
}

#[test]
fn restart_continues_the_chain() {
    let fixtures = Fixtures::new();
    let upstream = Upstream::start();
    for _ in 0..2 {
        let ports = Ports::new();
        let apps = format!(
            "  - id: chat\n    hosts: [a.test]\n    upstream: {}\n",
            upstream.url()
        );
        let mut proxy = Proxy::start(&fixtures, ports, &fixtures.config(&ports, "", &apps));
        proxy.stop();
    }
    let (ok, text) = fixtures.verify_audit(&fixtures.audit_log());
    assert!(ok, "{text}");
    let configs = audit_records(&fixtures.audit_log())
        .iter()
        .filter(|r| r["event"] == "config-loaded")
        .count();
    assert_eq!(configs, 2);
}

#[test]
fn help_and_version() {
    let help = run_ok(&["--help"]);
    assert!(
        help.contains("Examples:") && help.contains("portcullis demo"),
        "{help}"
    );
    let version = run_ok(&["--version"]);
    assert!(version.starts_with("portcullis "), "{version}");
}

/// `policy explain` runs the proxy's own decision function: table-tested against the same
/// kind of app the end-to-end tests use.
#[test]
fn policy_explain_shows_the_decision_and_each_layer() {
    let fixtures = Fixtures::new();
    let config = fixtures.path("policy.yaml");
    let apps = r#"  - id: support
    hosts: [support.example.com]
    upstream: http://127.0.0.1:9
    public_paths: [/status]
    access:
      user_types: [internal-user, external-user]
      roles: [customer, admin]
    rules:
      - name: billing-agent
        paths: ["/api/agents/billing-*/**"]
        methods: [POST]
        access: { roles: [billing], require_mfa: true }
    entity_scope: { path_pattern: "/api/entities/{entity}/**" }
"#;
    std::fs::write(&config, fixtures.config(&Ports::new(), "", apps)).expect("write");
    let config = config.to_str().expect("utf8");
    let explain = |extra: &[&str]| {
        let out = Command::new(binary())
            .args(["policy", "explain", "-c", config])
            .args(extra)
            .output()
            .expect("run");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let table: &[(&[&str], i32, &[&str])] = &[
        (
            &[
                "--app",
                "support",
                "--user-type",
                "external-user",
                "--roles",
                "customer",
                "--entity",
                "acme",
                "--method",
                "POST",
                "--path",
                "/api/agents/billing-specialist/run",
            ],
            1,
            &[
                "rule:     billing-agent",
                "decision: deny (role-missing) → 403",
                "FAIL  roles",
            ],
        ),
        (
            &[
                "--app",
                "support",
                "--roles",
                "customer,billing",
                "--entity",
                "acme",
                "--mfa",
                "--method",
                "POST",
                "--path",
                "/api/agents/billing-specialist/run",
            ],
            0,
            &["decision: allow (authenticated)", "pass  mfa"],
        ),
        (
            &[
                "--app",
                "support",
                "--roles",
                "billing",
                "--entity",
                "acme",
                "--method",
                "POST",
                "--path",
                "/api/agents/billing-x/run",
            ],
            1,
            &["deny (role-missing)"],
        ),
        (
            &[
                "--host",
                "support.example.com",
                "--roles",
                "customer",
                "--entity",
                "acme",
                "--path",
                "/api/entities/globex/x",
            ],
            1,
            &[
                "app:      support",
                "deny (entity-mismatch)",
                "FAIL  entity-scope",
            ],
        ),
        (
            &[
                "--app",
                "support",
                "--user-type",
                "internal-user",
                "--path",
                "/api/entities/globex/x",
                "--roles",
                "admin",
            ],
            0,
            &["allow (authenticated)", "skip  entity-scope"],
        ),
        (
            &["--app", "support", "--anonymous", "--path", "/chat"],
            1,
            &["decision: login-required"],
        ),
        (
            &["--app", "support", "--anonymous", "--path", "/status"],
            0,
            &["allow (public-path)"],
        ),
        (
            &["--app", "support", "--path", "/a/../status", "--anonymous"],
            0,
            &["request:  GET /status"],
        ),
    ];
    for (args, code, needles) in table {
        let (status, text) = explain(args);
        assert_eq!(status, Some(*code), "{args:?}\n{text}");
        for needle in *needles {
            assert!(text.contains(needle), "{args:?}: {needle}\n{text}");
        }
    }
    let (status, json) = explain(&[
        "--app", "support", "--path", "/chat", "--roles", "customer", "--json",
    ]);
    assert_eq!(status, Some(0));
    let value: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(value["decision"], "allow");
    assert!(value["steps"].as_array().is_some_and(|s| !s.is_empty()));
    let (status, _) = explain(&["--app", "nope", "--path", "/"]);
    assert_eq!(status, Some(2));
}

#[test]
fn keys_api_key_prints_a_checksummed_key_and_its_hash_once() {
    let first: serde_json::Value =
        serde_json::from_str(&run_ok(&["keys", "api-key", "--json"])).expect("json");
    let (key, hash) = (
        first["key"].as_str().expect("key"),
        first["key_hash"].as_str().expect("key_hash"),
    );
    assert!(key.starts_with("pck_") && key.len() == 54, "{key}");
    assert!(
        hash.starts_with("pck-v1:") && !hash.contains(&key[4..]),
        "{hash}"
    );
    let second: serde_json::Value =
        serde_json::from_str(&run_ok(&["keys", "api-key", "--json"])).expect("json");
    assert_ne!(second["key"], first["key"], "a new key every time");
    let text = run_ok(&["keys", "api-key"]);
    assert!(
        text.contains("\nkey:      pck_") && text.contains("\nkey_hash: pck-v1:"),
        "{text}"
    );
}
