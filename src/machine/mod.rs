//! Machine clients: bearer tokens (JWT access tokens checked against an issuer's keys,
//! opaque tokens asked about at an introspection endpoint) and service-account API keys.
//!
//! Plain Rust, no Pingora: the shell hands in the request's headers and gets back a caller —
//! an [`Identity`] with a session-like frame, so that the same kill switches, policy, entity
//! scope, rate limits, assertion and audit apply as to a person — or a closed [`Refusal`].
//!
//! Layout: `jwt` verifies JWTs and keeps issuers' keys; `introspect` is RFC 7662; `accounts`
//! holds the service accounts; `cache` remembers verified tokens until they expire, so a
//! repeat request costs one hash and one lookup.

mod accounts;
mod cache;
mod introspect;
mod jwt;
#[cfg(test)]
mod tests;

use std::net::IpAddr;
use std::sync::Arc;

use crate::config::{Accept, Config, IdentityMapping, IdentityProviderKind};
use crate::identity::{AuthMethod, Identity};
use crate::idp::oidc::OidcProvider;
use crate::session::SessionData;

use accounts::ServiceAccounts;
use cache::VerifiedTokens;
use introspect::Introspector;
use jwt::{JwtVerifier, KeySource};

/// Longest bearer token read; longer ones are refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// A credential as the request presents it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presented<'a> {
    /// `Authorization: Bearer <token>` that is not an API key.
    Bearer(&'a str),
    /// `X-API-Key: pck_…`, or an API key sent as a bearer token.
    ApiKey(&'a str),
}

impl Presented<'_> {
    /// The metric label of what was presented.
    pub fn kind(&self) -> &'static str {
        match self {
            Presented::Bearer(_) => "bearer",
            Presented::ApiKey(_) => "api-key",
        }
    }
}

/// Why a machine credential was refused: a closed set whose kebab-case names are the audit
/// `detail` and the `result` label of `portcullis_credentials_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr, strum::EnumIter)]
#[strum(serialize_all = "kebab-case")]
pub enum Refusal {
    /// Two `Authorization` headers, two `X-API-Key` headers, or both kinds at once.
    CredentialsAmbiguous,
    /// The app does not take this kind of credential.
    CredentialNotAccepted,
    /// Not a JWT, or its header or payload does not parse.
    TokenMalformed,
    /// Longer than [`MAX_TOKEN_BYTES`].
    TokenTooLarge,
    /// `iss` names no configured issuer (and no introspection endpoint is configured).
    IssuerUnknown,
    /// `alg` is not among the issuer's algorithms, or does not fit the key.
    AlgorithmRefused,
    /// `typ` says it is not an access token.
    TypeRefused,
    /// `kid` names no key of the issuer, even after refetching its keys.
    KeyUnknown,
    /// The signature does not verify.
    SignatureInvalid,
    /// `exp` has passed.
    TokenExpired,
    /// `nbf` (or `iat`) is in the future.
    TokenNotYetValid,
    /// `exp` is missing.
    ExpiryMissing,
    /// `aud` names none of the configured audiences.
    AudienceMismatch,
    /// `iss` differs from the configured issuer.
    IssuerMismatch,
    /// A required scope is missing (403).
    InsufficientScope,
    /// The claims give no user id.
    ClaimsUnusable,
    /// The introspection endpoint says the token is not active.
    TokenInactive,
    /// The issuer's keys or the introspection endpoint could not be reached (503).
    CheckUnavailable,
    /// Not `pck_…` with the right shape.
    ApiKeyMalformed,
    /// The API key's checksum does not match.
    ApiKeyChecksum,
    /// No service account has this key.
    ApiKeyUnknown,
    /// The service account's `expires` has passed.
    ApiKeyExpired,
    /// The service account's IP allowlist does not admit the client (403).
    IpNotAllowed,
    /// An operator cut off sessions and tokens issued before now (`revoke`).
    Revoked,
}

impl Refusal {
    /// The kebab-case name.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// What a client is told (RFC 6750 `error_description`): fixed text, never the token.
    pub fn description(self) -> &'static str {
        match self {
            Refusal::CredentialsAmbiguous => {
                "send one credential: one Authorization header or one X-API-Key"
            }
            Refusal::CredentialNotAccepted => {
                "this application does not accept this kind of credential"
            }
            Refusal::TokenMalformed => "the token is malformed",
            Refusal::TokenTooLarge => "the token is too large",
            Refusal::IssuerUnknown => "the token's issuer is not trusted here",
            Refusal::AlgorithmRefused => "the token's signing algorithm is not accepted",
            Refusal::TypeRefused => "the token is not an access token",
            Refusal::KeyUnknown => "the token is signed with an unknown key",
            Refusal::SignatureInvalid => "the token's signature is invalid",
            Refusal::TokenExpired => "the token has expired",
            Refusal::TokenNotYetValid => "the token is not valid yet",
            Refusal::ExpiryMissing => "the token has no expiry",
            Refusal::AudienceMismatch => "the token is not meant for this application",
            Refusal::IssuerMismatch => "the token's issuer does not match",
            Refusal::InsufficientScope => "the token lacks a required scope",
            Refusal::ClaimsUnusable => "the token does not name its subject",
            Refusal::TokenInactive => "the token is not active",
            Refusal::CheckUnavailable => "the credential cannot be checked right now",
            Refusal::ApiKeyMalformed => "the API key is malformed",
            Refusal::ApiKeyChecksum => {
                "the API key's checksum does not match (mistyped or truncated)"
            }
            Refusal::ApiKeyUnknown => "the API key is not valid",
            Refusal::ApiKeyExpired => "the API key has expired",
            Refusal::IpNotAllowed => "the API key is not accepted from this address",
            Refusal::Revoked => "the token was revoked",
        }
    }
}

/// A verified machine caller, shaped like a session so that every later step treats it as
/// one: `sid` names the credential (`api-key:<account>` or `bearer:<hash prefix>`, never the
/// secret), `issued_at` is the token's `iat` (an operator's `revoke` cuts older tokens off),
/// `expires_at` its `exp`.
pub type Caller = SessionData;

/// Everything machine authentication needs, built with each configuration.
pub struct MachineAuth {
    issuers: Vec<JwtVerifier>,
    introspectors: Vec<Introspector>,
    accounts: ServiceAccounts,
    verified: VerifiedTokens,
}

/// How a credential was accepted (the metric's `result`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// Checked now (signature, introspection call or key hash).
    Checked,
    /// Found among the tokens verified before.
    Cached,
}

impl MachineAuth {
    /// Builds the issuers, introspection clients and service accounts of `config`; an OIDC
    /// provider's `bearer` shares the keys its discovery keeps (`oidc`).
    pub fn new(
        config: &Config,
        oidc: &[Arc<OidcProvider>],
        mapping: &Arc<IdentityMapping>,
    ) -> Result<MachineAuth, crate::idp::ProviderError> {
        let mut issuers = Vec::new();
        let mut introspectors = Vec::new();
        for provider in &config.identity_providers {
            match &provider.kind {
                IdentityProviderKind::Jwt(settings) => issuers.push(JwtVerifier::new(
                    provider,
                    &settings.issuer,
                    settings.rules.clone(),
                    KeySource::fetched(settings)?,
                    mapping.clone(),
                )),
                IdentityProviderKind::Oidc {
                    issuer,
                    bearer: Some(rules),
                    ..
                } => {
                    if let Some(op) = oidc.iter().find(|p| p.id == provider.id) {
                        issuers.push(JwtVerifier::new(
                            provider,
                            issuer,
                            (**rules).clone(),
                            KeySource::Oidc(op.clone()),
                            mapping.clone(),
                        ));
                    }
                }
                IdentityProviderKind::Introspection(settings) => {
                    introspectors.push(Introspector::new(provider, settings, mapping.clone())?)
                }
                _ => {}
            }
        }
        Ok(MachineAuth {
            issuers,
            introspectors,
            accounts: ServiceAccounts::new(&config.service_accounts, mapping),
            verified: VerifiedTokens::new(cache::CAPACITY),
        })
    }

    /// No issuers, endpoints or accounts (until a configuration names some).
    pub fn empty() -> MachineAuth {
        MachineAuth {
            issuers: Vec::new(),
            introspectors: Vec::new(),
            accounts: ServiceAccounts::new(&[], &IdentityMapping::default()),
            verified: VerifiedTokens::new(cache::CAPACITY),
        }
    }

    /// Authenticates what the request presented, for an app that takes `accept`, at `now`
    /// (unix seconds).
    pub async fn authenticate(
        &self,
        presented: Presented<'_>,
        accept: Accept,
        client_ip: Option<IpAddr>,
        now: u64,
    ) -> Result<(Caller, Accepted), Refusal> {
        match presented {
            Presented::ApiKey(key) if accept.api_key => self
                .accounts
                .authenticate(key, client_ip, now)
                .map(|caller| (caller, Accepted::Checked)),
            Presented::Bearer(token) if accept.bearer => self.bearer(token, now).await,
            _ => Err(Refusal::CredentialNotAccepted),
        }
    }

    async fn bearer(&self, token: &str, now: u64) -> Result<(Caller, Accepted), Refusal> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(Refusal::TokenTooLarge);
        }
        let digest = cache::digest(token);
        if let Some(known) = self.verified.get(&digest, now) {
            return known.map(|caller| (caller, Accepted::Cached));
        }
        let checked = match jwt::peek_issuer(token) {
            Some(iss) => match self.issuers.iter().find(|v| v.issuer() == iss) {
                Some(verifier) => verifier.verify(token, &digest, now).await,
                None => {
                    self.introspect(token, &digest, now, Refusal::IssuerUnknown)
                        .await
                }
            },
            None => {
                self.introspect(token, &digest, now, Refusal::TokenMalformed)
                    .await
            }
        };
        match checked {
            Ok((caller, until)) => {
                self.verified
                    .remember(digest, Ok(caller.clone()), until, now);
                Ok((caller, Accepted::Checked))
            }
            Err((refusal, Some(until))) => {
                self.verified.remember(digest, Err(refusal), until, now);
                Err(refusal)
            }
            Err((refusal, None)) => Err(refusal),
        }
    }

    /// Opaque tokens (and JWTs of no known issuer) go to the introspection endpoints, in
    /// order; without one, `otherwise`.
    async fn introspect(
        &self,
        token: &str,
        digest: &[u8; 32],
        now: u64,
        otherwise: Refusal,
    ) -> Result<(Caller, u64), (Refusal, Option<u64>)> {
        let mut last = Err((otherwise, None));
        for introspector in &self.introspectors {
            last = introspector.check(token, digest, now).await;
            if last.is_ok() {
                break;
            }
        }
        last
    }

    /// True when bearer tokens or API keys can be checked at all.
    pub fn is_configured(&self) -> bool {
        !self.issuers.is_empty() || !self.introspectors.is_empty() || !self.accounts.is_empty()
    }

    /// Verified tokens held (for the cache's bound in tests and metrics).
    pub fn cached_tokens(&self) -> usize {
        self.verified.len()
    }
}

/// Reads the credential an app that takes `accept` looks for: `Authorization: Bearer` (a
/// token, or a `pck_` API key) and `X-API-Key`. A kind the app does not take is not
/// Portcullis's to read (an upstream may use these headers for its own purposes): it is left
/// alone. With the credential, the name of the header that carried it (to be removed before
/// the upstream). `Ok(None)`: no credential for this app (another `Authorization` scheme is
/// ignored).
pub fn presented(
    headers: &http::HeaderMap,
    accept: Accept,
) -> Result<Option<(Presented<'_>, &'static str)>, Refusal> {
    let mut bearer = None;
    let mut authorization = headers.get_all(http::header::AUTHORIZATION).iter();
    if let Some(value) = authorization.next() {
        if authorization.next().is_some() {
            return Err(Refusal::CredentialsAmbiguous);
        }
        bearer = match bearer_token(value.as_bytes()) {
            Ok(Some(token)) if token.starts_with(crate::apikey::PREFIX) => {
                accept.api_key.then_some(Presented::ApiKey(token))
            }
            Ok(Some(token)) => accept.bearer.then_some(Presented::Bearer(token)),
            Ok(None) => None,
            Err(refusal) if accept.bearer => return Err(refusal),
            Err(_) => None,
        };
    }
    let mut key = None;
    if accept.api_key {
        let mut keys = headers.get_all("x-api-key").iter();
        if let Some(value) = keys.next() {
            if keys.next().is_some() {
                return Err(Refusal::CredentialsAmbiguous);
            }
            let text =
                std::str::from_utf8(value.as_bytes()).map_err(|_| Refusal::ApiKeyMalformed)?;
            key = Some(Presented::ApiKey(text.trim()));
        }
    }
    match (bearer, key) {
        (Some(_), Some(_)) => Err(Refusal::CredentialsAmbiguous),
        (Some(bearer), None) => Ok(Some((bearer, "authorization"))),
        (None, Some(key)) => Ok(Some((key, "x-api-key"))),
        (None, None) => Ok(None),
    }
}

/// `Bearer <token68>` (scheme case-insensitive, RFC 6750 §2.1); `None` for other schemes.
fn bearer_token(value: &[u8]) -> Result<Option<&str>, Refusal> {
    let text = std::str::from_utf8(value).map_err(|_| Refusal::TokenMalformed)?;
    let (scheme, rest) = text.split_once(' ').unwrap_or((text, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Ok(None);
    }
    let token = rest.trim_matches(' ');
    let token68 = |b: u8| b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b);
    if token.is_empty() || !token.bytes().all(token68) {
        return Err(Refusal::TokenMalformed);
    }
    Ok(Some(token))
}

/// A caller frame for `identity`, named `sid`, valid from `issued_at` to `expires_at`.
fn caller(identity: Arc<Identity>, sid: String, issued_at: u64, expires_at: u64) -> Caller {
    SessionData {
        sid,
        issued_at,
        expires_at,
        last_seen: issued_at,
        identity,
        oidc: None,
        saml: None,
        stepped_up: false,
    }
}

/// The scopes a token grants: `scope` (space-separated, RFC 8693/9068) or `scp` (an array
/// or a string, as Entra and Okta send).
fn scopes(claims: &serde_json::Value) -> Vec<String> {
    let words = |s: &str| {
        s.split(' ')
            .filter(|w| !w.is_empty())
            .map(str::to_string)
            .collect()
    };
    match (claims.get("scope"), claims.get("scp")) {
        (Some(serde_json::Value::String(s)), _) => words(s),
        (_, Some(serde_json::Value::String(s))) => words(s),
        (_, Some(serde_json::Value::Array(items))) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

/// The identity of a token's claims: the provider's claim mapping and the `identity:`
/// rules, as for a person; the client (`client_id`, else `azp`, Okta's `cid` or Entra v1's
/// `appid`) and the scopes (as
/// `custom.scopes`) besides. A token without `sub` (some client-credentials tokens) is its
/// client's.
fn token_identity(
    provider: &str,
    method: AuthMethod,
    claims: &serde_json::Value,
    mapping: &crate::config::ClaimMapping,
    rules: &IdentityMapping,
    granted: &[String],
) -> Result<Identity, Refusal> {
    let client = ["client_id", "azp", "cid", "appid"]
        .iter()
        .find_map(|name| claims.get(*name).and_then(|v| v.as_str()))
        .filter(|c| !c.is_empty() && c.len() <= 512)
        .map(str::to_string);
    let source = crate::identity::Assertions {
        idp: provider,
        auth_method: method,
        claims,
        mfa: false,
    };
    let mut identity = match crate::identity::from_claims(&source, mapping, rules) {
        Ok(identity) => identity,
        Err(_) if mapping.user_id.0 == "sub" && claims.get("sub").is_none() => {
            let Some(client) = &client else {
                return Err(Refusal::ClaimsUnusable);
            };
            let mut with_sub = claims.clone();
            with_sub["sub"] = serde_json::Value::from(client.as_str());
            let source = crate::identity::Assertions {
                claims: &with_sub,
                ..source
            };
            crate::identity::from_claims(&source, mapping, rules)
                .map_err(|_| Refusal::ClaimsUnusable)?
        }
        Err(_) => return Err(Refusal::ClaimsUnusable),
    };
    identity.client_id = client;
    if !granted.is_empty() {
        identity
            .custom
            .insert("scopes".to_string(), granted.join(" "));
    }
    Ok(identity)
}

/// Every required scope is granted.
fn has_scopes(granted: &[String], required: &[String]) -> bool {
    required.iter().all(|r| granted.iter().any(|g| g == r))
}

/// `sid` of a bearer token: `bearer:` and 96 bits of its SHA-256, in hex (audit and the
/// assertion's `sid` name the token without revealing it).
fn bearer_sid(digest: &[u8; 32]) -> String {
    format!("bearer:{}", crate::audit::hex(&digest[..12]))
}
