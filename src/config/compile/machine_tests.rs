//! `kind: jwt`, `kind: oauth2-introspection`, `bearer:`, `service_accounts` and
//! `apps[].accept`: what compiles, and every mistake reported at its key with a fix.

use crate::config::testing::with_sections;
use crate::config::*;

const APP: &str = "  - id: chat\n    hosts: [chat.example.com]\n    upstream: http://127.0.0.1:3000\n    accept: [session, bearer, api-key]\n";

fn problems(sections: &str, apps: &str) -> Vec<(String, String, String)> {
    match with_sections(sections, apps) {
        Ok(_) => Vec::new(),
        Err(report) => report
            .issues
            .into_iter()
            .map(|i| (i.path, i.message, i.hint.unwrap_or_default()))
            .collect(),
    }
}

fn has(found: &[(String, String, String)], path: &str, needle: &str) -> bool {
    found
        .iter()
        .any(|(p, m, h)| p == path && (m.contains(needle) || h.contains(needle)))
}

#[test]
fn machine_clients_compile_into_the_model() {
    let key = crate::apikey::generate();
    let sections = format!(
        r#"identity_providers:
  - id: partners
    kind: jwt
    issuer: https://auth.partner.example
    audiences: [chat-api]
    algorithms: [RS256, ES256]
    required_scopes: [chat]
    clock_skew: 10s
  - id: opaque
    kind: oauth2-introspection
    introspection_endpoint: https://auth.example.com/introspect
    client_id: portcullis
    client_secret: env:HOME
    cache_ttl: 2m
  - id: corp
    kind: oidc
    issuer: https://login.example.com
    client_id: portcullis
    bearer: {{ audiences: [chat-api] }}
service_accounts:
  - id: billing-sync
    key_hashes: ["{}"]
    roles: [billing]
    entity: acme
    user_type: internal-user
    ip_allowlist: {{ cidrs: [10.20.0.0/16] }}
    expires: 2027-06-30
"#,
        key.hash
    );
    let config = with_sections(&sections, APP).expect("valid");
    let IdentityProviderKind::Jwt(jwt) = &config.identity_providers[0].kind else {
        panic!("jwt");
    };
    assert_eq!(jwt.issuer, "https://auth.partner.example");
    assert_eq!(jwt.jwks_uri, None, "from discovery");
    assert_eq!(
        jwt.rules.algorithms,
        [
            jsonwebtoken::Algorithm::RS256,
            jsonwebtoken::Algorithm::ES256
        ]
    );
    assert_eq!(jwt.rules.clock_skew, std::time::Duration::from_secs(10));
    let IdentityProviderKind::Introspection(opaque) = &config.identity_providers[1].kind else {
        panic!("introspection");
    };
    assert_eq!(opaque.cache_ttl, std::time::Duration::from_secs(120));
    assert_eq!(opaque.timeout, std::time::Duration::from_secs(3));
    assert!(
        opaque.rules.audiences.is_empty(),
        "optional for introspection"
    );
    let IdentityProviderKind::Oidc {
        bearer: Some(bearer),
        ..
    } = &config.identity_providers[2].kind
    else {
        panic!("oidc bearer");
    };
    assert_eq!(bearer.algorithms, DEFAULT_ALGORITHMS);
    let account = &config.service_accounts[0];
    assert_eq!(account.key_hashes, [crate::apikey::digest(&key.key)]);
    assert_eq!(account.user_type, UserType::Internal);
    // Valid through the day it names, UTC.
    assert_eq!(account.expires, Some(1_814_400_000));
    assert_eq!(
        config.apps[0].accept,
        Accept {
            session: true,
            bearer: true,
            api_key: true
        }
    );
    let plain = with_sections(
        "",
        "  - id: chat\n    hosts: [chat.example.com]\n    upstream: http://127.0.0.1:3000\n",
    )
    .expect("valid");
    assert_eq!(plain.apps[0].accept, Accept::default(), "sessions only");
}

#[test]
fn every_machine_mistake_names_its_key_and_the_fix() {
    let key = crate::apikey::generate();
    let sections = format!(
        r#"identity_providers:
  - id: partners
    kind: jwt
    issuer: not a url
    algorithms: [HS256, none]
    required_scopes: ["two words"]
    client_id: stray
  - id: service-accounts
    kind: oauth2-introspection
    client_id: portcullis
    jwks_uri: https://x.example/keys
  - id: corp
    kind: oidc
    issuer: https://login.example.com
    client_id: portcullis
    audiences: [chat-api]
    bearer: {{ audiences: [] }}
service_accounts:
  - id: pasted-the-key
    key_hashes: ["{key}"]
    expires: next tuesday
  - id: twice
    key_hashes: ["{hash}", "{hash}"]
  - id: no-keys
"#,
        key = key.key,
        hash = key.hash,
    );
    let apps = "  - id: chat\n    hosts: [chat.example.com]\n    upstream: http://127.0.0.1:3000\n    accept: [sessions]\n  - id: empty\n    hosts: [b.example.com]\n    upstream: http://127.0.0.1:3000\n    accept: []\n";
    let found = problems(&sections, apps);
    for (path, needle) in [
        ("identity_providers[0].issuer", "not a URL"),
        ("identity_providers[0].audiences", "at least one audience"),
        ("identity_providers[0].algorithms[0]", "never none or HS*"),
        ("identity_providers[0].algorithms[1]", "not accepted"),
        ("identity_providers[0].required_scopes[0]", "one word"),
        (
            "identity_providers[0].client_id",
            "does nothing for kind: jwt",
        ),
        ("identity_providers[1].id", "reserved for service accounts"),
        (
            "identity_providers[1].introspection_endpoint",
            "is required",
        ),
        ("identity_providers[1].client_secret", "is required"),
        (
            "identity_providers[1].jwks_uri",
            "does nothing for kind: oauth2-introspection",
        ),
        (
            "identity_providers[2].audiences",
            "does nothing for kind: oidc",
        ),
        (
            "identity_providers[2].bearer.audiences",
            "at least one audience",
        ),
        ("service_accounts[0].key_hashes[0]", "never the key itself"),
        ("service_accounts[0].expires", "2027-06-30"),
        ("service_accounts[1].key_hashes[1]", "listed twice"),
        ("service_accounts[2].key_hashes", "portcullis keys api-key"),
        ("apps[0].accept[0]", "use session, bearer or api-key"),
        ("apps[1].accept", "accepts nothing"),
    ] {
        assert!(has(&found, path, needle), "{path}: {needle}\n{found:#?}");
    }
}

#[test]
fn an_app_cannot_accept_what_nobody_can_present() {
    let found = problems("", APP);
    assert!(
        has(
            &found,
            "apps[0].accept",
            "no identity provider checks bearer tokens"
        ),
        "{found:#?}"
    );
    assert!(
        has(&found, "apps[0].accept", "there are no service_accounts"),
        "{found:#?}"
    );
}

#[test]
fn rules_may_name_the_service_accounts_and_an_issuer_is_checked_once() {
    let key = crate::apikey::generate();
    let sections = format!(
        "identity_providers:\n  - id: a\n    kind: jwt\n    issuer: https://auth.example.com\n    audiences: [x]\n  - id: b\n    kind: jwt\n    issuer: https://auth.example.com\n    audiences: [y]\nidentity:\n  roles: [{{ role: robot, provider: service-accounts }}]\nservice_accounts:\n  - id: sync\n    key_hashes: [\"{}\"]\n",
        key.hash
    );
    let apps = "  - id: chat\n    hosts: [chat.example.com]\n    upstream: http://127.0.0.1:3000\n    accept: [api-key]\n    access: { identity_providers: [service-accounts] }\n";
    let found = problems(&sections, apps);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(has(
        &found,
        "identity_providers[1].issuer",
        "already checks bearer tokens"
    ));
}

#[test]
fn rate_limits_may_count_by_client() {
    let apps = "  - id: chat\n    hosts: [chat.example.com]\n    upstream: http://127.0.0.1:3000\n    rate_limits: [{ key: client, rate: 10/s, burst: 5 }]\n";
    let config = with_sections("", apps).expect("valid");
    assert_eq!(config.apps[0].rate_limits[0].key, LimitKey::Client);
}
