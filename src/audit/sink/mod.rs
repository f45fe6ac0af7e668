//! Audit sinks: copies of the trail delivered to SIEMs and collectors.
//!
//! The local file stays the source of truth and is the queue: each sink reads it with its own
//! cursor (the last `seq` it delivered, kept in `audit.spool`), so a sink that is down gets
//! everything when it returns, in order, and a restart resumes from the cursor. Delivery is at
//! least once; every record carries its `seq` and `hash`, on which a receiver de-duplicates.
//! One thread runs all sinks, away from the proxy and from the writer.

mod syslog;
pub mod tail;

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use prometheus::{IntCounter, IntGauge};
use tokio::sync::watch;

use crate::config::{AuditSink, OnFull, SinkTarget};
use crate::metrics::Metrics;
use tail::{Line, Tail};

/// How often a sink looks for new records once it has caught up.
const POLL: Duration = Duration::from_millis(100);
/// Records per syslog write at most.
const SYSLOG_BATCH: usize = 500;

/// The running sinks; [`Sinks::stop`] ends them (what is not delivered stays in the trail).
pub struct Sinks {
    stop: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

impl Sinks {
    /// Starts delivery for `sinks` of the trail at `path`. A sink without a cursor starts
    /// after the trail's last record: it gets what is written from now on.
    pub fn start(
        path: &Path,
        spool: &Path,
        sinks: &[AuditSink],
        metrics: &Arc<Metrics>,
        written: Arc<AtomicU64>,
    ) -> io::Result<Option<Sinks>> {
        if sinks.is_empty() {
            return Ok(None);
        }
        std::fs::create_dir_all(spool)?;
        let mut prepared = Vec::new();
        let mut last = None;
        for sink in sinks {
            let cursor = Cursor::new(spool, &sink.id);
            let after = match cursor.load()? {
                Some(after) => after,
                None => {
                    let after = match last {
                        Some(after) => after,
                        None => *last.insert(tail::last_seq(path)?),
                    };
                    cursor.store(after)?;
                    after
                }
            };
            // A sink that cannot be built (an unreadable CA, a bad server name) stops the start,
            // as an audit file that cannot be opened does: never a sink silently not running.
            let transport = Transport::new(sink)?;
            prepared.push(Runner {
                transport: Some(transport),
                sink: sink.clone(),
                tail: Tail::new(path, after),
                delivered_seq: after,
                written: written.clone(),
                cursor,
                delivered: metrics.audit_sink_delivered.with_label_values(&[&sink.id]),
                errors: metrics.audit_sink_errors.with_label_values(&[&sink.id]),
                skipped: metrics.audit_sink_skipped.with_label_values(&[&sink.id]),
                lag: metrics.audit_sink_lag.with_label_values(&[&sink.id]),
            });
        }
        let lock_path = spool.join(".lock");
        let (stop, stop_rx) = watch::channel(false);
        let thread = std::thread::Builder::new()
            .name("portcullis-audit-sinks".into())
            .spawn(move || run(prepared, &lock_path, stop_rx))?;
        Ok(Some(Sinks {
            stop,
            thread: Some(thread),
        }))
    }

    /// Stops delivering and waits for the thread.
    pub fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(runners: Vec<Runner>, lock_path: &Path, stop: watch::Receiver<bool>) {
    // One process delivers at a time: during an upgrade the new one waits for the old one's
    // sinks to stop, as its writer waits for the file.
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(lock_path);
    let _lock: File = match file {
        Ok(file) => loop {
            match file.try_lock() {
                Ok(()) => break file,
                Err(std::fs::TryLockError::WouldBlock) => {
                    // Stopped while still waiting: nothing to hand back.
                    if *stop.borrow() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    tracing::error!(target: "audit", error = %e, "audit sinks cannot lock their spool; not delivering");
                    return;
                }
            }
        },
        Err(e) => {
            tracing::error!(target: "audit", error = %e, "audit sinks cannot open their spool lock; not delivering");
            return;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!(target: "audit", error = %e, "audit sinks cannot start");
            return;
        }
    };
    runtime.block_on(async move {
        let tasks = runners.into_iter().map(|runner| runner.run(stop.clone()));
        futures_util::future::join_all(tasks).await;
    });
}

/// The last seq every sink has delivered (`None` without sinks): retention keeps the files
/// after it.
pub fn slowest_cursor(spool: &Path, sinks: &[AuditSink]) -> io::Result<Option<u64>> {
    let mut slowest: Option<u64> = None;
    for sink in sinks.iter().filter(|s| s.on_full == OnFull::Block) {
        let at = Cursor::new(spool, &sink.id).load()?.unwrap_or(0);
        slowest = Some(slowest.map_or(at, |s| s.min(at)));
    }
    Ok(slowest)
}

/// The last delivered seq of one sink, in `<spool>/<id>.cursor`.
struct Cursor {
    path: PathBuf,
}

impl Cursor {
    fn new(spool: &Path, id: &str) -> Cursor {
        // Any id makes a safe file name.
        let name: String = id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        Cursor {
            path: spool.join(format!("{name}.cursor")),
        }
    }

    fn load(&self) -> io::Result<Option<u64>> {
        match std::fs::read_to_string(&self.path) {
            Ok(text) => text.trim().parse().map(Some).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{}: not a sink cursor (a record number); delete it to start the sink from now",
                        self.path.display()
                    ),
                )
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Written aside and renamed: a crash leaves the old cursor or the new one. Not synced:
    /// a cursor that goes back after a power cut only sends records again.
    fn store(&self, seq: u64) -> io::Result<()> {
        let mut partial = self.path.as_os_str().to_owned();
        partial.push(".partial");
        std::fs::write(&partial, format!("{seq}\n"))?;
        std::fs::rename(&partial, &self.path)
    }
}

struct Runner {
    sink: AuditSink,
    /// Built at start (errors stop the start); taken by `run`.
    transport: Option<Transport>,
    tail: Tail,
    /// The last seq delivered.
    delivered_seq: u64,
    /// The last seq the writer wrote.
    written: Arc<AtomicU64>,
    cursor: Cursor,
    delivered: IntCounter,
    errors: IntCounter,
    skipped: IntCounter,
    lag: IntGauge,
}

/// Where one sink sends.
enum Transport {
    Syslog(syslog::Syslog),
    Http(HttpSink),
}

impl Transport {
    /// Everything a sink needs before its first connection (its CA, its server name, its
    /// HTTP client); the error names the sink.
    fn new(sink: &AuditSink) -> io::Result<Transport> {
        match &sink.target {
            SinkTarget::Syslog { .. } => syslog::Syslog::new(sink).map(Transport::Syslog),
            SinkTarget::Http { .. } => HttpSink::new(sink).map(Transport::Http),
        }
        .map_err(|e| io::Error::new(e.kind(), format!("audit sink {}: {e}", sink.id)))
    }
}

/// What `check` (and `run`, before it serves) finds wrong with `sink`.
pub fn check(sink: &AuditSink) -> io::Result<()> {
    Transport::new(sink).map(drop)
}

impl Runner {
    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let Some(mut transport) = self.transport.take() else {
            return;
        };
        let (max_records, max_wait) = match &self.sink.target {
            SinkTarget::Http {
                max_records,
                max_wait,
                ..
            } => (*max_records, *max_wait),
            SinkTarget::Syslog { .. } => (SYSLOG_BATCH, Duration::ZERO),
        };
        let mut batch: Vec<Line> = Vec::new();
        let mut failures = 0u32;
        while !*stop.borrow() {
            // A batch that failed is sent again as it was (same records, same boundaries).
            if failures == 0
                && self
                    .fill(&mut batch, max_records, max_wait, &mut stop)
                    .await
            {
                return;
            }
            let send = async {
                match &mut transport {
                    Transport::Syslog(syslog) => syslog.send(&batch).await,
                    Transport::Http(http) => http.send(&batch).await,
                }
            };
            // A stop does not wait for a slow receiver: the batch is not confirmed, so the
            // cursor stays and the next start sends it again.
            let sent = tokio::select! {
                sent = send => sent,
                _ = stop.changed() => return,
            };
            match sent {
                Ok(()) => {
                    failures = 0;
                    let last = batch.last().map_or(0, |l| l.seq);
                    self.delivered.inc_by(batch.len() as u64);
                    batch.clear();
                    if let Err(e) = self.cursor.store(last) {
                        tracing::error!(target: "audit", sink = %self.sink.id, error = %e, "audit sink cannot store its cursor");
                    }
                    self.delivered_seq = last;
                    self.set_lag();
                }
                Err(e) => {
                    // Kept for the next attempt: nothing is skipped, order is kept.
                    failures = failures.saturating_add(1);
                    self.errors.inc();
                    self.set_lag();
                    let pause = backoff(failures);
                    tracing::warn!(target: "audit", sink = %self.sink.id, error = %e, retry_in_ms = pause.as_millis() as u64, "audit sink delivery failed");
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = stop.changed() => return,
                    }
                }
            }
        }
    }
}

impl Runner {
    /// Fills `batch`: at least one record, then what arrives within `max_wait`, up to
    /// `max_records`. `true` when the sink was stopped meanwhile.
    async fn fill(
        &mut self,
        batch: &mut Vec<Line>,
        max_records: usize,
        max_wait: Duration,
        stop: &mut watch::Receiver<bool>,
    ) -> bool {
        let wait_until = tokio::time::Instant::now() + max_wait;
        while batch.len() < max_records {
            let pause = match self.tail.next() {
                Ok(Some(line)) => {
                    let gap = self.tail.take_skipped();
                    if gap > 0 {
                        tracing::error!(target: "audit", sink = %self.sink.id, records = gap, "audit records were deleted before this sink got them (on_full: drop-oldest)");
                        self.skipped.inc_by(gap);
                    }
                    batch.push(line);
                    continue;
                }
                Ok(None) if !batch.is_empty() && tokio::time::Instant::now() >= wait_until => break,
                Ok(None) => POLL,
                Err(e) => {
                    tracing::error!(target: "audit", sink = %self.sink.id, error = %e, "audit sink cannot read the trail");
                    self.errors.inc();
                    Duration::from_secs(1)
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = stop.changed() => return true,
            }
        }
        false
    }

    /// Records written and not yet delivered.
    fn set_lag(&self) {
        let written = self.written.load(Ordering::Relaxed);
        self.lag
            .set(i64::try_from(written.saturating_sub(self.delivered_seq)).unwrap_or(i64::MAX));
    }
}

/// Exponential from 250 ms to 5 s (a connection attempt is cheap, and a SIEM that returns
/// should not wait long), jittered so that replicas do not retry in step.
fn backoff(failures: u32) -> Duration {
    let ceiling = 250u64.saturating_mul(1 << failures.min(5)).min(5_000);
    Duration::from_millis(rand::random_range(ceiling / 2..=ceiling))
}

/// Batches of JSON Lines posted to a collector.
struct HttpSink {
    client: reqwest::Client,
    url: String,
    headers: reqwest::header::HeaderMap,
}

impl HttpSink {
    fn new(sink: &AuditSink) -> io::Result<HttpSink> {
        let SinkTarget::Http {
            url, headers, ca, ..
        } = &sink.target
        else {
            return Err(io::Error::other("not an http sink"));
        };
        let mut builder = reqwest::Client::builder()
            .timeout(sink.timeout)
            .connect_timeout(sink.timeout)
            .redirect(reqwest::redirect::Policy::none());
        if let Some(ca) = ca {
            for cert in reqwest::Certificate::from_pem_bundle(&std::fs::read(ca)?)
                .map_err(io::Error::other)?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        let mut map = reqwest::header::HeaderMap::new();
        for (name, secret) in headers {
            let name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(io::Error::other)?;
            let mut value = reqwest::header::HeaderValue::from_str(secret.expose())
                .map_err(io::Error::other)?;
            value.set_sensitive(true);
            map.insert(name, value);
        }
        Ok(HttpSink {
            client: builder.build().map_err(io::Error::other)?,
            url: url.clone(),
            headers: map,
        })
    }

    async fn send(&self, batch: &[Line]) -> io::Result<()> {
        let mut body = String::with_capacity(batch.iter().map(|l| l.text.len() + 1).sum());
        for line in batch {
            body.push_str(&line.text);
            body.push('\n');
        }
        let response = self
            .client
            .post(&self.url)
            .headers(self.headers.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/x-ndjson")
            .body(body)
            .send()
            .await
            .map_err(|e| io::Error::other(e.without_url()))?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "the collector answered {}",
                response.status()
            )))
        }
    }
}
