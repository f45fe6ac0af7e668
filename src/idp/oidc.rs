//! OpenID Connect relying party (authorization code flow with PKCE), on the `openidconnect`
//! crate: discovery, the authorization request, the code exchange and ID token validation
//! (signature against the OP's JWKS, `iss`, `aud`, `azp`, `exp`, `iat`, `nonce`, and only
//! the algorithms the OP advertises — never `none`).

use std::sync::{Arc, RwLock};

use base64::Engine;
use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreIdToken};
use openidconnect::{
    reqwest, AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce,
    PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope, TokenResponse,
};
use openidconnect::{AuthType, LogoutRequest, PostLogoutRedirectUrl, ProviderMetadataWithLogout};
use serde::{Deserialize, Serialize};

use crate::config::{IdentityProvider, IdentityProviderKind, UserType};
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
    http: reqwest::Client,
    metadata: RwLock<Option<Arc<Metadata>>>,
}

/// Discovery document with the RP-initiated logout field (`end_session_endpoint`).
type Metadata = ProviderMetadataWithLogout;

impl OidcProvider {
    /// Builds the provider; `None` if `provider` is not OIDC.
    pub fn new(provider: &IdentityProvider) -> Option<OidcProvider> {
        let IdentityProviderKind::Oidc {
            issuer,
            client_id,
            client_secret,
            scopes,
            acr_values,
            prompt,
            secret_in_body,
        } = &provider.kind
        else {
            return None;
        };
        // Never follow redirects from the OP's back channel (SSRF). No pooled connections:
        // calls are rare, and discovery and logins run on different Pingora runtimes, where
        // a connection kept by one is unusable from the other.
        let http = reqwest::ClientBuilder::new()
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(0)
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .ok()?;
        Some(OidcProvider {
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
            http,
            metadata: RwLock::new(None),
        })
    }

    /// Fetches the discovery document and the JWKS; on success they replace the old ones.
    pub async fn discover(&self) -> Result<(), String> {
        let issuer = IssuerUrl::new(self.issuer.clone()).map_err(|e| e.to_string())?;
        let metadata = Metadata::discover_async(issuer, &self.http)
            .await
            .map_err(|e| e.to_string())?;
        if let Ok(mut slot) = self.metadata.write() {
            *slot = Some(Arc::new(metadata));
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
        .set_auth_type(if self.secret_in_body {
            AuthType::RequestBody
        } else {
            AuthType::BasicAuth
        }))
    }

    /// The authorization request: where to send the browser, and what to remember.
    pub fn start(
        &self,
        redirect_uri: &str,
        return_to: &str,
        now: u64,
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
        for (name, value) in &self.extra_params {
            request = request.add_extra_param(*name, value.clone());
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
        };
        Ok((url.to_string(), flow))
    }

    /// Exchanges the code and validates the ID token; the identity on success.
    pub async fn finish(
        &self,
        flow: &FlowState,
        code: &str,
    ) -> Result<(Identity, String), OidcFailure> {
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
        let identity = self.identity_from(&client, id_token, &flow.nonce)?;
        Ok((identity, id_token.to_string()))
    }

    /// Validates an ID token (signature with the OP's keys, `iss`, `aud`, `azp`, `exp`,
    /// `iat`, `nonce`, allowed algorithms) and maps it to an identity.
    fn identity_from(
        &self,
        client: &OidcClient,
        id_token: &CoreIdToken,
        nonce: &str,
    ) -> Result<Identity, OidcFailure> {
        let verifier = client.id_token_verifier();
        let claims = id_token
            .claims(&verifier, &Nonce::new(nonce.to_string()))
            .map_err(|e| {
                tracing::warn!(idp = %self.id, error = %e, "OIDC ID token refused");
                OidcFailure::InvalidIdToken
            })?;
        // The signature is verified over this exact token: its payload may be read for the
        // claims the core types do not model (groups, amr).
        let extra = payload(&id_token.to_string()).unwrap_or_default();
        let strings = |name: &str| -> Vec<String> {
            extra
                .get(name)
                .and_then(|v| v.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        let mfa = mfa_from_amr(&strings("amr"));
        Ok(Identity {
            user_id: claims.subject().to_string(),
            email: claims.email().map(|e| e.to_string()),
            name: claims
                .name()
                .and_then(|n| n.get(None))
                .map(|n| n.to_string()),
            user_type: UserType::External,
            roles: strings("groups"),
            entity: None,
            custom: Default::default(),
            idp: self.id.clone(),
            auth_method: AuthMethod::Oidc,
            mfa,
        })
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
            },
        };
        let provider = OidcProvider::new(&config).expect("provider");
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
        provider.identity_from(client, &parsed, "n-1")
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
            (identity.user_id.as_str(), identity.roles.clone()),
            ("alice", vec!["staff".to_string()])
        );

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
    fn payload_reads_claims_and_survives_garbage() {
        let body = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"groups":["a"],"amr":["pwd"]}"#);
        let claims = payload(&format!("e30.{body}.sig")).expect("payload");
        assert_eq!(claims["groups"][0], "a");
        assert!(payload("not-a-jwt").is_none());
        assert!(payload("a.!!!.c").is_none());
    }
}
