//! Machine clients end to end, with a real issuer: the test OP's client-credentials grant
//! makes JWT access tokens (RFC 9068, RS256 with a key this test holds, so that forgeries
//! can be signed with the real key) and opaque ones (checked at its introspection
//! endpoint); service accounts use API keys. Every caller goes through the same policy,
//! entity scope, rate limits, assertion and audit as a person.

use std::time::Duration;

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::header::WWW_AUTHENTICATE;
use serde_json::{json, Value};

use crate::common::op::{client_credentials, rsa_test_key, Op, RsaTestKey};
use crate::common::upstream::received;
use crate::common::{audit_records, audit_until, client, Fixtures, Ports, Proxy, Upstream};

const RESOURCE: &str = "urn:chat-api";
const OPS_TOKEN: &str = "ops-0123456789abcdef0123456789abcdef";

struct World {
    op: Op,
    key: RsaTestKey,
    proxy: Proxy,
    fixtures: Fixtures,
    upstream: Upstream,
    https: reqwest::Client,
    port: u16,
    /// billing-sync's two keys (a rotation), an expired account's, an allowlisted one's.
    keys: [portcullis::apikey::NewKey; 4],
}

/// The OP and Portcullis with a `kind: jwt` issuer (the OP, audience urn:chat-api, RS256
/// only, scope `chat` required), the OP's introspection endpoint, three service accounts,
/// app `chat` on a.test (sessions, bearer tokens and API keys; a billing rule; entity
/// isolation) and app `api` on b.test (bearer tokens only, 3 requests a minute per client).
fn world() -> World {
    let fixtures = Fixtures::new();
    let upstream = Upstream::start();
    let ports = Ports::new();
    let key = rsa_test_key(fixtures.dir.path(), "op-rsa");
    let jwk = key.jwk_path.to_str().expect("utf8").to_string();
    let op = Op::start(
        &format!("https://a.test:{}/.portcullis/oidc/callback", ports.https),
        &[("OP_RSA_JWK", &jwk)],
    );
    std::fs::write(fixtures.path("oidc.secret"), "op-client-secret").expect("write");
    std::fs::write(fixtures.path("ops.token"), OPS_TOKEN).expect("write");
    let keys = [(); 4].map(|_| portcullis::apikey::generate());
    let up = upstream.url();
    let sections = format!(
        r#"identity_providers:
  - id: partners
    kind: jwt
    issuer: {issuer}
    audiences: ["{RESOURCE}"]
    algorithms: [RS256]
    required_scopes: [chat]
    claims: {{ entity: org.id }}
  - id: opaque
    kind: oauth2-introspection
    introspection_endpoint: {issuer}/token/introspection
    client_id: portcullis
    client_secret: file:oidc.secret
    claims: {{ entity: org.id }}
identity:
  roles:
    - {{ role: bot, group: bots }}
service_accounts:
  - id: billing-sync
    key_hashes: ["{old}", "{new}"]
    roles: [billing]
    entity: acme
    user_type: internal-user
  - id: retired
    key_hashes: ["{expired}"]
    expires: 2020-01-01
  - id: office
    key_hashes: ["{office}"]
    ip_allowlist: {{ cidrs: [10.20.0.0/16] }}
"#,
        issuer = op.issuer,
        old = keys[0].hash,
        new = keys[1].hash,
        expired = keys[2].hash,
        office = keys[3].hash,
    );
    let apps = format!(
        r#"  - id: chat
    hosts: [a.test]
    upstream: {up}
    accept: [session, bearer, api-key]
    access: {{ user_types: [internal-user, external-user] }}
    rules:
      - name: billing
        paths: ["/billing/**"]
        access: {{ roles: [billing] }}
    entity_scope: {{ path_pattern: "/api/entities/{{entity}}/**" }}
    identity_headers: {{ plain: true }}
  - id: api
    hosts: [b.test]
    upstream: {up}
    accept: [bearer]
    access: {{ user_types: [internal-user, external-user] }}
    rate_limits: [{{ key: client, rate: 3/min, burst: 3 }}]
"#
    );
    let admin = "admin:\n  tokens:\n    - { name: ops, token: file:ops.token, scopes: [read, disable, reload] }\n";
    let yaml = fixtures
        .config(&ports, "", &apps)
        .replace("level: warn", "level: \"warn,portcullis=info\"")
        .replace("admin:\n", admin)
        .replace("session:\n", &format!("{sections}session:\n"));
    let port = ports.https;
    let proxy = Proxy::start(&fixtures, ports, &yaml);
    let https = client(&fixtures, &proxy);
    World {
        op,
        key,
        proxy,
        fixtures,
        upstream,
        https,
        port,
        keys,
    }
}

impl World {
    fn url(&self, host: &str, path: &str) -> String {
        format!("https://{host}:{}{path}", self.port)
    }

    /// GET with these headers (a name may repeat).
    async fn get(&self, host: &str, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut request = self.https.get(self.url(host, path));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.expect("request")
    }

    /// GET with `Authorization: Bearer <token>` and a forged identity header.
    async fn bearer(&self, host: &str, path: &str, token: &str) -> reqwest::Response {
        let authorization = format!("Bearer {token}");
        let headers = [
            ("authorization", authorization.as_str()),
            ("accept", "application/json"),
            ("x-portcullis-user", "forged-admin"),
        ];
        self.get(host, path, &headers).await
    }

    async fn api_key(&self, path: &str, key: &str) -> reqwest::Response {
        self.get("a.test", path, &[("x-api-key", key)]).await
    }

    async fn token(&self, client: &str, scope: &str) -> String {
        let secret = format!("{client}-secret");
        client_credentials(&self.op.issuer, client, &secret, Some(RESOURCE), scope).await
    }

    /// The assertion's claims, checked against Portcullis's JWKS for `app`.
    async fn assertion(&self, echo: &Value, app: &str) -> Value {
        let jwks: jsonwebtoken::jwk::JwkSet = self
            .https
            .get(self.url("a.test", "/.portcullis/jwks.json"))
            .send()
            .await
            .expect("jwks")
            .json()
            .await
            .expect("jwks json");
        let token = &received(echo)["x-portcullis-assertion"];
        let header = jsonwebtoken::decode_header(token).expect("header");
        let jwk = jwks.find(header.kid.as_deref().expect("kid")).expect("key");
        let key = jsonwebtoken::DecodingKey::from_jwk(jwk).expect("key");
        let mut validation = jsonwebtoken::Validation::new(header.alg);
        validation.set_audience(&[app]);
        validation.set_issuer(&[format!("https://localhost:{}", self.port)]);
        jsonwebtoken::decode::<Value>(token, &key, &validation)
            .expect("a valid assertion")
            .claims
    }

    async fn metric(&self, name: &str) -> String {
        let text = plain_get(&format!(
            "http://127.0.0.1:{}/metrics",
            self.proxy.ports.admin
        ))
        .await;
        text.lines()
            .filter(|l| l.starts_with(name))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

async fn plain_get(url: &str) -> String {
    reqwest::get(url)
        .await
        .expect("get")
        .text()
        .await
        .expect("text")
}

fn challenge(r: &reqwest::Response) -> String {
    r.headers()
        .get(WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

fn payload(token: &str) -> Value {
    let part = token.split('.').nth(1).expect("payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .expect("base64");
    serde_json::from_slice(&bytes).expect("json")
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[tokio::test]
async fn client_credentials_tokens_pass_the_same_policy_as_people() {
    let w = world();
    let acme = w.token("acme-bot", "chat").await;
    assert_eq!(payload(&acme)["aud"], RESOURCE, "a real RFC 9068 token");

    // Accepted: the upstream sees a verifiable assertion of the mapped identity, and neither
    // the token nor a forged identity header.
    let r = w
        .bearer("a.test", "/api/entities/acme/threads", &acme)
        .await;
    assert_eq!(r.status(), 200);
    let echo: Value = r.json().await.expect("echo");
    let got = received(&echo);
    assert!(!got.contains_key("authorization"), "the token stays here");
    assert_eq!(got["x-portcullis-user"], "acme-bot");
    let claims = w.assertion(&echo, "chat").await;
    assert_eq!(claims["sub"], "acme-bot");
    assert_eq!(claims["idp"], "partners");
    assert_eq!(claims["entity"], "acme");
    assert_eq!(claims["roles"], json!(["bot"]));
    assert_eq!(claims["auth_method"], "bearer-jwt");
    assert_eq!(claims["client_id"], "acme-bot");
    assert_eq!(claims["custom"]["scopes"], "chat");
    assert_eq!(claims["amr"], json!([]));
    assert!(claims["sid"]
        .as_str()
        .is_some_and(|s| s.starts_with("bearer:")));

    // The same policy as a person: entity isolation, role rules.
    let other_tenant = w
        .bearer("a.test", "/api/entities/globex/threads", &acme)
        .await;
    assert_eq!(other_tenant.status(), 403);
    let billing = w.bearer("a.test", "/billing/invoices", &acme).await;
    assert_eq!(billing.status(), 403);
    let globex = w.token("globex-bot", "chat").await;
    let own = w
        .bearer("a.test", "/api/entities/globex/threads", &globex)
        .await;
    assert_eq!(own.status(), 200);

    // A token without the required scope: 403 insufficient_scope.
    let narrow = w.token("acme-bot", "chat:admin").await;
    let r = w.bearer("a.test", "/", &narrow).await;
    assert_eq!(r.status(), 403);
    assert!(
        challenge(&r).contains(r#"error="insufficient_scope""#),
        "{}",
        challenge(&r)
    );

    // A repeat request is answered from the verified-token cache.
    let cached = w.metric("portcullis_credentials_total").await;
    assert!(
        cached.contains(r#"method="bearer-jwt",result="cached"} "#),
        "{cached}"
    );
    let methods = w.metric("portcullis_authenticated_requests_total").await;
    assert!(methods.contains(r#"method="bearer-jwt"} "#), "{methods}");

    // `client` limits count per client, whatever the token: acme-bot's two tokens share
    // three requests a minute; globex-bot has its own.
    let second = w.token("acme-bot", "chat").await;
    let mut statuses = Vec::new();
    for token in [&acme, &second, &acme, &second] {
        statuses.push(w.bearer("b.test", "/", token).await.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 429]);
    assert_eq!(w.bearer("b.test", "/", &globex).await.status(), 200);
    // A header of a kind the app does not take is the upstream's own: left as sent.
    let r = w
        .get(
            "b.test",
            "/",
            &[
                ("authorization", &format!("Bearer {globex}")),
                ("x-api-key", "the-upstream's-own-key"),
            ],
        )
        .await;
    assert_eq!(r.status(), 200);
    let got = received(&r.json().await.expect("echo"));
    assert_eq!(
        got.get("x-api-key").map(String::as_str),
        Some("the-upstream's-own-key")
    );
    assert!(!got.contains_key("authorization"));

    // An app for machines only challenges a request without credentials (no sign-in page);
    // an app that also takes sessions still sends a browser to sign in.
    let bare = w.get("b.test", "/", &[("accept", "text/html")]).await;
    assert_eq!(bare.status(), 401);
    assert_eq!(challenge(&bare), r#"Bearer realm="portcullis""#);
    let browser = w.get("a.test", "/", &[("accept", "text/html")]).await;
    assert_eq!(browser.status(), 302);
    // …but a browser-looking request with a bad token gets 401, never a redirect.
    let bad = w
        .get(
            "a.test",
            "/",
            &[
                ("accept", "text/html"),
                ("authorization", "Bearer not-a-token"),
            ],
        )
        .await;
    assert_eq!(bad.status(), 401);
    assert!(challenge(&bad).contains(r#"error="invalid_token""#));

    // The audit trail names the method and the token's hash prefix, never the token.
    let records = audit_until(&w.fixtures.audit_log(), 1, |r| {
        r["auth_method"] == "bearer-jwt" && r["event"] == "access"
    })
    .await;
    assert!(!records.is_empty());
    assert_eq!(records[0]["user"], "acme-bot");
    let file = std::fs::read_to_string(w.fixtures.audit_log()).expect("audit");
    assert!(
        !file.contains(&acme[acme.len() - 40..]),
        "no token in the audit"
    );
}

#[tokio::test]
async fn forged_tokens_are_refused_and_nothing_is_forwarded() {
    let w = world();
    let real = w.token("acme-bot", "chat").await;
    assert_eq!(w.bearer("a.test", "/", &real).await.status(), 200);
    let claims = payload(&real);
    let now = claims["iat"].as_u64().expect("iat");
    let kid = jsonwebtoken::decode_header(&real)
        .expect("header")
        .kid
        .expect("kid");
    assert_eq!(kid, w.key.kid);
    let op_key = EncodingKey::from_rsa_pem(&w.key.private_pem).expect("key");
    let sign = |alg: Algorithm, kid: &str, claims: &Value, key: &EncodingKey| {
        let header = Header {
            kid: Some(kid.to_string()),
            typ: Some("at+jwt".into()),
            ..Header::new(alg)
        };
        jsonwebtoken::encode(&header, claims, key).expect("sign")
    };
    let with = |change: &dyn Fn(&mut Value)| {
        let mut c = claims.clone();
        change(&mut c);
        sign(Algorithm::RS256, &kid, &c, &op_key)
    };
    let stranger = rsa_test_key(w.fixtures.dir.path(), "stranger");
    let stranger_key = EncodingKey::from_rsa_pem(&stranger.private_pem).expect("key");
    let jwks_before = w.op.count("JWKS");
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "another key, same kid",
            sign(Algorithm::RS256, &kid, &claims, &stranger_key),
            "signature-invalid",
        ),
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(br#"{"alg":"none","typ":"at+jwt"}"#),
                b64(claims.to_string().as_bytes())
            ),
            "token-malformed",
        ),
        (
            "HS256 keyed with the public key",
            sign(
                Algorithm::HS256,
                &kid,
                &claims,
                &EncodingKey::from_secret(&w.key.public_pem),
            ),
            "algorithm-refused",
        ),
        (
            "PS256 with the real key (only RS256 allowed)",
            sign(Algorithm::PS256, &kid, &claims, &op_key),
            "algorithm-refused",
        ),
        (
            "expired",
            with(&|c| c["exp"] = json!(now - 600)),
            "token-expired",
        ),
        (
            "not yet valid",
            with(&|c| c["nbf"] = json!(now + 3600)),
            "token-not-yet-valid",
        ),
        (
            "wrong audience",
            with(&|c| c["aud"] = json!("urn:other-api")),
            "audience-mismatch",
        ),
        (
            "wrong issuer (goes to introspection, which does not know it)",
            with(&|c| c["iss"] = json!("https://evil.test")),
            "token-inactive",
        ),
        (
            "no expiry",
            with(&|c| drop(c.as_object_mut().map(|o| o.remove("exp")))),
            "expiry-missing",
        ),
        (
            "unknown kid",
            sign(Algorithm::RS256, "rotated-away", &claims, &op_key),
            "key-unknown",
        ),
        (
            "unknown kid again (no second refetch)",
            sign(Algorithm::RS256, "rotated-away-2", &claims, &op_key),
            "key-unknown",
        ),
        (
            "16 KiB",
            format!("{}.{}.x", "a".repeat(16), "b".repeat(16 * 1024)),
            "token-too-large",
        ),
        ("garbage", "garbage".into(), "token-inactive"),
    ];
    let hits = w.upstream.hits();
    for (name, token, _) in &cases {
        let r = w.bearer("a.test", "/", token).await;
        assert_eq!(r.status(), 401, "{name}");
        assert!(
            challenge(&r).starts_with(r#"Bearer realm="portcullis", error="invalid_token""#),
            "{name}: {}",
            challenge(&r)
        );
    }
    let two = w
        .get(
            "a.test",
            "/",
            &[
                ("authorization", &format!("Bearer {real}")),
                ("authorization", &format!("Bearer {real}")),
            ],
        )
        .await;
    assert_eq!(two.status(), 401, "two Authorization headers");
    assert!(challenge(&two).contains(r#"error="invalid_request""#));
    assert_eq!(w.upstream.hits(), hits, "nothing forwarded");
    assert_eq!(
        w.op.count("JWKS"),
        jwks_before + 1,
        "an unknown kid refetches the keys once, not once per token"
    );
    let details: Vec<String> = audit_until(&w.fixtures.audit_log(), cases.len() + 1, |r| {
        r["reason"] == "credential-invalid" || r["reason"] == "credential-expired"
    })
    .await
    .iter()
    .map(|r| r["detail"].as_str().unwrap_or_default().to_string())
    .collect();
    let wanted: Vec<String> = cases
        .iter()
        .map(|(_, _, d)| d.to_string())
        .chain(["credentials-ambiguous".to_string()])
        .collect();
    assert_eq!(details, wanted);
}

#[tokio::test]
async fn opaque_tokens_are_introspected_once_then_cached() {
    let w = world();
    let opaque =
        client_credentials(&w.op.issuer, "acme-bot", "acme-bot-secret", None, "chat").await;
    assert_eq!(opaque.split('.').count(), 1, "not a JWT");
    for _ in 0..2 {
        let r = w.bearer("a.test", "/api/entities/acme/x", &opaque).await;
        assert_eq!(r.status(), 200);
        let claims = w.assertion(&r.json().await.expect("echo"), "chat").await;
        assert_eq!(claims["sub"], "acme-bot");
        assert_eq!(claims["idp"], "opaque");
        assert_eq!(claims["entity"], "acme");
        assert_eq!(claims["auth_method"], "bearer-introspected");
    }
    let counted = w.metric("portcullis_credentials_total").await;
    assert!(
        counted.contains(r#"method="bearer-introspected",result="checked"} 1"#)
            && counted.contains(r#"method="bearer-introspected",result="cached"} 1"#),
        "{counted}"
    );
    // Entity isolation holds for introspected callers too.
    let r = w.bearer("a.test", "/api/entities/globex/x", &opaque).await;
    assert_eq!(r.status(), 403);
}

#[tokio::test]
async fn api_keys_rotate_expire_stay_in_their_network_and_can_be_switched_off() {
    let w = world();
    let [old, new, expired, office] = &w.keys;
    // Both keys of a rotation work, in either header; the upstream never sees them.
    for key in [&old.key, &new.key] {
        let r = w.api_key("/billing/invoices", key).await;
        assert_eq!(r.status(), 200);
        let echo: Value = r.json().await.expect("echo");
        assert!(!received(&echo).contains_key("x-api-key"));
        let claims = w.assertion(&echo, "chat").await;
        assert_eq!(claims["sub"], "billing-sync");
        assert_eq!(claims["idp"], "service-accounts");
        assert_eq!(claims["auth_method"], "api-key");
        assert_eq!(claims["entity"], "acme");
        assert_eq!(claims["user_type"], "internal-user");
        assert_eq!(claims["sid"], "api-key:billing-sync");
    }
    let as_bearer = w.bearer("a.test", "/billing/invoices", &new.key).await;
    assert_eq!(as_bearer.status(), 200);
    assert!(!received(&as_bearer.json().await.expect("echo")).contains_key("authorization"));
    // Another Authorization scheme next to a key is not Portcullis's: forwarded as sent.
    let r = w
        .get(
            "a.test",
            "/",
            &[
                ("x-api-key", &new.key),
                ("authorization", "Basic dXBzdHJlYW06b3du"),
            ],
        )
        .await;
    assert_eq!(r.status(), 200);
    let got = received(&r.json().await.expect("echo"));
    assert_eq!(
        got.get("authorization").map(String::as_str),
        Some("Basic dXBzdHJlYW06b3du")
    );
    assert!(!got.contains_key("x-api-key"));

    let unknown = portcullis::apikey::generate().key;
    let mut typo = old.key.clone().into_bytes();
    typo[8] = if typo[8] == b'q' { b'r' } else { b'q' };
    let typo = String::from_utf8(typo).expect("ascii");
    for (name, key, status, detail) in [
        ("unknown key", unknown.as_str(), 401, "api-key-unknown"),
        ("wrong checksum", typo.as_str(), 401, "api-key-checksum"),
        (
            "expired account",
            expired.key.as_str(),
            401,
            "api-key-expired",
        ),
        (
            "outside its allowlist",
            office.key.as_str(),
            403,
            "ip-not-allowed",
        ),
    ] {
        let r = w.api_key("/", key).await;
        assert_eq!(r.status(), status, "{name}");
        let refused = audit_until(&w.fixtures.audit_log(), 1, |r| r["detail"] == detail).await;
        assert_eq!(refused.len(), 1, "{name} audited as {detail}");
    }

    // Turned off through the control plane, and on again.
    let admin = |path: &'static str, body: Value| {
        let url = format!("http://127.0.0.1:{}{path}", w.proxy.ports.admin);
        async move {
            reqwest::Client::new()
                .post(url)
                .bearer_auth(OPS_TOKEN)
                .json(&body)
                .send()
                .await
                .expect("admin")
                .status()
                .as_u16()
        }
    };
    assert_eq!(
        admin("/api/v1/disable", json!({"user": "billing-sync"})).await,
        200
    );
    assert_eq!(w.api_key("/", &new.key).await.status(), 403);
    assert_eq!(
        admin("/api/v1/enable", json!({"user": "billing-sync"})).await,
        200
    );
    assert_eq!(w.api_key("/", &new.key).await.status(), 200);

    // The rotation ends: the old hash is removed and the configuration reloaded.
    let yaml = std::fs::read_to_string(&w.proxy.config).expect("config");
    let yaml = yaml.replace(&format!("\"{}\", ", old.hash), "");
    std::fs::write(&w.proxy.config, yaml).expect("write");
    assert_eq!(admin("/api/v1/reload", json!({})).await, 200);
    let mut status = 0;
    for _ in 0..50 {
        status = w.api_key("/", &old.key).await.status().as_u16();
        if status == 401 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 401, "the removed key is refused after the reload");
    assert_eq!(w.api_key("/", &new.key).await.status(), 200);

    // Only names of keys in the audit trail, never a key.
    let records = audit_records(&w.fixtures.audit_log());
    assert!(records
        .iter()
        .any(|r| r["auth_method"] == "api-key" && r["sid"] == "api-key:billing-sync"));
    let file = std::fs::read_to_string(w.fixtures.audit_log()).expect("audit");
    for key in &w.keys {
        assert!(!file.contains(&key.key), "a key in the audit trail");
    }
}

#[tokio::test]
async fn an_op_s_own_access_tokens_are_bearer_tokens_too() {
    let fixtures = Fixtures::new();
    let upstream = Upstream::start();
    let ports = Ports::new();
    let op = Op::start(
        &format!("https://a.test:{}/.portcullis/oidc/callback", ports.https),
        &[],
    );
    std::fs::write(fixtures.path("oidc.secret"), "op-client-secret").expect("write");
    let sections = format!(
        "identity_providers:\n  - id: corp\n    kind: oidc\n    issuer: {}\n    client_id: portcullis\n    client_secret: file:oidc.secret\n    claims: {{ entity: org.id }}\n    mfa_acr_values: [urn:example:mfa]\n    bearer: {{ audiences: [\"{RESOURCE}\"] }}\n",
        op.issuer
    );
    let apps = format!(
        "  - id: chat\n    hosts: [a.test]\n    upstream: {0}\n    accept: [session, bearer]\n    access: {{ user_types: [internal-user, external-user] }}\n  - id: admin\n    hosts: [b.test]\n    upstream: {0}\n    accept: [session, bearer]\n    access: {{ user_types: [internal-user, external-user], require_mfa: true }}\n",
        upstream.url()
    );
    let yaml = fixtures
        .config(&ports, "", &apps)
        .replace("session:\n", &format!("{sections}session:\n"));
    let port = ports.https;
    let proxy = Proxy::start(&fixtures, ports, &yaml);
    let https = client(&fixtures, &proxy);
    let token = client_credentials(
        &op.issuer,
        "globex-bot",
        "globex-bot-secret",
        Some(RESOURCE),
        "chat",
    )
    .await;
    // The keys come from the provider's discovery, which runs in the background at start.
    let mut status = 0;
    for _ in 0..50 {
        let r = https
            .get(format!("https://a.test:{port}/"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("request");
        status = r.status().as_u16();
        if status == 200 {
            let echo: Value = r.json().await.expect("echo");
            assert!(received(&echo)["x-portcullis-assertion"].contains('.'));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200);
    let records = audit_until(&fixtures.audit_log(), 1, |r| r["event"] == "access").await;
    assert_eq!(records[0]["idp"], "corp");
    assert_eq!(records[0]["user"], "globex-bot");
    assert_eq!(records[0]["auth_method"], "bearer-jwt");
    // An app that requires MFA: a person of this provider would be sent to sign in again
    // with MFA; a token cannot be, so it is refused (403), never redirected.
    let admin = https
        .get(format!("https://b.test:{port}/"))
        .bearer_auth(&token)
        .header("accept", "text/html")
        .send()
        .await
        .expect("request");
    assert_eq!(admin.status(), 403);
}

#[tokio::test]
async fn refused_credentials_count_against_the_pre_auth_limit_and_keys_have_no_mfa() {
    let fixtures = Fixtures::new();
    let upstream = Upstream::start();
    let ports = Ports::new();
    let key = portcullis::apikey::generate();
    let sections = format!(
        "service_accounts:\n  - id: sync\n    key_hashes: [\"{}\"]\n",
        key.hash
    );
    let up = upstream.url();
    let apps = format!(
        "  - id: chat\n    hosts: [a.test]\n    upstream: {up}\n    accept: [api-key]\n    access: {{ user_types: [internal-user, external-user] }}\n  - id: admin\n    hosts: [b.test]\n    upstream: {up}\n    accept: [session, api-key]\n    access: {{ user_types: [internal-user, external-user], require_mfa: true }}\n"
    );
    let yaml = fixtures
        .config(
            &ports,
            "  pre_auth_rate_limit: { rate: 3/min, burst: 3 }\n",
            &apps,
        )
        .replace("session:\n", &format!("{sections}session:\n"));
    let port = ports.https;
    let proxy = Proxy::start(&fixtures, ports, &yaml);
    let https = client(&fixtures, &proxy);
    let get = |host: &'static str, key: String| {
        let https = https.clone();
        async move {
            https
                .get(format!("https://{host}:{port}/"))
                .header("x-api-key", key)
                .header("accept", "text/html")
                .send()
                .await
                .expect("request")
                .status()
                .as_u16()
        }
    };
    // Forged keys are refused, and a flood of them is limited per address like forged cookies.
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(get("a.test", portcullis::apikey::generate().key).await);
    }
    assert_eq!(statuses, [401, 401, 401, 429]);
    // A valid key is not held back by the refusals before it.
    assert_eq!(get("a.test", key.key.clone()).await, 200);
    // An app that requires MFA refuses a machine caller (an API key has no second factor).
    assert_eq!(get("b.test", key.key.clone()).await, 403);
    let refused = audit_until(&fixtures.audit_log(), 1, |r| r["reason"] == "mfa-required").await;
    assert_eq!(refused[0]["auth_method"], "api-key");
}
