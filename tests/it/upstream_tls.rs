//! Upstreams over TLS: certificate verification with an extra CA, and mTLS with a client
//! certificate, against a real TLS server (`openssl s_server`).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{client, free_port, run_ok, Fixtures, Ports, Proxy};

/// `openssl s_server -www` on a free port, requiring a client certificate from `client_ca`
/// when given. Killed on drop.
struct TlsUpstream {
    child: Child,
    port: u16,
}

impl TlsUpstream {
    fn start(
        cert: &std::path::Path,
        key: &std::path::Path,
        client_ca: Option<&std::path::Path>,
    ) -> TlsUpstream {
        let port = free_port();
        let mut command = Command::new("openssl");
        command.args(["s_server", "-www", "-accept", &format!("127.0.0.1:{port}")]);
        command.arg("-cert").arg(cert).arg("-key").arg(key);
        if let Some(ca) = client_ca {
            command.arg("-Verify").arg("1").arg("-CAfile").arg(ca);
        }
        let child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl s_server");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "s_server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        TlsUpstream { child, port }
    }
}

impl Drop for TlsUpstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn https_upstream_is_verified_and_mtls_presents_the_client_certificate() {
    let fixtures = Fixtures::new();
    // The upstream's own CA and server certificate, and a separate CA for client certificates.
    let upstream_pki = fixtures.path("upstream-pki");
    run_ok(&[
        "keys",
        "dev-cert",
        "--out",
        upstream_pki.to_str().expect("utf8"),
        "--name",
        "localhost",
    ]);
    let client_pki = fixtures.path("client-pki");
    run_ok(&[
        "keys",
        "dev-cert",
        "--out",
        client_pki.to_str().expect("utf8"),
        "--name",
        "portcullis-client",
    ]);
    let upstream = TlsUpstream::start(
        &upstream_pki.join("server.crt"),
        &upstream_pki.join("server.key"),
        Some(&client_pki.join("ca.crt")),
    );

    let app = |id: &str, host: &str, tls: &str| {
        format!("  - id: {id}\n    hosts: [{host}]\n    upstream: https://localhost:{}\n    public_paths: [\"/**\"]\n    upstream_tls:\n{tls}", upstream.port)
    };
    let apps = [
        app(
            "mtls",
            "a.test",
            &format!(
                "      ca_file: \"{}\"\n      client_cert: \"{}\"\n      client_key: \"{}\"\n",
                upstream_pki.join("ca.crt").display(),
                client_pki.join("server.crt").display(),
                client_pki.join("server.key").display()
            ),
        ),
        // Trusts the right CA but presents no client certificate: the upstream refuses.
        app(
            "no-client-cert",
            "b.test",
            &format!(
                "      ca_file: \"{}\"\n",
                upstream_pki.join("ca.crt").display()
            ),
        ),
        // Does not trust the upstream's CA: Portcullis refuses the upstream.
        app(
            "untrusted",
            "localhost",
            &format!("      ca_file: \"{}\"\n", fixtures.ca.display()),
        ),
    ]
    .concat();
    let ports = Ports::new();
    let proxy = Proxy::start(&fixtures, ports, &fixtures.config(&ports, "", &apps));
    let http = client(&fixtures, &proxy);
    let get = |host: &str| http.get(format!("https://{host}:{}/", ports.https)).send();

    let ok = get("a.test").await.expect("send");
    assert_eq!(ok.status(), 200);
    let page = ok.text().await.expect("text");
    assert!(
        page.contains("Client certificate"),
        "s_server saw our client certificate: {page}"
    );

    assert_eq!(get("b.test").await.expect("send").status(), 502);
    let refused = get("localhost").await.expect("send");
    assert_eq!(refused.status(), 502);
    let body: serde_json::Value = refused.json().await.expect("json");
    assert_eq!(
        body["error"], "bad_gateway",
        "our own framed error, no internal detail: {body}"
    );
}
