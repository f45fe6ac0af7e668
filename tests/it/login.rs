//! Local users end to end: redirect or 401, sign-in form with CSRF protection, encrypted
//! session cookie, whoami, sign-out with revocation, throttling, TOTP, refused cookies.

use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use serde_json::Value;

use crate::common::browser::{
    cookie_header, cookies_of, form_value, set_cookie, sign_out, Jar, CSRF_COOKIE, SESSION_COOKIE,
};
use crate::common::{audit_records, client, hash_password, Fixtures, Ports, Proxy, Upstream};

const TOTP_SECRET_B32: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"; // "12345678901234567890"

fn start(fixtures: &Fixtures, upstream: &Upstream) -> Proxy {
    std::fs::write(fixtures.path("totp.secret"), TOTP_SECRET_B32).expect("write");
    let ports = Ports::new();
    let apps = format!(
        "  - id: staff\n    hosts: [a.test]\n    upstream: {url}\n    public_paths: [/healthz]\n    access: {{ user_types: [internal-user] }}\n",
        url = upstream.url()
    );
    let providers = format!(
        "identity_providers:\n  - id: corp\n    kind: local\n    display_name: Corp accounts\n    users:\n      - {{ username: alice, password_hash: \"{alice}\", user_type: internal-user, roles: [admin], email: alice@corp.test }}\n      - {{ username: bob, password_hash: \"{bob}\", user_type: external-user, entity: acme, totp_secret: \"file:totp.secret\" }}\n",
        alice = hash_password("correct horse battery"),
        bob = hash_password("bobs password"),
    );
    let yaml = fixtures
        .config(&ports, "", &apps)
        .replace("session:\n", &format!("{providers}session:\n"));
    Proxy::start(fixtures, ports, &yaml)
}

/// The value of the hidden field `name` of a form.
fn hidden(html: &str, name: &str) -> String {
    form_value(html, name).expect("hidden field")
}

fn totp_now() -> String {
    let secret = b"12345678901234567890";
    let counter = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_secs()
        / 30;
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret);
    let tag = ring::hmac::sign(&key, &counter.to_be_bytes());
    let d = tag.as_ref();
    let offset = usize::from(d[19] & 0x0f);
    let code = (u32::from(d[offset] & 0x7f) << 24)
        | (u32::from(d[offset + 1]) << 16)
        | (u32::from(d[offset + 2]) << 8)
        | u32::from(d[offset + 3]);
    format!("{:06}", code % 1_000_000)
}

struct Browser {
    http: reqwest::Client,
    base: String,
    jar: Jar,
}

impl Browser {
    fn new(fixtures: &Fixtures, proxy: &Proxy) -> Browser {
        Browser {
            http: client(fixtures, proxy),
            base: format!("https://a.test:{}", proxy.ports.https),
            jar: Jar::new(),
        }
    }

    async fn get(&mut self, path: &str) -> reqwest::Response {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .header(COOKIE, cookie_header(&self.jar))
            .header("accept", "text/html")
            .send()
            .await
            .expect("get");
        cookies_of(r.headers(), &mut self.jar);
        r
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .header(COOKIE, cookie_header(&self.jar))
            .header("origin", self.base.clone())
            .form(form)
            .send()
            .await
            .expect("post");
        cookies_of(r.headers(), &mut self.jar);
        r
    }

    async fn login(&mut self, user: &str, password: &str, code: &str) -> reqwest::Response {
        let page = self
            .get("/.portcullis/login?rd=%2Fchat%3Fq%3D1")
            .await
            .text()
            .await
            .expect("page");
        let csrf = hidden(&page, "csrf");
        let rd = hidden(&page, "rd");
        assert_eq!(rd, "/chat?q=1");
        self.post(
            "/.portcullis/login",
            &[
                ("idp", "corp"),
                ("username", user),
                ("password", password),
                ("code", code),
                ("rd", &rd),
                ("csrf", &csrf),
            ],
        )
        .await
    }
}

#[tokio::test]
async fn browsers_are_sent_to_sign_in_and_api_clients_get_401_json() {
    let fixtures = Fixtures::new();
    let upstream = Upstream::start();
    let proxy = start(&fixtures, &upstream);
    let http = client(&fixtures, &proxy);
    let url = format!("https://a.test:{}/chat?q=1", proxy.ports.https);
    let r = http
        .get(&url)
        .header("accept", "text/html,*/*")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 302);
    assert_eq!(
        r.headers()[LOCATION],
        "/.portcullis/login?rd=%2Fchat%3Fq%3D1"
    );
    for (name, value) in [
        ("sec-fetch-mode", "cors"),
        ("x-requested-with", "XMLHttpRequest"),
        ("accept", "application/json"),
    ] {
        let r = http
            .get(&url)
            .header(name, value)
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 401, "{name}");
        let body: Value = r.json().await.expect("json");
        assert_eq!(body["login_url"], "/.portcullis/login?rd=%2Fchat%3Fq%3D1");
    }
    assert_eq!(upstream.hits(), 0);
}

#[tokio::test]
async fn sign_in_whoami_sign_out_and_the_old_cookie_is_dead() {
    let fixtures = Fixtures::new();
    let upstream = Upstream::start();
    let mut proxy = start(&fixtures, &upstream);
    let mut browser = Browser::new(&fixtures, &proxy);
    let r = browser.login("alice", "correct horse battery", "").await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()[LOCATION], "/chat?q=1");
    let session_cookie = r
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("__Host-portcullis="))
        .expect("session cookie")
        .to_string();
    for attribute in ["Path=/", "Secure", "HttpOnly", "SameSite=Lax"] {
        assert!(session_cookie.contains(attribute), "{session_cookie}");
    }

    let r = browser.get("/chat?q=1").await;
    assert_eq!(r.status(), 200);
    let echo: Value = r.json().await.expect("json");
    let headers = echo["headers"].to_string();
    assert!(
        !headers.contains("__Host-portcullis"),
        "our cookies never reach the upstream: {headers}"
    );

    let who: Value = browser
        .get("/.portcullis/whoami")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(who["identity"]["user_id"], "alice");
    assert_eq!(who["identity"]["user_type"], "internal-user");
    assert_eq!(who["identity"]["roles"][0], "admin");
    assert_eq!(who["identity"]["auth_method"], "local");
    assert!(!who.to_string().contains("password"), "{who}");
    let sid = who["session"]["sid"].as_str().expect("sid").to_string();

    let old_jar = browser.jar.clone();
    let r = sign_out(&browser.http, &browser.base, &mut browser.jar).await;
    cookies_of(r.headers(), &mut browser.jar);
    assert_eq!(r.status(), 200);
    assert_eq!(
        browser.jar.get(SESSION_COOKIE).map(String::as_str),
        Some(""),
        "cleared"
    );
    // Replaying the cookie from before the logout does not work: the session is revoked.
    browser.jar = old_jar;
    assert_eq!(browser.get("/chat").await.status(), 302);

    proxy.stop();
    let records = audit_records(&fixtures.audit_log());
    let event = |name: &str| {
        records
            .iter()
            .find(|r| r["event"] == name)
            .unwrap_or_else(|| panic!("no {name} record"))
    };
    assert_eq!(event("login-succeeded")["user"], "alice");
    assert_eq!(event("login-succeeded")["sid"], sid.as_str());
    assert_eq!(event("logout")["sid"], sid.as_str());
    let access = records
        .iter()
        .find(|r| r["event"] == "access")
        .expect("access");
    assert_eq!(
        (access["user"].as_str(), access["reason"].as_str()),
        (Some("alice"), Some("authenticated"))
    );
    assert_eq!(event("session-rejected")["detail"], "session-revoked");
}

#[tokio::test]
async fn wrong_passwords_unknown_users_and_throttling_look_the_same() {
    let fixtures = Fixtures::new();
    let upstream = Upstream::start();
    let proxy = start(&fixtures, &upstream);
    let mut browser = Browser::new(&fixtures, &proxy);
    let mut bodies = Vec::new();
    for user in ["alice", "nobody"] {
        let r = browser.login(user, "wrong password", "").await;
        assert_eq!(r.status(), 401);
        let body = r.text().await.expect("text");
        bodies.push(body.replace(&hidden(&body, "csrf"), ""));
    }
    assert_eq!(bodies[0], bodies[1], "no user enumeration");
    assert!(bodies[0].contains("Sign-in failed"));
    // Five failures are free; then each doubles the lock-out (1 s, 2 s, 4 s…).
    for _ in 0..7 {
        browser.login("alice", "wrong password", "").await;
    }
    let r = browser.login("alice", "correct horse battery", "").await;
    assert_eq!(r.status(), 429, "throttled even with the right password");
    let mut proxy = proxy;
    proxy.stop();
    let records = audit_records(&fixtures.audit_log());
    assert!(records.iter().any(|r| r["event"] == "login-failed"
        && r["detail"] == "bad-credentials"
        && r["user"] == "nobody"));
    assert!(records
        .iter()
        .any(|r| r["event"] == "login-failed" && r["detail"] == "throttled"));
    assert!(records
        .iter()
        .any(|r| r["event"] == "access-denied" && r["reason"] == "login-failed"));
    assert!(
        r.headers()["retry-after"]
            .to_str()
            .expect("retry")
            .parse::<u64>()
            .expect("secs")
            >= 1
    );
    assert_eq!(upstream.hits(), 0);
}

#[tokio::test]
async fn csrf_and_origin_checks_guard_the_forms() {
    let fixtures = Fixtures::new();
    let upstream = Upstream::start();
    let proxy = start(&fixtures, &upstream);
    let mut browser = Browser::new(&fixtures, &proxy);
    browser.get("/.portcullis/login").await;
    let form = [
        ("idp", "corp"),
        ("username", "alice"),
        ("password", "correct horse battery"),
    ];
    let r = browser.post("/.portcullis/login", &form).await;
    assert_eq!(r.status(), 403, "no token");
    let token = browser.jar.get(CSRF_COOKIE).cloned().expect("csrf cookie");
    let r = browser
        .http
        .post(format!("{}/.portcullis/login", browser.base))
        .header(COOKIE, cookie_header(&browser.jar))
        .header("origin", "https://evil.test")
        .form(&[
            ("idp", "corp"),
            ("username", "alice"),
            ("password", "correct horse battery"),
            ("csrf", token.as_str()),
        ])
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 403, "cross-origin");
}

#[tokio::test]
async fn totp_second_factor_and_user_types() {
    let fixtures = Fixtures::new();
    let upstream = Upstream::start();
    let proxy = start(&fixtures, &upstream);
    let mut browser = Browser::new(&fixtures, &proxy);
    assert_eq!(
        browser.login("bob", "bobs password", "").await.status(),
        401,
        "code required"
    );
    assert_eq!(
        browser
            .login("bob", "bobs password", "000000")
            .await
            .status(),
        401
    );
    assert_eq!(
        browser
            .login("bob", "bobs password", &totp_now())
            .await
            .status(),
        303
    );
    let who: Value = browser
        .get("/.portcullis/whoami")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(who["identity"]["mfa"], true);
    assert_eq!(who["identity"]["entity"], "acme");
    // Bob is an external user; this app admits internal users only.
    assert_eq!(browser.get("/chat").await.status(), 403);
    assert_eq!(upstream.hits(), 0);
}

#[tokio::test]
async fn bad_cookies_mean_no_session_and_are_cleared() {
    let fixtures = Fixtures::new();
    let upstream = Upstream::start();
    let proxy = start(&fixtures, &upstream);
    let http = client(&fixtures, &proxy);
    let url = format!("https://a.test:{}/chat", proxy.ports.https);
    for cookie in [
        "__Host-portcullis=garbage",
        "__Host-portcullis=1.1.deadbeef.AAAA",
        "__Host-portcullis=9.1.x.y",
        &format!("__Host-portcullis=1.3.{}", "A".repeat(3000)),
    ] {
        let r = http
            .get(&url)
            .header(COOKIE, cookie)
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 401, "{cookie}");
        assert_eq!(
            set_cookie(r.headers(), SESSION_COOKIE).as_deref(),
            Some(""),
            "{cookie}"
        );
    }
    assert_eq!(upstream.hits(), 0);
}
