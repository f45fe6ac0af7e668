//! Opaque bearer tokens, asked about at an OAuth 2.0 introspection endpoint (RFC 7662).
//! Fails closed: an endpoint that is slow, down or answers nonsense refuses the token (503),
//! it never admits it. A positive answer is reused until `min(exp, cache_ttl)`, a negative
//! one for a few seconds.

use std::sync::Arc;
use std::time::Duration;

use openidconnect::reqwest;

use super::{bearer_sid, caller, has_scopes, scopes, token_identity, Caller, Refusal};
use crate::config::{ClaimMapping, IdentityMapping, IdentityProvider, IntrospectionSettings};
use crate::identity::AuthMethod;

/// How long "not active" is believed before the endpoint is asked again.
pub const NEGATIVE_TTL_SECS: u64 = 5;
/// Largest introspection answer read.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// One introspection endpoint and what its active tokens must show.
pub struct Introspector {
    provider: String,
    settings: IntrospectionSettings,
    claims: ClaimMapping,
    mapping: Arc<IdentityMapping>,
    http: reqwest::Client,
}

impl Introspector {
    /// The client for `provider`'s endpoint.
    pub fn new(
        provider: &IdentityProvider,
        settings: &IntrospectionSettings,
        mapping: Arc<IdentityMapping>,
    ) -> Result<Introspector, crate::idp::ProviderError> {
        Ok(Introspector {
            provider: provider.id.clone(),
            settings: settings.clone(),
            claims: provider.claims.clone(),
            mapping,
            http: crate::idp::back_channel_client()?,
        })
    }

    /// Asks about `token` (its SHA-256 is `digest`) at `now`. A refusal carries until when
    /// it may be remembered (`None`: not at all, e.g. the endpoint could not be asked).
    pub async fn check(
        &self,
        token: &str,
        digest: &[u8; 32],
        now: u64,
    ) -> Result<(Caller, u64), (Refusal, Option<u64>)> {
        let answer = self.ask(token).await.map_err(|error| {
            tracing::warn!(idp = %self.provider, %error, "token introspection failed");
            (Refusal::CheckUnavailable, None)
        })?;
        let remember = Some(now.saturating_add(NEGATIVE_TTL_SECS));
        self.judge(&answer, digest, now)
            .map_err(|refusal| match refusal {
                Refusal::CheckUnavailable => (refusal, None),
                _ => (refusal, remember),
            })
    }

    /// The endpoint's answer; a 400 (RFC 7662 servers answer `unsupported_token_type` or
    /// `invalid_request` for tokens they cannot read) counts as not active.
    async fn ask(&self, token: &str) -> Result<serde_json::Value, String> {
        let settings = &self.settings;
        let secret = settings.client_secret.expose();
        let mut form = vec![("token", token), ("token_type_hint", "access_token")];
        let mut request = self
            .http
            .post(settings.endpoint.clone())
            .timeout(settings.timeout)
            .header(http::header::ACCEPT, "application/json");
        if settings.secret_in_body {
            form.push(("client_id", settings.client_id.as_str()));
            form.push(("client_secret", secret));
        } else {
            // RFC 6749 §2.3.1: the id and secret are form-encoded before Basic.
            let encode =
                |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            request = request.basic_auth(encode(&settings.client_id), Some(encode(secret)));
        }
        let response = request
            .form(&form)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if response.status() == reqwest::StatusCode::BAD_REQUEST {
            return Ok(serde_json::json!({ "active": false }));
        }
        if !response.status().is_success() {
            return Err(format!("HTTP {}", response.status()));
        }
        let body = response.bytes().await.map_err(|e| e.to_string())?;
        if body.len() > MAX_ANSWER_BYTES {
            return Err("answer too large".into());
        }
        serde_json::from_slice(&body).map_err(|e| e.to_string())
    }

    /// What the answer means for this request.
    pub(super) fn judge(
        &self,
        answer: &serde_json::Value,
        digest: &[u8; 32],
        now: u64,
    ) -> Result<(Caller, u64), Refusal> {
        let rules = &self.settings.rules;
        match answer.get("active") {
            Some(serde_json::Value::Bool(true)) => {}
            Some(serde_json::Value::Bool(false)) => return Err(Refusal::TokenInactive),
            _ => return Err(Refusal::CheckUnavailable),
        }
        let skew = rules.clock_skew.as_secs();
        let number = |name: &str| answer.get(name).and_then(|v| v.as_u64());
        let exp = number("exp");
        if exp.is_some_and(|exp| exp.saturating_add(skew) <= now) {
            return Err(Refusal::TokenExpired);
        }
        if number("nbf").is_some_and(|nbf| nbf > now.saturating_add(skew)) {
            return Err(Refusal::TokenNotYetValid);
        }
        if let Some(expected) = &self.settings.issuer {
            if answer.get("iss").and_then(|v| v.as_str()) != Some(expected.as_str()) {
                return Err(Refusal::IssuerMismatch);
            }
        }
        if !rules.audiences.is_empty() {
            let named = |a: &serde_json::Value| {
                a.as_str()
                    .is_some_and(|a| rules.audiences.iter().any(|want| want == a))
            };
            let matches = match answer.get("aud") {
                Some(serde_json::Value::Array(list)) => list.iter().any(named),
                Some(one) => named(one),
                None => false,
            };
            if !matches {
                return Err(Refusal::AudienceMismatch);
            }
        }
        let granted = scopes(answer);
        if !has_scopes(&granted, &rules.required_scopes) {
            return Err(Refusal::InsufficientScope);
        }
        let identity = token_identity(
            &self.provider,
            AuthMethod::BearerIntrospected,
            answer,
            &self.claims,
            &self.mapping,
            &granted,
        )?;
        let ttl = self
            .settings
            .cache_ttl
            .max(Duration::from_secs(1))
            .as_secs();
        let expires_at = exp.unwrap_or(u64::MAX);
        let until = now.saturating_add(ttl).min(expires_at);
        let issued_at = number("iat").unwrap_or(now).min(now);
        let caller = caller(
            Arc::new(identity),
            bearer_sid(digest),
            issued_at,
            expires_at,
        );
        Ok((caller, until))
    }
}
