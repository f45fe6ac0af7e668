//! The audit trail: one JSON Lines record per security-relevant event, hash-chained and
//! periodically sealed by a signed checkpoint, written off the hot path.
//!
//! Requests hand an [`AuditEvent`] to the [`Auditor`] (a bounded queue); a dedicated thread
//! numbers, timestamps, chains and writes it. What happens when the queue is full is the
//! operator's choice (`audit.on_queue_full`) and is always counted.

pub mod activity;
mod chain;
pub mod export;
pub mod files;
pub mod personal;
mod recovery;
mod signer;
pub mod sink;
mod writer;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::mpsc;

pub use chain::{hex, ChainVerifier, VerifyOptions};
pub use signer::CheckpointSigner;
pub use writer::{channel, PendingWriter, WriterHandle};

use crate::config::QueueFullPolicy;
use crate::metrics::Metrics;
use crate::policy::Reason;

/// The kinds of audit records (kebab-case in the file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, strum::IntoStaticStr, strum::EnumString)]
#[serde(rename_all = "kebab-case")]
#[strum(serialize_all = "kebab-case")]
pub enum EventKind {
    /// A configuration was loaded and the proxy started with it.
    ConfigLoaded,
    /// A request was forwarded to an upstream.
    Access,
    /// A request was refused (see `reason`).
    AccessDenied,
    /// A request reached a disabled app.
    AppDisabled,
    /// A user was sent to an identity provider.
    LoginStarted,
    /// A login succeeded; a new session began.
    LoginSucceeded,
    /// A login failed (see `detail`).
    LoginFailed,
    /// A user signed out; the session is revoked.
    Logout,
    /// A logout message from an identity provider was refused (see `detail`).
    LogoutRefused,
    /// A session cookie was refused (see `detail`) and cleared.
    SessionRejected,
    /// The OP's tokens were refreshed without user interaction.
    RefreshSucceeded,
    /// The OP refused a refresh: the session ended (see `detail`).
    RefreshFailed,
    /// The previous process ended without sealing the file (crash, `kill -9`, power cut);
    /// written first by the next one, with what it found (see `audit::recovery`).
    UncleanShutdown,
    /// A call to the admin API (see `operator`, `path`, `status` and `detail`).
    AdminCall,
    /// An open stream (SSE, chunked, WebSocket) was cut because its session lost its right
    /// to run (see `detail`: `session-revoked`, `session-expired`, `user-disabled`, …).
    StreamEnded,
    /// A rotated audit file was deleted by `audit.retention` (see `detail`: its name).
    AuditFileDeleted,
    /// A user's personal data in the trail was made unreadable (`audit.personal_data:
    /// pseudonymised`): `user` is their former pseudonym.
    UserForgotten,
}

impl EventKind {
    /// The kind's name, as in the file.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Allow or deny, as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Forwarded.
    Allow,
    /// Refused.
    Deny,
}

/// One event, as produced by the request pipeline; the writer adds `seq`, `ts`, `prev`, `hash`.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEvent {
    /// What happened.
    pub event: EventKind,
    /// Request id (also sent upstream and to the client).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Client address (after trusted-proxy resolution).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<IpAddr>,
    /// App id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app: Option<Arc<str>>,
    /// HTTP method.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Host as requested.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Normalised path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Response status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Allow or deny.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision: Option<Outcome>,
    /// Why (closed set shared with metrics).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<Reason>,
    /// User id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The user's entity (tenant), when they have one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entity: Option<String>,
    /// Identity provider id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idp: Option<String>,
    /// Session id; for a machine client, its credential's name (`api-key:<account>`,
    /// `bearer:<hash prefix>`), never the secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// How the caller authenticated (oidc, saml, local, api-key, bearer-jwt, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_method: Option<crate::identity::AuthMethod>,
    /// The client address was outside a report-mode IP allowlist.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub ip_reported: bool,
    /// The app's path rule that decided, when one matched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Free-form, non-secret detail (e.g. config file path).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The admin token's name, for admin API calls (never the token).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operator: Option<String>,
    /// `audit.personal_data: pseudonymised`: the user's id, client address, path and detail,
    /// sealed under the user's own key (see `audit::personal`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub personal: Option<String>,
}

impl AuditEvent {
    /// An event with only its kind set.
    pub fn new(event: EventKind) -> Self {
        AuditEvent {
            event,
            request_id: None,
            client_ip: None,
            app: None,
            method: None,
            host: None,
            path: None,
            status: None,
            decision: None,
            reason: None,
            user: None,
            entity: None,
            idp: None,
            sid: None,
            rule: None,
            ip_reported: false,
            detail: None,
            operator: None,
            auth_method: None,
            personal: None,
        }
    }

    /// An event of `kind` about `request`: every record of a request starts here.
    pub fn for_request(event: EventKind, request: RequestRef<'_>) -> Self {
        let mut record = AuditEvent::new(event);
        record.request_id = Some(request.request_id.to_string());
        record.client_ip = request.client_ip;
        record.app = request.app.cloned();
        record
    }
}

/// The request a record is about: the fields every record of a request carries.
#[derive(Debug, Clone, Copy)]
pub struct RequestRef<'a> {
    /// The request id.
    pub request_id: &'a str,
    /// The client address (after trusted-proxy resolution).
    pub client_ip: Option<IpAddr>,
    /// The routed app's id.
    pub app: Option<&'a Arc<str>>,
}

/// Cheap, cloneable handle that requests use to record events.
#[derive(Clone)]
pub struct Auditor {
    sender: mpsc::Sender<AuditEvent>,
    policy: QueueFullPolicy,
    dropped: Arc<AtomicU64>,
    metrics: Arc<Metrics>,
    activity: activity::Activity,
}

impl Auditor {
    /// The last day of records, as the writer took them (the security console reads it).
    pub fn activity(&self) -> &activity::Activity {
        &self.activity
    }

    /// Records `event`. With `block`, waits for queue space (never loses a record); with
    /// `drop`, a full queue drops the event, counts it, and the writer marks the gap.
    pub async fn record(&self, event: AuditEvent) {
        let result = match self.policy {
            QueueFullPolicy::Block => self.sender.send(event).await.map_err(|_| ()),
            QueueFullPolicy::Drop => self.sender.try_send(event).map_err(|_| ()),
        };
        if result.is_err() {
            // Full (drop policy) or writer gone (shutdown): either way the record is lost.
            self.dropped.fetch_add(1, Ordering::Relaxed);
            self.metrics.audit_dropped.inc();
        }
        self.metrics
            .audit_queue_depth
            .set((self.sender.max_capacity() - self.sender.capacity()) as i64);
    }
}

impl Auditor {
    /// [`Auditor::record`] for code outside the async runtime (start-up).
    pub fn record_blocking(&self, event: AuditEvent) {
        if self.sender.blocking_send(event).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            self.metrics.audit_dropped.inc();
        }
    }
}

#[cfg(test)]
mod tests;
