use super::*;

#[test]
fn throttle_backs_off_exponentially_and_resets_on_success() {
    let throttle = LoginThrottle::new(3, Duration::from_secs(60));
    let keys = vec!["user:alice".to_string()];
    for _ in 0..3 {
        assert!(throttle.check(&keys, 100).is_ok());
        throttle.failed(&keys, 100);
    }
    assert!(throttle.check(&keys, 100).is_ok(), "three free attempts");
    throttle.failed(&keys, 100);
    assert_eq!(throttle.check(&keys, 100), Err(1));
    throttle.failed(&keys, 101);
    assert_eq!(throttle.check(&keys, 101), Err(2));
    for _ in 0..10 {
        throttle.failed(&keys, 101);
    }
    assert_eq!(throttle.check(&keys, 101), Err(60), "capped");
    let other = vec!["user:bob".to_string()];
    assert!(throttle.check(&other, 101).is_ok(), "others unaffected");
    throttle.succeeded(&keys);
    assert!(throttle.check(&keys, 101).is_ok());
}

#[test]
fn revocation() {
    let revoked = RevokedSessions::default();
    assert!(!revoked.is_revoked("a"));
    revoked.revoke("a", 100, 0);
    assert!(revoked.is_revoked("a"));
}

#[test]
fn op_logouts_end_sessions_by_op_sid_or_earlier_subject_sessions() {
    let revoked = RevokedSessions::default();
    assert!(!revoked.ended_at_op("corp", "alice", Some("s1"), 10));
    revoked.end_op_sessions("corp", None, Some("s1"), 100);
    assert!(revoked.ended_at_op("corp", "alice", Some("s1"), 10));
    assert!(!revoked.ended_at_op("corp", "alice", Some("s2"), 10));
    assert!(
        !revoked.ended_at_op("other", "alice", Some("s1"), 10),
        "per provider"
    );
    revoked.end_op_sessions("corp", Some("carl"), Some("s9"), 100);
    assert!(
        !revoked.ended_at_op("corp", "carl", Some("s8"), 10),
        "sid named: only that session"
    );
    assert!(revoked.ended_at_op("corp", "carl", Some("s9"), 10));
    revoked.end_op_sessions("corp", Some("bob"), None, 100);
    assert!(
        revoked.ended_at_op("corp", "bob", None, 99),
        "signed in before the logout"
    );
    assert!(
        !revoked.ended_at_op("corp", "bob", None, 101),
        "signed in again afterwards"
    );
}

#[test]
fn logout_token_ids_are_single_use() {
    let seen = SeenTokens::default();
    assert!(seen.first_use("j1", 200, 100));
    assert!(!seen.first_use("j1", 200, 150));
    assert!(seen.first_use("j2", 200, 150));
}

#[tokio::test]
async fn single_flight_runs_once_for_concurrent_and_late_callers() {
    let flight = Arc::new(SingleFlight::<u32>::new(Duration::from_secs(120)));
    let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (flight, calls) = (flight.clone(), calls.clone());
        tasks.push(tokio::spawn(async move {
            flight
                .run("k".into(), 1000, || async move {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 7
                })
                .await
        }));
    }
    let mut leaders = 0;
    for task in tasks {
        let (value, ran) = task.await.expect("task");
        assert_eq!(value, 7);
        leaders += usize::from(ran);
    }
    assert_eq!(
        (calls.load(std::sync::atomic::Ordering::SeqCst), leaders),
        (1, 1)
    );
    // A late caller within the window shares the result; after it, a new call runs.
    let (late, ran) = flight.run("k".into(), 1100, || async { 99 }).await;
    assert_eq!((late, ran), (7, false));
    let (fresh, ran) = flight.run("k".into(), 1200, || async { 99 }).await;
    assert_eq!((fresh, ran), (99, true));
}

#[test]
fn local_revocations_are_shared_and_remote_ones_are_applied_without_an_echo() {
    let revoked = RevokedSessions::default();
    let (sender, mut outbox) = tokio::sync::mpsc::channel(8);
    revoked.share_through(sender);
    revoked.revoke("s1", 2_000, 1_000);
    revoked.end_op_sessions("corp", Some("alice"), None, 1_000);
    revoked.end_op_sessions("corp", Some("alice"), Some("op-9"), 1_000);
    let shared: Vec<Revocation> = std::iter::from_fn(|| outbox.try_recv().ok()).collect();
    assert_eq!(
        shared,
        vec![
            Revocation::Session {
                sid: "s1".into(),
                until: 2_000
            },
            Revocation::Subject {
                idp: "corp".into(),
                sub: "alice".into(),
                at: 1_000
            },
            Revocation::OpSession {
                idp: "corp".into(),
                op_sid: "op-9".into(),
                at: 1_000
            },
        ]
    );
    // As another replica hears them: applied, not shared again.
    let other = RevokedSessions::default();
    let (sender, mut echo) = tokio::sync::mpsc::channel(8);
    other.share_through(sender);
    for revocation in &shared {
        let json = serde_json::to_string(revocation).expect("json");
        let heard: Revocation = serde_json::from_str(&json).expect("parse");
        other.apply(&heard, 1_000);
    }
    assert!(
        echo.try_recv().is_err(),
        "applied revocations are not sent again"
    );
    assert!(other.is_revoked("s1"));
    assert!(other.ended_at_op("corp", "alice", None, 900));
    assert!(!other.ended_at_op("corp", "alice", None, 1_001));
    assert!(other.ended_at_op("corp", "bob", Some("op-9"), 1_001));
    assert_eq!(shared[0].expires_at(), 2_000);
    assert!(shared[1].expires_at() > 1_000 + 30 * 24 * 3600);
}

fn record(sid: &str, user: &str, entity: Option<&str>, expires_at: u64) -> SessionRecord {
    SessionRecord {
        sid: sid.into(),
        user_id: user.into(),
        entity: entity.map(Into::into),
        idp: "corp".into(),
        issued_at: 100,
        expires_at,
        last_seen: 100,
    }
}

#[tokio::test]
async fn live_sessions_are_listed_by_user_entity_and_provider_until_they_end_or_expire() {
    let index = LiveSessions::default();
    let s1 = record("s1", "alice", Some("acme"), 200);
    index.started(&s1, 100).await;
    index.started(&record("s2", "alice", None, 150), 100).await;
    index
        .started(&record("s3", "bob", Some("acme"), 300), 100)
        .await;
    let sids =
        |listed: Vec<SessionRecord>| -> Vec<String> { listed.into_iter().map(|r| r.sid).collect() };
    let of = |owner, now| index.of(owner, now);
    assert_eq!(
        sids(of(Owner::User("alice"), 100).await.expect("index")),
        ["s2", "s1"]
    );
    assert_eq!(
        sids(of(Owner::Entity("acme"), 100).await.expect("index")),
        ["s1", "s3"]
    );
    assert_eq!(
        sids(of(Owner::Provider("corp"), 100).await.expect("index")),
        ["s2", "s1", "s3"]
    );
    assert_eq!(sids(of(Owner::All, 100).await.expect("index")).len(), 3);
    assert_eq!(
        sids(of(Owner::User("alice"), 160).await.expect("index")),
        ["s1"],
        "expired ones are not listed"
    );
    index.touched("s1", 130);
    let listed = of(Owner::User("alice"), 160).await.expect("index");
    assert_eq!(listed[0].last_seen, 130, "a rewritten cookie is seen");
    assert_eq!(listed[0].entity.as_deref(), Some("acme"));
    index.ended(&s1).await;
    assert_eq!(
        sids(of(Owner::Entity("acme"), 100).await.expect("index")),
        ["s3"]
    );
    assert_eq!(
        sids(of(Owner::User("alice"), 100).await.expect("index")),
        ["s2"]
    );
}

#[test]
fn operator_cutoffs_end_sessions_that_began_before_them() {
    let revoked = RevokedSessions::default();
    assert!(!revoked.is_cut_off("corp", "alice", Some("acme"), 100));
    revoked.cut_off(
        Cutoff::User {
            user: "alice".into(),
        },
        200,
    );
    assert!(
        revoked.is_cut_off("corp", "alice", None, 200),
        "issued at the cutoff"
    );
    assert!(
        !revoked.is_cut_off("corp", "alice", None, 201),
        "a later sign-in"
    );
    assert!(!revoked.is_cut_off("corp", "bob", Some("acme"), 100));
    revoked.cut_off(
        Cutoff::Entity {
            entity: "acme".into(),
        },
        300,
    );
    assert!(revoked.is_cut_off("corp", "bob", Some("acme"), 250));
    assert!(!revoked.is_cut_off("corp", "bob", Some("other"), 250));
    revoked.cut_off(Cutoff::Provider { idp: "corp".into() }, 400);
    assert!(revoked.is_cut_off("corp", "carol", None, 350));
    assert!(!revoked.is_cut_off("partners", "carol", None, 350));
    revoked.apply(
        &Revocation::Wholesale {
            of: Cutoff::All,
            at: 500,
        },
        500,
    );
    assert!(
        revoked.is_cut_off("partners", "carol", None, 450),
        "applied from elsewhere"
    );
    assert!(!revoked.is_cut_off("partners", "carol", None, 501));
}

#[test]
fn kill_switches_stop_users_entities_and_apps_until_lifted_or_expired() {
    let switches = KillSwitches::default();
    assert!(!switches.any_set(), "nothing to look at yet");
    assert_eq!(switches.stops("alice", Some("acme"), 100), None);
    let off = |target: Target, until: Option<u64>| {
        SwitchChange::Off(Switch {
            target,
            until,
            reason: Some("incident 42".into()),
            by: "ops".into(),
            at: 100,
        })
    };
    switches.change(off(Target::User("alice".into()), None));
    assert!(switches.any_set());
    switches.change(off(Target::Entity("acme".into()), Some(200)));
    switches.change(off(Target::App("chat".into()), None));
    assert_eq!(switches.stops("alice", None, 150), Some(Disabled::User));
    assert_eq!(
        switches.stops("bob", Some("acme"), 150),
        Some(Disabled::Entity)
    );
    assert_eq!(
        switches.stops("bob", Some("acme"), 200),
        None,
        "until passed"
    );
    assert!(switches.app_off("chat", 150));
    assert!(!switches.app_off("other", 150));
    assert_eq!(switches.list(150).len(), 3);
    switches.change(SwitchChange::On(Target::User("alice".into())));
    assert_eq!(switches.stops("alice", None, 150), None);
    switches.replace_all(vec![]);
    assert!(
        !switches.app_off("chat", 150),
        "a full read replaces everything"
    );
}
