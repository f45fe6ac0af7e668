//! Which sign-in the login page leads to: straight to the app's only single sign-on provider
//! (as oauth2-proxy and Pomerium do), or a chooser.
//!
//! The chooser stays when the app accepts several providers or local users, when
//! `server.sign_in.auto_redirect` is off, when that one provider is unreachable (the page says
//! so), and after a failed sign-in (`failed=1`), so an error shows instead of a redirect loop.

use std::sync::Arc;

use pingora::proxy::Session;

use super::super::{Gateway, RequestCtx};
use super::common::query_value;
use crate::idp::saml::SamlProvider;
use crate::redirect::safe_return_path;

/// Query parameter the login page gets after a failed sign-in.
pub(super) const FAILED_PARAM: &str = "failed";

/// The provider to go to without a chooser.
pub(super) enum SoleProvider {
    /// An OIDC provider, by id.
    Oidc(String),
    /// A SAML provider.
    Saml(Arc<SamlProvider>),
}

impl Gateway {
    /// The providers the app behind `rd` accepts (`access.identity_providers`), as a test on
    /// a provider id; every provider when the app names none.
    pub(super) fn offered_providers(
        &self,
        ctx: &RequestCtx,
        return_to: &str,
    ) -> impl Fn(&str) -> bool {
        let accepted = ctx
            .host
            .as_deref()
            .and_then(|host| self.router.route(host, return_to))
            .and_then(|app| app.access.identity_providers.clone());
        move |id: &str| {
            accepted
                .as_ref()
                .is_none_or(|ids| ids.iter().any(|i| i == id))
        }
    }

    /// The app's only provider, when the login page should go straight to it.
    pub(super) fn sole_provider(
        &self,
        session: &Session,
        ctx: &RequestCtx,
    ) -> Option<SoleProvider> {
        if !self.site.auto_redirect || query_value(session, FAILED_PARAM).is_some() {
            return None;
        }
        let rd = query_value(session, "rd");
        let return_to = rd.as_deref().and_then(safe_return_path).unwrap_or("/");
        let offered = self.offered_providers(ctx, return_to);
        if self
            .sign_in
            .login
            .local
            .iter()
            .any(|(id, _, _)| offered(id))
        {
            return None;
        }
        let mut oidc = self.sign_in.login.oidc.iter().filter(|p| offered(&p.id));
        let mut saml = self.sign_in.login.saml.iter().filter(|p| offered(&p.id));
        match (oidc.next(), oidc.next(), saml.next(), saml.next()) {
            (Some(only), None, None, None) if only.is_available() => {
                Some(SoleProvider::Oidc(only.id.clone()))
            }
            (None, None, Some(only), None) if only.is_available() => {
                Some(SoleProvider::Saml(only.clone()))
            }
            _ => None,
        }
    }
}
