//! OpenID Connect sign-in: the redirect to the OP and the callback.

use super::super::{Gateway, RequestCtx};
use super::common::*;
use super::signin::FAILED_PARAM;
use crate::idp::oidc::{FlowState, OidcError};
use crate::idp::LoginFailure;
use crate::policy::Reason;
use crate::respond::Reply;
use crate::route::Endpoint;
use crate::session::SessionData;
use pingora::prelude::*;
use pingora::proxy::Session;
use subtle::ConstantTimeEq;

impl Gateway {
    /// Sends the browser to the OP, remembering state, nonce and PKCE verifier in an
    /// encrypted cookie for this attempt.
    pub(super) async fn oidc_start(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        idp: &str,
        step_up: bool,
    ) -> Result<bool> {
        let Some(provider) = self
            .sign_in
            .login
            .oidc
            .iter()
            .find(|p| p.id == idp)
            .cloned()
        else {
            return self
                .reply(session, ctx, Reply::NotFound, Reason::UnknownEndpoint)
                .await;
        };
        let rd = return_path(session);
        let scheme = ctx.scheme(session);
        let host = ctx.host.clone().unwrap_or_default();
        let redirect_uri = format!("{scheme}://{host}{}", self.endpoint(Endpoint::OidcCallback));
        let now = unix_now();
        let (location, flow) = match provider.start(&redirect_uri, &rd, now, step_up) {
            Ok(started) => started,
            Err(failure) => {
                self.audit_login_failed(ctx, idp, "", LoginFailure::Oidc(failure))
                    .await;
                return self
                    .reply(session, ctx, Reply::BadGateway, Reason::LoginFailed)
                    .await;
            }
        };
        let departure = Departure {
            location,
            flow: &flow,
            flow_key: &flow.state,
            purpose: FLOW_PURPOSE,
            same_site: "Lax",
            idp,
            method: "oidc",
        };
        self.begin_sign_in(session, ctx, departure).await
    }

    /// The OP sends the browser back here with a code (or an error).
    pub(super) async fn oidc_callback(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<bool> {
        let state = query_value(session, "state").unwrap_or_default();
        let flow_cookie = format!("{}{}", self.site.flow_prefix, flow_id(&state));
        let flow = ctx
            .flow_cookies
            .iter()
            .find(|(name, _)| *name == flow_cookie)
            .and_then(|(_, value)| self.auth.codec().open(FLOW_PURPOSE, value))
            .and_then(|json| serde_json::from_slice::<FlowState>(&json).ok());
        ctx.set_cookies.push(format!(
            "{flow_cookie}=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0"
        ));
        let now = unix_now();
        let Some(flow) = flow.filter(|f| {
            !state.is_empty() && bool::from(f.state.as_bytes().ct_eq(state.as_bytes()))
        }) else {
            self.audit_login_failed(ctx, "", "", LoginFailure::StateMismatch)
                .await;
            return self
                .reply(session, ctx, Reply::BadRequest, Reason::LoginFailed)
                .await;
        };
        if now.saturating_sub(flow.started) > FLOW_SECONDS {
            self.audit_login_failed(ctx, &flow.idp, "", LoginFailure::FlowExpired)
                .await;
            return self
                .reply(session, ctx, Reply::BadRequest, Reason::LoginFailed)
                .await;
        }
        let Some(provider) = self
            .sign_in
            .login
            .oidc
            .iter()
            .find(|p| p.id == flow.idp)
            .cloned()
        else {
            return self
                .reply(session, ctx, Reply::BadRequest, Reason::LoginFailed)
                .await;
        };
        let result = match (query_value(session, "error"), query_value(session, "code")) {
            (Some(_), _) | (None, None) => Err(OidcError::IdpError),
            (None, Some(code)) => provider.finish(&flow, &code, now).await,
        };
        let login = match result {
            Ok(found) => found,
            Err(failure) => {
                self.audit_login_failed(ctx, &flow.idp, "", LoginFailure::Oidc(failure))
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
        let mut data = SessionData::new(login.identity, now, self.sign_in.session_lifetime);
        data.oidc = Some(login.tokens);
        data.stepped_up = flow.step_up;
        self.start_session(session, ctx, data, &flow.return_to, "oidc")
            .await
    }
}
