//! The claim set signed into `X-Portcullis-Assertion`, built from the authenticated identity
//! and filtered by the app's allowlists (`identity_headers.roles`, `identity_headers.custom`).
//!
//! The claim names and meanings are a contract with backends: `docs/backend-integration.md`.

use std::collections::BTreeMap;

use serde::Serialize;

use super::Signer;
use crate::config::{App, UserType};
use crate::identity::{AuthMethod, Identity};

/// The claim set (PRODUCT.md, "Upstream headers"); `docs/backend-integration.md` documents it.
#[derive(Serialize)]
pub(super) struct Claims<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    user_type: UserType,
    roles: Vec<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    entity: Option<&'a str>,
    custom: BTreeMap<&'a str, &'a str>,
    idp: &'a str,
    amr: &'static [&'static str],
    auth_method: AuthMethod,
    /// A machine client's id (RFC 9068 `client_id`): the token's client, the service account.
    #[serde(skip_serializing_if = "Option::is_none")]
    client_id: Option<&'a str>,
    sid: &'a str,
    iat: u64,
    exp: u64,
    jti: String,
}

impl<'a> Claims<'a> {
    pub(super) fn new(
        signer: &'a Signer,
        sid: &'a str,
        app: &'a App,
        identity: &'a Identity,
        now: u64,
    ) -> Self {
        let allowed_custom = app.identity_headers.custom.as_deref();
        Claims {
            iss: &signer.issuer,
            aud: &app.id,
            sub: &identity.user_id,
            email: identity.email.as_deref(),
            name: identity.name.as_deref(),
            user_type: identity.user_type,
            roles: allowed_roles(app, identity).collect(),
            entity: identity.entity.as_deref(),
            custom: identity
                .custom
                .iter()
                .filter(|(key, _)| allowed_custom.is_none_or(|allow| allow.contains(*key)))
                .map(|(key, value)| (key.as_str(), value.as_str()))
                .collect(),
            idp: &identity.idp,
            amr: amr(identity),
            auth_method: identity.auth_method,
            client_id: identity.client_id.as_deref(),
            sid,
            iat: now,
            exp: now.saturating_add(signer.ttl_secs),
            jti: format!("{:032x}", rand::random::<u128>()),
        }
    }
}

/// RFC 8176 `amr`: `pwd` stands for an interactive sign-in (OIDC, SAML, local; the IdP chose
/// the first factor), `mfa` is added when a second factor was reported. API keys and bearer
/// JWTs are not interactive: no `pwd`.
pub(super) fn amr(identity: &Identity) -> &'static [&'static str] {
    let interactive = matches!(
        identity.auth_method,
        AuthMethod::Oidc | AuthMethod::Saml | AuthMethod::Local
    );
    match (interactive, identity.mfa) {
        (true, true) => &["pwd", "mfa"],
        (true, false) => &["pwd"],
        (false, true) => &["mfa"],
        (false, false) => &[],
    }
}

/// The identity's roles that the app lets through (`identity_headers.roles`), in order.
pub(super) fn allowed_roles<'a>(
    app: &'a App,
    identity: &'a Identity,
) -> impl Iterator<Item = &'a str> {
    let allow = app.identity_headers.roles.as_deref();
    identity
        .roles
        .iter()
        .filter(move |role| allow.is_none_or(|allow| allow.contains(*role)))
        .map(String::as_str)
}
