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

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use bytes::Bytes;
use ring::rand::SystemRandom;
use ring::signature::{
    EcdsaKeyPair, Ed25519KeyPair, KeyPair, Signature, ECDSA_P256_SHA256_FIXED_SIGNING,
};
use serde::Serialize;

use crate::config::{App, AssertionAlgorithm, AssertionSettings, UserType};
use crate::identity::{AuthMethod, Identity};

/// Name of the header that carries the signed assertion.
pub const ASSERTION_HEADER: &str = "X-Portcullis-Assertion";
/// Plain header: the user id.
pub const USER_HEADER: &str = "X-Portcullis-User";
/// Plain header: the e-mail address.
pub const EMAIL_HEADER: &str = "X-Portcullis-Email";
/// Plain header: `internal-user` or `external-user`.
pub const USER_TYPE_HEADER: &str = "X-Portcullis-User-Type";
/// Plain header: the allowed roles, comma-separated.
pub const ROLES_HEADER: &str = "X-Portcullis-Roles";
/// Plain header: the entity (tenant).
pub const ENTITY_HEADER: &str = "X-Portcullis-Entity";

/// Longest single plain header value, in bytes; a longer value is not sent at all.
pub const MAX_VALUE_BYTES: usize = 1024;
/// Longest `X-Portcullis-Roles` value; the list ends at the last whole role that fits.
pub const MAX_ROLES_BYTES: usize = 4096;

/// Most tokens cached at once, over all shards.
const CACHE_CAPACITY: usize = 65_536;
/// Independent locks of the cache, so that workers rarely wait for each other.
const CACHE_SHARDS: usize = 16;
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
        problem: KeyProblem,
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
pub enum KeyProblem {
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

/// One private key, parsed once.
enum SigningKey {
    Es256(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

impl SigningKey {
    /// Parses PKCS#8 DER for `algorithm`, naming the key type when it is the other one.
    fn from_pkcs8(algorithm: AssertionAlgorithm, der: &[u8]) -> Result<Self, KeyProblem> {
        let rng = SystemRandom::new();
        let es256 = || EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng);
        // `maybe_unchecked` accepts PKCS#8 v1 (OpenSSL) and v2 (ring); a public key that is
        // present is still checked against the private key.
        let ed25519 = || Ed25519KeyPair::from_pkcs8_maybe_unchecked(der);
        match algorithm {
            AssertionAlgorithm::Es256 => match es256() {
                Ok(key) => Ok(SigningKey::Es256(key)),
                Err(_) if ed25519().is_ok() => Err(wrong_type(algorithm)),
                Err(_) => Err(KeyProblem::Unusable { expected: "P-256" }),
            },
            AssertionAlgorithm::EdDsa => match ed25519() {
                Ok(key) => Ok(SigningKey::Ed25519(key)),
                Err(_) if es256().is_ok() => Err(wrong_type(algorithm)),
                Err(_) => Err(KeyProblem::Unusable {
                    expected: "Ed25519",
                }),
            },
        }
    }

    fn sign(&self, rng: &SystemRandom, message: &[u8]) -> Result<Signature, AssertionError> {
        match self {
            // FIXED = the JWS form (RFC 7518 §3.4): r || s, 32 bytes each, not ASN.1.
            SigningKey::Es256(key) => key.sign(rng, message).map_err(|_| AssertionError::Signing),
            SigningKey::Ed25519(key) => Ok(key.sign(message)),
        }
    }

    /// The public JWK members and the RFC 7638 thumbprint input (required members, sorted).
    fn public_members(&self) -> Result<(serde_json::Value, String), AssertionError> {
        match self {
            SigningKey::Es256(key) => {
                // ring gives the uncompressed point: 0x04 || x || y.
                let point = key.public_key().as_ref();
                let (Some(x), Some(y)) = (point.get(1..33), point.get(33..65)) else {
                    return Err(AssertionError::Signing);
                };
                let (x, y) = (URL_SAFE_NO_PAD.encode(x), URL_SAFE_NO_PAD.encode(y));
                let thumbprint = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
                let members = serde_json::json!({ "kty": "EC", "crv": "P-256", "x": x, "y": y });
                Ok((members, thumbprint))
            }
            SigningKey::Ed25519(key) => {
                let x = URL_SAFE_NO_PAD.encode(key.public_key().as_ref());
                // RFC 8037 §2 for the OKP member set.
                let thumbprint = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
                let members = serde_json::json!({ "kty": "OKP", "crv": "Ed25519", "x": x });
                Ok((members, thumbprint))
            }
        }
    }
}

fn wrong_type(algorithm: AssertionAlgorithm) -> KeyProblem {
    let (found, expected) = match algorithm {
        AssertionAlgorithm::Es256 => ("an Ed25519", "P-256"),
        AssertionAlgorithm::EdDsa => ("a P-256", "Ed25519"),
    };
    KeyProblem::WrongType {
        found,
        algorithm: algorithm_name(algorithm),
        expected,
    }
}

/// The JWS `alg` name of `algorithm`.
pub fn algorithm_name(algorithm: AssertionAlgorithm) -> &'static str {
    match algorithm {
        AssertionAlgorithm::Es256 => "ES256",
        AssertionAlgorithm::EdDsa => "EdDSA",
    }
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

/// The claim set (PRODUCT.md, "Upstream headers"); `docs/backend-integration.md` documents it.
#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    user_type: UserType,
    roles: Vec<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    entity: Option<&'a str>,
    custom: BTreeMap<&'a str, &'a str>,
    idp: &'a str,
    amr: &'static [&'static str],
    auth_method: AuthMethod,
    sid: &'a str,
    iat: u64,
    exp: u64,
    jti: String,
}

impl<'a> Claims<'a> {
    fn new(
        signer: &'a Signer,
        sid: &'a str,
        app: &'a App,
        identity: &'a Identity,
        now: u64,
    ) -> Self {
        let allowed_custom = app.identity_headers.custom.as_deref();
        Claims {
            iss: &signer.issuer,
            aud: &app.id,
            sub: &identity.user_id,
            email: identity.email.as_deref(),
            name: identity.name.as_deref(),
            user_type: identity.user_type,
            roles: allowed_roles(app, identity).collect(),
            entity: identity.entity.as_deref(),
            custom: identity
                .custom
                .iter()
                .filter(|(key, _)| allowed_custom.is_none_or(|allow| allow.contains(*key)))
                .map(|(key, value)| (key.as_str(), value.as_str()))
                .collect(),
            idp: &identity.idp,
            amr: amr(identity),
            auth_method: identity.auth_method,
            sid,
            iat: now,
            exp: now.saturating_add(signer.ttl_secs),
            jti: format!("{:032x}", rand::random::<u128>()),
        }
    }
}

/// RFC 8176 `amr`: `pwd` stands for an interactive sign-in (OIDC, SAML, local; the IdP chose
/// the first factor), `mfa` is added when a second factor was reported. API keys and bearer
/// JWTs are not interactive: no `pwd`.
fn amr(identity: &Identity) -> &'static [&'static str] {
    let interactive = matches!(
        identity.auth_method,
        AuthMethod::Oidc | AuthMethod::Saml | AuthMethod::Local
    );
    match (interactive, identity.mfa) {
        (true, true) => &["pwd", "mfa"],
        (true, false) => &["pwd"],
        (false, true) => &["mfa"],
        (false, false) => &[],
    }
}

/// The identity's roles that the app lets through (`identity_headers.roles`), in order.
fn allowed_roles<'a>(app: &'a App, identity: &'a Identity) -> impl Iterator<Item = &'a str> {
    let allow = app.identity_headers.roles.as_deref();
    identity
        .roles
        .iter()
        .filter(move |role| allow.is_none_or(|allow| allow.contains(*role)))
        .map(String::as_str)
}

/// The plain identity headers for `identity` on `app`; call only when
/// `app.identity_headers.plain` is on.
///
/// A value is sent exactly as it is or not at all: one that is empty, longer than
/// [`MAX_VALUE_BYTES`], has leading or trailing white space or contains a control character
/// (CR, LF, NUL, tab…) is left out, because a cleaned-up user id could equal another user's.
/// Roles are filtered by the app's allowlist; a role that fails the same test or contains a
/// comma (it would read as two roles) is left out, and the list stops at the last whole role
/// within [`MAX_ROLES_BYTES`]. The assertion always carries the exact values.
pub fn plain_headers(app: &App, identity: &Identity) -> Vec<(&'static str, String)> {
    let mut headers = Vec::with_capacity(5);
    let mut single = |name: &'static str, value: Option<&str>| {
        if let Some(value) = value.filter(|v| forwardable(v, MAX_VALUE_BYTES)) {
            headers.push((name, value.to_string()));
        } else if value.is_some() {
            tracing::debug!(
                header = name,
                "identity header value not forwardable; left out"
            );
        }
    };
    single(USER_HEADER, Some(&identity.user_id));
    single(EMAIL_HEADER, identity.email.as_deref());
    single(USER_TYPE_HEADER, Some(user_type_name(identity.user_type)));
    single(ENTITY_HEADER, identity.entity.as_deref());
    let roles = roles_value(allowed_roles(app, identity));
    if !roles.is_empty() {
        headers.push((ROLES_HEADER, roles));
    }
    headers
}

fn user_type_name(user_type: UserType) -> &'static str {
    match user_type {
        UserType::Internal => "internal-user",
        UserType::External => "external-user",
    }
}

/// Can `value` be a header value verbatim? (RFC 9110 §5.5: receivers trim surrounding white
/// space, and CR/LF/NUL would split or end the header.)
fn forwardable(value: &str, max_bytes: usize) -> bool {
    !value.is_empty()
        && value.len() <= max_bytes
        && value.trim() == value
        && !value.chars().any(char::is_control)
}

fn roles_value<'a>(roles: impl Iterator<Item = &'a str>) -> String {
    let mut out = String::new();
    for role in roles.filter(|role| forwardable(role, MAX_ROLES_BYTES) && !role.contains(',')) {
        let separator = usize::from(!out.is_empty());
        if out.len() + separator + role.len() > MAX_ROLES_BYTES {
            tracing::debug!("X-Portcullis-Roles truncated at {MAX_ROLES_BYTES} bytes");
            break;
        }
        if separator == 1 {
            out.push(',');
        }
        out.push_str(role);
    }
    out
}

/// Bytes the identity headers add to the request, counted as on the HTTP/1.1 wire
/// (`name: value\r\n` per header).
pub fn header_bytes(assertion: &str, plain: &[(&str, String)]) -> usize {
    let line = |name: &str, value: &str| name.len() + value.len() + 4;
    plain
        .iter()
        .map(|(name, value)| line(name, value))
        .sum::<usize>()
        + line(ASSERTION_HEADER, assertion)
}

/// Whether the identity headers exceed the app's `identity_headers.budget_bytes`.
pub fn over_budget(app: &App, assertion: &str, plain: &[(&str, String)]) -> bool {
    header_bytes(assertion, plain) > app.identity_headers.budget_bytes
}

/// A new PKCS#8 private key for `algorithm`, as PEM (for `portcullis keys generate`).
pub fn generate_pem(algorithm: AssertionAlgorithm) -> Result<String, AssertionError> {
    let der = generate_pkcs8(algorithm)?;
    let body = STANDARD.encode(der);
    let mut pem = String::with_capacity(body.len() + body.len() / 64 + 60);
    pem.push_str("-----BEGIN PRIVATE KEY-----\n");
    for line in body.as_bytes().chunks(64) {
        // Base64 output is ASCII, so every chunk is valid UTF-8.
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    Ok(pem)
}

fn generate_pkcs8(algorithm: AssertionAlgorithm) -> Result<Vec<u8>, AssertionError> {
    let rng = SystemRandom::new();
    let document = match algorithm {
        AssertionAlgorithm::Es256 => {
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        }
        AssertionAlgorithm::EdDsa => Ed25519KeyPair::generate_pkcs8(&rng),
    };
    document
        .map(|doc| doc.as_ref().to_vec())
        .map_err(|_| AssertionError::Generation)
}

/// The PKCS#8 DER in a secret: a PEM `PRIVATE KEY` block, or (handy in environment
/// variables, like `audit.signing_key`) the DER as one line of base64.
fn pkcs8_der(text: &str) -> Result<Vec<u8>, KeyProblem> {
    if !text.contains("-----BEGIN") {
        let compact: String = text.split_whitespace().collect();
        return STANDARD.decode(compact).map_err(|_| KeyProblem::NotAKey);
    }
    let mut rest = text.as_bytes();
    loop {
        match rustls_pemfile::read_one_from_slice(rest) {
            Ok(Some((rustls_pemfile::Item::Pkcs8Key(key), _))) => {
                return Ok(key.secret_pkcs8_der().to_vec())
            }
            Ok(Some((rustls_pemfile::Item::Sec1Key(_), _))) => return Err(KeyProblem::Sec1),
            Ok(Some((rustls_pemfile::Item::Pkcs1Key(_), _))) => return Err(KeyProblem::Rsa),
            Ok(Some((_, tail))) => rest = tail,
            Ok(None) | Err(_) => return Err(KeyProblem::NotAKey),
        }
    }
}

/// The serialised JWKS and the kid of each key, in order; refuses a key listed twice.
fn build_jwks(
    keys: &[SigningKey],
    algorithm: AssertionAlgorithm,
) -> Result<(Bytes, Vec<String>), AssertionError> {
    let mut jwks = Vec::with_capacity(keys.len());
    let mut kids: Vec<String> = Vec::with_capacity(keys.len());
    for (index, key) in keys.iter().enumerate() {
        let (mut members, thumbprint) = key.public_members()?;
        let digest = ring::digest::digest(&ring::digest::SHA256, thumbprint.as_bytes());
        let kid = crate::audit::hex(digest.as_ref().get(..8).unwrap_or_default());
        if let Some(first) = kids.iter().position(|k| *k == kid) {
            let problem = KeyProblem::Duplicate(first);
            return Err(AssertionError::SigningKey { index, problem });
        }
        if let Some(object) = members.as_object_mut() {
            object.insert("kid".into(), kid.clone().into());
            object.insert("use".into(), "sig".into());
            object.insert("alg".into(), algorithm_name(algorithm).into());
        }
        jwks.push(members);
        kids.push(kid);
    }
    let document = serde_json::to_vec(&serde_json::json!({ "keys": jwks }))?;
    Ok((Bytes::from(document), kids))
}

/// A cached token and what it was made for.
struct Cached {
    /// Compared on lookup: the map key is only a 64-bit hash of the sid.
    sid: Box<str>,
    token: Arc<str>,
    /// Unix seconds from which the token is too close to `exp` to hand out.
    refresh_at: u64,
}

type Shard = HashMap<(u64, usize), Cached>;

/// Signed tokens by (session id, app index): sharded, bounded, allocation-free on a hit.
///
/// The map key is `(SipHash(sid), app index)` rather than the sid itself, so a lookup needs
/// no `String`; the entry keeps the sid and a hit requires it to match, so a hash collision
/// is a miss (and the newer token replaces the other), never another session's token. The
/// hasher has a random per-process key, so collisions cannot be aimed at.
struct TokenCache {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    shard_capacity: usize,
}

impl TokenCache {
    fn new(capacity: usize) -> Self {
        TokenCache {
            shards: (0..CACHE_SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            shard_capacity: (capacity / CACHE_SHARDS).max(1),
        }
    }

    fn locate(&self, sid: &str, app_index: usize) -> (&Mutex<Shard>, (u64, usize)) {
        let hash = self.hasher.hash_one(sid);
        // The shard count is a power of two, so this keeps the low bits of the hash.
        let shard = (hash as usize) % self.shards.len();
        (&self.shards[shard], (hash, app_index))
    }

    fn get(&self, sid: &str, app_index: usize, now: u64) -> Option<Arc<str>> {
        let (shard, key) = self.locate(sid, app_index);
        let map = lock(shard);
        let cached = map.get(&key)?;
        (*cached.sid == *sid && now < cached.refresh_at).then(|| Arc::clone(&cached.token))
    }

    fn insert(&self, sid: &str, app_index: usize, token: Arc<str>, refresh_at: u64, now: u64) {
        let (shard, key) = self.locate(sid, app_index);
        let mut map = lock(shard);
        if map.len() >= self.shard_capacity && !map.contains_key(&key) {
            map.retain(|_, cached| now < cached.refresh_at);
            if map.len() >= self.shard_capacity {
                // Every entry is live: start over rather than track recency on the hot path.
                map.clear();
            }
        }
        let sid = sid.into();
        map.insert(
            key,
            Cached {
                sid,
                token,
                refresh_at,
            },
        );
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards.iter().map(|shard| lock(shard).len()).sum()
    }
}

/// Locks a shard; a poisoned lock (a panic elsewhere while holding it) is recovered: the map
/// is still a valid map, and at worst holds a token that would have been signed anyway.
fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    shard.lock().unwrap_or_else(|poisoned| {
        shard.clear_poison();
        poisoned.into_inner()
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use jsonwebtoken::jwk::{JwkSet, ThumbprintHash};
    use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
    use serde_json::{json, Value};

    use std::path::Path;

    use super::*;
    use crate::config::{testing::with_apps, IdentityHeaders, Secret};

    const ISSUER: &str = "https://chat.example.com";
    const APPS: &str = "  - id: chat\n    hosts: [c.test]\n    upstream: http://127.0.0.1:1\n    access: { user_types: [internal-user] }\n  - id: wiki\n    hosts: [w.test]\n    upstream: http://127.0.0.1:2\n    access: { user_types: [internal-user] }\n";

    /// The apps `chat` (index 0) and `wiki` (index 1), with `chat`'s identity headers set.
    fn apps(headers: IdentityHeaders) -> (App, App) {
        let mut apps = with_apps(APPS).expect("config").apps.into_iter();
        let mut chat = Arc::try_unwrap(apps.next().expect("chat")).expect("unshared");
        chat.identity_headers = headers;
        let wiki = Arc::try_unwrap(apps.next().expect("wiki")).expect("unshared");
        (chat, wiki)
    }

    fn identity() -> Identity {
        Identity {
            user_id: "u-42".into(),
            email: Some("ada@example.com".into()),
            name: Some("Ada Lovelace".into()),
            user_type: UserType::Internal,
            roles: vec!["admin".into(), "dev".into()],
            entity: Some("acme".into()),
            custom: BTreeMap::from([("team".into(), "r&d".into()), ("cost".into(), "7".into())]),
            idp: "corp".into(),
            auth_method: AuthMethod::Oidc,
            mfa: true,
        }
    }

    fn secret(text: &str) -> Secret {
        let file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(file.path(), text).expect("write key");
        Secret::resolve(&format!("file:{}", file.path().display()), Path::new("/")).expect("secret")
    }

    fn settings(algorithm: AssertionAlgorithm, keys: &[String]) -> AssertionSettings {
        AssertionSettings {
            algorithm,
            signing_keys: keys.iter().map(|k| secret(k)).collect(),
            ttl: Duration::from_secs(300),
            issuer: ISSUER.into(),
        }
    }

    fn signer(algorithm: AssertionAlgorithm) -> Signer {
        Signer::new(&settings(algorithm, &[])).expect("signer")
    }

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    /// Verifies as a backend would: key by kid from the published JWKS, alg, iss, aud, exp.
    fn verify(signer: &Signer, token: &str, alg: Algorithm, aud: &str) -> Result<Value, String> {
        let set: JwkSet = serde_json::from_slice(signer.jwks()).map_err(|e| e.to_string())?;
        let kid = decode_header(token).map_err(|e| e.to_string())?.kid;
        let jwk = set
            .find(kid.as_deref().unwrap_or(""))
            .ok_or("unknown kid")?;
        let key = DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
        let mut validation = Validation::new(alg);
        validation.set_audience(&[aud]);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data = decode::<Value>(token, &key, &validation).map_err(|e| e.to_string())?;
        Ok(data.claims)
    }

    fn round_trip(algorithm: AssertionAlgorithm, alg: Algorithm) {
        let signer = signer(algorithm);
        let (chat, _) = apps(IdentityHeaders::default());
        let now = now();
        let token = signer
            .token("sid-1", &chat, &identity(), now)
            .expect("token");
        let header = decode_header(&*token).expect("header");
        assert_eq!(
            (header.alg, header.kid.as_deref()),
            (alg, Some(signer.kid()))
        );
        let mut claims = verify(&signer, &token, alg, "chat").expect("valid");
        let jti = claims["jti"].as_str().expect("jti").to_string();
        assert!(
            jti.len() == 32 && jti.bytes().all(|b| b.is_ascii_hexdigit()),
            "{jti}"
        );
        claims.as_object_mut().expect("object").remove("jti");
        let expected = json!({
            "iss": ISSUER, "aud": "chat", "sub": "u-42", "email": "ada@example.com",
            "name": "Ada Lovelace", "user_type": "internal-user", "roles": ["admin", "dev"],
            "entity": "acme", "custom": { "team": "r&d", "cost": "7" }, "idp": "corp",
            "amr": ["pwd", "mfa"], "auth_method": "oidc", "sid": "sid-1",
            "iat": now, "exp": now + 300,
        });
        assert_eq!(claims, expected);
        assert!(
            verify(&signer, &token, alg, "wiki").is_err(),
            "audience is checked"
        );
        let other = Signer::new(&settings(algorithm, &[])).expect("signer");
        assert!(
            verify(&other, &token, alg, "chat").is_err(),
            "other keys do not verify"
        );
    }

    #[test]
    fn es256_round_trip_checks_every_claim() {
        round_trip(AssertionAlgorithm::Es256, Algorithm::ES256);
    }

    #[test]
    fn eddsa_round_trip_checks_every_claim() {
        round_trip(AssertionAlgorithm::EdDsa, Algorithm::EdDSA);
    }

    #[test]
    fn absent_fields_are_omitted_and_amr_follows_the_method() {
        let signer = signer(AssertionAlgorithm::Es256);
        let (chat, _) = apps(IdentityHeaders::default());
        let mut who = identity();
        (who.email, who.name, who.entity) = (None, None, None);
        (who.auth_method, who.mfa) = (AuthMethod::ApiKey, false);
        let token = signer.sign("s", &chat, &who, now()).expect("token");
        let claims = verify(&signer, &token, Algorithm::ES256, "chat").expect("valid");
        for absent in ["email", "name", "entity"] {
            assert!(claims.get(absent).is_none(), "{absent}");
        }
        assert_eq!(claims["amr"], json!([]));
        assert_eq!(claims["auth_method"], "api-key");
        who.auth_method = AuthMethod::Local;
        assert_eq!(amr(&who), ["pwd"]);
    }

    #[test]
    fn configured_keys_first_signs_all_are_published() {
        let first = generate_pem(AssertionAlgorithm::Es256).expect("key");
        let second = generate_pem(AssertionAlgorithm::Es256).expect("key");
        assert!(first.lines().all(|line| line.len() <= 64));
        let signer = Signer::new(&settings(
            AssertionAlgorithm::Es256,
            &[first.clone(), second.clone()],
        ))
        .expect("signer");
        let set: JwkSet = serde_json::from_slice(signer.jwks()).expect("jwks");
        let kids: Vec<_> = set.keys.iter().map(|k| k.common.key_id.clone()).collect();
        let alone = Signer::new(&settings(AssertionAlgorithm::Es256, &[second])).expect("signer");
        assert_eq!(
            kids,
            [
                Some(signer.kid().to_string()),
                Some(alone.kid().to_string())
            ]
        );
        assert_ne!(signer.kid(), alone.kid());
        let again = Signer::new(&settings(AssertionAlgorithm::Es256, &[first])).expect("signer");
        assert_eq!(again.kid(), signer.kid(), "kid is deterministic per key");
        let jwks: Value = serde_json::from_slice(signer.jwks()).expect("jwks");
        assert_eq!(
            (&jwks["keys"][1]["use"], &jwks["keys"][1]["alg"]),
            (&json!("sig"), &json!("ES256"))
        );
        let (chat, _) = apps(IdentityHeaders::default());
        let token = signer.token("s", &chat, &identity(), now()).expect("token");
        assert!(verify(&signer, &token, Algorithm::ES256, "chat").is_ok());
        assert!(
            verify(&alone, &token, Algorithm::ES256, "chat").is_err(),
            "the first key signs"
        );
    }

    #[test]
    fn kid_is_the_rfc7638_thumbprint() {
        for algorithm in [AssertionAlgorithm::Es256, AssertionAlgorithm::EdDsa] {
            let signer = signer(algorithm);
            let set: JwkSet = serde_json::from_slice(signer.jwks()).expect("jwks");
            let thumbprint = set.keys[0]
                .thumbprint(ThumbprintHash::SHA256)
                .expect("thumbprint");
            let digest = URL_SAFE_NO_PAD.decode(thumbprint).expect("base64url");
            assert_eq!(crate::audit::hex(&digest[..8]), signer.kid());
        }
    }

    #[test]
    fn keys_are_checked_with_a_useful_error() {
        let ed = generate_pem(AssertionAlgorithm::EdDsa).expect("key");
        let es = generate_pem(AssertionAlgorithm::Es256).expect("key");
        let problem = |algorithm, keys: &[String]| match Signer::new(&settings(algorithm, keys)) {
            Err(AssertionError::SigningKey { index, problem }) => (index, problem),
            other => panic!("expected a key error, got {other:?}"),
        };
        let (index, wrong) = problem(AssertionAlgorithm::Es256, &[es.clone(), ed.clone()]);
        assert_eq!(index, 1);
        assert!(matches!(
            wrong,
            KeyProblem::WrongType {
                found: "an Ed25519",
                ..
            }
        ));
        let message = AssertionError::SigningKey {
            index,
            problem: wrong,
        }
        .to_string();
        assert!(
            message.contains("assertion.signing_keys[1]") && message.contains("ES256"),
            "{message}"
        );
        let (_, wrong) = problem(AssertionAlgorithm::EdDsa, std::slice::from_ref(&es));
        assert!(matches!(
            wrong,
            KeyProblem::WrongType {
                found: "a P-256",
                ..
            }
        ));
        let relabel = |label: &str| es.replace("PRIVATE KEY", label);
        assert_eq!(
            problem(AssertionAlgorithm::Es256, &[relabel("EC PRIVATE KEY")]).1,
            KeyProblem::Sec1
        );
        assert_eq!(
            problem(AssertionAlgorithm::Es256, &[relabel("RSA PRIVATE KEY")]).1,
            KeyProblem::Rsa
        );
        assert_eq!(
            problem(AssertionAlgorithm::Es256, &["hunter2!".into()]).1,
            KeyProblem::NotAKey
        );
        let junk = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n".to_string();
        assert!(matches!(
            problem(AssertionAlgorithm::Es256, &[junk]).1,
            KeyProblem::Unusable { .. }
        ));
        assert_eq!(
            problem(AssertionAlgorithm::Es256, &[es.clone(), es.clone()]),
            (1, KeyProblem::Duplicate(0))
        );
        // One line of base64 DER (as in an environment variable) is accepted too.
        let der: String = es.lines().filter(|l| !l.starts_with("-----")).collect();
        assert!(Signer::new(&settings(AssertionAlgorithm::Es256, &[der])).is_ok());
    }

    #[test]
    fn cache_reuses_a_token_per_session_and_app_until_near_expiry() {
        let signer = signer(AssertionAlgorithm::Es256);
        let (chat, wiki) = apps(IdentityHeaders::default());
        let who = identity();
        let t0 = 1_000_000;
        let first = signer.token("s1", &chat, &who, t0).expect("token");
        let hit = signer.token("s1", &chat, &who, t0 + 239).expect("token");
        assert!(Arc::ptr_eq(&first, &hit));
        for other in [
            signer.token("s1", &wiki, &who, t0).expect("token"),
            signer.token("s2", &chat, &who, t0).expect("token"),
            signer.sign("s1", &chat, &who, t0).expect("token"),
        ] {
            assert!(!Arc::ptr_eq(&first, &other));
        }
        // ttl 300 s: handed out until 60 s (ttl/5) before exp, then re-signed.
        let renewed = signer.token("s1", &chat, &who, t0 + 240).expect("token");
        assert!(!Arc::ptr_eq(&first, &renewed));
        assert!(Arc::ptr_eq(
            &renewed,
            &signer.token("s1", &chat, &who, t0 + 241).expect("token")
        ));
        // Short ttl: the margin is at least 10 s.
        let mut short = settings(AssertionAlgorithm::Es256, &[]);
        short.ttl = Duration::from_secs(30);
        let signer = Signer::new(&short).expect("signer");
        let first = signer.token("s1", &chat, &who, t0).expect("token");
        assert!(Arc::ptr_eq(
            &first,
            &signer.token("s1", &chat, &who, t0 + 19).expect("token")
        ));
        assert!(!Arc::ptr_eq(
            &first,
            &signer.token("s1", &chat, &who, t0 + 20).expect("token")
        ));
    }

    #[test]
    fn roles_and_custom_follow_the_app_allowlists() {
        let signer = signer(AssertionAlgorithm::Es256);
        let headers = IdentityHeaders {
            plain: true,
            roles: Some(vec!["dev".into(), "ops".into()]),
            custom: Some(vec!["team".into()]),
            ..IdentityHeaders::default()
        };
        let (chat, _) = apps(headers);
        let token = signer.sign("s", &chat, &identity(), now()).expect("token");
        let claims = verify(&signer, &token, Algorithm::ES256, "chat").expect("valid");
        assert_eq!(
            (&claims["roles"], &claims["custom"]),
            (&json!(["dev"]), &json!({ "team": "r&d" }))
        );
        let plain = plain_headers(&chat, &identity());
        assert!(plain.contains(&(ROLES_HEADER, "dev".to_string())));
    }

    #[test]
    fn plain_headers_are_sent_verbatim_or_not_at_all() {
        let (chat, _) = apps(IdentityHeaders::default());
        let expected = [
            (USER_HEADER, "u-42"),
            (EMAIL_HEADER, "ada@example.com"),
            (USER_TYPE_HEADER, "internal-user"),
            (ENTITY_HEADER, "acme"),
            (ROLES_HEADER, "admin,dev"),
        ];
        let expected: Vec<_> = expected.iter().map(|(n, v)| (*n, v.to_string())).collect();
        assert_eq!(plain_headers(&chat, &identity()), expected);

        let mut who = identity();
        who.user_id = "mallory\r\nX-Portcullis-Roles: admin".into();
        who.email = Some("a".repeat(MAX_VALUE_BYTES + 1));
        who.entity = Some(" acme".into());
        who.roles = vec![
            "ok".into(),
            "a,admin".into(),
            "bad\0".into(),
            String::new(),
            "fine".into(),
        ];
        let names: Vec<_> = plain_headers(&chat, &who).into_iter().collect();
        assert_eq!(
            names,
            [
                (USER_TYPE_HEADER, "internal-user".to_string()),
                (ROLES_HEADER, "ok,fine".to_string())
            ]
        );

        who.roles = (0..1000).map(|i| format!("role-{i:04}")).collect();
        let roles = roles_value(who.roles.iter().map(String::as_str));
        assert!(roles.len() <= MAX_ROLES_BYTES && roles.ends_with(|c: char| c.is_ascii_digit()));
        assert_eq!(roles.split(',').count(), (MAX_ROLES_BYTES + 1) / 10);
        assert!(roles.split(',').all(|r| r.len() == 9));
    }

    #[test]
    fn header_budget() {
        let (mut chat, _) = apps(IdentityHeaders::default());
        let plain = vec![(USER_HEADER, "u-42".to_string())];
        let bytes = header_bytes("abc", &plain);
        assert_eq!(
            bytes,
            ASSERTION_HEADER.len() + 3 + 4 + USER_HEADER.len() + 4 + 4
        );
        chat.identity_headers.budget_bytes = bytes;
        assert!(!over_budget(&chat, "abc", &plain));
        assert!(over_budget(&chat, "abcd", &plain));
    }

    #[test]
    fn cache_stays_bounded() {
        let cache = TokenCache::new(64);
        let token: Arc<str> = Arc::from("t");
        for i in 0..10_000 {
            cache.insert(
                &format!("sid-{i}"),
                i % 3,
                Arc::clone(&token),
                2_000 + i as u64 % 7,
                1_000,
            );
            assert!(cache.len() <= 64, "after {i}: {}", cache.len());
        }
        // Through the signer, with a small cache.
        let mut signer = signer(AssertionAlgorithm::EdDsa);
        signer.cache = TokenCache::new(32);
        let (chat, _) = apps(IdentityHeaders::default());
        for i in 0..200 {
            signer
                .token(&format!("s{i}"), &chat, &identity(), 1_000)
                .expect("token");
            assert!(signer.cache.len() <= 32);
        }
    }

    #[test]
    fn stale_entries_make_room_before_a_shard_is_cleared() {
        let cache = TokenCache::new(CACHE_SHARDS * 4);
        let shard_of = |sid: &str| cache.locate(sid, 0).0 as *const Mutex<Shard>;
        let target = shard_of("live");
        let same: Vec<String> = (0..)
            .map(|i| format!("sid-{i}"))
            .filter(|sid| shard_of(sid) == target)
            .take(7)
            .collect();
        let token: Arc<str> = Arc::from("t");
        let put = |sid: &str, refresh_at, now| {
            cache.insert(sid, 0, Arc::clone(&token), refresh_at, now);
        };
        put("live", 10_000, 100);
        for sid in &same[..3] {
            put(sid, 200, 100);
        }
        let shard_len = || lock(cache.locate("live", 0).0).len();
        assert_eq!(shard_len(), 4, "the shard is full");
        put(&same[3], 10_000, 500);
        assert_eq!(shard_len(), 2, "stale entries dropped, live ones kept");
        assert!(cache.get("live", 0, 500).is_some());
        put(&same[4], 10_000, 500);
        put(&same[5], 10_000, 500);
        put(&same[6], 10_000, 500);
        assert_eq!(shard_len(), 1, "a shard full of live entries starts over");
        assert!(cache.get(&same[6], 0, 500).is_some());
    }

    #[test]
    fn openssl_style_pkcs8_v1_keys_are_read() {
        // RFC 8410 §10.3: an Ed25519 PKCS#8 v1 key (no public key inside) and its public key.
        let pem = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n-----END PRIVATE KEY-----\n";
        let public = "19bf44096984cdfe8541bac167dc3b96c85086aa30b6b6cb0c5c38ad703166e1";
        let signer = Signer::new(&settings(AssertionAlgorithm::EdDsa, &[pem.into()])).expect("key");
        let jwks: Value = serde_json::from_slice(signer.jwks()).expect("jwks");
        let x = URL_SAFE_NO_PAD
            .decode(jwks["keys"][0]["x"].as_str().expect("x"))
            .expect("b64");
        assert_eq!(crate::audit::hex(&x), public);
        let (chat, _) = apps(IdentityHeaders::default());
        let token = signer.token("s", &chat, &identity(), now()).expect("token");
        assert!(verify(&signer, &token, Algorithm::EdDSA, "chat").is_ok());
    }

    #[test]
    fn hash_collisions_and_poisoned_locks_are_misses_not_panics() {
        let cache = TokenCache::new(64);
        let (shard, key) = cache.locate("mine", 0);
        let token: Arc<str> = Arc::from("someone else's");
        let sid = "theirs".into();
        lock(shard).insert(
            key,
            Cached {
                sid,
                token,
                refresh_at: u64::MAX,
            },
        );
        assert!(
            cache.get("mine", 0, 0).is_none(),
            "same hash, other sid: a miss"
        );

        let cache = Arc::new(cache);
        let poisoner = Arc::clone(&cache);
        let _ = std::thread::spawn(move || {
            let (shard, _) = poisoner.locate("mine", 0);
            let _guard = shard.lock();
            panic!("poison the shard");
        })
        .join();
        assert!(cache.locate("mine", 0).0.is_poisoned());
        cache.insert("mine", 0, Arc::from("t"), 10, 0);
        assert_eq!(cache.get("mine", 0, 1).as_deref(), Some("t"));
    }
}
