//! Audit sinks against real receivers: rsyslog (Debian's, with its GnuTLS driver) over
//! RFC 5425 TLS, through an outage and a Portcullis restart during it; an HTTP collector that
//! refuses the first batches.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::{free_port, raw_http, Fixtures, Ports, Proxy, Upstream};

fn app(upstream: &Upstream) -> String {
    format!(
        "  - id: chat\n    hosts: [127.0.0.1]\n    upstream: {}\n    allow_plain_http: true\n    public_paths: [\"/**\"]\n",
        upstream.url()
    )
}

fn requests(port: u16, prefix: &str, range: std::ops::Range<usize>) {
    for i in range {
        let answer = raw_http(
            port,
            format!("GET /{prefix}/{i} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        );
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// rsyslogd in the foreground with a TLS listener (the fixtures' certificate), writing
/// `APP-NAME|MSGID|MSG` per received message to `out`.
struct Rsyslog {
    child: Child,
}

impl Rsyslog {
    fn start(fixtures: &Fixtures, port: u16, out: &Path) -> Rsyslog {
        let work = fixtures.path(&format!("rsyslog-{}", out.display().to_string().len()));
        std::fs::create_dir_all(&work).expect("work dir");
        let config = work.join("rsyslog.conf");
        std::fs::write(
            &config,
            format!(
                r#"global(workDirectory="{work}"
  defaultNetstreamDriver="gtls"
  defaultNetstreamDriverCAFile="{ca}"
  defaultNetstreamDriverCertFile="{cert}"
  defaultNetstreamDriverKeyFile="{key}")
module(load="imtcp" streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon")
input(type="imtcp" address="127.0.0.1" port="{port}")
template(name="fields" type="string" string="%app-name%|%msgid%|%msg%\n")
action(type="omfile" file="{out}" template="fields")
"#,
                work = work.display(),
                ca = fixtures.ca.display(),
                cert = fixtures.cert.display(),
                key = fixtures.key.display(),
                out = out.display(),
            ),
        )
        .expect("rsyslog config");
        let child = Command::new("rsyslogd")
            .args(["-n", "-f"])
            .arg(&config)
            .arg("-i")
            .arg(work.join("rsyslogd.pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start rsyslogd (Debian rsyslog and rsyslog-gnutls; scripts/deps.sh)");
        wait_for("rsyslogd to listen", Duration::from_secs(10), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Rsyslog { child }
    }

    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `(msgid, record)` of every message rsyslog wrote to `out`.
fn received(out: &Path) -> Vec<(String, serde_json::Value)> {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .map(|line| {
            let mut parts = line.splitn(3, '|');
            let app = parts.next().unwrap_or_default();
            assert_eq!(app, "portcullis", "APP-NAME of {line}");
            let msgid = parts.next().unwrap_or_default().to_string();
            let record = serde_json::from_str(parts.next().unwrap_or_default().trim())
                .unwrap_or_else(|e| panic!("MSG is the record ({e}): {line}"));
            (msgid, record)
        })
        .collect()
}

fn paths_with(records: &[(String, serde_json::Value)], prefix: &str) -> Vec<String> {
    records
        .iter()
        .filter_map(|(_, r)| r["path"].as_str())
        .filter(|p| p.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

#[test]
fn records_reach_rsyslog_over_tls_through_an_outage_and_a_restart() {
    let fixtures = Fixtures::new();
    let upstream = Upstream::start();
    let ports = Ports::new();
    let syslog_port = free_port();
    let first_run = fixtures.path("received-1.log");
    let rsyslog = Rsyslog::start(&fixtures, syslog_port, &first_run);
    let yaml = fixtures.audit_config(
        &ports,
        &app(&upstream),
        &format!(
            "  sinks:\n    - {{ id: siem, kind: syslog, address: \"tcp+tls://127.0.0.1:{syslog_port}\", ca: \"{}\" }}\n",
            fixtures.ca.display()
        ),
    );
    let mut proxy = Proxy::start(&fixtures, ports, &yaml);

    requests(ports.http, "before", 0..10);
    wait_for("10 records in rsyslog", Duration::from_secs(15), || {
        paths_with(&received(&first_run), "/before/").len() == 10
    });
    for (msgid, record) in received(&first_run) {
        assert_eq!(
            record["event"].as_str(),
            Some(msgid.as_str()),
            "MSGID is the event"
        );
        assert!(
            record["seq"].is_u64() && record["hash"].is_string(),
            "{record}"
        );
    }

    // The receiver goes away; 1,000 requests meanwhile, and Portcullis restarts halfway.
    rsyslog.stop();
    requests(ports.http, "outage", 0..500);
    proxy.stop();
    let mut proxy = Proxy::start(&fixtures, ports, &yaml);
    requests(ports.http, "outage", 500..1000);

    let second_run = fixtures.path("received-2.log");
    let rsyslog = Rsyslog::start(&fixtures, syslog_port, &second_run);
    wait_for(
        "the 1,000 records of the outage",
        Duration::from_secs(60),
        || paths_with(&received(&second_run), "/outage/").len() >= 1000,
    );
    let records = received(&second_run);
    let mut paths = paths_with(&records, "/outage/");
    assert_eq!(paths.len(), 1000, "none twice in one run of the receiver");
    paths.sort();
    paths.dedup();
    assert_eq!(paths.len(), 1000, "every request of the outage, once");
    let seqs: Vec<u64> = records
        .iter()
        .filter_map(|(_, r)| r["seq"].as_u64())
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order");
    proxy.stop();
    rsyslog.stop();
}

/// An HTTP collector: answers 503 to the first `refuse` requests, then 200, and keeps the
/// accepted requests' headers and bodies.
struct Collector {
    port: u16,
    accepted: Arc<Mutex<Vec<(String, String)>>>,
}

impl Collector {
    /// Plain HTTP, or HTTPS with `tls` (the fixtures' certificate and key).
    fn start(refuse: usize, tls: Option<&Fixtures>) -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let accepted: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let refused = Arc::new(Mutex::new(0usize));
        let keep = accepted.clone();
        let tls = tls.map(|f| Arc::new(server_config(&f.cert, &f.key)));
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let keep = keep.clone();
                let refused = refused.clone();
                let tls = tls.clone();
                std::thread::spawn(move || match tls {
                    Some(config) => {
                        let Ok(connection) = rustls::ServerConnection::new(config) else {
                            return;
                        };
                        let stream = rustls::StreamOwned::new(connection, stream);
                        serve(stream, refuse, &refused, &keep)
                    }
                    None => serve(stream, refuse, &refused, &keep),
                });
            }
        });
        Collector { port, accepted }
    }
}

fn server_config(cert: &Path, key: &Path) -> rustls::ServerConfig {
    let certs = rustls_pemfile::certs(&mut std::fs::read(cert).expect("cert").as_slice())
        .collect::<Result<Vec<_>, _>>()
        .expect("certs");
    let key = rustls_pemfile::private_key(&mut std::fs::read(key).expect("key").as_slice())
        .expect("key")
        .expect("a key");
    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config")
}

fn serve<S: Read + Write>(
    stream: S,
    refuse: usize,
    refused: &Mutex<usize>,
    accepted: &Mutex<Vec<(String, String)>>,
) {
    let mut reader = BufReader::new(stream);
    loop {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        let length = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse::<usize>().ok())?
            })
            .unwrap_or(0);
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let status = {
            let mut refused = refused.lock().expect("lock");
            if *refused < refuse {
                *refused += 1;
                "503 Service Unavailable"
            } else {
                accepted
                    .lock()
                    .expect("lock")
                    .push((head, String::from_utf8_lossy(&body).into_owned()));
                "200 OK"
            }
        };
        let answer = format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n");
        let writer = reader.get_mut();
        if writer
            .write_all(answer.as_bytes())
            .and_then(|()| writer.flush())
            .is_err()
        {
            return;
        }
    }
}

#[test]
fn an_https_collector_gets_batches_with_its_token_after_refusing_some() {
    let fixtures = Fixtures::new();
    let upstream = Upstream::start();
    let ports = Ports::new();
    // HTTPS, verified against the CA the sink names.
    let collector = Collector::start(2, Some(&fixtures));
    let token: PathBuf = fixtures.path("hec.token");
    std::fs::write(&token, "Splunk 0d5c-test-token").expect("token");
    let yaml = fixtures.audit_config(
        &ports,
        &app(&upstream),
        &format!(
            "  sinks:\n    - kind: http\n      url: https://localhost:{}/services/collector/raw\n      ca: \"{}\"\n      headers: {{ Authorization: \"file:{}\" }}\n      batch: {{ max_records: 50, max_wait: 200ms }}\n",
            collector.port,
            fixtures.ca.display(),
            token.display()
        ),
    );
    let mut proxy = Proxy::start(&fixtures, ports, &yaml);
    requests(ports.http, "chat", 0..120);
    let delivered = || -> Vec<serde_json::Value> {
        collector
            .accepted
            .lock()
            .expect("lock")
            .iter()
            .flat_map(|(_, body)| {
                body.lines()
                    .map(|l| serde_json::from_str(l).expect("a JSON record per line"))
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    wait_for(
        "120 records at the collector",
        Duration::from_secs(30),
        || {
            delivered()
                .iter()
                .filter(|r| r["path"].as_str().is_some_and(|p| p.starts_with("/chat/")))
                .count()
                >= 120
        },
    );
    let mut paths: Vec<String> = delivered()
        .iter()
        .filter_map(|r| r["path"].as_str().map(str::to_string))
        .filter(|p| p.starts_with("/chat/"))
        .collect();
    assert_eq!(
        paths.len(),
        120,
        "each once: the refused batches were not counted"
    );
    paths.sort();
    paths.dedup();
    assert_eq!(paths.len(), 120);
    for (head, body) in collector.accepted.lock().expect("lock").iter() {
        assert!(
            head.lines()
                .any(|l| l.eq_ignore_ascii_case("authorization: Splunk 0d5c-test-token")),
            "{head}"
        );
        assert!(head
            .to_ascii_lowercase()
            .contains("content-type: application/x-ndjson"));
        assert!(body.lines().count() <= 50, "batches of at most max_records");
    }
    let metrics = raw_http(
        ports.admin,
        b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    );
    assert!(
        metrics.contains("portcullis_audit_sink_errors_total{sink=\"http-https://localhost"),
        "the refusals are counted"
    );
    proxy.stop();
}

#[test]
fn plain_tcp_frames_by_octet_count_and_udp_sends_one_datagram_per_record() {
    let fixtures = Fixtures::new();
    let upstream = Upstream::start();
    let ports = Ports::new();
    let tcp = TcpListener::bind("127.0.0.1:0").expect("tcp");
    let tcp_port = tcp.local_addr().expect("addr").port();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
    let udp_port = udp.local_addr().expect("addr").port();
    udp.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    // The TCP receiver reads `LEN SP MSG` frames (RFC 6587 octet counting).
    let frames: Arc<Mutex<Vec<String>>> = Arc::default();
    let keep = frames.clone();
    std::thread::spawn(move || {
        for stream in tcp.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            loop {
                let mut length = Vec::new();
                if reader.read_until(b' ', &mut length).unwrap_or(0) == 0 {
                    break;
                }
                let Ok(n) = String::from_utf8_lossy(&length).trim().parse::<usize>() else {
                    break;
                };
                let mut message = vec![0; n];
                if reader.read_exact(&mut message).is_err() {
                    break;
                }
                keep.lock()
                    .expect("lock")
                    .push(String::from_utf8_lossy(&message).into_owned());
            }
        }
    });
    let yaml = fixtures.audit_config(&ports, &app(&upstream), &format!("  sinks:\n    - {{ kind: syslog, address: \"tcp://127.0.0.1:{tcp_port}\" }}\n    - {{ kind: syslog, address: \"udp://127.0.0.1:{udp_port}\" }}\n"),
    );
    let mut proxy = Proxy::start(&fixtures, ports, &yaml);
    requests(ports.http, "plain", 0..5);
    let mut datagrams = Vec::new();
    let mut buffer = vec![0u8; 65_536];
    while datagrams
        .iter()
        .filter(|d: &&String| d.contains("\"path\":\"/plain/"))
        .count()
        < 5
    {
        let n = udp.recv(&mut buffer).expect("a datagram within 10 s");
        datagrams.push(String::from_utf8_lossy(&buffer[..n]).into_owned());
    }
    wait_for("5 TCP frames", Duration::from_secs(10), || {
        frames
            .lock()
            .expect("lock")
            .iter()
            .filter(|f| f.contains("\"path\":\"/plain/"))
            .count()
            == 5
    });
    for message in datagrams.iter().chain(frames.lock().expect("lock").iter()) {
        // <PRI>1 TIMESTAMP HOST APP PROCID MSGID SD MSG
        let parts: Vec<&str> = message.splitn(8, ' ').collect();
        assert_eq!(parts.len(), 8, "{message}");
        assert!(
            parts[0].starts_with('<') && parts[0].ends_with(">1"),
            "{message}"
        );
        assert_eq!(parts[3], "portcullis");
        assert_eq!(
            parts[5],
            serde_json::from_str::<serde_json::Value>(parts[7]).expect("MSG is the record")
                ["event"]
        );
        assert_eq!(parts[6], "-");
    }
    proxy.stop();
}

#[test]
fn a_sink_that_cannot_be_built_is_a_check_error_and_stops_the_start() {
    let fixtures = Fixtures::new();
    let upstream = Upstream::start();
    let ports = Ports::new();
    let yaml = fixtures.audit_config(
        &ports,
        &app(&upstream),
        "  sinks:\n    - { id: siem, kind: syslog, address: \"tcp+tls://127.0.0.1:6514\", ca: missing-ca.pem }\n",
    );
    let config = fixtures.path("portcullis.yaml");
    std::fs::write(&config, yaml).expect("config");
    let mut child = Command::new(crate::common::binary())
        .args(["run", "-c"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "still running with a sink it cannot build"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    assert!(!status.success());
    assert!(
        stderr.contains("audit sink siem") && stderr.contains("missing-ca.pem"),
        "{stderr}"
    );
    // `check` finds it first, with the key.
    let out = Command::new(crate::common::binary())
        .args(["check", "-c"])
        .arg(&config)
        .output()
        .expect("check");
    let report = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{report}");
    assert!(
        report.contains("audit.sinks[0]") && report.contains("missing-ca.pem"),
        "{report}"
    );
}
