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

#[tokio::test]
async fn live_sessions_are_listed_by_user_and_entity_until_they_end_or_expire() {
    let index = LiveSessions::default();
    let alice = Owner::User("corp", "alice");
    let acme = Owner::Entity("acme");
    index.started("s1", &[alice, acme], 200, 100).await;
    index.started("s2", &[alice], 150, 100).await;
    index
        .started("s3", &[Owner::User("corp", "bob"), acme], 300, 100)
        .await;
    let sids = |listed: Vec<(String, u64)>| -> Vec<String> {
        listed.into_iter().map(|(sid, _)| sid).collect()
    };
    assert_eq!(
        sids(index.of(alice, 100).await.expect("index")),
        ["s2", "s1"]
    );
    assert_eq!(
        sids(index.of(acme, 100).await.expect("index")),
        ["s1", "s3"]
    );
    assert_eq!(
        sids(index.of(alice, 160).await.expect("index")),
        ["s1"],
        "expired ones are not listed"
    );
    index.ended("s1", &[alice, acme]).await;
    assert_eq!(sids(index.of(acme, 100).await.expect("index")), ["s3"]);
    assert_eq!(sids(index.of(alice, 100).await.expect("index")), ["s2"]);
}
