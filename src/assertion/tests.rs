//! Unit tests of the assertion: round trips verified with `jsonwebtoken` (an independent
//! implementation), key errors, the token cache, the plain headers and their budget.

use std::time::Duration;

use jsonwebtoken::jwk::{JwkSet, ThumbprintHash};
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde_json::{json, Value};

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use super::cache::{lock, Cached, Shard, CACHE_SHARDS};
use super::claims::amr;
use super::headers::roles_value;
use super::*;
use crate::config::{testing::with_apps, AssertionAlgorithm, IdentityHeaders, Secret, UserType};
use crate::identity::AuthMethod;

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
        client_id: None,
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
        SigningKeyError::WrongType {
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
        SigningKeyError::WrongType {
            found: "a P-256",
            ..
        }
    ));
    let relabel = |label: &str| es.replace("PRIVATE KEY", label);
    assert_eq!(
        problem(AssertionAlgorithm::Es256, &[relabel("EC PRIVATE KEY")]).1,
        SigningKeyError::Sec1
    );
    assert_eq!(
        problem(AssertionAlgorithm::Es256, &[relabel("RSA PRIVATE KEY")]).1,
        SigningKeyError::Rsa
    );
    assert_eq!(
        problem(AssertionAlgorithm::Es256, &["hunter2!".into()]).1,
        SigningKeyError::NotAKey
    );
    let junk = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n".to_string();
    assert!(matches!(
        problem(AssertionAlgorithm::Es256, &[junk]).1,
        SigningKeyError::Unusable { .. }
    ));
    assert_eq!(
        problem(AssertionAlgorithm::Es256, &[es.clone(), es.clone()]),
        (1, SigningKeyError::Duplicate(0))
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
