//! Compiling `kind: saml` providers: where the IdP is described (metadata URL, metadata
//! file, or inline entity id + SSO URL + certificates), the SP's own identity and keys, and
//! the checks' tolerances. A metadata file and the SP key files are read now; their contents
//! are parsed when the provider is built (`runtime`), which names the key of a bad one.

use std::time::Duration;

use super::Compiler;
use crate::config::raw::RawIdentityProvider;
use crate::config::{IdentityProviderKind, SamlSettings, SpKeyPair};
use url::Url;

/// Authentication contexts that mean a second factor, when none are configured.
pub const DEFAULT_MFA_CONTEXTS: [&str; 6] = [
    "urn:oasis:names:tc:SAML:2.0:ac:classes:MobileTwoFactorContract",
    "urn:oasis:names:tc:SAML:2.0:ac:classes:MobileTwoFactorUnregistered",
    "urn:oasis:names:tc:SAML:2.0:ac:classes:TimeSyncToken",
    "urn:oasis:names:tc:SAML:2.0:ac:classes:SmartcardPKI",
    "http://schemas.microsoft.com/claims/multipleauthn",
    "urn:okta:saml:2.0:ac:classes:mfa",
];

impl Compiler<'_> {
    pub(super) fn saml(
        &mut self,
        base: &str,
        idp: &RawIdentityProvider,
        public_url: &Url,
        reserved_prefix: &str,
    ) -> Option<IdentityProviderKind> {
        let url_key = |this: &mut Self, key: &str, value: Option<&String>| -> Option<Url> {
            let text = value?;
            match Url::parse(text) {
                Ok(u) if matches!(u.scheme(), "https" | "http") => Some(u),
                _ => {
                    this.issues.add(
                        &format!("{base}.{key}"),
                        format!("`{text}` is not an http(s) URL"),
                        "copy it from the IdP's SAML set-up page",
                    );
                    None
                }
            }
        };
        let idp_sso_url = url_key(self, "idp_sso_url", idp.idp_sso_url.as_ref());
        let idp_slo_url = url_key(self, "idp_slo_url", idp.idp_slo_url.as_ref());
        let idp_certificates = self.saml_certificates(base, idp.idp_certificates.as_deref());

        let mut metadata_url = None;
        let mut idp_metadata_xml = None;
        match idp.idp_metadata.as_deref() {
            Some(text) if text.starts_with("https://") || text.starts_with("http://") => {
                metadata_url = url_key(self, "idp_metadata", Some(&text.to_string()));
            }
            Some(text) => {
                let path = self.file_path(&format!("{base}.idp_metadata"), text, true);
                idp_metadata_xml = std::fs::read_to_string(&path).ok();
            }
            None => {
                // Inline: entity id, SSO URL and at least one certificate.
                self.required(
                    &format!("{base}.idp_entity_id"),
                    idp.idp_entity_id.as_ref(),
                    "the IdP's entity id (Issuer), or give idp_metadata instead",
                );
                self.required(
                    &format!("{base}.idp_sso_url"),
                    idp.idp_sso_url.as_ref(),
                    "the IdP's SSO URL (HTTP-Redirect binding), or give idp_metadata instead",
                );
                if idp_certificates.is_empty() {
                    self.issues.add(
                        &format!("{base}.idp_certificates"),
                        "is required without idp_metadata: responses could not be verified",
                        "the IdP's signing certificate(s), PEM files or PEM text",
                    );
                }
            }
        }

        let sp_entity_id = idp.sp_entity_id.clone().unwrap_or_else(|| {
            format!(
                "{}{reserved_prefix}saml/metadata",
                public_url.origin().ascii_serialization()
            )
        });
        let sp_keys = self.sp_keys(base, idp);
        let clock_skew = self.duration(
            &format!("{base}.clock_skew"),
            idp.clock_skew.as_ref(),
            Duration::from_secs(120),
        );
        if clock_skew > Duration::from_secs(600) {
            self.issues.add(
                &format!("{base}.clock_skew"),
                "is longer than 10m",
                "fix the clocks (NTP) instead; 2m is the default",
            );
        }
        let max_response_age = self.duration(
            &format!("{base}.max_response_age"),
            idp.max_response_age.as_ref(),
            Duration::from_secs(300),
        );
        let metadata_refresh = self.duration(
            &format!("{base}.metadata_refresh"),
            idp.metadata_refresh.as_ref(),
            Duration::from_secs(3600),
        );
        if metadata_refresh < Duration::from_secs(60) {
            self.issues.add(
                &format!("{base}.metadata_refresh"),
                "is shorter than 1m",
                "metadata changes rarely; 1h is the default",
            );
        }
        if idp.insecure_allow_sha1 == Some(true) {
            self.warnings.push(format!(
                "{base}.insecure_allow_sha1: SHA-1 signatures are accepted from this IdP; SHA-1 collisions are practical"
            ));
        }
        Some(IdentityProviderKind::Saml(Box::new(SamlSettings {
            metadata_url,
            idp_metadata_xml,
            idp_entity_id: idp.idp_entity_id.clone(),
            idp_sso_url,
            idp_slo_url,
            idp_certificates,
            sp_entity_id,
            sp_keys,
            name_id_format: idp.name_id_format.clone(),
            allow_unsolicited: idp.allow_unsolicited.unwrap_or(false),
            clock_skew,
            max_response_age,
            mfa_authn_contexts: idp
                .mfa_authn_contexts
                .clone()
                .unwrap_or_else(|| DEFAULT_MFA_CONTEXTS.iter().map(|s| s.to_string()).collect()),
            insecure_allow_sha1: idp.insecure_allow_sha1.unwrap_or(false),
            metadata_refresh,
        })))
    }

    /// PEM certificates, from files or inline PEM text, as DER.
    fn saml_certificates(&mut self, base: &str, list: Option<&[String]>) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for (i, item) in list.unwrap_or_default().iter().enumerate() {
            let at = format!("{base}.idp_certificates[{i}]");
            let pem = if item.contains("-----BEGIN") {
                item.clone()
            } else {
                let path = self.file_path(&at, item, true);
                match std::fs::read_to_string(&path) {
                    Ok(text) => text,
                    Err(_) => continue,
                }
            };
            let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_bytes())
                .filter_map(Result::ok)
                .filter(|c| x509_parser::parse_x509_certificate(c).is_ok())
                .collect();
            if certs.is_empty() {
                self.issues.add(
                    &at,
                    "holds no PEM certificate",
                    "paste the IdP's signing certificate (-----BEGIN CERTIFICATE-----…) or give its file",
                );
            }
            out.extend(certs.into_iter().map(|c| c.to_vec()));
        }
        out
    }

    /// The SP key pair: it signs requests, and (when RSA) decrypts encrypted assertions.
    fn sp_keys(&mut self, base: &str, idp: &RawIdentityProvider) -> Option<SpKeyPair> {
        match (&idp.sp_signing_key, &idp.sp_certificate) {
            (None, None) => None,
            (Some(_), None) | (None, Some(_)) => {
                self.issues.add(
                    &format!("{base}.sp_signing_key"),
                    "sp_signing_key and sp_certificate go together",
                    "make both with `openssl req -x509 -newkey rsa:3072 -nodes -keyout sp.key -out sp.crt -days 1095 -subj /CN=portcullis`",
                );
                None
            }
            (Some(key_spec), Some(cert_path)) => {
                let key = self.secret(&format!("{base}.sp_signing_key"), key_spec)?;
                let path = self.file_path(&format!("{base}.sp_certificate"), cert_path, true);
                let certificate = std::fs::read(&path).ok()?;
                Some(SpKeyPair { key, certificate })
            }
        }
    }
}
