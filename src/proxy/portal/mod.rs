//! Portcullis's own endpoints under the reserved prefix: sign-in, whoami, sign-out.
//! Never forwarded. State-changing requests (POST) pass a same-origin check and a
//! double-submit CSRF token.

mod common;
mod console;
mod logout;
mod oidc;
mod pages;
mod saml;
mod signin;

pub use common::unix_now;

use pingora::prelude::*;
use pingora::proxy::Session;

use super::{Gateway, RequestCtx};
use crate::policy::Reason;
use crate::respond::Reply;
use crate::route::Endpoint;
use common::query_value;
use signin::SoleProvider;

impl Gateway {
    /// Dispatches one request under the reserved prefix.
    /// One of Portcullis's own endpoints, by method.
    pub(super) async fn portal(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        endpoint: Endpoint,
    ) -> Result<bool> {
        let method = session.req_header().method.clone();
        match (method.as_str(), endpoint) {
            ("GET" | "HEAD", Endpoint::Login) => self.sign_in_start(session, ctx).await,
            ("POST", Endpoint::Login) => self.login_submit(session, ctx).await,
            ("GET" | "HEAD", Endpoint::Logout) => self.logout_page(session, ctx).await,
            ("POST", Endpoint::Logout) => self.logout(session, ctx).await,
            ("GET" | "HEAD", Endpoint::SignedOut) => self.signed_out(session, ctx).await,
            ("GET" | "HEAD", Endpoint::Whoami) => self.whoami(session, ctx).await,
            ("GET" | "HEAD", Endpoint::Jwks) => self.jwks(session, ctx).await,
            ("GET", Endpoint::OidcCallback) => self.oidc_callback(session, ctx).await,
            ("POST", Endpoint::OidcBackchannelLogout) => {
                self.backchannel_logout(session, ctx).await
            }
            ("POST", Endpoint::SamlAcs) => self.saml_acs(session, ctx).await,
            ("GET" | "HEAD", Endpoint::SamlMetadata) => self.saml_metadata(session, ctx).await,
            ("GET", Endpoint::SamlSlo) => self.saml_slo(session, ctx).await,
            ("POST", Endpoint::SamlSlo) => self.saml_slo_post(session, ctx).await,
            (_, Endpoint::Console) => self.console(session, ctx).await,
            _ => {
                self.reply(session, ctx, Reply::NotFound, Reason::UnknownEndpoint)
                    .await
            }
        }
    }

    /// `GET login`: the provider named by `?idp=`, else the only one (auto-redirect), else
    /// the chooser page.
    async fn sign_in_start(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let idp = query_value(session, "idp").unwrap_or_default();
        let step_up = query_value(session, "mfa").as_deref() == Some("1");
        if self.sign_in.login.oidc.iter().any(|p| p.id == idp) {
            self.oidc_start(session, ctx, &idp, step_up).await
        } else if let Some(provider) = self.sign_in.login.saml.iter().find(|p| p.id == idp) {
            self.saml_start(session, ctx, provider.clone(), step_up)
                .await
        } else {
            match self.sole_provider(session, ctx) {
                Some(SoleProvider::Oidc(id)) => self.oidc_start(session, ctx, &id, step_up).await,
                Some(SoleProvider::Saml(provider)) => {
                    self.saml_start(session, ctx, provider, step_up).await
                }
                None => self.login_page(session, ctx, None).await,
            }
        }
    }
}
