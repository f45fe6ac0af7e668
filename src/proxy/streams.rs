//! Live streams end with their right to exist.
//!
//! Every signed-in request that reaches an upstream is registered here, with its upstream
//! socket, for as long as its response runs: an SSE answer, a chunked download, a long poll, a
//! WebSocket. A sweep every [`SWEEP_EVERY`] checks each against what may have changed since it
//! began (the session revoked or expired, the user, entity or app turned off) and shuts the
//! upstream socket of those that lost their right; Pingora then sees the upstream end, closes
//! the client's side, and the stream is over within a second. Requests that finish are
//! removed at their last upstream byte, before Pingora may pool the connection.

use std::collections::HashMap;
use std::os::unix::io::RawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::audit::{AuditEvent, Auditor, EventKind};
use crate::store::{Disabled, KillSwitches, RevokedSessions};

/// How often open streams are checked.
pub const SWEEP_EVERY: Duration = Duration::from_millis(200);

/// What a stream is checked against.
pub struct OpenStream {
    /// Session id.
    pub sid: String,
    /// User id.
    pub user: String,
    /// The user's entity.
    pub entity: Option<String>,
    /// Identity provider id.
    pub idp: String,
    /// App id.
    pub app: String,
    /// When the session began and ends (unix seconds).
    pub issued_at: u64,
    /// The session's absolute end.
    pub expires_at: u64,
    /// The upstream socket.
    fd: RawFd,
    /// The request, for the audit record.
    request_id: String,
}

/// Why a stream was ended (the audit record's `detail`).
fn verdict(
    stream: &OpenStream,
    revoked: &RevokedSessions,
    switches: &KillSwitches,
    now: u64,
) -> Option<&'static str> {
    if revoked.is_revoked(&stream.sid)
        || revoked.is_cut_off(
            &stream.idp,
            &stream.user,
            stream.entity.as_deref(),
            stream.issued_at,
        )
    {
        return Some("session-revoked");
    }
    if stream.expires_at <= now {
        return Some("session-expired");
    }
    if switches.app_off(&stream.app, now) {
        return Some("app-disabled");
    }
    match switches.stops(&stream.user, stream.entity.as_deref(), now) {
        Some(Disabled::User) => Some("user-disabled"),
        Some(Disabled::Entity) => Some("entity-disabled"),
        None => None,
    }
}

/// The open streams of this process.
#[derive(Default)]
pub struct Streams {
    open: Mutex<HashMap<u64, OpenStream>>,
    next: AtomicU64,
}

impl Streams {
    /// Registers the upstream connection `fd` of a signed-in request; the id to close it with.
    pub fn open(
        &self,
        session: &crate::session::SessionData,
        app: &str,
        fd: RawFd,
        request_id: &str,
    ) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let who = &session.identity;
        let stream = OpenStream {
            sid: session.sid.clone(),
            user: who.user_id.clone(),
            entity: who.entity.clone(),
            idp: who.idp.clone(),
            app: app.to_string(),
            issued_at: session.issued_at,
            expires_at: session.expires_at,
            fd,
            request_id: request_id.to_string(),
        };
        if let Ok(mut open) = self.open.lock() {
            open.insert(id, stream);
        }
        id
    }

    /// The request is done with its upstream connection (idempotent).
    pub fn close(&self, id: u64) {
        if let Ok(mut open) = self.open.lock() {
            open.remove(&id);
        }
    }

    /// Streams open now.
    pub fn len(&self) -> usize {
        self.open.lock().map_or(0, |open| open.len())
    }

    /// Ends every stream that lost its right to run; audits each.
    pub async fn sweep(
        &self,
        revoked: &RevokedSessions,
        switches: &KillSwitches,
        auditor: &Auditor,
        now: u64,
    ) {
        let ended: Vec<(OpenStream, &'static str)> = {
            let Ok(mut open) = self.open.lock() else {
                return;
            };
            let doomed: Vec<(u64, &'static str)> = open
                .iter()
                .filter_map(|(id, s)| verdict(s, revoked, switches, now).map(|why| (*id, why)))
                .collect();
            doomed
                .into_iter()
                .filter_map(|(id, why)| {
                    let stream = open.remove(&id)?;
                    // Under the lock: the request cannot have let the socket go meanwhile.
                    shut(stream.fd);
                    Some((stream, why))
                })
                .collect()
        };
        for (stream, why) in ended {
            let mut event = AuditEvent::new(EventKind::StreamEnded);
            event.request_id = Some(stream.request_id);
            event.app = Some(Arc::from(stream.app.as_str()));
            event.user = Some(stream.user);
            event.idp = Some(stream.idp);
            event.sid = Some(stream.sid);
            event.detail = Some(why.to_string());
            auditor.record(event).await;
        }
    }
}

/// Shuts both directions of the socket `fd` without closing it (its owner still does).
fn shut(fd: RawFd) {
    if let Err(error) = nix::sys::socket::shutdown(fd, nix::sys::socket::Shutdown::Both) {
        tracing::debug!(fd, %error, "shutting an upstream socket");
    }
}
