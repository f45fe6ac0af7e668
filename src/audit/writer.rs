//! The audit writer thread: numbers, timestamps, chains, writes and checkpoints records,
//! rotates the file and applies retention to the rotated ones.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, watch};

use super::chain::{checkpoint_message, seal};
use super::files;
use super::recovery::{recover, UncleanShutdown};
use super::sink::{self, Sinks};
use super::{AuditEvent, Auditor, CheckpointSigner, EventKind};
use crate::config::{Audit, FsyncPolicy, Retention, Rotation};
use crate::metrics::Metrics;

/// How long the writer lets records gather after the first one of a batch.
const BATCH_WINDOW: Duration = Duration::from_millis(2);
/// How often retention looks for expired rotated files between rotations.
const SWEEP_EVERY: Duration = Duration::from_secs(3600);

/// Owns the writer thread; [`WriterHandle::finish`] drains the queue and seals the file.
pub struct WriterHandle {
    stop: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
    sinks: Option<Sinks>,
}

impl WriterHandle {
    /// Stops accepting, writes what is queued, writes a final checkpoint and waits.
    pub fn finish(mut self) {
        let _ = self.stop.send(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        // What the sinks have not delivered stays in the trail; the next start sends it.
        if let Some(sinks) = self.sinks.take() {
            sinks.stop();
        }
    }
}

/// The queue exists and requests can record into it; the file and thread start later,
/// after Pingora has daemonised (threads do not survive `fork`).
pub struct PendingWriter {
    receiver: mpsc::Receiver<AuditEvent>,
    path: PathBuf,
    settings: Settings,
}

struct Settings {
    path: PathBuf,
    /// `personal_data: pseudonymised`: the key file, and its keys once loaded.
    personal_keys: Option<PathBuf>,
    personal: Option<super::personal::PersonalKeys>,
    sinks: Vec<crate::config::AuditSink>,
    spool: PathBuf,
    /// The last seq written, for the sinks' lag.
    written: Arc<AtomicU64>,
    rotate: Rotation,
    retention: Option<Retention>,
    /// A compression of rotated files is running (one at a time, off the writer thread).
    compressing: Arc<AtomicBool>,
    signer: CheckpointSigner,
    fsync: FsyncPolicy,
    checkpoint_every: u64,
    checkpoint_interval: Duration,
    dropped: Arc<AtomicU64>,
    metrics: Arc<Metrics>,
    /// The last day, for the security console.
    activity: super::activity::Activity,
}

/// Creates the audit queue: the [`Auditor`] for requests and the writer to start.
pub fn channel(
    config: &Audit,
    signer: CheckpointSigner,
    metrics: Arc<Metrics>,
) -> (Auditor, PendingWriter) {
    let (sender, receiver) = mpsc::channel(config.queue_capacity);
    let dropped = Arc::new(AtomicU64::new(0));
    let activity = super::activity::Activity::new(unix_now());
    let auditor = Auditor {
        sender,
        policy: config.on_queue_full,
        dropped: dropped.clone(),
        metrics: metrics.clone(),
        activity: activity.clone(),
    };
    let settings = Settings {
        path: config.path.clone(),
        personal_keys: config.personal_keys.clone(),
        personal: None,
        sinks: config.sinks.clone(),
        spool: config.spool.clone(),
        written: Arc::new(AtomicU64::new(0)),
        rotate: config.rotate,
        retention: config.retention,
        compressing: Arc::new(AtomicBool::new(false)),
        signer,
        fsync: config.fsync,
        checkpoint_every: config.checkpoint_every,
        checkpoint_interval: config.checkpoint_interval,
        dropped,
        metrics,
        activity,
    };
    (
        auditor,
        PendingWriter {
            receiver,
            path: config.path.clone(),
            settings,
        },
    )
}

impl PendingWriter {
    /// Opens the file (an error here stops the start: nothing is served unaudited) and starts
    /// the writer thread.
    ///
    /// One process appends to a file at a time: the writer holds an exclusive lock on it.
    /// During a zero-downtime upgrade the old process holds the lock until it has written its
    /// final checkpoint; the new one serves meanwhile, queues its records, and continues the
    /// chain from the old one's last record once the lock is free.
    pub fn start(mut self) -> io::Result<WriterHandle> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        if let Some(keys) = &self.settings.personal_keys {
            let loaded = super::personal::PersonalKeys::load(keys).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("audit.personal_keys {}: {e}", keys.display()),
                )
            })?;
            self.settings.personal = Some(loaded);
        }
        let file = open(&self.path)?;
        let ready = match file.try_lock() {
            // Without contention a corrupt tail stops the start, before anything is served.
            Ok(()) => Some(continue_chain(file, &self.path)?),
            Err(std::fs::TryLockError::WouldBlock) => None,
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        };
        if let Some(state) = &ready {
            self.settings
                .written
                .store(state.next_seq.saturating_sub(1), Ordering::Relaxed);
        }
        let sinks = Sinks::start(
            &self.path,
            &self.settings.spool,
            &self.settings.sinks,
            &self.settings.metrics,
            self.settings.written.clone(),
        )
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("audit sinks (spool {}): {e}", self.settings.spool.display()),
            )
        })?;
        let (stop, stop_rx) = watch::channel(false);
        let PendingWriter {
            receiver,
            path,
            settings,
        } = self;
        // Waiting for the previous process (an upgrade) is healthy: records queue meanwhile,
        // and readiness must not drop on every reload.
        settings.metrics.audit_writer_up.set(1);
        let writer_runtime = WriterRuntime::new()?;
        let thread = std::thread::Builder::new()
            .name("portcullis-audit".into())
            .spawn(move || {
                let state = match ready {
                    Some(state) => state,
                    None => match wait_for_lock(&path) {
                        Ok(state) => state,
                        Err(e) => {
                            tracing::error!(target: "audit", error = %e, "cannot continue the audit trail");
                            settings.metrics.audit_writer_up.set(0);
                            return;
                        }
                    },
                };
                settings.metrics.audit_writer_up.set(1);
                // The console's last day: what earlier processes wrote, read back meanwhile.
                super::activity::recall_in_background(
                    &path,
                    settings.personal_keys.clone(),
                    state.next_seq,
                    settings.activity.clone(),
                );
                Worker { state, settings, dirty: false }.run(writer_runtime, receiver, stop_rx);
            })?;
        Ok(WriterHandle {
            stop,
            thread: Some(thread),
            sinks,
        })
    }
}

fn open(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(path)
}

fn wait_for_lock(path: &Path) -> io::Result<ChainState> {
    tracing::info!(target: "audit", "waiting for the previous process to release the audit file");
    loop {
        let file = open(path)?;
        file.lock()?;
        // The previous process may have rotated the file while this one waited: the lock
        // is then on a rotated file, and the chain goes on in the new one.
        if same_file(&file, path) {
            return continue_chain(file, path);
        }
    }
}

fn same_file(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

struct ChainState {
    out: BufWriter<File>,
    /// Bytes in the current file.
    size: u64,
    /// When the current file was started (its creation time when the file system keeps it).
    opened_at: SystemTime,
    last_sweep: Instant,
    next_seq: u64,
    prev: String,
    since_checkpoint: u64,
    last_checkpoint: Instant,
    last_sync: Instant,
    /// Written first: the previous process did not end cleanly.
    unclean: Option<UncleanShutdown>,
}

/// Continues the chain of a locked file across restarts (repairing a crash's torn tail).
fn continue_chain(mut file: File, path: &Path) -> io::Result<ChainState> {
    let tail = recover(&mut file, path)?;
    let now = Instant::now();
    let metadata = file.metadata()?;
    Ok(ChainState {
        size: metadata.len(),
        opened_at: metadata.created().unwrap_or_else(|_| SystemTime::now()),
        last_sweep: now,
        out: BufWriter::new(file),
        next_seq: tail.next_seq,
        prev: tail.prev,
        since_checkpoint: 0,
        last_checkpoint: now,
        last_sync: now,
        unclean: tail.unclean,
    })
}

/// Compresses every rotated file not compressed yet, until none is left: a rotation while
/// this runs finds it busy and leaves its file to it. A file that cannot be compressed is
/// logged and left as it is.
fn compress_rotated(path: &Path, busy: &AtomicBool) {
    let mut failed = std::collections::HashSet::new();
    loop {
        let todo: Vec<PathBuf> = files::uncompressed(path)
            .unwrap_or_default()
            .into_iter()
            .filter(|f| !failed.contains(f))
            .collect();
        if todo.is_empty() {
            busy.store(false, Ordering::Release);
            // A rotation between the listing and the line above found this busy: look again
            // (unless another compression has started meanwhile).
            let more = files::uncompressed(path)
                .unwrap_or_default()
                .iter()
                .any(|f| !failed.contains(f));
            if !more || busy.swap(true, Ordering::AcqRel) {
                return;
            }
            continue;
        }
        for file in todo {
            if let Err(e) = files::compress(&file) {
                tracing::error!(target: "audit", error = %e, file = %file.display(), "cannot compress a rotated audit file");
                failed.insert(file);
            }
        }
    }
}

/// The writer's runtime, with `SIGUSR1` already taken: made before the listeners open, so that
/// a rotation signal never meets the default action (which ends the process).
struct WriterRuntime {
    runtime: tokio::runtime::Runtime,
    rotate_signal: Option<tokio::signal::unix::Signal>,
}

impl WriterRuntime {
    fn new() -> io::Result<WriterRuntime> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let rotate_signal = {
            let _in_runtime = runtime.enter();
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())
                .map_err(|e| tracing::warn!(target: "audit", error = %e, "SIGUSR1 will not rotate the audit file"))
                .ok()
        };
        Ok(WriterRuntime {
            runtime,
            rotate_signal,
        })
    }
}

struct Worker {
    state: ChainState,
    settings: Settings,
    /// Records flushed to the OS but not yet fsynced (`fsync: interval`).
    dirty: bool,
}

impl Worker {
    fn run(
        mut self,
        runtime: WriterRuntime,
        mut receiver: mpsc::Receiver<AuditEvent>,
        mut stop: watch::Receiver<bool>,
    ) {
        let WriterRuntime {
            runtime,
            mut rotate_signal,
        } = runtime;
        runtime.block_on(async {
            if let Some(unclean) = self.state.unclean.take() {
                tracing::warn!(target: "audit", unsealed_records = unclean.unsealed_records, torn_bytes = unclean.torn_bytes, "the previous process did not end cleanly; recorded in the audit trail");
                self.write(&unclean);
                self.flush();
            }
            self.apply_retention();
            // `kill -USR1` rotates now (logrotate's `postrotate`, or by hand).
            loop {
                tokio::select! {
                    event = receiver.recv() => match event {
                        Some(event) => {
                            self.record(event);
                            // Let a batch gather: one wake-up per batch, not per request,
                            // keeps the writer from pre-empting the proxy threads.
                            tokio::time::sleep(BATCH_WINDOW).await;
                            while let Ok(more) = receiver.try_recv() {
                                self.record(more);
                            }
                            self.flush();
                            self.rotate_when_due();
                        }
                        None => break,
                    },
                    _ = tokio::time::sleep(self.next_timer()) => {
                        if self.state.last_checkpoint.elapsed() >= self.settings.checkpoint_interval {
                            if self.state.since_checkpoint > 0 {
                                self.checkpoint("interval");
                            }
                            self.state.last_checkpoint = Instant::now();
                        }
                        self.flush();
                        self.rotate_when_due();
                        if self.state.last_sweep.elapsed() >= SWEEP_EVERY {
                            self.apply_retention();
                        }
                    }
                    Some(()) = async {
                        match rotate_signal.as_mut() {
                            Some(signal) => signal.recv().await,
                            None => std::future::pending().await,
                        }
                    } => self.rotate("rotate-signal"),
                    _ = stop.changed() => break,
                }
            }
            receiver.close();
            while let Ok(event) = receiver.try_recv() {
                self.record(event);
            }
            self.checkpoint("shutdown");
            self.flush();
            self.sync();
        });
    }

    /// Seals the file and starts a new one when it reached `audit.rotate`'s size or age.
    fn rotate_when_due(&mut self) {
        let Rotation { max_size, max_age } = self.settings.rotate;
        if max_size.is_some_and(|max| self.state.size >= max) {
            self.rotate("rotate-size");
        } else if max_age.is_some_and(|max| {
            SystemTime::now()
                .duration_since(self.state.opened_at)
                .is_ok_and(|age| age >= max)
        }) {
            self.rotate("rotate-age");
        }
    }

    /// Seals the current file with a checkpoint (`trigger` says why), renames it to its
    /// rotated name and continues the chain in a new file at the configured path.
    fn rotate(&mut self, trigger: &str) {
        if self.state.size == 0 {
            // Nothing to seal: an empty file stays, its age starts again.
            self.state.opened_at = SystemTime::now();
            return;
        }
        self.checkpoint(trigger);
        self.flush();
        self.sync();
        let path = self.settings.path.clone();
        let rotated = files::rotated_name(&path, SystemTime::now());
        let next = std::fs::rename(&path, &rotated).and_then(|()| {
            let file = open(&path)?;
            file.lock()?;
            Ok(file)
        });
        match next {
            Ok(file) => {
                // The old file's lock goes with its handle: a process waiting for it checks
                // that it still is the current file (`wait_for_lock`).
                self.state.out = BufWriter::new(file);
                self.state.size = 0;
                self.state.opened_at = SystemTime::now();
                tracing::info!(target: "audit", file = %rotated.display(), "audit file rotated");
                self.settings.metrics.audit_rotations.inc();
                self.apply_retention();
            }
            Err(e) => {
                // The sealed file stays current; the next due check tries again.
                tracing::error!(target: "audit", error = %e, "audit rotation failed");
                self.settings.metrics.audit_write_errors.inc();
                self.state.opened_at = SystemTime::now();
            }
        }
    }

    /// Deletes rotated files older than `retention.keep` (each deletion is itself a record)
    /// and compresses the rest on a thread of their own.
    fn apply_retention(&mut self) {
        self.state.last_sweep = Instant::now();
        let Some(retention) = self.settings.retention else {
            return;
        };
        if let Some(keep) = retention.keep {
            match files::expired(&self.settings.path, keep, SystemTime::now()) {
                Ok(expired) => {
                    for file in expired {
                        if self.undelivered(&file) {
                            // A sink still needs it: kept until delivered (never a silent
                            // loss), and said every sweep.
                            tracing::warn!(target: "audit", file = %file.path.display(), "an expired audit file is kept: a sink has not delivered it yet");
                            self.settings.metrics.audit_retention_held.inc();
                            break;
                        }
                        let name = file.path.display().to_string();
                        match std::fs::remove_file(&file.path) {
                            Ok(()) => {
                                let mut event = AuditEvent::new(EventKind::AuditFileDeleted);
                                event.detail = Some(name);
                                self.write(&event);
                            }
                            Err(e) => {
                                tracing::error!(target: "audit", error = %e, file = %name, "cannot delete an expired audit file")
                            }
                        }
                    }
                    self.flush();
                }
                Err(e) => {
                    tracing::error!(target: "audit", error = %e, "cannot list rotated audit files")
                }
            }
        }
        if retention.compress && !self.settings.compressing.swap(true, Ordering::AcqRel) {
            let path = self.settings.path.clone();
            let busy = self.settings.compressing.clone();
            let spawned = std::thread::Builder::new()
                .name("portcullis-audit-gzip".into())
                .spawn(move || compress_rotated(&path, &busy));
            if spawned.is_err() {
                self.settings.compressing.store(false, Ordering::Release);
            }
        }
    }

    /// Whether a sink has not yet delivered every record of the rotated `file` (its last
    /// record is the one before the next file's first).
    fn undelivered(&self, file: &files::TrailFile) -> bool {
        let Ok(Some(slowest)) = sink::slowest_cursor(&self.settings.spool, &self.settings.sinks)
        else {
            return false;
        };
        let trail = files::trail(&self.settings.path).unwrap_or_default();
        let next = trail
            .iter()
            .skip_while(|f| f.path != file.path)
            .nth(1)
            .and_then(|next| sink::tail::first_seq(next).ok().flatten());
        match next {
            Some(first) => first.saturating_sub(1) > slowest,
            // Cannot tell: keep it.
            None => true,
        }
    }

    /// Until the next checkpoint is due, or the pending fsync under `fsync: interval`.
    fn next_timer(&self) -> Duration {
        let mut checkpoint = self
            .settings
            .checkpoint_interval
            .saturating_sub(self.state.last_checkpoint.elapsed())
            .min(SWEEP_EVERY.saturating_sub(self.state.last_sweep.elapsed()));
        if let Some(max_age) = self.settings.rotate.max_age {
            let age = SystemTime::now()
                .duration_since(self.state.opened_at)
                .unwrap_or_default();
            checkpoint = checkpoint.min(max_age.saturating_sub(age));
        }
        match self.settings.fsync {
            FsyncPolicy::Interval(every) if self.dirty => {
                checkpoint.min(every.saturating_sub(self.state.last_sync.elapsed()))
            }
            _ => checkpoint,
        }
    }

    /// A request's record: pseudonymised first under `personal_data: pseudonymised`; a
    /// `user-forgotten` request deletes the user's key before it is written.
    fn record(&mut self, mut event: AuditEvent) {
        let activity = &self.settings.activity;
        if event.event == EventKind::UserForgotten {
            activity.forget(event.user.as_deref().unwrap_or_default());
        }
        activity.observe(&event, self.state.next_seq, unix_now());
        if let Some(keys) = self.settings.personal.as_mut() {
            let sealed = if event.event == EventKind::UserForgotten {
                let user = event.user.take().unwrap_or_default();
                keys.forget(&user).map(|pseudonym| {
                    event.user = pseudonym;
                })
            } else {
                keys.pseudonymise(&mut event)
            };
            if let Err(e) = sealed {
                // Never write personal data in clear in a pseudonymised trail: the record
                // keeps what is not personal and says why the rest is missing.
                tracing::error!(target: "audit", error = %e, "cannot pseudonymise an audit record (audit.personal_keys)");
                self.settings.metrics.audit_write_errors.inc();
                event.user = None;
                event.client_ip = None;
                event.path = None;
                event.detail =
                    Some("personal fields withheld: the key file could not be written".into());
            }
        }
        self.write(&event);
    }

    fn write(&mut self, event: &impl serde::Serialize) {
        let dropped = self.settings.dropped.swap(0, Ordering::Relaxed);
        let body = match serde_json::to_string(event) {
            Ok(json) => json,
            Err(e) => {
                tracing::error!(target: "audit", error = %e, "audit record not serialisable");
                return;
            }
        };
        let inner = body
            .strip_prefix('{')
            .and_then(|b| b.strip_suffix('}'))
            .unwrap_or_default();
        let gap = if dropped > 0 {
            format!(",\"dropped_before\":{dropped}")
        } else {
            String::new()
        };
        let object = format!(
            "{{\"seq\":{},\"ts\":\"{}\",{inner}{gap},\"prev\":\"{}\"}}",
            self.state.next_seq,
            humantime::format_rfc3339_millis(SystemTime::now()),
            self.state.prev
        );
        self.append(&object);
        self.state.since_checkpoint += 1;
        if self.state.since_checkpoint >= self.settings.checkpoint_every {
            self.checkpoint("count");
        }
    }

    fn checkpoint(&mut self, trigger: &str) {
        let seq = self.state.next_seq;
        let message = checkpoint_message(seq, &self.state.prev);
        let object = format!(
            "{{\"seq\":{seq},\"ts\":\"{}\",\"event\":\"checkpoint\",\"trigger\":\"{trigger}\",\"public_key\":\"{}\",\"signature\":\"{}\",\"prev\":\"{}\"}}",
            humantime::format_rfc3339_millis(SystemTime::now()),
            self.settings.signer.public_key_base64(),
            self.settings.signer.sign(message.as_bytes()),
            self.state.prev
        );
        self.append(&object);
        // An independent copy of each seal in the process log makes truncation of the file
        // back to an earlier checkpoint detectable too.
        tracing::info!(target: "audit", { audit.seq = seq, audit.hash = %self.state.prev }, "audit checkpoint");
        self.state.since_checkpoint = 0;
        self.state.last_checkpoint = Instant::now();
    }

    fn append(&mut self, object: &str) {
        let (line, hash) = seal(object);
        if let Err(e) = writeln!(self.state.out, "{line}") {
            // Keep the chain consistent with what is on disk: do not advance. Readiness goes
            // down so load balancers stop sending traffic that cannot be audited.
            tracing::error!(target: "audit", error = %e, "audit write failed");
            self.settings.metrics.audit_write_errors.inc();
            self.settings.metrics.audit_writer_up.set(0);
            return;
        }
        self.settings.metrics.audit_writer_up.set(1);
        self.state.size += line.len() as u64 + 1;
        self.settings
            .written
            .store(self.state.next_seq, Ordering::Relaxed);
        self.state.next_seq += 1;
        self.state.prev = hash;
        if self.settings.fsync == FsyncPolicy::Always {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if let Err(e) = self.state.out.flush() {
            tracing::error!(target: "audit", error = %e, "audit flush failed");
            self.settings.metrics.audit_write_errors.inc();
            self.settings.metrics.audit_writer_up.set(0);
            return;
        }
        self.dirty = true;
        let due = match self.settings.fsync {
            FsyncPolicy::Always => true,
            FsyncPolicy::Interval(every) => self.state.last_sync.elapsed() >= every,
            FsyncPolicy::Never => false,
        };
        if due {
            self.sync();
        }
    }

    fn sync(&mut self) {
        if let Err(e) = self.state.out.get_ref().sync_data() {
            tracing::error!(target: "audit", error = %e, "audit fsync failed");
            self.settings.metrics.audit_write_errors.inc();
        }
        self.state.last_sync = Instant::now();
        self.dirty = false;
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
