//! Sections that do not deserialise: every unknown key and wrongly typed value is reported in
//! one run, with its path, line and hint, and nothing elsewhere follows from it.

use std::path::Path;

use crate::config::testing::{key_file, with_sections};
use crate::config::{Config, ConfigIssue, ConfigReport};

fn report(yaml: &str) -> ConfigReport {
    Config::from_yaml(Path::new("p.yaml"), yaml).expect_err("invalid")
}

fn find<'a>(issues: &'a [ConfigIssue], path: &str) -> &'a ConfigIssue {
    issues
        .iter()
        .find(|i| i.path == path)
        .unwrap_or_else(|| panic!("no issue at {path}: {issues:#?}"))
}

fn hint_of(issues: &[ConfigIssue], path: &str) -> String {
    find(issues, path).hint.clone().unwrap_or_default()
}

/// Five type errors in one app, three more in two other sections, one value error elsewhere.
fn several_type_errors() -> String {
    format!(
        "server:
  public_url: https://chat.example.com
  https:
    listen: 0.0.0.0:443
    certificates: [{{ cert: missing.pem, key: missing.key }}]
  grace_period: 30
session:
  encryption_keys: [\"file:{}\"]
  idle_timeout: 30
apps:
  - id: chat
    hosts: chat.example.com
    upstream: http://127.0.0.1:3000
    preserve_host: maybe
    timeouts:
      read: 30
      totl: 5s
    rules:
      - {{ paths: /x, deny: true }}
audit:
  fsync: sometimes
",
        key_file()
    )
}

#[test]
fn every_type_error_of_every_section_is_reported_at_once() {
    let found = report(&several_type_errors()).issues;
    let expected = [
        ("server.https.listen", 4, "expected a sequence"),
        ("server.grace_period", 6, "expected a duration"),
        ("session.idle_timeout", 9, "expected a duration"),
        ("apps[0].hosts", 12, "expected a sequence"),
        ("apps[0].preserve_host", 14, "expected a boolean"),
        ("apps[0].timeouts.read", 16, "expected a duration"),
        ("apps[0].timeouts.totl", 17, "unknown field `totl`"),
        ("apps[0].rules[0].paths", 19, "expected a sequence"),
        ("audit.fsync", 21, "unknown policy `sometimes`"),
    ];
    for (path, line, needle) in expected {
        let issue = find(&found, path);
        assert_eq!(issue.line, Some(line), "{path}: {found:#?}");
        assert!(issue.message.contains(needle), "{path}: {found:#?}");
    }
    // Nothing else: the unreadable sections' values (the missing certificate files) and
    // whatever would follow from them wait for the next run.
    assert_eq!(found.len(), expected.len(), "{found:#?}");
    assert!(found.iter().all(|i| i.hint.is_some()), "{found:#?}");
    // In file order.
    let lines: Vec<_> = found.iter().map(|i| i.line).collect();
    assert!(lines.windows(2).all(|w| w[0] <= w[1]), "{lines:?}");
    assert_eq!(
        hint_of(&found, "apps[0].hosts"),
        "write a list: [chat.example.com]"
    );
    assert_eq!(
        hint_of(&found, "server.https.listen"),
        "write a list: [\"0.0.0.0:443\"]"
    );
    assert_eq!(hint_of(&found, "server.grace_period"), "add a unit: 30s");
    assert_eq!(
        hint_of(&found, "apps[0].preserve_host"),
        "write true or false"
    );
    assert!(hint_of(&found, "apps[0].timeouts.totl").starts_with("remove the key"));
}

#[test]
fn the_report_renders_every_type_error() {
    let text = report(&several_type_errors()).to_string();
    for line in [
        "p.yaml:12: apps[0].hosts: invalid type: string \"chat.example.com\", expected a sequence\n    hint: write a list: [chat.example.com]\n",
        "p.yaml:16: apps[0].timeouts.read: invalid type: integer `30`, expected a duration with a unit, such as 30s\n    hint: add a unit: 30s\n",
        "p.yaml:17: apps[0].timeouts.totl: unknown field `totl`, expected one of `connect`, `read`, `write`, `websocket_idle`\n    hint: remove the key or fix its spelling; see docs/configuration.md\n",
    ] {
        assert!(text.contains(line), "{line}\nnot in\n{text}");
    }
    assert!(text.ends_with("9 problems in p.yaml"), "{text}");
}

#[test]
fn numbers_given_for_durations_and_units_given_for_sizes_get_the_fix() {
    let found = with_sections(
        "assertion: { ttl: 120 }\n",
        "  - id: a\n    hosts: [a.test]\n    upstream: http://127.0.0.1:1\n    timeouts: { connect: 1.5, read: \"30\", write: 45 }\n    identity_headers: { budget_bytes: 4KiB }\n",
    )
    .expect_err("invalid")
    .issues;
    assert_eq!(hint_of(&found, "assertion.ttl"), "add a unit: 120s");
    assert_eq!(
        hint_of(&found, "apps[0].timeouts.connect"),
        "add a unit: 1500ms"
    );
    assert_eq!(hint_of(&found, "apps[0].timeouts.write"), "add a unit: 45s");
    assert_eq!(
        hint_of(&found, "apps[0].identity_headers.budget_bytes"),
        "sizes are in bytes, without a unit: write 4096"
    );
    // A quoted number is a string, read and refused once the section reads.
    assert!(!found.iter().any(|i| i.path == "apps[0].timeouts.read"));
    let found = with_sections(
        "",
        "  - id: a\n    hosts: [a.test]\n    upstream: http://127.0.0.1:1\n    timeouts: { read: \"30\" }\n",
    )
    .expect_err("invalid")
    .issues;
    assert!(find(&found, "apps[0].timeouts.read")
        .message
        .contains("not a duration"));
    assert_eq!(hint_of(&found, "apps[0].timeouts.read"), "add a unit: 30s");
    assert_eq!(found.len(), 1, "{found:#?}");

    let server = |limits: &str| {
        format!(
            "server:\n  public_url: https://c.test\n  http: {{ listen: [\"127.0.0.1:0\"] }}\n  limits: {limits}\nsession:\n  encryption_keys: [\"file:{}\"]\napps:\n  - {{ id: a, hosts: [a.test], upstream: \"http://127.0.0.1:1\", allow_plain_http: true }}\n",
            key_file()
        )
    };
    let found = report(&server(
        "{ max_header_bytes: 64 KiB, max_form_bytes: \"16384\" }",
    ))
    .issues;
    assert_eq!(
        hint_of(&found, "server.limits.max_header_bytes"),
        "sizes are in bytes, without a unit: write 65536"
    );
    assert_eq!(
        hint_of(&found, "server.limits.max_form_bytes"),
        "write it without quotes: 16384"
    );
    assert_eq!(found.len(), 2, "{found:#?}");
    let config = Config::from_yaml(
        Path::new("p.yaml"),
        &server("{ max_header_bytes: 65536, header_timeout: 15s }"),
    )
    .expect("plain numbers of bytes are sizes");
    assert_eq!(config.server.limits.max_header_bytes, 65536);
}

#[test]
fn an_unreadable_app_adds_nothing_elsewhere() {
    let yaml = |app_extra: &str| {
        format!(
            "server:\n  public_url: https://c.test\n  http:\n    listen: [\"127.0.0.1:0\"]\nsession:\n  encryption_keys: [\"file:{}\"]\napps:\n  - id: a\n    hosts: [a.test]\n    upstream: http://127.0.0.1:1\n    allow_plain_http: true\n{app_extra}",
            key_file()
        )
    };
    Config::from_yaml(Path::new("p.yaml"), &yaml("")).expect("valid as it stands");
    // One bad key in the app: no "no HTTPS listener" for an app that may allow plain HTTP.
    let found = report(&yaml("    upstreem: typo\n")).issues;
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].path, "apps[0].upstreem");
    assert_eq!(found[0].line, Some(12));
    // Nor when `allow_plain_http` itself does not read: it may have meant true.
    let found =
        report(&yaml("").replace("allow_plain_http: true", "allow_plain_http: [yes]")).issues;
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].path, "apps[0].allow_plain_http");
    // But a typo elsewhere leaves `allow_plain_http` as written: a real problem is still one.
    let found =
        report(&yaml("    upstreem: typo\n").replace("    allow_plain_http: true\n", "")).issues;
    assert_eq!(found.len(), 2, "{found:#?}");
    assert!(found.iter().any(|i| i.path == "server.http"), "{found:#?}");
    // Nor for an app that reads but does not compile.
    let found = report(&yaml("").replace("id: a", "id: A")).issues;
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].path, "apps[0].id");
    // A server that cannot be read may have the HTTP listener the app needs.
    let found = report(&yaml("").replace("  http:\n", "  bogus: 1\n  http:\n")).issues;
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].path, "server.bogus");
    // An app whose path_prefix cannot be read claims no route another app then conflicts with.
    let found = with_sections(
        "",
        "  - { id: a, hosts: [a.test], upstream: \"http://127.0.0.1:1\", path_prefix: [/a] }\n  - { id: b, hosts: [a.test], upstream: \"http://127.0.0.1:1\" }\n",
    )
    .expect_err("invalid")
    .issues;
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].path, "apps[0].path_prefix");
    // `apps` that is not a list is one problem, not also "at least one app is required".
    let found = with_sections("", "  3\n").expect_err("invalid").issues;
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].message, "must be a list");
    // A document that is not a mapping is one problem, not one per missing section.
    let found = report("just text\n").issues;
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].path, "(top)");
}

#[test]
fn references_to_a_provider_with_mistakes_are_not_mistakes() {
    let apps = "  - id: a\n    hosts: [a.test]\n    upstream: http://127.0.0.1:1\n    access: { identity_providers: [corp] }\n";
    let identity = "identity:\n  internal_users: [{ provider: corp }]\n";
    // Unreadable (a wrongly typed key), or readable but incomplete (no issuer): either way it
    // exists, and only its own problem is reported.
    for (provider, path) in [
        (
            "  - { id: corp, kind: oidc, issuer: https://op.test, client_id: x, userinfo: sometimes }\n",
            "identity_providers[0].userinfo",
        ),
        (
            "  - { id: corp, kind: oidc, client_id: x }\n",
            "identity_providers[0].issuer",
        ),
    ] {
        let found = with_sections(&format!("identity_providers:\n{provider}{identity}"), apps)
            .expect_err("invalid")
            .issues;
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].path, path, "{found:#?}");
    }
    // When a provider's id cannot be read, no reference can be judged.
    let found = with_sections(
        &format!("identity_providers:\n  - {{ id: [corp], kind: oidc }}\n{identity}"),
        apps,
    )
    .expect_err("invalid")
    .issues;
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].path, "identity_providers[0].id");
    // Every other provider reference is still checked.
    let found = with_sections(
        &format!("identity_providers:\n  - {{ id: corp, kind: oidc, issuer: https://op.test, client_id: x }}\n{identity}"),
        &apps.replace("[corp]", "[crop]"),
    )
    .expect_err("invalid")
    .issues;
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].path, "apps[0].access.identity_providers[0]");
}
