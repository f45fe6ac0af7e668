//! The sign-in page and local sign-in, whoami, the JWKS and the signed-out page.

use super::super::{Gateway, RequestCtx};
use super::common::*;
use super::signin::FAILED_PARAM;
use crate::idp::LoginFailure;
use crate::policy::Reason;
use crate::redirect::safe_return_path;
use crate::respond::{self, Reply, Synthetic};
use crate::route::Endpoint;
use crate::session::SessionData;
use pingora::prelude::*;
use pingora::proxy::Session;

impl Gateway {
    pub(super) async fn login_page(
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
        let action = self.endpoint(Endpoint::Login);
        // Only the providers the destination app accepts (its `access.identity_providers`).
        let offered = self.offered_providers(ctx, &rd);
        let failed = query_value(session, FAILED_PARAM).is_some();
        let html = respond::login_page(&respond::LoginPage {
            action: &action,
            return_to: &rd,
            csrf_token: &token,
            local: self
                .sign_in
                .login
                .local
                .iter()
                .filter(|(id, _, _)| offered(id))
                .map(|(id, name, _)| (id.as_str(), name.as_str()))
                .collect(),
            sso: self
                .sign_in
                .login
                .oidc
                .iter()
                .filter(|p| p.is_available() && offered(&p.id))
                .map(|p| (p.display_name.as_str(), p.id.as_str()))
                .chain(
                    self.sign_in
                        .login
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
                .sign_in
                .login
                .oidc
                .iter()
                .filter(|p| !p.is_available())
                .map(|p| p.display_name.as_str())
                .chain(
                    self.sign_in
                        .login
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

    pub(super) async fn login_submit(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<bool> {
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
            .sign_in
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
        if let Err(retry_after) = self.sign_in.throttle.check(&keys, now) {
            self.audit_login_failed(ctx, &idp, &username, LoginFailure::Throttled)
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
        let permit = self.sign_in.password_checks.acquire().await;
        let outcome = verify_off_thread(provider, username.clone(), password, code, now).await;
        drop(permit);
        match outcome {
            Ok(identity) => {
                // Only the account's counter: a valid account must not reset its address's counter.
                self.sign_in.throttle.succeeded(&keys[..1]);
                // A fresh session and id at every login: a pre-login cookie is never reused.
                let data = SessionData::new(identity, now, self.sign_in.session_lifetime);
                self.start_session(session, ctx, data, &rd, "local").await
            }
            Err(error) => {
                self.sign_in.throttle.failed(&keys, now);
                self.audit_login_failed(ctx, &idp, &username, LoginFailure::Local(error))
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

    pub(super) async fn whoami(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
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

    /// The public keys that verify `X-Portcullis-Assertion`.
    pub(super) async fn jwks(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
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
        let html = respond::signed_out_page(&self.endpoint(Endpoint::Login));
        self.send(
            session,
            ctx,
            html_response(200, html),
            Reason::Authenticated,
        )
        .await
    }
}
