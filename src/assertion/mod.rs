//! The user-context assertion: the `X-Portcullis-Assertion` JWT and the optional plain
//! identity headers.
//!
//! Why it exists: the upstream must learn who the user is without trusting anything the
//! client sent. Every inbound `X-Portcullis-*` header is stripped first (`proxy::hygiene`);
//! what this module builds is then injected from the authenticated identity only. The JWT is
//! signed so that a backend reachable by other paths can still tell a real assertion from a
//! forged one, against the JWKS served at `<reserved_prefix>jwks.json` ([`Signer::jwks`]).
//!
//! Signing uses `ring` directly: the keys are parsed once at start and ring's P-256 and
//! Ed25519 code is assembly-optimised, where `jsonwebtoken::encode` re-parses the PKCS#8 key
//! on every call. The output is a plain compact JWS (RFC 7515), which the tests verify with
//! `jsonwebtoken`, an independent implementation.
//!
//! Layout: `keys` parses, generates and publishes the signing keys; `claims` is the claim set
//! signed into the JWT; `headers` the plain `X-Portcullis-*` headers and their byte budget;
//! `cache` keeps signed tokens per session and app. This file holds [`Signer`], which ties
//! them together, and the error types.

mod cache;
mod claims;
mod headers;
mod keys;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use ring::rand::SystemRandom;

use crate::config::{App, AssertionSettings};
use crate::identity::Identity;
use cache::{TokenCache, CACHE_CAPACITY};
use claims::Claims;
use keys::{build_jwks, generate_pkcs8, pkcs8_der, SigningKey};

pub use headers::{
    header_bytes, over_budget, plain_headers, ASSERTION_HEADER, EMAIL_HEADER, ENTITY_HEADER,
    MAX_ROLES_BYTES, MAX_VALUE_BYTES, ROLES_HEADER, USER_HEADER, USER_TYPE_HEADER,
};
pub use keys::{algorithm_name, generate_pem};

/// Shortest time before `exp` at which a cached token is still handed out.
const MIN_REFRESH_MARGIN_SECS: u64 = 10;

/// The assertion cannot be set up or signed.
#[derive(Debug, thiserror::Error)]
pub enum AssertionError {
    /// A configured signing key cannot be used.
    #[error("assertion.signing_keys[{index}]: {problem}")]
    SigningKey {
        /// Position in `assertion.signing_keys`.
        index: usize,
        /// What is wrong with it.
        problem: SigningKeyError,
    },
    /// The system random generator failed while making a key.
    #[error("cannot generate an assertion signing key: the system random generator failed")]
    Generation,
    /// Signing failed (the request must fail closed with a 5xx).
    #[error("signing the assertion failed")]
    Signing,
    /// The claims could not be serialised.
    #[error("cannot serialise the assertion claims: {0}")]
    Encoding(#[from] serde_json::Error),
}

/// Why a configured signing key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigningKeyError {
    /// Neither a PEM private key nor base64 DER.
    #[error("no private key found: expected a PKCS#8 PEM block `-----BEGIN PRIVATE KEY-----` (make one with `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256` or `openssl genpkey -algorithm ed25519`)")]
    NotAKey,
    /// A SEC1 `EC PRIVATE KEY` block.
    #[error("this is a SEC1 `EC PRIVATE KEY`; convert it to PKCS#8 with `openssl pkcs8 -topk8 -nocrypt -in KEY.pem`")]
    Sec1,
    /// An RSA key.
    #[error("RSA keys are not supported; use a P-256 key (ES256) or an Ed25519 key (EdDSA)")]
    Rsa,
    /// A valid key of the other supported type.
    #[error("this is {found} key, but assertion.algorithm is {algorithm}: use a {expected} key or change the algorithm")]
    WrongType {
        /// What the key is ("an Ed25519", "a P-256").
        found: &'static str,
        /// The configured algorithm.
        algorithm: &'static str,
        /// The key type the algorithm needs.
        expected: &'static str,
    },
    /// PKCS#8, but not a key ring accepts for either algorithm (another curve, corrupt).
    #[error("not a usable {expected} PKCS#8 private key (other curves are not supported)")]
    Unusable {
        /// The key type the algorithm needs.
        expected: &'static str,
    },
    /// The same key appears twice.
    #[error("the same key as signing_keys[{0}]; list each key once")]
    Duplicate(usize),
}

/// Signs assertions and publishes their keys. Built once per loaded configuration: the cache
/// is keyed by app index, so a reload needs a new `Signer` (pass the same `signing_keys` to
/// keep the published keys).
pub struct Signer {
    key: SigningKey,
    rng: SystemRandom,
    kid: String,
    /// `base64url(header) + "."`, the same for every token.
    header_prefix: String,
    jwks: Bytes,
    issuer: String,
    ttl_secs: u64,
    refresh_margin_secs: u64,
    cache: TokenCache,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("kid", &self.kid)
            .field("issuer", &self.issuer)
            .field("ttl_secs", &self.ttl_secs)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// Parses the configured keys (the first signs, all are published) or, when there are
    /// none, generates one for this process and warns. `portcullis check` calls this too.
    pub fn new(settings: &AssertionSettings) -> Result<Signer, AssertionError> {
        let algorithm = settings.algorithm;
        let mut keys = Vec::with_capacity(settings.signing_keys.len().max(1));
        for (index, secret) in settings.signing_keys.iter().enumerate() {
            let problem = |problem| AssertionError::SigningKey { index, problem };
            let der = pkcs8_der(secret.expose()).map_err(problem)?;
            let key = SigningKey::from_pkcs8(algorithm, &der).map_err(problem)?;
            keys.push(key);
        }
        let generated = keys.is_empty();
        if generated {
            let der = generate_pkcs8(algorithm)?;
            let key = SigningKey::from_pkcs8(algorithm, &der)
                .map_err(|problem| AssertionError::SigningKey { index: 0, problem })?;
            keys.push(key);
        }
        let (jwks, kids) = build_jwks(&keys, algorithm)?;
        let kid = kids.into_iter().next().unwrap_or_default();
        if generated {
            tracing::warn!(
                assertion.kid = %kid,
                "assertion.signing_keys is empty: generated a signing key for this process only; \
                 replicas and restarts publish different keys, so configure assertion.signing_keys \
                 when running more than one process"
            );
        }
        let header =
            serde_json::json!({ "alg": algorithm_name(algorithm), "typ": "JWT", "kid": kid });
        let mut header_prefix = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header)?);
        header_prefix.push('.');
        let ttl_secs = settings.ttl.as_secs();
        let mut keys = keys.into_iter();
        let key = keys.next().ok_or(AssertionError::Generation)?;
        Ok(Signer {
            key,
            rng: SystemRandom::new(),
            kid,
            header_prefix,
            jwks,
            issuer: settings.issuer.clone(),
            ttl_secs,
            refresh_margin_secs: (ttl_secs / 5).max(MIN_REFRESH_MARGIN_SECS),
            cache: TokenCache::new(CACHE_CAPACITY),
        })
    }

    /// The JWKS document (`{"keys":[…]}`, each with `kid`, `use: sig`, `alg`), serialised once.
    pub fn jwks(&self) -> &Bytes {
        &self.jwks
    }

    /// Key id of the signing key (first 16 hex digits of its RFC 7638 SHA-256 thumbprint).
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The assertion for `identity` on `app`: a cached token while it has more than
    /// `max(ttl/5, 10 s)` to live, else a freshly signed one.
    ///
    /// `sid` must name one immutable identity. Session ids do: a session's identity never
    /// changes (a new sign-in makes a new sid, and the sid comes from an authenticated,
    /// encrypted cookie), so a token cached by sid always describes the caller.
    pub fn token(
        &self,
        sid: &str,
        app: &App,
        identity: &Identity,
        now: u64,
    ) -> Result<Arc<str>, AssertionError> {
        if let Some(token) = self.cache.get(sid, app.index, now) {
            return Ok(token);
        }
        let token = self.sign(sid, app, identity, now)?;
        let refresh_at = now
            .saturating_add(self.ttl_secs)
            .saturating_sub(self.refresh_margin_secs);
        if refresh_at > now {
            self.cache
                .insert(sid, app.index, Arc::clone(&token), refresh_at, now);
        }
        Ok(token)
    }

    /// Signs a new assertion, bypassing the cache (`iat = now`, `exp = now + ttl`).
    pub fn sign(
        &self,
        sid: &str,
        app: &App,
        identity: &Identity,
        now: u64,
    ) -> Result<Arc<str>, AssertionError> {
        let claims = Claims::new(self, sid, app, identity, now);
        let payload = serde_json::to_vec(&claims)?;
        let mut token =
            String::with_capacity(self.header_prefix.len() + payload.len() * 4 / 3 + 92);
        token.push_str(&self.header_prefix);
        URL_SAFE_NO_PAD.encode_string(&payload, &mut token);
        let signature = self.key.sign(&self.rng, token.as_bytes())?;
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature.as_ref(), &mut token);
        Ok(Arc::from(token))
    }
}
