use std::path::Path;

use super::*;
use crate::config::testing::{key_file, with_apps};

/// The problems of the file itself (what names keys and certificates is checked when the
/// runtime is built: `runtime/tests.rs`).
fn checked(compiled: Result<Config, ConfigReport>) -> Vec<ConfigIssue> {
    match compiled {
        Ok(_) => Vec::new(),
        Err(report) => report.issues,
    }
}

fn issues(yaml: &str) -> Vec<ConfigIssue> {
    checked(Config::from_yaml(Path::new("t.yaml"), yaml))
}

fn has(issues: &[ConfigIssue], path: &str, needle: &str) -> bool {
    issues
        .iter()
        .any(|i| i.path == path && i.message.contains(needle))
}

#[test]
fn smallest_real_config_compiles() {
    let (cert, key) = crate::config::testing::certificate();
    let yaml = format!(
        r#"
server:
  public_url: https://chat.example.com
  https:
    listen: ["0.0.0.0:443"]
    certificates: [{{ cert: {}, key: {} }}]
session:
  encryption_keys: ["file:{}"]
identity_providers:
  - id: corp
    kind: oidc
    issuer: https://login.example.com
    client_id: portcullis
    client_secret: "file:{}"
apps:
  - id: chat
    hosts: [chat.example.com]
    upstream: http://127.0.0.1:3000
    access:
      user_types: [internal-user, external-user]
"#,
        cert,
        key,
        key_file(),
        key_file()
    );
    let config = Config::from_yaml(Path::new("t.yaml"), &yaml).expect("smallest config is valid");
    assert!(
        !config.server.work_stealing,
        "a runtime per worker thread by default"
    );
    let stealing = yaml.replacen("server:\n", "server:\n  work_stealing: true\n", 1);
    let stealing = Config::from_yaml(Path::new("t.yaml"), &stealing).expect("valid");
    assert!(stealing.server.work_stealing);
    let app = &config.apps[0];
    assert_eq!(app.upstream.address, "127.0.0.1:3000");
    assert!(app.enabled && app.preserve_host && !app.insecure_allow_plain_http);
    assert_eq!(app.upstream.timeouts.connect, Duration::from_secs(10));
    assert_eq!(
        app.upstream.timeouts.websocket_idle,
        Duration::from_secs(15 * 60)
    );
    assert!(config.server.sign_in.auto_redirect);
    assert!(config.server.client_ip_headers.is_empty());
    assert_eq!(config.server.reserved_prefix, "/.portcullis/");
    assert_eq!(config.session.cookie_name, "__Host-portcullis");
    assert_eq!(config.admin.listen.to_string(), "127.0.0.1:9901");
    assert!(matches!(
        config.identity_providers[0].kind,
        IdentityProviderKind::Oidc { .. }
    ));
}

#[test]
fn every_problem_is_reported_at_once_with_paths_and_lines() {
    let yaml = String::from(
        "server:\n  public_url: https://chat.example.com\n  http:\n    listen: [\"127.0.0.1:0\"]\n  trusted_proxies: [10.0.0.0/33]\n  bogus_key: 1\nsession:\n  encryption_keys: [env:PORTCULLIS_TEST_DEFINITELY_UNSET]\napps:\n  - id: chat\n    hosts: [chat.example.com]\n    upstream: http://127.0.0.1:3000\n    timeouts:\n      read: forever\n  - id: other\n    hosts: [b.example.com]\n    upstream: http://127.0.0.1:3001\n    upstreem: typo\n"
    );
    let found = issues(&yaml);
    // server has an unknown key, so the section stops there; the others are independent.
    assert!(
        has(&found, "server.bogus_key", "unknown field `bogus_key`"),
        "{found:#?}"
    );
    assert!(
        has(
            &found,
            "session.encryption_keys[0]",
            "PORTCULLIS_TEST_DEFINITELY_UNSET"
        ),
        "{found:#?}"
    );
    assert!(
        has(&found, "apps[0].timeouts.read", "not a duration"),
        "{found:#?}"
    );
    assert!(
        has(&found, "apps[1].upstreem", "unknown field `upstreem`"),
        "{found:#?}"
    );
    // No follow-on noise from the sections that could not be read.
    assert_eq!(found.len(), 4, "{found:#?}");
    let line_of = |path: &str| found.iter().find(|i| i.path == path).and_then(|i| i.line);
    assert_eq!(line_of("apps[0].timeouts.read"), Some(14));
    assert_eq!(line_of("session.encryption_keys[0]"), Some(8));
    assert!(
        found.iter().all(|i| i.hint.is_some()),
        "every issue has a hint: {found:#?}"
    );
}

#[test]
fn bad_cidr_and_other_value_errors() {
    let yaml = format!(
        "server:\n  public_url: not a url\n  http:\n    listen: [\"nowhere\"]\n  trusted_proxies: [10.0.0.0/33, 192.168.1.1, \"fd00::/8\"]\nsession:\n  encryption_keys: [\"file:{}\", hunter2]\napps:\n  - id: Chat\n    hosts: [\"a.test:443\"]\n    upstream: ftp://x\n    public_paths: [static/**]\n",
        key_file()
    );
    let found = issues(&yaml);
    for (path, needle) in [
        ("server.public_url", "not an http(s) URL"),
        ("server.http.listen[0]", "not an address"),
        ("server.trusted_proxies[0]", "not a CIDR"),
        ("session.encryption_keys[1]", "never written inline"),
        ("apps[0].id", "not a valid id"),
        ("apps[0].hosts[0]", "not a host name"),
        ("apps[0].upstream", "not an http:// or https:// URL"),
        ("apps[0].public_paths[0]", "must start with '/'"),
    ] {
        assert!(
            has(&found, path, needle),
            "missing {path}: {needle} in {found:#?}"
        );
    }
    assert_eq!(
        found
            .iter()
            .filter(|i| i.path.starts_with("server.trusted_proxies"))
            .count(),
        1
    );
}

#[test]
fn duplicate_routes_and_ids_are_refused() {
    let err = with_apps(
        "  - id: a\n    hosts: [x.test]\n    upstream: http://127.0.0.1:1\n  - id: a\n    hosts: [y.test]\n    upstream: http://127.0.0.1:1\n  - id: c\n    hosts: [x.test]\n    upstream: http://127.0.0.1:1\n",
    )
    .expect_err("duplicates");
    assert!(has(&err.issues, "apps[1].id", "duplicate id"));
    assert!(has(&err.issues, "apps[2].hosts", "already serves"));
}

#[test]
fn unknown_sections_and_syntax_errors() {
    let found = issues("server: {}\nsesion: {}\n");
    assert!(has(&found, "sesion", "unknown section"));
    let syntax = issues("server:\n  public_url: [unclosed\n");
    assert_eq!(syntax.len(), 1);
    assert!(syntax[0].line.is_some());
}

#[test]
fn report_renders_file_line_path_and_hint() {
    let report = Config::from_yaml(Path::new("/etc/p.yaml"), "apps: 3\n").expect_err("invalid");
    let text = report.to_string();
    assert!(
        text.contains("/etc/p.yaml:1: apps: must be a list"),
        "{text}"
    );
    assert!(text.contains("hint:"), "{text}");
    assert!(text.ends_with("in /etc/p.yaml"), "{text}");
}

#[test]
fn tls_settings_for_plain_upstream_would_do_nothing() {
    let err = with_apps("  - id: a\n    hosts: [x.test]\n    upstream: http://127.0.0.1:1\n    upstream_tls: { server_name: x }\n").expect_err("useless setting");
    assert!(has(&err.issues, "apps[0].upstream_tls", "would do nothing"));
}

#[test]
fn settings_that_would_do_nothing_are_errors() {
    let only_http = format!(
        "server:\n  public_url: https://c.example.com\n  http:\n    listen: [\"127.0.0.1:0\"]\n  hsts: {{ max_age: 1d }}\nsession:\n  encryption_keys: [\"file:{}\"]\nidentity_providers:\n  - id: corp\n    kind: saml\n    idp_metadata: https://idp.example.com/metadata\n    client_id: stray\napps:\n  - id: a\n    hosts: [a.test]\n    upstream: http://127.0.0.1:1\n",
        key_file()
    );
    let found = issues(&only_http);
    assert!(
        has(&found, "server.http", "no HTTPS listener"),
        "{found:#?}"
    );
    assert!(
        has(&found, "server.hsts", "only sent over HTTPS"),
        "{found:#?}"
    );
    assert!(
        has(&found, "identity_providers[0].client_id", "belongs to oidc"),
        "{found:#?}"
    );

    let err = with_apps("  - id: a\n    hosts: [x.test]\n    upstream: http://127.0.0.1:1\n    allow_plain_http: true\n").expect("http listener exists");
    assert!(err.apps[0].insecure_allow_plain_http);
    assert!(err.warnings.iter().any(|w| w.contains("unencrypted")));
}

#[test]
fn unusable_pem_files_are_caught_by_check() {
    let dir = tempfile::tempdir().expect("tempdir");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").expect("write");
    let yaml = |upstream_tls: &str| {
        format!(
            "server:\n  public_url: https://c.example.com\n  https:\n    listen: [\"127.0.0.1:0\"]\n    certificates: [{{ cert: \"{g}\", key: \"{g}\" }}]\nsession:\n  encryption_keys: [\"file:{k}\"]\napps:\n  - id: a\n    hosts: [a.test]\n    upstream: https://127.0.0.1:1\n{upstream_tls}",
            g = garbage.display(),
            k = key_file()
        )
    };
    // The CA file is read with the file (the listener certificate when the runtime is built).
    let found = issues(&yaml(&format!(
        "    upstream_tls: {{ ca_file: \"{}\" }}\n",
        garbage.display()
    )));
    assert!(
        has(&found, "apps[0].upstream_tls.ca_file", "no PEM certificate"),
        "{found:#?}"
    );
}

#[test]
fn relative_paths_are_relative_to_the_config_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("session.key"),
        "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
    )
    .expect("key");
    let (cert, key) = crate::config::testing::certificate();
    let yaml = format!(
        "server:\n  public_url: https://c.example.com\n  https:\n    listen: [\"127.0.0.1:0\"]\n    certificates: [{{ cert: \"{cert}\", key: \"{key}\" }}]\n  pid_file: run/p.pid\nsession:\n  encryption_keys: [\"file:session.key\"]\naudit:\n  path: logs/audit.jsonl\napps:\n  - id: a\n    hosts: [a.test]\n    upstream: http://127.0.0.1:1\n"
    );
    let config = Config::from_yaml(&dir.path().join("p.yaml"), &yaml).expect("valid");
    let base = std::path::absolute(dir.path()).expect("absolute");
    assert_eq!(config.audit.path, base.join("logs/audit.jsonl"));
    assert_eq!(config.server.pid_file, base.join("run/p.pid"));
    assert_eq!(config.session.encryption_keys.len(), 1);
}

#[test]
fn oidc_prompt_must_be_known() {
    let yaml = format!(
        "server:\n  public_url: https://c.example.com\n  http:\n    listen: [\"127.0.0.1:0\"]\nsession:\n  encryption_keys: [\"file:{k}\"]\nidentity_providers:\n  - id: corp\n    kind: oidc\n    issuer: https://op.example.com\n    client_id: x\n    prompt: sometimes\n    acr_values: urn:mfa\n    token_endpoint_auth: private_key_jwt\napps:\n  - id: a\n    hosts: [a.test]\n    upstream: http://127.0.0.1:1\n    allow_plain_http: true\n",
        k = key_file()
    );
    let found = issues(&yaml);
    assert!(
        has(&found, "identity_providers[0].prompt", "not an OIDC prompt"),
        "{found:#?}"
    );
    assert!(
        has(
            &found,
            "identity_providers[0].token_endpoint_auth",
            "unknown method"
        ),
        "{found:#?}"
    );
    assert_eq!(found.len(), 2, "{found:#?}");
}

fn policy_issues(sections: &str, apps: &str) -> Vec<ConfigIssue> {
    checked(crate::config::testing::with_sections(sections, apps))
}

#[test]
fn policy_sections_report_every_mistake_with_its_path() {
    let sections = r#"identity_providers:
  - id: corp
    kind: oidc
    issuer: https://op.test
    client_id: x
    claims: { user_id: "a..b", custom: { "bad key": name } }
  - id: staff
    kind: local
    users: [{ username: a, password_hash: "$argon2id$v=19$m=19456,t=2,p=1$NUmIOwwJuAAr5f6fKD51uA$yvU6MqSMFJRFOoxwAZ5gHwg26VFwidea4PwmwY08nC8" }]
    claims: { email: mail }
identity:
  internal_users:
    - { email_domain: "corp..test" }
    - { claim: employee_type }
    - {}
  roles:
    - { group: admins }
  groups_as_roles: { prefix: "" }
assertion:
  algorithm: RS256
  ttl: 1h
"#;
    let apps = r#"  - id: a
    hosts: [a.test]
    upstream: http://127.0.0.1:1
    access:
      user_types: [robot]
      roles: []
      identity_providers: [nope]
    rules:
      - name: r
        paths: [relative]
        methods: ["GE T"]
      - name: r
        paths: [/x]
        deny: true
        access: { roles: [a] }
    entity_scope: { path_pattern: "/api/{tenant}/**" }
    identity_headers: { budget_bytes: 10 }
"#;
    let found = policy_issues(sections, apps);
    let expect = [
        ("identity_providers[0].claims.user_id", "not a claim name"),
        (
            "identity_providers[0].claims.custom.bad key",
            "not a valid custom key",
        ),
        ("identity_providers[1].claims", "local users have no claims"),
        (
            "identity.internal_users[0].email_domain",
            "not an e-mail domain",
        ),
        ("identity.internal_users[1].equals", "needs `equals`"),
        ("identity.internal_users[2]", "at least one condition"),
        ("identity.roles[0].role", "is required"),
        ("identity.groups_as_roles.prefix", "non-empty prefix"),
        ("assertion.algorithm", "unsupported algorithm"),
        ("assertion.ttl", "out of range"),
        ("apps[0].access.user_types[0]", "unknown user type"),
        ("apps[0].access.roles", "admit nobody"),
        (
            "apps[0].access.identity_providers[0]",
            "no identity provider",
        ),
        ("apps[0].rules[0].paths[0]", "must start with '/'"),
        ("apps[0].rules[0].methods[0]", "not an HTTP method"),
        ("apps[0].rules[0]", "needs `access`"),
        ("apps[0].rules[1].name", "duplicate rule name"),
        ("apps[0].rules[1].access", "would do nothing"),
        ("apps[0].entity_scope.path_pattern", "{entity}"),
        ("apps[0].identity_headers.budget_bytes", "out of range"),
    ];
    for (path, needle) in expect {
        assert!(has(&found, path, needle), "{path}: {needle}\n{found:#?}");
    }
}

#[test]
fn policy_sections_compile_to_their_meaning() {
    let config = crate::config::testing::with_sections(
        "identity:\n  internal_users: [{ email_domain: \"*.Corp.test\" }]\n  entity: { email_domains: { acme.test: acme } }\nassertion: { algorithm: EdDSA, ttl: 2m }\n",
        "  - id: a\n    hosts: [a.test]\n    upstream: http://127.0.0.1:1\n    access: { roles: [x] }\n    rules:\n      - { paths: [/t/**], methods: [post], access: { require_mfa: true } }\n    entity_scope: { query_param: org, strict: true }\n    identity_headers: { plain: true, roles: [x] }\n",
    )
    .expect("valid");
    assert_eq!(
        config.identity.internal_users[0].email_domain,
        Some(DomainPattern::Subdomains(".corp.test".into()))
    );
    assert_eq!(config.identity.entity_by_email_domain["acme.test"], "acme");
    assert_eq!(config.assertion.algorithm, AssertionAlgorithm::EdDsa);
    assert_eq!(config.assertion.ttl, Duration::from_secs(120));
    assert_eq!(config.assertion.issuer, "https://chat.example.com");
    let app = &config.apps[0];
    assert_eq!(app.access.user_types, Some(vec![]), "no user_types: nobody");
    assert_eq!(app.rules[0].name, "rules[0]");
    assert_eq!(app.rules[0].methods, ["POST"]);
    assert!(app.rules[0].access.require_mfa && app.rules[0].access.user_types.is_none());
    let scope = app.entity_scope.as_ref().expect("scope");
    assert!(scope.strict && scope.query_param.as_deref() == Some("org") && scope.path.is_none());
    assert!(app.identity_headers.plain);
}

#[test]
fn network_guards_report_mistakes_and_compile() {
    let found = policy_issues(
        "",
        "  - id: a\n    hosts: [a.test]\n    upstream: http://127.0.0.1:1\n    ip_allowlist: { mode: block, cidrs: [10.0.0.0/33] }\n    rate_limits:\n      - { key: session, rate: 10/s }\n      - { key: user, rate: ten }\n      - { key: user, rate: 5/s, burst: 0 }\n    rules:\n      - { paths: [/x], ip_allowlist: { cidrs: [] } }\n",
    );
    for (path, needle) in [
        ("apps[0].ip_allowlist.mode", "unknown mode"),
        ("apps[0].ip_allowlist.cidrs[0]", ""),
        ("apps[0].rate_limits[0].key", "unknown key"),
        ("apps[0].rate_limits[1].rate", "not a rate"),
        ("apps[0].rate_limits[2].burst", "at least 1"),
        (
            "apps[0].rules[0].ip_allowlist.cidrs",
            "at least one network",
        ),
    ] {
        assert!(has(&found, path, needle), "{path}\n{found:#?}");
    }
    let config = crate::config::testing::with_apps(
        "  - id: a\n    hosts: [a.test]\n    upstream: http://127.0.0.1:1\n    rate_limits: [{ key: user+path, rate: 600/min, burst: 20 }]\n",
    )
    .expect("valid");
    let limit = config.apps[0].rate_limits[0];
    assert_eq!(limit.key, LimitKey::UserPath);
    assert_eq!(
        (limit.rate.get(), limit.per, limit.burst.get()),
        (600, Duration::from_secs(60), 20)
    );
    let pre_auth = config.server.pre_auth_rate_limit.expect("on by default");
    assert_eq!((pre_auth.rate.get(), pre_auth.burst.get()), (10, 50));
}

#[test]
fn rules_that_change_nothing_and_unknown_providers_in_identity_rules_are_errors() {
    let found = policy_issues(
        "identity_providers:\n  - { id: corp, kind: oidc, issuer: https://op.test, client_id: x }\nidentity:\n  internal_users: [{ provider: crop }]\n  roles: [{ role: a, provider: corp }]\n",
        "  - id: a\n    hosts: [a.test]\n    upstream: http://127.0.0.1:1\n    access: { user_types: [internal-user] }\n    rules:\n      - { paths: [/x], access: {} }\n      - { paths: [/y], access: { user_types: [] } }\n",
    );
    assert!(
        has(
            &found,
            "identity.internal_users[0].provider",
            "no identity provider"
        ),
        "{found:#?}"
    );
    assert!(
        !found.iter().any(|i| i.path.starts_with("identity.roles")),
        "{found:#?}"
    );
    assert!(
        has(&found, "apps[0].rules[0].access", "add nothing"),
        "{found:#?}"
    );
    assert!(
        has(&found, "apps[0].rules[1].access.user_types", "admit nobody"),
        "{found:#?}"
    );
}

#[test]
fn proxy_protocol_needs_trusted_proxies() {
    let found = issues(
        "server:\n  public_url: http://a.test\n  http: { listen: [\"127.0.0.1:0\"], proxy_protocol: true }\nsession:\n  encryption_keys: [env:NOPE]\napps: []\n",
    );
    assert!(
        has(&found, "server.http.proxy_protocol", "trusted_proxies"),
        "{found:#?}"
    );
}

#[test]
fn saml_providers_are_checked_and_compiled() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cert_key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["idp.test".into()])
        .expect("params")
        .self_signed(&cert_key)
        .expect("cert");
    let cert_file = dir.path().join("idp.crt");
    std::fs::write(&cert_file, cert.pem()).expect("write");
    // Metadata without a signing certificate: responses could not be verified.
    let unsigned_md = dir.path().join("unsigned.xml");
    std::fs::write(
        &unsigned_md,
        r#"<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" entityID="https://idp.test"><md:IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol"><md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="https://idp.test/sso"/></md:IDPSSODescriptor></md:EntityDescriptor>"#,
    )
    .expect("write");
    let apps = "  - id: a\n    hosts: [a.test]\n    upstream: http://127.0.0.1:1\n";
    // Problems in the file itself (in what it names: `runtime/tests.rs`).
    let sections = format!(
        "identity_providers:\n  - id: inline\n    kind: saml\n    idp_entity_id: https://idp.test\n  - id: skewed\n    kind: saml\n    idp_metadata: {md}\n    clock_skew: 1h\n",
        md = unsigned_md.display(),
    );
    let found = policy_issues(&sections, apps);
    for (path, needle) in [
        ("identity_providers[0].idp_sso_url", "is required"),
        (
            "identity_providers[0].idp_certificates",
            "responses could not be verified",
        ),
        ("identity_providers[1].clock_skew", "longer than 10m"),
    ] {
        assert!(has(&found, path, needle), "{path}: {found:#?}");
    }

    let good = format!(
        "identity_providers:\n  - id: corp\n    kind: saml\n    idp_entity_id: https://idp.test\n    idp_sso_url: https://idp.test/sso\n    idp_certificates: [{cert}]\n    claims: {{ email: mail }}\n",
        cert = cert_file.display()
    );
    let config = crate::config::testing::with_sections(&good, apps).expect("valid");
    let provider = &config.identity_providers[0];
    let IdentityProviderKind::Saml(saml) = &provider.kind else {
        panic!("a SAML provider");
    };
    assert_eq!(saml.idp_entity_id.as_deref(), Some("https://idp.test"));
    assert_eq!(saml.idp_certificates.len(), 1);
    assert_eq!(
        saml.sp_entity_id,
        "https://chat.example.com/.portcullis/saml/metadata"
    );
    assert_eq!(saml.clock_skew, Duration::from_secs(120));
    assert!(!saml.allow_unsolicited && !saml.insecure_allow_sha1);
    assert_eq!(
        provider.claims.user_id,
        ClaimPath("name_id".into()),
        "SAML default"
    );
    assert_eq!(provider.claims.email, ClaimPath("mail".into()));
}

#[test]
fn client_ip_headers_pass_only_from_trusted_proxies_and_never_our_own() {
    let yaml = |server: &str| {
        format!(
            "server:\n  public_url: https://chat.example.com\n  http:\n    listen: [\"127.0.0.1:0\"]\n{server}session:\n  encryption_keys: [\"file:{}\"]\napps:\n  - id: chat\n    hosts: [chat.example.com]\n    upstream: http://127.0.0.1:3000\n    allow_plain_http: true\n",
            key_file()
        )
    };
    let found = issues(&yaml("  client_ip_headers: [CF-Connecting-IP]\n"));
    assert!(
        has(
            &found,
            "server.client_ip_headers",
            "trusted_proxies, which is empty"
        ),
        "{found:#?}"
    );
    let found = issues(&yaml(
        "  trusted_proxies: [10.0.0.0/8]\n  client_ip_headers: [X-Real-IP, x-nope, True-Client-IP]\n",
    ));
    assert!(
        has(&found, "server.client_ip_headers[0]", "set by Portcullis"),
        "{found:#?}"
    );
    assert!(has(
        &found,
        "server.client_ip_headers[1]",
        "not a client-address header"
    ));
    assert!(!found
        .iter()
        .any(|i| i.path == "server.client_ip_headers[2]"));
    let config = Config::from_yaml(
        Path::new("t.yaml"),
        &yaml("  trusted_proxies: [10.0.0.0/8]\n  client_ip_headers: [CF-Connecting-IP]\n  sign_in: { auto_redirect: false }\n"),
    )
    .expect("valid");
    assert_eq!(config.server.client_ip_headers, vec!["cf-connecting-ip"]);
    assert!(!config.server.sign_in.auto_redirect);
}

#[test]
fn store_section_is_checked_and_compiled() {
    let app = "  - id: a\n    hosts: [a.test]\n    upstream: http://127.0.0.1:1\n";
    let config = crate::config::testing::with_sections(
        "store:\n  kind: redis\n  url: redis://127.0.0.1:6379/2\n  key_prefix: \"chat:\"\n  timeout: 20ms\n",
        app,
    )
    .expect("valid");
    let Store::Redis(redis) = &config.store else {
        panic!("a redis store");
    };
    let RedisServers::Single(url) = &redis.servers else {
        panic!("one server");
    };
    assert_eq!(url.expose(), "redis://127.0.0.1:6379/2");
    assert!(!redis.tls && redis.ca_file.is_none());
    assert_eq!(redis.key_prefix, "chat:");
    assert_eq!(redis.timeout, Duration::from_millis(20));
    let memory = crate::config::testing::with_sections("", app).expect("valid");
    assert!(matches!(memory.store, Store::Memory));

    for (section, path, needle) in [
        ("store:\n  kind: redis\n", "store.url", "is required"),
        (
            "store:\n  kind: redis\n  url: http://x\n",
            "store.url",
            "not a redis://",
        ),
        (
            "store:\n  kind: redis\n  url: redis://:hunter2@127.0.0.1:6379\n",
            "store.url",
            "password written in the file",
        ),
        (
            "store:\n  url: redis://127.0.0.1\n",
            "store.url",
            "only read with kind: redis",
        ),
        ("store:\n  kind: etcd\n", "store.kind", "unknown store"),
        (
            "store:\n  kind: redis\n  url: redis://127.0.0.1\n  cluster: [redis://10.0.0.1:6379]\n",
            "store.cluster",
            "cannot be given with store.url",
        ),
        (
            "store:\n  kind: redis\n  url: redis://127.0.0.1\n  timeout: 10s\n",
            "store.timeout",
            "between 1ms and 5s",
        ),
    ] {
        let found = policy_issues(section, app);
        assert!(has(&found, path, needle), "{section}: {found:#?}");
    }
}

#[test]
fn the_last_sse_event_is_on_unless_turned_off() {
    let (cert, key) = crate::config::testing::certificate();
    let yaml = |extra: &str| {
        format!(
            "server:\n  public_url: https://chat.example.com\n  https:\n    listen: [\"127.0.0.1:0\"]\n    certificates: [{{ cert: \"{cert}\", key: \"{key}\" }}]\n{extra}session:\n  encryption_keys: [\"file:{}\"]\napps:\n  - {{ id: a, hosts: [a.test], upstream: http://127.0.0.1:9, public_paths: [\"/**\"] }}\n",
            key_file()
        )
    };
    let compile = |extra: &str| Config::from_yaml(Path::new("t.yaml"), &yaml(extra));
    assert!(compile("").expect("valid").server.sse_end_event);
    let off = compile("  sse_end_event: false\n").expect("valid");
    assert!(!off.server.sse_end_event);
    assert!(has(
        &checked(compile("  sse_end_event: maybe\n")),
        "server.sse_end_event",
        ""
    ));
}

#[test]
fn audit_rotation_and_retention_compile_and_refuse_useless_bounds() {
    use crate::config::testing::with_sections;
    let app = "  - id: a\n    hosts: [a.test]\n    upstream: http://127.0.0.1:1\n";
    let config = with_sections(
        "audit:\n  path: /tmp/a.jsonl\n  rotate: { max_size: 268435456, max_age: 1d }\n  retention: { keep: 90d, compress: true }\n",
        app,
    )
    .expect("valid");
    assert_eq!(config.audit.rotate.max_size, Some(268_435_456));
    assert_eq!(
        config.audit.rotate.max_age,
        Some(std::time::Duration::from_secs(86_400))
    );
    let retention = config.audit.retention.expect("retention");
    assert_eq!(
        retention.keep,
        Some(std::time::Duration::from_secs(90 * 86_400))
    );
    assert!(retention.compress);
    let report = with_sections(
        "audit:\n  path: /tmp/a.jsonl\n  rotate: { max_size: 100, max_age: 0s }\n  retention: { keep: 0s }\n",
        app,
    )
    .expect_err("useless bounds");
    for key in [
        "audit.rotate.max_size",
        "audit.rotate.max_age",
        "audit.retention.keep",
    ] {
        assert!(has(&report.issues, key, "at least"), "{key}: {report}");
    }
    // Sizes are bytes, as everywhere else in the file; the hint gives the number.
    let report = with_sections(
        "audit:\n  path: /tmp/a.jsonl\n  rotate: { max_size: 256MiB }\n",
        app,
    )
    .expect_err("a unit");
    assert!(report.to_string().contains("268435456"), "{report}");
}

#[test]
fn audit_sinks_compile_and_every_mistake_is_named() {
    use crate::config::testing::with_sections;
    use crate::config::{SinkTarget, SyslogTransport};
    let app = "  - id: a\n    hosts: [a.test]\n    upstream: http://127.0.0.1:1\n";
    let dir = tempfile::tempdir().expect("tempdir");
    let token = dir.path().join("hec.token");
    std::fs::write(&token, "Splunk abc").expect("token");
    let config = with_sections(
        &format!(
            "audit:\n  path: /tmp/a/audit.jsonl\n  sinks:\n    - {{ kind: syslog, address: \"tcp+tls://siem.example:6514\", ca: /etc/ssl/siem.pem }}\n    - {{ id: local, kind: syslog, address: \"udp://127.0.0.1:514\" }}\n    - {{ kind: http, url: \"https://hec.example/services/collector/raw\", headers: {{ Authorization: \"file:{}\" }}, batch: {{ max_records: 100, max_wait: 2s }} }}\n",
            token.display()
        ),
        app,
    )
    .expect("valid");
    let sinks = &config.audit.sinks;
    assert_eq!(sinks.len(), 3);
    assert_eq!(sinks[0].id, "syslog-siem.example:6514");
    match &sinks[0].target {
        SinkTarget::Syslog {
            transport,
            address,
            server_name,
            ca,
        } => {
            assert_eq!(*transport, SyslogTransport::Tls);
            assert_eq!(address, "siem.example:6514");
            assert_eq!(server_name, "siem.example");
            assert!(ca.is_some());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(sinks[1].id, "local");
    match &sinks[2].target {
        SinkTarget::Http {
            headers,
            max_records,
            max_wait,
            ..
        } => {
            assert_eq!(headers[0].1.expose(), "Splunk abc");
            assert_eq!(*max_records, 100);
            assert_eq!(*max_wait, std::time::Duration::from_secs(2));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        config.audit.spool,
        std::path::Path::new("/tmp/a/audit-sinks")
    );

    let report = with_sections(
        "audit:\n  sinks:\n    - { kind: syslog, address: \"siem.example:514\" }\n    - { kind: syslog, address: \"tcp://h:1\", url: \"https://x\", ca: /x.pem }\n    - { kind: http, url: \"ftp://x\", headers: { Authorization: \"Splunk inline\" }, format: xml }\n    - { kind: kafka }\n    - { id: twin, kind: syslog, address: \"tcp://h:1\" }\n    - { id: twin, kind: syslog, address: \"tcp://h:2\" }\n",
        app,
    )
    .expect_err("mistakes");
    let issues = &report.issues;
    assert!(
        has(issues, "audit.sinks[0].address", "not a syslog address"),
        "{report}"
    );
    assert!(
        has(issues, "audit.sinks[1].url", "only applies to kind: http"),
        "{report}"
    );
    assert!(
        has(issues, "audit.sinks[1].ca", "only applies to tcp+tls"),
        "{report}"
    );
    assert!(
        has(issues, "audit.sinks[2].url", "not an http(s) URL"),
        "{report}"
    );
    assert!(
        has(issues, "audit.sinks[2].format", "unknown format"),
        "{report}"
    );
    assert!(
        issues
            .iter()
            .any(|i| i.path == "audit.sinks[2].headers.Authorization"),
        "an inline token is refused: {report}"
    );
    assert!(
        has(issues, "audit.sinks[3].kind", "unknown sink kind"),
        "{report}"
    );
    assert!(
        has(issues, "audit.sinks", "two sinks are named `twin`"),
        "{report}"
    );
}
