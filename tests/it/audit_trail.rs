//! The audit trail over time: rotation by size and on SIGUSR1 under concurrent load (no
//! record lost, the chain verified across files), compression and retention (each deletion
//! audited), and reading it back with `audit export` / `audit search`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{binary, raw_http, Fixtures, Ports, Proxy, Upstream};

/// A public app for `/pub/**`; everything else needs a session, so it is refused.
fn app(upstream: &Upstream) -> String {
    format!(
        "  - id: chat\n    hosts: [127.0.0.1]\n    upstream: {}\n    allow_plain_http: true\n    public_paths: [\"/pub/**\"]\n",
        upstream.url()
    )
}

fn get(port: u16, path: &str) -> String {
    raw_http(
        port,
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

/// `portcullis audit …` with `args`: (success, stdout, stderr).
fn audit(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(binary())
        .arg("audit")
        .args(args)
        .output()
        .expect("run portcullis audit");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn rotated_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            name.starts_with("audit.jsonl.20") && !name.ends_with(".partial")
        })
        .collect();
    files.sort();
    files
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn rotation_under_load_keeps_every_record_and_one_chain_across_files() {
    let fixtures = Fixtures::new();
    let upstream = Upstream::start();
    let ports = Ports::new();
    let yaml = fixtures.audit_config(
        &ports,
        &app(&upstream),
        "  rotate: { max_size: 16384 }\n  retention: { compress: true }\n",
    );
    let mut proxy = Proxy::start(&fixtures, ports, &yaml);
    let dir = fixtures.path("");

    // Four clients at once while the file rotates under them.
    let clients: Vec<_> = (0..4)
        .map(|c| {
            std::thread::spawn(move || {
                for i in 0..60 {
                    let answer = get(ports.http, &format!("/pub/{c}/{i}"));
                    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
                }
            })
        })
        .collect();
    for client in clients {
        client.join().expect("client");
    }
    for i in 0..5 {
        let answer = get(ports.http, &format!("/private/{i}"));
        assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    }
    wait_for("rotations by size", || rotated_files(&dir).len() >= 3);
    let before_signal = rotated_files(&dir).len();
    proxy.signal("-USR1");
    wait_for("a rotation on SIGUSR1", || {
        rotated_files(&dir).len() > before_signal
    });
    wait_for("compressed rotated files", || {
        rotated_files(&dir)
            .iter()
            .all(|f| f.extension().is_some_and(|e| e == "gz"))
    });
    proxy.stop();

    // One chain over every file, in order, every checkpoint signed by the configured key.
    let dir_arg = dir.to_str().expect("utf8");
    let (ok, out, err) = audit(&["verify", dir_arg, "--key", &fixtures.audit_public_key]);
    assert!(ok, "verify DIR: {out}{err}");
    assert!(out.contains("ok:") && out.contains("files"), "{out}");

    // No access record lost: 240 allowed, 5 refused, each exactly once.
    let (ok, jsonl, err) = audit(&["export", dir_arg, "--event", "access"]);
    assert!(ok, "{err}");
    let mut paths: Vec<String> = jsonl
        .lines()
        .map(|l| {
            let record: serde_json::Value = serde_json::from_str(l).expect("json");
            record["path"].as_str().expect("path").to_string()
        })
        .collect();
    assert_eq!(paths.len(), 240, "{err}");
    paths.sort();
    paths.dedup();
    assert_eq!(paths.len(), 240, "no record twice");
    // (The readiness probe's unknown-host refusal is the other app-less denial.)
    let (ok, csv, _) = audit(&[
        "export",
        dir_arg,
        "--decision",
        "deny",
        "--app",
        "chat",
        "--format",
        "csv",
    ]);
    assert!(ok);
    let rows: Vec<&str> = csv.lines().collect();
    assert!(
        rows[0].starts_with("seq,ts,event,decision,reason,status,user,entity"),
        "{csv}"
    );
    assert_eq!(rows.len(), 6, "a header and 5 refusals: {csv}");
    assert!(
        rows[1..].iter().all(|r| r.contains(",access-denied,deny,")),
        "{csv}"
    );
    let (ok, table, _) = audit(&["search", dir_arg, "--decision", "deny", "--limit", "2"]);
    assert!(ok);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "heading and the last two: {table}");
    assert!(lines[2].contains("/private/4"), "{table}");

    // A missing file in the middle is found, and named.
    let rotated = rotated_files(&dir);
    std::fs::remove_file(&rotated[1]).expect("remove");
    let (ok, _, err) = audit(&["verify", dir_arg]);
    assert!(!ok);
    assert!(err.contains("a file is missing or out of order"), "{err}");
}

#[test]
fn retention_deletes_expired_rotated_files_and_audits_each_deletion() {
    let fixtures = Fixtures::new();
    let upstream = Upstream::start();
    let ports = Ports::new();
    let yaml = fixtures.audit_config(&ports, &app(&upstream), "  retention: { keep: 1s }\n");
    let mut proxy = Proxy::start(&fixtures, ports, &yaml);
    let dir = fixtures.path("");
    for round in 0..2 {
        assert!(get(ports.http, &format!("/pub/{round}")).starts_with("HTTP/1.1 200"));
        let before = rotated_files(&dir).len();
        proxy.signal("-USR1");
        wait_for("a rotation", || rotated_files(&dir).len() > before);
    }
    let doomed = rotated_files(&dir);
    assert_eq!(doomed.len(), 2);
    std::thread::sleep(Duration::from_millis(1100));
    assert!(get(ports.http, "/pub/last").starts_with("HTTP/1.1 200"));
    proxy.signal("-USR1");
    wait_for("the expired files to go", || {
        doomed.iter().all(|f| !f.exists())
    });
    proxy.stop();

    let dir_arg = dir.to_str().expect("utf8");
    let (ok, out, _) = audit(&["export", dir_arg, "--event", "audit-file-deleted"]);
    assert!(ok);
    for file in &doomed {
        let name = file.display().to_string();
        assert!(out.contains(&name), "deletion of {name} audited: {out}");
    }
    // What is left starts where the deleted files ended: a continuation, still one chain.
    let (ok, _, err) = audit(&["verify", dir_arg]);
    assert!(!ok && err.contains("--continuation"), "{err}");
    let (ok, out, err) = audit(&["verify", dir_arg, "--continuation"]);
    assert!(ok, "{out}{err}");
}

/// Every audit file's text, compressed ones decompressed.
fn all_audit_text(dir: &Path) -> String {
    use std::io::Read;
    let mut text = String::new();
    for entry in std::fs::read_dir(dir).expect("dir").flatten() {
        let path = entry.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if !name.starts_with("audit.jsonl") {
            continue;
        }
        let raw = std::fs::read(&path).expect("read");
        if name.ends_with(".gz") {
            flate2::read::MultiGzDecoder::new(raw.as_slice())
                .read_to_string(&mut text)
                .expect("gunzip");
        } else {
            text.push_str(&String::from_utf8_lossy(&raw));
        }
    }
    text
}

#[tokio::test]
async fn forgetting_a_user_leaves_nothing_readable_and_the_chain_intact() {
    use crate::common::browser::sign_in_local;
    let fixtures = Fixtures::new();
    let upstream = Upstream::start();
    let ports = Ports::new();
    std::fs::write(
        fixtures.path("ops.token"),
        "ops-0123456789abcdef0123456789abcdef",
    )
    .expect("token");
    let users = format!(
        "identity_providers:\n  - id: corp\n    kind: local\n    users:\n      - {{ username: alice.liddell, password_hash: \"{}\" }}\n",
        crate::common::hash_password(crate::store::PASSWORD)
    );
    let app = format!(
        "  - id: chat\n    hosts: [a.test]\n    upstream: {}\n    access: {{ user_types: [internal-user, external-user] }}\n",
        upstream.url()
    );
    let yaml = fixtures
        .audit_config(
            &ports,
            &app,
            "  personal_data: pseudonymised\n  retention: { compress: true }\n",
        )
        .replace(
            &format!("public_url: https://localhost:{}", ports.https),
            "public_url: https://a.test",
        )
        .replace("session:\n", &format!("{users}session:\n"))
        .replace(
            "admin:\n",
            "admin:\n  tokens:\n    - { name: ops, token: file:ops.token, scopes: [read, revoke, disable] }\n",
        );
    let proxy = Proxy::start(&fixtures, ports, &yaml);
    let http = crate::common::client(&fixtures, &proxy);
    let base = "https://a.test";
    let cookie = sign_in_local(
        &http,
        base,
        "corp",
        "alice.liddell",
        crate::store::PASSWORD,
        &[],
    )
    .await;
    let get = |path: String| {
        let http = http.clone();
        let cookie = cookie.clone();
        async move {
            http.get(format!("{base}{path}"))
                .header("cookie", cookie)
                .header("accept", "application/json")
                .send()
                .await
                .expect("request")
                .status()
                .as_u16()
        }
    };
    for i in 0..3 {
        assert_eq!(get(format!("/chat/alice-private-{i}")).await, 200);
    }
    // Some of it in a rotated, compressed file.
    proxy.signal("-USR1");
    let dir = fixtures.path("");
    wait_for("a compressed rotated file", || {
        rotated_files(&dir)
            .iter()
            .any(|f| f.extension().is_some_and(|e| e == "gz"))
    });
    assert_eq!(get("/chat/alice-private-3".into()).await, 200);

    // In the files, only a pseudonym; with the key file, everything.
    let text = all_audit_text(&dir);
    assert!(!text.contains("alice"), "no user id or path in clear");
    let keys = fixtures.path("audit-personal.keys");
    let dir_arg = dir.to_str().expect("utf8");
    let keys_arg = keys.to_str().expect("utf8");
    let (ok, revealed, err) = audit(&[
        "export",
        dir_arg,
        "--keys",
        keys_arg,
        "--user",
        "alice.liddell",
    ]);
    assert!(ok, "{err}");
    assert_eq!(
        revealed.matches("/chat/alice-private-").count(),
        4,
        "readable with the key: {revealed}"
    );

    // An earlier admin call that named her (its record must not keep her id either).
    let out = Command::new(binary())
        .args(["admin", "enable", "--user", "alice.liddell", "--url"])
        .arg(format!("http://127.0.0.1:{}", ports.admin))
        .env(
            "PORTCULLIS_ADMIN_TOKEN",
            "ops-0123456789abcdef0123456789abcdef",
        )
        .output()
        .expect("admin enable");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // As the privacy office would: the config names the admin listener, the token is in the
    // environment.
    let out = Command::new(binary())
        .args(["audit", "forget", "--user", "alice.liddell", "-c"])
        .arg(&proxy.config)
        .env(
            "PORTCULLIS_ADMIN_TOKEN",
            "ops-0123456789abcdef0123456789abcdef",
        )
        .output()
        .expect("audit forget");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        get("/chat/after".into()).await,
        401,
        "her session is revoked"
    );
    let mut proxy = proxy;
    proxy.stop();

    let text = all_audit_text(&dir);
    assert!(!text.contains("alice"), "nothing of her in clear");
    let forgotten: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|r| r["event"] == "user-forgotten")
        .collect();
    assert_eq!(forgotten.len(), 1);
    assert!(
        forgotten[0]["user"]
            .as_str()
            .is_some_and(|p| p.starts_with("p-")),
        "audited with the pseudonym"
    );
    let keys_text = std::fs::read_to_string(&keys).expect("keys");
    assert!(!keys_text.contains("alice"), "her key is gone");
    let (ok, revealed, _) = audit(&[
        "export",
        dir_arg,
        "--keys",
        keys_arg,
        "--user",
        "alice.liddell",
    ]);
    assert!(ok);
    assert!(
        !revealed.contains("alice"),
        "not even with the key file: {revealed}"
    );
    let (ok, out, err) = audit(&["verify", dir_arg, "--key", &fixtures.audit_public_key]);
    assert!(ok, "the chain still verifies: {out}{err}");
}

/// With `sinks` all down: one file rotated, then expired (`keep: 1s`) and swept by a second
/// rotation. Whether the file is still there after the sweep, and
/// `portcullis_audit_retention_held_total` then.
fn expire_one_file_with(sinks: &str) -> (bool, u64) {
    let fixtures = Fixtures::new();
    let upstream = Upstream::start();
    let ports = Ports::new();
    let audit = format!("  retention: {{ keep: 1s }}\n  sinks:\n{sinks}");
    let mut proxy = Proxy::start(
        &fixtures,
        ports,
        &fixtures.audit_config(&ports, &app(&upstream), &audit),
    );
    let dir = fixtures.path("");
    assert!(get(ports.http, "/pub/one").starts_with("HTTP/1.1 200"));
    proxy.signal("-USR1");
    wait_for("a rotation", || rotated_files(&dir).len() == 1);
    let expiring = rotated_files(&dir).remove(0);
    std::thread::sleep(Duration::from_millis(1100));
    assert!(get(ports.http, "/pub/two").starts_with("HTTP/1.1 200"));
    let held = || {
        raw_http(
            ports.admin,
            b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        )
        .lines()
        .find_map(|l| l.strip_prefix("portcullis_audit_retention_held_total "))
        .and_then(|n| n.trim().parse::<u64>().ok())
        .unwrap_or(0)
    };
    proxy.signal("-USR1");
    // The sweep after the second rotation either deletes the file or holds it (counted).
    wait_for("the sweep", || !expiring.exists() || held() > 0);
    let outcome = (expiring.exists(), held());
    proxy.stop();
    outcome
}

#[test]
fn retention_keeps_expired_files_a_blocking_sink_has_not_delivered() {
    // A collector that is down: nothing is ever delivered. One sink may lose the oldest
    // records (it does not hold retention back); the other may not (it does).
    let dead = crate::common::free_port();
    let (kept, held) = expire_one_file_with(&format!(
        "    - {{ id: down, kind: http, url: \"http://127.0.0.1:{dead}/\" }}\n    - {{ id: lossy, kind: http, url: \"http://127.0.0.1:{dead}/x\", on_full: drop-oldest }}\n"
    ));
    assert!(kept, "expired but undelivered: kept");
    assert_eq!(held, 1, "and counted");
}

#[test]
fn a_drop_oldest_sink_does_not_hold_retention_back() {
    let dead = crate::common::free_port();
    let (kept, held) = expire_one_file_with(&format!(
        "    - {{ id: lossy, kind: syslog, address: \"tcp://127.0.0.1:{dead}\", on_full: drop-oldest }}\n"
    ));
    assert!(!kept, "deleted on time");
    assert_eq!(held, 0);
}
