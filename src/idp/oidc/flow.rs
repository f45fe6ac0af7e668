//! The sign-in: the authorization request (PKCE, state, nonce, step-up), the callback's code
//! exchange and ID token validation (with one rate-limited key refetch when the OP rotated
//! its keys), userinfo, and the refresh of a session's tokens.

use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreIdToken};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, Nonce, OAuth2TokenResponse,
    PkceCodeChallenge, PkceCodeVerifier, Scope, TokenResponse,
};
use serde::{Deserialize, Serialize};

use super::claims::{merge_under, payload, string_claim, AllClaims};
use super::{OidcClient, OidcError, OidcProvider, OidcTokens};
use crate::identity::Identity;

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

impl OidcProvider {
    /// The authorization request: where to send the browser, and what to remember.
    /// `step_up`: the app needs MFA the session lacks, so ask the OP to authenticate again
    /// (`prompt=login`) with the provider's `mfa_acr_values`.
    pub fn start(
        &self,
        redirect_uri: &str,
        return_to: &str,
        now: u64,
        step_up: bool,
    ) -> Result<(String, FlowState), OidcError> {
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
    pub async fn finish(&self, flow: &FlowState, code: &str, now: u64) -> Result<Login, OidcError> {
        let client = self.client(&flow.redirect_uri)?;
        let request = client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .map_err(|_| OidcError::Unavailable)?;
        let response = request
            .set_pkce_verifier(PkceCodeVerifier::new(flow.verifier.clone()))
            .request_async(&self.http)
            .await
            .map_err(|e| {
                tracing::warn!(idp = %self.id, error = ?e, "OIDC code exchange failed");
                OidcError::TokenExchange
            })?;
        let id_token = response.id_token().ok_or(OidcError::MissingIdToken)?;
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
    pub async fn refresh(&self, tokens: &OidcTokens, now: u64) -> Result<OidcTokens, OidcError> {
        let refresh_token = tokens
            .refresh_token
            .as_ref()
            .ok_or(OidcError::RefreshRefused)?;
        let metadata = self
            .metadata
            .read()
            .ok()
            .and_then(|m| m.clone())
            .ok_or(OidcError::Unavailable)?;
        let client = CoreClient::from_provider_metadata(
            (*metadata).clone(),
            ClientId::new(self.client_id.clone()),
            self.client_secret.clone().map(ClientSecret::new),
        )
        .set_auth_type(self.auth_type());
        let response = client
            .exchange_refresh_token(&openidconnect::RefreshToken::new(refresh_token.clone()))
            .map_err(|_| OidcError::Unavailable)?
            .request_async(&self.http)
            .await
            .map_err(|e| match e {
                // The OP answered with an OAuth error (invalid_grant, …): the grant is over.
                openidconnect::RequestTokenError::ServerResponse(_) => {
                    tracing::info!(idp = %self.id, error = ?e, "OIDC refresh refused");
                    OidcError::RefreshRefused
                }
                // Network failure, timeout, unparsable answer: the OP is not reachable as it
                // should be; keep the session on its tokens and try again later.
                _ => {
                    tracing::warn!(idp = %self.id, error = ?e, "OIDC refresh failed; keeping the session");
                    OidcError::Unavailable
                }
            })?;
        let mut next = tokens.clone();
        if let Some(id_token) = response.id_token() {
            let verifier = client.id_token_verifier();
            let claims = id_token
                .claims(&verifier, |_: Option<&Nonce>| Ok(()))
                .map_err(|_| OidcError::InvalidIdToken)?;
            if claims.subject().as_str() != tokens.sub {
                return Err(OidcError::InvalidIdToken);
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

    /// Validates an ID token (signature with the OP's keys, `iss`, `aud`, `azp`, `exp`,
    /// `iat`, `nonce`, allowed algorithms) and returns all its claims.
    pub(super) fn verified_claims(
        &self,
        client: &OidcClient,
        id_token: &CoreIdToken,
        nonce: &Nonce,
    ) -> Result<serde_json::Value, OidcError> {
        let verifier = client.id_token_verifier();
        id_token.claims(&verifier, nonce).map_err(|e| {
            tracing::warn!(idp = %self.id, error = %e, "OIDC ID token refused");
            OidcError::InvalidIdToken
        })?;
        // The signature is verified over this exact token: its payload may be read for the
        // claims the core types do not model (groups, amr, custom claims).
        payload(&id_token.to_string())
            .map(serde_json::Value::Object)
            .ok_or(OidcError::InvalidIdToken)
    }

    /// Userinfo claims for the ID token's subject (the crate checks `sub` matches).
    async fn userinfo_claims(
        &self,
        client: &OidcClient,
        response: &openidconnect::core::CoreTokenResponse,
        claims: &serde_json::Value,
    ) -> Result<serde_json::Value, OidcError> {
        let sub = string_claim(claims, "sub").ok_or(OidcError::Userinfo)?;
        let request = client
            .user_info(
                response.access_token().clone(),
                Some(openidconnect::SubjectIdentifier::new(sub)),
            )
            .map_err(|_| OidcError::Userinfo)?;
        let info: openidconnect::UserInfoClaims<AllClaims, openidconnect::core::CoreGenderClaim> =
            request.request_async(&self.http).await.map_err(|e| {
                tracing::warn!(idp = %self.id, error = ?e, "OIDC userinfo failed");
                OidcError::Userinfo
            })?;
        serde_json::to_value(&info).map_err(|_| OidcError::Userinfo)
    }
}
