use super::chain::verify;
use super::*;

fn auditor(
    policy: QueueFullPolicy,
    capacity: usize,
) -> (Auditor, mpsc::Receiver<AuditEvent>, Arc<Metrics>) {
    let (sender, receiver) = mpsc::channel(capacity);
    let metrics = Arc::new(Metrics::new().expect("metrics"));
    let auditor = Auditor {
        sender,
        policy,
        dropped: Arc::new(AtomicU64::new(0)),
        metrics: metrics.clone(),
        activity: activity::Activity::new(0),
    };
    (auditor, receiver, metrics)
}

/// Two processes sharing a file (a zero-downtime upgrade) take turns: the second waits
/// for the first's final checkpoint, then continues the same chain.
#[test]
fn writers_take_turns_on_one_file_and_keep_one_chain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = crate::config::Audit {
        path: dir.path().join("audit.jsonl"),
        fsync: crate::config::FsyncPolicy::Never,
        queue_capacity: 16,
        on_queue_full: QueueFullPolicy::Block,
        signing_key: None,
        checkpoint_every: 1000,
        checkpoint_interval: std::time::Duration::from_secs(60),
        rotate: crate::config::Rotation::default(),
        retention: None,
        sinks: Vec::new(),
        spool: dir.path().join("audit-sinks"),
        personal_keys: None,
    };
    let (key, _) = CheckpointSigner::generate().expect("key");
    let public = key.public_key_base64().to_string();
    let metrics = Arc::new(Metrics::new().expect("metrics"));
    let (old, old_pending) = channel(&config, key, metrics.clone());
    let old_writer = old_pending.start().expect("old starts");
    let (new_key, _) = CheckpointSigner::generate().expect("key");
    let (new, new_pending) = channel(&config, new_key, metrics);
    let new_writer = new_pending
        .start()
        .expect("new starts while the old holds the file");
    for _ in 0..3 {
        old.record_blocking(AuditEvent::new(EventKind::Access));
        new.record_blocking(AuditEvent::new(EventKind::AccessDenied));
    }
    std::thread::sleep(std::time::Duration::from_millis(100));
    old_writer.finish();
    new_writer.finish();
    let text = std::fs::read_to_string(&config.path).expect("log");
    let verified = verify(&text, VerifyOptions::default()).expect("one intact chain");
    assert_eq!((verified.records, verified.checkpoints), (8, 2), "{text}");
    let first_checkpoint = text
        .lines()
        .position(|l| l.contains("\"checkpoint\""))
        .expect("checkpoint");
    assert!(
        text.lines()
            .take(first_checkpoint)
            .all(|l| l.contains("\"access\"")),
        "old records first:\n{text}"
    );
    assert!(text.contains(&public));
}

#[tokio::test]
async fn drop_policy_counts_what_it_loses() {
    let (auditor, mut receiver, metrics) = auditor(QueueFullPolicy::Drop, 2);
    for _ in 0..5 {
        auditor.record(AuditEvent::new(EventKind::Access)).await;
    }
    assert_eq!(metrics.audit_dropped.get(), 3);
    assert_eq!(
        auditor.dropped.load(Ordering::Relaxed),
        3,
        "the writer will mark the gap"
    );
    assert_eq!(metrics.audit_queue_depth.get(), 2);
    assert!(receiver.recv().await.is_some());
}

#[tokio::test]
async fn block_policy_waits_instead_of_dropping() {
    let (auditor, mut receiver, metrics) = auditor(QueueFullPolicy::Block, 1);
    auditor.record(AuditEvent::new(EventKind::Access)).await;
    let blocked = tokio::spawn({
        let auditor = auditor.clone();
        async move { auditor.record(AuditEvent::new(EventKind::Access)).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert!(
        !blocked.is_finished(),
        "a full queue makes the request wait"
    );
    assert!(receiver.recv().await.is_some());
    blocked.await.expect("join");
    assert_eq!(metrics.audit_dropped.get(), 0);
    assert!(receiver.recv().await.is_some());
}
