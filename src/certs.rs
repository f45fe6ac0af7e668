//! Listener certificates chosen by SNI (plain rustls; `tls` hands the resolver to Pingora).
//!
//! Several certificates are served by SNI: each certificate answers for the DNS names in its
//! subjectAltName (wildcards included); the first configured certificate answers clients that
//! send no or an unknown name.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use x509_parser::error::X509Error;
use x509_parser::extensions::GeneralName;

use crate::config::CertificatePair;
use crate::pem::{read_certs, read_key};

/// A certificate that cannot be served.
#[derive(Debug, thiserror::Error)]
#[error("certificate {cert}: {reason}")]
pub struct CertificateError {
    cert: String,
    reason: String,
}

/// Picks a certificate by SNI.
pub struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

impl fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SniResolver")
            .field("names", &self.exact.keys().collect::<Vec<_>>())
            .field("wildcards", &self.wildcard.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl SniResolver {
    /// Loads every pair; the first is the default.
    pub fn load(pairs: &[CertificatePair]) -> Result<SniResolver, CertificateError> {
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        let mut default = None;
        for pair in pairs {
            let fail = |reason: String| CertificateError {
                cert: pair.cert.display().to_string(),
                reason,
            };
            let chain = read_certs(&pair.cert).map_err(|e| fail(e.to_string()))?;
            let key_der = read_key(&pair.key).map_err(|e| fail(e.to_string()))?;
            let key = rustls::pki_types::PrivateKeyDer::try_from(key_der)
                .map_err(|e| fail(e.to_string()))?;
            let signing_key = rustls::crypto::ring::sign::any_supported_type(&key)
                .map_err(|e| fail(e.to_string()))?;
            let names = dns_names(&chain[0]).map_err(|e| fail(e.to_string()))?;
            let certified = Arc::new(CertifiedKey::new(
                chain.into_iter().map(Into::into).collect(),
                signing_key,
            ));
            certified
                .keys_match()
                .map_err(|e| fail(format!("key does not match certificate: {e}")))?;
            for name in names {
                match name.strip_prefix("*.") {
                    Some(suffix) => wildcard
                        .entry(suffix.to_string())
                        .or_insert_with(|| certified.clone()),
                    None => exact.entry(name).or_insert_with(|| certified.clone()),
                };
            }
            default.get_or_insert(certified);
        }
        let default = default.ok_or_else(|| CertificateError {
            cert: "(none)".into(),
            reason: "no certificate configured".into(),
        })?;
        Ok(SniResolver {
            exact,
            wildcard,
            default,
        })
    }

    fn pick(&self, server_name: Option<&str>) -> Arc<CertifiedKey> {
        let Some(name) = server_name.map(str::to_ascii_lowercase) else {
            return self.default.clone();
        };
        if let Some(key) = self.exact.get(&name) {
            return key.clone();
        }
        // A wildcard covers exactly one label.
        if let Some((_, parent)) = name.split_once('.') {
            if let Some(key) = self.wildcard.get(parent) {
                return key.clone();
            }
        }
        self.default.clone()
    }
}

/// The listener's certificates, replaced whole by a reload: handshakes from then on use the
/// new ones, established connections keep theirs.
#[derive(Debug)]
pub struct LiveCertificates(arc_swap::ArcSwap<SniResolver>);

impl LiveCertificates {
    /// Serves `resolver` until replaced.
    pub fn new(resolver: Arc<SniResolver>) -> LiveCertificates {
        LiveCertificates(arc_swap::ArcSwap::new(resolver))
    }

    /// Serves `resolver` from the next handshake on.
    pub fn replace(&self, resolver: Arc<SniResolver>) {
        self.0.store(resolver);
    }
}

impl ResolvesServerCert for LiveCertificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load().pick(hello.server_name()))
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.pick(hello.server_name()))
    }
}

fn dns_names(der: &[u8]) -> Result<Vec<String>, x509_parser::nom::Err<X509Error>> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(dns) = name {
                names.push(dns.to_ascii_lowercase());
            }
        }
    }
    Ok(names)
}
