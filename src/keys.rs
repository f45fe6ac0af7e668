//! `portcullis keys`: session keys, audit signing keys, and a development CA + certificate.

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

use crate::audit::CheckpointSigner;

/// A key or certificate could not be made or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyGenerationError {
    /// Certificate generation.
    #[error("certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    /// Writing a file.
    #[error("{path}: {source}")]
    Write {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Key generation.
    #[error("key generation failed")]
    Generation,
}

/// A new random 32-byte session key, base64.
pub fn session_key() -> String {
    let key: [u8; 32] = rand::random();
    base64::engine::general_purpose::STANDARD.encode(key)
}

/// A new Ed25519 audit key: (private PKCS#8 base64, public base64).
pub fn audit_key() -> Result<(String, String), KeyGenerationError> {
    let (signer, private) =
        CheckpointSigner::generate().map_err(|_| KeyGenerationError::Generation)?;
    Ok((private, signer.public_key_base64().to_string()))
}

/// What `keys generate` prints.
pub fn generate_report() -> Result<String, KeyGenerationError> {
    let (audit_private, audit_public) = audit_key()?;
    Ok(format!(
        "# Session encryption key (session.encryption_keys: [env:PORTCULLIS_SESSION_KEY])\n\
         PORTCULLIS_SESSION_KEY={}\n\
         # Audit checkpoint signing key (audit.signing_key: env:PORTCULLIS_AUDIT_KEY)\n\
         PORTCULLIS_AUDIT_KEY={audit_private}\n\
         # Audit public key, for `portcullis audit verify --key`\n\
         PORTCULLIS_AUDIT_PUBLIC_KEY={audit_public}\n",
        session_key()
    ))
}

/// Paths written by [`dev_certificate`].
pub struct DevCertificate {
    /// CA certificate (trust this in a browser or with `curl --cacert`).
    pub ca_cert: PathBuf,
    /// Server certificate chain.
    pub cert: PathBuf,
    /// Server private key.
    pub key: PathBuf,
}

/// Makes a development CA and a server certificate for `names` (DNS names or IPs) in `dir`.
/// Private keys are written with mode 0600. Existing files are kept.
pub fn dev_certificate(dir: &Path, names: &[String]) -> Result<DevCertificate, KeyGenerationError> {
    let paths = DevCertificate {
        ca_cert: dir.join("ca.crt"),
        cert: dir.join("server.crt"),
        key: dir.join("server.key"),
    };
    if paths.ca_cert.is_file() && paths.cert.is_file() && paths.key.is_file() {
        return Ok(paths);
    }
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Portcullis development CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca_params.self_signed(&ca_key)?;

    let mut params = CertificateParams::new(names.to_vec())?;
    params.distinguished_name.push(
        DnType::CommonName,
        names.first().map_or("localhost", String::as_str),
    );
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca_cert, &ca_key)?;

    write_file(dir, &paths.ca_cert, ca_cert.pem().as_bytes(), false)?;
    write_file(dir, &paths.cert, cert.pem().as_bytes(), false)?;
    write_file(dir, &paths.key, key.serialize_pem().as_bytes(), true)?;
    // The CA key is not kept: a dev CA that cannot sign anything else is a safer CA.
    Ok(paths)
}

/// Writes a file, creating `dir`; secrets get mode 0600.
pub fn write_file(
    dir: &Path,
    path: &Path,
    contents: &[u8],
    secret: bool,
) -> Result<(), KeyGenerationError> {
    let fail = |source| KeyGenerationError::Write {
        path: path.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(fail)?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(fail)?;
    file.write_all(contents).map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_keys_are_32_random_bytes() {
        let a = session_key();
        let b = session_key();
        assert_ne!(a, b);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&a)
            .expect("base64");
        assert_eq!(bytes.len(), 32);
    }

    #[test]
    fn dev_certificate_is_loadable_by_the_listener() {
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = dev_certificate(dir.path(), &["localhost".into(), "127.0.0.1".into()])
            .expect("dev cert");
        let pair = crate::config::CertificatePair {
            cert: paths.cert,
            key: paths.key,
        };
        crate::certs::SniResolver::load(&[pair]).expect("listener accepts the dev certificate");
    }
}
