use super::*;
use std::io::{Read, Write};
use std::time::Duration;
use url::Url;

fn metadata_xml() -> String {
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["idp.test".into()])
        .expect("params")
        .self_signed(&key)
        .expect("cert");
    use base64::Engine;
    let der = base64::engine::general_purpose::STANDARD.encode(cert.der());
    format!(
        r#"<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" xmlns:ds="http://www.w3.org/2000/09/xmldsig#" entityID="https://idp.test/metadata"><md:IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol"><md:KeyDescriptor use="signing"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{der}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor><md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="https://idp.test/sso"/></md:IDPSSODescriptor></md:EntityDescriptor>"#
    )
}

/// Serves `answers` in turn, one connection each, on a loopback port.
fn serve(answers: Vec<(u16, String)>) -> Url {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for (status, body) in answers {
            let Ok((mut stream, _)) = listener.accept() else {
                return;
            };
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    Url::parse(&format!("http://127.0.0.1:{port}/metadata")).expect("url")
}

fn provider(metadata_url: Url) -> SamlProvider {
    let settings = SamlSettings {
        metadata_url: Some(metadata_url),
        idp_metadata_xml: None,
        idp_entity_id: None,
        idp_sso_url: None,
        idp_slo_url: None,
        idp_certificates: Vec::new(),
        sp_entity_id: "https://sp.test/.portcullis/saml/metadata".into(),
        sp_keys: None,
        name_id_format: None,
        allow_unsolicited: false,
        clock_skew: Duration::from_secs(120),
        max_response_age: Duration::from_secs(300),
        mfa_authn_contexts: Vec::new(),
        insecure_allow_sha1: false,
        metadata_refresh: Duration::from_secs(3600),
    };
    let config = IdentityProvider {
        id: "corp".into(),
        display_name: "Corp".into(),
        kind: IdentityProviderKind::Saml(Box::new(settings)),
        claims: ClaimMapping::default(),
    };
    SamlProvider::new(&config, Arc::new(IdentityMapping::default()))
        .expect("provider")
        .expect("saml")
}

#[tokio::test]
async fn a_failed_metadata_refresh_keeps_the_last_good_copy() {
    let url = serve(vec![
        (200, metadata_xml()),
        (500, "down".into()),
        (200, "<not-metadata/>".into()),
    ]);
    let provider = provider(url);
    assert!(!provider.is_available(), "unknown until the first fetch");
    provider.refresh_metadata().await.expect("first fetch");
    let first = provider.descriptor().expect("known");
    assert_eq!(first.entity_id, "https://idp.test/metadata");
    assert!(provider.refresh_metadata().await.is_err(), "HTTP 500");
    assert!(provider.refresh_metadata().await.is_err(), "not metadata");
    assert_eq!(
        provider.descriptor(),
        Some(first),
        "the last good copy stays"
    );
}

#[test]
fn attributes_become_claims_by_name_friendly_name_and_alias() {
    let verified = response::VerifiedAssertion {
        assertion_id: "_a".into(),
        remember_until: 0,
        name_id: "alice@corp.test".into(),
        name_id_format: None,
        session_index: None,
        authn_context: None,
        session_not_on_or_after: None,
        attributes: vec![
            response::Attribute {
                name: "urn:oid:0.9.2342.19200300.100.1.3".into(),
                friendly_name: Some("mail".into()),
                values: vec!["alice@corp.test".into()],
            },
            response::Attribute {
                name: "groups".into(),
                friendly_name: None,
                values: vec!["a".into(), "b".into()],
            },
        ],
    };
    let claims = claims_of(&verified);
    assert_eq!(claims["name_id"], "alice@corp.test");
    assert_eq!(claims["mail"], "alice@corp.test");
    assert_eq!(
        claims["urn:oid:0.9.2342.19200300.100.1.3"],
        "alice@corp.test"
    );
    assert_eq!(claims["email"], "alice@corp.test", "alias from the OID");
    assert_eq!(claims["groups"], serde_json::json!(["a", "b"]));
}
