//! Table tests over every layer, and property tests against an independent statement of the
//! rules.

use std::sync::Arc;

use proptest::prelude::*;

use super::*;

/// The client address of table rows (no allowlist in the table apps refuses it).
const IP: Option<std::net::IpAddr> =
    Some(std::net::IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 10)));
use crate::config::testing::with_sections;
use crate::config::{App, Config, UserType};
use crate::identity::AuthMethod;

const PROVIDERS: &str = "identity_providers:
  - { id: corp, kind: oidc, issuer: https://op.test, client_id: portcullis }
  - { id: partner-sso, kind: oidc, issuer: https://partner.test, client_id: portcullis }
";

const APPS: &str = r#"  - id: support
    hosts: [s.test]
    upstream: http://127.0.0.1:1
    public_paths: [/healthz]
    access:
      user_types: [internal-user, external-user]
      entities: [acme, globex, partner]
      roles: [customer, agent, admin]
      override: { users: [vip@corp.test], entities: [partner] }
      identity_providers: [corp]
    rules:
      - name: billing-agent
        paths: ["/api/agents/billing-*/**"]
        methods: [POST]
        access: { roles: [billing, admin], require_mfa: true }
      - name: admin-console
        paths: [/admin/**]
        access: { user_types: [internal-user] }
      - name: legacy
        paths: [/api/legacy/**]
        deny: true
    entity_scope: { path_pattern: "/api/entities/{entity}/**", query_param: entity }
  - id: strict
    hosts: [t.test]
    upstream: http://127.0.0.1:1
    access: { user_types: [internal-user, external-user] }
    entity_scope: { path_pattern: "/orgs/{entity}", strict: true }
  - id: nobody
    hosts: [n.test]
    upstream: http://127.0.0.1:1
  - id: off
    hosts: [o.test]
    enabled: false
    upstream: http://127.0.0.1:1
    public_paths: ["/**"]
    access: { user_types: [internal-user] }
"#;

fn config() -> Config {
    match with_sections(PROVIDERS, APPS) {
        Ok(config) => config,
        Err(report) => panic!("{report}"),
    }
}

fn app<'c>(config: &'c Config, id: &str) -> &'c Arc<App> {
    config.apps.iter().find(|a| a.id == id).expect("app")
}

fn person(user_type: UserType, roles: &[&str], entity: Option<&str>) -> Identity {
    Identity {
        user_id: "u-1".into(),
        email: Some("u1@corp.test".into()),
        name: None,
        user_type,
        roles: roles.iter().map(|r| r.to_string()).collect(),
        entity: entity.map(str::to_string),
        custom: Default::default(),
        idp: "corp".into(),
        auth_method: AuthMethod::Oidc,
        mfa: false,
        client_id: None,
    }
}

fn outcome(decision: &Decision) -> String {
    match decision {
        Decision::Allow(p) => match p.rule() {
            Some(rule) => format!("allow:{}:{rule}", p.reason().as_str()),
            None => format!("allow:{}", p.reason().as_str()),
        },
        Decision::LoginRequired => "login".into(),
        Decision::Deny(r) => format!("deny:{}", r.as_str()),
    }
}

fn run(app: &Arc<App>, method: &str, target: &str, who: Option<&Identity>) -> String {
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let request = Request {
        method,
        path,
        query,
        client_ip: IP,
    };
    let decided = decide(app, &request, who);
    // One code path: explain must reach the same decision.
    let explained = explain(app, &request, who);
    assert_eq!(outcome(&decided), outcome(&explained.decision), "{target}");
    outcome(&decided)
}

#[test]
fn every_layer() {
    let config = config();
    let support = app(&config, "support");
    let admin = Identity {
        mfa: true,
        ..person(UserType::Internal, &["admin"], None)
    };
    let admin_no_mfa = person(UserType::Internal, &["admin"], None);
    let acme = person(UserType::External, &["customer"], Some("acme"));
    let no_roles = person(UserType::External, &[], Some("acme"));
    let vip = Identity {
        email: Some("VIP@corp.test".into()),
        ..person(UserType::External, &[], Some("acme"))
    };
    let partner = person(UserType::External, &[], Some("partner"));
    let initech = person(UserType::External, &["customer"], Some("initech"));
    let no_entity = person(UserType::External, &["customer"], None);
    let other_idp = Identity {
        idp: "partner-sso".into(),
        ..acme.clone()
    };
    let billing_external = Identity {
        mfa: true,
        ..person(UserType::External, &["billing"], Some("acme"))
    };
    let table: &[(&str, &str, Option<&Identity>, &str)] = &[
        ("GET", "/healthz", None, "allow:public-path"),
        ("GET", "/chat", None, "login"),
        ("GET", "/chat", Some(&admin), "allow:authenticated"),
        ("GET", "/chat", Some(&acme), "allow:authenticated"),
        ("GET", "/chat", Some(&no_roles), "deny:role-missing"),
        ("GET", "/chat", Some(&vip), "allow:authenticated"),
        ("GET", "/chat", Some(&partner), "allow:authenticated"),
        ("GET", "/chat", Some(&initech), "deny:entity-not-allowed"),
        ("GET", "/chat", Some(&no_entity), "deny:entity-not-allowed"),
        ("GET", "/chat", Some(&other_idp), "deny:idp-not-allowed"),
        // Path rule: narrows by role and MFA, for POST only.
        (
            "POST",
            "/api/agents/billing-specialist/run",
            Some(&acme),
            "deny:role-missing",
        ),
        (
            "POST",
            "/api/agents/billing-specialist/run",
            Some(&admin),
            "allow:authenticated:billing-agent",
        ),
        (
            "POST",
            "/api/agents/billing-specialist/run",
            Some(&admin_no_mfa),
            "deny:mfa-required",
        ),
        // The app's own layers still apply under a rule: billing is not an app role.
        (
            "POST",
            "/api/agents/billing-specialist/run",
            Some(&billing_external),
            "deny:role-missing",
        ),
        (
            "GET",
            "/api/agents/billing-specialist/run",
            Some(&acme),
            "allow:authenticated",
        ),
        (
            "POST",
            "/api/agents/support/run",
            Some(&acme),
            "allow:authenticated",
        ),
        (
            "GET",
            "/admin/users",
            Some(&acme),
            "deny:user-type-not-allowed",
        ),
        (
            "GET",
            "/admin/users",
            Some(&admin),
            "allow:authenticated:admin-console",
        ),
        (
            "GET",
            "/api/legacy/export",
            Some(&admin),
            "deny:rule-denied",
        ),
        ("GET", "/api/legacy/export", None, "login"),
        // Entity isolation: path and query, every occurrence.
        (
            "GET",
            "/api/entities/acme/tickets",
            Some(&acme),
            "allow:authenticated",
        ),
        (
            "GET",
            "/api/entities/globex/tickets",
            Some(&acme),
            "deny:entity-mismatch",
        ),
        (
            "GET",
            "/api/entities/globex",
            Some(&acme),
            "deny:entity-mismatch",
        ),
        (
            "GET",
            "/api/tickets?entity=globex",
            Some(&acme),
            "deny:entity-mismatch",
        ),
        (
            "GET",
            "/api/tickets?entity=acme&entity=globex",
            Some(&acme),
            "deny:entity-mismatch",
        ),
        (
            "GET",
            "/api/tickets?entity=acme",
            Some(&acme),
            "allow:authenticated",
        ),
        (
            "GET",
            "/api/tickets?entity=glob%65x",
            Some(&acme),
            "deny:entity-mismatch",
        ),
        (
            "GET",
            "/api/entities/globex/tickets",
            Some(&admin),
            "allow:authenticated",
        ),
        (
            "GET",
            "/api/entities/globex/tickets",
            Some(&partner),
            "deny:entity-mismatch",
        ),
    ];
    for (method, target, who, want) in table {
        assert_eq!(
            run(support, method, target, *who),
            *want,
            "{method} {target} {who:?}"
        );
    }

    let strict = app(&config, "strict");
    let staff_globex = person(UserType::Internal, &[], Some("globex"));
    let staff = person(UserType::Internal, &[], None);
    assert_eq!(
        run(strict, "GET", "/orgs/globex", Some(&staff_globex)),
        "allow:authenticated"
    );
    assert_eq!(
        run(strict, "GET", "/orgs/acme", Some(&staff_globex)),
        "deny:entity-mismatch"
    );
    assert_eq!(
        run(strict, "GET", "/orgs/acme", Some(&staff)),
        "deny:entity-mismatch"
    );
    assert_eq!(
        run(strict, "GET", "/orgs/acme/x", Some(&staff)),
        "allow:authenticated",
        "pattern has no tail"
    );

    assert_eq!(
        run(app(&config, "nobody"), "GET", "/", Some(&admin)),
        "deny:user-type-not-allowed"
    );
    assert_eq!(
        run(app(&config, "off"), "GET", "/", Some(&admin)),
        "deny:app-disabled"
    );
    assert_eq!(
        run(app(&config, "off"), "GET", "/", None),
        "deny:app-disabled"
    );
}

#[test]
fn explain_names_each_layer() {
    let config = config();
    let support = app(&config, "support");
    let acme = person(UserType::External, &["customer"], Some("acme"));
    let request = Request {
        method: "POST",
        path: "/api/agents/billing-specialist/run",
        query: None,
        client_ip: IP,
    };
    let explanation = explain(support, &request, Some(&acme));
    assert_eq!(explanation.rule.as_deref(), Some("billing-agent"));
    let failed: Vec<&str> = explanation
        .steps
        .iter()
        .filter(|s| s.verdict == Verdict::Fail)
        .map(|s| s.layer)
        .collect();
    assert_eq!(failed, ["roles"]);
    let last = explanation.steps.last().expect("steps");
    assert!(last.detail.starts_with("rule:"), "{}", last.detail);
    assert!(explanation
        .steps
        .iter()
        .any(|s| s.layer == "user-type" && s.verdict == Verdict::Pass));
}

/// Permits carry identity headers only when a user was authenticated.
#[test]
fn public_paths_never_carry_identity() {
    let config = config();
    let support = app(&config, "support");
    let acme = person(UserType::External, &["customer"], Some("acme"));
    let request = Request {
        method: "GET",
        path: "/healthz",
        query: None,
        client_ip: IP,
    };
    match decide(support, &request, Some(&acme)) {
        Decision::Allow(permit) => assert!(!permit.carries_identity()),
        other => panic!("{other:?}"),
    }
}

fn identity_strategy() -> impl Strategy<Value = Identity> {
    (
        any::<bool>(),
        proptest::sample::subsequence(vec!["customer", "agent", "admin", "billing", "x"], 0..4),
        proptest::option::of(proptest::sample::select(vec![
            "acme", "globex", "partner", "initech",
        ])),
        proptest::sample::select(vec!["corp", "partner-sso"]),
        any::<bool>(),
        proptest::sample::select(vec!["u1@corp.test", "vip@corp.test"]),
    )
        .prop_map(|(internal, roles, entity, idp, mfa, email)| Identity {
            user_id: "u".into(),
            email: Some(email.into()),
            name: None,
            user_type: if internal {
                UserType::Internal
            } else {
                UserType::External
            },
            roles: roles.into_iter().map(String::from).collect(),
            entity: entity.map(String::from),
            custom: Default::default(),
            idp: idp.into(),
            auth_method: AuthMethod::Oidc,
            mfa,
            client_id: None,
        })
}

fn path_strategy() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        proptest::sample::select(vec![
            "api",
            "agents",
            "billing-x",
            "admin",
            "entities",
            "acme",
            "globex",
            "legacy",
            "chat",
            "healthz",
            "run",
        ]),
        0..5,
    )
    .prop_map(|segments| format!("/{}", segments.join("/")))
}

proptest! {
    /// An independent statement of the `support` app's rules: whenever the policy allows an
    /// authenticated request, every layer really holds.
    #[test]
    fn allow_implies_every_layer_holds(
        who in identity_strategy(),
        path in path_strategy(),
        post in any::<bool>(),
        query_entity in proptest::option::of(proptest::sample::select(vec!["acme", "globex"])),
    ) {
        let config = config();
        let support = app(&config, "support");
        let method = if post { "POST" } else { "GET" };
        let query = query_entity.map(|e| format!("entity={e}"));
        let request = Request { method, path: &path, query: query.as_deref() , client_ip: IP};
        let decision = decide(support, &request, Some(&who));
        if let Decision::Allow(permit) = decision {
            if path == "/healthz" {
                prop_assert_eq!(permit.reason(), Reason::PublicPath);
                return Ok(());
            }
            let external = who.user_type == UserType::External;
            let entity = who.entity.as_deref();
            prop_assert_eq!(who.idp.as_str(), "corp");
            // Overrides (vip by e-mail, the partner entity) skip the entities, roles and users lists.
            let overridden = who.email.as_deref() == Some("vip@corp.test") || entity == Some("partner");
            prop_assert!(!external || overridden || matches!(entity, Some("acme" | "globex" | "partner")));
            prop_assert!(overridden || who.roles.iter().any(|r| ["customer", "agent", "admin"].contains(&r.as_str())));
            prop_assert!(!path.starts_with("/api/legacy"));
            if path.starts_with("/admin") {
                prop_assert!(!external);
            }
            if post && path.starts_with("/api/agents/billing-") {
                prop_assert!(who.mfa);
                prop_assert!(who.roles.iter().any(|r| r == "billing" || r == "admin"));
            }
            if external {
                if let Some(named) = path.strip_prefix("/api/entities/").map(|r| r.split('/').next().unwrap_or("")) {
                    prop_assert!(named.is_empty() || Some(named) == entity);
                }
                if let Some(q) = query_entity {
                    prop_assert_eq!(Some(q), entity);
                }
            }
        }
    }

    /// An app that admits only internal users never allows an external one, whatever the
    /// path, method, roles or entity, when no rule matches (there are none).
    #[test]
    fn app_denial_is_never_overturned(who in identity_strategy(), path in path_strategy(), post in any::<bool>()) {
        let config = with_sections(PROVIDERS, "  - id: staff\n    hosts: [s.test]\n    upstream: http://127.0.0.1:1\n    access: { user_types: [internal-user], roles: [admin] }\n").expect("config");
        let staff = &config.apps[0];
        let request = Request { method: if post { "POST" } else { "GET" }, path: &path, query: None, client_ip: IP };
        let allowed = matches!(decide(staff, &request, Some(&who)), Decision::Allow(_));
        let admits = who.user_type == UserType::Internal && who.roles.iter().any(|r| r == "admin");
        prop_assert_eq!(allowed, admits);
    }
}

#[test]
fn ip_allowlists_come_before_login_and_report_mode_flags() {
    let config = with_sections(
        "",
        r#"  - id: office
    hosts: [o.test]
    upstream: http://127.0.0.1:1
    public_paths: [/public]
    ip_allowlist: { cidrs: [10.0.0.0/8] }
    access: { user_types: [internal-user] }
    rules:
      - name: audit
        paths: [/audit/**]
        ip_allowlist: { mode: report, cidrs: [10.1.0.0/16] }
      - name: vault
        paths: [/vault/**]
        ip_allowlist: { cidrs: [10.2.0.0/16] }
"#,
    )
    .expect("config");
    let office = &config.apps[0];
    let staff = person(UserType::Internal, &[], None);
    let at = |ip: &str, path: &str, who: Option<&Identity>| {
        let request = Request {
            method: "GET",
            path,
            query: None,
            client_ip: ip.parse().ok(),
        };
        match decide(office, &request, who) {
            Decision::Allow(p) => format!("allow:{}", p.ip_reported()),
            other => outcome(&other),
        }
    };
    assert_eq!(
        at("192.0.2.1", "/x", None),
        "deny:ip-not-allowed",
        "before login"
    );
    assert_eq!(at("192.0.2.1", "/public", None), "deny:ip-not-allowed");
    assert_eq!(at("unknown", "/x", Some(&staff)), "deny:ip-not-allowed");
    assert_eq!(at("10.9.0.1", "/x", None), "login");
    assert_eq!(at("10.9.0.1", "/x", Some(&staff)), "allow:false");
    assert_eq!(
        at("10.9.0.1", "/audit/x", Some(&staff)),
        "allow:true",
        "report mode"
    );
    assert_eq!(at("10.1.0.1", "/audit/x", Some(&staff)), "allow:false");
    assert_eq!(
        at("10.9.0.1", "/vault/x", None),
        "deny:ip-not-allowed",
        "rule list, before login"
    );
    assert_eq!(at("10.2.0.1", "/vault/x", Some(&staff)), "allow:false");
}

#[test]
fn rule_methods_ignore_case_and_hold_head_to_get_rules() {
    assert!(method_matches("GET", "get"));
    assert!(method_matches("GET", "HEAD"));
    assert!(method_matches("POST", "post"));
    assert!(!method_matches("POST", "GET"));
    assert!(!method_matches("DELETE", "HEAD"));
}

#[test]
fn an_overridden_entity_needs_no_listing() {
    let config = with_sections(
        "",
        "  - id: a\n    hosts: [a.test]\n    upstream: http://127.0.0.1:1\n    access:\n      user_types: [external-user]\n      entities: [acme]\n      roles: [customer]\n      override: { entities: [partner] }\n",
    )
    .expect("config");
    let partner = person(UserType::External, &[], Some("partner"));
    assert_eq!(
        run(&config.apps[0], "GET", "/", Some(&partner)),
        "allow:authenticated"
    );
    let other = person(UserType::External, &["customer"], Some("initech"));
    assert_eq!(
        run(&config.apps[0], "GET", "/", Some(&other)),
        "deny:entity-not-allowed"
    );
}

#[test]
fn reason_names_are_the_serialized_names() {
    use strum::IntoEnumIterator;
    for reason in Reason::iter() {
        let serialized = serde_json::to_string(&reason).expect("serialize");
        assert_eq!(serialized, format!("\"{}\"", reason.as_str()));
    }
    assert_eq!(Reason::IpNotAllowed.as_str(), "ip-not-allowed");
    assert_eq!(Reason::UriTooLong.as_str(), "uri-too-long");
}
