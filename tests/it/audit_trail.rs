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
    let yaml = fixtures.config(&ports, "", &app(&upstream)).replace(
        "  fsync: always\n",
        "  fsync: always\n  rotate: { max_size: 16384 }\n  retention: { compress: true }\n",
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
    let yaml = fixtures.config(&ports, "", &app(&upstream)).replace(
        "  fsync: always\n",
        "  fsync: always\n  retention: { keep: 1s }\n",
    );
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

#[test]
fn retention_keeps_expired_files_a_sink_has_not_delivered() {
    let fixtures = Fixtures::new();
    let upstream = Upstream::start();
    let ports = Ports::new();
    // A collector that is down: nothing is ever delivered.
    let dead = crate::common::free_port();
    let yaml = fixtures.config(&ports, "", &app(&upstream)).replace(
        "  fsync: always\n",
        &format!("  fsync: always\n  retention: {{ keep: 1s }}\n  sinks:\n    - {{ id: down, kind: http, url: \"http://127.0.0.1:{dead}/\" }}\n"),
    );
    let mut proxy = Proxy::start(&fixtures, ports, &yaml);
    let dir = fixtures.path("");
    assert!(get(ports.http, "/pub/one").starts_with("HTTP/1.1 200"));
    proxy.signal("-USR1");
    wait_for("a rotation", || rotated_files(&dir).len() == 1);
    let kept = rotated_files(&dir);
    std::thread::sleep(Duration::from_millis(1100));
    assert!(get(ports.http, "/pub/two").starts_with("HTTP/1.1 200"));
    proxy.signal("-USR1");
    wait_for("the second rotation", || rotated_files(&dir).len() == 2);
    let metrics = raw_http(
        ports.admin,
        b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    );
    assert!(
        metrics.contains("portcullis_audit_retention_held_total 1"),
        "the sweep held the file back: {}",
        metrics
            .lines()
            .filter(|l| l.contains("audit"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(kept[0].exists(), "expired but undelivered: kept");
    proxy.stop();
}
