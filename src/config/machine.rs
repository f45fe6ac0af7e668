//! Machine clients as data: bearer-token issuers (`kind: jwt`, an OIDC provider's `bearer`,
//! `kind: oauth2-introspection`), service accounts with API keys, and which credentials an
//! app accepts.

use std::time::Duration;

use url::Url;

use super::{IpAllowlist, Secret, UserType};

/// The algorithms a bearer JWT may be signed with when `algorithms` is not set: asymmetric
/// only (a JWKS holds public keys; HMAC against one would be alg confusion).
pub const DEFAULT_ALGORITHMS: [jsonwebtoken::Algorithm; 4] = [
    jsonwebtoken::Algorithm::RS256,
    jsonwebtoken::Algorithm::PS256,
    jsonwebtoken::Algorithm::ES256,
    jsonwebtoken::Algorithm::EdDSA,
];

/// The pseudo-provider id of service accounts (`Identity.idp`, `provider` matchers).
pub const SERVICE_ACCOUNTS_IDP: &str = "service-accounts";

/// What a bearer token must show, whoever checks it (JWT signature or introspection).
#[derive(Debug, Clone)]
pub struct BearerRules {
    /// `aud` must name one of these (empty: introspection without an audience check).
    pub audiences: Vec<String>,
    /// JWS algorithms accepted (asymmetric only).
    pub algorithms: Vec<jsonwebtoken::Algorithm>,
    /// Every one of these must be among the token's scopes (`scope` or `scp`).
    pub required_scopes: Vec<String>,
    /// Tolerated clock difference for `exp`, `nbf` and `iat`.
    pub clock_skew: Duration,
}

/// `kind: jwt`: an issuer of JWT access tokens, checked against its JWKS.
#[derive(Debug, Clone)]
pub struct JwtIssuerSettings {
    /// Exactly as in the tokens' `iss`.
    pub issuer: String,
    /// Where the keys are; `None`: from the issuer's OIDC discovery document.
    pub jwks_uri: Option<Url>,
    /// What the tokens must show.
    pub rules: BearerRules,
}

/// `kind: oauth2-introspection`: opaque tokens asked about at an RFC 7662 endpoint.
#[derive(Debug, Clone)]
pub struct IntrospectionSettings {
    /// The introspection endpoint.
    pub endpoint: Url,
    /// This client's id at the authorization server.
    pub client_id: String,
    /// Its secret.
    pub client_secret: Secret,
    /// `client_secret_post` instead of HTTP Basic.
    pub secret_in_body: bool,
    /// The answer's `iss`, when set, must equal this.
    pub issuer: Option<String>,
    /// What an active token must show (`algorithms` unused).
    pub rules: BearerRules,
    /// Longest time a positive answer is reused (never past the token's `exp`).
    pub cache_ttl: Duration,
    /// Longest wait for the endpoint; slower is a refusal (503).
    pub timeout: Duration,
}

/// `service_accounts[]`: a machine client with API keys.
#[derive(Debug, Clone)]
pub struct ServiceAccount {
    /// The account's id (the identity's user id).
    pub id: String,
    /// HMAC-SHA-256 digests of its keys (`pck-v1:` hashes, decoded); two during a rotation.
    pub key_hashes: Vec<[u8; 32]>,
    /// Display name.
    pub name: Option<String>,
    /// Contact address, forwarded like a user's.
    pub email: Option<String>,
    /// Roles.
    pub roles: Vec<String>,
    /// Tenant.
    pub entity: Option<String>,
    /// Internal or external (default external).
    pub user_type: UserType,
    /// Scopes, forwarded as `custom.scopes`.
    pub scopes: Vec<String>,
    /// Addresses the keys are accepted from (enforce mode: elsewhere 403).
    pub ip_allowlist: Option<IpAllowlist>,
    /// Unix seconds after which the keys are refused.
    pub expires: Option<u64>,
}

/// `apps[].accept`: which credentials an app takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accept {
    /// Session cookies (browser sign-in).
    pub session: bool,
    /// `Authorization: Bearer` access tokens (JWT or introspected).
    pub bearer: bool,
    /// Service-account API keys.
    pub api_key: bool,
}

impl Default for Accept {
    fn default() -> Self {
        Accept {
            session: true,
            bearer: false,
            api_key: false,
        }
    }
}

impl Accept {
    /// The app takes bearer tokens or API keys.
    pub fn machines(&self) -> bool {
        self.bearer || self.api_key
    }
}
