//! Bearer JWT access tokens (RFC 9068 and the many issuers that only approach it): the
//! issuer's keys, and every check before a token's claims are believed.
//!
//! Order matters: the header's `alg` must be one the issuer is configured for and must fit
//! the key's type (an RSA key never verifies an HMAC or ECDSA signature: no alg confusion);
//! the signature is checked before any claim is read; then `iss`, `aud`, `exp`, `nbf`,
//! `iat` (with the configured skew) and the required scopes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use openidconnect::reqwest;

use super::{bearer_sid, caller, has_scopes, scopes, token_identity, Caller, Refusal};
use crate::config::{
    BearerRules, ClaimMapping, IdentityMapping, IdentityProvider, JwtIssuerSettings,
};
use crate::identity::AuthMethod;
use crate::idp::oidc::OidcProvider;

/// Keys older than this are fetched again by the next request that finds them (the others
/// go on with the old keys meanwhile).
const KEYS_REFRESH_SECS: u64 = 3600;
/// After a failed fetch with no keys at all, requests are refused (503) this long before
/// the next attempt: an unreachable issuer is not asked once per request.
const FAILED_FETCH_BACKOFF_SECS: u64 = 10;
/// An unknown `kid` refetches the keys at most this often (forged tokens cannot make
/// Portcullis hammer the issuer).
const FORCED_REFETCH_SECS: u64 = 60;
/// Largest JWKS or discovery document read.
const MAX_DOCUMENT_BYTES: usize = 512 * 1024;

/// The `iss` of a compact JWS, read without verifying anything (to pick the issuer whose
/// keys will verify it); `None` when the text is not a JWS with a string `iss`.
pub fn peek_issuer(token: &str) -> Option<String> {
    let mut parts = token.split('.');
    let (_header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    #[derive(serde::Deserialize)]
    struct Issuer {
        iss: String,
    }
    serde_json::from_slice::<Issuer>(&bytes).ok().map(|i| i.iss)
}

/// Where an issuer's keys come from.
pub enum KeySource {
    /// Fetched by Portcullis (`kind: jwt`).
    Fetched(Box<Jwks>),
    /// Kept by an OIDC provider's discovery (its `bearer`).
    Oidc(Arc<OidcProvider>),
}

impl KeySource {
    /// The keys of a `kind: jwt` issuer, fetched on first use.
    pub fn fetched(settings: &JwtIssuerSettings) -> Result<KeySource, crate::idp::ProviderError> {
        Ok(KeySource::Fetched(Box::new(Jwks {
            issuer: settings.issuer.clone(),
            jwks_uri: settings.jwks_uri.clone(),
            http: crate::idp::back_channel_client()?,
            keys: RwLock::new(None),
            last_failure: AtomicU64::new(0),
            forced_refetch: crate::idp::AtMostEvery::new(FORCED_REFETCH_SECS),
            fetching: tokio::sync::Mutex::new(()),
        })))
    }

    /// Fixed keys that are never fetched (tests).
    #[cfg(test)]
    pub fn preloaded(issuer: &str, keys: JwkSet) -> KeySource {
        KeySource::Fetched(Box::new(Jwks {
            issuer: issuer.to_string(),
            jwks_uri: None,
            http: reqwest::Client::new(),
            keys: RwLock::new(Some((Arc::new(keys), u64::MAX / 2))),
            last_failure: AtomicU64::new(0),
            forced_refetch: crate::idp::AtMostEvery::never(),
            fetching: tokio::sync::Mutex::new(()),
        }))
    }

    async fn current(&self, now: u64) -> Result<Arc<JwkSet>, Refusal> {
        match self {
            KeySource::Fetched(jwks) => jwks.current(now).await,
            KeySource::Oidc(op) => op.jwks().ok_or(Refusal::CheckUnavailable),
        }
    }

    /// Fetches the keys again for a `kid` the cached set lacks, at most once a minute.
    async fn refetch(&self, now: u64) -> Option<Arc<JwkSet>> {
        match self {
            KeySource::Fetched(jwks) => jwks.refetch(now).await,
            KeySource::Oidc(op) => op.refetch_keys(now).await,
        }
    }
}

/// A `kind: jwt` issuer's key set, fetched from `jwks_uri` (or the discovery document's).
pub struct Jwks {
    issuer: String,
    jwks_uri: Option<url::Url>,
    http: reqwest::Client,
    /// The keys and when they were fetched.
    keys: RwLock<Option<(Arc<JwkSet>, u64)>>,
    last_failure: AtomicU64,
    /// Refetches for an unknown `kid`.
    forced_refetch: crate::idp::AtMostEvery,
    /// One fetch at a time; the others wait for its result.
    fetching: tokio::sync::Mutex<()>,
}

impl Jwks {
    fn cached(&self) -> Option<(Arc<JwkSet>, u64)> {
        self.keys.read().ok().and_then(|k| k.clone())
    }

    async fn current(&self, now: u64) -> Result<Arc<JwkSet>, Refusal> {
        match self.cached() {
            Some((keys, at)) if now < at.saturating_add(KEYS_REFRESH_SECS) => Ok(keys),
            Some((keys, _)) => {
                // Stale: one request refreshes, the others use the old keys meanwhile.
                if let Ok(_guard) = self.fetching.try_lock() {
                    return Ok(self.fetch(now).await.unwrap_or(keys));
                }
                Ok(keys)
            }
            None => {
                let last = self.last_failure.load(Ordering::Relaxed);
                if last != 0 && now < last.saturating_add(FAILED_FETCH_BACKOFF_SECS) {
                    return Err(Refusal::CheckUnavailable);
                }
                let _guard = self.fetching.lock().await;
                if let Some((keys, _)) = self.cached() {
                    return Ok(keys);
                }
                self.fetch(now).await.ok_or(Refusal::CheckUnavailable)
            }
        }
    }

    async fn refetch(&self, now: u64) -> Option<Arc<JwkSet>> {
        if !self.forced_refetch.due(now) {
            return None;
        }
        let _guard = self.fetching.lock().await;
        self.fetch(now).await
    }

    /// Fetches and keeps the keys; `None` (logged) when that fails.
    async fn fetch(&self, now: u64) -> Option<Arc<JwkSet>> {
        match self.download().await {
            Ok(keys) => {
                let keys = Arc::new(keys);
                if let Ok(mut slot) = self.keys.write() {
                    *slot = Some((keys.clone(), now));
                }
                tracing::info!(issuer = %self.issuer, keys = keys.keys.len(), "bearer token keys fetched");
                Some(keys)
            }
            Err(error) => {
                self.last_failure.store(now, Ordering::Relaxed);
                tracing::warn!(issuer = %self.issuer, %error, "cannot fetch the bearer token issuer's keys");
                None
            }
        }
    }

    async fn download(&self) -> Result<JwkSet, String> {
        let uri = match &self.jwks_uri {
            Some(uri) => uri.to_string(),
            None => {
                let base = self.issuer.trim_end_matches('/');
                let document = self
                    .get_json(&format!("{base}/.well-known/openid-configuration"))
                    .await?;
                if document.get("issuer").and_then(|v| v.as_str()) != Some(self.issuer.as_str()) {
                    return Err("the discovery document names another issuer".into());
                }
                document
                    .get("jwks_uri")
                    .and_then(|v| v.as_str())
                    .ok_or("the discovery document has no jwks_uri")?
                    .to_string()
            }
        };
        let document = self.get_json(&uri).await?;
        let keys = crate::idp::signing_keys(&document);
        if keys.keys.is_empty() {
            return Err(format!("{uri} holds no usable signing key"));
        }
        Ok(keys)
    }

    async fn get_json(&self, url: &str) -> Result<serde_json::Value, String> {
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("{url}: HTTP {}", response.status()));
        }
        let body = response.bytes().await.map_err(|e| format!("{url}: {e}"))?;
        if body.len() > MAX_DOCUMENT_BYTES {
            return Err(format!("{url}: larger than {MAX_DOCUMENT_BYTES} bytes"));
        }
        serde_json::from_slice(&body).map_err(|e| format!("{url}: {e}"))
    }
}

/// One issuer of bearer JWTs and what its tokens must show.
pub struct JwtVerifier {
    provider: String,
    issuer: String,
    rules: BearerRules,
    claims: ClaimMapping,
    mapping: Arc<IdentityMapping>,
    keys: KeySource,
}

impl JwtVerifier {
    /// The verifier of `provider`'s tokens, issued by `issuer`.
    pub fn new(
        provider: &IdentityProvider,
        issuer: &str,
        rules: BearerRules,
        keys: KeySource,
        mapping: Arc<IdentityMapping>,
    ) -> JwtVerifier {
        JwtVerifier {
            provider: provider.id.clone(),
            issuer: issuer.to_string(),
            rules,
            claims: provider.claims.clone(),
            mapping,
            keys,
        }
    }

    /// The `iss` its tokens carry.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Verifies `token` (its SHA-256 is `digest`) at `now`. Refusals are not remembered
    /// (the second element is `None`): a forged token costs its signature check each time,
    /// under the pre-authentication rate limit.
    pub async fn verify(
        &self,
        token: &str,
        digest: &[u8; 32],
        now: u64,
    ) -> Result<(Caller, u64), (Refusal, Option<u64>)> {
        match self.check(token, digest, now).await {
            Ok(caller) => {
                let until = caller.expires_at;
                Ok((caller, until))
            }
            Err(refusal) => Err((refusal, None)),
        }
    }

    async fn check(&self, token: &str, digest: &[u8; 32], now: u64) -> Result<Caller, Refusal> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| Refusal::TokenMalformed)?;
        if !self.rules.algorithms.contains(&header.alg) {
            return Err(Refusal::AlgorithmRefused);
        }
        if !header.typ.as_deref().is_none_or(is_access_token_type) {
            return Err(Refusal::TypeRefused);
        }
        let keys = self.keys.current(now).await?;
        let jwk = match select(&keys, header.kid.as_deref()) {
            Some(jwk) => jwk.clone(),
            None => {
                let fresh = self.keys.refetch(now).await.ok_or(Refusal::KeyUnknown)?;
                select(&fresh, header.kid.as_deref())
                    .ok_or(Refusal::KeyUnknown)?
                    .clone()
            }
        };
        if !fits(&jwk, header.alg) {
            return Err(Refusal::AlgorithmRefused);
        }
        let key = DecodingKey::from_jwk(&jwk).map_err(|_| Refusal::KeyUnknown)?;
        let mut validation = Validation::new(header.alg);
        validation.leeway = self.rules.clock_skew.as_secs();
        validation.validate_nbf = true;
        validation.set_issuer(&[self.issuer.as_str()]);
        validation.set_audience(&self.rules.audiences);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let claims = jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation)
            .map_err(|e| refusal_of(e.kind()))?
            .claims;
        let skew = self.rules.clock_skew.as_secs();
        let iat = claims.get("iat").and_then(|v| v.as_u64());
        if iat.is_some_and(|iat| iat > now.saturating_add(skew)) {
            return Err(Refusal::TokenNotYetValid);
        }
        let exp = claims
            .get("exp")
            .and_then(|v| v.as_u64())
            .ok_or(Refusal::ExpiryMissing)?;
        let granted = scopes(&claims);
        if !has_scopes(&granted, &self.rules.required_scopes) {
            return Err(Refusal::InsufficientScope);
        }
        let identity = token_identity(
            &self.provider,
            AuthMethod::BearerJwt,
            &claims,
            &self.claims,
            &self.mapping,
            &granted,
        )?;
        let issued_at = iat.unwrap_or(now).min(now);
        Ok(caller(
            Arc::new(identity),
            bearer_sid(digest),
            issued_at,
            exp,
        ))
    }
}

/// RFC 9068 says `at+jwt`; most issuers send `JWT` or nothing. Anything else (an ID token
/// marked as such, a logout token) is not an access token.
fn is_access_token_type(typ: &str) -> bool {
    ["at+jwt", "application/at+jwt", "jwt"]
        .iter()
        .any(|t| typ.eq_ignore_ascii_case(t))
}

/// The key named by `kid`; without a `kid`, the only key.
fn select<'k>(keys: &'k JwkSet, kid: Option<&str>) -> Option<&'k Jwk> {
    match kid {
        Some(kid) => keys.find(kid),
        None if keys.keys.len() == 1 => keys.keys.first(),
        None => None,
    }
}

/// The algorithm fits the key: its type and curve, and its own `alg` when it names one.
fn fits(jwk: &Jwk, alg: Algorithm) -> bool {
    use Algorithm::*;
    let by_type = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
        AlgorithmParameters::EllipticCurve(ec) => matches!(
            (&ec.curve, alg),
            (EllipticCurve::P256, ES256) | (EllipticCurve::P384, ES384)
        ),
        AlgorithmParameters::OctetKeyPair(okp) => {
            okp.curve == EllipticCurve::Ed25519 && alg == EdDSA
        }
        _ => false,
    };
    let named = jwk
        .common
        .key_algorithm
        .is_none_or(|named| format!("{named:?}") == format!("{alg:?}"));
    by_type && named
}

fn refusal_of(kind: &ErrorKind) -> Refusal {
    match kind {
        ErrorKind::ExpiredSignature => Refusal::TokenExpired,
        ErrorKind::ImmatureSignature => Refusal::TokenNotYetValid,
        ErrorKind::InvalidAudience => Refusal::AudienceMismatch,
        ErrorKind::InvalidIssuer => Refusal::IssuerMismatch,
        ErrorKind::MissingRequiredClaim(claim) => match claim.as_str() {
            "exp" => Refusal::ExpiryMissing,
            "aud" => Refusal::AudienceMismatch,
            _ => Refusal::IssuerMismatch,
        },
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => Refusal::AlgorithmRefused,
        ErrorKind::Base64(_)
        | ErrorKind::Json(_)
        | ErrorKind::Utf8(_)
        | ErrorKind::InvalidToken => Refusal::TokenMalformed,
        _ => Refusal::SignatureInvalid,
    }
}
