use super::*;
use crate::config::testing::with_sections;

const RULES: &str = r#"identity_providers:
  - id: corp
    kind: oidc
    issuer: https://op.test
    client_id: portcullis
    claims:
      user_id: email
      groups: "https://corp.test/groups"
      entity: org.id
      custom: { department: profile.department, tier: tier }
  - { id: partners, kind: oidc, issuer: https://p.test, client_id: portcullis }
identity:
  internal_users:
    - email_domain: corp.test
    - group: staff
      provider: partners
    - claim: employee_type
      equals: contractor
  roles:
    - { role: admin, group: chat-admins }
    - { role: billing, claim: profile.department, equals: finance }
  groups_as_roles: { prefix: "app-" }
  entity:
    email_domains: { acme.test: acme }
    groups: { customer-globex: globex, customer-initech: initech }
"#;

fn map(idp: &str, claims: serde_json::Value) -> Result<Identity, MappingError> {
    let config = with_sections(
        RULES,
        "  - id: a\n    hosts: [a.test]\n    upstream: http://127.0.0.1:1\n",
    )
    .expect("config");
    let provider = config
        .identity_providers
        .iter()
        .find(|p| p.id == idp)
        .expect("provider");
    let source = Assertions {
        idp,
        auth_method: AuthMethod::Oidc,
        claims: &claims,
        mfa: false,
    };
    from_claims(&source, &provider.claims, &config.identity)
}

#[test]
fn claims_and_rules_make_the_identity() {
    let staff = map(
        "corp",
        serde_json::json!({
            "sub": "00u1", "email": "ann@corp.test", "name": "Ann",
            "https://corp.test/groups": ["chat-admins", "app-viewer", "other"],
            "org": { "id": "hq" }, "profile": { "department": "finance" }, "tier": 3,
        }),
    )
    .expect("identity");
    assert_eq!(
        staff.user_id, "ann@corp.test",
        "user_id from the email claim"
    );
    assert_eq!(staff.user_type, UserType::Internal);
    assert_eq!(staff.roles, ["admin", "billing", "app-viewer"]);
    assert_eq!(staff.entity.as_deref(), Some("hq"), "nested claim");
    assert_eq!(
        staff.custom.get("department").map(String::as_str),
        Some("finance")
    );
    assert_eq!(staff.custom.get("tier").map(String::as_str), Some("3"));
    assert_eq!(staff.name.as_deref(), Some("Ann"));
}

#[test]
fn email_domains_match_exact_labels_and_one_at_sign() {
    for (email, internal) in [
        ("bob@corp.test", true),
        ("bob@CORP.test", true),
        ("bob@evilcorp.test", false),
        ("bob@corp.test.evil.test", false),
        ("bob@sub.corp.test", false),
        ("bob@corp.test@evil.test", false),
        ("evil.test@corp.test@x", false),
        ("@corp.test", false),
    ] {
        let who = map("corp", serde_json::json!({ "email": email })).expect("identity");
        assert_eq!(who.user_type == UserType::Internal, internal, "{email}");
    }
}

#[test]
fn conditions_of_one_rule_all_hold() {
    let groups = serde_json::json!({ "sub": "p1", "email": "p1@x.test", "groups": ["staff"] });
    let partner_staff = map("partners", groups.clone()).expect("identity");
    assert_eq!(
        partner_staff.user_type,
        UserType::Internal,
        "group + provider"
    );
    // The same group from another provider is not enough (corp reads groups from another
    // claim, so give it there).
    let corp = map(
        "corp",
        serde_json::json!({ "email": "p1@x.test", "https://corp.test/groups": ["staff"] }),
    )
    .expect("identity");
    assert_eq!(corp.user_type, UserType::External);
    let contractor = map(
        "partners",
        serde_json::json!({ "sub": "c", "employee_type": ["contractor", "x"] }),
    )
    .expect("identity");
    assert_eq!(
        contractor.user_type,
        UserType::Internal,
        "claim value in an array"
    );
}

#[test]
fn entity_from_domain_then_group_and_ambiguity_gives_none() {
    let acme = map(
        "partners",
        serde_json::json!({ "sub": "a", "email": "a@ACME.test" }),
    )
    .expect("identity");
    assert_eq!(acme.entity.as_deref(), Some("acme"));
    let two_ats = map(
        "partners",
        serde_json::json!({ "sub": "x", "email": "x@y@acme.test" }),
    )
    .expect("identity");
    assert_eq!(
        two_ats.entity, None,
        "an address with two @ maps to no entity"
    );
    let globex = map(
        "partners",
        serde_json::json!({ "sub": "g", "groups": ["customer-globex"] }),
    )
    .expect("identity");
    assert_eq!(globex.entity.as_deref(), Some("globex"));
    let both = map(
        "partners",
        serde_json::json!({ "sub": "g", "groups": ["customer-globex", "customer-initech"] }),
    )
    .expect("identity");
    assert_eq!(both.entity, None, "two entities: none (deny on doubt)");
}

#[test]
fn a_missing_or_oversized_user_id_is_refused() {
    assert_eq!(
        map("corp", serde_json::json!({ "sub": "x" })).map(|i| i.user_id),
        Err(MappingError::MissingUserId("email".into()))
    );
    let long = "a".repeat(600);
    assert!(map("partners", serde_json::json!({ "sub": long })).is_err());
    let no_name = map(
        "partners",
        serde_json::json!({ "sub": "s", "name": "n".repeat(600) }),
    )
    .expect("identity");
    assert_eq!(no_name.name, None, "an oversized optional field is dropped");
}
