//! Unit tests of the OIDC relying party: hand-forged ID and logout tokens that validation
//! must refuse, the key refetch limit, and the claim helpers.

use base64::Engine;
use openidconnect::core::CoreIdToken;
use openidconnect::Nonce;

use super::claims::payload;
use super::*;
use crate::identity::Identity;

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
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("key");
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
            bearer: None,
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

fn check(provider: &OidcProvider, client: &OidcClient, token: &str) -> Result<Identity, OidcError> {
    let parsed: CoreIdToken = token.parse().map_err(|_| OidcError::InvalidIdToken)?;
    let claims = provider.verified_claims(client, &parsed, &Nonce::new("n-1".into()))?;
    provider.identity_from_claims(&claims)
}

/// Negative cases are hand-built tokens (the real OP in tests/it/oidc.rs signs only valid
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
            parts[1] =
                URL_SAFE_NO_PAD.encode(claims(serde_json::json!({ "sub": "mallory" })).to_string());
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
            let mac_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, jwk.to_string().as_bytes());
            let tag = ring::hmac::sign(&mac_key, input.as_bytes());
            format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
        }),
        ("garbage", "not.a.jwt".to_string()),
    ];
    for (name, token) in cases {
        assert_eq!(
            check(&provider, &client, &token).map(|i| i.user_id),
            Err(OidcError::InvalidIdToken),
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
            Err(OidcError::InvalidLogoutToken),
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

#[tokio::test]
async fn discovery_errors_say_what_failed_in_the_same_words() {
    let config = IdentityProvider {
        id: "corp".into(),
        display_name: "Corp".into(),
        kind: IdentityProviderKind::Oidc {
            issuer: "op.test".into(),
            client_id: "portcullis".into(),
            client_secret: None,
            scopes: vec![],
            acr_values: None,
            prompt: None,
            secret_in_body: false,
            userinfo: false,
            mfa_acr_values: vec![],
            bearer: None,
        },
        claims: Default::default(),
    };
    let provider = OidcProvider::new(&config, Default::default())
        .expect("provider")
        .expect("oidc");
    let error = provider.discover().await.expect_err("not a URL");
    assert!(matches!(error, DiscoveryError::Issuer(_)), "{error:?}");
    // The logged text is the underlying error's, as when discover returned a String.
    assert_eq!(
        error.to_string(),
        url::Url::parse("op.test")
            .expect_err("relative")
            .to_string()
    );
    assert!(!provider.is_available());
}
