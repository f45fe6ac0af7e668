//! OpenID Connect relying party (authorization code flow with PKCE), on the `openidconnect`
//! crate: discovery, the authorization request, the code exchange and ID token validation
//! (signature against the OP's JWKS, `iss`, `aud`, `azp`, `exp`, `iat`, `nonce`, and only
//! the algorithms the OP advertises — never `none`).
//!
//! Layout: `flow` is the sign-in (authorization request, callback, code exchange, ID token
//! validation, refresh); `logout` is RP-initiated logout and back-channel logout tokens;
//! `claims` maps verified claims to an identity. This file holds the provider, its discovery
//! and key cache, and the types the session and the proxy keep.

mod claims;
mod flow;
mod logout;
#[cfg(test)]
mod tests;

use std::sync::{Arc, RwLock};

use openidconnect::core::CoreClient;
use openidconnect::{
    reqwest, AuthType, ClientId, ClientSecret, IssuerUrl, ProviderMetadataWithLogout, RedirectUrl,
};
use serde::{Deserialize, Serialize};

use crate::config::{ClaimMapping, IdentityMapping, IdentityProvider, IdentityProviderKind};

pub use claims::mfa_from_amr;
pub use flow::{FlowState, Login};
pub use logout::LogoutTarget;

/// Why an OIDC login failed (audit `detail`, kebab-case); displays as its audit name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.as_str())]
pub enum OidcError {
    /// Discovery has not succeeded (yet).
    Unavailable,
    /// The OP answered the authorization request with an error.
    IdpError,
    /// The code exchange failed (replayed or expired code, wrong PKCE verifier, client auth).
    TokenExchange,
    /// The token response carried no ID token.
    MissingIdToken,
    /// The ID token failed validation (signature, issuer, audience, expiry, nonce, algorithm).
    InvalidIdToken,
    /// The userinfo endpoint failed or answered for another subject.
    Userinfo,
    /// The claims lack what the identity needs (the user id claim).
    Claims,
    /// The OP refused the refresh token (expired, revoked, reused).
    RefreshRefused,
    /// A back-channel logout token failed validation.
    InvalidLogoutToken,
}

impl OidcError {
    /// Kebab-case reason.
    pub fn as_str(self) -> &'static str {
        match self {
            OidcError::Unavailable => "idp-unavailable",
            OidcError::IdpError => "idp-error",
            OidcError::TokenExchange => "token-exchange-failed",
            OidcError::MissingIdToken => "id-token-missing",
            OidcError::InvalidIdToken => "id-token-invalid",
            OidcError::Userinfo => "userinfo-failed",
            OidcError::Claims => "claims-unusable",
            OidcError::RefreshRefused => "refresh-refused",
            OidcError::InvalidLogoutToken => "logout-token-invalid",
        }
    }
}

/// Why discovery failed: the provider stays unavailable (or keeps its last good metadata).
/// Displays the underlying error's text unchanged (it is logged as such).
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The configured `issuer` is not a URL.
    #[error(transparent)]
    Issuer(#[from] url::ParseError),
    /// Fetching or validating the discovery document or the JWKS failed (network, HTTP
    /// status, JSON, or an `issuer` in the document that differs from the configured one).
    #[error(transparent)]
    Fetch(#[from] openidconnect::DiscoveryError<openidconnect::HttpClientError<reqwest::Error>>),
}

/// What a session keeps from the OP: for refresh, RP-initiated and back-channel logout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OidcTokens {
    /// The ID token (`id_token_hint` at logout).
    pub id_token: String,
    /// The OP's subject (`sub`): back-channel logout may name it.
    pub sub: String,
    /// The OP's session id (`sid` claim), when it sends one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op_sid: Option<String>,
    /// Refresh token, when the OP issued one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// Unix seconds when the access token expires (`None`: the OP did not say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
    /// Unix seconds when these tokens were obtained.
    pub obtained_at: u64,
}

impl OidcTokens {
    /// Refresh once less than half the token's life, and at most a minute, is left.
    pub fn needs_refresh(&self, now: u64) -> bool {
        match (self.expires_at, &self.refresh_token) {
            (Some(expires_at), Some(_)) => {
                let life = expires_at.saturating_sub(self.obtained_at);
                let margin = (life / 2).min(60);
                now.saturating_add(margin) >= expires_at
            }
            _ => false,
        }
    }
}

/// One OIDC provider.
pub struct OidcProvider {
    /// Provider id.
    pub id: String,
    /// Name on the login page.
    pub display_name: String,
    issuer: String,
    client_id: String,
    client_secret: Option<String>,
    scopes: Vec<String>,
    /// `client_secret_post` instead of `client_secret_basic`.
    secret_in_body: bool,
    /// Extra authorization parameters (`acr_values`, `prompt`).
    extra_params: Vec<(&'static str, String)>,
    /// Also fetch userinfo at login.
    userinfo: bool,
    /// `acr` values that mean a second factor.
    mfa_acr_values: Vec<String>,
    claims: ClaimMapping,
    mapping: Arc<IdentityMapping>,
    http: reqwest::Client,
    metadata: RwLock<Option<Arc<Metadata>>>,
    /// The OP's keys in jsonwebtoken's form, for logout tokens (refreshed with discovery).
    logout_keys: RwLock<Option<Arc<jsonwebtoken::jwk::JwkSet>>>,
    /// Key refetches forced by an unknown `kid`: at most one a minute, so forged tokens cannot
    /// make Portcullis hammer the OP.
    forced_refetch: super::AtMostEvery,
}

/// Discovery document with the RP-initiated logout field (`end_session_endpoint`).
type Metadata = ProviderMetadataWithLogout;

impl OidcProvider {
    /// Builds the provider; `None` if `provider` is not OIDC.
    /// The provider for a `kind: oidc` entry (`None` for other kinds).
    pub fn new(
        provider: &IdentityProvider,
        mapping: Arc<IdentityMapping>,
    ) -> Result<Option<OidcProvider>, super::ProviderError> {
        let IdentityProviderKind::Oidc {
            issuer,
            client_id,
            client_secret,
            scopes,
            acr_values,
            prompt,
            secret_in_body,
            userinfo,
            mfa_acr_values,
            bearer: _,
        } = &provider.kind
        else {
            return Ok(None);
        };
        let http = super::back_channel_client()?;
        Ok(Some(OidcProvider {
            id: provider.id.clone(),
            display_name: provider.display_name.clone(),
            issuer: issuer.clone(),
            client_id: client_id.clone(),
            client_secret: client_secret.as_ref().map(|s| s.expose().to_string()),
            scopes: scopes
                .iter()
                .filter(|s| s.as_str() != "openid")
                .cloned()
                .collect(),
            secret_in_body: *secret_in_body,
            extra_params: [("acr_values", acr_values), ("prompt", prompt)]
                .into_iter()
                .filter_map(|(name, value)| value.clone().map(|v| (name, v)))
                .collect(),
            userinfo: *userinfo,
            mfa_acr_values: mfa_acr_values.clone(),
            claims: provider.claims.clone(),
            mapping,
            http,
            metadata: RwLock::new(None),
            logout_keys: RwLock::new(None),
            forced_refetch: super::AtMostEvery::new(60),
        }))
    }

    /// Fetches the discovery document and the JWKS; on success they replace the old ones.
    pub async fn discover(&self) -> Result<(), DiscoveryError> {
        let issuer = IssuerUrl::new(self.issuer.clone())?;
        let metadata = Metadata::discover_async(issuer, &self.http).await?;
        // Key by key: one key of a kind jsonwebtoken cannot read (an encryption key, say)
        // must not cost the set its signing keys.
        let keys = serde_json::to_value(metadata.jwks())
            .ok()
            .map(|v| super::signing_keys(&v));
        if let Ok(mut slot) = self.metadata.write() {
            *slot = Some(Arc::new(metadata));
        }
        if let (Some(keys), Ok(mut slot)) = (keys, self.logout_keys.write()) {
            *slot = Some(Arc::new(keys));
        }
        Ok(())
    }

    /// True once discovery has succeeded.
    pub fn is_available(&self) -> bool {
        self.metadata.read().is_ok_and(|m| m.is_some())
    }

    fn client(&self, redirect_uri: &str) -> Result<OidcClient, OidcError> {
        let metadata = self
            .metadata
            .read()
            .ok()
            .and_then(|m| m.clone())
            .ok_or(OidcError::Unavailable)?;
        let redirect =
            RedirectUrl::new(redirect_uri.to_string()).map_err(|_| OidcError::Unavailable)?;
        Ok(CoreClient::from_provider_metadata(
            (*metadata).clone(),
            ClientId::new(self.client_id.clone()),
            self.client_secret.clone().map(ClientSecret::new),
        )
        .set_redirect_uri(redirect)
        .set_auth_type(self.auth_type()))
    }

    /// The token names a key id the cached JWKS does not have.
    fn has_unknown_kid(&self, token: &str) -> bool {
        let Some(kid) = jsonwebtoken::decode_header(token).ok().and_then(|h| h.kid) else {
            return false;
        };
        self.logout_keys
            .read()
            .ok()
            .and_then(|k| k.clone())
            .is_some_and(|keys| keys.find(&kid).is_none())
    }

    /// The OP's keys as of the last discovery (its access tokens verify against them too).
    pub fn jwks(&self) -> Option<Arc<jsonwebtoken::jwk::JwkSet>> {
        self.logout_keys.read().ok().and_then(|k| k.clone())
    }

    /// Discovers again for a key id the cached keys lack, at most once a minute; the new
    /// keys, or `None` when not due or discovery failed.
    pub async fn refetch_keys(&self, now: u64) -> Option<Arc<jsonwebtoken::jwk::JwkSet>> {
        if !self.may_force_refetch(now) {
            return None;
        }
        if let Err(error) = self.discover().await {
            tracing::warn!(idp = %self.id, %error, "rediscovery for an unknown key id failed");
            return None;
        }
        self.jwks()
    }

    /// True at most once a minute.
    fn may_force_refetch(&self, now: u64) -> bool {
        self.forced_refetch.due(now)
    }

    fn auth_type(&self) -> AuthType {
        if self.secret_in_body {
            AuthType::RequestBody
        } else {
            AuthType::BasicAuth
        }
    }
}

type OidcClient = CoreClient<
    openidconnect::EndpointSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointMaybeSet,
    openidconnect::EndpointMaybeSet,
>;
