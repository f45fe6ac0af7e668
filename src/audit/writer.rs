//! The audit writer thread: numbers, timestamps, chains, writes and checkpoints records.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, watch};

use super::chain::{checkpoint_message, seal, unseal, ChainFields, GENESIS};
use super::{AuditEvent, Auditor, CheckpointSigner, EventKind};
use crate::config::{Audit, FsyncPolicy};
use crate::metrics::Metrics;

/// Owns the writer thread; [`WriterHandle::finish`] drains the queue and seals the file.
pub struct WriterHandle {
    stop: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

impl WriterHandle {
    /// Stops accepting, writes what is queued, writes a final checkpoint and waits.
    pub fn finish(mut self) {
        let _ = self.stop.send(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct ChainState {
    out: BufWriter<File>,
    next_seq: u64,
    prev: String,
    since_checkpoint: u64,
    last_checkpoint: Instant,
    last_sync: Instant,
}

/// The queue exists and requests can record into it; the file and thread start later,
/// after Pingora has daemonised (threads do not survive `fork`).
pub struct PendingWriter {
    receiver: mpsc::Receiver<AuditEvent>,
    path: std::path::PathBuf,
    signer: CheckpointSigner,
    fsync: FsyncPolicy,
    checkpoint_every: u64,
    checkpoint_interval: Duration,
    dropped: Arc<AtomicU64>,
}

/// Creates the audit queue: the [`Auditor`] for requests and the writer to start.
pub fn channel(
    config: &Audit,
    signer: CheckpointSigner,
    metrics: Arc<Metrics>,
) -> (Auditor, PendingWriter) {
    let (sender, receiver) = mpsc::channel(config.queue_capacity);
    let dropped = Arc::new(AtomicU64::new(0));
    let auditor = Auditor {
        sender,
        policy: config.on_queue_full,
        dropped: dropped.clone(),
        metrics,
    };
    let pending = PendingWriter {
        receiver,
        path: config.path.clone(),
        signer,
        fsync: config.fsync,
        checkpoint_every: config.checkpoint_every,
        checkpoint_interval: config.checkpoint_interval,
        dropped,
    };
    (auditor, pending)
}

impl PendingWriter {
    /// Opens (or continues) the file and starts the writer thread.
    pub fn start(self) -> io::Result<WriterHandle> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let state = open_chain(&self.path)?;
        let (stop, stop_rx) = watch::channel(false);
        let worker = Worker {
            state,
            signer: self.signer,
            fsync: self.fsync,
            checkpoint_every: self.checkpoint_every,
            checkpoint_interval: self.checkpoint_interval,
            dropped: self.dropped,
        };
        let receiver = self.receiver;
        let thread = std::thread::Builder::new()
            .name("portcullis-audit".into())
            .spawn(move || worker.run(receiver, stop_rx))?;
        Ok(WriterHandle {
            stop,
            thread: Some(thread),
        })
    }
}

/// Reads the last record of an existing file so the chain continues across restarts.
fn open_chain(path: &Path) -> io::Result<ChainState> {
    let mut file = OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(path)?;
    let mut next_seq = 1;
    let mut prev = GENESIS.to_string();
    if file.metadata()?.len() > 0 {
        file.seek(SeekFrom::Start(0))?;
        let last = BufReader::new(&file)
            .lines()
            .map_while(Result::ok)
            .last()
            .unwrap_or_default();
        let fields = unseal(&last).and_then(|(object, hash)| {
            serde_json::from_str::<ChainFields>(&object)
                .ok()
                .map(|f| (f.seq, hash.to_string()))
        });
        let Some((seq, hash)) = fields else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the last line of {} is not a sealed audit record; run `portcullis audit verify` and move the file aside",
                    path.display()
                ),
            ));
        };
        next_seq = seq + 1;
        prev = hash;
    }
    let now = Instant::now();
    Ok(ChainState {
        out: BufWriter::new(file),
        next_seq,
        prev,
        since_checkpoint: 0,
        last_checkpoint: now,
        last_sync: now,
    })
}

struct Worker {
    state: ChainState,
    signer: CheckpointSigner,
    fsync: FsyncPolicy,
    checkpoint_every: u64,
    checkpoint_interval: Duration,
    dropped: Arc<AtomicU64>,
}

impl Worker {
    fn run(mut self, mut receiver: mpsc::Receiver<AuditEvent>, mut stop: watch::Receiver<bool>) {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(target: "audit", error = %e, "audit writer cannot start");
                return;
            }
        };
        runtime.block_on(async {
            loop {
                let wait = self
                    .checkpoint_interval
                    .saturating_sub(self.state.last_checkpoint.elapsed());
                tokio::select! {
                    event = receiver.recv() => match event {
                        Some(event) => {
                            self.write(&event);
                            while let Ok(more) = receiver.try_recv() {
                                self.write(&more);
                            }
                            self.flush();
                        }
                        None => break,
                    },
                    _ = tokio::time::sleep(wait) => {
                        if self.state.since_checkpoint > 0 {
                            self.checkpoint("interval");
                            self.flush();
                        }
                        self.state.last_checkpoint = Instant::now();
                    }
                    _ = stop.changed() => break,
                }
            }
            receiver.close();
            while let Ok(event) = receiver.try_recv() {
                self.write(&event);
            }
            self.checkpoint("shutdown");
            self.flush();
            if let Err(e) = self.state.out.get_ref().sync_data() {
                tracing::error!(target: "audit", error = %e, "audit fsync failed at shutdown");
            }
        });
    }

    fn write(&mut self, event: &AuditEvent) {
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
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
        if self.state.since_checkpoint >= self.checkpoint_every {
            self.checkpoint("count");
        }
    }

    fn checkpoint(&mut self, trigger: &str) {
        let seq = self.state.next_seq;
        let message = checkpoint_message(seq, &self.state.prev);
        let object = format!(
            "{{\"seq\":{seq},\"ts\":\"{}\",\"event\":\"{}\",\"trigger\":\"{trigger}\",\"public_key\":\"{}\",\"signature\":\"{}\",\"prev\":\"{}\"}}",
            humantime::format_rfc3339_millis(SystemTime::now()),
            event_name(EventKind::Checkpoint),
            self.signer.public_key_base64(),
            self.signer.sign(message.as_bytes()),
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
            // Keep the chain consistent with what is on disk: do not advance.
            tracing::error!(target: "audit", error = %e, "audit write failed");
            return;
        }
        self.state.next_seq += 1;
        self.state.prev = hash;
        if self.fsync == FsyncPolicy::Always {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if let Err(e) = self.state.out.flush() {
            tracing::error!(target: "audit", error = %e, "audit flush failed");
            return;
        }
        let due = match self.fsync {
            FsyncPolicy::Always => true,
            FsyncPolicy::Interval(every) => self.state.last_sync.elapsed() >= every,
            FsyncPolicy::Never => false,
        };
        if due {
            if let Err(e) = self.state.out.get_ref().sync_data() {
                tracing::error!(target: "audit", error = %e, "audit fsync failed");
            }
            self.state.last_sync = Instant::now();
        }
    }
}

fn event_name(kind: EventKind) -> String {
    serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}
