//! `portcullis demo` runs the whole product from one command.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::browser::sign_in_local;
use crate::common::{binary, free_port};

#[tokio::test]
async fn demo_serves_the_sample_chat_app_over_https_and_streams_an_answer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (port, http_port, admin_port) = (free_port(), free_port(), free_port());
    let mut child = Command::new(binary())
        .args(["demo", "--dir", dir.path().to_str().expect("utf8")])
        .args([
            "--port",
            &port.to_string(),
            "--http-port",
            &http_port.to_string(),
            "--admin-port",
            &admin_port.to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn demo");
    let ca = dir.path().join("certs/ca.crt");
    let deadline = Instant::now() + Duration::from_secs(30);
    let client = loop {
        if ca.is_file() && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            let pem = std::fs::read(&ca).expect("ca");
            break reqwest::Client::builder()
                .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("pem"))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client");
        }
        assert!(Instant::now() < deadline, "demo did not start");
        std::thread::sleep(Duration::from_millis(100));
    };
    let base = format!("https://127.0.0.1:{port}");
    // Nothing is public: the demo app needs a sign-in.
    let login_page = loop {
        match client.get(format!("{base}/.portcullis/login")).send().await {
            Ok(r) if r.status() == 200 => break r,
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
            other => panic!("sign-in page not served: {other:?}"),
        }
    };
    let html = login_page.text().await.expect("html");
    assert!(html.contains("Demo users"), "{html}");
    let passwords = std::fs::read_to_string(dir.path().join("passwords.txt")).expect("passwords");
    let cookie = sign_in(&client, &base, &passwords, "alice").await;
    let bob = sign_in(&client, &base, &passwords, "bob").await;

    let page = client
        .get(format!("{base}/"))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("page")
        .text()
        .await
        .expect("text");
    assert!(page.contains("Demo chat app"), "{page}");

    let headers: serde_json::Value = client
        .get(format!("{base}/api/headers"))
        .header("cookie", &cookie)
        .header("X-Portcullis-User", "mallory")
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(headers["x-forwarded-proto"], "https");
    assert_eq!(
        headers["x-portcullis-user"], "alice",
        "never the forged value"
    );
    assert!(headers["x-portcullis-assertion"].is_string(), "{headers}");
    assert!(headers.get("cookie").is_none(), "{headers}");

    // Two users, different access: alice (billing role) reaches the billing agent, bob gets 403.
    let agent = format!("{base}/api/agents/billing-specialist/run");
    let alice_agent = client
        .post(&agent)
        .header("cookie", &cookie)
        .send()
        .await
        .expect("send");
    assert_eq!(alice_agent.status(), 200);
    let answer: serde_json::Value = alice_agent.json().await.expect("json");
    assert_eq!(answer["user"], "alice");
    let bob_agent = client
        .post(&agent)
        .header("cookie", &bob)
        .send()
        .await
        .expect("send");
    assert_eq!(bob_agent.status(), 403);
    let bob_own = client
        .get(format!("{base}/api/entities/acme/tickets"))
        .header("cookie", &bob)
        .send()
        .await
        .expect("send");
    assert_eq!(bob_own.status(), 200, "bob's own entity");
    let bob_other = client
        .get(format!("{base}/api/entities/globex/tickets"))
        .header("cookie", &bob)
        .send()
        .await
        .expect("send");
    assert_eq!(bob_other.status(), 403, "another entity's data");

    let mut stream = client
        .get(format!("{base}/api/chat"))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("send");
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    let mut chunks = 0;
    let mut text = String::new();
    while let Some(chunk) = stream.chunk().await.expect("chunk") {
        chunks += 1;
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(
        text.contains("\"token\"") && text.contains("event: done"),
        "{text}"
    );
    assert!(
        chunks > 5,
        "the answer arrives in many pieces, not one: {chunks}"
    );

    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let audit = std::fs::read_to_string(dir.path().join("audit.jsonl")).expect("audit log");
    assert!(audit.contains("\"event\":\"access\""));
    assert!(audit.contains("\"event\":\"login-succeeded\""));
    let denied: Vec<serde_json::Value> = audit
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|r: &serde_json::Value| r["event"] == "access-denied" && r["user"] == "bob")
        .collect();
    assert!(
        denied
            .iter()
            .any(|r| r["reason"] == "role-missing"
                && r["path"] == "/api/agents/billing-specialist/run"),
        "{denied:?}"
    );
    assert!(
        denied.iter().any(|r| r["reason"] == "entity-mismatch"),
        "{denied:?}"
    );
}

/// Signs in a demo user with the password `portcullis demo` generated; the session cookie.
async fn sign_in(client: &reqwest::Client, base: &str, passwords: &str, user: &str) -> String {
    let password = passwords
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{user} ")))
        .expect("password");
    sign_in_local(client, base, "demo", user, password, &[]).await
}
