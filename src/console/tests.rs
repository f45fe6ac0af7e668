use std::sync::Arc;

use super::*;
use crate::audit::{AuditEvent, CheckpointSigner, EventKind, Outcome};
use crate::config::testing::with_sections;
use crate::identity::{AuthMethod, Identity};
use crate::store::{KillSwitches, LiveSessions, RevokedSessions, SessionRecord};

const APP: &str = "  - id: chat\n    hosts: [chat.example.com]\n    upstream: http://127.0.0.1:9\n    access: { user_types: [external-user], roles: [chat] }\n";
const NOW: u64 = 1_800_000_000;

struct Bench {
    console: Console,
    revoked: Arc<RevokedSessions>,
    sessions: Arc<LiveSessions>,
    switches: Arc<KillSwitches>,
    // Keeps the audit queue open.
    _pending: crate::audit::PendingWriter,
}

fn bench(console: &str) -> Bench {
    let config = with_sections(&format!("admin:\n  console: {console}\n"), APP)
        .unwrap_or_else(|r| panic!("{r}"));
    let (revoked, sessions, switches): (
        Arc<RevokedSessions>,
        Arc<LiveSessions>,
        Arc<KillSwitches>,
    ) = Default::default();
    let control = Control::new(&config, revoked.clone(), sessions.clone(), switches.clone());
    let desk = Arc::new(Desk::new(
        Arc::new(ArcSwap::from_pointee(control)),
        "ab12".into(),
    ));
    let (signer, _) = CheckpointSigner::generate().expect("key");
    let metrics = Arc::new(crate::metrics::Metrics::new().expect("metrics"));
    let (auditor, pending) = crate::audit::channel(&config.audit, signer, metrics);
    Bench {
        console: Console::new(&config, desk, auditor).expect("console configured"),
        revoked,
        sessions,
        switches,
        _pending: pending,
    }
}

fn person(roles: &[&str], mfa: bool) -> Identity {
    let mut who = Identity::imagined(
        "alice",
        crate::config::UserType::Internal,
        roles.iter().map(|r| r.to_string()).collect(),
        Some("corp".into()),
        "corp".into(),
        mfa,
    );
    who.auth_method = AuthMethod::Oidc;
    who
}

fn request<'a>(
    method: &'a str,
    page: &'a str,
    query: Option<&'a str>,
    form: Option<&'a [u8]>,
    actor: &'a Identity,
) -> ConsoleRequest<'a> {
    ConsoleRequest {
        method,
        page,
        query,
        form,
        actor,
        csrf: "csrf-token-1",
        request: RequestRef {
            request_id: "req-1",
            client_ip: None,
            app: None,
        },
        now: NOW,
    }
}

fn page(answer: Answer) -> String {
    match answer {
        Answer::Page(200, html) | Answer::Fragment(html) => html,
        other => panic!("not a page: {other:?}"),
    }
}

#[test]
fn only_a_role_holder_with_mfa_gets_in() {
    let b = bench("{ roles: [sec-admin] }");
    assert_eq!(b.console.admit(None), Admission::SignIn);
    assert_eq!(
        b.console.admit(Some(&person(&["chat"], true))),
        Admission::Refused(Reason::RoleMissing)
    );
    assert_eq!(
        b.console.admit(Some(&person(&["sec-admin"], false))),
        Admission::StepUp
    );
    assert_eq!(
        b.console.admit(Some(&person(&["chat", "sec-admin"], true))),
        Admission::Admitted
    );
    let mut machine = person(&["sec-admin"], true);
    machine.auth_method = AuthMethod::ApiKey;
    assert_eq!(
        b.console.admit(Some(&machine)),
        Admission::Refused(Reason::UserNotAllowed)
    );
    let relaxed = bench("{ roles: [sec-admin], require_mfa: false }");
    assert_eq!(
        relaxed.console.admit(Some(&person(&["sec-admin"], false))),
        Admission::Admitted
    );
    assert_eq!(b.console.base(), "/.portcullis/admin/");
}

#[test]
fn an_empty_role_list_is_a_config_error() {
    let report = with_sections("admin:\n  console: { roles: [] }\n", APP).expect_err("refused");
    let text = report.to_string();
    assert!(
        text.contains("admin.console.roles") && text.contains("nobody could open"),
        "{text}"
    );
    let report =
        with_sections("admin:\n  console: { roles: [a], mfa: true }\n", APP).expect_err("refused");
    assert!(report.to_string().contains("mfa"), "{report}");
}

#[tokio::test]
async fn values_from_the_trail_are_escaped_on_every_page() {
    let b = bench("{ roles: [sec-admin] }");
    let mut event = AuditEvent::new(EventKind::AccessDenied);
    event.decision = Some(Outcome::Deny);
    event.reason = Some(Reason::RoleMissing);
    event.user = Some("<script>alert(1)</script>".into());
    event.path = Some("/\"><img src=x onerror=alert(2)>".into());
    b.console.auditor.activity().observe(&event, 7, NOW - 5);
    let admin = person(&["sec-admin"], true);
    for (name, query) in [("", None), ("events", None), ("events", Some("fragment=1"))] {
        let html = page(
            b.console
                .answer(&request("GET", name, query, None, &admin))
                .await,
        );
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{name}: {html}"
        );
        assert!(
            !html.contains("<script>alert") && !html.contains("<img src=x"),
            "{name}"
        );
    }
    let user = page(
        b.console
            .answer(&request(
                "GET",
                "user",
                Some("id=%3Cscript%3Ealert(1)%3C%2Fscript%3E"),
                None,
                &admin,
            ))
            .await,
    );
    assert!(!user.contains("<script>alert"), "{user}");
    assert!(user.contains("role-missing"), "the user's records: {user}");
}

#[tokio::test]
async fn revoke_disable_and_enable_go_through_the_control_plane() {
    let b = bench("{ roles: [sec-admin] }");
    let record = SessionRecord {
        sid: "sid-eve-1".into(),
        user_id: "eve".into(),
        entity: Some("acme".into()),
        idp: "corp".into(),
        issued_at: NOW - 100,
        expires_at: NOW + 3_600,
        last_seen: NOW - 10,
    };
    b.sessions.started(&record, NOW - 100).await;
    let admin = person(&["sec-admin"], true);
    let listing = page(
        b.console
            .answer(&request(
                "GET",
                "sessions",
                Some("entity=acme"),
                None,
                &admin,
            ))
            .await,
    );
    assert!(
        listing.contains("sid-eve-1") && listing.contains("Revoke"),
        "{listing}"
    );
    assert!(
        listing.contains("name=\"csrf\" value=\"csrf-token-1\""),
        "forms carry the token"
    );

    let form =
        b"csrf=csrf-token-1&sid=sid-eve-1&back=%2F.portcullis%2Fadmin%2Fsessions%3Fentity%3Dacme";
    let answer = b
        .console
        .answer(&request("POST", "revoke", None, Some(form), &admin))
        .await;
    assert_eq!(
        answer,
        Answer::Redirect("/.portcullis/admin/sessions?entity=acme&done=revoked".into())
    );
    assert!(b.revoked.is_revoked("sid-eve-1"));
    assert!(
        listing.contains("name=\"owner\" value=\"eve\""),
        "the row names its owner"
    );

    let form = b"kind=entity&id=acme&until=2h&reason=incident+42";
    let answer = b
        .console
        .answer(&request("POST", "disable", None, Some(form), &admin))
        .await;
    assert_eq!(
        answer,
        Answer::Redirect("/.portcullis/admin/sessions?done=disabled".into())
    );
    let off = b.switches.list(NOW);
    assert_eq!(off.len(), 1);
    assert_eq!(off[0].until, Some(NOW + 7_200));
    assert_eq!(off[0].by, "alice", "the acting user");
    assert_eq!(off[0].reason.as_deref(), Some("incident 42"));

    let answer = b
        .console
        .answer(&request(
            "POST",
            "enable",
            None,
            Some(b"kind=entity&id=acme"),
            &admin,
        ))
        .await;
    assert!(matches!(answer, Answer::Redirect(_)), "{answer:?}");
    assert!(b.switches.list(NOW).is_empty());

    // A mistake is said, not done.
    let answer = b
        .console
        .answer(&request(
            "POST",
            "disable",
            None,
            Some(b"kind=app&id=nope"),
            &admin,
        ))
        .await;
    match answer {
        Answer::Page(400, html) => assert!(html.contains("no app `nope` is configured"), "{html}"),
        other => panic!("{other:?}"),
    }
    // Without a reloader (not yet started) a reload is unavailable, not a panic.
    match b
        .console
        .answer(&request("POST", "reload", None, Some(b""), &admin))
        .await
    {
        Answer::Page(503, _) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_action_returns_only_to_a_console_page() {
    let base = "/.portcullis/admin/";
    assert_eq!(
        pages::back(base, Some("/.portcullis/admin/user?id=eve")),
        "/.portcullis/admin/user?id=eve"
    );
    for bad in [
        "https://evil.test/",
        "//evil.test/.portcullis/admin/",
        "/.portcullis/admin//evil",
        "/elsewhere",
        "/.portcullis/admin/\r\nx",
    ] {
        assert_eq!(
            pages::back(base, Some(bad)),
            "/.portcullis/admin/sessions",
            "{bad:?}"
        );
    }
    assert_eq!(pages::back(base, None), "/.portcullis/admin/sessions");
}

#[test]
fn until_takes_a_local_time_in_utc_rfc_3339_or_a_span() {
    let until = |text: &str| {
        with_until(
            Selector {
                until: Some(text.into()),
                ..Selector::default()
            },
            NOW,
        )
        .until
        .unwrap_or_default()
    };
    assert_eq!(until("2027-01-15T08:30"), "2027-01-15T08:30:00+00:00");
    assert_eq!(
        until("2027-01-15T08:30:00+01:00"),
        "2027-01-15T08:30:00+01:00"
    );
    let span = chrono::DateTime::parse_from_rfc3339(&until("90m")).expect("rfc 3339");
    assert_eq!(span.timestamp() as u64, NOW + 5_400);
    assert_eq!(
        until("tomorrow"),
        "tomorrow",
        "left for the control plane to refuse"
    );
}

#[tokio::test]
async fn explain_shows_each_layer_as_the_command_line_does() {
    let b = bench("{ roles: [sec-admin] }");
    let admin = person(&["sec-admin"], true);
    let ask = |q: &'static str| request("GET", "explain", Some(q), None, &admin);
    let form = page(b.console.answer(&ask("")).await);
    assert!(
        form.contains("<option>chat</option>") && !form.contains("Decision:"),
        "{form}"
    );
    let denied = page(
        b.console
            .answer(&ask(
                "app=chat&method=GET&path=%2Fapi%2Fx&user=eve&user_type=external-user",
            ))
            .await,
    );
    assert!(denied.contains("Decision: deny (role-missing)"), "{denied}");
    assert!(
        denied.contains("FAIL") && denied.contains("GET /api/x"),
        "{denied}"
    );
    let allowed = page(
        b.console
            .answer(&ask(
                "app=chat&path=%2Fapi%2Fx&user_type=external-user&roles=chat",
            ))
            .await,
    );
    assert!(
        allowed.contains("Decision: allow (authenticated)"),
        "{allowed}"
    );
    let anonymous = page(
        b.console
            .answer(&ask("app=chat&path=%2F&anonymous=on"))
            .await,
    );
    assert!(
        anonymous.contains("Decision: login-required"),
        "{anonymous}"
    );
    let bad = page(
        b.console
            .answer(&ask("app=chat&path=%2F&ip=not-an-address"))
            .await,
    );
    assert!(
        bad.contains("The client address is not an IP address."),
        "{bad}"
    );
}

#[tokio::test]
async fn config_page_shows_the_summary_and_the_hash_but_no_secret() {
    let b = bench("{ roles: [sec-admin] }");
    let admin = person(&["sec-admin"], true);
    let html = page(
        b.console
            .answer(&request("GET", "config", None, None, &admin))
            .await,
    );
    assert!(html.contains("id=\"config-sha256\">ab12<"), "{html}");
    assert!(
        html.contains("console: /.portcullis/admin/ for role(s) sec-admin, MFA required"),
        "{html}"
    );
    assert!(html.contains("No reload since the process started."));
    b.console.desk.reloaded(ReloadResult {
        at: NOW,
        by: "SIGHUP".into(),
        outcome: Err(vec!["test.yaml:3: apps[0].upstream: <bad>".into()]),
    });
    let html = page(
        b.console
            .answer(&request("GET", "config", None, None, &admin))
            .await,
    );
    assert!(
        html.contains("refused") && html.contains("&lt;bad&gt;"),
        "{html}"
    );
}

#[tokio::test]
async fn assets_and_unknown_pages() {
    let b = bench("{ roles: [sec-admin] }");
    let admin = person(&["sec-admin"], true);
    assert!(matches!(
        b.console
            .answer(&request("GET", "console.js", None, None, &admin))
            .await,
        Answer::Asset("text/javascript; charset=utf-8", _)
    ));
    assert!(matches!(
        b.console
            .answer(&request("GET", "console.css", None, None, &admin))
            .await,
        Answer::Asset("text/css; charset=utf-8", _)
    ));
    for (method, name) in [
        ("GET", "nope"),
        ("PUT", "sessions"),
        ("POST", "sessions"),
        ("DELETE", ""),
    ] {
        let form: &[u8] = b"";
        let answer = b
            .console
            .answer(&request(method, name, None, Some(form), &admin))
            .await;
        assert_eq!(answer, Answer::NotFound, "{method} {name}");
    }
    let html = page(
        b.console
            .answer(&request("GET", "", None, None, &admin))
            .await,
    );
    assert!(
        !html.contains("<script>")
            && html.contains("<script src=\"/.portcullis/admin/console.js\" defer>"),
        "no inline script"
    );
    assert!(!html.contains("style="), "no inline style");
}
