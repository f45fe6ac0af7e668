//! OpenID Connect relying party (authorization code flow with PKCE), on the `openidconnect`
//! crate: discovery, the authorization request, the code exchange and ID token validation
//! (signature against the OP's JWKS, `iss`, `aud`, `azp`, `exp`, `iat`, `nonce`, and only
//! the algorithms the OP advertises — never `none`).

use std::sync::{Arc, RwLock};

use base64::Engine;
use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreIdToken};
use openidconnect::{
    reqwest, AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce,
    OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope, TokenResponse,
};
use openidconnect::{AuthType, LogoutRequest, PostLogoutRedirectUrl, ProviderMetadataWithLogout};
use serde::{Deserialize, Serialize};

use crate::config::{ClaimMapping, IdentityMapping, IdentityProvider, IdentityProviderKind};
use crate::identity::{AuthMethod, Identity};

/// Why an OIDC login failed (audit `detail`, kebab-case).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OidcFailure {
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

impl OidcFailure {
    /// Kebab-case reason.
    pub fn as_str(self) -> &'static str {
        match self {
            OidcFailure::Unavailable => "idp-unavailable",
            OidcFailure::IdpError => "idp-error",
            OidcFailure::TokenExchange => "token-exchange-failed",
            OidcFailure::MissingIdToken => "id-token-missing",
            OidcFailure::InvalidIdToken => "id-token-invalid",
            OidcFailure::Userinfo => "userinfo-failed",
            OidcFailure::Claims => "claims-unusable",
            OidcFailure::RefreshRefused => "refresh-refused",
            OidcFailure::InvalidLogoutToken => "logout-token-invalid",
        }
    }
}

/// What survives the round trip to the OP, in an encrypted, short-lived cookie.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FlowState {
    /// Provider id.
    pub idp: String,
    /// OAuth 2.0 `state` (CSRF protection of the callback).
    pub state: String,
    /// OIDC `nonce` (binds the ID token to this attempt).
    pub nonce: String,
    /// PKCE code verifier.
    pub verifier: String,
    /// Where the user goes afterwards (already validated).
    pub return_to: String,
    /// The redirect URI used (the callback on the host where the login started).
    pub redirect_uri: String,
    /// Unix seconds when the attempt began.
    pub started: u64,
    /// The attempt asks for MFA (an app required it).
    #[serde(default)]
    pub step_up: bool,
}

/// A successful sign-in: the identity and what the session keeps for later.
#[derive(Debug)]
pub struct Login {
    /// Who signed in (claims mapped by the `claims:` and `identity:` rules).
    pub identity: Identity,
    /// Tokens and ids the session keeps (encrypted, never forwarded).
    pub tokens: OidcTokens,
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

/// What a valid back-channel logout token names: sessions to end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutTarget {
    /// The OP's subject, when named.
    pub sub: Option<String>,
    /// The OP's session id, when named.
    pub op_sid: Option<String>,
    /// Token id (replays are refused).
    pub jti: String,
    /// Token expiry, for the replay memory.
    pub exp: u64,
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
    /// Unix seconds of the last key refetch forced by an unknown `kid` (at most one a minute,
    /// so forged tokens cannot make Portcullis hammer the OP).
    last_forced_refetch: std::sync::atomic::AtomicU64,
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
            last_forced_refetch: std::sync::atomic::AtomicU64::new(0),
        }))
    }

    /// Fetches the discovery document and the JWKS; on success they replace the old ones.
    pub async fn discover(&self) -> Result<(), String> {
        let issuer = IssuerUrl::new(self.issuer.clone()).map_err(|e| e.to_string())?;
        let metadata = Metadata::discover_async(issuer, &self.http)
            .await
            .map_err(|e| e.to_string())?;
        let keys = serde_json::to_value(metadata.jwks())
            .ok()
            .and_then(|v| serde_json::from_value::<jsonwebtoken::jwk::JwkSet>(v).ok());
        if let Ok(mut slot) = self.metadata.write() {
            *slot = Some(Arc::new(metadata));
        }
        if let (Some(keys), Ok(mut slot)) = (keys, self.logout_keys.write()) {
            *slot = Some(Arc::new(keys));
        }
        Ok(())
    }

    /// Where to send the browser to end its session at the OP too (RP-initiated logout), when
    /// the OP has an `end_session_endpoint`.
    pub fn logout_url(
        &self,
        id_token: Option<&str>,
        post_logout_redirect_uri: &str,
    ) -> Option<String> {
        let metadata = self.metadata.read().ok()?.clone()?;
        let endpoint = metadata
            .additional_metadata()
            .end_session_endpoint
            .clone()?;
        let mut request =
            LogoutRequest::from(endpoint).set_client_id(ClientId::new(self.client_id.clone()));
        if let Some(token) = id_token.and_then(|t| t.parse::<CoreIdToken>().ok()) {
            request = request.set_id_token_hint(&token);
        }
        if let Ok(uri) = PostLogoutRedirectUrl::new(post_logout_redirect_uri.to_string()) {
            request = request.set_post_logout_redirect_uri(uri);
        }
        Some(request.http_get_url().to_string())
    }

    /// True once discovery has succeeded.
    pub fn is_available(&self) -> bool {
        self.metadata.read().is_ok_and(|m| m.is_some())
    }

    fn client(&self, redirect_uri: &str) -> Result<OidcClient, OidcFailure> {
        let metadata = self
            .metadata
            .read()
            .ok()
            .and_then(|m| m.clone())
            .ok_or(OidcFailure::Unavailable)?;
        let redirect =
            RedirectUrl::new(redirect_uri.to_string()).map_err(|_| OidcFailure::Unavailable)?;
        Ok(CoreClient::from_provider_metadata(
            (*metadata).clone(),
            ClientId::new(self.client_id.clone()),
            self.client_secret.clone().map(ClientSecret::new),
        )
        .set_redirect_uri(redirect)
        .set_auth_type(self.auth_type()))
    }

    /// The authorization request: where to send the browser, and what to remember.
    /// `step_up`: the app needs MFA the session lacks, so ask the OP to authenticate again
    /// (`prompt=login`) with the provider's `mfa_acr_values`.
    pub fn start(
        &self,
        redirect_uri: &str,
        return_to: &str,
        now: u64,
        step_up: bool,
    ) -> Result<(String, FlowState), OidcFailure> {
        let client = self.client(redirect_uri)?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .add_scopes(self.scopes.iter().map(|s| Scope::new(s.clone())))
            .set_pkce_challenge(challenge);
        if step_up {
            request = request.add_extra_param("prompt", "login");
            if !self.mfa_acr_values.is_empty() {
                request = request.add_extra_param("acr_values", self.mfa_acr_values.join(" "));
            }
            for (name, value) in &self.extra_params {
                if !matches!(*name, "prompt" | "acr_values") {
                    request = request.add_extra_param(*name, value.clone());
                }
            }
        } else {
            for (name, value) in &self.extra_params {
                request = request.add_extra_param(*name, value.clone());
            }
        }
        let (url, state, nonce) = request.url();
        let flow = FlowState {
            idp: self.id.clone(),
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            verifier: verifier.secret().clone(),
            return_to: return_to.to_string(),
            redirect_uri: redirect_uri.to_string(),
            started: now,
            step_up,
        };
        Ok((url.to_string(), flow))
    }

    /// Whether a step-up sign-in can ask this OP for MFA (it has `mfa_acr_values`).
    pub fn can_step_up(&self) -> bool {
        !self.mfa_acr_values.is_empty()
    }

    /// Exchanges the code, validates the ID token, reads userinfo when configured, and maps
    /// the claims to an identity.
    pub async fn finish(
        &self,
        flow: &FlowState,
        code: &str,
        now: u64,
    ) -> Result<Login, OidcFailure> {
        let client = self.client(&flow.redirect_uri)?;
        let request = client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .map_err(|_| OidcFailure::Unavailable)?;
        let response = request
            .set_pkce_verifier(PkceCodeVerifier::new(flow.verifier.clone()))
            .request_async(&self.http)
            .await
            .map_err(|e| {
                tracing::warn!(idp = %self.id, error = ?e, "OIDC code exchange failed");
                OidcFailure::TokenExchange
            })?;
        let id_token = response.id_token().ok_or(OidcFailure::MissingIdToken)?;
        let nonce = Nonce::new(flow.nonce.clone());
        let mut claims = match self.verified_claims(&client, id_token, &nonce) {
            Ok(claims) => claims,
            // The OP may have rotated its keys since the last discovery: refetch once (rate
            // limited) and validate again.
            Err(failure) if self.has_unknown_kid(&id_token.to_string()) => {
                if !self.may_force_refetch(now) || self.discover().await.is_err() {
                    return Err(failure);
                }
                let client = self.client(&flow.redirect_uri)?;
                self.verified_claims(&client, id_token, &nonce)?
            }
            Err(failure) => return Err(failure),
        };
        if self.userinfo {
            let info = self.userinfo_claims(&client, &response, &claims).await?;
            merge_under(&mut claims, info);
        }
        let identity = self.identity_from_claims(&claims)?;
        let tokens = OidcTokens {
            id_token: id_token.to_string(),
            sub: string_claim(&claims, "sub").unwrap_or_default(),
            op_sid: string_claim(&claims, "sid"),
            refresh_token: response.refresh_token().map(|t| t.secret().clone()),
            expires_at: response
                .expires_in()
                .map(|d| now.saturating_add(d.as_secs())),
            obtained_at: now,
        };
        Ok(Login { identity, tokens })
    }

    /// Uses the refresh token; the new tokens on success. A new ID token, when the OP sends
    /// one, must validate and name the same subject.
    pub async fn refresh(&self, tokens: &OidcTokens, now: u64) -> Result<OidcTokens, OidcFailure> {
        let refresh_token = tokens
            .refresh_token
            .as_ref()
            .ok_or(OidcFailure::RefreshRefused)?;
        let metadata = self
            .metadata
            .read()
            .ok()
            .and_then(|m| m.clone())
            .ok_or(OidcFailure::Unavailable)?;
        let client = CoreClient::from_provider_metadata(
            (*metadata).clone(),
            ClientId::new(self.client_id.clone()),
            self.client_secret.clone().map(ClientSecret::new),
        )
        .set_auth_type(self.auth_type());
        let response = client
            .exchange_refresh_token(&openidconnect::RefreshToken::new(refresh_token.clone()))
            .map_err(|_| OidcFailure::Unavailable)?
            .request_async(&self.http)
            .await
            .map_err(|e| match e {
                // The OP answered with an OAuth error (invalid_grant, …): the grant is over.
                openidconnect::RequestTokenError::ServerResponse(_) => {
                    tracing::info!(idp = %self.id, error = ?e, "OIDC refresh refused");
                    OidcFailure::RefreshRefused
                }
                // Network failure, timeout, unparsable answer: the OP is not reachable as it
                // should be; keep the session on its tokens and try again later.
                _ => {
                    tracing::warn!(idp = %self.id, error = ?e, "OIDC refresh failed; keeping the session");
                    OidcFailure::Unavailable
                }
            })?;
        let mut next = tokens.clone();
        if let Some(id_token) = response.id_token() {
            let verifier = client.id_token_verifier();
            let claims = id_token
                .claims(&verifier, |_: Option<&Nonce>| Ok(()))
                .map_err(|_| OidcFailure::InvalidIdToken)?;
            if claims.subject().as_str() != tokens.sub {
                return Err(OidcFailure::InvalidIdToken);
            }
            next.id_token = id_token.to_string();
        }
        if let Some(rotated) = response.refresh_token() {
            next.refresh_token = Some(rotated.secret().clone());
        }
        next.expires_at = response
            .expires_in()
            .map(|d| now.saturating_add(d.as_secs()));
        next.obtained_at = now;
        Ok(next)
    }

    /// Validates a back-channel logout token (OpenID Connect Back-Channel Logout 1.0 §2.6):
    /// signature by the OP's keys with an advertised asymmetric algorithm, `iss`, `aud`,
    /// `iat`, `exp`, `jti`, the logout event, `sub` or `sid`, and no `nonce`.
    pub fn logout_target(&self, token: &str) -> Result<LogoutTarget, OidcFailure> {
        use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
        let invalid = |why: &str| {
            tracing::info!(idp = %self.id, why, "back-channel logout token refused");
            OidcFailure::InvalidLogoutToken
        };
        let header = decode_header(token).map_err(|_| invalid("header"))?;
        if !matches!(
            header.alg,
            Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512
                | Algorithm::ES256
                | Algorithm::ES384
                | Algorithm::EdDSA
        ) {
            return Err(invalid("algorithm"));
        }
        let keys = self
            .logout_keys
            .read()
            .ok()
            .and_then(|k| k.clone())
            .ok_or(OidcFailure::Unavailable)?;
        let jwk = match header.kid.as_deref() {
            Some(kid) => keys.find(kid),
            None if keys.keys.len() == 1 => keys.keys.first(),
            None => None,
        }
        .ok_or_else(|| invalid("unknown key"))?;
        let key = DecodingKey::from_jwk(jwk).map_err(|_| invalid("key"))?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[self.issuer.as_str()]);
        validation.set_audience(&[self.client_id.as_str()]);
        validation.set_required_spec_claims(&["iss", "aud", "iat", "exp"]);
        validation.leeway = 60;
        let data = decode::<serde_json::Value>(token, &key, &validation)
            .map_err(|_| invalid("signature or claims"))?;
        let claims = data.claims;
        let event = claims
            .get("events")
            .and_then(|e| e.get("http://schemas.openid.net/event/backchannel-logout"));
        if !event.is_some_and(|e| e.is_object()) || claims.get("nonce").is_some() {
            return Err(invalid("events or nonce"));
        }
        let sub = string_claim(&claims, "sub");
        let op_sid = string_claim(&claims, "sid");
        let jti = string_claim(&claims, "jti").ok_or_else(|| invalid("jti"))?;
        if sub.is_none() && op_sid.is_none() {
            return Err(invalid("neither sub nor sid"));
        }
        let exp = claims.get("exp").and_then(|v| v.as_u64()).unwrap_or(0);
        Ok(LogoutTarget {
            sub,
            op_sid,
            jti,
            exp,
        })
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

    /// True at most once a minute.
    fn may_force_refetch(&self, now: u64) -> bool {
        use std::sync::atomic::Ordering;
        let last = self.last_forced_refetch.load(Ordering::Relaxed);
        now >= last.saturating_add(60)
            && self
                .last_forced_refetch
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    fn auth_type(&self) -> AuthType {
        if self.secret_in_body {
            AuthType::RequestBody
        } else {
            AuthType::BasicAuth
        }
    }

    /// Validates an ID token (signature with the OP's keys, `iss`, `aud`, `azp`, `exp`,
    /// `iat`, `nonce`, allowed algorithms) and returns all its claims.
    fn verified_claims(
        &self,
        client: &OidcClient,
        id_token: &CoreIdToken,
        nonce: &Nonce,
    ) -> Result<serde_json::Value, OidcFailure> {
        let verifier = client.id_token_verifier();
        id_token.claims(&verifier, nonce).map_err(|e| {
            tracing::warn!(idp = %self.id, error = %e, "OIDC ID token refused");
            OidcFailure::InvalidIdToken
        })?;
        // The signature is verified over this exact token: its payload may be read for the
        // claims the core types do not model (groups, amr, custom claims).
        payload(&id_token.to_string())
            .map(serde_json::Value::Object)
            .ok_or(OidcFailure::InvalidIdToken)
    }

    /// Userinfo claims for the ID token's subject (the crate checks `sub` matches).
    async fn userinfo_claims(
        &self,
        client: &OidcClient,
        response: &openidconnect::core::CoreTokenResponse,
        claims: &serde_json::Value,
    ) -> Result<serde_json::Value, OidcFailure> {
        let sub = string_claim(claims, "sub").ok_or(OidcFailure::Userinfo)?;
        let request = client
            .user_info(
                response.access_token().clone(),
                Some(openidconnect::SubjectIdentifier::new(sub)),
            )
            .map_err(|_| OidcFailure::Userinfo)?;
        let info: openidconnect::UserInfoClaims<AllClaims, openidconnect::core::CoreGenderClaim> =
            request.request_async(&self.http).await.map_err(|e| {
                tracing::warn!(idp = %self.id, error = ?e, "OIDC userinfo failed");
                OidcFailure::Userinfo
            })?;
        serde_json::to_value(&info).map_err(|_| OidcFailure::Userinfo)
    }

    /// The identity from verified claims: `claims:` mapping, MFA from `amr`/`acr`, then the
    /// `identity:` rules.
    fn identity_from_claims(&self, claims: &serde_json::Value) -> Result<Identity, OidcFailure> {
        let amr: Vec<String> = claims
            .get("amr")
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let acr_mfa =
            string_claim(claims, "acr").is_some_and(|acr| self.mfa_acr_values.contains(&acr));
        let source = crate::identity::Assertions {
            idp: &self.id,
            auth_method: AuthMethod::Oidc,
            claims,
            mfa: mfa_from_amr(&amr) || acr_mfa,
        };
        crate::identity::from_claims(&source, &self.claims, &self.mapping).map_err(|e| {
            tracing::warn!(idp = %self.id, error = %e, "OIDC claims unusable");
            OidcFailure::Claims
        })
    }
}

/// Every claim of a userinfo response, kept as JSON.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct AllClaims(serde_json::Map<String, serde_json::Value>);

impl openidconnect::AdditionalClaims for AllClaims {}

/// Adds `extra`'s claims that `claims` lacks (the verified ID token wins on conflicts).
fn merge_under(claims: &mut serde_json::Value, extra: serde_json::Value) {
    if let (Some(base), serde_json::Value::Object(extra)) = (claims.as_object_mut(), extra) {
        for (k, v) in extra {
            base.entry(k).or_insert(v);
        }
    }
}

fn string_claim(claims: &serde_json::Value, name: &str) -> Option<String> {
    claims
        .get(name)
        .and_then(|v| v.as_str())
        .map(str::to_string)
}

type OidcClient = CoreClient<
    openidconnect::EndpointSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointMaybeSet,
    openidconnect::EndpointMaybeSet,
>;

fn payload(jwt: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    let part = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// RFC 8176 authentication method references that mean a second factor (or "mfa" itself).
pub fn mfa_from_amr(amr: &[String]) -> bool {
    amr.iter().any(|m| {
        matches!(
            m.as_str(),
            "mfa" | "otp" | "hwk" | "swk" | "sms" | "fpt" | "face" | "iris" | "retina" | "sc"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_factors_from_amr() {
        let amr = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(!mfa_from_amr(&amr(&["pwd"])));
        assert!(mfa_from_amr(&amr(&["pwd", "otp"])));
        assert!(mfa_from_amr(&amr(&["mfa"])));
        assert!(mfa_from_amr(&amr(&["hwk"])));
        assert!(!mfa_from_amr(&[]));
    }

    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};

    const ISSUER: &str = "https://op.test";

    /// An ES256 key and its public JWK.
    fn key(kid: &str) -> (EcdsaKeyPair, serde_json::Value) {
        let rng = SystemRandom::new();
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("key");
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .expect("pair");
        let point = pair.public_key().as_ref();
        let jwk = serde_json::json!({
            "kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        });
        (pair, jwk)
    }

    fn sign(pair: &EcdsaKeyPair, header: serde_json::Value, claims: serde_json::Value) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = pair
            .sign(&SystemRandom::new(), input.as_bytes())
            .expect("sign");
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }

    /// A provider whose discovery document and JWKS hold `jwk`, as after discovery.
    fn provider(jwk: serde_json::Value) -> (OidcProvider, OidcClient) {
        let metadata: Metadata = serde_json::from_value(serde_json::json!({
            "issuer": ISSUER,
            "authorization_endpoint": "https://op.test/auth",
            "token_endpoint": "https://op.test/token",
            "jwks_uri": "https://op.test/jwks",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
        }))
        .expect("metadata");
        let jwks = serde_json::from_value(serde_json::json!({ "keys": [jwk] })).expect("jwks");
        let config = IdentityProvider {
            id: "corp".into(),
            display_name: "Corp".into(),
            kind: IdentityProviderKind::Oidc {
                issuer: ISSUER.into(),
                client_id: "portcullis".into(),
                client_secret: None,
                scopes: vec![],
                acr_values: None,
                prompt: None,
                secret_in_body: false,
                userinfo: false,
                mfa_acr_values: vec![],
            },
            claims: Default::default(),
        };
        let provider = OidcProvider::new(&config, Default::default())
            .expect("provider")
            .expect("oidc");
        *provider.metadata.write().expect("lock") = Some(Arc::new(metadata.set_jwks(jwks)));
        let client = provider
            .client("https://a.test/.portcullis/oidc/callback")
            .expect("client");
        (provider, client)
    }

    fn claims(overrides: serde_json::Value) -> serde_json::Value {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("time")
            .as_secs();
        let mut c = serde_json::json!({ "iss": ISSUER, "aud": "portcullis", "sub": "alice", "iat": now, "exp": now + 300, "nonce": "n-1", "groups": ["staff"] });
        if let (Some(base), Some(extra)) = (c.as_object_mut(), overrides.as_object()) {
            for (k, v) in extra {
                base.insert(k.clone(), v.clone());
            }
        }
        c
    }

    fn check(
        provider: &OidcProvider,
        client: &OidcClient,
        token: &str,
    ) -> Result<Identity, OidcFailure> {
        let parsed: CoreIdToken = token.parse().map_err(|_| OidcFailure::InvalidIdToken)?;
        let claims = provider.verified_claims(client, &parsed, &Nonce::new("n-1".into()))?;
        provider.identity_from_claims(&claims)
    }

    /// Negative cases are hand-built tokens (the real OP in tests/oidc.rs signs only valid
    /// ones); each must be refused by the same validation the callback uses.
    #[test]
    fn id_token_validation_refuses_every_forgery() {
        let (pair, jwk) = key("k1");
        let (provider, client) = provider(jwk.clone());
        let header = serde_json::json!({ "alg": "ES256", "kid": "k1", "typ": "JWT" });
        let good = sign(&pair, header.clone(), claims(serde_json::json!({})));
        let identity = check(&provider, &client, &good).expect("valid token");
        assert_eq!(
            (identity.user_id.as_str(), identity.roles.len()),
            ("alice", 0),
            "groups become roles only by the identity rules"
        );
        assert_eq!(identity.user_type, crate::config::UserType::External);

        let (other, _) = key("k1");
        let cases = [
            (
                "signed by another key",
                sign(&other, header.clone(), claims(serde_json::json!({}))),
            ),
            (
                "wrong audience",
                sign(
                    &pair,
                    header.clone(),
                    claims(serde_json::json!({ "aud": "someone-else" })),
                ),
            ),
            (
                "wrong issuer",
                sign(
                    &pair,
                    header.clone(),
                    claims(serde_json::json!({ "iss": "https://evil.test" })),
                ),
            ),
            (
                "expired",
                sign(
                    &pair,
                    header.clone(),
                    claims(serde_json::json!({ "exp": 1_000_000, "iat": 999_000 })),
                ),
            ),
            (
                "wrong nonce",
                sign(
                    &pair,
                    header.clone(),
                    claims(serde_json::json!({ "nonce": "other" })),
                ),
            ),
            (
                "no nonce",
                sign(
                    &pair,
                    header.clone(),
                    claims(serde_json::json!({ "nonce": null })),
                ),
            ),
            ("payload changed after signing", {
                let mut parts: Vec<String> = good.split('.').map(str::to_string).collect();
                parts[1] = URL_SAFE_NO_PAD
                    .encode(claims(serde_json::json!({ "sub": "mallory" })).to_string());
                parts.join(".")
            }),
            (
                "alg none",
                format!(
                    "{}.{}.",
                    URL_SAFE_NO_PAD.encode(serde_json::json!({ "alg": "none" }).to_string()),
                    URL_SAFE_NO_PAD.encode(claims(serde_json::json!({})).to_string())
                ),
            ),
            ("HS256 keyed with the public key", {
                let input = format!(
                    "{}.{}",
                    URL_SAFE_NO_PAD
                        .encode(serde_json::json!({ "alg": "HS256", "kid": "k1" }).to_string()),
                    URL_SAFE_NO_PAD.encode(claims(serde_json::json!({})).to_string())
                );
                let mac_key =
                    ring::hmac::Key::new(ring::hmac::HMAC_SHA256, jwk.to_string().as_bytes());
                let tag = ring::hmac::sign(&mac_key, input.as_bytes());
                format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
            }),
            ("garbage", "not.a.jwt".to_string()),
        ];
        for (name, token) in cases {
            assert_eq!(
                check(&provider, &client, &token).map(|i| i.user_id),
                Err(OidcFailure::InvalidIdToken),
                "{name}"
            );
        }
    }

    #[test]
    fn logout_tokens_are_validated_like_the_spec_says() {
        let (pair, jwk) = key("k1");
        let (provider, _) = provider(jwk.clone());
        *provider.logout_keys.write().expect("lock") = Some(Arc::new(
            serde_json::from_value(serde_json::json!({ "keys": [jwk] })).expect("jwks"),
        ));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("time")
            .as_secs();
        let event = serde_json::json!({ "http://schemas.openid.net/event/backchannel-logout": {} });
        let base = serde_json::json!({
            "iss": ISSUER, "aud": "portcullis", "iat": now, "exp": now + 120, "jti": "j-1",
            "sub": "alice", "sid": "op-s1", "events": event,
        });
        let with = |changes: serde_json::Value| {
            let mut c = base.clone();
            for (k, v) in changes.as_object().expect("object") {
                if v.is_null() {
                    c.as_object_mut().expect("object").remove(k);
                } else {
                    c[k] = v.clone();
                }
            }
            sign(&pair, serde_json::json!({ "alg": "ES256", "kid": "k1" }), c)
        };
        let target = provider
            .logout_target(&with(serde_json::json!({})))
            .expect("valid");
        assert_eq!(
            (
                target.sub.as_deref(),
                target.op_sid.as_deref(),
                target.jti.as_str()
            ),
            (Some("alice"), Some("op-s1"), "j-1")
        );
        assert!(
            provider
                .logout_target(&with(serde_json::json!({ "sub": null })))
                .is_ok(),
            "sid alone"
        );
        let (other, _) = key("k1");
        let forged = sign(
            &other,
            serde_json::json!({ "alg": "ES256", "kid": "k1" }),
            base.clone(),
        );
        let cases = [
            ("another key", forged),
            (
                "wrong audience",
                with(serde_json::json!({ "aud": "other" })),
            ),
            (
                "wrong issuer",
                with(serde_json::json!({ "iss": "https://evil.test" })),
            ),
            (
                "expired",
                with(serde_json::json!({ "exp": now - 600, "iat": now - 900 })),
            ),
            ("no event", with(serde_json::json!({ "events": null }))),
            (
                "an ID token (nonce)",
                with(serde_json::json!({ "nonce": "n" })),
            ),
            (
                "neither sub nor sid",
                with(serde_json::json!({ "sub": null, "sid": null })),
            ),
            ("no jti", with(serde_json::json!({ "jti": null }))),
            (
                "alg none",
                format!(
                    "{}.{}.",
                    URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
                    URL_SAFE_NO_PAD.encode(base.to_string())
                ),
            ),
            ("garbage", "x.y.z".into()),
        ];
        for (name, token) in cases {
            assert_eq!(
                provider.logout_target(&token),
                Err(OidcFailure::InvalidLogoutToken),
                "{name}"
            );
        }
    }

    #[test]
    fn unknown_key_ids_force_a_refetch_at_most_once_a_minute() {
        let (pair, jwk) = key("k1");
        let (provider, _) = provider(jwk.clone());
        *provider.logout_keys.write().expect("lock") = Some(Arc::new(
            serde_json::from_value(serde_json::json!({ "keys": [jwk] })).expect("jwks"),
        ));
        let header = |kid: &str| serde_json::json!({ "alg": "ES256", "kid": kid });
        let known = sign(&pair, header("k1"), claims(serde_json::json!({})));
        let rotated = sign(&pair, header("k2"), claims(serde_json::json!({})));
        assert!(!provider.has_unknown_kid(&known));
        assert!(provider.has_unknown_kid(&rotated));
        assert!(!provider.has_unknown_kid("garbage"));
        assert!(provider.may_force_refetch(1_000));
        assert!(!provider.may_force_refetch(1_030));
        assert!(provider.may_force_refetch(1_061));
    }

    #[test]
    fn payload_reads_claims_and_survives_garbage() {
        let body = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"groups":["a"],"amr":["pwd"]}"#);
        let claims = payload(&format!("e30.{body}.sig")).expect("payload");
        assert_eq!(claims["groups"][0], "a");
        assert!(payload("not-a-jwt").is_none());
        assert!(payload("a.!!!.c").is_none());
    }
}
