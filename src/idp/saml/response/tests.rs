//! Responses signed here by xmlsec (through samael) with a throwaway key, then bent into
//! every shape the checks must refuse. The end-to-end tests do the same with a real IdP.

use super::*;

const IDP: &str = "https://idp.test/metadata";
const SP: &str = "https://sp.test/.portcullis/saml/metadata";
const ACS: &str = "https://sp.test/.portcullis/saml/acs";
const NOW: i64 = 1_800_000_000;

struct Keys {
    private_der: Vec<u8>,
    cert: CertificateDer,
}

fn keys() -> Keys {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let cert = rcgen::CertificateParams::new(vec!["idp.test".into()])
        .expect("params")
        .self_signed(&key)
        .expect("cert");
    Keys {
        private_der: key.serialize_der(),
        cert: CertificateDer::from(cert.der().to_vec()),
    }
}

fn at(offset: i64) -> String {
    chrono::DateTime::from_timestamp(NOW + offset, 0)
        .expect("time")
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// The parts of a response a test changes.
struct Shape {
    in_response_to: Option<&'static str>,
    audience: &'static str,
    recipient: &'static str,
    destination: &'static str,
    issuer: &'static str,
    not_before: i64,
    not_on_or_after: i64,
    issued: i64,
    status: &'static str,
    signature_method: &'static str,
    transform: &'static str,
    name_id: &'static str,
}

impl Default for Shape {
    fn default() -> Self {
        Shape {
            in_response_to: Some("_req1"),
            audience: SP,
            recipient: ACS,
            destination: ACS,
            issuer: IDP,
            not_before: -60,
            not_on_or_after: 300,
            issued: 0,
            status: "urn:oasis:names:tc:SAML:2.0:status:Success",
            signature_method: "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256",
            transform: "http://www.w3.org/2001/10/xml-exc-c14n#",
            name_id: "alice@corp.test",
        }
    }
}

fn assertion_xml(shape: &Shape, id: &str, signature: bool) -> String {
    let irt = shape
        .in_response_to
        .map(|i| format!(r#" InResponseTo="{i}""#))
        .unwrap_or_default();
    let signature = if signature {
        format!(
            r##"<ds:Signature xmlns:ds="{DSIG}"><ds:SignedInfo><ds:CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/><ds:SignatureMethod Algorithm="{method}"/><ds:Reference URI="#{id}"><ds:Transforms><ds:Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/><ds:Transform Algorithm="{transform}"/></ds:Transforms><ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/><ds:DigestValue/></ds:Reference></ds:SignedInfo><ds:SignatureValue/></ds:Signature>"##,
            method = shape.signature_method,
            transform = shape.transform,
        )
    } else {
        String::new()
    };
    format!(
        r#"<saml:Assertion xmlns:saml="{ASSERTION}" ID="{id}" Version="2.0" IssueInstant="{issued}"><saml:Issuer>{issuer}</saml:Issuer>{signature}<saml:Subject><saml:NameID Format="urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress">{name_id}</saml:NameID><saml:SubjectConfirmation Method="urn:oasis:names:tc:SAML:2.0:cm:bearer"><saml:SubjectConfirmationData{irt} Recipient="{recipient}" NotOnOrAfter="{until}"/></saml:SubjectConfirmation></saml:Subject><saml:Conditions NotBefore="{not_before}" NotOnOrAfter="{until}"><saml:AudienceRestriction><saml:Audience>{audience}</saml:Audience></saml:AudienceRestriction></saml:Conditions><saml:AuthnStatement AuthnInstant="{issued}" SessionIndex="_s1"><saml:AuthnContext><saml:AuthnContextClassRef>urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport</saml:AuthnContextClassRef></saml:AuthnContext></saml:AuthnStatement><saml:AttributeStatement><saml:Attribute Name="groups"><saml:AttributeValue>engineering</saml:AttributeValue><saml:AttributeValue>admins</saml:AttributeValue></saml:Attribute></saml:AttributeStatement></saml:Assertion>"#,
        issued = at(shape.issued),
        issuer = shape.issuer,
        name_id = shape.name_id,
        recipient = shape.recipient,
        until = at(shape.not_on_or_after),
        not_before = at(shape.not_before),
        audience = shape.audience,
    )
}

fn response_around(shape: &Shape, assertions: &str) -> String {
    let irt = shape
        .in_response_to
        .map(|i| format!(r#" InResponseTo="{i}""#))
        .unwrap_or_default();
    format!(
        r#"<samlp:Response xmlns:samlp="{PROTOCOL}" xmlns:saml="{ASSERTION}" ID="_r1" Version="2.0" IssueInstant="{issued}" Destination="{destination}"{irt}><saml:Issuer>{issuer}</saml:Issuer><samlp:Status><samlp:StatusCode Value="{status}"/></samlp:Status>{assertions}</samlp:Response>"#,
        issued = at(shape.issued),
        destination = shape.destination,
        issuer = shape.issuer,
        status = shape.status,
    )
}

fn signed(shape: &Shape, keys: &Keys) -> String {
    let template = response_around(shape, &assertion_xml(shape, "_a1", true));
    Crypto::sign_xml(template, &keys.private_der).expect("xmlsec signs")
}

fn never(_: &str) -> bool {
    false
}

fn verify_with<'a>(
    xml: &str,
    keys: &'a Keys,
    tweak: impl FnOnce(&mut Expectations<'a>),
) -> Result<VerifiedAssertion, SamlError> {
    verify_consumed(xml, keys, &never, tweak)
}

fn verify_consumed<'a>(
    xml: &str,
    keys: &'a Keys,
    consumed: &'a dyn Fn(&str) -> bool,
    tweak: impl FnOnce(&mut Expectations<'a>),
) -> Result<VerifiedAssertion, SamlError> {
    let mut expect = Expectations {
        idp_entity_id: IDP,
        certificates: std::slice::from_ref(&keys.cert),
        sp_entity_id: SP,
        acs_url: ACS,
        request_id: Some("_req1"),
        allow_unsolicited: false,
        allow_sha1: false,
        clock_skew: 120,
        max_age: 300,
        now: NOW,
        decrypter: None,
        consumed,
    };
    tweak(&mut expect);
    verify(xml, &expect)
}

fn check(shape: Shape) -> Result<VerifiedAssertion, SamlError> {
    let keys = keys();
    verify_with(&signed(&shape, &keys), &keys, |_| {})
}

#[test]
fn a_valid_response_gives_the_signed_facts() {
    let verified = check(Shape::default()).expect("valid");
    assert_eq!(verified.name_id, "alice@corp.test");
    assert_eq!(verified.assertion_id, "_a1");
    assert_eq!(verified.session_index.as_deref(), Some("_s1"));
    assert_eq!(verified.attributes[0].values, vec!["engineering", "admins"]);
    assert!(verified.remember_until >= NOW + 300);
}

#[test]
fn every_time_audience_and_address_check_refuses() {
    let cases = [
        (
            Shape {
                not_on_or_after: -200,
                ..Shape::default()
            },
            SamlError::Expired,
        ),
        (
            Shape {
                issued: -1000,
                not_on_or_after: 600,
                ..Shape::default()
            },
            SamlError::Expired,
        ),
        (
            Shape {
                not_before: 600,
                ..Shape::default()
            },
            SamlError::NotYetValid,
        ),
        (
            Shape {
                issued: 600,
                ..Shape::default()
            },
            SamlError::NotYetValid,
        ),
        (
            Shape {
                audience: "https://other-sp.test",
                ..Shape::default()
            },
            SamlError::AudienceMismatch,
        ),
        (
            Shape {
                recipient: "https://evil.test/acs",
                ..Shape::default()
            },
            SamlError::RecipientMismatch,
        ),
        (
            Shape {
                destination: "https://evil.test/acs",
                ..Shape::default()
            },
            SamlError::DestinationMismatch,
        ),
        (
            Shape {
                in_response_to: Some("_other"),
                ..Shape::default()
            },
            SamlError::InResponseToMismatch,
        ),
        (
            Shape {
                in_response_to: None,
                ..Shape::default()
            },
            SamlError::Unsolicited,
        ),
        (
            Shape {
                issuer: "https://evil.test",
                ..Shape::default()
            },
            SamlError::IssuerMismatch,
        ),
        (
            Shape {
                status: "urn:oasis:names:tc:SAML:2.0:status:Requester",
                ..Shape::default()
            },
            SamlError::IdpStatus,
        ),
    ];
    for (shape, expected) in cases {
        assert_eq!(check(shape).err(), Some(expected), "expected {expected:?}");
    }
}

#[test]
fn unsolicited_responses_pass_only_when_allowed_and_never_answer_a_request() {
    let keys = keys();
    let xml = signed(
        &Shape {
            in_response_to: None,
            ..Shape::default()
        },
        &keys,
    );
    assert!(verify_with(&xml, &keys, |e| {
        e.allow_unsolicited = true;
        e.request_id = None
    })
    .is_ok());
    let answered = signed(&Shape::default(), &keys);
    assert_eq!(
        verify_with(&answered, &keys, |e| {
            e.allow_unsolicited = true;
            e.request_id = None
        })
        .err(),
        Some(SamlError::InResponseToMismatch),
        "a response to a request this browser did not make"
    );
}

#[test]
fn tampering_stripping_and_foreign_keys_fail_the_signature() {
    let keys = keys();
    let xml = signed(&Shape::default(), &keys);
    let tampered = xml.replace(">admins<", ">root<");
    assert_eq!(
        verify_with(&tampered, &keys, |_| {}).err(),
        Some(SamlError::SignatureInvalid)
    );
    let foreign = keys_signed_by_other(&keys);
    assert_eq!(foreign, Some(SamlError::SignatureInvalid));
    let stripped = response_around(
        &Shape::default(),
        &assertion_xml(&Shape::default(), "_a1", false),
    );
    assert_eq!(
        verify_with(&stripped, &keys, |_| {}).err(),
        Some(SamlError::Unsigned)
    );
}

fn keys_signed_by_other(trusted: &Keys) -> Option<SamlError> {
    let other = keys();
    verify_with(&signed(&Shape::default(), &other), trusted, |_| {}).err()
}

#[test]
fn wrapping_shapes_are_refused() {
    let keys = keys();
    let xml = signed(&Shape::default(), &keys);
    let evil = assertion_xml(
        &Shape {
            name_id: "mallory@corp.test",
            ..Shape::default()
        },
        "_evil",
        false,
    );
    let status_end = "</samlp:Status>";
    let before = xml.replacen(status_end, &format!("{status_end}{evil}"), 1);
    let after = xml.replacen("</samlp:Response>", &format!("{evil}</samlp:Response>"), 1);
    let start = xml.find("<saml:Assertion").expect("assertion");
    let end = xml.find("</saml:Assertion>").expect("end") + "</saml:Assertion>".len();
    let original = &xml[start..end];
    let moved = xml.replacen(
        original,
        &format!("<samlp:Extensions>{original}</samlp:Extensions>{evil}"),
        1,
    );
    let same_id = xml.replacen(
        status_end,
        &format!("{status_end}{}", evil.replace("_evil", "_a1")),
        1,
    );
    for (name, doc) in [
        ("before", before),
        ("after", after),
        ("extensions", moved),
        ("same id", same_id),
    ] {
        assert_eq!(
            verify_with(&doc, &keys, |_| {}).err(),
            Some(SamlError::Wrapped),
            "{name}"
        );
    }
}

#[test]
fn weak_algorithms_and_unusual_transforms_are_refused_before_xmlsec() {
    let sha1 = Shape {
        signature_method: "http://www.w3.org/2000/09/xmldsig#rsa-sha1",
        ..Shape::default()
    };
    let doc = response_around(&sha1, &assertion_xml(&sha1, "_a1", true));
    let keys = keys();
    assert_eq!(
        verify_with(&doc, &keys, |_| {}).err(),
        Some(SamlError::WeakAlgorithm)
    );
    let xslt = Shape {
        transform: "http://www.w3.org/TR/1999/REC-xslt-19991116",
        ..Shape::default()
    };
    let doc = response_around(&xslt, &assertion_xml(&xslt, "_a1", true));
    assert_eq!(
        verify_with(&doc, &keys, |_| {}).err(),
        Some(SamlError::UnsupportedTransform)
    );
}

#[test]
fn a_comment_in_the_name_id_is_refused_even_though_the_signature_holds() {
    let keys = keys();
    let shape = Shape {
        name_id: "alice@corp.test.evil.test",
        ..Shape::default()
    };
    let xml = signed(&shape, &keys);
    let injected = xml.replace(
        "alice@corp.test.evil.test",
        "alice@corp.test<!---->.evil.test",
    );
    assert_eq!(
        verify_with(&injected, &keys, |_| {}).err(),
        Some(SamlError::CommentInjected)
    );
}

#[test]
fn doctypes_garbage_and_replays_are_refused() {
    let keys = keys();
    let xml = signed(&Shape::default(), &keys);
    let xxe = format!("<!DOCTYPE r [<!ENTITY x SYSTEM \"file:///etc/passwd\">]>{xml}");
    assert_eq!(
        verify_with(&xxe, &keys, |_| {}).err(),
        Some(SamlError::DoctypeForbidden)
    );
    assert_eq!(
        verify_with("<nope", &keys, |_| {}).err(),
        Some(SamlError::Malformed)
    );
    let seen = |id: &str| id == "_a1";
    assert_eq!(
        verify_consumed(&xml, &keys, &seen, |_| {}).err(),
        Some(SamlError::Replayed)
    );
    assert_eq!(decode("%%%").err(), Some(SamlError::NotBase64));
    assert_eq!(
        decode(&"A".repeat(MAX_RESPONSE_BASE64 + 4)).err(),
        Some(SamlError::TooLarge)
    );
    let wrapped_lines = base64::engine::general_purpose::STANDARD
        .encode(xml.as_bytes())
        .as_bytes()
        .chunks(76)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join("\r\n");
    assert_eq!(decode(&wrapped_lines).as_deref(), Ok(xml.as_str()));
}

#[test]
fn an_encrypted_assertion_is_decrypted_then_its_signature_checked() {
    use crate::idp::saml::decrypt::{tests::encrypt, SpDecrypter};
    use openssl::{pkey::PKey, rsa::Rsa};
    let keys = keys();
    let xml = signed(&Shape::default(), &keys);
    let start = xml.find("<saml:Assertion").expect("assertion");
    let end = xml.find("</saml:Assertion>").expect("end") + "</saml:Assertion>".len();
    let sp_key = PKey::from_rsa(Rsa::generate(2048).expect("rsa")).expect("pkey");
    let decrypter =
        SpDecrypter::from_pem(&sp_key.private_key_to_pem_pkcs8().expect("pem")).expect("rsa");
    let oaep = "http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p";
    let encrypted = format!(
        "{}{}{}",
        &xml[..start],
        encrypt(&sp_key, &xml[start..end], true, oaep),
        &xml[end..]
    );
    let found = verify_with(&encrypted, &keys, |e| e.decrypter = Some(&decrypter));
    assert_eq!(found.map(|v| v.name_id).as_deref(), Ok("alice@corp.test"));
    assert_eq!(
        verify_with(&encrypted, &keys, |_| {}).err(),
        Some(SamlError::Encrypted)
    );

    // Encrypted content must still carry the IdP's signature.
    let unsigned = assertion_xml(&Shape::default(), "_a1", false);
    let forged = response_around(&Shape::default(), &encrypt(&sp_key, &unsigned, false, oaep));
    assert_eq!(
        verify_with(&forged, &keys, |e| e.decrypter = Some(&decrypter)).err(),
        Some(SamlError::DecryptionFailed),
        "unsigned inside, and nothing signed outside: refused (one reason for every failure)"
    );

    // Signed outside: the response signature covers the ciphertext; checked before decrypting.
    let template = forged.replacen(
        "</saml:Issuer>",
        &format!(
            r##"</saml:Issuer><ds:Signature xmlns:ds="{DSIG}"><ds:SignedInfo><ds:CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/><ds:SignatureMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256"/><ds:Reference URI="#_r1"><ds:Transforms><ds:Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/><ds:Transform Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/></ds:Transforms><ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/><ds:DigestValue/></ds:Reference></ds:SignedInfo><ds:SignatureValue/></ds:Signature>"##
        ),
        1,
    );
    let envelope = Crypto::sign_xml(template, &keys.private_der).expect("xmlsec signs");
    let found = verify_with(&envelope, &keys, |e| e.decrypter = Some(&decrypter));
    assert_eq!(found.map(|v| v.name_id).as_deref(), Ok("alice@corp.test"));
    let value_at = envelope.rfind("</xenc:CipherValue>").expect("ciphertext");
    let mut flipped = envelope.clone();
    flipped.replace_range(value_at - 8..value_at - 4, "AAAA");
    assert_eq!(
        verify_with(&flipped, &keys, |e| e.decrypter = Some(&decrypter)).err(),
        Some(SamlError::SignatureInvalid),
        "a changed ciphertext fails the response signature before any decryption"
    );
}

mod fuzz {
    //! Random damage to a real signed response: never a panic, and whatever is accepted
    //! says exactly what was signed.
    use super::*;
    use proptest::prelude::*;
    use std::sync::OnceLock;

    fn fixture() -> &'static (Keys, String) {
        static FIXTURE: OnceLock<(Keys, String)> = OnceLock::new();
        FIXTURE.get_or_init(|| {
            let keys = keys();
            let xml = signed(&Shape::default(), &keys);
            (keys, xml)
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]
        #[test]
        fn damaged_responses_never_panic_nor_change_what_is_believed(
            edits in proptest::collection::vec((any::<prop::sample::Index>(), 0x20u8..0x7f, 0u8..3), 1..5)
        ) {
            let (keys, xml) = fixture();
            let mut bytes = xml.clone().into_bytes();
            for (at, byte, kind) in edits {
                let i = at.index(bytes.len());
                match kind {
                    0 => bytes[i] = byte,
                    1 => bytes.insert(i, byte),
                    _ => { bytes.truncate(i.max(1)); }
                }
            }
            let Ok(text) = String::from_utf8(bytes) else { return Ok(()) };
            if let Ok(found) = verify_with(&text, keys, |_| {}) {
                prop_assert_eq!(found.name_id, "alice@corp.test");
                prop_assert_eq!(&found.attributes[0].values, &vec!["engineering".to_string(), "admins".to_string()]);
            }
        }
    }
}
