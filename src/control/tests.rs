use super::*;
use crate::config::testing::with_sections;

const APP: &str = "  - id: chat\n    hosts: [chat.example.com]\n    upstream: http://127.0.0.1:9\n    access: { user_types: [external-user] }\n";
const OPS: &str = "ops-token-0123456789abcdef0123456789";
const VIEWER: &str = "viewer-token-0123456789abcdef01234567";

/// A token file in the temp dir, named after the test and the token.
fn token_file(name: &str, token: &str) -> String {
    let path = std::env::temp_dir().join(format!("portcullis-{}-{name}", std::process::id()));
    std::fs::write(&path, token).expect("write token");
    path.display().to_string()
}

fn control() -> (
    Control,
    Arc<RevokedSessions>,
    Arc<LiveSessions>,
    Arc<KillSwitches>,
) {
    let admin = format!(
        "admin:\n  tokens:\n    - {{ name: ops, token: \"file:{}\", scopes: [read, revoke, disable] }}\n    - {{ name: viewer, token: \"file:{}\", scopes: [read] }}\n",
        token_file("ops", OPS),
        token_file("viewer", VIEWER)
    );
    let config = with_sections(&admin, APP).unwrap_or_else(|r| panic!("{r}"));
    let (revoked, sessions, switches) = Default::default();
    let control = Control::new(
        &config,
        Arc::clone(&revoked),
        Arc::clone(&sessions),
        Arc::clone(&switches),
    );
    (control, revoked, sessions, switches)
}

#[test]
fn tokens_are_checked_with_their_scopes() {
    let (control, ..) = control();
    let bearer = |t: &str| format!("Bearer {t}");
    assert_eq!(
        control.caller(None, AdminScope::Read),
        Err(ControlError::Unauthorized)
    );
    assert_eq!(
        control.caller(Some(&format!("Basic {OPS}")), AdminScope::Read),
        Err(ControlError::Unauthorized)
    );
    assert_eq!(
        control.caller(Some(&bearer("ops-token")), AdminScope::Read),
        Err(ControlError::Unauthorized),
        "a prefix is not the token"
    );
    assert_eq!(
        control.caller(Some(&bearer(OPS)), AdminScope::Revoke),
        Ok("ops")
    );
    assert_eq!(
        control.caller(Some(&bearer(VIEWER)), AdminScope::Read),
        Ok("viewer")
    );
    assert_eq!(
        control.caller(Some(&bearer(VIEWER)), AdminScope::Revoke),
        Err(ControlError::Forbidden {
            scope: "revoke",
            caller: "viewer".into()
        })
    );
    assert_eq!(
        control.caller(Some(&bearer(OPS)), AdminScope::Reload),
        Err(ControlError::Forbidden {
            scope: "reload",
            caller: "ops".into()
        })
    );
}

#[test]
fn admin_tokens_are_secrets_long_enough_with_known_scopes_and_distinct_names() {
    let short = token_file("short", "too-short");
    let long = token_file("long", OPS);
    let cases = [
        (
            format!("{{ name: a, token: {OPS}, scopes: [read] }}"),
            "admin.tokens[0].token",
        ),
        (
            format!("{{ name: a, token: \"file:{short}\", scopes: [read] }}"),
            "admin.tokens[0].token",
        ),
        (
            format!("{{ name: a, token: \"file:{long}\", scopes: [root] }}"),
            "admin.tokens[0].scopes[0]",
        ),
        (
            format!("{{ name: a, token: \"file:{long}\", scopes: [] }}"),
            "admin.tokens[0].scopes",
        ),
    ];
    for (entry, key) in cases {
        let report = with_sections(&format!("admin:\n  tokens:\n    - {entry}\n"), APP)
            .expect_err("refused");
        assert!(
            report.issues.iter().any(|i| i.path == key),
            "{key}: {report}"
        );
    }
    let twice = format!(
        "admin:\n  tokens:\n    - {{ name: a, token: \"file:{long}\", scopes: [read] }}\n    - {{ name: a, token: \"file:{long}\", scopes: [read] }}\n"
    );
    let report = with_sections(&twice, APP).expect_err("refused");
    assert!(
        report
            .issues
            .iter()
            .any(|i| i.path == "admin.tokens[1].name"),
        "{report}"
    );
}

fn record(sid: &str, user: &str, entity: &str) -> SessionRecord {
    SessionRecord {
        sid: sid.into(),
        user_id: user.into(),
        entity: Some(entity.into()),
        idp: "corp".into(),
        issued_at: 100,
        expires_at: 10_000,
        last_seen: 100,
    }
}

#[tokio::test]
async fn revocations_name_exactly_one_scope_and_hide_what_they_end() {
    let (control, revoked, sessions, _) = control();
    for (sid, user, entity) in [
        ("s1", "alice", "acme"),
        ("s2", "alice", "acme"),
        ("s3", "bob", "globex"),
    ] {
        sessions.started(&record(sid, user, entity), 100).await;
    }
    for body in [
        &b"{}"[..],
        br#"{"user":"a","entity":"b"}"#,
        br#"{"users":"a"}"#,
        b"not json",
        br#"{"all":false}"#,
    ] {
        assert!(
            matches!(
                control.revoke(body, 200).await,
                Err(ControlError::BadRequest(_))
            ),
            "{}",
            String::from_utf8_lossy(body)
        );
    }
    let (answer, detail) = control
        .revoke(br#"{"user":"alice"}"#, 200)
        .await
        .expect("revoke");
    assert_eq!(
        (answer, detail.as_str()),
        (json!({ "revoked": 2 }), "user=alice")
    );
    assert!(revoked.is_cut_off("corp", "alice", None, 150));
    let listed = control
        .sessions(Some("entity=acme"), 200)
        .await
        .expect("list");
    assert_eq!(
        listed,
        json!({ "sessions": [] }),
        "ended sessions are not listed"
    );
    let listed = control.sessions(None, 200).await.expect("list");
    assert_eq!(listed["sessions"][0]["sid"], "s3");
    assert_eq!(listed["sessions"][0]["expires_at"], "1970-01-01T02:46:40Z");
    assert!(matches!(
        control.sessions(Some("user=a&idp=b"), 200).await,
        Err(ControlError::BadRequest(_))
    ));
    let (answer, _) = control
        .revoke(br#"{"sid":"s3"}"#, 200)
        .await
        .expect("revoke");
    assert_eq!(answer, json!({ "revoked": 1 }));
    assert!(revoked.is_revoked("s3"));
}

#[test]
fn kill_switches_check_their_target_and_time() {
    let (control, _, _, switches) = control();
    let now = 1_000;
    for body in [
        &br#"{"app":"nope"}"#[..],
        br#"{"user":"a","until":"yesterday"}"#,
        br#"{"user":"a","until":"1970-01-01T00:00:01Z"}"#,
        br#"{"sid":"x"}"#,
    ] {
        assert!(
            matches!(
                control.disable(body, "ops", now),
                Err(ControlError::BadRequest(_))
            ),
            "{}",
            String::from_utf8_lossy(body)
        );
    }
    let body = br#"{"user":"alice","until":"2999-01-01T00:00:00Z","reason":"incident"}"#;
    let (answer, detail) = control.disable(body, "ops", now).expect("disable");
    assert_eq!(detail, "user:alice");
    assert_eq!(answer["disabled"]["until"], "2999-01-01T00:00:00Z");
    assert_eq!(
        switches.stops("alice", None, now),
        Some(crate::store::Disabled::User)
    );
    assert_eq!(control.disabled(now)["disabled"][0]["by"], "ops");
    control.enable(br#"{"user":"alice"}"#).expect("enable");
    assert_eq!(switches.stops("alice", None, now), None);
    assert!(control.enable(br#"{"user":"alice","reason":"x"}"#).is_err());
}
