//! Logout with the OP: the RP-initiated logout URL (`end_session_endpoint`) and the checks on
//! a back-channel logout token (OpenID Connect Back-Channel Logout 1.0), against the OP's
//! keys kept from discovery.

use openidconnect::core::CoreIdToken;
use openidconnect::{ClientId, LogoutRequest, PostLogoutRedirectUrl};

use super::claims::string_claim;
use super::{OidcError, OidcProvider};

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

impl OidcProvider {
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

    /// Validates a back-channel logout token (OpenID Connect Back-Channel Logout 1.0 §2.6):
    /// signature by the OP's keys with an advertised asymmetric algorithm, `iss`, `aud`,
    /// `iat`, `exp`, `jti`, the logout event, `sub` or `sid`, and no `nonce`.
    pub fn logout_target(&self, token: &str) -> Result<LogoutTarget, OidcError> {
        use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
        let invalid = |why: &str| {
            tracing::info!(idp = %self.id, why, "back-channel logout token refused");
            OidcError::InvalidLogoutToken
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
            .ok_or(OidcError::Unavailable)?;
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
}
