//! PEM files: certificate chains and private keys, checked when loaded.

use std::path::Path;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A PEM file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("cannot use {path}: {reason}")]
pub struct PemError {
    path: String,
    reason: String,
}

fn unreadable(path: &Path, reason: impl ToString) -> PemError {
    PemError {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// PEM certificates as DER, each checked to parse as X.509 (Pingora panics on bad DER later).
pub fn read_certs(path: &Path) -> Result<Vec<Vec<u8>>, PemError> {
    let pem = std::fs::read(path).map_err(|e| unreadable(path, e))?;
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| unreadable(path, e))?;
    if certs.is_empty() {
        return Err(unreadable(path, "no PEM certificate found"));
    }
    for cert in &certs {
        x509_parser::parse_x509_certificate(cert.as_ref()).map_err(|e| unreadable(path, e))?;
    }
    Ok(certs.into_iter().map(|c| c.to_vec()).collect())
}

/// A PEM private key (PKCS#8, PKCS#1 or SEC1) as DER.
pub fn read_key(path: &Path) -> Result<Vec<u8>, PemError> {
    let pem = std::fs::read(path).map_err(|e| unreadable(path, e))?;
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| unreadable(path, e))?
        .ok_or_else(|| unreadable(path, "no PEM private key found"))?;
    Ok(key.secret_der().to_vec())
}
