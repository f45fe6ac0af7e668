//! Compiling `audit:` (file, fsync policy, queue, checkpoint signing and cadence).

use std::path::PathBuf;
use std::time::Duration;

use super::Compiler;
use crate::config::raw::*;
use crate::config::*;

impl Compiler<'_> {
    pub(super) fn audit(&mut self, raw: RawAudit) -> Audit {
        let fsync = match raw.fsync.as_deref() {
            None | Some("interval") => FsyncPolicy::Interval(self.duration(
                "audit.fsync_interval",
                raw.fsync_interval.as_ref(),
                Duration::from_secs(1),
            )),
            Some("always") => FsyncPolicy::Always,
            Some("never") => FsyncPolicy::Never,
            Some(other) => {
                self.issues.add(
                    "audit.fsync",
                    format!("unknown policy `{other}`"),
                    "use always, interval or never",
                );
                FsyncPolicy::Always
            }
        };
        if raw.fsync_interval.is_some() && !matches!(fsync, FsyncPolicy::Interval(_)) {
            self.issues.add(
                "audit.fsync_interval",
                "only applies with fsync: interval",
                "remove it or set fsync: interval",
            );
        }
        let on_queue_full = match raw.on_queue_full.as_deref() {
            None | Some("block") => QueueFullPolicy::Block,
            Some("drop") => QueueFullPolicy::Drop,
            Some(other) => {
                self.issues.add(
                    "audit.on_queue_full",
                    format!("unknown policy `{other}`"),
                    "use block or drop",
                );
                QueueFullPolicy::Block
            }
        };
        let queue_capacity = raw.queue_capacity.unwrap_or(65_536);
        if queue_capacity == 0 {
            self.issues
                .add("audit.queue_capacity", "must be at least 1", "");
        }
        let checkpoint_every = raw.checkpoint_every.unwrap_or(1000);
        if checkpoint_every == 0 {
            self.issues
                .add("audit.checkpoint_every", "must be at least 1", "");
        }
        let signing_key = raw
            .signing_key
            .as_ref()
            .and_then(|s| self.secret("audit.signing_key", s));
        if signing_key.is_none() {
            self.warnings.push("audit.signing_key is not set: checkpoints are signed with a key made for this process only".into());
        }
        let path = raw
            .path
            .unwrap_or_else(|| "/var/log/portcullis/audit.jsonl".into());
        let rotate = raw.rotate.map(|r| self.rotation(r)).unwrap_or_default();
        let retention = raw.retention.map(|r| Retention {
            keep: r
                .keep
                .as_ref()
                .map(|k| self.duration("audit.retention.keep", Some(k), Duration::ZERO)),
            compress: r.compress.unwrap_or(false),
        });
        if let Some(Retention {
            keep: Some(keep), ..
        }) = retention
        {
            if keep < Duration::from_secs(1) {
                self.issues.add(
                    "audit.retention.keep",
                    "must be at least 1s",
                    "write how long rotated files stay, like 90d",
                );
            }
        }
        let path = self.base_dir.join(path);
        let sinks = raw
            .sinks
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .filter_map(|(i, sink)| self.sink(i, sink))
            .collect::<Vec<_>>();
        let mut ids: Vec<&str> = sinks.iter().map(|s| s.id.as_str()).collect();
        ids.sort_unstable();
        if let Some(twice) = ids.windows(2).find(|w| w[0] == w[1]) {
            self.issues.add(
                "audit.sinks",
                format!("two sinks are named `{}`", twice[0]),
                "give each sink its own id (it names its cursor and its metrics)",
            );
        }
        let spool = match raw.spool {
            Some(spool) => self.base_dir.join(spool),
            None => path
                .parent()
                .map_or_else(|| PathBuf::from("audit-sinks"), |d| d.join("audit-sinks")),
        };
        let personal_keys = match raw.personal_data.as_deref() {
            None | Some("plain") => {
                if raw.personal_keys.is_some() {
                    self.issues.add(
                        "audit.personal_keys",
                        "only applies with personal_data: pseudonymised",
                        "remove it, or set personal_data: pseudonymised",
                    );
                }
                None
            }
            Some("pseudonymised") => Some(match raw.personal_keys {
                Some(keys) => self.base_dir.join(keys),
                None => path.with_file_name("audit-personal.keys"),
            }),
            Some(other) => {
                self.issues.add(
                    "audit.personal_data",
                    format!("unknown value `{other}`"),
                    "use plain or pseudonymised",
                );
                None
            }
        };
        Audit {
            personal_keys,
            path,
            fsync,
            queue_capacity: queue_capacity.max(1),
            on_queue_full,
            signing_key,
            checkpoint_every: checkpoint_every.max(1),
            checkpoint_interval: self.duration(
                "audit.checkpoint_interval",
                raw.checkpoint_interval.as_ref(),
                Duration::from_secs(60),
            ),
            rotate,
            retention,
            sinks,
            spool,
        }
    }

    fn sink(&mut self, i: usize, raw: RawAuditSink) -> Option<AuditSink> {
        let at = format!("audit.sinks[{i}]");
        let timeout = self.duration(
            &format!("{at}.timeout"),
            raw.timeout.as_ref(),
            Duration::from_secs(10),
        );
        let ca = raw.ca.as_ref().map(|ca| self.base_dir.join(ca));
        let target = match raw.kind.as_deref() {
            Some("syslog") => {
                for (key, set) in [
                    ("url", raw.url.is_some()),
                    ("headers", raw.headers.is_some()),
                    ("batch", raw.batch.is_some()),
                    ("format", raw.format.is_some()),
                ] {
                    if set {
                        self.issues.add(
                            &format!("{at}.{key}"),
                            "only applies to kind: http",
                            "remove it",
                        );
                    }
                }
                let Some(address) = raw.address.as_deref() else {
                    self.issues.add(
                        &format!("{at}.address"),
                        "missing",
                        "write udp://HOST:PORT, tcp://HOST:PORT or tcp+tls://HOST:PORT",
                    );
                    return None;
                };
                let parsed = [
                    ("udp://", SyslogTransport::Udp),
                    ("tcp://", SyslogTransport::Tcp),
                    ("tcp+tls://", SyslogTransport::Tls),
                ]
                .into_iter()
                .find_map(|(scheme, t)| address.strip_prefix(scheme).map(|rest| (t, rest)));
                let Some((transport, host_port)) = parsed.and_then(|(t, rest)| {
                    let (host, port) = rest.rsplit_once(':')?;
                    (!host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)).then(|| {
                        (
                            t,
                            (rest.to_string(), host.trim_matches(['[', ']']).to_string()),
                        )
                    })
                }) else {
                    self.issues.add(
                        &format!("{at}.address"),
                        format!("`{address}` is not a syslog address"),
                        "write udp://HOST:PORT, tcp://HOST:PORT or tcp+tls://HOST:PORT",
                    );
                    return None;
                };
                if ca.is_some() && transport != SyslogTransport::Tls {
                    self.issues.add(
                        &format!("{at}.ca"),
                        "only applies to tcp+tls://",
                        "remove it, or use tcp+tls://",
                    );
                }
                if transport == SyslogTransport::Udp {
                    self.warnings.push(format!("{at}: syslog over UDP is best effort: a lost datagram is lost for good; use tcp+tls:// for a SIEM"));
                }
                SinkTarget::Syslog {
                    transport,
                    address: host_port.0,
                    server_name: host_port.1,
                    ca,
                }
            }
            Some("http") => {
                if raw.address.is_some() {
                    self.issues.add(
                        &format!("{at}.address"),
                        "only applies to kind: syslog",
                        "use url",
                    );
                }
                let Some(url) = raw.url.clone() else {
                    self.issues.add(
                        &format!("{at}.url"),
                        "missing",
                        "write the collector's URL, e.g. https://hec.example/services/collector/raw",
                    );
                    return None;
                };
                if !(url.starts_with("https://") || url.starts_with("http://")) {
                    self.issues.add(
                        &format!("{at}.url"),
                        format!("`{url}` is not an http(s) URL"),
                        "write https://HOST/PATH",
                    );
                }
                if let Some(format) = raw.format.as_deref().filter(|f| *f != "jsonl") {
                    self.issues.add(
                        &format!("{at}.format"),
                        format!("unknown format `{format}`"),
                        "use jsonl (one record per line, as in the file)",
                    );
                }
                let mut headers = Vec::new();
                for (name, spec) in raw.headers.iter().flatten() {
                    if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                        self.issues
                            .add(&format!("{at}.headers.{name}"), "not a header name", "");
                        continue;
                    }
                    if let Some(secret) = self.secret(&format!("{at}.headers.{name}"), spec) {
                        headers.push((name.clone(), secret));
                    }
                }
                let batch = raw.batch.unwrap_or_default();
                let max_records = batch.max_records.unwrap_or(500);
                if max_records == 0 {
                    self.issues
                        .add(&format!("{at}.batch.max_records"), "must be at least 1", "");
                }
                SinkTarget::Http {
                    url,
                    headers,
                    max_records: max_records.max(1),
                    max_wait: self.duration(
                        &format!("{at}.batch.max_wait"),
                        batch.max_wait.as_ref(),
                        Duration::from_secs(1),
                    ),
                    ca,
                }
            }
            other => {
                self.issues.add(
                    &format!("{at}.kind"),
                    match other {
                        Some(kind) => format!("unknown sink kind `{kind}`"),
                        None => "missing".into(),
                    },
                    "use syslog or http",
                );
                return None;
            }
        };
        let id = raw.id.unwrap_or_else(|| match &target {
            SinkTarget::Syslog { address, .. } => format!("syslog-{address}"),
            SinkTarget::Http { url, .. } => format!("http-{url}"),
        });
        let on_full = match raw.on_full.as_deref() {
            None | Some("block") => OnFull::Block,
            Some("drop-oldest") => OnFull::DropOldest,
            Some(other) => {
                self.issues.add(
                    &format!("{at}.on_full"),
                    format!("unknown policy `{other}`"),
                    "use block (retention keeps what the sink has not delivered) or drop-oldest",
                );
                OnFull::Block
            }
        };
        Some(AuditSink {
            id,
            target,
            timeout,
            on_full,
        })
    }

    fn rotation(&mut self, raw: RawAuditRotate) -> Rotation {
        let max_age = raw
            .max_age
            .as_ref()
            .map(|a| self.duration("audit.rotate.max_age", Some(a), Duration::ZERO));
        if max_age.is_some_and(|age| age < Duration::from_secs(1)) {
            self.issues.add(
                "audit.rotate.max_age",
                "must be at least 1s",
                "write how long one file stays current, like 1d",
            );
        }
        // A file smaller than a few records would rotate on every write.
        if raw.max_size.is_some_and(|size| size < 4096) {
            self.issues.add(
                "audit.rotate.max_size",
                "must be at least 4096 bytes",
                "write a size in bytes, like 268435456 for 256 MiB",
            );
        }
        Rotation {
            max_size: raw.max_size.map(|size| size as u64),
            max_age,
        }
    }
}
