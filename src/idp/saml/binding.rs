//! The messages Portcullis writes (AuthnRequest, LogoutRequest, LogoutResponse, SP
//! metadata) and the HTTP-Redirect binding: DEFLATE + base64 + URL encoding, with the
//! detached query signature (SAML bindings §3.4.4.1) made and checked with `ring`.

use crate::respond::escape_markup;
use std::io::{Read, Write};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ring::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair};
use samael::crypto::CertificateDer;
use url::Url;

use super::response::SamlError;
use super::xml::{self, PROTOCOL};

/// Largest inflated redirect-binding message: logout messages are < 2 KB; the bound stops
/// a DEFLATE bomb.
const MAX_INFLATED: u64 = 64 * 1024;
/// Largest encoded redirect-binding message accepted.
const MAX_ENCODED: usize = 16 * 1024;

const RSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256";
const ECDSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256";
const RSA_SHA1: &str = "http://www.w3.org/2000/09/xmldsig#rsa-sha1";

/// Which query parameter carries the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carrier {
    /// `SAMLRequest`.
    Request,
    /// `SAMLResponse`.
    Response,
}

impl Carrier {
    fn param(self) -> &'static str {
        match self {
            Carrier::Request => "SAMLRequest",
            Carrier::Response => "SAMLResponse",
        }
    }
}

/// The SP's signing key (RSA or ECDSA P-256), loaded once.
pub struct SpSigner {
    key: SignerKey,
    /// The certificate published in SP metadata (DER).
    pub certificate: Vec<u8>,
}

impl std::fmt::Debug for SpSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpSigner")
            .field("algorithm", &self.algorithm())
            .finish_non_exhaustive()
    }
}

enum SignerKey {
    Rsa(RsaKeyPair),
    Ecdsa(EcdsaKeyPair),
}

/// Why an SP key or certificate was not loaded.
#[derive(Debug, thiserror::Error)]
pub enum SpKeyError {
    /// Not a PEM private key ring can use.
    #[error("not an RSA (2048 bits or more) or ECDSA P-256 private key in PEM")]
    Key,
    /// Not a PEM certificate.
    #[error("not a PEM certificate")]
    Certificate,
    /// The certificate is for another key.
    #[error("the certificate does not belong to the signing key")]
    Mismatch,
}

impl SpSigner {
    /// From a PEM private key (PKCS#8, or PKCS#1 for RSA) and a PEM certificate.
    pub fn from_pem(key_pem: &[u8], cert_pem: &[u8]) -> Result<SpSigner, SpKeyError> {
        let key = rustls_pemfile::private_key(&mut &key_pem[..])
            .ok()
            .flatten()
            .ok_or(SpKeyError::Key)?;
        let rng = ring::rand::SystemRandom::new();
        let key = match &key {
            rustls::pki_types::PrivateKeyDer::Pkcs1(der) => {
                RsaKeyPair::from_der(der.secret_pkcs1_der())
                    .map(SignerKey::Rsa)
                    .ok()
            }
            rustls::pki_types::PrivateKeyDer::Pkcs8(der) => {
                let der = der.secret_pkcs8_der();
                RsaKeyPair::from_pkcs8(der)
                    .map(SignerKey::Rsa)
                    .ok()
                    .or_else(|| {
                        EcdsaKeyPair::from_pkcs8(
                            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                            der,
                            &rng,
                        )
                        .map(SignerKey::Ecdsa)
                        .ok()
                    })
            }
            _ => None,
        }
        .ok_or(SpKeyError::Key)?;
        let certificate = rustls_pemfile::certs(&mut &cert_pem[..])
            .next()
            .and_then(Result::ok)
            .ok_or(SpKeyError::Certificate)?
            .to_vec();
        let public = match &key {
            SignerKey::Rsa(k) => k.public_key().as_ref().to_vec(),
            SignerKey::Ecdsa(k) => k.public_key().as_ref().to_vec(),
        };
        if public_key(&certificate).map(|(_, bytes)| bytes) != Some(public) {
            return Err(SpKeyError::Mismatch);
        }
        Ok(SpSigner { key, certificate })
    }

    fn algorithm(&self) -> &'static str {
        match self.key {
            SignerKey::Rsa(_) => RSA_SHA256,
            SignerKey::Ecdsa(_) => ECDSA_SHA256,
        }
    }

    fn sign(&self, data: &[u8]) -> Option<Vec<u8>> {
        let rng = ring::rand::SystemRandom::new();
        match &self.key {
            SignerKey::Rsa(k) => {
                let mut out = vec![0; k.public().modulus_len()];
                k.sign(&signature::RSA_PKCS1_SHA256, &rng, data, &mut out)
                    .ok()?;
                Some(out)
            }
            SignerKey::Ecdsa(k) => k.sign(&rng, data).ok().map(|s| s.as_ref().to_vec()),
        }
    }
}

/// Kind of public key in a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    Rsa,
    EcP256,
}

/// The certificate's public key as ring reads it (PKCS#1 for RSA, the point for EC).
fn public_key(cert_der: &[u8]) -> Option<(KeyKind, Vec<u8>)> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    let spki = &cert.tbs_certificate.subject_pki;
    let kind = match spki.algorithm.algorithm.to_id_string().as_str() {
        "1.2.840.113549.1.1.1" => KeyKind::Rsa,
        "1.2.840.10045.2.1" => KeyKind::EcP256,
        _ => return None,
    };
    Some((kind, spki.subject_public_key.data.to_vec()))
}

/// `endpoint` with the message, `RelayState` and (when a signer is given) the signature.
pub fn redirect_url(
    endpoint: &Url,
    carrier: Carrier,
    message_xml: &str,
    relay_state: Option<&str>,
    signer: Option<&SpSigner>,
) -> Option<String> {
    let mut deflater =
        flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    deflater.write_all(message_xml.as_bytes()).ok()?;
    let deflated = deflater.finish().ok()?;
    let encode =
        |v: &str| -> String { url::form_urlencoded::byte_serialize(v.as_bytes()).collect() };
    let mut query = format!("{}={}", carrier.param(), encode(&STANDARD.encode(deflated)));
    if let Some(relay) = relay_state {
        query.push_str(&format!("&RelayState={}", encode(relay)));
    }
    if let Some(signer) = signer {
        query.push_str(&format!("&SigAlg={}", encode(signer.algorithm())));
        let signature = signer.sign(query.as_bytes())?;
        query.push_str(&format!(
            "&Signature={}",
            encode(&STANDARD.encode(signature))
        ));
    }
    let separator = if endpoint.query().is_some() { '&' } else { '?' };
    Some(format!("{endpoint}{separator}{query}"))
}

/// A message received with the HTTP-Redirect binding, parameters kept as sent (the
/// signature covers the encoded bytes, not their decoding).
#[derive(Debug, Default)]
pub struct RedirectMessage<'q> {
    carrier: Option<(Carrier, &'q str)>,
    relay_state: Option<&'q str>,
    sig_alg: Option<&'q str>,
    signature: Option<&'q str>,
}

impl<'q> RedirectMessage<'q> {
    /// From the raw query string.
    pub fn parse(query: &'q str) -> RedirectMessage<'q> {
        let mut message = RedirectMessage::default();
        for pair in query.split('&') {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            match name {
                "SAMLRequest" => message.carrier = Some((Carrier::Request, value)),
                "SAMLResponse" => message.carrier = Some((Carrier::Response, value)),
                "RelayState" => message.relay_state = Some(value),
                "SigAlg" => message.sig_alg = Some(value),
                "Signature" => message.signature = Some(value),
                _ => {}
            }
        }
        message
    }

    /// Request or response.
    pub fn carrier(&self) -> Option<Carrier> {
        self.carrier.map(|(c, _)| c)
    }

    /// `RelayState`, decoded.
    pub fn relay_state(&self) -> Option<String> {
        self.relay_state.map(decode_component)
    }

    /// Is there a signature at all?
    pub fn is_signed(&self) -> bool {
        self.signature.is_some()
    }

    /// The message XML: URL-decoded, base64-decoded, inflated (bounded).
    pub fn xml(&self) -> Result<String, SamlError> {
        let (_, raw) = self.carrier.ok_or(SamlError::Malformed)?;
        if raw.len() > MAX_ENCODED {
            return Err(SamlError::TooLarge);
        }
        let compact: Vec<u8> = decode_component(raw)
            .bytes()
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        let deflated = STANDARD.decode(compact).map_err(|_| SamlError::NotBase64)?;
        let mut inflated = String::new();
        flate2::read::DeflateDecoder::new(&deflated[..])
            .take(MAX_INFLATED)
            .read_to_string(&mut inflated)
            .map_err(|_| SamlError::Malformed)?;
        if inflated.len() as u64 >= MAX_INFLATED {
            return Err(SamlError::TooLarge);
        }
        Ok(inflated)
    }

    /// Checks the query signature with any of `certificates`.
    pub fn verify(
        &self,
        certificates: &[CertificateDer],
        allow_sha1: bool,
    ) -> Result<(), SamlError> {
        let (Some((carrier, message)), Some(sig_alg), Some(signature)) =
            (self.carrier, self.sig_alg, self.signature)
        else {
            return Err(SamlError::Unsigned);
        };
        let mut signed = format!("{}={message}", carrier.param());
        if let Some(relay) = self.relay_state {
            signed.push_str(&format!("&RelayState={relay}"));
        }
        signed.push_str(&format!("&SigAlg={sig_alg}"));
        let algorithm = decode_component(sig_alg);
        let signature = STANDARD
            .decode(decode_component(signature))
            .map_err(|_| SamlError::SignatureInvalid)?;
        let verifies = |cert: &CertificateDer| -> Result<bool, SamlError> {
            let Some((kind, key)) = public_key(cert.der_data()) else {
                return Ok(false);
            };
            let verifier: &dyn signature::VerificationAlgorithm = match (kind, algorithm.as_str()) {
                (KeyKind::Rsa, RSA_SHA256) => &signature::RSA_PKCS1_2048_8192_SHA256,
                (KeyKind::EcP256, ECDSA_SHA256) => &signature::ECDSA_P256_SHA256_FIXED,
                (KeyKind::Rsa, RSA_SHA1) if allow_sha1 => {
                    &signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY
                }
                (KeyKind::Rsa, RSA_SHA1) => return Err(SamlError::WeakAlgorithm),
                _ => return Ok(false),
            };
            Ok(signature::UnparsedPublicKey::new(verifier, &key)
                .verify(signed.as_bytes(), &signature)
                .is_ok())
        };
        for cert in certificates {
            if verifies(cert)? {
                return Ok(());
            }
        }
        Err(SamlError::SignatureInvalid)
    }
}

fn decode_component(value: &str) -> String {
    url::form_urlencoded::parse(format!("v={value}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// A fresh message id: 128 random bits, an NCName (SAML core 1.3.4).
pub fn new_id() -> String {
    format!("_{:032x}", rand::random::<u128>())
}

/// `xs:dateTime` in UTC, whole seconds.
pub fn instant(unix: u64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix);
    humantime::format_rfc3339_seconds(at).to_string()
}

/// What an AuthnRequest asks for.
#[derive(Debug, Clone)]
pub struct AuthnRequest<'a> {
    /// Message id (remembered to match `InResponseTo`).
    pub id: &'a str,
    /// Unix seconds.
    pub now: u64,
    /// The IdP's SSO URL.
    pub destination: &'a str,
    /// Where the IdP posts the response.
    pub acs_url: &'a str,
    /// This SP.
    pub sp_entity_id: &'a str,
    /// Requested NameID format.
    pub name_id_format: Option<&'a str>,
    /// Make the user authenticate again (step-up).
    pub force_authn: bool,
    /// Authentication contexts to ask for (step-up to MFA).
    pub authn_contexts: &'a [String],
}

impl AuthnRequest<'_> {
    /// The XML.
    pub fn to_xml(&self) -> String {
        let policy = match self.name_id_format {
            Some(format) => format!(
                r#"<samlp:NameIDPolicy Format="{}" AllowCreate="true"/>"#,
                escape_markup(format)
            ),
            None => r#"<samlp:NameIDPolicy AllowCreate="true"/>"#.to_string(),
        };
        let context = if self.authn_contexts.is_empty() {
            String::new()
        } else {
            let refs: String = self
                .authn_contexts
                .iter()
                .map(|c| {
                    format!(
                        "<saml:AuthnContextClassRef>{}</saml:AuthnContextClassRef>",
                        escape_markup(c)
                    )
                })
                .collect();
            format!(
                r#"<samlp:RequestedAuthnContext Comparison="exact">{refs}</samlp:RequestedAuthnContext>"#
            )
        };
        format!(
            r#"<samlp:AuthnRequest xmlns:samlp="{PROTOCOL}" xmlns:saml="{assertion}" ID="{id}" Version="2.0" IssueInstant="{instant}" Destination="{destination}" AssertionConsumerServiceURL="{acs}" ProtocolBinding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"{force}><saml:Issuer>{issuer}</saml:Issuer>{policy}{context}</samlp:AuthnRequest>"#,
            assertion = xml::ASSERTION,
            id = escape_markup(self.id),
            instant = instant(self.now),
            destination = escape_markup(self.destination),
            acs = escape_markup(self.acs_url),
            force = if self.force_authn {
                r#" ForceAuthn="true""#
            } else {
                ""
            },
            issuer = escape_markup(self.sp_entity_id),
        )
    }
}

/// An SP-initiated LogoutRequest for one session.
pub fn logout_request(
    id: &str,
    now: u64,
    destination: &str,
    sp_entity_id: &str,
    name_id: &str,
    name_id_format: Option<&str>,
    session_index: Option<&str>,
) -> String {
    let format = name_id_format
        .map(|f| format!(r#" Format="{}""#, escape_markup(f)))
        .unwrap_or_default();
    let index = session_index
        .map(|s| {
            format!(
                "<samlp:SessionIndex>{}</samlp:SessionIndex>",
                escape_markup(s)
            )
        })
        .unwrap_or_default();
    format!(
        r#"<samlp:LogoutRequest xmlns:samlp="{PROTOCOL}" xmlns:saml="{assertion}" ID="{id}" Version="2.0" IssueInstant="{instant}" Destination="{destination}"><saml:Issuer>{issuer}</saml:Issuer><saml:NameID{format}>{name_id}</saml:NameID>{index}</samlp:LogoutRequest>"#,
        assertion = xml::ASSERTION,
        id = escape_markup(id),
        instant = instant(now),
        destination = escape_markup(destination),
        issuer = escape_markup(sp_entity_id),
        name_id = escape_markup(name_id),
    )
}

/// The answer to an IdP's LogoutRequest.
pub fn logout_response(
    id: &str,
    now: u64,
    destination: &str,
    in_response_to: &str,
    sp_entity_id: &str,
    success: bool,
) -> String {
    let status = if success { "Success" } else { "Requester" };
    format!(
        r#"<samlp:LogoutResponse xmlns:samlp="{PROTOCOL}" xmlns:saml="{assertion}" ID="{id}" Version="2.0" IssueInstant="{instant}" Destination="{destination}" InResponseTo="{irt}"><saml:Issuer>{issuer}</saml:Issuer><samlp:Status><samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:{status}"/></samlp:Status></samlp:LogoutResponse>"#,
        assertion = xml::ASSERTION,
        id = escape_markup(id),
        instant = instant(now),
        destination = escape_markup(destination),
        irt = escape_markup(in_response_to),
        issuer = escape_markup(sp_entity_id),
    )
}

/// What SP metadata describes.
#[derive(Debug, Clone)]
pub struct SpMetadata<'a> {
    /// Entity id.
    pub entity_id: &'a str,
    /// ACS URLs (HTTP-POST); the first is the default.
    pub acs_urls: &'a [String],
    /// Single logout URL (HTTP-Redirect and HTTP-POST).
    pub slo_url: &'a str,
    /// Signing certificate (DER), when requests are signed.
    pub certificate: Option<&'a [u8]>,
    /// The certificate's key also decrypts assertions (published for encryption too).
    pub encrypts: bool,
    /// NameID format asked for, listed first.
    pub name_id_format: Option<&'a str>,
}

/// NameID formats this SP accepts (any; the mapping decides what the user id is).
const NAME_ID_FORMATS: [&str; 4] = [
    "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress",
    "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent",
    "urn:oasis:names:tc:SAML:2.0:nameid-format:transient",
    "urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified",
];

impl SpMetadata<'_> {
    /// The EntityDescriptor, in schema order.
    pub fn to_xml(&self) -> String {
        let key_info = |der: &[u8]| {
            format!(
                "<ds:KeyInfo><ds:X509Data><ds:X509Certificate>{}</ds:X509Certificate></ds:X509Data></ds:KeyInfo>",
                STANDARD.encode(der)
            )
        };
        let mut key = String::new();
        if let Some(der) = self.certificate {
            key.push_str(&format!(
                r#"<md:KeyDescriptor use="signing">{}</md:KeyDescriptor>"#,
                key_info(der)
            ));
            if self.encrypts {
                key.push_str(&format!(
                    r#"<md:KeyDescriptor use="encryption">{}<md:EncryptionMethod Algorithm="http://www.w3.org/2009/xmlenc11#aes256-gcm"/><md:EncryptionMethod Algorithm="http://www.w3.org/2009/xmlenc11#aes128-gcm"/><md:EncryptionMethod Algorithm="http://www.w3.org/2001/04/xmlenc#aes256-cbc"/><md:EncryptionMethod Algorithm="http://www.w3.org/2001/04/xmlenc#aes128-cbc"/><md:EncryptionMethod Algorithm="http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p"/></md:KeyDescriptor>"#,
                    key_info(der)
                ));
            }
        }
        let mut formats: Vec<&str> = self.name_id_format.into_iter().collect();
        formats.extend(
            NAME_ID_FORMATS
                .iter()
                .filter(|f| Some(**f) != self.name_id_format),
        );
        let formats: String = formats
            .iter()
            .map(|f| {
                format!(
                    "\n    <md:NameIDFormat>{}</md:NameIDFormat>",
                    escape_markup(f)
                )
            })
            .collect();
        let acs: String = self
            .acs_urls
            .iter()
            .enumerate()
            .map(|(i, url)| {
                format!(
                    "\n    <md:AssertionConsumerService Binding=\"urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST\" Location=\"{}\" index=\"{i}\"{}/>",
                    escape_markup(url),
                    if i == 0 { " isDefault=\"true\"" } else { "" }
                )
            })
            .collect();
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<md:EntityDescriptor xmlns:md="{md}" xmlns:ds="{ds}" entityID="{entity}">
  <md:SPSSODescriptor AuthnRequestsSigned="{signed}" WantAssertionsSigned="true" protocolSupportEnumeration="{PROTOCOL}">
    {key}
    <md:SingleLogoutService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="{slo}"/>
    <md:SingleLogoutService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" Location="{slo}"/>{formats}{acs}
  </md:SPSSODescriptor>
</md:EntityDescriptor>
"#,
            md = xml::METADATA,
            ds = xml::DSIG,
            entity = escape_markup(self.entity_id),
            signed = self.certificate.is_some(),
            slo = escape_markup(self.slo_url),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rsa_signer() -> SpSigner {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let cert = rcgen::CertificateParams::new(vec!["sp.test".into()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        SpSigner::from_pem(key.serialize_pem().as_bytes(), cert.pem().as_bytes()).expect("signer")
    }

    #[test]
    fn a_signed_redirect_verifies_and_a_changed_one_does_not() {
        let signer = rsa_signer();
        let cert = CertificateDer::from(signer.certificate.clone());
        let endpoint = Url::parse("https://idp.test/slo").expect("url");
        let url = redirect_url(
            &endpoint,
            Carrier::Request,
            "<x/>",
            Some("r&1"),
            Some(&signer),
        )
        .expect("url");
        let query = url.split_once('?').expect("query").1;
        let message = RedirectMessage::parse(query);
        assert_eq!(message.verify(std::slice::from_ref(&cert), false), Ok(()));
        assert_eq!(message.xml().as_deref(), Ok("<x/>"));
        assert_eq!(message.relay_state().as_deref(), Some("r&1"));

        let tampered = query.replace("RelayState=r", "RelayState=s");
        let message = RedirectMessage::parse(&tampered);
        assert_eq!(
            message.verify(std::slice::from_ref(&cert), false),
            Err(SamlError::SignatureInvalid)
        );
        let unsigned = redirect_url(&endpoint, Carrier::Request, "<x/>", None, None).expect("url");
        let message = RedirectMessage::parse(unsigned.split_once('?').expect("query").1);
        assert_eq!(message.verify(&[cert], false), Err(SamlError::Unsigned));
    }

    #[test]
    fn a_deflate_bomb_is_cut_off() {
        let mut deflater =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        deflater
            .write_all(&vec![b'a'; 10 * 1024 * 1024])
            .expect("deflate");
        let encoded: String = url::form_urlencoded::byte_serialize(
            STANDARD
                .encode(deflater.finish().expect("finish"))
                .as_bytes(),
        )
        .collect();
        let query = format!("SAMLRequest={encoded}");
        assert_eq!(
            RedirectMessage::parse(&query).xml(),
            Err(SamlError::TooLarge)
        );
    }

    #[test]
    fn a_key_with_someone_elses_certificate_is_refused() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let cert = rcgen::CertificateParams::new(vec!["sp.test".into()])
            .expect("params")
            .self_signed(&other)
            .expect("cert");
        assert!(matches!(
            SpSigner::from_pem(key.serialize_pem().as_bytes(), cert.pem().as_bytes()),
            Err(SpKeyError::Mismatch)
        ));
    }

    #[test]
    fn messages_escape_what_they_carry() {
        let xml = logout_request("_1", 0, "https://idp/slo", "sp", "a<b>&\"", None, Some("s"));
        let doc = roxmltree::Document::parse(&xml).expect("well-formed");
        let name_id = doc
            .descendants()
            .find(|n| n.tag_name().name() == "NameID")
            .expect("NameID");
        assert_eq!(name_id.text(), Some("a<b>&\""));
    }
}
