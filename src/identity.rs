//! The identity of an authenticated user, as every later stage sees it.
//!
//! Built once at login (from IdP claims, SAML attributes or a local user entry) and stored
//! in the encrypted session; never recomputed per request.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::UserType;

/// How the user authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuthMethod {
    /// OpenID Connect.
    Oidc,
    /// SAML 2.0.
    Saml,
    /// A user listed in the config.
    Local,
    /// A service account's API key.
    ApiKey,
    /// A bearer JWT from a trusted issuer.
    BearerJwt,
}

/// Who is making the request (PRODUCT.md, "The model").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// Stable user id at the IdP.
    pub user_id: String,
    /// E-mail address, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Display name, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Internal staff or external user.
    pub user_type: UserType,
    /// Roles.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Tenant / organisation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entity: Option<String>,
    /// Extra values forwarded to the backend.
    #[serde(default)]
    pub custom: BTreeMap<String, String>,
    /// Identity provider id.
    pub idp: String,
    /// How the user signed in.
    pub auth_method: AuthMethod,
    /// A second factor was used.
    #[serde(default)]
    pub mfa: bool,
}
