//! `audit.sinks`: where copies of the audit trail are delivered (SIEMs, collectors).

use std::path::PathBuf;
use std::time::Duration;

use super::Secret;

/// One delivery target. Each reads the local trail with its own cursor (kept in
/// `audit.spool`), so an outage delays records but never loses them.
#[derive(Debug, Clone)]
pub struct AuditSink {
    /// Names the sink in metrics (`sink` label) and its cursor file.
    pub id: String,
    /// How records travel.
    pub target: SinkTarget,
    /// Connect, write and request timeout.
    pub timeout: Duration,
    /// What retention does with files this sink has not delivered.
    pub on_full: OnFull,
}

/// `audit.sinks[].on_full`: when records wait for a sink longer than `audit.retention.keep`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFull {
    /// Retention keeps the files until the sink has them (the disk is the bound); the lag and
    /// `portcullis_audit_retention_held_total` say so.
    Block,
    /// Retention deletes them on time; the sink goes on from the oldest record left and counts
    /// what it never got in `portcullis_audit_sink_skipped_total`.
    DropOldest,
}

/// `audit.sinks[].kind` and its settings.
#[derive(Debug, Clone)]
pub enum SinkTarget {
    /// RFC 5424 messages; over TCP and TLS framed by octet counting (RFC 5425 / RFC 6587).
    Syslog {
        /// `udp`, `tcp` or `tcp+tls`.
        transport: SyslogTransport,
        /// `host:port`.
        address: String,
        /// The host name the certificate must name (`tcp+tls`).
        server_name: String,
        /// Extra CA certificates (PEM) for `tcp+tls`, besides the system's.
        ca: Option<PathBuf>,
    },
    /// Batches of JSON Lines posted to a URL (Splunk HEC raw endpoint, Elastic, Vector,
    /// Fluent Bit, Loki via a collector).
    Http {
        /// Where batches are posted.
        url: String,
        /// Request headers (authorization), values from `env:` or `file:`.
        headers: Vec<(String, Secret)>,
        /// Records per request at most.
        max_records: usize,
        /// How long a batch waits to fill.
        max_wait: Duration,
        /// Extra CA certificates (PEM) for an `https` URL.
        ca: Option<PathBuf>,
    },
}

/// How syslog messages travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyslogTransport {
    /// One datagram per record; best effort (nothing tells a lost datagram).
    Udp,
    /// Plain TCP, for a trusted network.
    Tcp,
    /// TLS with certificate verification (RFC 5425).
    Tls,
}
