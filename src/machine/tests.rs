use std::time::Duration;

use base64::Engine;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use super::*;
use crate::config::{
    AllowlistMode, BearerRules, ClaimMapping, ClaimPath, IdentityProvider, IpAllowlist,
    ServiceAccount, UserType,
};

const ISSUER: &str = "https://issuer.test";

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

struct RsaKey {
    private_pem: Vec<u8>,
    public_pem: Vec<u8>,
    jwk: Jwk,
}

fn rsa_key(kid: &str) -> RsaKey {
    let rsa = openssl::rsa::Rsa::generate(2048).expect("rsa");
    let jwk: Jwk = serde_json::from_value(json!({
        "kty": "RSA", "kid": kid, "use": "sig",
        "n": b64(&rsa.n().to_vec()), "e": b64(&rsa.e().to_vec()),
    }))
    .expect("jwk");
    let key = openssl::pkey::PKey::from_rsa(rsa).expect("pkey");
    RsaKey {
        private_pem: key.private_key_to_pem_pkcs8().expect("pem"),
        public_pem: key.public_key_to_pem().expect("public pem"),
        jwk,
    }
}

fn ec_pem() -> Vec<u8> {
    let group =
        openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).expect("group");
    let key = openssl::ec::EcKey::generate(&group).expect("ec");
    openssl::pkey::PKey::from_ec_key(key)
        .expect("pkey")
        .private_key_to_pem_pkcs8()
        .expect("pem")
}

fn rules(algorithms: &[Algorithm], scopes: &[&str]) -> BearerRules {
    BearerRules {
        audiences: vec!["chat-api".into()],
        algorithms: algorithms.to_vec(),
        required_scopes: scopes.iter().map(|s| s.to_string()).collect(),
        clock_skew: Duration::from_secs(30),
    }
}

fn provider() -> IdentityProvider {
    IdentityProvider {
        id: "partners".into(),
        display_name: "Partners".into(),
        kind: IdentityProviderKind::Local { users: vec![] },
        claims: ClaimMapping {
            entity: Some(ClaimPath("org.id".into())),
            ..ClaimMapping::default()
        },
    }
}

fn verifier(key: &RsaKey, rules: BearerRules) -> JwtVerifier {
    let keys = JwkSet {
        keys: vec![key.jwk.clone()],
    };
    JwtVerifier::new(
        &provider(),
        ISSUER,
        rules,
        KeySource::preloaded(ISSUER, keys),
        Arc::new(IdentityMapping::default()),
    )
}

fn claims() -> Value {
    let now = now();
    json!({
        "iss": ISSUER, "aud": "chat-api", "sub": "svc-42", "client_id": "reporting",
        "scope": "chat read", "org": { "id": "acme" },
        "iat": now, "exp": now + 300, "jti": "t-1",
    })
}

fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value, key: &EncodingKey) -> String {
    let header = Header {
        kid: kid.map(str::to_string),
        typ: Some("at+jwt".into()),
        ..Header::new(alg)
    };
    jsonwebtoken::encode(&header, claims, key).expect("sign")
}

fn rs256(key: &RsaKey, claims: &Value) -> String {
    let encoding = EncodingKey::from_rsa_pem(&key.private_pem).expect("key");
    sign(Algorithm::RS256, Some("k1"), claims, &encoding)
}

async fn check(verifier: &JwtVerifier, token: &str) -> Result<Caller, Refusal> {
    let digest = cache::digest(token);
    verifier
        .verify(token, &digest, now())
        .await
        .map(|(caller, _)| caller)
        .map_err(|(refusal, _)| refusal)
}

#[tokio::test]
async fn a_valid_token_becomes_a_caller_with_the_mapped_identity() {
    let key = rsa_key("k1");
    let verifier = verifier(&key, rules(&[Algorithm::RS256], &["chat"]));
    let claims = claims();
    let token = rs256(&key, &claims);
    let caller = check(&verifier, &token).await.expect("accepted");
    let who = &caller.identity;
    assert_eq!(who.user_id, "svc-42");
    assert_eq!(who.entity.as_deref(), Some("acme"));
    assert_eq!(who.client_id.as_deref(), Some("reporting"));
    assert_eq!(
        who.custom.get("scopes").map(String::as_str),
        Some("chat read")
    );
    assert_eq!(who.auth_method, AuthMethod::BearerJwt);
    assert_eq!(who.idp, "partners");
    assert!(caller.sid.starts_with("bearer:") && caller.sid.len() == 7 + 24);
    assert!(
        !caller.sid.contains(&token[..20]),
        "the sid never shows the token"
    );
    assert_eq!(Some(caller.issued_at), claims["iat"].as_u64());
    assert_eq!(Some(caller.expires_at), claims["exp"].as_u64());
}

#[tokio::test]
async fn every_forgery_is_refused_with_its_reason() {
    let key = rsa_key("k1");
    let verifier = verifier(&key, rules(&[Algorithm::RS256], &["chat"]));
    let other = rsa_key("k1");
    let real = EncodingKey::from_rsa_pem(&key.private_pem).expect("key");
    let with = |change: &dyn Fn(&mut Value)| {
        let mut c = claims();
        change(&mut c);
        c
    };
    let now = now();
    let alg_none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(claims().to_string().as_bytes())
    );
    let cases: Vec<(&str, String, Refusal)> = vec![
        (
            "another key, same kid",
            rs256(&other, &claims()),
            Refusal::SignatureInvalid,
        ),
        ("alg none", alg_none, Refusal::TokenMalformed),
        (
            "HS256 keyed with the public key",
            sign(
                Algorithm::HS256,
                Some("k1"),
                &claims(),
                &EncodingKey::from_secret(&key.public_pem),
            ),
            Refusal::AlgorithmRefused,
        ),
        (
            "PS256 where only RS256 is allowed",
            sign(Algorithm::PS256, Some("k1"), &claims(), &real),
            Refusal::AlgorithmRefused,
        ),
        (
            "expired",
            rs256(&key, &with(&|c| c["exp"] = json!(now - 120))),
            Refusal::TokenExpired,
        ),
        (
            "not yet valid",
            rs256(&key, &with(&|c| c["nbf"] = json!(now + 3600))),
            Refusal::TokenNotYetValid,
        ),
        (
            "issued in the future",
            rs256(&key, &with(&|c| c["iat"] = json!(now + 3600))),
            Refusal::TokenNotYetValid,
        ),
        (
            "wrong audience",
            rs256(&key, &with(&|c| c["aud"] = json!("other-api"))),
            Refusal::AudienceMismatch,
        ),
        (
            "wrong issuer",
            rs256(&key, &with(&|c| c["iss"] = json!("https://evil.test"))),
            Refusal::IssuerMismatch,
        ),
        (
            "no expiry",
            rs256(
                &key,
                &with(&|c| drop(c.as_object_mut().map(|o| o.remove("exp")))),
            ),
            Refusal::ExpiryMissing,
        ),
        (
            "unknown kid",
            sign(Algorithm::RS256, Some("k9"), &claims(), &real),
            Refusal::KeyUnknown,
        ),
        (
            "missing scope",
            rs256(&key, &with(&|c| c["scope"] = json!("read"))),
            Refusal::InsufficientScope,
        ),
    ];
    for (name, token, want) in cases {
        assert_eq!(check(&verifier, &token).await.err(), Some(want), "{name}");
    }
    // A type that says "not an access token".
    let header = Header {
        kid: Some("k1".into()),
        typ: Some("logout+jwt".into()),
        ..Header::new(Algorithm::RS256)
    };
    let logout = jsonwebtoken::encode(&header, &claims(), &real).expect("sign");
    assert_eq!(
        check(&verifier, &logout).await.err(),
        Some(Refusal::TypeRefused)
    );
    // An ECDSA signature claiming the RSA key's kid: the algorithm does not fit the key.
    let lenient = self::verifier(&key, rules(&crate::config::DEFAULT_ALGORITHMS, &[]));
    let ec = EncodingKey::from_ec_pem(&ec_pem()).expect("ec key");
    let confused = sign(Algorithm::ES256, Some("k1"), &claims(), &ec);
    assert_eq!(
        check(&lenient, &confused).await.err(),
        Some(Refusal::AlgorithmRefused)
    );
    // RS256 ↔ PS256 swapped in the header, signature kept: it does not verify.
    let real_token = rs256(&key, &claims());
    let mut parts = real_token.splitn(2, '.');
    let (_, rest) = (parts.next(), parts.next().expect("rest"));
    let header = b64(br#"{"alg":"PS256","typ":"at+jwt","kid":"k1"}"#);
    let swapped = format!("{header}.{rest}");
    assert_eq!(
        check(&lenient, &swapped).await.err(),
        Some(Refusal::SignatureInvalid)
    );
    assert!(check(&lenient, &real_token).await.is_ok());
}

#[tokio::test]
async fn a_token_without_sub_is_its_clients() {
    let key = rsa_key("k1");
    let verifier = verifier(&key, rules(&[Algorithm::RS256], &[]));
    let mut c = claims();
    c.as_object_mut().map(|o| o.remove("sub"));
    c.as_object_mut().map(|o| o.remove("client_id"));
    c["azp"] = json!("nightly-export");
    let caller = check(&verifier, &rs256(&key, &c)).await.expect("accepted");
    assert_eq!(caller.identity.user_id, "nightly-export");
    assert_eq!(caller.identity.client_id.as_deref(), Some("nightly-export"));
    c.as_object_mut().map(|o| o.remove("azp"));
    c["cid"] = json!("0oa-okta-client");
    let okta = check(&verifier, &rs256(&key, &c)).await.expect("accepted");
    assert_eq!(okta.identity.client_id.as_deref(), Some("0oa-okta-client"));
    c.as_object_mut().map(|o| o.remove("cid"));
    let none = check(&verifier, &rs256(&key, &c)).await.err();
    assert_eq!(none, Some(Refusal::ClaimsUnusable));
}

fn auth_with(key: &RsaKey, accounts: &[ServiceAccount]) -> MachineAuth {
    MachineAuth {
        issuers: vec![verifier(key, rules(&[Algorithm::RS256], &[]))],
        introspectors: Vec::new(),
        accounts: ServiceAccounts::new(accounts, &IdentityMapping::default()),
        verified: VerifiedTokens::new(cache::CAPACITY),
    }
}

const BEARER_ONLY: Accept = Accept {
    session: false,
    bearer: true,
    api_key: false,
};
const EVERYTHING: Accept = Accept {
    session: true,
    bearer: true,
    api_key: true,
};

#[tokio::test]
async fn tokens_are_routed_by_issuer_and_a_repeat_costs_a_lookup() {
    let key = rsa_key("k1");
    let auth = auth_with(&key, &[]);
    let token = rs256(&key, &claims());
    let now = now();
    let first = auth
        .authenticate(Presented::Bearer(&token), BEARER_ONLY, None, now)
        .await;
    assert!(matches!(first, Ok((_, Accepted::Checked))));
    let again = auth
        .authenticate(Presented::Bearer(&token), BEARER_ONLY, None, now)
        .await;
    assert!(matches!(again, Ok((_, Accepted::Cached))));
    assert_eq!(auth.cached_tokens(), 1);
    // Past its expiry the cache does not answer for it (and the signature check refuses).
    let later = claims()["exp"].as_u64().expect("exp") + 1;
    assert_eq!(
        auth.verified
            .get(&cache::digest(&token), later)
            .map(|r| r.is_ok()),
        None
    );
    let mut stranger = claims();
    stranger["iss"] = json!("https://stranger.test");
    let auth_ref = &auth;
    let refused = |t: String| async move {
        let auth = auth_ref;
        auth.authenticate(Presented::Bearer(&t), BEARER_ONLY, None, now)
            .await
            .err()
    };
    assert_eq!(
        refused(rs256(&key, &stranger)).await,
        Some(Refusal::IssuerUnknown)
    );
    assert_eq!(
        refused("not-a-jwt".into()).await,
        Some(Refusal::TokenMalformed)
    );
    let huge = format!("{}.{}.x", "a".repeat(10), "b".repeat(MAX_TOKEN_BYTES));
    assert_eq!(refused(huge).await, Some(Refusal::TokenTooLarge));
    // An app without `bearer` does not take it, however valid.
    let session_only = Accept::default();
    let not_here = auth
        .authenticate(Presented::Bearer(&token), session_only, None, now)
        .await;
    assert_eq!(not_here.err(), Some(Refusal::CredentialNotAccepted));
}

#[test]
fn the_token_cache_is_bounded_and_drops_expired_entries_first() {
    let cache = VerifiedTokens::new(3);
    let now = 1_000;
    for (i, until) in [(1u8, 1_001), (2, 5_000), (3, 5_000)] {
        cache.remember([i; 32], Err(Refusal::TokenInactive), until, now);
    }
    cache.remember([4; 32], Err(Refusal::TokenInactive), 5_000, 1_002);
    assert_eq!(cache.len(), 3, "the expired entry made room");
    assert!(cache.get(&[2; 32], 1_002).is_some());
    cache.remember([5; 32], Err(Refusal::TokenInactive), 5_000, 1_003);
    assert_eq!(cache.len(), 1, "full of live entries: cleared, never grown");
    cache.remember([6; 32], Err(Refusal::TokenInactive), 900, 1_003);
    assert!(
        cache.get(&[6; 32], 1_003).is_none(),
        "already over: not kept"
    );
}

#[test]
fn one_credential_is_read_from_the_headers() {
    let headers = |pairs: &[(&'static str, &str)]| {
        let mut map = http::HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, value.parse().expect("value"));
        }
        map
    };
    let key = crate::apikey::generate().key;
    let read_for = |accept: Accept, pairs: &[(&'static str, &str)]| {
        presented(&headers(pairs), accept).map(|p| p.map(|(p, _)| format!("{p:?}")))
    };
    let read = |pairs: &[(&'static str, &str)]| read_for(EVERYTHING, pairs);
    assert_eq!(read(&[]), Ok(None));
    assert_eq!(read(&[("authorization", "Basic dXNlcjpwYXNz")]), Ok(None));
    let source = |pairs: &[(&'static str, &str)]| {
        presented(&headers(pairs), EVERYTHING).map(|p| p.map(|(_, header)| header))
    };
    assert_eq!(source(&[("x-api-key", &key)]), Ok(Some("x-api-key")));
    let key_as_bearer = format!("Bearer {key}");
    assert_eq!(
        source(&[("authorization", &key_as_bearer)]),
        Ok(Some("authorization"))
    );
    assert_eq!(
        read(&[("authorization", "bearer abc.def.ghi")]),
        Ok(Some(format!("{:?}", Presented::Bearer("abc.def.ghi"))))
    );
    let as_bearer = format!("Bearer {key}");
    assert_eq!(
        read(&[("authorization", &as_bearer)]),
        Ok(Some(format!("{:?}", Presented::ApiKey(&key))))
    );
    assert_eq!(
        read(&[("x-api-key", &key)]),
        Ok(Some(format!("{:?}", Presented::ApiKey(&key))))
    );
    assert_eq!(
        read(&[("authorization", "Bearer a"), ("authorization", "Bearer b")]),
        Err(Refusal::CredentialsAmbiguous)
    );
    assert_eq!(
        read(&[("authorization", "Bearer a"), ("x-api-key", &key)]),
        Err(Refusal::CredentialsAmbiguous)
    );
    assert_eq!(
        read(&[("authorization", "Bearer ")]),
        Err(Refusal::TokenMalformed)
    );
    // What the app does not take is the upstream's business: left alone.
    let keys_only = Accept {
        session: true,
        bearer: false,
        api_key: true,
    };
    assert_eq!(
        read_for(keys_only, &[("authorization", "Bearer abc.def.ghi")]),
        Ok(None)
    );
    assert_eq!(
        read_for(keys_only, &[("authorization", "Bearer a b")]),
        Ok(None)
    );
    assert_eq!(
        read_for(
            keys_only,
            &[("authorization", "Bearer abc"), ("x-api-key", &key)]
        ),
        Ok(Some(format!("{:?}", Presented::ApiKey(&key))))
    );
    assert_eq!(read_for(BEARER_ONLY, &[("x-api-key", &key)]), Ok(None));
    assert_eq!(
        read_for(BEARER_ONLY, &[("authorization", &as_bearer)]),
        Ok(None)
    );
    assert_eq!(
        read(&[("authorization", "Bearer a b")]),
        Err(Refusal::TokenMalformed)
    );
}

fn account(id: &str, hashes: &[&str]) -> ServiceAccount {
    ServiceAccount {
        id: id.into(),
        key_hashes: hashes
            .iter()
            .map(|h| crate::apikey::decode_hash(h).expect("hash"))
            .collect(),
        name: None,
        email: None,
        roles: vec!["billing".into()],
        entity: Some("acme".into()),
        user_type: UserType::Internal,
        scopes: vec!["invoices:read".into()],
        ip_allowlist: None,
        expires: None,
    }
}

#[tokio::test]
async fn api_keys_name_their_account_until_it_expires_and_only_from_its_addresses() {
    let key = rsa_key("k1");
    let (old, new, expired, office) = (
        crate::apikey::generate(),
        crate::apikey::generate(),
        crate::apikey::generate(),
        crate::apikey::generate(),
    );
    let net: ipnet::IpNet = "10.20.0.0/16".parse().expect("net");
    let accounts = [
        account("billing-sync", &[&old.hash, &new.hash]),
        ServiceAccount {
            expires: Some(now() - 1),
            ..account("retired", &[&expired.hash])
        },
        ServiceAccount {
            ip_allowlist: Some(IpAllowlist::new(AllowlistMode::Enforce, vec![net])),
            ..account("office", &[&office.hash])
        },
    ];
    let auth = auth_with(&key, &accounts);
    let now = now();
    let ip = |s: &str| Some(s.parse::<IpAddr>().expect("ip"));
    let try_key = |k: String, from: Option<IpAddr>| {
        let auth = &auth;
        async move {
            auth.authenticate(Presented::ApiKey(&k), EVERYTHING, from, now)
                .await
                .map(|(caller, _)| caller)
        }
    };
    for rotated in [&old.key, &new.key] {
        let caller = try_key(rotated.clone(), ip("192.0.2.1"))
            .await
            .expect("valid");
        let who = &caller.identity;
        assert_eq!(
            (who.user_id.as_str(), who.idp.as_str(), who.auth_method),
            (
                "billing-sync",
                crate::config::SERVICE_ACCOUNTS_IDP,
                AuthMethod::ApiKey
            )
        );
        assert_eq!(who.client_id.as_deref(), Some("billing-sync"));
        assert_eq!(who.entity.as_deref(), Some("acme"));
        assert_eq!(
            who.custom.get("scopes").map(String::as_str),
            Some("invoices:read")
        );
        assert_eq!(caller.sid, "api-key:billing-sync");
    }
    let unknown = crate::apikey::generate().key;
    assert_eq!(
        try_key(unknown, None).await.err(),
        Some(Refusal::ApiKeyUnknown)
    );
    let mut typo = old.key.clone().into_bytes();
    typo[9] = if typo[9] == b'x' { b'y' } else { b'x' };
    let typo = String::from_utf8(typo).expect("ascii");
    assert_eq!(
        try_key(typo, None).await.err(),
        Some(Refusal::ApiKeyChecksum)
    );
    assert_eq!(
        try_key("pck_short".into(), None).await.err(),
        Some(Refusal::ApiKeyMalformed)
    );
    assert_eq!(
        try_key(expired.key, None).await.err(),
        Some(Refusal::ApiKeyExpired)
    );
    assert_eq!(
        try_key(office.key.clone(), ip("127.0.0.1")).await.err(),
        Some(Refusal::IpNotAllowed)
    );
    assert!(try_key(office.key.clone(), ip("10.20.3.4")).await.is_ok());
    // An app that takes bearer tokens only does not take keys.
    let bearer_only = auth
        .authenticate(Presented::ApiKey(&old.key), BEARER_ONLY, None, now)
        .await;
    assert_eq!(bearer_only.err(), Some(Refusal::CredentialNotAccepted));
}

#[test]
fn refusal_names_are_distinct_kebab_case_words() {
    use strum::IntoEnumIterator;
    let names: Vec<&str> = Refusal::iter().map(Refusal::as_str).collect();
    let unique: std::collections::HashSet<_> = names.iter().collect();
    assert_eq!(unique.len(), names.len());
    assert!(names
        .iter()
        .all(|n| n.bytes().all(|b| b.is_ascii_lowercase() || b == b'-')));
    assert!(Refusal::iter().all(|r| !r.description().is_empty()));
}

fn introspector(endpoint: &str, audiences: &[&str]) -> Introspector {
    let settings = crate::config::IntrospectionSettings {
        endpoint: endpoint.parse().expect("url"),
        client_id: "portcullis".into(),
        client_secret: crate::config::Secret::inline("s3cret"),
        secret_in_body: false,
        issuer: Some(ISSUER.into()),
        rules: BearerRules {
            audiences: audiences.iter().map(|a| a.to_string()).collect(),
            ..rules(&[], &["chat"])
        },
        cache_ttl: Duration::from_secs(60),
        timeout: Duration::from_millis(500),
    };
    Introspector::new(&provider(), &settings, Arc::new(IdentityMapping::default()))
        .expect("introspector")
}

#[test]
fn introspection_answers_are_judged_strictly() {
    let judge = introspector("http://127.0.0.1:9/introspect", &["chat-api"]);
    let now = now();
    let digest = [7u8; 32];
    let active = json!({
        "active": true, "iss": ISSUER, "aud": ["chat-api", "other"], "client_id": "reporting",
        "scope": "chat", "exp": now + 600, "iat": now - 5, "org": { "id": "acme" },
    });
    let (caller, until) = judge.judge(&active, &digest, now).expect("active");
    assert_eq!(caller.identity.user_id, "reporting", "no sub: the client");
    assert_eq!(caller.identity.auth_method, AuthMethod::BearerIntrospected);
    assert_eq!(caller.identity.entity.as_deref(), Some("acme"));
    assert_eq!(until, now + 60, "reused for cache_ttl, below exp");
    assert_eq!(caller.expires_at, now + 600, "a stream may run until exp");
    let with = |change: &dyn Fn(&mut Value)| {
        let mut a = active.clone();
        change(&mut a);
        judge.judge(&a, &digest, now).err()
    };
    assert!(with(&|a| a["exp"] = json!(now + 10)).is_none());
    assert_eq!(
        with(&|a| a["active"] = json!(false)),
        Some(Refusal::TokenInactive)
    );
    assert_eq!(
        with(&|a| a["active"] = json!("yes")),
        Some(Refusal::CheckUnavailable)
    );
    assert_eq!(
        with(&|a| a["exp"] = json!(now - 120)),
        Some(Refusal::TokenExpired)
    );
    assert_eq!(
        with(&|a| a["nbf"] = json!(now + 600)),
        Some(Refusal::TokenNotYetValid)
    );
    assert_eq!(
        with(&|a| a["iss"] = json!("https://evil.test")),
        Some(Refusal::IssuerMismatch)
    );
    assert_eq!(
        with(&|a| a["aud"] = json!("other")),
        Some(Refusal::AudienceMismatch)
    );
    assert_eq!(
        with(&|a| a["scope"] = json!("read")),
        Some(Refusal::InsufficientScope)
    );
    let (_, short) = judge
        .judge(&json!({ "active": true, "iss": ISSUER, "aud": "chat-api", "sub": "x", "scope": "chat", "exp": now + 10 }), &digest, now)
        .expect("active");
    assert_eq!(short, now + 10, "never reused past exp");
}

#[tokio::test]
async fn an_unreachable_introspection_endpoint_refuses_and_is_asked_again() {
    // Nothing listens on the discard port: the check fails closed, and the refusal is not
    // remembered (the next request asks again).
    let closed = introspector("http://127.0.0.1:9/introspect", &[]);
    let refused = closed.check("opaque-token", &[1u8; 32], now()).await.err();
    assert_eq!(refused, Some((Refusal::CheckUnavailable, None)));
}

#[tokio::test]
async fn a_slow_introspection_endpoint_times_out_closed() {
    // Accepts the connection and never answers: refused after `timeout` (500 ms here).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let slow = introspector(&format!("http://{address}/introspect"), &[]);
    let started = std::time::Instant::now();
    let refused = slow.check("opaque-token", &[2u8; 32], now()).await.err();
    assert_eq!(refused, Some((Refusal::CheckUnavailable, None)));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    hold.abort();
}
