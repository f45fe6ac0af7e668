//! Portcullis's own endpoints under the reserved prefix: sign-in, whoami, sign-out.
//! Never forwarded. State-changing requests (POST) pass a same-origin check and a
//! double-submit CSRF token.

use std::sync::Arc;

use bytes::Bytes;
use pingora::prelude::*;
use pingora::proxy::Session;
use subtle::ConstantTimeEq;

use super::signin::{SoleProvider, FAILED_PARAM};
use super::{Gateway, RequestCtx};
use crate::audit::{AuditEvent, EventKind};
use crate::idp::local::{LocalLoginError, LocalProvider};
use crate::idp::oidc::{FlowState, OidcFailure};
use crate::policy::Reason;
use crate::redirect::safe_return_path;
use crate::respond::{self, Reply, Synthetic};
use crate::session::{clear_cookies, cookie_values, SessionData};

impl Gateway {
    /// Dispatches one request under the reserved prefix.
    pub(super) async fn portal(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        endpoint: &str,
    ) -> Result<bool> {
        let method = session.req_header().method.clone();
        match (method.as_str(), endpoint) {
            ("GET" | "HEAD", "login") => {
                let idp = query_value(session, "idp").unwrap_or_default();
                let step_up = query_value(session, "mfa").as_deref() == Some("1");
                if self.login.oidc.iter().any(|p| p.id == idp) {
                    self.oidc_start(session, ctx, &idp, step_up).await
                } else if let Some(provider) = self.login.saml.iter().find(|p| p.id == idp) {
                    self.saml_start(session, ctx, provider.clone(), step_up)
                        .await
                } else {
                    match self.sole_provider(session, ctx) {
                        Some(SoleProvider::Oidc(id)) => {
                            self.oidc_start(session, ctx, &id, step_up).await
                        }
                        Some(SoleProvider::Saml(provider)) => {
                            self.saml_start(session, ctx, provider, step_up).await
                        }
                        None => self.login_page(session, ctx, None).await,
                    }
                }
            }
            ("POST", "saml/acs") => self.saml_acs(session, ctx).await,
            ("GET" | "HEAD", "saml/metadata") => self.saml_metadata(session, ctx).await,
            ("GET", "saml/slo") => self.saml_slo(session, ctx).await,
            ("POST", "saml/slo") => self.saml_slo_post(session, ctx).await,
            ("GET", "oidc/callback") => self.oidc_callback(session, ctx).await,
            ("POST", "oidc/backchannel-logout") => self.backchannel_logout(session, ctx).await,
            ("GET" | "HEAD", "jwks.json") => self.jwks(session, ctx).await,
            ("POST", "login") => self.login_submit(session, ctx).await,
            ("GET" | "HEAD", "whoami") => self.whoami(session, ctx).await,
            ("GET" | "HEAD", "logout") => self.logout_page(session, ctx).await,
            ("POST", "logout") => self.logout(session, ctx).await,
            ("GET" | "HEAD", "signed-out") => self.signed_out(session, ctx).await,
            _ => {
                self.reply(session, ctx, Reply::NotFound, Reason::UnknownEndpoint)
                    .await
            }
        }
    }

    fn endpoint(&self, name: &str) -> String {
        format!("{}{name}", self.reserved_prefix)
    }

    /// The URL of the login page returning to `rd`.
    pub(super) fn login_url(&self, return_to: &str) -> String {
        let encoded: String = url::form_urlencoded::byte_serialize(return_to.as_bytes()).collect();
        format!("{}?rd={encoded}", self.endpoint("login"))
    }

    /// The CSRF token of this browser: from its cookie, or a new one (set on the response).
    fn csrf_token(&self, ctx: &mut RequestCtx) -> String {
        if let Some(token) = ctx.csrf_cookie.clone() {
            return token;
        }
        let token = format!("{:032x}", rand::random::<u128>());
        ctx.set_cookies.push(format!(
            "{}-csrf={token}; Path=/; Secure; HttpOnly; SameSite=Strict",
            self.cookie_name
        ));
        ctx.csrf_cookie = Some(token.clone());
        token
    }

    async fn login_page(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        error: Option<&str>,
    ) -> Result<bool> {
        let query = session
            .req_header()
            .uri
            .query()
            .unwrap_or_default()
            .to_string();
        let rd = form_value(query.as_bytes(), "rd")
            .and_then(|rd| safe_return_path(&rd).map(str::to_string))
            .unwrap_or_else(|| "/".into());
        let token = self.csrf_token(ctx);
        let action = self.endpoint("login");
        // Only the providers the destination app accepts (its `access.identity_providers`).
        let offered = self.offered_providers(ctx, &rd);
        let failed = query_value(session, FAILED_PARAM).is_some();
        let html = respond::login_page(&respond::LoginPage {
            action: &action,
            return_to: &rd,
            csrf_token: &token,
            local: self
                .login
                .local
                .iter()
                .filter(|(id, _, _)| offered(id))
                .map(|(id, name, _)| (id.as_str(), name.as_str()))
                .collect(),
            sso: self
                .login
                .oidc
                .iter()
                .filter(|p| p.is_available() && offered(&p.id))
                .map(|p| (p.display_name.as_str(), p.id.as_str()))
                .chain(
                    self.login
                        .saml
                        .iter()
                        .filter(|p| p.is_available() && offered(&p.id))
                        .map(|p| (p.display_name.as_str(), p.id.as_str())),
                )
                .map(|(name, id)| {
                    let rd: String = url::form_urlencoded::byte_serialize(rd.as_bytes()).collect();
                    (name, format!("{action}?idp={id}&rd={rd}"))
                })
                .collect(),
            // Known but not reachable right now (discovery or metadata fetch failing).
            unavailable: self
                .login
                .oidc
                .iter()
                .filter(|p| !p.is_available())
                .map(|p| p.display_name.as_str())
                .chain(
                    self.login
                        .saml
                        .iter()
                        .filter(|p| !p.is_available())
                        .map(|p| p.display_name.as_str()),
                )
                .collect(),
            error: error.or(failed.then_some(
                "Sign-in did not complete. Please try again, or choose another way to sign in.",
            )),
        });
        let status = if error.is_some() { 401 } else { 200 };
        self.send(
            session,
            ctx,
            html_response(status, html),
            if error.is_some() {
                Reason::LoginFailed
            } else {
                Reason::LoginRequired
            },
        )
        .await
    }

    async fn login_submit(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let Some(form) = self.protected_form(session, ctx).await? else {
            return Ok(true);
        };
        let field = |name: &str| form_value(&form, name).unwrap_or_default();
        let (idp, username, password, code) = (
            field("idp"),
            field("username"),
            field("password"),
            field("code"),
        );
        let rd = form_value(&form, "rd")
            .and_then(|rd| safe_return_path(&rd).map(str::to_string))
            .unwrap_or_else(|| "/".into());
        let Some(provider) = self
            .login
            .local
            .iter()
            .find(|(id, _, _)| *id == idp)
            .map(|(_, _, p)| p.clone())
        else {
            return self
                .reply(session, ctx, Reply::BadRequest, Reason::BadRequest)
                .await;
        };
        let now = unix_now();
        let mut keys = vec![format!("user:{idp}:{username}")];
        if let Some(ip) = ctx.client_ip {
            keys.push(format!("ip:{ip}"));
        }
        if let Err(retry_after) = self.throttle.check(&keys, now) {
            self.audit_login(
                ctx,
                EventKind::LoginFailed,
                &idp,
                &username,
                None,
                "throttled",
            )
            .await;
            return self
                .reply(
                    session,
                    ctx,
                    Reply::TooManyAttempts { retry_after },
                    Reason::LoginThrottled,
                )
                .await;
        }
        // Each check takes ~19 MiB and real CPU: a few at a time, the rest wait.
        let permit = self.password_checks.acquire().await;
        let outcome = verify_off_thread(provider, username.clone(), password, code, now).await;
        drop(permit);
        match outcome {
            Ok(identity) => {
                // Only the account's counter: a valid account must not reset its address's counter.
                self.throttle.succeeded(&keys[..1]);
                // A fresh session and id at every login: a pre-login cookie is never reused.
                let data = SessionData::new(identity, now, self.session_lifetime);
                self.start_session(session, ctx, data, &rd, "local").await
            }
            Err(error) => {
                self.throttle.failed(&keys, now);
                self.audit_login(
                    ctx,
                    EventKind::LoginFailed,
                    &idp,
                    &username,
                    None,
                    error.as_str(),
                )
                .await;
                ctx.denial = Some(Reason::LoginFailed);
                self.login_page(
                    session,
                    ctx,
                    Some("Sign-in failed. Check your details and try again."),
                )
                .await
            }
        }
    }

    async fn whoami(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let Some(data) = ctx.session.as_ref() else {
            let login_url = self.login_url("/");
            return self
                .reply(
                    session,
                    ctx,
                    Reply::LoginRequired { login_url },
                    Reason::LoginRequired,
                )
                .await;
        };
        // The identity as the backend will know it, and the session's id and expiry. Never a
        // token or a cookie.
        let body = serde_json::json!({
            "identity": data.identity,
            "session": { "sid": data.sid, "issued_at": data.issued_at, "expires_at": data.expires_at },
        });
        let response = json_response(200, body.to_string());
        self.send(session, ctx, response, Reason::Authenticated)
            .await
    }

    async fn logout_page(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let token = self.csrf_token(ctx);
        let html = respond::logout_page(&self.endpoint("logout"), &token);
        self.send(
            session,
            ctx,
            html_response(200, html),
            Reason::Authenticated,
        )
        .await
    }

    async fn logout(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        if self.protected_form(session, ctx).await?.is_none() {
            return Ok(true);
        }
        let mut op_logout = None;
        if let Some(data) = ctx.session.take() {
            self.revoked.revoke(&data.sid, data.expires_at, unix_now());
            // Ended here; end it at the OP too when the OP supports RP-initiated logout.
            if let Some(provider) = self.login.oidc.iter().find(|p| p.id == data.identity.idp) {
                let back = format!(
                    "{}://{}{}",
                    ctx.scheme(session),
                    ctx.host.as_deref().unwrap_or_default(),
                    self.endpoint("signed-out")
                );
                let id_token = data.oidc.as_ref().map(|t| t.id_token.as_str());
                op_logout = provider.logout_url(id_token, &back);
            }
            // SAML single logout: a LogoutRequest to the IdP, which answers at saml/slo.
            if let (Some(saml), Some(provider)) = (
                data.saml.as_ref(),
                self.login.saml.iter().find(|p| p.id == data.identity.idp),
            ) {
                op_logout = provider.logout_url(saml, unix_now());
            }
            let (idp, user, sid) = (
                data.identity.idp.clone(),
                data.identity.user_id.clone(),
                data.sid.clone(),
            );
            self.audit_login(ctx, EventKind::Logout, &idp, &user, Some(&sid), "user")
                .await;
        }
        ctx.set_cookies
            .extend(clear_cookies(&self.cookie_name, &ctx.cookie_chunks));
        if let Some(location) = op_logout {
            let mut response = html_response(303, String::new());
            response.headers.push(("Location", location));
            return self
                .send(session, ctx, response, Reason::Authenticated)
                .await;
        }
        self.signed_out(session, ctx).await
    }

    /// OpenID Connect Back-Channel Logout: the OP says a user's session ended there. The
    /// logout token's signature is the authentication (no cookies, no CSRF token: the OP
    /// calls from its server). Ends the matching sessions at once.
    async fn backchannel_logout(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<bool> {
        let Some(form) = self.read_form(session, ctx).await? else {
            return self
                .reply(session, ctx, Reply::PayloadTooLarge, Reason::BadRequest)
                .await;
        };
        let token = form_value(&form, "logout_token").unwrap_or_default();
        let now = unix_now();
        let found = self
            .login
            .oidc
            .iter()
            .find_map(|p| p.logout_target(&token).ok().map(|t| (p.id.clone(), t)));
        let Some((idp, target)) = found else {
            self.audit_login(
                ctx,
                EventKind::LoginFailed,
                "",
                "",
                None,
                "logout-token-invalid",
            )
            .await;
            return self
                .backchannel_answer(session, ctx, 400, "invalid_request")
                .await;
        };
        if !self.logout_tokens.first_use(&target.jti, target.exp, now) {
            self.audit_login(
                ctx,
                EventKind::LoginFailed,
                &idp,
                "",
                None,
                "logout-token-replayed",
            )
            .await;
            return self
                .backchannel_answer(session, ctx, 400, "invalid_request")
                .await;
        }
        self.revoked
            .end_op_sessions(&idp, target.sub.as_deref(), target.op_sid.as_deref(), now);
        let user = target.sub.clone().unwrap_or_default();
        self.audit_login(
            ctx,
            EventKind::Logout,
            &idp,
            &user,
            target.op_sid.as_deref(),
            "backchannel",
        )
        .await;
        self.backchannel_answer(session, ctx, 200, "").await
    }

    async fn backchannel_answer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        status: u16,
        error: &str,
    ) -> Result<bool> {
        let body = if error.is_empty() {
            String::new()
        } else {
            serde_json::json!({ "error": error }).to_string()
        };
        let response = json_response(status, body);
        self.send(session, ctx, response, Reason::LoginFailed).await
    }

    /// The public keys that verify `X-Portcullis-Assertion`.
    async fn jwks(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let response = Synthetic {
            status: 200,
            headers: vec![
                ("Content-Type", "application/jwk-set+json".into()),
                // Short enough that a rotated-in key is seen quickly; verifiers also refetch
                // on an unknown kid.
                ("Cache-Control", "public, max-age=300".into()),
            ],
            body: self.signer.jwks().clone(),
        };
        self.send(session, ctx, response, Reason::PublicPath).await
    }

    /// Where the OP sends the browser back after its own logout.
    pub(super) async fn signed_out(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<bool> {
        let html = respond::signed_out_page(&self.endpoint("login"));
        self.send(
            session,
            ctx,
            html_response(200, html),
            Reason::Authenticated,
        )
        .await
    }

    /// Sends the browser to the OP, remembering state, nonce and PKCE verifier in an
    /// encrypted cookie for this attempt.
    async fn oidc_start(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        idp: &str,
        step_up: bool,
    ) -> Result<bool> {
        let Some(provider) = self.login.oidc.iter().find(|p| p.id == idp).cloned() else {
            return self
                .reply(session, ctx, Reply::NotFound, Reason::UnknownEndpoint)
                .await;
        };
        let rd = query_value(session, "rd")
            .and_then(|rd| safe_return_path(&rd).map(str::to_string))
            .unwrap_or_else(|| "/".into());
        let scheme = ctx.scheme(session);
        let host = ctx.host.clone().unwrap_or_default();
        let redirect_uri = format!("{scheme}://{host}{}", self.endpoint("oidc/callback"));
        let now = unix_now();
        let (location, flow) = match provider.start(&redirect_uri, &rd, now, step_up) {
            Ok(started) => started,
            Err(failure) => {
                self.audit_login(ctx, EventKind::LoginFailed, idp, "", None, failure.as_str())
                    .await;
                return self
                    .reply(session, ctx, Reply::BadGateway, Reason::LoginFailed)
                    .await;
            }
        };
        let sealed = serde_json::to_vec(&flow)
            .ok()
            .and_then(|json| self.codec.seal(FLOW_PURPOSE, &json).ok());
        let Some(sealed) = sealed else {
            return self
                .reply(session, ctx, Reply::InternalError, Reason::LoginFailed)
                .await;
        };
        self.drop_old_flows(ctx);
        let prefix = &self.flow_prefix;
        ctx.set_cookies.push(format!(
            "{prefix}{}={sealed}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age={FLOW_SECONDS}",
            flow_id(&flow.state)
        ));
        self.audit_login(ctx, EventKind::LoginStarted, idp, "", None, "oidc")
            .await;
        let mut response = html_response(302, String::new());
        response.headers.push(("Location", location));
        self.send(session, ctx, response, Reason::LoginRequired)
            .await
    }

    /// One cookie per sign-in attempt, so several tabs can sign in at once; bounded, so they
    /// never pile up until requests fail: past the limit the older attempts are dropped.
    pub(super) fn drop_old_flows(&self, ctx: &mut RequestCtx) {
        if ctx.flow_cookies.len() >= MAX_FLOWS {
            for name in ctx.flow_cookies.drain(..) {
                ctx.set_cookies.push(format!(
                    "{name}=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0"
                ));
            }
        }
    }

    /// The OP sends the browser back here with a code (or an error).
    async fn oidc_callback(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let state = query_value(session, "state").unwrap_or_default();
        let flow_cookie = format!("{}{}", self.flow_prefix, flow_id(&state));
        let flow = ctx
            .flow_cookies_values
            .iter()
            .find(|(name, _)| *name == flow_cookie)
            .and_then(|(_, value)| self.codec.open(FLOW_PURPOSE, value))
            .and_then(|json| serde_json::from_slice::<FlowState>(&json).ok());
        ctx.set_cookies.push(format!(
            "{flow_cookie}=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0"
        ));
        let now = unix_now();
        let Some(flow) = flow.filter(|f| {
            !state.is_empty() && bool::from(f.state.as_bytes().ct_eq(state.as_bytes()))
        }) else {
            self.audit_login(ctx, EventKind::LoginFailed, "", "", None, "state-mismatch")
                .await;
            return self
                .reply(session, ctx, Reply::BadRequest, Reason::LoginFailed)
                .await;
        };
        if now.saturating_sub(flow.started) > FLOW_SECONDS {
            self.audit_login(
                ctx,
                EventKind::LoginFailed,
                &flow.idp,
                "",
                None,
                "flow-expired",
            )
            .await;
            return self
                .reply(session, ctx, Reply::BadRequest, Reason::LoginFailed)
                .await;
        }
        let Some(provider) = self.login.oidc.iter().find(|p| p.id == flow.idp).cloned() else {
            return self
                .reply(session, ctx, Reply::BadRequest, Reason::LoginFailed)
                .await;
        };
        let result = match (query_value(session, "error"), query_value(session, "code")) {
            (Some(_), _) | (None, None) => Err(OidcFailure::IdpError),
            (None, Some(code)) => provider.finish(&flow, &code, now).await,
        };
        let login = match result {
            Ok(found) => found,
            Err(failure) => {
                self.audit_login(
                    ctx,
                    EventKind::LoginFailed,
                    &flow.idp,
                    "",
                    None,
                    failure.as_str(),
                )
                .await;
                // Marked, so the page shows the failure instead of going straight back to
                // the provider (a loop when the provider keeps failing).
                let login_url = format!("{}&{FAILED_PARAM}=1", self.login_url(&flow.return_to));
                let reply = if wants_html_request(session) {
                    Reply::RedirectLogin {
                        location: login_url,
                    }
                } else {
                    Reply::LoginRequired { login_url }
                };
                return self.reply(session, ctx, reply, Reason::LoginFailed).await;
            }
        };
        let mut data = SessionData::new(login.identity, now, self.session_lifetime);
        data.oidc = Some(login.tokens);
        data.stepped_up = flow.step_up;
        self.start_session(session, ctx, data, &flow.return_to, "oidc")
            .await
    }

    /// A fresh session (and id) for `identity`, then on to `return_to`.
    pub(super) async fn start_session(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        data: SessionData,
        return_to: &str,
        method: &str,
    ) -> Result<bool> {
        let idp = data.identity.idp.clone();
        let values = match self.codec.encode(&data) {
            Ok(values) => values,
            Err(e) => {
                self.audit_login(
                    ctx,
                    EventKind::LoginFailed,
                    &idp,
                    &data.identity.user_id,
                    None,
                    &e.to_string(),
                )
                .await;
                return self
                    .reply(session, ctx, Reply::InternalError, Reason::LoginFailed)
                    .await;
            }
        };
        ctx.set_cookies.extend(cookie_values(
            &self.cookie_name,
            &values,
            self.session_lifetime.as_secs(),
            &ctx.cookie_chunks,
        ));
        self.audit_login(
            ctx,
            EventKind::LoginSucceeded,
            &idp,
            &data.identity.user_id,
            Some(&data.sid),
            method,
        )
        .await;
        let mut response = html_response(303, String::new());
        response.headers.push(("Location", return_to.to_string()));
        self.send(session, ctx, response, Reason::Authenticated)
            .await
    }

    /// The form of a state-changing request, once its size and CSRF checks pass; `None`
    /// when a refusal (413 or 403) has already been sent.
    async fn protected_form(
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
    async fn read_form(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Vec<u8>>> {
        self.read_body(session, ctx, self.limits.max_form_bytes)
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
    fn csrf_ok(&self, session: &Session, ctx: &RequestCtx, form: &[u8]) -> bool {
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

    pub(super) async fn audit_login(
        &self,
        ctx: &RequestCtx,
        kind: EventKind,
        idp: &str,
        user: &str,
        sid: Option<&str>,
        detail: &str,
    ) {
        if kind == EventKind::LoginFailed {
            // Labels stay a bounded set: reasons are kebab-case words, anything else is "other".
            let reason = if detail.len() <= 40
                && detail.bytes().all(|b| b.is_ascii_lowercase() || b == b'-')
            {
                detail
            } else {
                "other"
            };
            let idp_label = if self.login.oidc.iter().any(|p| p.id == idp)
                || self.login.saml.iter().any(|p| p.id == idp)
                || self.login.local.iter().any(|(id, _, _)| id == idp)
            {
                idp
            } else {
                "-"
            };
            self.metrics
                .auth_failures
                .with_label_values(&[idp_label, reason])
                .inc();
        }
        let mut event = AuditEvent::new(kind);
        event.request_id = Some(ctx.request_id.clone());
        event.client_ip = ctx.client_ip;
        event.app = ctx.app.as_ref().map(|a| a.audit_id.clone());
        event.idp = Some(idp.to_string());
        // Failed attempts name the user as typed, bounded, so a pasted password does not
        // fill the log.
        event.user = Some(user.chars().take(128).collect());
        event.sid = sid.map(str::to_string);
        event.detail = Some(detail.to_string());
        self.auditor.record(event).await;
    }
}

/// Argon2 is deliberately slow: verify on the blocking pool, never on a proxy worker.
async fn verify_off_thread(
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
fn json_response(status: u16, json: String) -> Synthetic {
    Synthetic {
        status,
        headers: vec![
            ("Content-Type", "application/json".into()),
            ("Cache-Control", "no-store".into()),
        ],
        body: Bytes::from(json),
    }
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
const FLOW_PURPOSE: &str = "oidc-flow";
/// How long a sign-in at the OP may take.
pub(super) const FLOW_SECONDS: u64 = 600;
/// Most sign-in attempts in flight per browser.
const MAX_FLOWS: usize = 3;

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

fn wants_html_request(session: &Session) -> bool {
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
