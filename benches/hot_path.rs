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

criterion_group!(benches, assertion_benches);
criterion_main!(benches);
