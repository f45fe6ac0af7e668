use std::sync::Arc;

use super::*;
use crate::audit::files;
use crate::policy::Reason;

const NOW: u64 = 1_800_000_000;

fn request(kind: EventKind, reason: Option<Reason>, user: Option<&str>, ip: &str) -> AuditEvent {
    let mut e = AuditEvent::new(kind);
    e.decision = Some(if kind == EventKind::Access {
        Outcome::Allow
    } else {
        Outcome::Deny
    });
    e.reason = reason;
    e.user = user.map(str::to_string);
    e.client_ip = ip.parse().ok();
    e.app = Some(Arc::from("chat"));
    e.method = Some("GET".into());
    e.path = Some("/admin".into());
    e
}

fn denied(reason: Reason, user: Option<&str>, ip: &str) -> AuditEvent {
    request(EventKind::AccessDenied, Some(reason), user, ip)
}

#[test]
fn counts_the_last_hour_and_the_last_day_apart() {
    let a = Activity::new(NOW - 90_000);
    let two_hours_ago = NOW - 7_200;
    a.observe(
        &denied(Reason::RoleMissing, Some("old"), "10.0.0.9"),
        1,
        two_hours_ago,
    );
    for seq in 2..6 {
        a.observe(
            &request(
                EventKind::Access,
                Some(Reason::Authenticated),
                Some("bob"),
                "10.0.0.1",
            ),
            seq,
            NOW - 60,
        );
    }
    a.observe(
        &denied(Reason::RoleMissing, Some("eve"), "10.0.0.2"),
        6,
        NOW - 30,
    );
    a.observe(
        &denied(Reason::RoleMissing, Some("eve"), "10.0.0.2"),
        7,
        NOW - 20,
    );
    a.observe(
        &denied(Reason::RateLimited, Some("mallory"), "10.0.0.3"),
        8,
        NOW - 10,
    );
    let mut failed = AuditEvent::new(EventKind::LoginFailed);
    failed.idp = Some("corp".into());
    failed.detail = Some("bad-credentials".into());
    a.observe(&failed, 9, NOW - 5);
    a.observe(&failed, 10, NOW - 4);

    let o = a.overview(NOW);
    assert_eq!(o.hour.requests, 7);
    assert_eq!(o.hour.denied, 3);
    assert_eq!(
        o.hour.denials,
        vec![("role-missing", 2), ("rate-limited", 1)]
    );
    assert_eq!(o.hour.rate_limited, 1);
    assert_eq!(
        o.hour.sign_in_failures,
        vec![(("corp".to_string(), "bad-credentials".to_string()), 2)]
    );
    assert_eq!(
        o.hour.top_denied_users,
        vec![("eve".to_string(), 2), ("mallory".to_string(), 1)]
    );
    assert_eq!(
        o.hour.top_denied_addresses[0],
        ("10.0.0.2".parse().expect("ip"), 2)
    );
    // The day holds the hour and the refusal two hours ago.
    assert_eq!(o.day.requests, 8);
    assert_eq!(
        o.day.denials,
        vec![("role-missing", 3), ("rate-limited", 1)]
    );
    assert_eq!(o.hour_slices.len(), 12);
    assert_eq!(o.day_slices.len(), 24);
    assert_eq!(o.hour_slices.iter().map(|s| s.requests).sum::<u64>(), 7);
    assert_eq!(o.day_slices.iter().map(|s| s.requests).sum::<u64>(), 8);
    assert_eq!(o.day_slices.iter().map(|s| s.denied).sum::<u64>(), 4);
    assert!(o.hour_slices.windows(2).all(|w| w[0].start < w[1].start));
}

#[test]
fn a_day_later_the_counts_are_gone() {
    let a = Activity::new(NOW);
    let eve = denied(Reason::RoleMissing, Some("eve"), "10.0.0.2");
    a.observe(&eve, 1, NOW);
    a.observe(&eve, 2, NOW + 86_400 + 600);
    let o = a.overview(NOW + 86_400 + 600);
    assert_eq!(o.day.denied, 1);
    assert_eq!(a.lock().buckets.len(), 1, "the old bucket was dropped");
}

#[test]
fn keeps_security_relevant_records_newest_first_and_filters_them() {
    let a = Activity::new(NOW);
    a.observe(
        &request(
            EventKind::Access,
            Some(Reason::Authenticated),
            Some("bob"),
            "10.0.0.1",
        ),
        1,
        NOW - 100,
    );
    a.observe(
        &denied(Reason::RoleMissing, Some("eve"), "10.0.0.2"),
        2,
        NOW - 90,
    );
    let mut other_app = denied(Reason::RuleDenied, Some("eve"), "10.0.0.2");
    other_app.app = Some(Arc::from("wiki"));
    a.observe(&other_app, 3, NOW - 80);
    let mut call = AuditEvent::new(EventKind::AdminCall);
    call.operator = Some("alice".into());
    call.user = Some("eve".into());
    call.detail = Some("user=eve".into());
    a.observe(&call, 4, NOW - 70);

    let all = a.recent(&EventFilter::default(), 10);
    assert_eq!(
        all.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![4, 3, 2],
        "access records are not kept"
    );
    assert_eq!(all[0].event, "admin-call");
    assert_eq!(all[2].request.as_deref(), Some("GET /admin"));
    assert_eq!(all[2].reason, Some("role-missing"));

    let only = |f: EventFilter| a.recent(&f, 10).iter().map(|r| r.seq).collect::<Vec<_>>();
    assert_eq!(
        only(EventFilter {
            app: Some("wiki".into()),
            ..Default::default()
        }),
        vec![3]
    );
    assert_eq!(
        only(EventFilter {
            reason: Some("role-missing".into()),
            ..Default::default()
        }),
        vec![2]
    );
    assert_eq!(
        only(EventFilter {
            reason: Some("admin-call".into()),
            ..Default::default()
        }),
        vec![4]
    );
    assert_eq!(
        only(EventFilter {
            user: Some("eve".into()),
            since: NOW - 75,
            ..Default::default()
        }),
        vec![4]
    );
    assert_eq!(
        only(EventFilter {
            user: Some("bob".into()),
            ..Default::default()
        }),
        Vec::<u64>::new()
    );
    assert_eq!(a.recent(&EventFilter::default(), 1).len(), 1);
}

#[test]
fn stays_bounded_under_a_flood() {
    let a = Activity::new(NOW);
    for i in 0..(RECENT as u64 + 500) {
        let ip = format!("10.1.{}.{}", i / 250, i % 250);
        a.observe(
            &denied(Reason::RoleMissing, Some(&format!("u{i}")), &ip),
            i,
            NOW,
        );
    }
    let kept = a.recent(&EventFilter::default(), usize::MAX);
    assert_eq!(kept.len(), RECENT);
    assert_eq!(kept[0].seq, RECENT as u64 + 499, "the newest stay");
    let window = a.lock();
    let bucket = window.buckets.back().expect("bucket");
    assert_eq!(bucket.counts.denied_users.len(), TOP_KEYS);
    assert_eq!(bucket.counts.denied_addresses.len(), TOP_KEYS);
    assert_eq!(
        bucket.counts.denied,
        RECENT as u64 + 500,
        "every refusal is still counted"
    );
}

#[test]
fn forgetting_a_user_drops_their_records_and_counts() {
    let a = Activity::new(NOW);
    a.observe(
        &denied(Reason::RoleMissing, Some("eve"), "10.0.0.2"),
        1,
        NOW,
    );
    a.observe(
        &denied(Reason::RoleMissing, Some("bob"), "10.0.0.3"),
        2,
        NOW,
    );
    a.forget("eve");
    let mut forgotten = AuditEvent::new(EventKind::UserForgotten);
    forgotten.user = Some("eve".into());
    a.observe(&forgotten, 3, NOW);
    assert_eq!(
        a.recent(&EventFilter::default(), 1)[0].user,
        None,
        "not named again"
    );
    a.observe(&AuditEvent::new(EventKind::ConfigLoaded), 4, NOW);
    let kept = a.recent(
        &EventFilter {
            reason: Some("role-missing".into()),
            ..Default::default()
        },
        10,
    );
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].user.as_deref(), Some("bob"));
    let o = a.overview(NOW);
    assert_eq!(o.hour.top_denied_users, vec![("bob".to_string(), 1)]);
    assert_eq!(o.hour.denied, 2, "the counts without names stay");
}

#[test]
fn event_names_are_those_of_the_file() {
    for kind in [
        EventKind::AccessDenied,
        EventKind::AdminCall,
        EventKind::UserForgotten,
        EventKind::ConfigLoaded,
    ] {
        let json = serde_json::to_value(kind).expect("json");
        assert_eq!(json.as_str(), Some(kind.as_str()));
    }
}

/// A record as the writer puts it in the file.
fn line(event: &AuditEvent, seq: u64, at: u64) -> String {
    let mut value = serde_json::to_value(event).expect("json");
    let ts = humantime::format_rfc3339_millis(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(at),
    )
    .to_string();
    value["seq"] = seq.into();
    value["ts"] = ts.into();
    value.to_string()
}

#[test]
fn a_written_record_reads_back_as_its_event() {
    let mut event = denied(Reason::RoleMissing, Some("eve"), "10.0.0.2");
    event.status = Some(403);
    event.entity = Some("acme".into());
    let record: serde_json::Value = serde_json::from_str(&line(&event, 9, NOW)).expect("json");
    let (back, seq, at) = recall::event_of(&record).expect("an event");
    assert_eq!((seq, at), (9, NOW));
    assert_eq!(back.event, EventKind::AccessDenied);
    assert_eq!(back.reason, Some(Reason::RoleMissing));
    assert_eq!(back.decision, Some(Outcome::Deny));
    assert_eq!(back.user.as_deref(), Some("eve"));
    assert_eq!(back.app.as_deref(), Some("chat"));
    assert_eq!(back.client_ip, "10.0.0.2".parse().ok());
    assert_eq!(back.status, Some(403));
    let checkpoint =
        serde_json::json!({"seq": 10, "ts": "2027-01-15T08:00:00.000Z", "event": "checkpoint"});
    assert!(recall::event_of(&checkpoint).is_none());
}

#[test]
fn a_new_process_reads_the_last_day_back_from_the_trail() {
    let dir = tempfile::tempdir().expect("dir");
    let current = dir.path().join("audit.jsonl");
    let rotated = files::rotated_name(
        &current,
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(NOW - 3_000),
    );
    let old = denied(Reason::RuleDenied, Some("old"), "10.0.0.9");
    let eve = denied(Reason::RoleMissing, Some("eve"), "10.0.0.2");
    std::fs::write(
        &rotated,
        [line(&old, 1, NOW - 90_000), line(&eve, 2, NOW - 4_000)].join("\n") + "\n",
    )
    .expect("write");
    let ours = denied(Reason::RoleMissing, Some("ours"), "10.0.0.3");
    std::fs::write(
        &current,
        [
            line(&eve, 3, NOW - 60),
            "{\"seq\":4,\"ts\":\"torn".to_string(),
            line(&ours, 5, NOW - 1),
        ]
        .join("\n")
            + "\n",
    )
    .expect("write");
    let now = std::time::UNIX_EPOCH + std::time::Duration::from_secs(NOW);
    let older = recall::recall(&current, None, 5, now).expect("recall");
    // This process counted seq 5 itself; the recall brings 2 and 3 (1 is older than a day).
    let live = Activity::new(NOW);
    live.observe(&ours, 5, NOW - 1);
    live.merge_older(&older);
    let kept: Vec<u64> = live
        .recent(&EventFilter::default(), 10)
        .iter()
        .map(|r| r.seq)
        .collect();
    assert_eq!(kept, vec![5, 3, 2]);
    let o = live.overview(NOW);
    assert_eq!(o.day.denied, 3);
    assert_eq!(
        o.hour.denied, 2,
        "the one over an hour ago is outside the hour"
    );
    assert_eq!(
        o.since,
        NOW - 4_000,
        "counted since the oldest record read back"
    );
}
