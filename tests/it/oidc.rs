//! OpenID Connect sign-in through a real OpenID Provider (panva/oidc-provider on Node.js,
//! started by the test): code flow with PKCE, state and nonce, ID token validation.

use reqwest::header::{COOKIE, LOCATION};
use serde_json::Value;

use crate::common::browser::{cookie_header, cookies_of, sign_out, start_sign_in, Jar};
use crate::common::op::{follow_op, Op};
use crate::common::{audit_records, client, Fixtures, Ports, Proxy, Upstream};

struct World {
    _op: Op,
    proxy: Proxy,
    fixtures: Fixtures,
    upstream: Upstream,
    https: reqwest::Client,
    base: String,
}

fn world() -> World {
    world_with("client_secret_basic")
}

/// `client_secret_post` also turns on `userinfo` (both are per-provider settings the main test
/// leaves at their defaults).
fn world_with(auth_method: &str) -> World {
    world_configured(auth_method, "")
}

/// [`world_with`], with `extra_server` under `server:`.
fn world_configured(auth_method: &str, extra_server: &str) -> World {
    let fixtures = Fixtures::new();
    let upstream = Upstream::start();
    let ports = Ports::new();
    let base = format!("https://a.test:{}", ports.https);
    let op = Op::start(
        &format!("{base}/.portcullis/oidc/callback"),
        &[("OP_AUTH_METHOD", auth_method)],
    );
    std::fs::write(fixtures.path("oidc.secret"), "op-client-secret").expect("write");
    let providers = format!(
        "identity_providers:\n  - id: corp\n    kind: oidc\n    display_name: Corp SSO\n    issuer: {}\n    client_id: portcullis\n    client_secret: file:oidc.secret\n    token_endpoint_auth: {auth_method}\n    scopes: [openid, email, profile, groups]\n    acr_values: urn:example:loa:2\n    prompt: login\n    userinfo: {userinfo}\n    claims: {{ entity: org.id }}\nidentity:\n  internal_users: [{{ group: staff }}]\n  roles:\n    - {{ role: admin, group: chat-admins }}\n  groups_as_roles: {{ prefix: chat- }}\n",
        op.issuer,
        auth_method = auth_method,
        userinfo = auth_method == "client_secret_post",
    );
    let apps = format!("  - id: chat\n    hosts: [a.test]\n    upstream: {}\n    access: {{ user_types: [internal-user, external-user] }}\n", upstream.url());
    let yaml = fixtures
        .config(&ports, extra_server, &apps)
        .replace("level: warn", "level: \"warn,portcullis=debug\"")
        .replace("session:\n", &format!("{providers}session:\n"));
    let proxy = Proxy::start(&fixtures, ports, &yaml);
    let https = client(&fixtures, &proxy);
    World {
        _op: op,
        proxy,
        fixtures,
        upstream,
        https,
        base,
    }
}

/// Signs `user` in at the OP, starting from Portcullis's login endpoint; returns the
/// callback URL the OP sends the browser to, and Portcullis's cookies so far.
async fn through_the_op(w: &World, user: &str) -> (String, Jar) {
    let mut ours = Jar::new();
    let start = format!("{}/.portcullis/login?idp=corp&rd=%2Fchat", w.base);
    let url = start_sign_in(&w.https, &start, &mut ours).await;
    assert!(
        url.contains("code_challenge=") && url.contains("code_challenge_method=S256"),
        "PKCE: {url}"
    );
    assert!(url.contains("nonce=") && url.contains("state="), "{url}");
    assert!(
        url.contains("acr_values=urn%3Aexample%3Aloa%3A2") && url.contains("prompt=login"),
        "{url}"
    );
    let mut theirs = Jar::new();
    let callback = follow_op(&w._op, &w.base, url, user, &mut theirs).await;
    (callback, ours)
}

#[tokio::test]
async fn sign_in_through_a_real_openid_provider() {
    let mut w = world();
    let (callback, mut ours) = through_the_op(&w, "mfa-carol").await;
    let r = w
        .https
        .get(&callback)
        .header(COOKIE, cookie_header(&ours))
        .send()
        .await
        .expect("callback");
    if r.status() != 303 {
        panic!("callback answered {}: {}", r.status(), w.proxy.logs());
    }
    assert_eq!(r.headers()[LOCATION], "/chat");
    cookies_of(r.headers(), &mut ours);
    assert!(
        ours.get("__Host-portcullis").is_some_and(|v| !v.is_empty()),
        "session cookie"
    );
    assert!(
        ours.iter()
            .filter(|(n, _)| n.contains("-flow-"))
            .all(|(_, v)| v.is_empty()),
        "flow cookie cleared"
    );

    let r = w
        .https
        .get(format!("{}/chat", w.base))
        .header(COOKIE, cookie_header(&ours))
        .send()
        .await
        .expect("chat");
    assert_eq!(r.status(), 200);
    assert_eq!(w.upstream.hits(), 1);
    let who: Value = w
        .https
        .get(format!("{}/.portcullis/whoami", w.base))
        .header(COOKIE, cookie_header(&ours))
        .send()
        .await
        .expect("whoami")
        .json()
        .await
        .expect("json");
    let identity = &who["identity"];
    assert_eq!(identity["user_id"], "mfa-carol");
    assert_eq!(identity["email"], "mfa-carol@corp.test");
    assert_eq!(identity["auth_method"], "oidc");
    assert_eq!(identity["idp"], "corp");
    assert_eq!(identity["mfa"], true, "amr [pwd, otp] from the OP");
    assert_eq!(identity["user_type"], "internal-user", "group staff");
    assert_eq!(identity["roles"], serde_json::json!(["chat-users"]));
    assert!(
        !who.to_string().contains("eyJ"),
        "no token ever leaves the session: {who}"
    );

    // Signing out ends the session here and sends the browser to the OP's end-session
    // endpoint with the ID token as hint (RP-initiated logout).
    let r = sign_out(&w.https, &w.base, &mut ours).await;
    assert_eq!(r.status(), 303);
    let to_op = r.headers()[LOCATION]
        .to_str()
        .expect("location")
        .to_string();
    assert!(
        to_op.starts_with(&format!("{}/session/end", w._op.issuer)),
        "{to_op}"
    );
    assert!(
        to_op.contains("id_token_hint=eyJ") && to_op.contains("post_logout_redirect_uri="),
        "{to_op}"
    );
    let old_session = cookie_header(&ours);
    let r = w
        .https
        .get(format!("{}/chat", w.base))
        .header(COOKIE, old_session)
        .header("accept", "application/json")
        .send()
        .await
        .expect("chat");
    assert_eq!(r.status(), 401, "the session is over here");

    // Replaying the callback (same code, same flow cookie) fails: codes are single-use.
    let (callback2, flow_jar) = through_the_op(&w, "dave").await;
    let first = w
        .https
        .get(&callback2)
        .header(COOKIE, cookie_header(&flow_jar))
        .send()
        .await
        .expect("first use");
    assert_eq!(first.status(), 303);
    let replay = w
        .https
        .get(&callback2)
        .header(COOKIE, cookie_header(&flow_jar))
        .header("accept", "application/json")
        .send()
        .await
        .expect("replay");
    assert_eq!(replay.status(), 401, "replayed code refused");

    w.proxy.stop();
    let records = audit_records(&w.fixtures.audit_log());
    let details: Vec<(String, String)> = records
        .iter()
        .filter(|r| r["event"].as_str().is_some_and(|e| e.starts_with("login")))
        .map(|r| {
            (
                r["event"].as_str().unwrap_or_default().to_string(),
                r["detail"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert!(
        details.contains(&("login-started".into(), "oidc".into())),
        "{details:?}"
    );
    assert!(
        details.contains(&("login-succeeded".into(), "oidc".into())),
        "{details:?}"
    );
    assert!(
        details.contains(&("login-failed".into(), "token-exchange-failed".into())),
        "{details:?}"
    );
}

#[tokio::test]
async fn callbacks_without_the_matching_state_are_refused() {
    let w = world();
    let (callback, ours) = through_the_op(&w, "erin").await;
    // The callback without the attempt's cookie (a forged or cross-site callback).
    let r = w.https.get(&callback).send().await.expect("callback");
    assert_eq!(r.status(), 400);
    // The cookie of the attempt, but another state.
    let tampered = callback.replace("state=", "state=x");
    let r = w
        .https
        .get(&tampered)
        .header(COOKIE, cookie_header(&ours))
        .send()
        .await
        .expect("callback");
    assert_eq!(r.status(), 400);
    // An error from the OP.
    let r = w
        .https
        .get(format!(
            "{}/.portcullis/oidc/callback?error=access_denied&state={}",
            w.base,
            callback.split("state=").nth(1).unwrap_or_default()
        ))
        .header(COOKIE, cookie_header(&ours))
        .header("accept", "application/json")
        .send()
        .await
        .expect("callback");
    assert_eq!(r.status(), 401);
    assert_eq!(w.upstream.hits(), 0);
}

#[tokio::test]
async fn client_secret_post_is_supported() {
    let w = world_with("client_secret_post");
    let (callback, ours) = through_the_op(&w, "frank").await;
    let r = w
        .https
        .get(&callback)
        .header(COOKIE, cookie_header(&ours))
        .send()
        .await
        .expect("callback");
    assert_eq!(
        r.status(),
        303,
        "code exchange with the secret in the request body"
    );
    assert_eq!(w._op.count("USERINFO"), 1, "userinfo read once at sign-in");
}

#[tokio::test]
async fn the_only_provider_is_chosen_without_a_page_and_a_failure_shows_the_page() {
    let w = world();
    let r = w
        .https
        .get(format!("{}/.portcullis/login?rd=%2Fchat", w.base))
        .send()
        .await
        .expect("login");
    assert_eq!(r.status(), 302, "straight to the only provider");
    let location = r.headers()[LOCATION].to_str().expect("location");
    assert!(location.starts_with(&w._op.issuer), "{location}");
    assert!(location.contains("client_id=portcullis"), "{location}");

    // The OP answers with an error: back to the page (marked), not to the OP again.
    let (callback, ours) = through_the_op(&w, "erin").await;
    let state = callback.split("state=").nth(1).unwrap_or_default();
    let r = w
        .https
        .get(format!(
            "{}/.portcullis/oidc/callback?error=access_denied&state={state}",
            w.base
        ))
        .header(COOKIE, cookie_header(&ours))
        .header("accept", "text/html")
        .send()
        .await
        .expect("callback");
    assert_eq!(r.status(), 302);
    let back = r.headers()[LOCATION]
        .to_str()
        .expect("location")
        .to_string();
    assert!(
        back.starts_with("/.portcullis/login?rd=%2Fchat") && back.ends_with("&failed=1"),
        "{back}"
    );
    let r = w
        .https
        .get(format!("{}{back}", w.base))
        .send()
        .await
        .expect("login page");
    assert_eq!(r.status(), 200);
    let page = r.text().await.expect("html");
    assert!(page.contains("Sign-in did not complete"), "{page}");
    assert!(
        page.contains("idp=corp"),
        "the provider is offered again: {page}"
    );
    // `?idp=` still starts the provider explicitly.
    let r = w
        .https
        .get(format!(
            "{}/.portcullis/login?idp=corp&rd=%2Fchat&failed=1",
            w.base
        ))
        .send()
        .await
        .expect("login");
    assert_eq!(r.status(), 302);
    assert_eq!(w.upstream.hits(), 0);
}

#[tokio::test]
async fn auto_redirect_off_keeps_the_chooser() {
    let w = world_configured(
        "client_secret_basic",
        "  sign_in:\n    auto_redirect: false\n",
    );
    let r = w
        .https
        .get(format!("{}/.portcullis/login?rd=%2Fchat", w.base))
        .send()
        .await
        .expect("login");
    assert_eq!(r.status(), 200);
    let page = r.text().await.expect("html");
    assert!(page.contains("idp=corp"), "{page}");
}
