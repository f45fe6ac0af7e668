//! Identity providers: how a person proves who they are. Each turns a successful login into
//! an [`Identity`](crate::identity::Identity).

pub mod local;
pub mod oidc;
pub mod saml;

use openidconnect::reqwest;

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
    SpKey(#[from] saml::binding::KeyError),
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
