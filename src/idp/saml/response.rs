//! The assertion consumer service's checks: from a posted `SAMLResponse` to the facts of
//! one signed assertion, or a precise reason for refusing it.
//!
//! Order matters. The document's shape is checked first (one assertion, where the protocol
//! puts it; each signature enveloped in, and pointing at, its own parent; allowed
//! algorithms and transforms only), so that the assertion read later is necessarily the one a
//! verified signature covers (XML signature wrapping). xmlsec (through samael) then verifies
//! every signature against the IdP's certificates and reduces the document to the signed
//! content; every fact about the user is read from that reduced document only.

use base64::Engine;
use roxmltree::Node;
use samael::crypto::{AllowedSignatureAlgorithm, CertificateDer, Crypto, CryptoProvider};

use super::xml::{self, XmlError, ASSERTION, DSIG, PROTOCOL};

/// Largest posted `SAMLResponse` (base64), bytes. Real responses are 5–30 KB.
pub const MAX_RESPONSE_BASE64: usize = 256 * 1024;

const STATUS_SUCCESS: &str = "urn:oasis:names:tc:SAML:2.0:status:Success";
const BEARER: &str = "urn:oasis:names:tc:SAML:2.0:cm:bearer";

/// Signature algorithms accepted by default (SHA-256 or stronger).
const STRONG_SIGNATURES: [&str; 6] = [
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384",
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512",
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256",
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384",
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha512",
];
const STRONG_DIGESTS: [&str; 3] = [
    "http://www.w3.org/2001/04/xmlenc#sha256",
    "http://www.w3.org/2001/04/xmldsig-more#sha384",
    "http://www.w3.org/2001/04/xmlenc#sha512",
];
/// Only with `insecure_allow_sha1: true`.
const SHA1_SIGNATURE: &str = "http://www.w3.org/2000/09/xmldsig#rsa-sha1";
const SHA1_DIGEST: &str = "http://www.w3.org/2000/09/xmldsig#sha1";
/// Canonicalisation and transforms an enveloped SAML signature uses; anything else (XPath,
/// XSLT, base64…) is refused before xmlsec runs.
const TRANSFORMS: [&str; 5] = [
    "http://www.w3.org/2000/09/xmldsig#enveloped-signature",
    "http://www.w3.org/2001/10/xml-exc-c14n#",
    "http://www.w3.org/2001/10/xml-exc-c14n#WithComments",
    "http://www.w3.org/TR/2001/REC-xml-c14n-20010315",
    "http://www.w3.org/TR/2001/REC-xml-c14n-20010315#WithComments",
];

/// Why a response was refused (audit `detail`, kebab-case, a closed set); displays as its
/// audit name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.as_str())]
pub enum SamlError {
    /// Larger than [`MAX_RESPONSE_BASE64`].
    TooLarge,
    /// `SAMLResponse` is not base64.
    NotBase64,
    /// Not a well-formed SAML response (or too large or deep once decoded).
    Malformed,
    /// Declares a DTD.
    DoctypeForbidden,
    /// The IdP answered with an error status.
    IdpStatus,
    /// More than one assertion, an assertion outside its place, duplicate ids, or a signature
    /// that does not cover its own parent: the shapes of XML signature wrapping.
    Wrapped,
    /// No signature covers the assertion.
    Unsigned,
    /// A signature or digest algorithm below the configured minimum.
    WeakAlgorithm,
    /// A transform or canonicalisation that SAML signatures never need.
    UnsupportedTransform,
    /// A signature that xmlsec does not verify with any trusted IdP certificate.
    SignatureInvalid,
    /// An encrypted assertion, and no SP key to decrypt it.
    Encrypted,
    /// An encrypted assertion that does not decrypt with the SP key.
    DecryptionFailed,
    /// A comment inside the assertion (comments are outside the signature; their only use in
    /// an assertion is to mislead a reader).
    CommentInjected,
    /// `Issuer` is not the IdP.
    IssuerMismatch,
    /// The assertion is not for this service provider.
    AudienceMismatch,
    /// `SubjectConfirmationData/@Recipient` is not this ACS.
    RecipientMismatch,
    /// `Response/@Destination` is not this ACS.
    DestinationMismatch,
    /// Answers a request this browser did not make.
    InResponseToMismatch,
    /// IdP-initiated, and the provider does not accept those.
    Unsolicited,
    /// Past `NotOnOrAfter` (with skew) or issued too long ago.
    Expired,
    /// Before `NotBefore` (with skew) or issued in the future.
    NotYetValid,
    /// No subject, no bearer confirmation, or no authentication statement.
    SubjectMissing,
    /// This assertion was consumed before.
    Replayed,
}

impl SamlError {
    /// Kebab-case name for the audit trail and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            SamlError::TooLarge => "response-too-large",
            SamlError::NotBase64 => "not-base64",
            SamlError::Malformed => "malformed",
            SamlError::DoctypeForbidden => "doctype-forbidden",
            SamlError::IdpStatus => "idp-status",
            SamlError::Wrapped => "wrapped",
            SamlError::Unsigned => "unsigned",
            SamlError::WeakAlgorithm => "weak-algorithm",
            SamlError::UnsupportedTransform => "unsupported-transform",
            SamlError::SignatureInvalid => "signature-invalid",
            SamlError::Encrypted => "encrypted-assertion",
            SamlError::DecryptionFailed => "decryption-failed",
            SamlError::CommentInjected => "comment-injected",
            SamlError::IssuerMismatch => "issuer-mismatch",
            SamlError::AudienceMismatch => "audience-mismatch",
            SamlError::RecipientMismatch => "recipient-mismatch",
            SamlError::DestinationMismatch => "destination-mismatch",
            SamlError::InResponseToMismatch => "in-response-to-mismatch",
            SamlError::Unsolicited => "unsolicited",
            SamlError::Expired => "expired",
            SamlError::NotYetValid => "not-yet-valid",
            SamlError::SubjectMissing => "subject-missing",
            SamlError::Replayed => "replayed",
        }
    }

    /// Refusals caused by a request that is simply not SAML (400) rather than a response
    /// that fails a security check (403).
    pub fn is_bad_request(self) -> bool {
        matches!(
            self,
            SamlError::TooLarge | SamlError::NotBase64 | SamlError::Malformed
        )
    }
}

impl From<XmlError> for SamlError {
    fn from(e: XmlError) -> Self {
        match e {
            XmlError::Doctype => SamlError::DoctypeForbidden,
            XmlError::Malformed => SamlError::Malformed,
        }
    }
}

/// What the response must match.
#[derive(Clone, Copy)]
pub struct Expectations<'a> {
    /// The IdP's entity id.
    pub idp_entity_id: &'a str,
    /// Its signing certificates (DER); any of them may sign.
    pub certificates: &'a [CertificateDer],
    /// This SP's entity id (the audience).
    pub sp_entity_id: &'a str,
    /// The ACS URL the response was posted to.
    pub acs_url: &'a str,
    /// The id of the AuthnRequest this browser sent, when it has a pending sign-in.
    pub request_id: Option<&'a str>,
    /// Accept IdP-initiated responses (no `InResponseTo`).
    pub allow_unsolicited: bool,
    /// Accept RSA-SHA1 and SHA-1 digests.
    pub allow_sha1: bool,
    /// Clock skew tolerated on every time check, seconds.
    pub clock_skew: i64,
    /// Oldest accepted `IssueInstant`, seconds before now.
    pub max_age: i64,
    /// Unix seconds.
    pub now: i64,
    /// The SP's key for encrypted assertions.
    pub decrypter: Option<&'a super::decrypt::SpDecrypter>,
    /// Was this assertion id consumed before? Asked once the signature holds, so a replay is
    /// named as such even when its sign-in cookie is gone.
    pub consumed: &'a dyn Fn(&str) -> bool,
}

/// The facts of a verified assertion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedAssertion {
    /// `Assertion/@ID` (replay memory).
    pub assertion_id: String,
    /// Remember the id until then (unix seconds).
    pub remember_until: i64,
    /// `NameID`, whole.
    pub name_id: String,
    /// `NameID/@Format`.
    pub name_id_format: Option<String>,
    /// `AuthnStatement/@SessionIndex` (single logout).
    pub session_index: Option<String>,
    /// `AuthnContextClassRef`.
    pub authn_context: Option<String>,
    /// `AuthnStatement/@SessionNotOnOrAfter` (unix seconds): the session ends then.
    pub session_not_on_or_after: Option<i64>,
    /// Attributes: name, friendly name, values.
    pub attributes: Vec<Attribute>,
}

/// One `saml:Attribute`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    /// `Name` (often a URI or OID).
    pub name: String,
    /// `FriendlyName`.
    pub friendly_name: Option<String>,
    /// Every `AttributeValue`, whole.
    pub values: Vec<String>,
}

/// Decodes the posted form value (base64, line breaks tolerated).
pub fn decode(form_value: &str) -> Result<String, SamlError> {
    if form_value.len() > MAX_RESPONSE_BASE64 {
        return Err(SamlError::TooLarge);
    }
    let compact: Vec<u8> = form_value
        .bytes()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(compact)
        .map_err(|_| SamlError::NotBase64)?;
    String::from_utf8(bytes).map_err(|_| SamlError::Malformed)
}

/// The unverified `Issuer` of a response: only to pick which provider's keys to verify an
/// IdP-initiated response with; never trusted for anything else.
pub fn claimed_issuer(xml_text: &str) -> Option<String> {
    let doc = xml::parse(xml_text).ok()?;
    let root = doc.root_element();
    let issuer = xml::child(root, ASSERTION, "Issuer").or_else(|| {
        xml::child(root, ASSERTION, "Assertion").and_then(|a| xml::child(a, ASSERTION, "Issuer"))
    })?;
    Some(xml::text(issuer))
}

/// Verifies a decoded response; blocking (xmlsec), about a millisecond.
pub fn verify(xml_text: &str, expect: &Expectations<'_>) -> Result<VerifiedAssertion, SamlError> {
    match decrypt_if_encrypted(xml_text, expect)? {
        Decrypted::Plain => verify_plain(xml_text, expect, false),
        Decrypted::EnvelopeVerified(text) => verify_plain(&text, expect, true),
        // Nothing has authenticated the ciphertext yet: until the assertion's own signature
        // holds, every failure reads the same, so a changed ciphertext (AES-CBC) cannot be
        // used as an oracle on the plaintext's shape.
        Decrypted::Unauthenticated(text) => {
            verify_plain(&text, expect, false).map_err(|refusal| match refusal {
                SamlError::Malformed
                | SamlError::DoctypeForbidden
                | SamlError::Wrapped
                | SamlError::Unsigned
                | SamlError::WeakAlgorithm
                | SamlError::UnsupportedTransform
                | SamlError::SignatureInvalid
                | SamlError::CommentInjected
                | SamlError::Encrypted => SamlError::DecryptionFailed,
                other => other,
            })
        }
    }
}

/// What decryption made of a response.
enum Decrypted {
    /// Nothing was encrypted.
    Plain,
    /// The response was signed over its encrypted assertion and that signature held: the
    /// decrypted assertion is the IdP's (its own signature, if any, is checked too).
    EnvelopeVerified(String),
    /// Only a signature inside the decrypted assertion can vouch for it.
    Unauthenticated(String),
}

/// Decrypts the response's encrypted assertion in place. A signature on the response covers
/// the *encrypted* form, so it is checked first, on that form, and then set aside.
fn decrypt_if_encrypted(xml_text: &str, expect: &Expectations<'_>) -> Result<Decrypted, SamlError> {
    let doc = xml::parse(xml_text)?;
    let response = doc.root_element();
    let mut encrypted = doc
        .descendants()
        .filter(|n| xml::is(n, ASSERTION, "EncryptedAssertion"));
    let Some(found) = encrypted.next() else {
        return Ok(Decrypted::Plain);
    };
    let plain_too = doc
        .descendants()
        .any(|n| xml::is(&n, ASSERTION, "Assertion"));
    if encrypted.next().is_some() || plain_too || found.parent() != Some(response) {
        return Err(SamlError::Wrapped);
    }
    if !xml::is(&response, PROTOCOL, "Response") {
        return Err(SamlError::Malformed);
    }
    let decrypter = expect.decrypter.ok_or(SamlError::Encrypted)?;
    if xml::child(response, DSIG, "Signature").is_none() {
        return decrypter
            .splice(xml_text, found)
            .map(Decrypted::Unauthenticated);
    }
    let signed = verify_enveloped(xml_text, "Response", expect.certificates, expect.allow_sha1)?;
    let signed_doc = xml::parse(&signed).map_err(|_| SamlError::SignatureInvalid)?;
    let signed_response = signed_doc.root_element();
    let encrypted =
        xml::child(signed_response, ASSERTION, "EncryptedAssertion").ok_or(SamlError::Wrapped)?;
    let spliced = decrypter.splice(&signed, encrypted)?;
    // The response signature was over the ciphertext: it has done its work; left in, it
    // would fail against the plaintext. (xmlsec's reduced document usually drops it already.)
    let range = {
        let spliced_doc = xml::parse(&spliced).map_err(|_| SamlError::DecryptionFailed)?;
        xml::child(spliced_doc.root_element(), DSIG, "Signature").map(|s| s.range())
    };
    let mut text = spliced;
    if let Some(range) = range {
        text.replace_range(range, "");
    }
    Ok(Decrypted::EnvelopeVerified(text))
}

/// `envelope_verified`: the response's signature held over the encrypted assertion, so the
/// assertion needs no signature of its own (one it has is still checked).
fn verify_plain(
    xml_text: &str,
    expect: &Expectations<'_>,
    envelope_verified: bool,
) -> Result<VerifiedAssertion, SamlError> {
    let doc = xml::parse(xml_text)?;
    let response = doc.root_element();
    if !xml::is(&response, PROTOCOL, "Response") {
        return Err(SamlError::Malformed);
    }
    // An error status carries no assertion: say what the IdP said.
    let status = xml::child(response, PROTOCOL, "Status")
        .and_then(|s| xml::child(s, PROTOCOL, "StatusCode"))
        .and_then(|c| c.attribute("Value"));
    if status != Some(STATUS_SUCCESS) {
        return Err(SamlError::IdpStatus);
    }
    let (assertion_id, signatures) = check_shape(response, expect.allow_sha1)?;
    if signatures == 0 && !envelope_verified {
        return Err(SamlError::Unsigned);
    }
    let reduced = if signatures == 0 {
        xml_text.to_string()
    } else {
        super::xmlsec_log::route_to_tracing();
        Crypto::reduce_xml_to_signed_with_allowed_algorithms(
            xml_text,
            expect.certificates,
            samael::crypto::ReduceMode::ValidateAndMarkNoAncestors,
            (!expect.allow_sha1).then_some(&STRONG_ALGORITHMS[..]),
        )
        .map_err(|_| SamlError::SignatureInvalid)?
    };
    let signed_doc = xml::parse(&reduced).map_err(|_| SamlError::SignatureInvalid)?;
    // Exactly the assertion the shape check found, now known to be signed.
    let mut signed = signed_doc
        .descendants()
        .filter(|n| xml::is(n, ASSERTION, "Assertion"));
    let assertion = match (signed.next(), signed.next()) {
        (Some(a), None) if a.attribute("ID") == Some(assertion_id.as_str()) => a,
        _ => return Err(SamlError::Wrapped),
    };
    if (expect.consumed)(&assertion_id) {
        return Err(SamlError::Replayed);
    }
    check_response(response, expect)?;
    read_assertion(assertion, expect)
}

/// SAML's algorithms by name, for xmlsec's own allowlist (a second check behind ours).
const STRONG_ALGORITHMS: [AllowedSignatureAlgorithm; 6] = [
    AllowedSignatureAlgorithm::RsaSha256,
    AllowedSignatureAlgorithm::RsaSha384,
    AllowedSignatureAlgorithm::RsaSha512,
    AllowedSignatureAlgorithm::EcdsaSha256,
    AllowedSignatureAlgorithm::EcdsaSha384,
    AllowedSignatureAlgorithm::EcdsaSha512,
];

/// The structure checks that defeat signature wrapping; returns the assertion's id and how
/// many signatures there are (each one enveloped in the response or the assertion).
fn check_shape(response: Node<'_, '_>, allow_sha1: bool) -> Result<(String, usize), SamlError> {
    let doc = response.document();
    let mut assertions = doc.descendants().filter(|n| {
        xml::is(n, ASSERTION, "Assertion") || xml::is(n, ASSERTION, "EncryptedAssertion")
    });
    let assertion = match (assertions.next(), assertions.next()) {
        (Some(a), None) => a,
        (None, _) => return Err(SamlError::Malformed),
        (Some(_), Some(_)) => return Err(SamlError::Wrapped),
    };
    if assertion.parent() != Some(response) {
        return Err(SamlError::Wrapped);
    }
    if xml::is(&assertion, ASSERTION, "EncryptedAssertion") {
        return Err(SamlError::Encrypted);
    }
    // Comments sit outside the signature (exclusive c14n drops them); inside an assertion
    // their only use is to make a reader stop early in a NameID or an attribute value.
    if xml::has_comment(assertion) {
        return Err(SamlError::CommentInjected);
    }
    unique_ids(doc)?;
    let assertion_id = assertion
        .attribute("ID")
        .filter(|id| !id.is_empty())
        .ok_or(SamlError::Malformed)?;
    let mut signatures = 0;
    for signature in doc.descendants().filter(|n| xml::is(n, DSIG, "Signature")) {
        check_signature(signature, &[response, assertion], allow_sha1)?;
        signatures += 1;
    }
    Ok((assertion_id.to_string(), signatures))
}

/// No two elements share an `ID` (xmlsec would resolve a reference to either).
fn unique_ids(doc: &roxmltree::Document<'_>) -> Result<(), SamlError> {
    let mut ids = std::collections::HashSet::new();
    for id in doc.descendants().filter_map(|n| n.attribute("ID")) {
        if !ids.insert(id) {
            return Err(SamlError::Wrapped);
        }
    }
    Ok(())
}

/// One `ds:Signature`: enveloped in one of `parents`, with exactly one reference, to that
/// parent's `ID`, using allowed algorithms and transforms.
fn check_signature(
    signature: Node<'_, '_>,
    parents: &[Node<'_, '_>],
    allow_sha1: bool,
) -> Result<(), SamlError> {
    let parent = signature.parent().ok_or(SamlError::Wrapped)?;
    if !parents.contains(&parent) {
        return Err(SamlError::Wrapped);
    }
    let signed_info = xml::child(signature, DSIG, "SignedInfo").ok_or(SamlError::Malformed)?;
    let mut references = xml::children(signed_info, DSIG, "Reference");
    let reference = match (references.next(), references.next()) {
        (Some(r), None) => r,
        _ => return Err(SamlError::Wrapped),
    };
    let target = reference
        .attribute("URI")
        .and_then(|uri| uri.strip_prefix('#'));
    if target.is_none() || target != parent.attribute("ID") {
        return Err(SamlError::Wrapped);
    }
    check_algorithms(signed_info, reference, allow_sha1)
}

/// A protocol message signed as a whole (logout messages over HTTP-POST): exactly one
/// signature, enveloped in the root `samlp:<root_name>` and covering it. Returns the signed
/// content as xmlsec reduced it; read nothing from anywhere else.
pub fn verify_enveloped(
    xml_text: &str,
    root_name: &str,
    certificates: &[CertificateDer],
    allow_sha1: bool,
) -> Result<String, SamlError> {
    let doc = xml::parse(xml_text)?;
    let root = doc.root_element();
    if !xml::is(&root, PROTOCOL, root_name) {
        return Err(SamlError::Malformed);
    }
    unique_ids(&doc)?;
    let mut signatures = doc.descendants().filter(|n| xml::is(n, DSIG, "Signature"));
    match (signatures.next(), signatures.next()) {
        (Some(signature), None) => check_signature(signature, &[root], allow_sha1)?,
        (None, _) => return Err(SamlError::Unsigned),
        (Some(_), Some(_)) => return Err(SamlError::Wrapped),
    }
    super::xmlsec_log::route_to_tracing();
    let reduced = Crypto::reduce_xml_to_signed_with_allowed_algorithms(
        xml_text,
        certificates,
        samael::crypto::ReduceMode::ValidateAndMarkNoAncestors,
        (!allow_sha1).then_some(&STRONG_ALGORITHMS[..]),
    )
    .map_err(|_| SamlError::SignatureInvalid)?;
    let signed = xml::parse(&reduced).map_err(|_| SamlError::SignatureInvalid)?;
    let signed_root = signed.root_element();
    if !xml::is(&signed_root, PROTOCOL, root_name)
        || signed_root.attribute("ID") != root.attribute("ID")
    {
        return Err(SamlError::Wrapped);
    }
    Ok(reduced)
}

fn algorithm<'a>(node: Option<Node<'a, '_>>) -> Option<&'a str> {
    node.and_then(|n| n.attribute("Algorithm"))
}

fn check_algorithms(
    signed_info: Node<'_, '_>,
    reference: Node<'_, '_>,
    allow_sha1: bool,
) -> Result<(), SamlError> {
    let signature = algorithm(xml::child(signed_info, DSIG, "SignatureMethod"));
    let digest = algorithm(xml::child(reference, DSIG, "DigestMethod"));
    let signature_ok = signature
        .is_some_and(|a| STRONG_SIGNATURES.contains(&a) || (allow_sha1 && a == SHA1_SIGNATURE));
    let digest_ok =
        digest.is_some_and(|a| STRONG_DIGESTS.contains(&a) || (allow_sha1 && a == SHA1_DIGEST));
    if !signature_ok || !digest_ok {
        return Err(SamlError::WeakAlgorithm);
    }
    let canonicalization = algorithm(xml::child(signed_info, DSIG, "CanonicalizationMethod"));
    let transforms = xml::child(reference, DSIG, "Transforms")
        .map(|t| {
            xml::children(t, DSIG, "Transform")
                .map(Some)
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let known = |a: Option<&str>| a.is_some_and(|a| TRANSFORMS.contains(&a));
    if !known(canonicalization) || !transforms.into_iter().all(|t| known(algorithm(t))) {
        return Err(SamlError::UnsupportedTransform);
    }
    Ok(())
}

/// The envelope's own claims. When only the assertion is signed these are unsigned, so they
/// can only ever refuse, never grant: the signed assertion repeats what matters.
fn check_response(response: Node<'_, '_>, expect: &Expectations<'_>) -> Result<(), SamlError> {
    if let Some(destination) = response.attribute("Destination") {
        if destination != expect.acs_url {
            return Err(SamlError::DestinationMismatch);
        }
    }
    if let Some(issuer) = xml::child(response, ASSERTION, "Issuer") {
        if xml::text(issuer) != expect.idp_entity_id {
            return Err(SamlError::IssuerMismatch);
        }
    }
    check_in_response_to(response.attribute("InResponseTo"), expect)
}

fn check_in_response_to(found: Option<&str>, expect: &Expectations<'_>) -> Result<(), SamlError> {
    match (expect.request_id, found) {
        (Some(sent), Some(found)) if sent == found => Ok(()),
        (_, Some(_)) => Err(SamlError::InResponseToMismatch),
        (_, None) if expect.allow_unsolicited => Ok(()),
        (_, None) => Err(SamlError::Unsolicited),
    }
}

/// Reads the signed assertion, checking issuer, times, audience and subject confirmation.
fn read_assertion(
    assertion: Node<'_, '_>,
    expect: &Expectations<'_>,
) -> Result<VerifiedAssertion, SamlError> {
    let (now, skew) = (expect.now, expect.clock_skew);
    let issuer = xml::child(assertion, ASSERTION, "Issuer").map(xml::text);
    if issuer.as_deref() != Some(expect.idp_entity_id) {
        return Err(SamlError::IssuerMismatch);
    }
    let issued = time(assertion.attribute("IssueInstant"))?.ok_or(SamlError::Malformed)?;
    if issued > now + skew {
        return Err(SamlError::NotYetValid);
    }
    if issued < now - expect.max_age - skew {
        return Err(SamlError::Expired);
    }

    let subject = xml::child(assertion, ASSERTION, "Subject").ok_or(SamlError::SubjectMissing)?;
    let name_id_node = xml::child(subject, ASSERTION, "NameID").ok_or(SamlError::SubjectMissing)?;
    let statements: Vec<Node<'_, '_>> =
        xml::children(assertion, ASSERTION, "AttributeStatement").collect();
    let name_id = xml::text(name_id_node);
    if name_id.is_empty() {
        return Err(SamlError::SubjectMissing);
    }

    let conditions =
        xml::child(assertion, ASSERTION, "Conditions").ok_or(SamlError::AudienceMismatch)?;
    let mut remember_until = now + expect.max_age;
    if let Some(not_before) = time(conditions.attribute("NotBefore"))? {
        if not_before > now + skew {
            return Err(SamlError::NotYetValid);
        }
    }
    if let Some(not_on_or_after) = time(conditions.attribute("NotOnOrAfter"))? {
        if not_on_or_after <= now - skew {
            return Err(SamlError::Expired);
        }
        remember_until = remember_until.max(not_on_or_after + skew);
    }
    // Every AudienceRestriction must name us (SAML core 2.5.1.4), and there must be one.
    let mut restrictions = xml::children(conditions, ASSERTION, "AudienceRestriction").peekable();
    if restrictions.peek().is_none() {
        return Err(SamlError::AudienceMismatch);
    }
    for restriction in restrictions {
        if !xml::children(restriction, ASSERTION, "Audience")
            .any(|a| xml::text(a) == expect.sp_entity_id)
        {
            return Err(SamlError::AudienceMismatch);
        }
    }

    // A bearer confirmation for this ACS and this request, still valid.
    let mut first_failure = SamlError::SubjectMissing;
    let mut confirmed = false;
    for confirmation in xml::children(subject, ASSERTION, "SubjectConfirmation")
        .filter(|c| c.attribute("Method") == Some(BEARER))
    {
        match check_confirmation(confirmation, expect) {
            Ok(until) => {
                remember_until = remember_until.max(until + skew);
                confirmed = true;
                break;
            }
            Err(refusal) if first_failure == SamlError::SubjectMissing => first_failure = refusal,
            Err(_) => {}
        }
    }
    if !confirmed {
        return Err(first_failure);
    }

    let authn =
        xml::child(assertion, ASSERTION, "AuthnStatement").ok_or(SamlError::SubjectMissing)?;
    let session_not_on_or_after = time(authn.attribute("SessionNotOnOrAfter"))?;
    if session_not_on_or_after.is_some_and(|t| t <= now - skew) {
        return Err(SamlError::Expired);
    }
    let authn_context = xml::child(authn, ASSERTION, "AuthnContext")
        .and_then(|c| xml::child(c, ASSERTION, "AuthnContextClassRef"))
        .map(xml::text);

    let attributes = statements
        .into_iter()
        .flat_map(|s| xml::children(s, ASSERTION, "Attribute"))
        .filter_map(|a| {
            Some(Attribute {
                name: a.attribute("Name")?.to_string(),
                friendly_name: a.attribute("FriendlyName").map(str::to_string),
                values: xml::children(a, ASSERTION, "AttributeValue")
                    .map(xml::text)
                    .collect(),
            })
        })
        .collect();

    Ok(VerifiedAssertion {
        assertion_id: assertion.attribute("ID").unwrap_or_default().to_string(),
        remember_until,
        name_id,
        name_id_format: name_id_node.attribute("Format").map(str::to_string),
        session_index: authn.attribute("SessionIndex").map(str::to_string),
        authn_context,
        session_not_on_or_after,
        attributes,
    })
}

/// Checks one bearer `SubjectConfirmation`; returns its `NotOnOrAfter`.
fn check_confirmation(
    confirmation: Node<'_, '_>,
    expect: &Expectations<'_>,
) -> Result<i64, SamlError> {
    let data = xml::child(confirmation, ASSERTION, "SubjectConfirmationData")
        .ok_or(SamlError::SubjectMissing)?;
    if data.attribute("Recipient") != Some(expect.acs_url) {
        return Err(SamlError::RecipientMismatch);
    }
    let until = time(data.attribute("NotOnOrAfter"))?.ok_or(SamlError::SubjectMissing)?;
    if until <= expect.now - expect.clock_skew {
        return Err(SamlError::Expired);
    }
    if time(data.attribute("NotBefore"))?.is_some_and(|t| t > expect.now + expect.clock_skew) {
        return Err(SamlError::NotYetValid);
    }
    check_in_response_to(data.attribute("InResponseTo"), expect)?;
    Ok(until)
}

/// An `xs:dateTime` as unix seconds; absent is `None`, unreadable is malformed.
pub(super) fn time(value: Option<&str>) -> Result<Option<i64>, SamlError> {
    value
        .map(|v| {
            chrono::DateTime::parse_from_rfc3339(v.trim())
                .map(|t| t.timestamp())
                .map_err(|_| SamlError::Malformed)
        })
        .transpose()
}

#[cfg(test)]
mod tests;
