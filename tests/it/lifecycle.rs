//! The process's life: start (busy ports, readiness), zero-downtime upgrade with keep-alive
//! clients, and restart after a crash that left the audit file torn.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{
    audit_records, binary, raw_http, try_raw_http, Fixtures, Ports, Proxy, Upstream,
};

fn plain_app(upstream: &Upstream) -> String {
    format!(
        "  - id: plain\n    hosts: [127.0.0.1]\n    upstream: {}\n    allow_plain_http: true\n    public_paths: [\"/**\"]\n",
        upstream.url()
    )
}

/// Runs `portcullis` with `args`; `None` if it is still running after `limit` (then killed).
fn run_for_at_most(args: &[&str], limit: Duration) -> Option<Output> {
    let mut child = Command::new(binary())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return Some(child.wait_with_output().expect("output"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

#[test]
fn a_busy_port_ends_the_start_with_a_clear_message_and_a_failure_exit() {
    let fixtures = Fixtures::new();
    let upstream = Upstream::start();
    let config = fixtures.path("busy.yaml");
    let path = config.to_str().expect("utf8");
    for (key, daemon) in [
        ("server.https.listen", false),
        ("server.http.listen", false),
        ("admin.listen", false),
        ("server.https.listen", true),
    ] {
        let ports = Ports::new();
        let port = match key {
            "server.https.listen" => ports.https,
            "server.http.listen" => ports.http,
            _ => ports.admin,
        };
        let yaml = fixtures
            .config(&ports, "", &plain_app(&upstream))
            .replace("level: warn", "level: error");
        std::fs::write(&config, yaml).expect("write");
        let _taken = TcpListener::bind(("127.0.0.1", port)).expect("hold the port");
        let started = Instant::now();
        let mut args = vec!["run", "-c", path];
        if daemon {
            args.push("--daemon");
        }
        let out = run_for_at_most(&args, Duration::from_secs(20))
            .unwrap_or_else(|| panic!("{key} busy (daemon: {daemon}): still running after 20 s"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{key} busy (daemon: {daemon}): exit {:?}\n{stderr}",
            out.status
        );
        assert!(
            stderr.contains(&format!("cannot listen on 127.0.0.1:{port} ({key})"))
                && stderr.contains("another process is listening"),
            "{key}: {stderr}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no 30 s of retries: {:?}",
            started.elapsed()
        );
        // Nothing half-started: the other ports were released.
        for other in [ports.https, ports.http, ports.admin] {
            if other != port {
                TcpListener::bind(("127.0.0.1", other)).expect("released");
            }
        }
    }
}

#[test]
fn the_running_proxy_has_transparent_huge_pages_off() {
    // A huge page keeps 2 MiB resident for one touched byte: idle RSS and memory per stream
    // doubled whenever the kernel granted them (docs/performance.md).
    let fixtures = Fixtures::new();
    let upstream = Upstream::start();
    let ports = Ports::new();
    let proxy = Proxy::start(
        &fixtures,
        ports,
        &fixtures.config(&ports, "", &plain_app(&upstream)),
    );
    let status = std::fs::read_to_string(format!("/proc/{}/status", proxy.pid())).expect("status");
    let thp = status
        .lines()
        .find_map(|line| line.strip_prefix("THP_enabled:"))
        .map(str::trim);
    assert_eq!(thp, Some("0"), "THP_enabled in /proc/PID/status");
}

#[test]
fn readyz_waits_until_the_proxy_listeners_are_open() {
    let fixtures = Fixtures::new();
    let upstream = Upstream::start();
    let ports = Ports::new();
    // An OP that accepts connections and never answers holds the proxy service back (it
    // waits for the first discovery attempt, 10 s) while the admin listener already runs.
    let silent = TcpListener::bind("127.0.0.1:0").expect("silent op");
    let silent_port = silent.local_addr().expect("addr").port();
    let held = Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = held.clone();
    std::thread::spawn(move || {
        for stream in silent.incoming().flatten() {
            keep.lock().expect("lock").push(stream);
        }
    });
    std::fs::write(fixtures.path("oidc.secret"), "secret").expect("write");
    let providers = format!(
        "identity_providers:\n  - id: corp\n    kind: oidc\n    issuer: https://127.0.0.1:{silent_port}\n    client_id: portcullis\n    client_secret: file:oidc.secret\n"
    );
    let yaml = fixtures
        .config(&ports, "", &plain_app(&upstream))
        .replace("session:\n", &format!("{providers}session:\n"));
    let config = fixtures.path("portcullis.yaml");
    std::fs::write(&config, yaml).expect("write");
    let mut child = Command::new(binary())
        .args(["run", "-c", config.to_str().expect("utf8")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let readyz = || {
        try_raw_http(
            ports.admin,
            b"GET /readyz HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n",
        )
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut early = None;
    while Instant::now() < deadline && early.is_none() {
        early = readyz();
        std::thread::sleep(Duration::from_millis(50));
    }
    let early = early.expect("admin listener answers at once");
    assert!(early.starts_with("HTTP/1.1 503"), "{early}");
    assert!(early.contains("proxy listeners are not open"), "{early}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    while Instant::now() < deadline {
        last = readyz().unwrap_or_default();
        if last.starts_with("HTTP/1.1 200") {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        last.starts_with("HTTP/1.1 200"),
        "ready once listening: {last}"
    );
}

/// One keep-alive client that never retries: a request that fails is a failure.
struct Tally {
    ok: AtomicUsize,
    failed: AtomicUsize,
    closes: AtomicUsize,
    errors: std::sync::Mutex<Vec<String>>,
}

fn keep_alive_client(port: u16, id: usize, stop: Arc<AtomicBool>, tally: Arc<Tally>) {
    let mut connection: Option<BufReader<TcpStream>> = None;
    let mut n = 0usize;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let request = if n.is_multiple_of(2) {
            format!("POST /post/{id}/{n} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n\r\nhello world")
        } else {
            format!("GET /get/{id}/{n} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        };
        if connection.is_none() {
            match TcpStream::connect(("127.0.0.1", port)) {
                Ok(stream) => {
                    stream
                        .set_read_timeout(Some(Duration::from_secs(10)))
                        .expect("timeout");
                    connection = Some(BufReader::new(stream));
                }
                Err(e) => {
                    tally.failed.fetch_add(1, Ordering::SeqCst);
                    tally
                        .errors
                        .lock()
                        .expect("lock")
                        .push(format!("connect: {e}"));
                    continue;
                }
            }
        }
        let Some(reader) = connection.as_mut() else {
            continue;
        };
        match exchange(reader, request.as_bytes()) {
            Ok(close) => {
                tally.ok.fetch_add(1, Ordering::SeqCst);
                if close {
                    tally.closes.fetch_add(1, Ordering::SeqCst);
                    connection = None;
                }
            }
            Err(e) => {
                tally.failed.fetch_add(1, Ordering::SeqCst);
                tally
                    .errors
                    .lock()
                    .expect("lock")
                    .push(format!("request {n}: {e}"));
                connection = None;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends one request and reads its whole response; `Ok(true)` when the server said
/// `Connection: close`.
fn exchange(reader: &mut BufReader<TcpStream>, request: &[u8]) -> Result<bool, String> {
    reader
        .get_mut()
        .write_all(request)
        .map_err(|e| format!("write: {e}"))?;
    let mut status = String::new();
    reader
        .read_line(&mut status)
        .map_err(|e| format!("read: {e}"))?;
    if !status.starts_with("HTTP/1.1 200") {
        return Err(format!("status line {status:?}"));
    }
    let (mut length, mut close) = (None, false);
    loop {
        let mut line = String::new();
        reader
            .read_line(&mut line)
            .map_err(|e| format!("read header: {e}"))?;
        if line.is_empty() {
            return Err("closed inside the headers".into());
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse::<usize>().ok();
        }
        if lower.starts_with("connection:") && lower.contains("close") {
            close = true;
        }
    }
    let length = length.ok_or("no content-length")?;
    let mut body = vec![0; length];
    reader
        .read_exact(&mut body)
        .map_err(|e| format!("body: {e}"))?;
    Ok(close)
}

#[test]
fn an_upgrade_loses_no_request_of_keep_alive_clients() {
    let fixtures = Fixtures::new();
    let upstream = Upstream::start();
    let ports = Ports::new();
    let yaml = fixtures
        .config(&ports, "", &plain_app(&upstream))
        .replace("grace_period: 0s", "grace_period: 4s");
    let mut old = Proxy::start(&fixtures, ports, &yaml);
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally {
        ok: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        closes: AtomicUsize::new(0),
        errors: std::sync::Mutex::new(Vec::new()),
    });
    let clients: Vec<_> = (0..20)
        .map(|id| {
            let (stop, tally) = (stop.clone(), tally.clone());
            std::thread::spawn(move || keep_alive_client(ports.http, id, stop, tally))
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    let mut new = old.spawn_upgrade();
    std::thread::sleep(Duration::from_millis(500));
    old.signal("-QUIT");
    // 5 s of hand-over (Pingora), the 4 s grace period, then the old process exits.
    let exited = old.wait_exit(Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(1));
    let served_after = tally.ok.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().expect("client");
    }
    let errors = tally.errors.lock().expect("lock").clone();
    let logs = if errors.is_empty() {
        String::new()
    } else {
        format!("{}\n---\n{}", old.logs(), new.logs())
    };
    assert!(exited.is_some(), "the old process exits after the handover");
    assert_eq!(
        tally.failed.load(Ordering::SeqCst),
        0,
        "failed requests: {errors:?}\n{logs}"
    );
    assert!(
        tally.closes.load(Ordering::SeqCst) >= 20,
        "every connection to the old process was closed after a response, not under a request"
    );
    assert!(
        tally.ok.load(Ordering::SeqCst) > served_after,
        "the new process serves"
    );
    new.stop();
}

/// Requests to the plain app, `n` of them.
fn load(port: u16, n: usize) {
    for i in 0..n {
        let answer = raw_http(
            port,
            format!("GET /load/{i} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        );
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
}

#[test]
fn a_crash_under_load_and_a_torn_audit_tail_do_not_keep_the_proxy_down() {
    let fixtures = Fixtures::new();
    let upstream = Upstream::start();
    let ports = Ports::new();
    // Buffered writes (`fsync: never`, large checkpoint interval): a kill leaves records after
    // the last checkpoint, and often a torn line.
    let yaml = fixtures
        .config(&ports, "", &plain_app(&upstream))
        .replace("fsync: always", "fsync: never\n  checkpoint_every: 100000");
    let mut proxy = Proxy::start(&fixtures, ports, &yaml);
    let loaders: Vec<_> = (0..4)
        .map(|_| std::thread::spawn(move || load(ports.http, 50)))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    proxy.signal("-KILL");
    for loader in loaders {
        let _ = loader.join();
    }
    proxy.wait_exit(Duration::from_secs(5)).expect("killed");

    // Cut the file in the middle of its last whole line, as a power cut leaves it (whatever
    // the kill itself left after that line goes too).
    let text = std::fs::read(fixtures.audit_log()).expect("audit");
    let whole_end = text
        .iter()
        .rposition(|&b| b == b'\n')
        .expect("records were written before the kill")
        + 1;
    let last_start = text[..whole_end - 1]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p + 1);
    let cut = last_start + (whole_end - last_start) / 2;
    let torn_part = text[last_start..cut].to_vec();
    std::fs::write(fixtures.audit_log(), &text[..cut]).expect("truncate");

    // The restart goes on: it serves, and records what it found.
    let ports = Ports::new();
    let mut proxy = Proxy::start(
        &fixtures,
        ports,
        &fixtures.config(&ports, "", &plain_app(&upstream)),
    );
    load(ports.http, 1);
    proxy.stop();
    let records = audit_records(&fixtures.audit_log());
    let unclean: Vec<_> = records
        .iter()
        .filter(|r| r["event"] == "unclean-shutdown")
        .collect();
    assert_eq!(unclean.len(), 1, "{unclean:?}");
    let record = unclean[0];
    assert_eq!(record["torn_bytes"], torn_part.len());
    assert!(record["unsealed_records"].as_u64().expect("count") >= 1);
    let aside = record["torn_file"].as_str().expect("torn file");
    assert_eq!(std::fs::read(aside).expect("evidence kept"), torn_part);
    let (ok, report) = fixtures.verify_audit(&fixtures.audit_log());
    assert!(ok, "{report}");
    assert!(report.contains("unclean-shutdown"), "{report}");
}

#[test]
fn a_kill_without_a_torn_line_is_recorded_too() {
    let fixtures = Fixtures::new();
    let upstream = Upstream::start();
    let ports = Ports::new();
    let yaml = fixtures.config(&ports, "", &plain_app(&upstream));
    let mut proxy = Proxy::start(&fixtures, ports, &yaml);
    load(ports.http, 5);
    // `fsync: always`: each record is whole on disk when its request is answered.
    let _ = audit_records(&fixtures.audit_log());
    std::thread::sleep(Duration::from_millis(300));
    proxy.signal("-KILL");
    proxy.wait_exit(Duration::from_secs(5)).expect("killed");
    let before = std::fs::read(fixtures.audit_log()).expect("audit");
    assert_eq!(before.last(), Some(&b'\n'), "whole lines only");
    let ports = Ports::new();
    let mut proxy = Proxy::start(
        &fixtures,
        ports,
        &fixtures.config(&ports, "", &plain_app(&upstream)),
    );
    proxy.stop();
    let records = audit_records(&fixtures.audit_log());
    let unclean: Vec<_> = records
        .iter()
        .filter(|r| r["event"] == "unclean-shutdown")
        .collect();
    assert_eq!(unclean.len(), 1);
    assert_eq!(unclean[0]["torn_bytes"], 0);
    assert!(unclean[0]["unsealed_records"].as_u64().expect("count") >= 5);
    let (ok, report) = fixtures.verify_audit(&fixtures.audit_log());
    assert!(ok, "{report}");
}
