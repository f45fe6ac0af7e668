//! Authentication of one request: cookie → session → revocation → OIDC refresh.
//!
//! Plain Rust, no Pingora: the shell hands in the `Cookie` header values and gets back the
//! session (if any) and the cookies to set. A refused cookie is audited and cleared, and the
//! request goes on unauthenticated: the policy decides what an anonymous request may do.

use std::sync::Arc;

use super::{clear_cookies, cookie_values, CookieJar, SessionCodec, SessionData, SessionError};
use crate::audit::{AuditEvent, Auditor, EventKind, RequestRef};
use crate::idp::oidc::{OidcError, OidcProvider, OidcTokens};
use crate::store::redis::SharedStore;
use crate::store::{LiveSessions, RevokedSessions, SingleFlight};

/// Everything authentication needs, built once at start.
pub struct Authenticator {
    codec: SessionCodec,
    cookie_name: String,
    /// `<cookie_name>-csrf`, computed once.
    csrf_cookie_name: String,
    /// `<cookie_name>-flow-`, computed once.
    flow_prefix: String,
    revoked: Arc<RevokedSessions>,
    /// One refresh per session and token set, however many requests ask at once; the flag
    /// is true where the refresh ran (not where its outcome was read from another replica).
    refreshes: SingleFlight<(Result<OidcTokens, OidcError>, bool)>,
    /// One refresh across replicas too (`store.kind: redis`).
    shared: Option<Arc<SharedStore>>,
    /// Live sessions: a rewritten cookie updates `last_seen`.
    sessions: Arc<LiveSessions>,
    oidc: Vec<Arc<OidcProvider>>,
    auditor: Auditor,
}

/// What a request's cookies say.
#[derive(Default)]
pub struct Authenticated {
    /// The valid, unrevoked session.
    pub session: Option<SessionData>,
    /// A session cookie was sent and refused.
    pub cookie_rejected: bool,
    /// `Set-Cookie` values for the response (a touched session, or clearing a refused one).
    pub set_cookies: Vec<String>,
    /// Indexes of session chunk cookies the browser sent.
    pub cookie_chunks: Vec<usize>,
    /// The browser's CSRF cookie.
    pub csrf_cookie: Option<String>,
    /// Sign-in flow cookies `(name, value)`.
    pub flow_cookies: Vec<(String, String)>,
}

impl Authenticator {
    /// `cookie_name` names the session cookie (and prefixes the CSRF and flow cookies).
    pub fn new(
        codec: SessionCodec,
        cookie_name: &str,
        oidc: Vec<Arc<OidcProvider>>,
        revoked: Arc<RevokedSessions>,
        shared: Option<Arc<SharedStore>>,
        sessions: Arc<LiveSessions>,
        auditor: Auditor,
    ) -> Authenticator {
        Authenticator {
            codec,
            cookie_name: cookie_name.to_string(),
            csrf_cookie_name: format!("{cookie_name}-csrf"),
            flow_prefix: format!("{cookie_name}-flow-"),
            revoked,
            refreshes: SingleFlight::new(std::time::Duration::from_secs(120)),
            shared,
            sessions,
            oidc,
            auditor,
        }
    }

    /// Seals and opens sessions and sign-in flows.
    pub fn codec(&self) -> &SessionCodec {
        &self.codec
    }

    /// Sessions ended before their expiry (sign-out, IdP logout).
    pub fn revoked(&self) -> &RevokedSessions {
        &self.revoked
    }

    /// Reads the request's `Cookie` header values at `now` (unix seconds).
    pub async fn authenticate<'c>(
        &self,
        cookie_headers: impl Iterator<Item = &'c str>,
        request: RequestRef<'_>,
        now: u64,
    ) -> Authenticated {
        let jar = CookieJar::parse(cookie_headers, &self.cookie_name);
        let mut out = Authenticated {
            cookie_chunks: jar.chunk_indexes(&self.cookie_name),
            csrf_cookie: jar.get(&self.csrf_cookie_name).map(str::to_string),
            flow_cookies: jar
                .with_prefix(&self.flow_prefix)
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            ..Authenticated::default()
        };
        let rejection = match self.codec.decode(&jar, now) {
            Ok(data) if self.is_revoked(&data) => SessionError::Revoked,
            Ok(data) => {
                match self.keep_fresh(data, request, now).await {
                    Some((mut data, rewrite)) => {
                        if rewrite {
                            data.last_seen = now;
                            self.set_session_cookie(&data, now, &mut out);
                            self.sessions.touched(&data.sid, now);
                        }
                        out.session = Some(data);
                    }
                    None => out.set_cookies.extend(self.clear(&out.cookie_chunks)),
                }
                return out;
            }
            Err(SessionError::Absent) => return out,
            Err(rejection) => rejection,
        };
        out.cookie_rejected = true;
        out.set_cookies.extend(self.clear(&out.cookie_chunks));
        let mut event = AuditEvent::for_request(EventKind::SessionRejected, request);
        event.detail = Some(rejection.as_str().to_string());
        self.auditor.record(event).await;
        out
    }

    fn clear(&self, chunks: &[usize]) -> Vec<String> {
        clear_cookies(&self.cookie_name, chunks)
    }

    /// Touches an idle session and refreshes its OP tokens when due; `None` when the OP
    /// refused the refresh (the session is over). The flag says the cookie must be rewritten.
    async fn keep_fresh(
        &self,
        mut data: SessionData,
        request: RequestRef<'_>,
        now: u64,
    ) -> Option<(SessionData, bool)> {
        let mut rewrite = self.codec.needs_touch(&data, now);
        if data.oidc.as_ref().is_some_and(|t| t.needs_refresh(now)) {
            // Boxed: refreshes are rare, and inline their future would grow every request's.
            data.oidc = Some(Box::pin(self.refresh(request, &data, now)).await?);
            rewrite = true;
        }
        Some((data, rewrite))
    }

    fn set_session_cookie(&self, data: &SessionData, now: u64, out: &mut Authenticated) {
        if let Ok(values) = self.codec.encode(data) {
            let max_age = data.expires_at.saturating_sub(now);
            out.set_cookies.extend(cookie_values(
                &self.cookie_name,
                &values,
                max_age,
                &out.cookie_chunks,
            ));
        }
    }

    /// Ended here by sign-out, by an operator, or at the IdP (OIDC back-channel logout, SAML
    /// single logout).
    pub fn is_revoked(&self, data: &SessionData) -> bool {
        let who = &data.identity;
        self.revoked.is_revoked(&data.sid)
            || self.revoked.is_cut_off(
                &who.idp,
                &who.user_id,
                who.entity.as_deref(),
                data.issued_at,
            )
            || data.oidc.as_ref().is_some_and(|t| {
                self.revoked.ended_at_op(
                    &data.identity.idp,
                    &t.sub,
                    t.op_sid.as_deref(),
                    data.issued_at,
                )
            })
            || data.saml.as_ref().is_some_and(|s| {
                self.revoked.ended_at_op(
                    &data.identity.idp,
                    &s.name_id,
                    s.session_index.as_deref(),
                    data.issued_at,
                )
            })
    }

    /// Refreshes the session's OP tokens, once per session however many requests ask at the
    /// same moment. `None` when the OP refuses: the session is over (audited).
    async fn refresh(
        &self,
        request: RequestRef<'_>,
        data: &SessionData,
        now: u64,
    ) -> Option<OidcTokens> {
        let tokens = data.oidc.as_ref()?;
        let session_event = |kind| {
            let mut event = AuditEvent::for_request(kind, request);
            event.user = Some(data.identity.user_id.clone());
            event.entity = data.identity.entity.clone();
            event.idp = Some(data.identity.idp.clone());
            event.sid = Some(data.sid.clone());
            event
        };
        let Some(provider) = self
            .oidc
            .iter()
            .find(|p| p.id == data.identity.idp)
            .cloned()
        else {
            // The provider is no longer configured: its sessions end, on the record.
            let mut event = session_event(EventKind::RefreshFailed);
            event.detail = Some("idp-not-configured".into());
            self.auditor.record(event).await;
            return None;
        };
        let token_hash = ring::digest::digest(
            &ring::digest::SHA256,
            tokens
                .refresh_token
                .as_deref()
                .unwrap_or_default()
                .as_bytes(),
        );
        // The same tokens (a session and the moment they were obtained) refresh once; the
        // refreshed session has a new `obtained_at`, so its own refresh later is a new call.
        let key = format!(
            "{}:{}:{}",
            data.sid,
            tokens.obtained_at,
            crate::audit::hex(&token_hash.as_ref()[..8])
        );
        let refresh = async move { provider.refresh(tokens, now).await };
        let flight = &key;
        let ((result, refreshed_here), ran) = self
            .refreshes
            .run(key.clone(), now, || async move {
                match &self.shared {
                    Some(store) => {
                        super::flight::refresh_once_everywhere(store, &self.codec, flight, refresh)
                            .await
                    }
                    None => (refresh.await, true),
                }
            })
            .await;
        if ran && refreshed_here {
            tracing::debug!(
                sid = %data.sid,
                ok = result.is_ok(),
                expires_at = ?result.as_ref().ok().and_then(|t| t.expires_at),
                "OIDC refresh"
            );
            let kind = if result.is_ok() {
                EventKind::RefreshSucceeded
            } else {
                EventKind::RefreshFailed
            };
            let mut event = session_event(kind);
            event.detail = result.as_ref().err().map(|f| f.as_str().to_string());
            self.auditor.record(event).await;
        }
        match result {
            Ok(tokens) => Some(tokens),
            Err(OidcError::Unavailable) => {
                // The OP is unreachable: keep the session on its current tokens rather than
                // log everyone out during an IdP outage; the next request tries again.
                Some(tokens.clone())
            }
            Err(_) => None,
        }
    }
}
