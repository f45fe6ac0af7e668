//! Test harness: a real upstream on 127.0.0.1:0 and the real `portcullis` binary in front.

pub mod browser;
pub mod chromium;
pub mod op;
pub mod redis;
pub mod saml;
pub mod upstream;

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use upstream::Upstream;

/// The binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_portcullis")
}

/// A free loopback port, each one handed out once per test run. Taken below the kernel's
/// ephemeral range (`ip_local_port_range`, usually from 32768), where the client side of the
/// tests' own connections never lands: a port checked free stays free until its server binds it.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000u32, ephemeral_low.max(12_000));
    // Test runs side by side (CI, two checkouts) start at different places.
    let start = std::process::id() * 7919;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(n < high - low, "no free loopback port left below {high}");
        let port = u16::try_from(low + (start + n) % (high - low)).expect("port");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Files every test config needs: a dev CA + server cert, a session key, an audit key.
pub struct Fixtures {
    pub dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub session_key: PathBuf,
    pub audit_key: PathBuf,
    pub audit_public_key: String,
}

impl Fixtures {
    pub fn new() -> Fixtures {
        let dir = tempfile::tempdir().expect("tempdir");
        let certs = dir.path().join("certs");
        run_ok(&[
            "keys",
            "dev-cert",
            "--out",
            certs.to_str().expect("utf8"),
            "--name",
            "localhost",
            "--name",
            "127.0.0.1",
            "--name",
            "a.test",
            "--name",
            "b.test",
            "--name",
            "*.wild.test",
        ]);
        let generated = run_ok(&["keys", "generate"]);
        let value = |name: &str| {
            generated
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name}=")))
                .expect("key in output")
                .to_string()
        };
        let session_key = dir.path().join("session.key");
        std::fs::write(&session_key, value("PORTCULLIS_SESSION_KEY")).expect("write");
        let audit_key = dir.path().join("audit.key");
        std::fs::write(&audit_key, value("PORTCULLIS_AUDIT_KEY")).expect("write");
        Fixtures {
            ca: certs.join("ca.crt"),
            cert: certs.join("server.crt"),
            key: certs.join("server.key"),
            session_key,
            audit_key,
            audit_public_key: value("PORTCULLIS_AUDIT_PUBLIC_KEY"),
            dir,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A config with HTTPS + HTTP listeners and the given `apps:` body; `extra_server` is
    /// inserted under `server:` (indented by 2).
    pub fn config(&self, ports: &Ports, extra_server: &str, apps: &str) -> String {
        format!(
            "server:\n  public_url: https://localhost:{https}\n  https:\n    listen: [\"127.0.0.1:{https}\"]\n    certificates: [{{ cert: \"{cert}\", key: \"{key}\" }}]\n  http:\n    listen: [\"127.0.0.1:{http}\"]\n  pid_file: \"{dir}/p.pid\"\n  upgrade_sock: \"{dir}/u.sock\"\n  threads: 1\n  grace_period: 0s\n  shutdown_timeout: 1s\n  log:\n    level: warn\n{extra_server}session:\n  encryption_keys: [\"file:{session}\"]\naudit:\n  path: \"{dir}/audit.jsonl\"\n  signing_key: \"file:{audit}\"\n  fsync: always\nadmin:\n  listen: 127.0.0.1:{admin}\napps:\n{apps}",
            https = ports.https,
            http = ports.http,
            admin = ports.admin,
            cert = self.cert.display(),
            key = self.key.display(),
            dir = self.dir.path().display(),
            session = self.session_key.display(),
            audit = self.audit_key.display(),
        )
    }

    /// The config of one replica of `shared`'s deployment: these fixtures' ports, pid and
    /// audit files; the public URL https://a.test, session key and certificate of `shared`
    /// (replicas of one deployment share them). `sections` go before `session:`.
    pub fn replica_config(
        &self,
        shared: &Fixtures,
        ports: &Ports,
        sections: &str,
        apps: &str,
    ) -> String {
        let mut yaml = self.config(ports, "", apps).replace(
            &format!("public_url: https://localhost:{}", ports.https),
            "public_url: https://a.test",
        );
        for (own, theirs) in [
            (&self.session_key, &shared.session_key),
            (&self.cert, &shared.cert),
            (&self.key, &shared.key),
        ] {
            yaml = yaml.replace(&own.display().to_string(), &theirs.display().to_string());
        }
        yaml.replace("session:\n", &format!("{sections}session:\n"))
    }

    /// [`Fixtures::config`] with more `audit:` keys (`audit`: lines indented two spaces).
    pub fn audit_config(&self, ports: &Ports, apps: &str, audit: &str) -> String {
        self.config(ports, "", apps)
            .replace("  fsync: always\n", &format!("  fsync: always\n{audit}"))
    }

    pub fn audit_log(&self) -> PathBuf {
        self.path("audit.jsonl")
    }

    /// `portcullis audit verify` on `file` with these fixtures' public key: whether it
    /// verifies, and what it printed (stdout, then stderr).
    pub fn verify_audit(&self, file: &Path) -> (bool, String) {
        let out = Command::new(binary())
            .args([
                "audit",
                "verify",
                file.to_str().expect("utf8"),
                "--key",
                &self.audit_public_key,
            ])
            .output()
            .expect("run audit verify");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }
}

/// An Argon2id hash of `password` from `portcullis hash-password` (the way operators make them).
pub fn hash_password(password: &str) -> String {
    use std::io::Write;
    let mut child = Command::new(binary())
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{password}\n").as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "hash-password failed");
    String::from_utf8(out.stdout)
        .expect("utf8")
        .trim()
        .to_string()
}

/// Runs the binary with `args`, expecting success; returns stdout.
pub fn run_ok(args: &[&str]) -> String {
    let out = Command::new(binary())
        .args(args)
        .output()
        .expect("run portcullis");
    assert!(
        out.status.success(),
        "portcullis {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Listener ports of one proxy instance.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub https: u16,
    pub http: u16,
    pub admin: u16,
}

impl Ports {
    pub fn new() -> Ports {
        Ports {
            https: free_port(),
            http: free_port(),
            admin: free_port(),
        }
    }
}

/// A running `portcullis run`; stopped (SIGTERM, then SIGKILL) on drop.
pub struct Proxy {
    child: Option<Child>,
    pub ports: Ports,
    pub config: PathBuf,
}

impl Proxy {
    pub fn start(fixtures: &Fixtures, ports: Ports, yaml: &str) -> Proxy {
        let config = fixtures.path("portcullis.yaml");
        std::fs::write(&config, yaml).expect("write config");
        let child = Command::new(binary())
            .args(["run", "-c", config.to_str().expect("utf8")])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn portcullis");
        let mut proxy = Proxy {
            child: Some(child),
            ports,
            config,
        };
        // A PROXY protocol listener answers only after a PROXY header (a health-check one).
        let prefix: &[u8] = if yaml.contains("proxy_protocol: true") {
            b"PROXY UNKNOWN\r\n"
        } else {
            b""
        };
        proxy.wait_ready(prefix);
        proxy
    }

    fn wait_ready(&mut self, prefix: &[u8]) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let up = |port| TcpStream::connect(("127.0.0.1", port)).is_ok();
            // Ports are bound before the proxy service runs (it waits for the audit writer),
            // so ready means: a real request gets a real answer.
            if up(self.ports.https) && up(self.ports.admin) {
                let request = [
                    prefix,
                    b"GET / HTTP/1.1\r\nHost: readiness.invalid\r\nConnection: close\r\n\r\n",
                ]
                .concat();
                let probe = try_raw_http(self.ports.http, &request);
                // 404 (unknown host), or 403 when a server-wide IP allowlist refuses the probe.
                if probe
                    .is_some_and(|p| p.starts_with("HTTP/1.1 404") || p.starts_with("HTTP/1.1 403"))
                {
                    return;
                }
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                let mut err = String::new();
                if let Some(mut stderr) = self.child.as_mut().and_then(|c| c.stderr.take()) {
                    let _ = stderr.read_to_string(&mut err);
                }
                panic!("portcullis exited with {status}: {err}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("portcullis did not start listening");
    }

    /// Starts `portcullis run --upgrade` with the config file of `self`; it takes the
    /// sockets once `self` gets SIGQUIT.
    pub fn spawn_upgrade(&self) -> Proxy {
        let child = Command::new(binary())
            .args([
                "run",
                "--upgrade",
                "-c",
                self.config.to_str().expect("utf8"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn portcullis --upgrade");
        Proxy {
            child: Some(child),
            ports: self.ports,
            config: self.config.clone(),
        }
    }

    /// The process id (while running).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).expect("running")
    }

    /// Sends a signal (`-QUIT`, `-KILL`, …) to the process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.pid().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill {signal}");
    }

    /// Waits up to `limit` for the process to exit; its exit status.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// The value of the sample `name` (with its labels, as printed) on `/metrics`.
    pub fn metric(&self, name: &str) -> Option<String> {
        let text = raw_http(
            self.ports.admin,
            b"GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n",
        );
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ').map(str::to_string))
    }

    pub fn https(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ports.https))
    }

    /// Stops the process and returns what it logged (for failure messages).
    pub fn logs(&mut self) -> String {
        let mut text = String::new();
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            if let Some(mut stderr) = child.stderr.take() {
                let _ = stderr.read_to_string(&mut text);
            }
            let _ = child.wait();
        }
        text
    }

    /// Graceful stop; waits for exit so the audit trail is sealed.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
            panic!("portcullis did not stop on SIGTERM");
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// An HTTPS client trusting the fixture CA, resolving test names to the proxy, no redirects.
pub fn client(fixtures: &Fixtures, proxy: &Proxy) -> reqwest::Client {
    let ca = std::fs::read(&fixtures.ca).expect("ca");
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("pem"))
        .resolve("a.test", proxy.https())
        .resolve("b.test", proxy.https())
        .resolve("x.wild.test", proxy.https())
        .resolve("localhost", proxy.https())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// A client for plain HTTP (the test IdPs, the OP) with the default roots and no redirects
/// followed.
pub fn plain() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// [`raw_http`] that answers `None` when nothing listens yet.
pub fn try_raw_http(port: u16, request: &[u8]) -> Option<String> {
    TcpStream::connect(("127.0.0.1", port)).ok()?;
    Some(raw_http(port, request))
}

/// Sends raw bytes over plain TCP and returns the whole response text.
pub fn raw_http(port: u16, request: &[u8]) -> String {
    use std::io::Write;
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    stream.write_all(request).expect("write");
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads the audit log as JSON values.
pub fn audit_records(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("audit line is JSON"))
        .collect()
}

/// The `detail` of every refused sign-in and logout message (`login-failed`,
/// `logout-refused`) in the audit file at `path`, in order, once there are `count` of them.
pub async fn refusals(path: &Path, count: usize) -> Vec<String> {
    audit_until(path, count, |r| {
        r["event"] == "login-failed" || r["event"] == "logout-refused"
    })
    .await
    .iter()
    .filter_map(|r| r["detail"].as_str().map(str::to_string))
    .collect()
}

/// The audit records that `keep` selects, once there are at least `count` of them: the audit
/// writer runs on its own, so a record may land a moment after the response (5 s at most).
pub async fn audit_until(
    path: &Path,
    count: usize,
    keep: impl Fn(&serde_json::Value) -> bool,
) -> Vec<serde_json::Value> {
    let mut found = Vec::new();
    for _ in 0..50 {
        found = audit_records(path)
            .into_iter()
            .filter(|r| keep(r))
            .collect();
        if found.len() >= count {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    found
}

/// A WebSocket through Portcullis's TLS listener on `port` (certificate from `ca`) for
/// `wss://a.test:<port><path>`, with `cookie` when given; the socket and the handshake's
/// answer.
pub async fn wss(
    ca: &Path,
    port: u16,
    path: &str,
    cookie: Option<&str>,
) -> (
    tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
    tokio_tungstenite::tungstenite::handshake::client::Response,
) {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut std::fs::read(ca).expect("ca").as_slice()) {
        roots.add(cert.expect("cert")).expect("root");
    }
    let tls_config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls_config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("tcp");
    let name = rustls::pki_types::ServerName::try_from("a.test").expect("name");
    let tls = connector.connect(name, tcp).await.expect("tls");
    let mut request = format!("wss://a.test:{port}{path}")
        .into_client_request()
        .expect("request");
    if let Some(cookie) = cookie {
        request
            .headers_mut()
            .insert("cookie", cookie.parse().expect("cookie header"));
    }
    tokio_tungstenite::client_async(request, tls)
        .await
        .expect("websocket upgrade")
}
