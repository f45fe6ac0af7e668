//! Hot-path micro-benchmarks: what one proxied request pays in each piece.
//!
//! Run: `cargo bench --bench hot_path`. Each piece adds a function to `criterion_group!`.

// A benchmark binary has no API, and `criterion_group!` defines an undocumented `pub fn`.
#![allow(missing_docs)]

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use portcullis::assertion::Signer;
use portcullis::config::{App, Config, UserType};
use portcullis::identity::{AuthMethod, Identity};

/// The smallest config the benchmarks need: one app, plain HTTP, no certificates.
const BENCH_YAML: &str = r#"
server:
  public_url: https://chat.example.com
  http:
    listen: ["127.0.0.1:0"]
session:
  encryption_keys: ["env:PORTCULLIS_BENCH_KEY"]
apps:
  - id: chat
    hosts: [chat.example.com]
    upstream: http://127.0.0.1:3000
    allow_plain_http: true
    access:
      user_types: [internal-user, external-user]
"#;

/// Compiles [`BENCH_YAML`] (its session key comes from the environment, as in production).
fn bench_config() -> Config {
    std::env::set_var(
        "PORTCULLIS_BENCH_KEY",
        "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
    );
    match Config::from_yaml(Path::new("bench.yaml"), BENCH_YAML) {
        Ok(config) => config,
        Err(report) => panic!("bench config does not compile: {report:?}"),
    }
}

/// A typical signed-in user: a few roles and custom values.
fn bench_identity() -> Identity {
    Identity {
        user_id: "00u1a2b3c4d5e6f7g8h9".into(),
        email: Some("ada.lovelace@example.com".into()),
        name: Some("Ada Lovelace".into()),
        user_type: UserType::Internal,
        roles: vec!["chat-user".into(), "engineering".into(), "admin".into()],
        entity: Some("acme".into()),
        custom: BTreeMap::from([("department".into(), "r&d".into())]),
        idp: "corp".into(),
        auth_method: AuthMethod::Oidc,
        mfa: true,
        client_id: None,
    }
}

/// `assertion/sign`: a fresh ES256 signature (the cost of a cache miss);
/// `assertion/cache_hit`: what most requests of a session pay.
fn assertion_benches(c: &mut Criterion) {
    let config = bench_config();
    let signer = Signer::new(&config.assertion).expect("assertion signer");
    let app: Arc<App> = Arc::clone(&config.apps[0]);
    let identity = bench_identity();
    let sid = "5f0c6b7e2a9d4c1b8e3f7a6d5c4b3a29";
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());

    c.bench_function("assertion/sign", |b| {
        b.iter(|| signer.sign(black_box(sid), &app, &identity, now))
    });

    signer
        .token(sid, &app, &identity, now)
        .expect("warm the cache");
    c.bench_function("assertion/cache_hit", |b| {
        b.iter(|| signer.token(black_box(sid), &app, &identity, now))
    });
}

/// `session/decode`: the session cookie of every request, parsed, decrypted (AES-256-GCM) and
/// deserialised, for a typical identity.
fn session_benches(c: &mut Criterion) {
    use portcullis::session::{CookieJar, SessionCodec, SessionData};
    let config = bench_config();
    let codec = SessionCodec::new(
        &config.session.encryption_keys,
        &config.session.cookie_name,
        &config.session.deployment_id,
        config.session.max_chunks,
        config.session.idle_timeout,
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let data = SessionData::new(bench_identity(), now, std::time::Duration::from_secs(3600));
    let values = codec.encode(&data).expect("encode");
    let header: String = values
        .iter()
        .enumerate()
        .map(|(i, v)| match i {
            0 => format!("{}={v}", config.session.cookie_name),
            i => format!("{}.{i}={v}", config.session.cookie_name),
        })
        .chain(["_ga=GA1.2.3; theme=dark".to_string()])
        .collect::<Vec<_>>()
        .join("; ");
    c.bench_function("session/decode", |b| {
        b.iter(|| {
            let jar = CookieJar::parse(
                std::iter::once(black_box(header.as_str())),
                &config.session.cookie_name,
            );
            codec.decode(&jar, now).expect("valid session")
        })
    });
}

/// `policy/200-rules/*`: one decision over an app with 200 path rules: the last rule matching
/// (every rule tried), and no rule matching (the app's access applies).
fn policy_benches(c: &mut Criterion) {
    use portcullis::policy::{decide, Decision, Request};
    let mut yaml = BENCH_YAML.replace(
        "      user_types: [internal-user, external-user]\n",
        "      user_types: [internal-user, external-user]\n      roles: [chat-user]\n    entity_scope: { path_pattern: \"/api/entities/{entity}/**\" }\n    rules:\n",
    );
    for i in 0..200 {
        yaml.push_str(&format!(
            "      - {{ name: tool-{i}, paths: [\"/api/tools/t{i}/**\"], methods: [POST], access: {{ roles: [tool-{i}, admin] }} }}\n"
        ));
    }
    std::env::set_var(
        "PORTCULLIS_BENCH_KEY",
        "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
    );
    let config = match Config::from_yaml(Path::new("bench.yaml"), &yaml) {
        Ok(config) => config,
        Err(report) => panic!("policy bench config: {report}"),
    };
    let app = Arc::clone(&config.apps[0]);
    assert_eq!(app.rules.len(), 200);
    let identity = bench_identity();
    let ip = Some(std::net::IpAddr::from([192, 0, 2, 10]));
    let last = Request {
        method: "POST",
        path: "/api/tools/t199/run",
        query: None,
        client_ip: ip,
    };
    let none = Request {
        method: "GET",
        path: "/api/entities/acme/chat",
        query: Some("q=1"),
        client_ip: ip,
    };
    assert!(matches!(
        decide(&app, &last, Some(&identity)),
        Decision::Allow(_)
    ));
    assert!(matches!(
        decide(&app, &none, Some(&identity)),
        Decision::Allow(_)
    ));
    c.bench_function("policy/200-rules/last-rule-matches", |b| {
        b.iter(|| decide(&app, black_box(&last), Some(&identity)))
    });
    c.bench_function("policy/200-rules/no-rule-matches", |b| {
        b.iter(|| decide(&app, black_box(&none), Some(&identity)))
    });
}

/// `netguard/allowlist-1000`: one lookup in an allowlist of 1,000 IPv4 and IPv6 prefixes of
/// mixed lengths (a hit and a miss); `netguard/rate-limit-check`: one keyed limiter check.
fn netguard_benches(c: &mut Criterion) {
    use portcullis::netguard::{
        AllowlistMode, IpAllowlist, KeyHasher, LimitKey, LimitSpec, Limiter,
    };
    let nets: Vec<ipnet::IpNet> = (0..1000u32)
        .map(|i| {
            let net = if i % 4 == 0 {
                let addr =
                    std::net::Ipv6Addr::from(u128::from(i.wrapping_mul(2_654_435_761)) << 96);
                ipnet::IpNet::new(addr.into(), 32 + (i % 33) as u8)
            } else {
                let addr = std::net::Ipv4Addr::from(i.wrapping_mul(2_654_435_761));
                ipnet::IpNet::new(addr.into(), 8 + (i % 25) as u8)
            };
            net.expect("prefix").trunc()
        })
        .collect();
    let hit = nets[1].addr();
    let list = IpAllowlist::new(AllowlistMode::Enforce, nets);
    let miss = std::net::IpAddr::from([203, 0, 113, 77]);
    assert!(list.contains(hit));
    c.bench_function("netguard/allowlist-1000/hit", |b| {
        b.iter(|| list.contains(black_box(hit)))
    });
    c.bench_function("netguard/allowlist-1000/miss", |b| {
        b.iter(|| list.contains(black_box(miss)))
    });
    let limiter = Limiter::new(LimitSpec {
        key: LimitKey::User,
        rate: std::num::NonZeroU32::new(u32::MAX).expect("rate"),
        per: std::time::Duration::from_secs(1),
        burst: std::num::NonZeroU32::new(u32::MAX).expect("burst"),
    });
    let hasher = KeyHasher::default();
    let identity = bench_identity();
    c.bench_function("netguard/rate-limit-check", |b| {
        b.iter(|| {
            let key = hasher.key(LimitKey::User, 0, Some(&identity), None, "/chat");
            limiter.check(black_box(key.unwrap_or_default()))
        })
    });
}

/// Not the hot path (once per sign-in), but attacker-reachable without a session: what one
/// SAML response costs the ACS. The fixture is a real response from the test IdP (pysaml2,
/// RSA-2048, SHA-256), checked at the moment it was issued.
fn saml_benches(c: &mut Criterion) {
    use base64::Engine;
    use portcullis::idp::saml::response::{decode, verify, Expectations};
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/fixtures");
    let posted = std::fs::read_to_string(fixtures.join("saml-response.b64")).expect("fixture");
    let pem = std::fs::read(fixtures.join("saml-idp.crt")).expect("fixture");
    let der = base64::engine::general_purpose::STANDARD
        .decode(
            String::from_utf8_lossy(&pem)
                .lines()
                .filter(|l| !l.starts_with("-----"))
                .collect::<String>(),
        )
        .expect("certificate");
    let certificates = [samael::crypto::CertificateDer::from(der)];
    let xml = decode(&posted).expect("base64");
    let issued = xml
        .split("IssueInstant=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .expect("IssueInstant")
        .timestamp();
    let never = |_: &str| false;
    let expect = Expectations {
        idp_entity_id: "http://127.0.0.1:18779/metadata",
        certificates: &certificates,
        sp_entity_id: "https://chat.example.com/.portcullis/saml/metadata",
        acs_url: "https://chat.example.com/.portcullis/saml/acs",
        request_id: None,
        allow_unsolicited: true,
        allow_sha1: false,
        clock_skew: 120,
        max_age: 300,
        now: issued,
        decrypter: None,
        consumed: &never,
    };
    assert!(verify(&xml, &expect).is_ok(), "the fixture verifies");
    c.bench_function("saml/acs_verify", |b| {
        b.iter(|| verify(black_box(&xml), &expect))
    });
}

/// Serves `body` as the answer to every request on a loopback port (the issuer's JWKS).
fn serve_jwks(body: String) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/jwks.json", listener.local_addr().expect("addr"));
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(answer.as_bytes());
        }
    });
    url
}

/// `machine/bearer_first_rs256`: a JWT seen for the first time (header, key, RS256
/// signature, claims, identity mapping, cache insert); `machine/bearer_cached`: the same token
/// again (SHA-256 and a lookup); `machine/api_key`: checksum, keyed hash, constant-time
/// compare. Each through `MachineAuth::authenticate` on a current-thread runtime.
fn machine_benches(c: &mut Criterion) {
    use base64::Engine;
    use portcullis::config::Accept;
    use portcullis::machine::{MachineAuth, Presented};
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let rsa = openssl::rsa::Rsa::generate(2048).expect("rsa");
    let jwks = format!(
        r#"{{"keys":[{{"kty":"RSA","kid":"k1","use":"sig","n":"{}","e":"{}"}}]}}"#,
        b64(&rsa.n().to_vec()),
        b64(&rsa.e().to_vec())
    );
    let pem = openssl::pkey::PKey::from_rsa(rsa)
        .and_then(|k| k.private_key_to_pem_pkcs8())
        .expect("pem");
    let signing = jsonwebtoken::EncodingKey::from_rsa_pem(&pem).expect("key");
    let api = portcullis::apikey::generate();
    let yaml = BENCH_YAML.replace("apps:", &format!(
        "identity_providers:\n  - id: partners\n    kind: jwt\n    issuer: https://issuer.bench.test\n    jwks_uri: {}\n    audiences: [chat-api]\nservice_accounts:\n  - id: sync\n    key_hashes: [\"{}\"]\napps:",
        serve_jwks(jwks),
        api.hash
    )).replace("    allow_plain_http: true", "    allow_plain_http: true\n    accept: [bearer, api-key]");
    std::env::set_var(
        "PORTCULLIS_BENCH_KEY",
        "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
    );
    let config = match Config::from_yaml(Path::new("bench.yaml"), &yaml) {
        Ok(config) => config,
        Err(report) => panic!("bench config does not compile: {report:?}"),
    };
    let auth =
        MachineAuth::new(&config, &[], &Arc::new(config.identity.clone())).expect("machine auth");
    let accept = Accept {
        session: false,
        bearer: true,
        api_key: true,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let token = |jti: u64| {
        let claims = serde_json::json!({
            "iss": "https://issuer.bench.test", "aud": "chat-api", "sub": "bench-bot",
            "client_id": "bench-bot", "scope": "chat", "iat": now, "exp": now + 3600, "jti": jti,
        });
        let header = jsonwebtoken::Header {
            kid: Some("k1".into()),
            ..jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256)
        };
        jsonwebtoken::encode(&header, &claims, &signing).expect("sign")
    };
    let first = token(0);
    let check =
        |t: &str| runtime.block_on(auth.authenticate(Presented::Bearer(t), accept, None, now));
    assert!(
        check(&first).is_ok(),
        "the issuer's keys are fetched and the token verifies"
    );
    let mut next = 1;
    let mut group = c.benchmark_group("machine");
    group.sample_size(30);
    group.bench_function("bearer_first_rs256", |b| {
        b.iter_batched(
            || {
                next += 1;
                token(next)
            },
            |fresh| check(black_box(&fresh)),
            criterion::BatchSize::SmallInput,
        )
    });
    group.bench_function("bearer_cached", |b| b.iter(|| check(black_box(&first))));
    group.bench_function("api_key", |b| {
        b.iter(|| {
            runtime.block_on(auth.authenticate(
                Presented::ApiKey(black_box(&api.key)),
                accept,
                None,
                now,
            ))
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    assertion_benches,
    session_benches,
    policy_benches,
    netguard_benches,
    saml_benches,
    machine_benches
);
criterion_main!(benches);
