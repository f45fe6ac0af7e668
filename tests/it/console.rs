//! The security console in a real browser (Debian's headless Chromium over WebDriver), signed
//! in through a real OpenID Provider: an admin sees a denial a user just caused, finds the
//! user's session and revokes it; the user's next request gets 401 and their open stream ends.
//! Around it: who gets in, the step-up to MFA, CSP, CSRF and same-origin checks, the audit.

use std::time::{Duration, Instant};

use reqwest::header::{COOKIE, LOCATION};

use crate::common::browser::{cookie_header, Jar, CSRF_COOKIE};
use crate::common::chromium::{self, Browser};
use crate::common::op::{finish, sign_in_at_op, Op};
use crate::common::{audit_until, client, Fixtures, Ports, Proxy, Upstream};

struct World {
    op: Op,
    _proxy: Proxy,
    fixtures: Fixtures,
    _upstream: Upstream,
    https: reqwest::Client,
    base: String,
}

/// An OIDC provider whose `admin-*` users hold the role `admin` (the console's), an app with
/// an admins-only area, and the console.
fn world() -> World {
    let fixtures = Fixtures::new();
    let upstream = Upstream::start();
    let ports = Ports::new();
    let base = format!("https://a.test:{}", ports.https);
    let op = Op::start(&format!("{base}/.portcullis/oidc/callback"), &[]);
    std::fs::write(fixtures.path("oidc.secret"), "op-client-secret").expect("write");
    let providers = format!(
        "identity_providers:\n  - id: corp\n    kind: oidc\n    issuer: {}\n    client_id: portcullis\n    client_secret: file:oidc.secret\n    scopes: [openid, email, profile, groups]\n    mfa_acr_values: [urn:example:mfa]\n    claims: {{ entity: org.id }}\nidentity:\n  internal_users: [{{ group: staff }}]\n  roles:\n    - {{ role: admin, group: chat-admins }}\n",
        op.issuer
    );
    let apps = format!(
        "  - id: chat\n    hosts: [a.test]\n    upstream: {}\n    access: {{ user_types: [internal-user, external-user] }}\n    rules:\n      - name: admins-only\n        paths: [\"/admin-area/**\"]\n        access: {{ roles: [admin] }}\n",
        upstream.url()
    );
    let yaml = fixtures
        .config(&ports, "", &apps)
        .replace("session:\n", &format!("{providers}session:\n"))
        .replace(
            &format!("admin:\n  listen: 127.0.0.1:{}\n", ports.admin),
            &format!(
                "admin:\n  listen: 127.0.0.1:{}\n  console: {{ roles: [admin] }}\n",
                ports.admin
            ),
        );
    assert!(yaml.contains("console: { roles: [admin] }"));
    let proxy = Proxy::start(&fixtures, ports, &yaml);
    let https = client(&fixtures, &proxy);
    World {
        op,
        _proxy: proxy,
        fixtures,
        _upstream: upstream,
        https,
        base,
    }
}

/// `user` signed in through the OP by a scripted browser (asking the OP for MFA with `mfa`);
/// the `Cookie` header of the session.
async fn signed_in(w: &World, user: &str, mfa: bool) -> String {
    let mut ours = Jar::new();
    let mut theirs = Jar::new();
    let step_up = if mfa { "&mfa=1" } else { "" };
    let start = format!("{}/.portcullis/login?idp=corp{step_up}&rd=%2F", w.base);
    let callback = sign_in_at_op(
        &w.https,
        &w.op,
        &w.base,
        &start,
        user,
        &mut ours,
        &mut theirs,
    )
    .await;
    assert_eq!(
        finish(&w.https, &callback, &mut ours).await,
        303,
        "{user} signs in"
    );
    cookie_header(&ours)
}

async fn get(w: &World, path: &str, cookie: &str) -> reqwest::Response {
    w.https
        .get(format!("{}{path}", w.base))
        .header(COOKIE, cookie)
        .header("accept", "application/json")
        .send()
        .await
        .expect("request")
}

/// Signs in at the OP's form in the browser (the OP asks again for the step-up).
async fn sign_in_at_the_op_form(browser: &Browser, user: &str) {
    browser.fill("input[name=username]", user).await;
    browser.fill("input[name=password]", "secret").await;
    browser.click("button").await;
}

#[tokio::test]
async fn an_admin_revokes_a_session_from_the_console_in_a_real_browser() {
    if chromium::skipped() {
        return;
    }
    let w = world();
    let console = format!("{}/.portcullis/admin/", w.base);

    // bob (no console role) streams an answer and runs into the admins-only area.
    let bob = signed_in(&w, "bob", false).await;
    let stream = w
        .https
        .get(format!("{}/long-sse", w.base))
        .header(COOKIE, &bob)
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("sse");
    assert_eq!(stream.status(), 200);
    for _ in 0..6 {
        assert_eq!(get(&w, "/", &bob).await.status(), 200);
    }
    assert_eq!(get(&w, "/admin-area/settings", &bob).await.status(), 403);
    // Not an admin: the console refuses him.
    assert_eq!(get(&w, "/.portcullis/admin/", &bob).await.status(), 403);

    // The admin opens the console: signs in at the OP, then steps up to MFA.
    let browser = Browser::start().await;
    browser.goto(&console).await;
    assert!(
        browser.url().await.starts_with(&w.op.issuer),
        "sent to the OP: {}",
        browser.url().await
    );
    sign_in_at_the_op_form(&browser, "admin-alice").await;
    // Back with a session without MFA: the console sends her to sign in again with MFA.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !browser.url().await.starts_with(&w.op.issuer) {
        assert!(
            Instant::now() < deadline,
            "no step-up: {}",
            browser.url().await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sign_in_at_the_op_form(&browser, "admin-alice").await;
    let overview = browser.wait_for_text("Refused, last hour").await;
    assert!(
        browser.url().await.starts_with(&console),
        "{}",
        browser.url().await
    );
    assert!(
        overview.contains("admin-alice"),
        "who is signed in: {overview}"
    );
    browser.wait_for_text("role-missing").await;
    browser.screenshot("console-overview").await;

    // Events: bob's denial, with a link to his page.
    browser.goto(&format!("{console}events")).await;
    let events = browser.wait_for_text("/admin-area/settings").await;
    assert!(
        events.contains("access-denied") && events.contains("bob"),
        "{events}"
    );
    // The page refreshes itself (its script, allowed by the CSP): a new refusal appears
    // without a reload.
    assert_eq!(get(&w, "/admin-area/audit-log", &bob).await.status(), 403);
    let url_before = browser.url().await;
    browser.wait_for_text("/admin-area/audit-log").await;
    assert_eq!(browser.url().await, url_before, "no navigation");
    browser.screenshot("console-events").await;
    // Each record links to the user's page.
    browser.click("#event-rows a[href$='user?id=bob']").await;
    let user_page = browser.wait_for_text("Revoke all of this user").await;
    assert!(user_page.contains("/admin-area/settings"), "{user_page}");

    // Sessions: find bob, press Revoke.
    browser.goto(&format!("{console}sessions?user=bob")).await;
    let sessions = browser.wait_for_text("1 live session(s).").await;
    assert!(
        sessions.contains("bob") && sessions.contains("Revoke"),
        "{sessions}"
    );
    browser.screenshot("console-sessions").await;
    // The stream runs for a minute unless cut.
    let pressed = Instant::now();
    browser.click("form[action$='/revoke'] button").await;
    browser.wait_for_text("Revoked").await;
    browser.wait_for_text("No live sessions match.").await;

    // bob's next request is refused, and his open stream ends.
    assert_eq!(get(&w, "/", &bob).await.status(), 401);
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        let mut stream = stream;
        while let Ok(Some(_)) = stream.chunk().await {}
    })
    .await;
    assert!(ended.is_ok(), "bob's stream did not end");
    assert!(
        pressed.elapsed() < Duration::from_secs(15),
        "{:?}",
        pressed.elapsed()
    );

    // His page: the revocation is among his records; disable him there.
    browser.goto(&format!("{console}user?id=bob")).await;
    browser.wait_for_text("admin-call").await;
    browser
        .fill("form[action$='/disable'] input[name=reason]", "incident 7")
        .await;
    browser.click("form[action$='/disable'] button").await;
    let page = browser.wait_for_text("Disabled by admin-alice").await;
    assert!(page.contains("Enable user"), "{page}");
    browser.screenshot("console-user").await;

    // Explain, as the CLI does.
    browser
        .goto(&format!(
            "{console}explain?app=chat&method=GET&path=%2Fadmin-area%2Fsettings&user=bob&user_type=internal-user"
        ))
        .await;
    let explained = browser.wait_for_text("Decision: deny (role-missing)").await;
    assert!(
        explained.contains("FAIL") && explained.contains("admins-only"),
        "{explained}"
    );
    browser.screenshot("console-explain").await;

    // Config: the summary, its hash, and a reload from the button.
    browser.goto(&format!("{console}config")).await;
    browser
        .wait_for_text("No reload since the process started.")
        .await;
    browser.click("form[action$='/reload'] button").await;
    let config = browser.wait_for_text("Configuration reloaded.").await;
    assert!(
        config.contains("by console:admin-alice: applied"),
        "{config}"
    );
    assert!(
        !config.contains("op-client-secret"),
        "no secret on the page"
    );
    browser.screenshot("console-config").await;

    // The strict headers hold on every page.
    let cookies = browser.cookie_header().await;
    let r = get(&w, "/.portcullis/admin/sessions", &cookies).await;
    assert_eq!(r.status(), 200);
    let header = |name: &str| r.headers()[name].to_str().expect("header").to_string();
    assert!(header("content-security-policy").starts_with("default-src 'self'; script-src 'self'"));
    assert!(!header("content-security-policy").contains("unsafe-inline"));
    assert_eq!(header("cache-control"), "no-store");
    assert_eq!(header("x-frame-options"), "DENY");

    // A cross-origin form post is refused, even with the right cookie and token; so is one
    // without the token.
    let csrf = cookies
        .split("; ")
        .find_map(|c| c.strip_prefix(&format!("{CSRF_COOKIE}=")))
        .expect("the console set a CSRF cookie")
        .to_string();
    let post = |origin: &'static str, token: String| {
        w.https
            .post(format!("{console}enable"))
            .header(COOKIE, &cookies)
            .header("origin", origin)
            .form(&[("csrf", token.as_str()), ("kind", "user"), ("id", "bob")])
            .send()
    };
    assert_eq!(
        post("https://evil.test", csrf.clone())
            .await
            .expect("post")
            .status(),
        403
    );
    assert_eq!(
        post("https://evil.test", String::new())
            .await
            .expect("post")
            .status(),
        403
    );
    let same_origin: &'static str = Box::leak(w.base.clone().into_boxed_str());
    assert_eq!(
        post(same_origin, "wrong".into())
            .await
            .expect("post")
            .status(),
        403
    );
    browser.goto(&format!("{console}user?id=bob")).await;
    browser.wait_for_text("Disabled by admin-alice").await;

    // Every action is in the trail with the acting user.
    let calls = audit_until(&w.fixtures.audit_log(), 3, |r| {
        r["event"] == "admin-call" && r["operator"] == "admin-alice"
    })
    .await;
    let details: Vec<&str> = calls.iter().filter_map(|r| r["detail"].as_str()).collect();
    assert!(
        details.iter().any(|d| d.starts_with("console revoke sid=")),
        "{details:?}"
    );
    assert!(details.contains(&"console disable user:bob"), "{details:?}");
    assert!(
        details
            .iter()
            .any(|d| d.starts_with("console reload sha256=")),
        "{details:?}"
    );
    assert!(calls.iter().any(|r| r["user"] == "bob"), "the user named");
    let reloads = audit_until(&w.fixtures.audit_log(), 1, |r| {
        r["event"] == "config-loaded" && r["operator"] == "console:admin-alice"
    })
    .await;
    assert_eq!(reloads.len(), 1);
    let refused = audit_until(&w.fixtures.audit_log(), 3, |r| {
        r["event"] == "access-denied"
            && r["reason"] == "csrf-failed"
            && r["path"] == "/.portcullis/admin/enable"
    })
    .await;
    assert_eq!(refused.len(), 3, "the refused posts are recorded");
    browser.close().await;
    eprintln!("console screenshots: {}", chromium::artefacts().display());
}

#[tokio::test]
async fn the_console_is_for_signed_in_admins_only_and_absent_unless_configured() {
    let mut w = world();
    // Not signed in: a browser is sent to sign in (and back), an API client gets 401.
    let r = w
        .https
        .get(format!("{}/.portcullis/admin/sessions", w.base))
        .header("accept", "text/html")
        .header("sec-fetch-mode", "navigate")
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 302);
    let location = r.headers()[LOCATION].to_str().expect("location");
    assert!(
        location.contains("rd=%2F.portcullis%2Fadmin%2Fsessions"),
        "{location}"
    );
    let r = get(&w, "/.portcullis/admin/", "").await;
    assert_eq!(r.status(), 401);
    // Signed in without the role: 403, even for the assets and the actions.
    let bob = signed_in(&w, "bob", false).await;
    for path in [
        "/.portcullis/admin/",
        "/.portcullis/admin/console.js",
        "/.portcullis/admin/events?fragment=1",
    ] {
        assert_eq!(get(&w, path, &bob).await.status(), 403, "{path}");
    }
    // An admin without MFA is sent to step up (401 with the MFA sign-in for an API client).
    let alice = signed_in(&w, "admin-alice", false).await;
    let r = get(&w, "/.portcullis/admin/", &alice).await;
    assert_eq!(r.status(), 401);
    let body: serde_json::Value = r.json().await.expect("json");
    assert!(
        body["login_url"]
            .as_str()
            .is_some_and(|u| u.contains("mfa=1")),
        "{body}"
    );
    // MFA without the role: 403; the role with MFA: in.
    let mfa = signed_in(&w, "mfa-carol", false).await;
    assert_eq!(get(&w, "/.portcullis/admin/", &mfa).await.status(), 403);
    let admin = signed_in(&w, "admin-alice", true).await;
    let r = get(&w, "/.portcullis/admin/sessions", &admin).await;
    assert_eq!(r.status(), 200);
    assert!(r.text().await.expect("page").contains("admin-alice"));
    let r = get(&w, "/.portcullis/admin", &admin).await;
    assert_eq!(
        r.status(),
        308,
        "to the console's own path, whose links are relative"
    );
    assert_eq!(r.headers()[LOCATION], "/.portcullis/admin/");
    let records = audit_until(&w.fixtures.audit_log(), 1, |r| {
        r["reason"] == "mfa-required"
    })
    .await;
    assert_eq!(records[0]["path"], "/.portcullis/admin/");

    // A restart does not blank the console: the new process reads the last day back.
    w._proxy.stop();
    let ports = Ports {
        https: w._proxy.ports.https,
        http: w._proxy.ports.http,
        admin: w._proxy.ports.admin,
    };
    let yaml = std::fs::read_to_string(&w._proxy.config).expect("config");
    w._proxy = Proxy::start(&w.fixtures, ports, &yaml);
    // Fresh connections: the pooled ones went with the old process.
    w.https = client(&w.fixtures, &w._proxy);
    let mut page = String::new();
    for _ in 0..50 {
        page = get(&w, "/.portcullis/admin/events?user=bob", &admin)
            .await
            .text()
            .await
            .expect("page");
        if page.contains("role-missing") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        page.contains("GET /.portcullis/admin/") && page.contains("role-missing"),
        "bob's refusals before the restart: {page}"
    );

    // Without admin.console the path is just unknown.
    let fixtures = Fixtures::new();
    let upstream = Upstream::start();
    let ports = Ports::new();
    let apps = format!(
        "  - id: chat\n    hosts: [a.test]\n    upstream: {}\n    public_paths: [\"/**\"]\n    access: {{ user_types: [internal-user] }}\n",
        upstream.url()
    );
    let yaml = fixtures.config(&ports, "", &apps);
    let proxy = Proxy::start(&fixtures, ports, &yaml);
    let https = client(&fixtures, &proxy);
    let r = https
        .get(format!(
            "https://a.test:{}/.portcullis/admin/",
            proxy.ports.https
        ))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 404);
    assert_eq!(upstream.hits(), 0, "never forwarded");
}
