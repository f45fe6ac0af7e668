//! The admin API on two replicas sharing a redis-server: tokens and scopes, listing and
//! revoking sessions, kill switches; every effect shows on the other replica within a second.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::browser::{cookie_header, sign_in_local, try_sign_in_local};
use crate::common::redis::Redis;
use crate::common::{audit_until, hash_password, Upstream};
use crate::replicas::{on, timed_get, Deployment, Replica, BASE, OPS_TOKEN, VIEWER_TOKEN};
use crate::store::PASSWORD;

/// alice and bob of entity acme, carol of entity globex.
fn users() -> String {
    let hash = hash_password(PASSWORD);
    let user = |name: &str, entity: &str| {
        format!("      - {{ username: {name}, password_hash: \"{hash}\", entity: {entity} }}\n")
    };
    format!(
        "identity_providers:\n  - id: corp\n    kind: local\n    users:\n{}{}{}",
        user("alice", "acme"),
        user("bob", "acme"),
        user("carol", "globex")
    )
}

/// An admin API call on `replica`: status and JSON answer.
async fn admin(
    replica: &Replica,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let url = format!("http://127.0.0.1:{}{path}", replica.proxy.ports.admin);
    let http = reqwest::Client::new();
    let mut request = match method {
        "POST" => http.post(url),
        _ => http.get(url),
    };
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let r = request.send().await.expect("admin call");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Waits until `cookie` gets `expected` on `replica`, at most a second.
async fn within_a_second(replica: &Replica, cookie: &str, expected: u16, what: &str) {
    let started = Instant::now();
    loop {
        let (status, _) = timed_get(&replica.http, cookie).await;
        if status == expected {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{what}: still {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_admin_api_takes_only_tokens_with_the_scope_and_audits_every_call_by_name() {
    let redis = Redis::start();
    let upstream = Upstream::start();
    let d = Deployment::new(&upstream, &on(&redis), &users(), "");
    let a = d.replica();
    let sessions = "/api/v1/sessions";
    assert_eq!(admin(&a, "GET", sessions, None, None).await.0, 401);
    assert_eq!(
        admin(&a, "GET", sessions, Some("not-a-token"), None)
            .await
            .0,
        401
    );
    let revoke = Some(json!({ "all": true }));
    let (status, answer) = admin(&a, "POST", "/api/v1/revoke", Some(VIEWER_TOKEN), revoke).await;
    assert_eq!(status, 403, "{answer}");
    assert_eq!(answer["error"], "this token lacks the `revoke` scope");
    let (status, answer) = admin(&a, "GET", sessions, Some(VIEWER_TOKEN), None).await;
    assert_eq!((status, answer), (200, json!({ "sessions": [] })));
    // Never served on the public listener: there it is the app's path, behind sign-in.
    let r = a
        .http
        .get(format!("{BASE}{sessions}"))
        .bearer_auth(OPS_TOKEN)
        .header("accept", "application/json")
        .send()
        .await
        .expect("public");
    assert_eq!(r.status(), 401);
    assert_eq!(upstream.hits(), 0);

    let calls = audit_until(&a.fixtures.audit_log(), 4, |r| r["event"] == "admin-call").await;
    let seen: Vec<(u64, Value)> = calls
        .iter()
        .map(|r| (r["status"].as_u64().unwrap_or(0), r["operator"].clone()))
        .collect();
    assert_eq!(
        seen,
        [
            (401, Value::Null),
            (401, Value::Null),
            (403, json!("viewer")),
            (200, json!("viewer"))
        ]
    );
    let file = std::fs::read_to_string(a.fixtures.audit_log()).expect("audit");
    assert!(
        !file.contains(VIEWER_TOKEN) && !file.contains(OPS_TOKEN),
        "no token in the trail"
    );
}

#[tokio::test]
async fn revocations_and_kill_switches_hold_on_every_replica_within_a_second() {
    let redis = Redis::start();
    let upstream = Upstream::start();
    let d = Deployment::new(&upstream, &on(&redis), &users(), "");
    let (a, b) = (d.replica(), d.replica());
    redis.wait_for_subscribers(2);
    let sign_in = |on: &Replica, user: &'static str| {
        let http = on.http.clone();
        async move { sign_in_local(&http, BASE, "corp", user, PASSWORD, &[]).await }
    };
    let alice_a = sign_in(&a, "alice").await;
    let alice_b = sign_in(&b, "alice").await;
    let bob = sign_in(&a, "bob").await;
    let carol = sign_in(&b, "carol").await;

    // Listed on either replica, whichever one they signed in on.
    let (status, listed) = admin(
        &b,
        "GET",
        "/api/v1/sessions?user=alice",
        Some(OPS_TOKEN),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let alices = listed["sessions"].as_array().expect("sessions");
    assert_eq!(alices.len(), 2, "{listed}");
    assert!(alices
        .iter()
        .all(|s| s["user_id"] == "alice" && s["entity"] == "acme" && s["idp"] == "corp"));
    let (_, acme) = admin(
        &a,
        "GET",
        "/api/v1/sessions?entity=acme",
        Some(OPS_TOKEN),
        None,
    )
    .await;
    assert_eq!(acme["sessions"].as_array().map(Vec::len), Some(3));

    // Revoke alice everywhere: both her cookies die on both replicas; bob goes on.
    let body = Some(json!({ "user": "alice" }));
    let (status, answer) = admin(&a, "POST", "/api/v1/revoke", Some(OPS_TOKEN), body).await;
    assert_eq!((status, answer), (200, json!({ "revoked": 2 })));
    within_a_second(&b, &alice_a, 401, "alice's cookie from A, on B").await;
    within_a_second(&a, &alice_b, 401, "alice's cookie from B, on A").await;
    assert_eq!(timed_get(&b.http, &bob).await.0, 200);
    let (_, listed) = admin(
        &a,
        "GET",
        "/api/v1/sessions?user=alice",
        Some(OPS_TOKEN),
        None,
    )
    .await;
    assert_eq!(
        listed,
        json!({ "sessions": [] }),
        "revoked sessions are not listed"
    );

    // A revocation ends sessions, it does not ban: a later sign-in works.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let alice_again = sign_in(&b, "alice").await;
    assert_eq!(timed_get(&a.http, &alice_again).await.0, 200);

    // A kill switch does ban: alice's new session is refused, and she cannot sign in.
    let body = Some(json!({ "user": "alice", "reason": "incident 42" }));
    let (status, answer) = admin(&b, "POST", "/api/v1/disable", Some(OPS_TOKEN), body).await;
    assert_eq!(status, 200, "{answer}");
    within_a_second(&a, &alice_again, 403, "disabled alice on A").await;
    let (_, off) = admin(&a, "GET", "/api/v1/disabled", Some(VIEWER_TOKEN), None).await;
    assert_eq!(off["disabled"][0]["user"], "alice");
    assert_eq!(off["disabled"][0]["reason"], "incident 42");
    assert_eq!(off["disabled"][0]["by"], "ops");
    let refused = try_sign_in_local(&a.http, BASE, "corp", "alice", PASSWORD, &[]).await;
    assert_eq!(refused.status(), 403, "a disabled user cannot sign in");
    let failures = audit_until(&a.fixtures.audit_log(), 1, |r| r["event"] == "login-failed").await;
    assert_eq!(failures[0]["detail"], "user-disabled");
    let body = Some(json!({ "user": "alice" }));
    assert_eq!(
        admin(&a, "POST", "/api/v1/enable", Some(OPS_TOKEN), body)
            .await
            .0,
        200
    );
    within_a_second(&b, &alice_again, 200, "alice enabled again on B").await;

    // An entity: bob (acme) stops, carol (globex) goes on; then the whole app.
    let body = Some(json!({ "entity": "acme", "until": "2999-01-01T00:00:00Z" }));
    assert_eq!(
        admin(&a, "POST", "/api/v1/disable", Some(OPS_TOKEN), body)
            .await
            .0,
        200
    );
    within_a_second(&b, &bob, 403, "acme disabled on B").await;
    assert_eq!(timed_get(&b.http, &carol).await.0, 200);
    let body = Some(json!({ "app": "chat" }));
    assert_eq!(
        admin(&b, "POST", "/api/v1/disable", Some(OPS_TOKEN), body)
            .await
            .0,
        200
    );
    within_a_second(&a, &carol, 503, "the app disabled on A").await;
    let body = Some(json!({ "app": "nope" }));
    let (status, answer) = admin(&b, "POST", "/api/v1/disable", Some(OPS_TOKEN), body).await;
    assert_eq!(
        (status, answer["error"].clone()),
        (400, json!("no app `nope` is configured"))
    );

    // Kill switches outlive a restart: a replica started now reads them from Redis.
    let c = d.replica();
    let (_, off) = admin(&c, "GET", "/api/v1/disabled", Some(OPS_TOKEN), None).await;
    let started = Instant::now();
    let mut off = off;
    while off["disabled"].as_array().map(Vec::len) != Some(2) {
        assert!(started.elapsed() < Duration::from_secs(3), "{off}");
        tokio::time::sleep(Duration::from_millis(50)).await;
        off = admin(&c, "GET", "/api/v1/disabled", Some(OPS_TOKEN), None)
            .await
            .1;
    }
    assert_eq!(timed_get(&c.http, &carol).await.0, 503);
    assert!(upstream.hits() > 0);
}

/// Reads `response`'s body until it ends (or fails); how long after `from` that was.
async fn ends_after(response: reqwest::Response, from: Instant) -> Duration {
    read_to_end(response, from).await.0
}

/// Reads `response`'s body until it ends (or fails): how long after `from`, what it said last
/// (its last 200 bytes), and whether it ended cleanly.
async fn read_to_end(mut response: reqwest::Response, from: Instant) -> (Duration, String, bool) {
    let mut text = String::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), response.chunk()).await {
            Ok(Ok(Some(chunk))) => {
                text.push_str(&String::from_utf8_lossy(&chunk));
                if text.len() > 400 {
                    text = text[text.len() - 200..].to_string();
                }
            }
            Ok(Ok(None)) => return (from.elapsed(), text, true),
            Ok(Err(_)) => return (from.elapsed(), text, false),
            Err(_) => panic!("the stream neither ended nor sent anything for 10 s"),
        }
    }
}

/// An SSE answer that runs for a minute, through `replica` with `cookie`.
async fn open_sse(replica: &Replica, cookie: &str) -> reqwest::Response {
    let r = replica
        .http
        .get(format!("{BASE}/long-sse"))
        .header("cookie", cookie)
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("sse");
    assert_eq!(r.status(), 200);
    r
}

#[tokio::test]
async fn a_revocation_ends_the_users_live_streams_within_a_second_and_no_other() {
    use futures_util::StreamExt;
    let redis = Redis::start();
    let upstream = Upstream::start();
    let d = Deployment::new(&upstream, &on(&redis), &users(), "");
    let (a, b) = (d.replica(), d.replica());
    redis.wait_for_subscribers(2);
    let alice = sign_in_local(&a.http, BASE, "corp", "alice", PASSWORD, &[]).await;
    let carol = sign_in_local(&a.http, BASE, "corp", "carol", PASSWORD, &[]).await;
    let alice_sse = open_sse(&b, &alice).await;
    let carol_sse = open_sse(&b, &carol).await;
    let (mut alice_ws, response) =
        crate::common::wss(&d.shared_ca(), a.proxy.ports.https, "/ws", Some(&alice)).await;
    assert_eq!(response.status(), 101);
    let started = Instant::now();
    while b.proxy.metric("portcullis_streams_open").as_deref() != Some("2") {
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "streams registered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Revoked on A: her stream on B and her WebSocket on A end; carol's goes on.
    let body = Some(json!({ "user": "alice" }));
    let revoked_at = Instant::now();
    assert_eq!(
        admin(&a, "POST", "/api/v1/revoke", Some(OPS_TOKEN), body)
            .await
            .0,
        200
    );
    let (sse_ended, last, clean) = read_to_end(alice_sse, revoked_at).await;
    assert!(
        sse_ended < Duration::from_millis(1500),
        "SSE ended after {sse_ended:?}"
    );
    assert!(
        clean && last.ends_with("event: portcullis-ended\ndata: session-revoked\n\n"),
        "the last event says why, and the stream ends cleanly: {last:?} (clean: {clean})"
    );
    let (ws_ended, close) = loop {
        match tokio::time::timeout(Duration::from_secs(5), alice_ws.next()).await {
            Ok(Some(Ok(message))) if !message.is_close() => continue,
            Ok(last) => break (revoked_at.elapsed(), last),
            Err(_) => panic!("the WebSocket stayed open"),
        }
    };
    // A close frame says why: 1008, policy violation.
    let Some(Ok(tokio_tungstenite::tungstenite::Message::Close(Some(frame)))) = close else {
        panic!("no close frame: {close:?}");
    };
    assert_eq!(u16::from(frame.code), 1008);
    assert_eq!(frame.reason.as_str(), "session-revoked");
    assert!(
        ws_ended < Duration::from_millis(1500),
        "WebSocket ended after {ws_ended:?}"
    );
    let mut carol_sse = carol_sse;
    let bystander = Instant::now();
    while bystander.elapsed() < Duration::from_millis(1000) {
        let chunk = tokio::time::timeout(Duration::from_secs(2), carol_sse.chunk()).await;
        assert!(
            matches!(chunk, Ok(Ok(Some(_)))),
            "carol's stream goes on: {chunk:?}"
        );
    }
    let ended = audit_until(&b.fixtures.audit_log(), 1, |r| r["event"] == "stream-ended").await;
    assert_eq!(ended[0]["user"], "alice");
    assert_eq!(ended[0]["detail"], "session-revoked");
    assert_eq!(
        b.proxy.metric("portcullis_streams_open").as_deref(),
        Some("1")
    );
}

/// `portcullis admin <args>` against `replica` with the token in `token_file`: exit code and
/// standard output (standard error after it).
fn cli(replica: &Replica, token_file: &std::path::Path, args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(crate::common::binary())
        .arg("admin")
        .args([
            "--url",
            &format!("http://127.0.0.1:{}", replica.proxy.ports.admin),
        ])
        .args(["--token", &format!("file:{}", token_file.display())])
        .args(args)
        .output()
        .expect("portcullis admin");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[tokio::test]
async fn the_admin_command_lists_revokes_and_disables_for_people_and_scripts() {
    let redis = Redis::start();
    let upstream = Upstream::start();
    let d = Deployment::new(&upstream, &on(&redis), &users(), "");
    let a = d.replica();
    let alice = sign_in_local(&a.http, BASE, "corp", "alice", PASSWORD, &[]).await;
    let ops = a.fixtures.path("ops.token");
    let viewer = a.fixtures.path("viewer.token");

    let (code, out) = cli(&a, &ops, &["sessions", "--user", "alice"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.starts_with("1 live session(s)\n") && out.contains("user alice  entity acme"),
        "{out}"
    );
    let (code, out) = cli(&a, &viewer, &["revoke", "--user", "alice"]);
    assert_eq!(
        (code, out.as_str()),
        (1, "error: 403: this token lacks the `revoke` scope\n")
    );
    let (code, out) = cli(&a, &ops, &["revoke", "--user", "alice", "--json"]);
    assert_eq!((code, out.trim()), (0, r#"{"revoked":1}"#));
    within_a_second(&a, &alice, 401, "revoked from the command line").await;
    let (code, out) = cli(
        &a,
        &ops,
        &["disable", "--app", "chat", "--reason", "maintenance"],
    );
    assert_eq!(
        (code, out.as_str()),
        (0, "disabled app:chat until enabled again\n")
    );
    let (code, out) = cli(&a, &viewer, &["disabled"]);
    assert_eq!(code, 0);
    assert!(
        out.starts_with("1 turned off\napp:chat  until enabled again  by ops"),
        "{out}"
    );
    assert!(out.trim_end().ends_with("reason maintenance"), "{out}");
    let (code, out) = cli(&a, &ops, &["enable", "--app", "chat"]);
    assert_eq!((code, out.as_str()), (0, "enabled app:chat\n"));

    let missing = a.fixtures.path("no-such-token");
    let (code, out) = cli(&a, &missing, &["disabled"]);
    assert_eq!(code, 2, "{out}");
    let (code, out) = cli(&a, &ops, &["revoke"]);
    assert_eq!(
        (code, out.trim()),
        (
            1,
            "error: 400: name exactly one of sid, user, entity, idp, or all: true"
        )
    );
}

#[tokio::test]
async fn a_disabled_user_cannot_sign_in_through_the_openid_provider_either() {
    use crate::common::browser::Jar;
    use crate::common::op::{finish, sign_in_at_op};
    let redis = Redis::start();
    let upstream = Upstream::start();
    let (op, _d, a, b) = crate::replicas::oidc_deployment(&upstream, &redis, "300");
    let body = Some(json!({ "user": "acme-dan", "reason": "incident 7" }));
    assert_eq!(
        admin(&a, "POST", "/api/v1/disable", Some(OPS_TOKEN), body)
            .await
            .0,
        200
    );
    // On the other replica, once the switch reached it.
    let started = Instant::now();
    while admin(&b, "GET", "/api/v1/disabled", Some(OPS_TOKEN), None)
        .await
        .1["disabled"]
        .as_array()
        .map(Vec::len)
        != Some(1)
    {
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "the switch did not reach B"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (mut ours, mut theirs) = (Jar::new(), Jar::new());
    let start = format!("{BASE}/.portcullis/login?idp=corp&rd=%2F");
    let callback = sign_in_at_op(
        &b.http,
        &op,
        BASE,
        &start,
        "acme-dan",
        &mut ours,
        &mut theirs,
    )
    .await;
    assert_eq!(
        finish(&b.http, &callback, &mut ours).await,
        403,
        "refused at the callback"
    );
    assert!(
        !ours.contains_key(crate::common::browser::SESSION_COOKIE),
        "no session"
    );
    let failed = audit_until(&b.fixtures.audit_log(), 1, |r| r["event"] == "login-failed").await;
    assert_eq!(
        (failed[0]["detail"].clone(), failed[0]["user"].clone()),
        (json!("user-disabled"), json!("acme-dan"))
    );
    // Others sign in as usual.
    let (others, _) = crate::replicas::oidc_sign_in(&op, &b, "acme-eve").await;
    assert_eq!(timed_get(&a.http, &cookie_header(&others)).await.0, 200);
}

#[tokio::test]
async fn revoking_one_session_or_all_of_them_ends_their_streams_too() {
    let redis = Redis::start();
    let upstream = Upstream::start();
    let d = Deployment::new(&upstream, &on(&redis), &users(), "");
    let a = d.replica();
    let alice = sign_in_local(&a.http, BASE, "corp", "alice", PASSWORD, &[]).await;
    let bob = sign_in_local(&a.http, BASE, "corp", "bob", PASSWORD, &[]).await;
    let (alice_sse, bob_sse) = (open_sse(&a, &alice).await, open_sse(&a, &bob).await);
    let (_, listed) = admin(
        &a,
        "GET",
        "/api/v1/sessions?user=bob",
        Some(OPS_TOKEN),
        None,
    )
    .await;
    let sid = listed["sessions"][0]["sid"]
        .as_str()
        .expect("bob's session")
        .to_string();

    let revoked_at = Instant::now();
    let body = Some(json!({ "sid": sid }));
    assert_eq!(
        admin(&a, "POST", "/api/v1/revoke", Some(OPS_TOKEN), body)
            .await
            .1,
        json!({ "revoked": 1 })
    );
    assert!(ends_after(bob_sse, revoked_at).await < Duration::from_millis(1500));
    within_a_second(&a, &bob, 401, "bob's session revoked by id").await;
    assert_eq!(timed_get(&a.http, &alice).await.0, 200, "alice untouched");

    let revoked_at = Instant::now();
    let body = Some(json!({ "all": true }));
    assert_eq!(
        admin(&a, "POST", "/api/v1/revoke", Some(OPS_TOKEN), body)
            .await
            .1,
        json!({ "revoked": 1 })
    );
    assert!(ends_after(alice_sse, revoked_at).await < Duration::from_millis(1500));
    within_a_second(&a, &alice, 401, "every session revoked").await;
}
