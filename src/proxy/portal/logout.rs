//! Sign-out (page and form) and the OP's back-channel logout.

use super::super::{Gateway, RequestCtx};
use super::common::*;
use crate::audit::EventKind;
use crate::idp::{LogoutRefusal, UseOnce};
use crate::policy::Reason;
use crate::respond::{self, Reply};
use crate::route::Endpoint;
use crate::session::clear_cookies;
use pingora::prelude::*;
use pingora::proxy::Session;

impl Gateway {
    pub(super) async fn logout_page(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<bool> {
        let token = self.csrf_token(ctx);
        let html = respond::logout_page(&self.endpoint(Endpoint::Logout), &token);
        self.send(
            session,
            ctx,
            html_response(200, html),
            Reason::Authenticated,
        )
        .await
    }

    pub(super) async fn logout(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        if self.protected_form(session, ctx).await?.is_none() {
            return Ok(true);
        }
        let mut op_logout = None;
        if let Some(data) = ctx.session.take() {
            self.end_session(&data, unix_now()).await;
            // Ended here; end it at the OP too when the OP supports RP-initiated logout.
            if let Some(provider) = self
                .sign_in
                .login
                .oidc
                .iter()
                .find(|p| p.id == data.identity.idp)
            {
                let back = format!(
                    "{}://{}{}",
                    ctx.scheme(session),
                    ctx.host.as_deref().unwrap_or_default(),
                    self.endpoint(Endpoint::SignedOut)
                );
                let id_token = data.oidc.as_ref().map(|t| t.id_token.as_str());
                op_logout = provider.logout_url(id_token, &back);
            }
            // SAML single logout: a LogoutRequest to the IdP, which answers at saml/slo.
            if let (Some(saml), Some(provider)) = (
                data.saml.as_ref(),
                self.sign_in
                    .login
                    .saml
                    .iter()
                    .find(|p| p.id == data.identity.idp),
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
            .extend(clear_cookies(&self.site.cookie_name, &ctx.cookie_chunks));
        if let Some(location) = op_logout {
            let response = redirect_response(303, location);
            return self
                .send(session, ctx, response, Reason::Authenticated)
                .await;
        }
        self.signed_out(session, ctx).await
    }

    /// OpenID Connect Back-Channel Logout: the OP says a user's session ended there. The
    /// logout token's signature is the authentication (no cookies, no CSRF token: the OP
    /// calls from its server). Ends the matching sessions at once.
    pub(super) async fn backchannel_logout(
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
            .sign_in
            .login
            .oidc
            .iter()
            .find_map(|p| p.logout_target(&token).ok().map(|t| (p.id.clone(), t)));
        let Some((idp, target)) = found else {
            self.audit_logout_refused(ctx, "", LogoutRefusal::TokenInvalid)
                .await;
            return self
                .backchannel_answer(session, ctx, 400, "invalid_request")
                .await;
        };
        let token_id = UseOnce {
            id: target.jti.clone(),
            until: target.exp,
        };
        // Recorded here only once the shared memory took it: a token refused as unverifiable
        // is taken when the OP delivers it again.
        let seen_here = &self.sign_in.logout_tokens;
        let taken = if seen_here.seen(&token_id.id, now) {
            Err(NotFirstUse::Replayed)
        } else {
            match self
                .first_use_everywhere("logout-token", &idp, &token_id)
                .await
            {
                Ok(()) if seen_here.first_use(&token_id.id, token_id.until, now) => Ok(()),
                Ok(()) => Err(NotFirstUse::Replayed),
                Err(not_taken) => Err(not_taken),
            }
        };
        if let Err(not_taken) = taken {
            // Unverifiable: 503, so the OP delivers it again (Back-Channel Logout §2.8).
            let (refusal, status, error) = match not_taken {
                NotFirstUse::Replayed => (LogoutRefusal::TokenReplayed, 400, "invalid_request"),
                NotFirstUse::Unverifiable => (
                    LogoutRefusal::ReplayCheckUnavailable,
                    503,
                    "temporarily_unavailable",
                ),
            };
            self.audit_logout_refused(ctx, &idp, refusal).await;
            return self.backchannel_answer(session, ctx, status, error).await;
        }
        self.auth.revoked().end_op_sessions(
            &idp,
            target.sub.as_deref(),
            target.op_sid.as_deref(),
            now,
        );
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

    pub(super) async fn backchannel_answer(
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
}
