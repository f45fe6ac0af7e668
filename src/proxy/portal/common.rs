//! What Portcullis's own endpoints share: the CSRF token and form checks, reading small
//! bodies, sign-in flow cookies, starting a session, and the login audit record.

use super::super::{Gateway, RequestCtx};
use crate::audit::EventKind;
use crate::idp::local::{LocalLoginError, LocalProvider};
use crate::idp::{LoginFailure, LogoutRefusal, UseOnce};
use crate::policy::Reason;
use crate::redirect::safe_return_path;
use crate::respond::{self, Reply, Synthetic};
use crate::session::{cookie_values, EncodeError, SessionData};
use crate::store::Disabled;
use bytes::Bytes;
use pingora::prelude::*;
use pingora::proxy::Session;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// Why the shared replay memory did not take a message.
pub(super) enum NotFirstUse {
    /// Another replica took it before.
    Replayed,
    /// Redis did not answer: refused, as a replay cannot be ruled out.
    Unverifiable,
}

impl Gateway {
    /// Records `message` (of `kind`, from `idp`) in the replay memory every replica shares
    /// (`store.kind: redis`; in memory the provider's own check already was the whole check).
    pub(super) async fn first_use_everywhere(
        &self,
        kind: &str,
        idp: &str,
        message: &UseOnce,
    ) -> Result<(), NotFirstUse> {
        let Some(store) = &self.sign_in.shared else {
            return Ok(());
        };
        let id = format!("{idp}\n{}", message.id);
        match store.first_use(kind, &id, message.until).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(NotFirstUse::Replayed),
            Err(_) => Err(NotFirstUse::Unverifiable),
        }
    }

    /// Ends a session before its expiry: revoked on every replica, out of the live index.
    pub(super) async fn end_session(&self, data: &SessionData, now: u64) {
        self.auth.revoked().revoke(&data.sid, data.expires_at, now);
        self.sign_in.sessions.ended(&data.record()).await;
    }

    /// The CSRF token of this browser: from its cookie, or a new one (set on the response).
    pub(super) fn csrf_token(&self, ctx: &mut RequestCtx) -> String {
        if let Some(token) = ctx.csrf_cookie.clone() {
            return token;
        }
        let token = format!("{:032x}", rand::random::<u128>());
        ctx.set_cookies.push(format!(
            "{}-csrf={token}; Path=/; Secure; HttpOnly; SameSite=Strict",
            self.site.cookie_name
        ));
        ctx.csrf_cookie = Some(token.clone());
        token
    }

    /// One cookie per sign-in attempt, so several tabs can sign in at once; bounded, so they
    /// never pile up until requests fail: past the limit the older attempts are dropped.
    pub(super) fn drop_old_flows(&self, ctx: &mut RequestCtx) {
        if ctx.flow_cookies.len() >= MAX_FLOWS {
            for (name, _) in ctx.flow_cookies.drain(..) {
                ctx.set_cookies.push(format!(
                    "{name}=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0"
                ));
            }
        }
    }

    /// Sends the browser to its identity provider: the flow sealed into a short-lived cookie
    /// (the oldest attempts dropped past [`MAX_FLOWS`]), the start audited, then `302`. OIDC
    /// and SAML differ only in what [`Departure`] carries.
    pub(super) async fn begin_sign_in<F: serde::Serialize>(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        departure: Departure<'_, F>,
    ) -> Result<bool> {
        let sealed = serde_json::to_vec(departure.flow)
            .ok()
            .and_then(|json| self.auth.codec().seal(departure.purpose, &json).ok());
        let Some(sealed) = sealed else {
            return self
                .reply(session, ctx, Reply::InternalError, Reason::LoginFailed)
                .await;
        };
        self.drop_old_flows(ctx);
        ctx.set_cookies.push(format!(
            "{}{}={sealed}; Path=/; Secure; HttpOnly; SameSite={}; Max-Age={FLOW_SECONDS}",
            self.site.flow_prefix,
            flow_id(departure.flow_key),
            departure.same_site,
        ));
        self.audit_login(
            ctx,
            EventKind::LoginStarted,
            departure.idp,
            "",
            None,
            departure.method,
        )
        .await;
        let response = redirect_response(302, departure.location);
        self.send(session, ctx, response, Reason::LoginRequired)
            .await
    }

    /// A fresh session (and id) for `identity`, then on to `return_to`.
    pub(super) async fn start_session(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        data: SessionData,
        return_to: &str,
        method: &'static str,
    ) -> Result<bool> {
        let idp = data.identity.idp.clone();
        let who = &data.identity;
        let now = unix_now();
        if let Some(off) = self
            .switches
            .stops(&who.user_id, who.entity.as_deref(), now)
        {
            let failure = match off {
                Disabled::User => LoginFailure::UserDisabled,
                Disabled::Entity => LoginFailure::EntityDisabled,
            };
            self.audit_login_failed(ctx, &idp, &who.user_id, failure)
                .await;
            return self
                .reply(session, ctx, Reply::Forbidden, Reason::LoginFailed)
                .await;
        }
        let values = match self.auth.codec().encode(&data) {
            Ok(values) => values,
            Err(e) => {
                tracing::warn!(error = %e, idp = %idp, "the new session cannot be sealed");
                let failure = match e {
                    EncodeError::TooLarge { .. } => LoginFailure::SessionTooLarge,
                    EncodeError::Encrypt => LoginFailure::SessionEncryptionFailed,
                };
                self.audit_login_failed(ctx, &idp, &data.identity.user_id, failure)
                    .await;
                return self
                    .reply(session, ctx, Reply::InternalError, Reason::LoginFailed)
                    .await;
            }
        };
        ctx.set_cookies.extend(cookie_values(
            &self.site.cookie_name,
            &values,
            self.sign_in.session_lifetime.as_secs(),
            &ctx.cookie_chunks,
        ));
        self.sign_in.sessions.started(&data.record(), now).await;
        self.audit_login(
            ctx,
            EventKind::LoginSucceeded,
            &idp,
            &data.identity.user_id,
            Some(&data.sid),
            method,
        )
        .await;
        let response = redirect_response(303, return_to.to_string());
        self.send(session, ctx, response, Reason::Authenticated)
            .await
    }

    /// The form of a state-changing request, once its size and CSRF checks pass; `None`
    /// when a refusal (413 or 403) has already been sent.
    pub(super) async fn protected_form(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Vec<u8>>> {
        let Some(form) = self.read_form(session, ctx).await? else {
            self.reply(session, ctx, Reply::PayloadTooLarge, Reason::BadRequest)
                .await?;
            return Ok(None);
        };
        if !self.csrf_ok(session, ctx, &form) {
            self.reply(session, ctx, Reply::Forbidden, Reason::CsrfFailed)
                .await?;
            return Ok(None);
        }
        Ok(Some(form))
    }

    /// Reads a urlencoded form body; `None` when it is larger than
    /// `server.limits.max_form_bytes`.
    pub(super) async fn read_form(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Vec<u8>>> {
        self.read_body(session, ctx, self.guards.limits.max_form_bytes)
            .await
    }

    /// Reads a request body of at most `max` bytes; `None` when it is larger.
    pub(super) async fn read_body(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        max: usize,
    ) -> Result<Option<Vec<u8>>> {
        let mut body = Vec::new();
        while let Some(chunk) = session.read_request_body().await? {
            if body.len() + chunk.len() > max {
                ctx.body_unread = true;
                return Ok(None);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Some(body))
    }

    /// Same origin (when the browser says where the request comes from) and a CSRF token that
    /// matches this browser's cookie (RFC 6265bis `__Host-` cookie, SameSite=Strict).
    pub(super) fn csrf_ok(&self, session: &Session, ctx: &RequestCtx, form: &[u8]) -> bool {
        let headers = &session.req_header().headers;
        let scheme = ctx.scheme(session);
        if let Some(origin) = headers
            .get(http::header::ORIGIN)
            .and_then(|v| v.to_str().ok())
        {
            let expected = ctx.host.as_deref().map(|h| format!("{scheme}://{h}"));
            if expected.as_deref() != Some(origin) {
                return false;
            }
        } else if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
            if !matches!(site, "same-origin" | "none") {
                return false;
            }
        }
        let (Some(cookie), Some(sent)) = (ctx.csrf_cookie.as_deref(), form_value(form, "csrf"))
        else {
            return false;
        };
        !cookie.is_empty() && bool::from(cookie.as_bytes().ct_eq(sent.as_bytes()))
    }

    /// Records a sign-in event that is not a failure (started, succeeded, logout); `detail`
    /// is one of a fixed set of words (the method, `user`, `backchannel`…).
    pub(super) async fn audit_login(
        &self,
        ctx: &RequestCtx,
        kind: EventKind,
        idp: &str,
        user: &str,
        sid: Option<&str>,
        detail: &'static str,
    ) {
        self.record_login_event(ctx, kind, idp, user, sid, detail.into())
            .await;
    }

    /// Records a failed sign-in and counts it by provider and reason.
    pub(super) async fn audit_login_failed(
        &self,
        ctx: &RequestCtx,
        idp: &str,
        user: &str,
        failure: LoginFailure,
    ) {
        let idp_label = if self.sign_in.login.oidc.iter().any(|p| p.id == idp)
            || self.sign_in.login.saml.iter().any(|p| p.id == idp)
            || self.sign_in.login.local.iter().any(|(id, _, _)| id == idp)
        {
            idp
        } else {
            "-"
        };
        self.metrics
            .auth_failures
            .with_label_values(&[idp_label, failure.as_str()])
            .inc();
        let detail = failure.as_str().into();
        self.record_login_event(ctx, EventKind::LoginFailed, idp, user, None, detail)
            .await;
    }

    /// Records a refused logout message from an identity provider.
    pub(super) async fn audit_logout_refused(
        &self,
        ctx: &RequestCtx,
        idp: &str,
        refusal: LogoutRefusal,
    ) {
        let detail = refusal.name();
        self.record_login_event(ctx, EventKind::LogoutRefused, idp, "", None, detail)
            .await;
    }

    async fn record_login_event(
        &self,
        ctx: &RequestCtx,
        kind: EventKind,
        idp: &str,
        user: &str,
        sid: Option<&str>,
        detail: std::borrow::Cow<'static, str>,
    ) {
        let mut event = ctx.event(kind);
        event.idp = Some(idp.to_string());
        // Failed attempts name the user as typed, bounded, so a pasted password does not
        // fill the log.
        event.user = Some(user.chars().take(128).collect());
        event.sid = sid.map(str::to_string);
        event.detail = Some(detail.into_owned());
        self.auditor.record(event).await;
    }
}

/// Argon2 is deliberately slow: verify on the blocking pool, never on a proxy worker.
pub(super) async fn verify_off_thread(
    provider: Arc<LocalProvider>,
    username: String,
    password: String,
    code: String,
    now: u64,
) -> Result<crate::identity::Identity, LocalLoginError> {
    let code = (!code.is_empty()).then_some(code);
    tokio::task::spawn_blocking(move || provider.login(&username, &password, code.as_deref(), now))
        .await
        .unwrap_or(Err(LocalLoginError::BadCredentials))
}

/// A JSON answer from Portcullis itself, never cached.
pub(super) fn json_response(status: u16, json: String) -> Synthetic {
    Synthetic {
        status,
        headers: vec![
            ("Content-Type", "application/json".into()),
            ("Cache-Control", "no-store".into()),
        ],
        body: Bytes::from(json),
    }
}

/// A redirect (`302` or `303`) to `location`, with the same no-store headers as a page.
pub(super) fn redirect_response(status: u16, location: String) -> Synthetic {
    let mut response = html_response(status, String::new());
    response.headers.push(("Location", location));
    response
}

pub(super) fn html_response(status: u16, html: String) -> Synthetic {
    Synthetic {
        status,
        headers: vec![
            ("Content-Type", "text/html; charset=utf-8".into()),
            ("Cache-Control", "no-store".into()),
            ("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'".into()),
            ("X-Frame-Options", "DENY".into()),
        ],
        body: Bytes::from(html),
    }
}

/// Purpose bound into the encryption of login-flow cookies.
pub(super) const FLOW_PURPOSE: &str = "oidc-flow";

/// How long a sign-in at the OP may take.
pub(super) const FLOW_SECONDS: u64 = 600;

/// Most sign-in attempts in flight per browser.
pub(super) const MAX_FLOWS: usize = 3;

/// A cookie-name-safe id for an attempt, from its (random, URL-safe) state.
pub(super) fn flow_id(state: &str) -> String {
    state
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(16)
        .collect()
}

pub(super) fn query_value(session: &Session, name: &str) -> Option<String> {
    form_value(session.req_header().uri.query()?.as_bytes(), name)
}

pub(super) fn wants_html_request(session: &Session) -> bool {
    respond::wants_html(
        session
            .req_header()
            .headers
            .get(http::header::ACCEPT)
            .map(|v| v.as_bytes()),
    )
}

/// The first value of `name` in a urlencoded body or query.
pub(super) fn form_value(form: &[u8], name: &str) -> Option<String> {
    url::form_urlencoded::parse(form)
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Where a sign-in goes, and what the browser must bring back.
pub(super) struct Departure<'a, F> {
    /// The provider's sign-in URL.
    pub location: String,
    /// The attempt, sealed into the flow cookie.
    pub flow: &'a F,
    /// The value the provider echoes (OIDC `state`, SAML `RelayState`): names the cookie.
    pub flow_key: &'a str,
    /// Bound into the cookie's encryption: a flow of one kind never opens as the other.
    pub purpose: &'static str,
    /// `Lax` for OIDC (a top-level GET comes back); `None` for SAML, whose IdP posts the
    /// response cross-site (the cookie is encrypted and bound to this attempt).
    pub same_site: &'static str,
    /// Provider id.
    pub idp: &'a str,
    /// `oidc` or `saml`, for the audit record.
    pub method: &'static str,
}

/// The page to return to after sign-in: `rd`, when it is a safe local path, else `/`.
pub(super) fn return_path(session: &Session) -> String {
    query_value(session, "rd")
        .and_then(|rd| safe_return_path(&rd).map(str::to_string))
        .unwrap_or_else(|| "/".into())
}
