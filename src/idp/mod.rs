//! Identity providers: how a person proves who they are. Each turns a successful login into
//! an [`Identity`](crate::identity::Identity).

pub mod local;
pub mod oidc;
pub mod saml;

use std::borrow::Cow;

use openidconnect::reqwest;

use local::LocalLoginError;
use oidc::OidcError;
use saml::SamlError;

/// Why a sign-in failed: a closed set whose kebab-case names, defined once by each source's
/// `as_str`, are the audit `detail` of `login-failed` and the `reason` label of
/// `portcullis_auth_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginFailure {
    /// The OIDC provider's answer did not hold up.
    Oidc(OidcError),
    /// The SAML response was refused.
    Saml(SamlError),
    /// Local user name, password or code.
    Local(LocalLoginError),
    /// The callback's `state` matches no sign-in this browser started.
    StateMismatch,
    /// The sign-in took longer than the flow cookie lives.
    FlowExpired,
    /// The provider's metadata could not be fetched yet.
    IdpUnavailable,
    /// Too many failed attempts for this user and address.
    Throttled,
    /// The session would need more than `session.max_chunks` cookies.
    SessionTooLarge,
    /// Sealing the session failed (not expected with valid keys).
    SessionEncryptionFailed,
    /// The shared replay memory could not record the response: refused, as a replay
    /// cannot be ruled out (`store.kind: redis`, Redis unreachable).
    ReplayCheckUnavailable,
    /// An operator turned the user off (admin API kill switch).
    UserDisabled,
    /// An operator turned the user's entity off.
    EntityDisabled,
}

impl LoginFailure {
    /// The kebab-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            LoginFailure::Oidc(failure) => failure.as_str(),
            LoginFailure::Saml(refusal) => refusal.as_str(),
            LoginFailure::Local(error) => error.as_str(),
            LoginFailure::StateMismatch => "state-mismatch",
            LoginFailure::FlowExpired => "flow-expired",
            LoginFailure::IdpUnavailable => "idp-unavailable",
            LoginFailure::Throttled => "throttled",
            LoginFailure::SessionTooLarge => "session-too-large",
            LoginFailure::SessionEncryptionFailed => "session-encryption-failed",
            LoginFailure::ReplayCheckUnavailable => "replay-check-unavailable",
            LoginFailure::UserDisabled => "user-disabled",
            LoginFailure::EntityDisabled => "entity-disabled",
        }
    }
}

/// A message that may be taken once (a SAML assertion or LogoutRequest, a logout token):
/// its id, and until when it could still be accepted, so its replay memory can end then.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UseOnce {
    /// The message's id.
    pub id: String,
    /// Unix seconds.
    pub until: u64,
}

/// Why a logout message from an identity provider (an OIDC logout token, a SAML
/// LogoutRequest or LogoutResponse) was refused; the audit `detail` of `logout-refused`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogoutRefusal {
    /// The logout token failed a check.
    TokenInvalid,
    /// The logout token was already used.
    TokenReplayed,
    /// The SAML logout message failed a check.
    Saml(SamlError),
    /// The shared replay memory could not record the message (Redis unreachable).
    ReplayCheckUnavailable,
}

impl LogoutRefusal {
    /// The kebab-case name: `logout-token-invalid`, `logout-token-replayed`, or
    /// `logout-<SAML refusal>`.
    pub fn name(self) -> Cow<'static, str> {
        match self {
            LogoutRefusal::TokenInvalid => Cow::Borrowed("logout-token-invalid"),
            LogoutRefusal::TokenReplayed => Cow::Borrowed("logout-token-replayed"),
            LogoutRefusal::Saml(refusal) => Cow::Owned(format!("logout-{}", refusal.as_str())),
            LogoutRefusal::ReplayCheckUnavailable => {
                Cow::Borrowed("logout-replay-check-unavailable")
            }
        }
    }
}

/// Why a provider could not be built from its settings. [`ProviderError::key`] names the
/// provider's key at fault, so `check` can point at it.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The HTTP client for the back channel.
    #[error("the back-channel HTTP client could not be built: {0}")]
    HttpClient(#[from] reqwest::Error),
    /// A SAML metadata file that cannot be used.
    #[error("{0}")]
    SamlMetadata(#[from] saml::metadata::MetadataError),
    /// A SAML SP key pair that cannot sign.
    #[error("{0}")]
    SpKey(#[from] saml::binding::SpKeyError),
}

impl ProviderError {
    /// The key under `identity_providers[N]` that holds the bad value.
    pub fn key(&self) -> &'static str {
        match self {
            ProviderError::HttpClient(_) => "kind",
            ProviderError::SamlMetadata(_) => "idp_metadata",
            ProviderError::SpKey(_) => "sp_signing_key",
        }
    }

    /// How to fix it.
    pub fn hint(&self) -> &'static str {
        match self {
            ProviderError::HttpClient(_) => "the system's TLS roots could not be loaded",
            ProviderError::SamlMetadata(_) => {
                "download the IdP's SAML metadata XML again (it must list a signing certificate)"
            }
            ProviderError::SpKey(_) => "a PEM RSA (2048+) or ECDSA P-256 key and its certificate",
        }
    }
}

/// Says yes at most once per period, across threads: a key refetch forced by an unknown
/// `kid`, which forged tokens must not turn into a flood of requests to the issuer.
pub struct AtMostEvery {
    every: u64,
    /// Unix seconds of the last yes.
    last: std::sync::atomic::AtomicU64,
}

impl AtMostEvery {
    /// Once per `every` seconds; the first call says yes.
    pub fn new(every: u64) -> AtMostEvery {
        AtMostEvery {
            every,
            last: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Never yes (fixed keys in tests).
    #[cfg(test)]
    pub fn never() -> AtMostEvery {
        AtMostEvery {
            every: 0,
            last: std::sync::atomic::AtomicU64::new(u64::MAX),
        }
    }

    /// True when the period since the last yes has passed at `now` (and this call took it).
    pub fn due(&self, now: u64) -> bool {
        use std::sync::atomic::Ordering;
        let last = self.last.load(Ordering::Relaxed);
        now >= last.saturating_add(self.every)
            && self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

/// The asymmetric signature keys (RSA, EC, OKP) of a JWKS document. Keys for encryption,
/// symmetric keys and keys this library cannot read are left out rather than failing the
/// whole set.
pub fn signing_keys(document: &serde_json::Value) -> jsonwebtoken::jwk::JwkSet {
    let keys = document
        .get("keys")
        .and_then(|k| k.as_array())
        .map(|keys| {
            keys.iter()
                .filter(|k| k.get("use").and_then(|u| u.as_str()) != Some("enc"))
                .filter(|k| {
                    matches!(
                        k.get("kty").and_then(|t| t.as_str()),
                        Some("RSA" | "EC" | "OKP")
                    )
                })
                .filter_map(|k| serde_json::from_value::<jsonwebtoken::jwk::Jwk>(k.clone()).ok())
                .collect()
        })
        .unwrap_or_default();
    jsonwebtoken::jwk::JwkSet { keys }
}

/// The HTTP client for an identity provider's back channel (discovery, token, JWKS,
/// metadata). It never follows redirects (SSRF) and keeps no pooled connections: calls are
/// rare, and discovery and logins run on different Pingora runtimes, where a connection kept
/// by one is unusable from the other.
pub fn back_channel_client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::ClientBuilder::new()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(0)
        .timeout(std::time::Duration::from_secs(10))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_set_keeps_its_signing_keys_whatever_else_it_holds() {
        let document = serde_json::json!({ "keys": [
            { "kty": "RSA", "use": "enc", "alg": "RSA-OAEP", "kid": "enc", "n": "AQAB", "e": "AQAB" },
            { "kty": "oct", "kid": "secret", "k": "c2VjcmV0" },
            { "kty": "XYZ", "kid": "unknown-type" },
            { "kty": "EC", "crv": "P-256", "kid": "sig",
              "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
              "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0" },
        ]});
        let kept: Vec<_> = signing_keys(&document)
            .keys
            .into_iter()
            .filter_map(|k| k.common.key_id)
            .collect();
        assert_eq!(kept, ["sig"]);
        assert!(signing_keys(&serde_json::json!({})).keys.is_empty());
    }

    #[test]
    fn failure_names_are_kebab_case_words() {
        let names = [
            LoginFailure::Oidc(OidcError::TokenExchange).as_str(),
            LoginFailure::Saml(SamlError::SignatureInvalid).as_str(),
            LoginFailure::Local(LocalLoginError::BadSecondFactor).as_str(),
            LoginFailure::StateMismatch.as_str(),
            LoginFailure::SessionTooLarge.as_str(),
        ];
        assert_eq!(
            names,
            [
                "token-exchange-failed",
                "signature-invalid",
                "bad-second-factor",
                "state-mismatch",
                "session-too-large"
            ]
        );
        assert_eq!(
            LogoutRefusal::Saml(SamlError::Replayed).name(),
            "logout-replayed"
        );
        assert_eq!(LogoutRefusal::TokenInvalid.name(), "logout-token-invalid");
    }
}
