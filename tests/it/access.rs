//! Access policy end to end, with users signed in through a real OpenID Provider: who reaches
//! which app and path, what the upstream learns (a verifiable assertion, never a forged
//! header), refresh under concurrency, back-channel logout and MFA step-up.

use std::time::Duration;

use reqwest::header::{COOKIE, LOCATION};
use serde_json::Value;

use crate::common::browser::{cookie_header, cookies_of, form_value, start_sign_in, Jar};
use crate::common::op::{finish, sign_in_at_op, Op};
use crate::common::upstream::received;
use crate::common::{audit_records, audit_until, client, plain, Fixtures, Ports, Proxy, Upstream};

struct World {
    op: Op,
    proxy: Proxy,
    fixtures: Fixtures,
    upstream: Upstream,
    https: reqwest::Client,
    base: String,
}

/// The OP with `op_env`, and Portcullis with three apps on a.test: `support` (internal and
/// external users with roles; a billing-agent rule needing billing/admin and MFA; entity
/// isolation), `staff` on b.test (internal only) and `partner` (only the other provider).
fn world(op_env: &[(&str, &str)]) -> World {
    let fixtures = Fixtures::new();
    let upstream = Upstream::start();
    let ports = Ports::new();
    let base = format!("https://a.test:{}", ports.https);
    let mut env = op_env.to_vec();
    let backchannel = format!("{base}/.portcullis/oidc/backchannel-logout");
    env.push(("OP_BACKCHANNEL", &backchannel));
    let op = Op::start(&format!("{base}/.portcullis/oidc/callback"), &env);
    std::fs::write(fixtures.path("oidc.secret"), "op-client-secret").expect("write");
    let sections = format!(
        r#"identity_providers:
  - id: corp
    kind: oidc
    issuer: {issuer}
    client_id: portcullis
    client_secret: file:oidc.secret
    scopes: [openid, email, profile, groups, offline_access]
    mfa_acr_values: [urn:example:mfa]
    claims: {{ entity: org.id }}
  - id: partners
    kind: oidc
    issuer: {issuer}
    client_id: portcullis
    client_secret: file:oidc.secret
identity:
  internal_users: [{{ group: staff }}]
  roles:
    - {{ role: admin, group: chat-admins }}
    - {{ role: customer, group: customer }}
"#,
        issuer = op.issuer
    );
    let up = upstream.url();
    let apps = format!(
        r#"  - id: support
    hosts: [a.test]
    upstream: {up}
    public_paths: [/status]
    access:
      user_types: [internal-user, external-user]
      roles: [admin, customer]
      identity_providers: [corp]
    rules:
      - name: billing-agent
        paths: ["/api/agents/billing-*/**"]
        access: {{ roles: [admin], require_mfa: true }}
    entity_scope: {{ path_pattern: "/api/entities/{{entity}}/**", query_param: entity }}
    identity_headers: {{ plain: true }}
  - id: staff
    hosts: [b.test]
    upstream: {up}
    access: {{ user_types: [internal-user] }}
  - id: partner
    hosts: [localhost]
    upstream: {up}
    access: {{ user_types: [internal-user, external-user], identity_providers: [partners] }}
"#
    );
    let yaml = fixtures
        .config(&ports, "", &apps)
        .replace("level: warn", "level: \"warn,portcullis=debug\"")
        .replace("session:\n", &format!("{sections}session:\n"));
    let proxy = Proxy::start(&fixtures, ports, &yaml);
    let https = client(&fixtures, &proxy);
    World {
        op,
        proxy,
        fixtures,
        upstream,
        https,
        base,
    }
}

impl World {
    /// Signs `user` in with provider `corp`; Portcullis's cookie jar.
    async fn sign_in(&self, user: &str) -> Jar {
        self.sign_in_keeping_op_cookies(user).await.0
    }

    /// [`World::sign_in`]; also the OP's cookie jar (the user's session at the OP).
    async fn sign_in_keeping_op_cookies(&self, user: &str) -> (Jar, Jar) {
        let mut ours = Jar::new();
        let mut theirs = Jar::new();
        let start = format!("{}/.portcullis/login?idp=corp&rd=%2F", self.base);
        let callback = sign_in_at_op(
            &self.https,
            &self.op,
            &self.base,
            &start,
            user,
            &mut ours,
            &mut theirs,
        )
        .await;
        let status = finish(&self.https, &callback, &mut ours).await;
        assert_eq!(status, 303, "{user} signs in");
        (ours, theirs)
    }

    async fn get(&self, host: &str, path: &str, jar: &Jar) -> reqwest::Response {
        let port = self.base.rsplit(':').next().unwrap_or_default();
        self.https
            .get(format!("https://{host}:{port}{path}"))
            .header(COOKIE, cookie_header(jar))
            .header("accept", "application/json")
            .header("X-Portcullis-User", "forged-admin")
            .header("x_portcullis_assertion", "forged.jwt.value")
            .send()
            .await
            .expect("request")
    }

    async fn jwks(&self) -> jsonwebtoken::jwk::JwkSet {
        let r = self
            .https
            .get(format!("{}/.portcullis/jwks.json", self.base))
            .send()
            .await
            .expect("jwks");
        assert_eq!(r.status(), 200);
        assert!(r.headers()["cache-control"]
            .to_str()
            .unwrap_or_default()
            .contains("max-age"));
        r.json().await.expect("jwks json")
    }
}

fn verify(token: &str, jwks: &jsonwebtoken::jwk::JwkSet, aud: &str, iss: &str) -> Value {
    let header = jsonwebtoken::decode_header(token).expect("header");
    assert_eq!(header.alg, jsonwebtoken::Algorithm::ES256);
    let jwk = jwks
        .find(header.kid.as_deref().expect("kid"))
        .expect("key in jwks");
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).expect("key");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_audience(&[aud]);
    validation.set_issuer(&[iss]);
    jsonwebtoken::decode::<Value>(token, &key, &validation)
        .expect("a valid assertion")
        .claims
}

#[tokio::test]
async fn each_user_reaches_exactly_what_the_policy_allows() {
    let mut w = world(&[]);
    let admin = w.sign_in("admin-ann").await; // internal, role admin, no MFA
    let acme = w.sign_in("acme-alex").await; // external, role customer, entity acme
    let globex = w.sign_in("globex-gus").await; // external, customer, entity globex
    let nobody = w.sign_in("nogroups-nat").await; // external, no roles, no entity
    let jwks = w.jwks().await;
    let issuer = format!(
        "https://localhost:{}",
        w.base.rsplit(':').next().unwrap_or("")
    );

    // (jar, host, path, expected status)
    let cases: Vec<(&str, &Jar, &str, &str, u16)> = vec![
        ("admin", &admin, "a.test", "/chat", 200),
        ("acme", &acme, "a.test", "/chat", 200),
        ("nobody", &nobody, "a.test", "/chat", 403),
        (
            "acme own entity",
            &acme,
            "a.test",
            "/api/entities/acme/tickets",
            200,
        ),
        (
            "acme other entity",
            &acme,
            "a.test",
            "/api/entities/globex/tickets",
            403,
        ),
        (
            "acme other entity by query",
            &acme,
            "a.test",
            "/api/tickets?entity=globex",
            403,
        ),
        (
            "globex own",
            &globex,
            "a.test",
            "/api/entities/globex/tickets",
            200,
        ),
        (
            "admin crosses entities",
            &admin,
            "a.test",
            "/api/entities/acme/tickets",
            200,
        ),
        (
            "customer on billing agent",
            &acme,
            "a.test",
            "/api/agents/billing-x/run",
            403,
        ),
        ("staff app: internal", &admin, "b.test", "/", 200),
        ("staff app: external", &acme, "b.test", "/", 403),
        (
            "partner app: other provider only",
            &admin,
            "localhost",
            "/",
            403,
        ),
    ];
    let mut allowed = 0;
    for (name, jar, host, path, want) in &cases {
        let before = w.upstream.hits();
        let r = w.get(host, path, jar).await;
        assert_eq!(r.status().as_u16(), *want, "{name}");
        if *want == 200 {
            allowed += 1;
            assert_eq!(w.upstream.hits(), before + 1, "{name} forwarded");
            let echo: Value = r.json().await.expect("echo");
            let got = received(&echo);
            let token = got.get("x-portcullis-assertion").expect("assertion");
            assert_ne!(token, "forged.jwt.value", "{name}");
            let app = if *host == "b.test" {
                "staff"
            } else {
                "support"
            };
            let claims = verify(token, &jwks, app, &issuer);
            assert!(claims["exp"].as_u64() <= claims["iat"].as_u64().map(|i| i + 300));
            assert_eq!(claims["idp"], "corp");
            if *host == "a.test" {
                assert_eq!(
                    got.get("x-portcullis-user"),
                    claims["sub"].as_str().map(str::to_string).as_ref()
                );
                assert_ne!(
                    got.get("x-portcullis-user").map(String::as_str),
                    Some("forged-admin")
                );
            } else {
                assert!(
                    !got.contains_key("x-portcullis-user"),
                    "plain headers only where enabled"
                );
            }
        } else {
            assert_eq!(w.upstream.hits(), before, "{name}: nothing forwarded");
        }
    }

    // What the upstream learns about the external customer.
    let r = w.get("a.test", "/chat", &acme).await;
    let got = received(&r.json().await.expect("echo"));
    let claims = verify(&got["x-portcullis-assertion"], &jwks, "support", &issuer);
    assert_eq!(claims["sub"], "acme-alex");
    assert_eq!(claims["email"], "acme-alex@corp.test");
    assert_eq!(claims["user_type"], "external-user");
    assert_eq!(claims["entity"], "acme");
    assert_eq!(claims["roles"], serde_json::json!(["customer"]));
    assert!(claims["sid"].is_string() && claims["jti"].is_string());
    assert_eq!(got["x-portcullis-entity"], "acme");
    assert_eq!(got["x-portcullis-user-type"], "external-user");
    assert_eq!(got["x-portcullis-roles"], "customer");

    // Each app accepts one provider: the login page goes straight to it (auto_redirect)…
    let port = w.base.rsplit(':').next().unwrap_or_default().to_string();
    for (host, offered) in [("localhost", "partners"), ("a.test", "corp")] {
        let login_started = |r: &Value| r["event"] == "login-started";
        let before = audit_records(&w.fixtures.audit_log())
            .iter()
            .filter(|r| login_started(r))
            .count();
        let r = w
            .https
            .get(format!("https://{host}:{port}/.portcullis/login?rd=%2F"))
            .send()
            .await
            .expect("login");
        assert_eq!(r.status(), 302, "{host}");
        let location = r.headers()[LOCATION].to_str().expect("location");
        assert!(location.starts_with(&w.op.issuer), "{host}: {location}");
        let started = audit_until(&w.fixtures.audit_log(), before + 1, login_started).await;
        assert_eq!(
            started.last().map(|r| r["idp"].clone()),
            Some(Value::from(offered))
        );
    }
    // …and after a failed sign-in the page offers only the providers the app accepts.
    for (host, offered, hidden) in [
        ("localhost", "idp=partners", "idp=corp"),
        ("a.test", "idp=corp", "idp=partners"),
    ] {
        let page = w
            .https
            .get(format!(
                "https://{host}:{port}/.portcullis/login?rd=%2F&failed=1"
            ))
            .send()
            .await
            .expect("login page")
            .text()
            .await
            .expect("html");
        assert!(
            page.contains(offered) && !page.contains(hidden),
            "{host}: {page}"
        );
        assert!(page.contains("Sign-in did not complete"), "{page}");
    }

    // Public path: forwarded without login, and never with identity headers.
    let r = w.get("a.test", "/status", &acme).await;
    assert_eq!(r.status(), 200);
    let got = received(&r.json().await.expect("echo"));
    assert!(
        got.keys().all(|k| !k.starts_with("x-portcullis")),
        "{got:?}"
    );

    w.proxy.stop();
    let records = audit_records(&w.fixtures.audit_log());
    let reasons: Vec<(String, String)> = records
        .iter()
        .filter(|r| r["event"] == "access-denied" || r["event"] == "access")
        .map(|r| {
            (
                r["path"].as_str().unwrap_or_default().to_string(),
                r["reason"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    for (path, reason) in [
        ("/chat", "role-missing"),
        ("/api/entities/globex/tickets", "entity-mismatch"),
        ("/api/tickets", "entity-mismatch"),
        ("/api/agents/billing-x/run", "role-missing"),
        ("/", "user-type-not-allowed"),
        ("/", "idp-not-allowed"),
        ("/chat", "authenticated"),
        ("/status", "public-path"),
    ] {
        assert!(
            reasons.contains(&(path.to_string(), reason.to_string())),
            "{path} {reason}: {reasons:?}"
        );
    }
    assert!(allowed >= 6);
}

#[tokio::test]
async fn mfa_required_sends_the_user_back_to_the_op_for_a_second_factor() {
    let w = world(&[]);
    let mut admin = w.sign_in("admin-ann").await;
    let agent = "/api/agents/billing-x/run";
    // API call: 401 with a step-up login URL; nothing forwarded.
    let r = w.get("a.test", agent, &admin).await;
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.expect("json");
    let login_url = body["login_url"].as_str().expect("login_url").to_string();
    assert!(
        login_url.contains("idp=corp") && login_url.contains("mfa=1"),
        "{login_url}"
    );
    assert_eq!(w.upstream.hits(), 0);
    // Browser navigation: redirected to the step-up sign-in, which asks the OP for MFA.
    let r = w
        .https
        .get(format!("{}{agent}", w.base))
        .header(COOKIE, cookie_header(&admin))
        .header("accept", "text/html")
        .send()
        .await
        .expect("navigate");
    assert_eq!(r.status(), 302);
    let step_up = r.headers()[LOCATION]
        .to_str()
        .expect("location")
        .to_string();
    let to_op = start_sign_in(&w.https, &format!("{}{step_up}", w.base), &mut Jar::new()).await;
    assert!(
        to_op.contains("acr_values=urn%3Aexample%3Amfa") && to_op.contains("prompt=login"),
        "{to_op}"
    );
    // The OP grants MFA for that request; the new session passes the rule.
    let mut theirs = Jar::new();
    let callback = sign_in_at_op(
        &w.https,
        &w.op,
        &w.base,
        &format!("{}{step_up}", w.base),
        "admin-ann",
        &mut admin,
        &mut theirs,
    )
    .await;
    assert_eq!(finish(&w.https, &callback, &mut admin).await, 303);
    let r = w.get("a.test", agent, &admin).await;
    assert_eq!(r.status(), 200, "MFA session reaches the billing agent");
}

#[tokio::test]
async fn refresh_under_twenty_concurrent_requests_logs_nobody_out() {
    // Tokens live 4 s: refreshed once less than half of that is left.
    let mut w = world(&[("OP_ACCESS_TTL", "4")]);
    let jar = w.sign_in("acme-rita").await;
    tokio::time::sleep(Duration::from_millis(2600)).await;
    let mut calls = Vec::new();
    for _ in 0..20 {
        let https = w.https.clone();
        let url = format!("{}/chat", w.base);
        let cookie = cookie_header(&jar);
        calls.push(tokio::spawn(async move {
            https
                .get(url)
                .header(COOKIE, cookie)
                .header("accept", "application/json")
                .send()
                .await
                .expect("request")
        }));
    }
    let mut refreshed_cookies = Vec::new();
    for call in calls {
        let r = call.await.expect("task");
        assert_eq!(r.status(), 200, "nobody is logged out");
        let mut next = jar.clone();
        cookies_of(r.headers(), &mut next);
        refreshed_cookies.push(next);
    }
    assert_eq!(w.op.count("REFRESH"), 1, "one refresh for twenty requests");
    // Every response carried the refreshed session; it keeps working and refreshes again later.
    let newer = refreshed_cookies.pop().expect("cookies");
    assert_ne!(newer.get("__Host-portcullis"), jar.get("__Host-portcullis"));
    tokio::time::sleep(Duration::from_millis(2600)).await;
    let r = w.get("a.test", "/chat", &newer).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        w.op.count("REFRESH"),
        2,
        "the refreshed session refreshes again: {}",
        w.proxy.logs()
    );
}

#[tokio::test]
async fn a_refused_refresh_ends_the_session() {
    let mut w = world(&[("OP_ACCESS_TTL", "4")]);
    let jar = w.sign_in("acme-rob").await;
    tokio::time::sleep(Duration::from_millis(2600)).await;
    // The OP revokes the grant: the next refresh is refused.
    let r = reqwest::Client::new()
        .post(format!("{}/__test/refuse-tokens", w.op.issuer))
        .send()
        .await
        .expect("op control");
    assert_eq!(r.status(), 204);
    let before = w.upstream.hits();
    let r = w.get("a.test", "/chat", &jar).await;
    assert_eq!(r.status(), 401, "API clients get 401");
    let r = w
        .https
        .get(format!("{}/chat", w.base))
        .header(COOKIE, cookie_header(&jar))
        .header("accept", "text/html")
        .send()
        .await
        .expect("navigate");
    assert_eq!(r.status(), 302, "browsers sign in again");
    assert!(r.headers()[LOCATION]
        .to_str()
        .unwrap_or_default()
        .contains("/.portcullis/login"));
    assert_eq!(w.upstream.hits(), before, "nothing forwarded");
    w.proxy.stop();
    let records = audit_records(&w.fixtures.audit_log());
    assert!(records
        .iter()
        .any(|r| r["event"] == "refresh-failed" && r["detail"] == "refresh-refused"));
}

#[tokio::test]
async fn back_channel_logout_ends_the_session_at_once() {
    let mut w = world(&[]);
    let (ours, theirs) = w.sign_in_keeping_op_cookies("acme-bea").await;
    assert_eq!(w.get("a.test", "/chat", &ours).await.status(), 200);

    // The user signs out at the OP itself (not through Portcullis).
    let plain = plain();
    let page = plain
        .get(format!("{}/session/end", w.op.issuer))
        .header(COOKIE, cookie_header(&theirs))
        .send()
        .await
        .expect("end session");
    let html = page.text().await.expect("html");
    let xsrf = form_value(&html, "xsrf").expect("xsrf");
    let r = plain
        .post(format!("{}/session/end/confirm", w.op.issuer))
        .header(COOKIE, cookie_header(&theirs))
        .form(&[("xsrf", xsrf.as_str()), ("logout", "yes")])
        .send()
        .await
        .expect("confirm");
    assert!(
        r.status().is_redirection() || r.status().is_success(),
        "{}",
        r.status()
    );
    for _ in 0..50 {
        if w.op.count("BACKCHANNEL-OK") > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        w.op.count("BACKCHANNEL-OK"),
        1,
        "{:?}",
        w.op.lines.lock().expect("lines")
    );
    let before = w.upstream.hits();
    let r = w.get("a.test", "/chat", &ours).await;
    assert_eq!(r.status(), 401, "the old cookie no longer works");
    assert_eq!(w.upstream.hits(), before);

    // A forged or replayed logout token is refused.
    let r = w
        .https
        .post(format!("{}/.portcullis/oidc/backchannel-logout", w.base))
        .form(&[("logout_token", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.")])
        .send()
        .await
        .expect("forged");
    assert_eq!(r.status(), 400);

    w.proxy.stop();
    let records = audit_records(&w.fixtures.audit_log());
    assert!(records
        .iter()
        .any(|r| r["event"] == "logout" && r["detail"] == "backchannel"));
    assert!(records
        .iter()
        .any(|r| r["event"] == "session-rejected" && r["detail"] == "session-revoked"));
}
