//! IdP metadata: the entity id, the sign-in and logout endpoints (HTTP-Redirect binding) and
//! the signing certificates, from an `EntityDescriptor` or an `EntitiesDescriptor` aggregate
//! (ADFS, Shibboleth, federation feeds).

use base64::Engine;
use roxmltree::Node;
use samael::crypto::CertificateDer;
use url::Url;

use super::xml::{self, DSIG, METADATA};

const REDIRECT_BINDING: &str = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect";

/// What Portcullis needs to know about a SAML IdP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdpDescriptor {
    /// `entityID`: the `Issuer` of its responses.
    pub entity_id: String,
    /// Where AuthnRequests go (HTTP-Redirect).
    pub sso_url: Url,
    /// Where LogoutRequests go (HTTP-Redirect), when it supports single logout.
    pub slo_url: Option<Url>,
    /// Where LogoutResponses go (its `ResponseLocation`, else `slo_url`).
    pub slo_response_url: Option<Url>,
    /// Certificates that may sign its messages; several during a key rotation.
    pub certificates: Vec<CertificateDer>,
}

impl IdpDescriptor {
    /// Explicit endpoints replace the metadata's; explicit certificates join its own
    /// (rotation: the next certificate is trusted before the IdP switches to it).
    pub fn apply_overrides(
        &mut self,
        sso: &Option<Url>,
        slo: &Option<Url>,
        certificates: &[Vec<u8>],
    ) {
        if let Some(sso) = sso {
            self.sso_url = sso.clone();
        }
        if let Some(slo) = slo {
            self.slo_url = Some(slo.clone());
            self.slo_response_url = Some(slo.clone());
        }
        for der in certificates {
            let cert = CertificateDer::from(der.clone());
            if !self.certificates.contains(&cert) {
                self.certificates.push(cert);
            }
        }
    }
}

/// Why metadata could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    /// Not well-formed XML, or it declares a DTD.
    #[error("not well-formed XML (DTDs are refused)")]
    Xml,
    /// No (matching) IdP.
    #[error("no IDPSSODescriptor{0}")]
    NoIdp(String),
    /// Several IdPs and no `idp_entity_id` to choose.
    #[error("several IdPs ({0}); set idp_entity_id to choose one")]
    Ambiguous(String),
    /// No HTTP-Redirect SingleSignOnService.
    #[error("the IdP has no SingleSignOnService with the HTTP-Redirect binding")]
    NoSso,
    /// No signing certificate: responses could not be verified, so the IdP is refused.
    #[error("the IdP publishes no signing certificate (KeyDescriptor use=\"signing\")")]
    NoCertificate,
    /// A certificate that does not decode.
    #[error("a signing certificate is not valid base64 DER")]
    BadCertificate,
}

/// Reads IdP metadata; `entity_id` picks one IdP out of an aggregate.
pub fn parse(text: &str, entity_id: Option<&str>) -> Result<IdpDescriptor, MetadataError> {
    let doc = xml::parse(text).map_err(|_| MetadataError::Xml)?;
    let idps: Vec<Node<'_, '_>> = doc
        .descendants()
        .filter(|n| xml::is(n, METADATA, "EntityDescriptor"))
        .filter(|n| xml::child(*n, METADATA, "IDPSSODescriptor").is_some())
        .collect();
    let chosen = match entity_id {
        Some(wanted) => idps
            .iter()
            .find(|n| n.attribute("entityID") == Some(wanted))
            .copied()
            .ok_or_else(|| MetadataError::NoIdp(format!(" with entityID {wanted}")))?,
        None => match idps.as_slice() {
            [one] => *one,
            [] => return Err(MetadataError::NoIdp(String::new())),
            many => {
                let ids: Vec<&str> = many
                    .iter()
                    .filter_map(|n| n.attribute("entityID"))
                    .take(5)
                    .collect();
                return Err(MetadataError::Ambiguous(ids.join(", ")));
            }
        },
    };
    let entity = chosen
        .attribute("entityID")
        .filter(|e| !e.is_empty())
        .ok_or_else(|| MetadataError::NoIdp(" with an entityID".into()))?;
    let idp = xml::child(chosen, METADATA, "IDPSSODescriptor")
        .ok_or_else(|| MetadataError::NoIdp(String::new()))?;
    let redirect = |name: &'static str| {
        xml::children(idp, METADATA, name)
            .find(|s| s.attribute("Binding") == Some(REDIRECT_BINDING))
    };
    let sso_url = redirect("SingleSignOnService")
        .and_then(|s| s.attribute("Location"))
        .and_then(|l| Url::parse(l).ok())
        .ok_or(MetadataError::NoSso)?;
    let slo = redirect("SingleLogoutService");
    let slo_url = slo
        .and_then(|s| s.attribute("Location"))
        .and_then(|l| Url::parse(l).ok());
    let slo_response_url = slo
        .and_then(|s| s.attribute("ResponseLocation"))
        .and_then(|l| Url::parse(l).ok())
        .or_else(|| slo_url.clone());
    let certificates = signing_certificates(idp)?;
    if certificates.is_empty() {
        return Err(MetadataError::NoCertificate);
    }
    Ok(IdpDescriptor {
        entity_id: entity.to_string(),
        sso_url,
        slo_url,
        slo_response_url,
        certificates,
    })
}

/// `KeyDescriptor`s for signing, or without a `use` (meaning both).
fn signing_certificates(idp: Node<'_, '_>) -> Result<Vec<CertificateDer>, MetadataError> {
    let mut out = Vec::new();
    for key in xml::children(idp, METADATA, "KeyDescriptor")
        .filter(|k| matches!(k.attribute("use"), None | Some("signing") | Some("")))
    {
        let certs = xml::children(key, DSIG, "KeyInfo")
            .flat_map(|i| xml::children(i, DSIG, "X509Data"))
            .flat_map(|d| xml::children(d, DSIG, "X509Certificate"));
        for cert in certs {
            let compact: String = xml::text(cert).split_ascii_whitespace().collect();
            let der = base64::engine::general_purpose::STANDARD
                .decode(compact)
                .map_err(|_| MetadataError::BadCertificate)?;
            x509_parser::parse_x509_certificate(&der).map_err(|_| MetadataError::BadCertificate)?;
            out.push(CertificateDer::from(der));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_b64() -> String {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["idp.test".into()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        base64::engine::general_purpose::STANDARD.encode(cert.der())
    }

    fn entity(id: &str, key: &str) -> String {
        format!(
            r#"<md:EntityDescriptor entityID="{id}"><md:IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">{key}<md:SingleLogoutService Binding="{REDIRECT_BINDING}" Location="https://idp.test/slo"/><md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" Location="https://idp.test/post"/><md:SingleSignOnService Binding="{REDIRECT_BINDING}" Location="https://idp.test/sso"/></md:IDPSSODescriptor></md:EntityDescriptor>"#
        )
    }

    fn key(usage: &str, cert: &str) -> String {
        format!(
            r#"<md:KeyDescriptor{usage}><ds:KeyInfo><ds:X509Data><ds:X509Certificate>
            {cert}
            </ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>"#
        )
    }

    fn wrap(inner: &str) -> String {
        format!(
            r#"<md:EntitiesDescriptor xmlns:md="{METADATA}" xmlns:ds="{DSIG}">{inner}</md:EntitiesDescriptor>"#
        )
    }

    #[test]
    fn reads_endpoints_and_every_signing_certificate() {
        let text = wrap(&entity(
            "https://idp.test",
            &format!(
                "{}{}{}",
                key(r#" use="signing""#, &cert_b64()),
                key("", &cert_b64()),
                key(r#" use="encryption""#, &cert_b64())
            ),
        ));
        let idp = parse(&text, None).expect("parses");
        assert_eq!(idp.entity_id, "https://idp.test");
        assert_eq!(idp.sso_url.as_str(), "https://idp.test/sso");
        assert_eq!(
            idp.slo_url.as_ref().map(Url::as_str),
            Some("https://idp.test/slo")
        );
        assert_eq!(
            idp.certificates.len(),
            2,
            "signing and unspecified, not encryption"
        );
    }

    #[test]
    fn an_idp_without_signing_certificates_is_refused() {
        let text = wrap(&entity(
            "https://idp.test",
            &key(r#" use="encryption""#, &cert_b64()),
        ));
        assert_eq!(parse(&text, None), Err(MetadataError::NoCertificate));
    }

    #[test]
    fn aggregates_need_an_entity_id() {
        let text = wrap(&format!(
            "{}{}",
            entity("https://a.test", &key("", &cert_b64())),
            entity("https://b.test", &key("", &cert_b64()))
        ));
        assert!(matches!(
            parse(&text, None),
            Err(MetadataError::Ambiguous(_))
        ));
        assert_eq!(
            parse(&text, Some("https://b.test")).map(|i| i.entity_id),
            Ok("https://b.test".to_string())
        );
        assert!(matches!(
            parse(&text, Some("https://c.test")),
            Err(MetadataError::NoIdp(_))
        ));
    }

    #[test]
    fn a_doctype_is_refused() {
        let text = format!(
            "<!DOCTYPE x [<!ENTITY e SYSTEM \"file:///etc/passwd\">]>{}",
            wrap("")
        );
        assert_eq!(parse(&text, None), Err(MetadataError::Xml));
    }
}
