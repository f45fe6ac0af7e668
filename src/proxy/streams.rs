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

use std::net::IpAddr;

use crate::audit::{AuditEvent, Auditor, EventKind};
use crate::config::App;
use crate::identity::Identity;
use crate::policy::{decide, Decision, Request};
use crate::store::{Disabled, KillSwitches, RevokedSessions};

/// How often open streams are checked.
pub const SWEEP_EVERY: Duration = Duration::from_millis(200);

/// What a stream is checked against: who (shared with its request, not copied), the request
/// as the policy saw it, and the session's times (a thousand streams are a few hundred KB;
/// see the size test).
pub struct OpenStream {
    /// Session id.
    sid: Box<str>,
    identity: Arc<Identity>,
    /// App id.
    app: Box<str>,
    /// The request, for the policy of a reloaded configuration.
    method: Box<str>,
    path: Box<str>,
    query: Option<Box<str>>,
    client_ip: Option<IpAddr>,
    /// When the session began (unix seconds).
    issued_at: u64,
    /// The session's absolute end.
    expires_at: u64,
    /// The upstream socket.
    fd: RawFd,
}

/// A signed-in request as the policy saw it.
pub struct StreamRequest<'a> {
    /// The session.
    pub session: &'a crate::session::SessionData,
    /// The app's id.
    pub app: &'a str,
    /// Method, normalised path, raw query, client address.
    pub method: &'a str,
    /// The normalised path.
    pub path: &'a str,
    /// The raw query.
    pub query: Option<&'a str>,
    /// The client address.
    pub client_ip: Option<IpAddr>,
}

/// Why a stream was ended (the audit record's `detail`).
fn verdict(
    stream: &OpenStream,
    revoked: &RevokedSessions,
    switches: &KillSwitches,
    now: u64,
) -> Option<&'static str> {
    let who = &stream.identity;
    if revoked.is_revoked(&stream.sid)
        || revoked.is_cut_off(
            &who.idp,
            &who.user_id,
            who.entity.as_deref(),
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
    match switches.stops(&who.user_id, who.entity.as_deref(), now) {
        Some(Disabled::User) => Some("user-disabled"),
        Some(Disabled::Entity) => Some("entity-disabled"),
        None => None,
    }
}

/// The open streams of this process.
#[derive(Default)]
pub struct Streams {
    open: Mutex<HashMap<u64, OpenStream>>,
    /// Streams just cut, and why, until their request tells its client (a WebSocket close
    /// frame); bounded by the requests in flight.
    cut: Mutex<HashMap<u64, &'static str>>,
    next: AtomicU64,
}

impl Streams {
    /// Registers the upstream connection `fd` of a signed-in request; the id to close it with.
    pub fn open(&self, request: StreamRequest<'_>, fd: RawFd) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let stream = OpenStream {
            sid: request.session.sid.as_str().into(),
            identity: request.session.identity.clone(),
            app: request.app.into(),
            method: request.method.into(),
            path: request.path.into(),
            query: request.query.map(Into::into),
            client_ip: request.client_ip,
            issued_at: request.session.issued_at,
            expires_at: request.session.expires_at,
            fd,
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

    /// Why stream `id` was cut, if it was (once; the request's end forgets it either way).
    pub fn take_cut(&self, id: u64) -> Option<&'static str> {
        self.cut.lock().ok()?.remove(&id)
    }

    /// Streams open now.
    pub fn len(&self) -> usize {
        self.open.lock().map_or(0, |open| open.len())
    }

    /// After a reload: ends the streams whose request the new configuration would refuse
    /// (`app-removed` when their app is gone or disabled, `access-removed` when its policy no
    /// longer admits them).
    pub async fn recheck(&self, apps: &[Arc<App>], auditor: &Auditor) {
        let ended = self.end_where(|s| {
            let Some(app) = apps.iter().find(|a| *a.id == *s.app && a.enabled) else {
                return Some("app-removed");
            };
            let request = Request {
                method: &s.method,
                path: &s.path,
                query: s.query.as_deref(),
                client_ip: s.client_ip,
            };
            match decide(app, &request, Some(&s.identity)) {
                Decision::Allow(_) => None,
                _ => Some("access-removed"),
            }
        });
        record_ended(ended, auditor).await;
    }

    /// Removes and shuts, under the lock, every stream `doomed` names a reason for.
    fn end_where(
        &self,
        doomed: impl Fn(&OpenStream) -> Option<&'static str>,
    ) -> Vec<(OpenStream, &'static str)> {
        let Ok(mut open) = self.open.lock() else {
            return Vec::new();
        };
        let ids: Vec<(u64, &'static str)> = open
            .iter()
            .filter_map(|(id, s)| doomed(s).map(|why| (*id, why)))
            .collect();
        let ended: Vec<(OpenStream, &'static str)> = ids
            .into_iter()
            .filter_map(|(id, why)| {
                let stream = open.remove(&id)?;
                // Under the lock: the request cannot have let the socket go meanwhile.
                shut(stream.fd);
                if let Ok(mut cut) = self.cut.lock() {
                    cut.insert(id, why);
                }
                Some((stream, why))
            })
            .collect();
        ended
    }

    /// Ends every stream that lost its right to run; audits each.
    pub async fn sweep(
        &self,
        revoked: &RevokedSessions,
        switches: &KillSwitches,
        auditor: &Auditor,
        now: u64,
    ) {
        let ended = self.end_where(|s| verdict(s, revoked, switches, now));
        record_ended(ended, auditor).await;
    }
}

/// One `stream-ended` audit record per ended stream.
async fn record_ended(ended: Vec<(OpenStream, &'static str)>, auditor: &Auditor) {
    for (stream, why) in ended {
        let mut event = AuditEvent::new(EventKind::StreamEnded);
        event.app = Some(Arc::from(stream.app));
        event.user = Some(stream.identity.user_id.clone());
        event.entity = stream.identity.entity.clone();
        event.idp = Some(stream.identity.idp.clone());
        event.sid = Some(stream.sid.into());
        event.detail = Some(why.to_string());
        auditor.record(event).await;
    }
}

/// A WebSocket close frame from the server (unmasked): code 1008, policy violation, with
/// `reason` (kept under the 123 bytes a control frame allows).
pub fn close_frame(reason: &str) -> bytes::Bytes {
    let reason = &reason.as_bytes()[..reason.len().min(123)];
    let mut frame = Vec::with_capacity(4 + reason.len());
    frame.push(0x88);
    frame.push(u8::try_from(2 + reason.len()).unwrap_or(125));
    frame.extend_from_slice(&1008u16.to_be_bytes());
    frame.extend_from_slice(reason);
    bytes::Bytes::from(frame)
}

/// Shuts both directions of the socket `fd` without closing it (its owner still does).
fn shut(fd: RawFd) {
    if let Err(error) = nix::sys::socket::shutdown(fd, nix::sys::socket::Shutdown::Both) {
        tracing::debug!(fd, %error, "shutting an upstream socket");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Cutoff, Switch, SwitchChange, Target};

    fn stream(user: &str, entity: Option<&str>) -> OpenStream {
        OpenStream {
            sid: "s1".into(),
            identity: Arc::new(Identity {
                user_id: user.into(),
                email: None,
                name: None,
                user_type: crate::config::UserType::External,
                roles: vec![],
                entity: entity.map(Into::into),
                custom: Default::default(),
                idp: "corp".into(),
                auth_method: crate::identity::AuthMethod::Local,
                mfa: false,
                client_id: None,
            }),
            app: "chat".into(),
            method: "GET".into(),
            path: "/sse".into(),
            query: None,
            client_ip: None,
            issued_at: 100,
            expires_at: 1_000,
            fd: -1,
        }
    }

    #[test]
    fn a_stream_loses_its_right_to_run_for_each_reason_and_only_then() {
        let (revoked, switches) = (RevokedSessions::default(), KillSwitches::default());
        let alice = stream("alice", Some("acme"));
        let carol = stream("carol", Some("globex"));
        let why = |s: &OpenStream, now| verdict(s, &revoked, &switches, now);
        assert_eq!(why(&alice, 500), None);
        assert_eq!(why(&alice, 1_000), Some("session-expired"));
        let off = |target| {
            SwitchChange::Off(Switch {
                target,
                until: Some(600),
                reason: None,
                by: "ops".into(),
                at: 100,
            })
        };
        switches.change(off(Target::Entity("acme".into())));
        assert_eq!(why(&alice, 500), Some("entity-disabled"));
        assert_eq!(why(&alice, 600), None, "until passed");
        switches.change(off(Target::User("alice".into())));
        assert_eq!(why(&alice, 500), Some("user-disabled"));
        switches.change(off(Target::App("chat".into())));
        assert_eq!(why(&carol, 500), Some("app-disabled"));
        switches.replace_all(vec![]);
        assert_eq!(why(&carol, 500), None);
        revoked.cut_off(
            Cutoff::Entity {
                entity: "acme".into(),
            },
            200,
        );
        assert_eq!(why(&alice, 500), Some("session-revoked"));
        assert_eq!(why(&carol, 500), None);
        revoked.cut_off(Cutoff::Provider { idp: "corp".into() }, 200);
        assert_eq!(why(&carol, 500), Some("session-revoked"));
        let later = OpenStream {
            issued_at: 300,
            ..stream("carol", None)
        };
        assert_eq!(
            why(&later, 500),
            None,
            "a session that began after the cutoff"
        );
        revoked.revoke("s1", 1_000, 300);
        assert_eq!(why(&later, 500), Some("session-revoked"), "by session id");
    }

    #[test]
    fn an_open_stream_costs_under_256_bytes() {
        // Inline: the map's entry (key and value); on the heap: the strings of a typical
        // stream (32-character session id, short app id and method, a 24-character path);
        // the identity is the request's own, shared.
        let entry = std::mem::size_of::<(u64, OpenStream)>();
        let strings = 32 + 8 + 8 + 24;
        // hashbrown keeps at least 1/8 of its buckets free, plus one control byte a bucket.
        let per_stream = entry * 8 / 7 + 1 + strings;
        assert!(entry <= 152, "{entry}");
        eprintln!("open stream: {entry} bytes inline, about {per_stream} in all");
        assert!(per_stream <= 256, "{per_stream} bytes a stream");
    }
}
