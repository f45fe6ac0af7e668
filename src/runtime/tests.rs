//! What `check` finds once the file compiles: what it names (keys, certificates, provider
//! metadata) cannot be used, reported with the key path.

use super::*;
use crate::config::testing::{key_file, with_sections};
use crate::config::AssertionAlgorithm;

fn test_metrics() -> Arc<Metrics> {
    Arc::new(Metrics::new().expect("metrics"))
}

/// Compiles the file, then builds its runtime as `check` does: every problem.
fn checked(compiled: Result<Config, ConfigReport>) -> Vec<ConfigIssue> {
    match compiled.and_then(|config| Runtime::build(&config, &test_metrics()).map(|_| ())) {
        Ok(()) => Vec::new(),
        Err(report) => report.issues,
    }
}

fn has(issues: &[ConfigIssue], path: &str, needle: &str) -> bool {
    issues
        .iter()
        .any(|i| i.path == path && i.message.contains(needle))
}

const APP: &str = "  - id: a\n    hosts: [a.test]\n    upstream: http://127.0.0.1:1\n";

#[test]
fn a_listener_certificate_that_cannot_be_served_is_caught_by_check() {
    let dir = tempfile::tempdir().expect("tempdir");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").expect("write");
    let yaml = format!(
        "server:\n  public_url: https://c.example.com\n  https:\n    listen: [\"127.0.0.1:0\"]\n    certificates: [{{ cert: \"{g}\", key: \"{g}\" }}]\nsession:\n  encryption_keys: [\"file:{k}\"]\napps:\n  - id: a\n    hosts: [a.test]\n    upstream: https://127.0.0.1:1\n",
        g = garbage.display(),
        k = key_file()
    );
    let found = checked(Config::from_yaml(std::path::Path::new("t.yaml"), &yaml));
    assert!(
        has(&found, "server.https.certificates", "no PEM"),
        "{found:#?}"
    );
}

#[test]
fn assertion_keys_are_loaded_by_check() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ed = dir.path().join("ed.pem");
    let es = dir.path().join("es.pem");
    std::fs::write(
        &ed,
        crate::assertion::generate_pem(AssertionAlgorithm::EdDsa).expect("pem"),
    )
    .expect("write");
    std::fs::write(
        &es,
        crate::assertion::generate_pem(AssertionAlgorithm::Es256).expect("pem"),
    )
    .expect("write");
    let with_keys = |algorithm: &str, keys: &str| {
        checked(with_sections(
            &format!("assertion:\n  algorithm: {algorithm}\n  signing_keys: [{keys}]\n"),
            APP,
        ))
    };
    let (ed, es) = (
        format!("\"file:{}\"", ed.display()),
        format!("\"file:{}\"", es.display()),
    );
    assert!(with_keys("ES256", &es).is_empty());
    assert!(with_keys("EdDSA", &ed).is_empty());
    let wrong = with_keys("ES256", &format!("{es}, {ed}"));
    assert!(
        wrong.iter().any(|i| i.path == "assertion.signing_keys[1]"),
        "{wrong:#?}"
    );
}

#[test]
fn saml_metadata_and_sp_keys_are_checked_when_the_providers_are_built() {
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
    // An SP key that does not belong to the SP certificate.
    let other_key = rcgen::KeyPair::generate().expect("key");
    let key_file_path = dir.path().join("sp.key");
    std::fs::write(&key_file_path, other_key.serialize_pem()).expect("write");
    // Every one at once.
    let sections = format!(
        "identity_providers:\n  - id: inline\n    kind: saml\n    idp_entity_id: https://idp.test\n    idp_sso_url: https://idp.test/sso\n    idp_certificates: [{cert}]\n  - id: bare\n    kind: saml\n    idp_metadata: {md}\n  - id: keys\n    kind: saml\n    idp_entity_id: https://idp.test\n    idp_sso_url: https://idp.test/sso\n    idp_certificates: [{cert}]\n    sp_signing_key: file:{key}\n    sp_certificate: {cert}\n",
        md = unsigned_md.display(),
        cert = cert_file.display(),
        key = key_file_path.display(),
    );
    let found = checked(with_sections(&sections, APP));
    for (path, needle) in [
        (
            "identity_providers[1].idp_metadata",
            "no signing certificate",
        ),
        (
            "identity_providers[2].sp_signing_key",
            "does not belong to the signing key",
        ),
    ] {
        assert!(has(&found, path, needle), "{path}: {found:#?}");
    }
    // The inline IdP alone builds, described by its entity id.
    let good = format!(
        "identity_providers:\n  - id: corp\n    kind: saml\n    idp_entity_id: https://idp.test\n    idp_sso_url: https://idp.test/sso\n    idp_certificates: [{cert}]\n",
        cert = cert_file.display()
    );
    let config = with_sections(&good, APP).expect("valid");
    let runtime = Runtime::build(&config, &test_metrics()).unwrap_or_else(|r| panic!("{r}"));
    let built = &runtime.providers.saml[0];
    assert_eq!(built.idp_entity_id().as_deref(), Some("https://idp.test"));
}

#[test]
fn a_redis_ca_file_that_cannot_be_used_is_caught_by_check() {
    let dir = tempfile::tempdir().expect("tempdir");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").expect("write");
    for (ca, needle) in [
        (garbage.clone(), "no PEM"),
        (dir.path().join("missing.pem"), "cannot use"),
    ] {
        let store = format!(
            "store:\n  kind: redis\n  url: rediss://127.0.0.1:6380\n  tls: {{ ca_file: \"{}\" }}\n",
            ca.display()
        );
        let found = checked(with_sections(&store, APP));
        assert!(has(&found, "store.tls.ca_file", needle), "{found:#?}");
    }
    // A Cluster and a Sentinel deployment build without reaching Redis.
    for servers in [
        "  cluster: [redis://127.0.0.1:1, redis://127.0.0.1:2]\n",
        "  sentinel: { master: m, nodes: [redis://127.0.0.1:3] }\n",
    ] {
        let found = checked(with_sections(
            &format!("store:\n  kind: redis\n{servers}"),
            APP,
        ));
        assert!(found.is_empty(), "{servers}: {found:#?}");
    }
}
