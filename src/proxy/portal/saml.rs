//! SAML endpoints under the reserved prefix: `saml/metadata`, `saml/acs` (HTTP-POST),
//! `saml/slo` (HTTP-Redirect, both directions), and the redirect that starts a sign-in.

use crate::route::Endpoint;
use std::sync::Arc;

use pingora::prelude::*;
use pingora::proxy::Session;
use subtle::ConstantTimeEq;

use super::super::{Gateway, RequestCtx};
use super::common::{
    flow_id, form_value, query_value, redirect_response, return_path, unix_now, Departure,
    NotFirstUse, FLOW_SECONDS,
};
use crate::audit::EventKind;
use crate::idp::saml::binding::{Carrier, RedirectMessage};
use crate::idp::saml::{self, Carried, SamlError, SamlFlow, SamlProvider};
use crate::idp::{LoginFailure, LogoutRefusal};
use crate::policy::Reason;
use crate::redirect::safe_return_path;
use crate::respond::{Reply, Synthetic};
use crate::session::{clear_cookies, SessionData};

/// Purpose bound into the encryption of SAML sign-in cookies.
const SAML_FLOW_PURPOSE: &str = "saml-flow";

impl Gateway {
    fn saml_provider(&self, id: &str) -> Option<Arc<SamlProvider>> {
        self.sign_in.login.saml.iter().find(|p| p.id == id).cloned()
    }

    /// The provider whose IdP claims to have sent `xml` (to pick its keys; verified later).
    fn saml_provider_for_issuer(&self, issuer: Option<String>) -> Option<Arc<SamlProvider>> {
        let issuer = issuer?;
        self.sign_in
            .login
            .saml
            .iter()
            .find(|p| p.idp_entity_id().as_deref() == Some(issuer.as_str()))
            .cloned()
    }

    /// This host's URL of a Portcullis endpoint.
    fn own_url(&self, session: &Session, ctx: &RequestCtx, endpoint: Endpoint) -> String {
        format!(
            "{}://{}{}",
            ctx.scheme(session),
            ctx.host.as_deref().unwrap_or_default(),
            self.endpoint(endpoint)
        )
    }

    /// Sends the browser to the IdP with an AuthnRequest; the request id waits in an
    /// encrypted cookie keyed by `RelayState`.
    pub(super) async fn saml_start(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        provider: Arc<SamlProvider>,
        step_up: bool,
    ) -> Result<bool> {
        let rd = return_path(session);
        let acs_url = self.own_url(session, ctx, Endpoint::SamlAcs);
        let relay_state = format!("{:032x}", rand::random::<u128>());
        let now = unix_now();
        let Some((location, flow)) = provider.start(&acs_url, &rd, &relay_state, now, step_up)
        else {
            self.audit_login_failed(ctx, &provider.id, "", LoginFailure::IdpUnavailable)
                .await;
            return self
                .reply(session, ctx, Reply::BadGateway, Reason::LoginFailed)
                .await;
        };
        let departure = Departure {
            location,
            flow: &flow,
            flow_key: &relay_state,
            purpose: SAML_FLOW_PURPOSE,
            same_site: "None",
            idp: &provider.id,
            method: "saml",
        };
        self.begin_sign_in(session, ctx, departure).await
    }

    /// The assertion consumer service (HTTP-POST binding).
    pub(super) async fn saml_acs(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<bool> {
        let limit = saml::response::MAX_RESPONSE_BASE64 + 8 * 1024;
        let Some(form) = self.read_body(session, ctx, limit).await? else {
            return self
                .saml_refused(session, ctx, "", SamlError::TooLarge)
                .await;
        };
        let relay_state = form_value(&form, "RelayState");
        let Some(posted) = form_value(&form, "SAMLResponse") else {
            return self
                .saml_refused(session, ctx, "", SamlError::Malformed)
                .await;
        };
        // The pending sign-in of this browser, if the RelayState names one; used once.
        let now = unix_now();
        let flow = relay_state.as_deref().and_then(|relay| {
            let name = format!("{}{}", self.site.flow_prefix, flow_id(relay));
            let value = ctx
                .flow_cookies
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.clone())?;
            ctx.set_cookies.push(format!(
                "{name}=; Path=/; Secure; HttpOnly; SameSite=None; Max-Age=0"
            ));
            self.auth
                .codec()
                .open(SAML_FLOW_PURPOSE, &value)
                .and_then(|json| serde_json::from_slice::<SamlFlow>(&json).ok())
                .filter(|f| bool::from(f.relay_state.as_bytes().ct_eq(relay.as_bytes())))
                .filter(|f| now.saturating_sub(f.started) <= FLOW_SECONDS)
        });
        let xml = match saml::response::decode(&posted) {
            Ok(xml) => xml,
            Err(refusal) => {
                let idp = flow.as_ref().map(|f| f.idp.clone()).unwrap_or_default();
                return self.saml_refused(session, ctx, &idp, refusal).await;
            }
        };
        let provider = match &flow {
            Some(f) => self.saml_provider(&f.idp),
            None => self.saml_provider_for_issuer(saml::response::claimed_issuer(&xml)),
        };
        let Some(provider) = provider else {
            return self
                .saml_refused(session, ctx, "", SamlError::IssuerMismatch)
                .await;
        };
        let acs_url = self.own_url(session, ctx, Endpoint::SamlAcs);
        let verifier = provider.clone();
        let pending = flow.clone();
        // xmlsec and RSA: a millisecond of CPU, kept off the proxy workers.
        let outcome = tokio::task::spawn_blocking(move || {
            verifier.finish(&xml, pending.as_ref(), &acs_url, now)
        })
        .await
        .unwrap_or(Err(SamlError::Malformed));
        let login = match outcome {
            Ok(login) => login,
            Err(refusal) => return self.saml_refused(session, ctx, &provider.id, refusal).await,
        };
        match self
            .first_use_everywhere("saml-assertion", &provider.id, &login.assertion)
            .await
        {
            Ok(()) => {}
            Err(NotFirstUse::Replayed) => {
                return self
                    .saml_refused(session, ctx, &provider.id, SamlError::Replayed)
                    .await
            }
            Err(NotFirstUse::Unverifiable) => {
                let failure = LoginFailure::ReplayCheckUnavailable;
                self.audit_login_failed(ctx, &provider.id, "", failure)
                    .await;
                let reply = Reply::TemporarilyUnavailable;
                return self.reply(session, ctx, reply, Reason::LoginFailed).await;
            }
        }
        let return_to = match &flow {
            Some(f) => f.return_to.clone(),
            // IdP-initiated: a RelayState that is a local path is where to go.
            None => relay_state
                .as_deref()
                .and_then(safe_return_path)
                .unwrap_or("/")
                .to_string(),
        };
        let mut data = SessionData::new(login.identity, now, self.sign_in.session_lifetime);
        if let Some(ends_at) = login.ends_at {
            data.expires_at = data.expires_at.min(ends_at);
        }
        data.saml = Some(login.session);
        data.stepped_up = flow.as_ref().is_some_and(|f| f.step_up);
        let method = if flow.is_some() {
            "saml"
        } else {
            "saml-unsolicited"
        };
        self.start_session(session, ctx, data, &return_to, method)
            .await
    }

    async fn saml_refused(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        idp: &str,
        refusal: SamlError,
    ) -> Result<bool> {
        self.audit_login_failed(ctx, idp, "", LoginFailure::Saml(refusal))
            .await;
        let reply = match refusal {
            SamlError::TooLarge => Reply::PayloadTooLarge,
            r if r.is_bad_request() => Reply::BadRequest,
            _ => Reply::SignInRefused,
        };
        self.reply(session, ctx, reply, Reason::LoginFailed).await
    }

    /// SP metadata: this SP's entity id, ACS (the public URL's, and this host's when it
    /// differs), single logout, NameID formats, and the signing certificate if any.
    pub(super) async fn saml_metadata(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<bool> {
        let wanted = query_value(session, "idp");
        let provider = match wanted {
            Some(id) => self.saml_provider(&id),
            None => self.sign_in.login.saml.first().cloned(),
        };
        let Some(provider) = provider else {
            return self
                .reply(session, ctx, Reply::NotFound, Reason::UnknownEndpoint)
                .await;
        };
        let public_acs = format!(
            "{}{}saml/acs",
            self.site.public_origin, self.site.reserved_prefix
        );
        let here_acs = self.own_url(session, ctx, Endpoint::SamlAcs);
        let mut acs_urls = vec![public_acs];
        if !acs_urls.contains(&here_acs) {
            acs_urls.push(here_acs);
        }
        let slo_url = format!(
            "{}{}saml/slo",
            self.site.public_origin, self.site.reserved_prefix
        );
        let response = Synthetic {
            status: 200,
            headers: vec![
                ("Content-Type", "application/samlmetadata+xml".into()),
                ("Cache-Control", "public, max-age=300".into()),
            ],
            body: provider.sp_metadata(&acs_urls, &slo_url).into(),
        };
        self.send(session, ctx, response, Reason::PublicPath).await
    }

    /// Single logout, HTTP-Redirect binding: an IdP's LogoutRequest (end the sessions it
    /// names, answer with a LogoutResponse) or its LogoutResponse to ours.
    pub(super) async fn saml_slo(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<bool> {
        let query = session
            .req_header()
            .uri
            .query()
            .unwrap_or_default()
            .to_string();
        let message = RedirectMessage::parse(&query);
        let xml = match message.xml() {
            Ok(xml) => xml,
            Err(refusal) => return self.saml_logout_refused(session, ctx, "", refusal).await,
        };
        let is_response = message.carrier() == Some(Carrier::Response);
        self.saml_logout(session, ctx, Carried::Redirect(&message), &xml, is_response)
            .await
    }

    /// Single logout, HTTP-POST binding: the same messages as a form, signed inside.
    pub(super) async fn saml_slo_post(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<bool> {
        let Some(form) = self.read_body(session, ctx, 64 * 1024).await? else {
            return self
                .saml_logout_refused(session, ctx, "", SamlError::TooLarge)
                .await;
        };
        let (value, is_response) = match (
            form_value(&form, "SAMLRequest"),
            form_value(&form, "SAMLResponse"),
        ) {
            (Some(request), None) => (request, false),
            (None, Some(response)) => (response, true),
            _ => {
                return self
                    .saml_logout_refused(session, ctx, "", SamlError::Malformed)
                    .await
            }
        };
        let xml = match saml::response::decode(&value) {
            Ok(xml) => xml,
            Err(refusal) => return self.saml_logout_refused(session, ctx, "", refusal).await,
        };
        let carried = Carried::Post {
            relay_state: form_value(&form, "RelayState"),
        };
        self.saml_logout(session, ctx, carried, &xml, is_response)
            .await
    }

    /// A logout message from the IdP, however it came.
    async fn saml_logout(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        carried: Carried<'_>,
        xml: &str,
        is_response: bool,
    ) -> Result<bool> {
        let Some(provider) = self.saml_provider_for_issuer(saml::message_issuer(xml)) else {
            return self
                .saml_logout_refused(session, ctx, "", SamlError::IssuerMismatch)
                .await;
        };
        let now = unix_now();
        if is_response {
            return match provider.logout_answer(&carried, xml) {
                Ok(success) => {
                    let detail = if success {
                        "saml-slo-confirmed"
                    } else {
                        "saml-slo-partial"
                    };
                    self.audit_login(ctx, EventKind::Logout, &provider.id, "", None, detail)
                        .await;
                    self.signed_out(session, ctx).await
                }
                Err(refusal) => {
                    self.saml_logout_refused(session, ctx, &provider.id, refusal)
                        .await
                }
            };
        }
        let here = self.own_url(session, ctx, Endpoint::SamlSlo);
        let public = format!(
            "{}{}saml/slo",
            self.site.public_origin, self.site.reserved_prefix
        );
        let order = match provider.logout_order(&carried, xml, &[&here, &public], now) {
            Ok(order) => order,
            Err(refusal) => {
                return self
                    .saml_logout_refused(session, ctx, &provider.id, refusal)
                    .await
            }
        };
        match self
            .first_use_everywhere("saml-logout-request", &provider.id, &order.request)
            .await
        {
            Ok(()) => {}
            Err(NotFirstUse::Replayed) => {
                return self
                    .saml_logout_refused(session, ctx, &provider.id, SamlError::Replayed)
                    .await
            }
            Err(NotFirstUse::Unverifiable) => {
                let refusal = LogoutRefusal::ReplayCheckUnavailable;
                self.audit_logout_refused(ctx, &provider.id, refusal).await;
                let reply = Reply::TemporarilyUnavailable;
                return self.reply(session, ctx, reply, Reason::LoginFailed).await;
            }
        }
        self.auth.revoked().end_op_sessions(
            &provider.id,
            Some(&order.name_id),
            order.session_index.as_deref(),
            now,
        );
        // This browser's own session, when it is the one named: its cookie goes now.
        if ctx.session.as_ref().is_some_and(|d| {
            d.identity.idp == provider.id
                && d.saml.as_ref().is_some_and(|s| s.name_id == order.name_id)
        }) {
            if let Some(data) = ctx.session.take() {
                self.end_session(&data, now).await;
            }
            ctx.set_cookies
                .extend(clear_cookies(&self.site.cookie_name, &ctx.cookie_chunks));
        }
        self.audit_login(
            ctx,
            EventKind::Logout,
            &provider.id,
            &order.name_id,
            order.session_index.as_deref(),
            "saml-idp-logout",
        )
        .await;
        match order.answer {
            Some(location) => {
                let response = redirect_response(302, location);
                self.send(session, ctx, response, Reason::Authenticated)
                    .await
            }
            None => self.signed_out(session, ctx).await,
        }
    }

    async fn saml_logout_refused(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        idp: &str,
        refusal: SamlError,
    ) -> Result<bool> {
        self.audit_logout_refused(ctx, idp, LogoutRefusal::Saml(refusal))
            .await;
        let reply = if refusal.is_bad_request() {
            Reply::BadRequest
        } else {
            Reply::SignInRefused
        };
        self.reply(session, ctx, reply, Reason::LoginFailed).await
    }
}
