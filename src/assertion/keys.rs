//! The signing keys: PKCS#8 loading (PEM or one line of base64 DER) with an error that names
//! what is wrong with a key, key generation for `portcullis keys generate` and for a process
//! without configured keys, and the published JWKS with RFC 7638 thumbprint key ids.
//!
//! Keys are parsed once, into ring's types, so signing never re-parses PKCS#8.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use bytes::Bytes;
use ring::rand::SystemRandom;
use ring::signature::{
    EcdsaKeyPair, Ed25519KeyPair, KeyPair, Signature, ECDSA_P256_SHA256_FIXED_SIGNING,
};

use super::{AssertionError, SigningKeyError};
use crate::config::AssertionAlgorithm;

/// One private key, parsed once.
pub(super) enum SigningKey {
    Es256(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

impl SigningKey {
    /// Parses PKCS#8 DER for `algorithm`, naming the key type when it is the other one.
    pub(super) fn from_pkcs8(
        algorithm: AssertionAlgorithm,
        der: &[u8],
    ) -> Result<Self, SigningKeyError> {
        let rng = SystemRandom::new();
        let es256 = || EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng);
        // `maybe_unchecked` accepts PKCS#8 v1 (OpenSSL) and v2 (ring); a public key that is
        // present is still checked against the private key.
        let ed25519 = || Ed25519KeyPair::from_pkcs8_maybe_unchecked(der);
        match algorithm {
            AssertionAlgorithm::Es256 => match es256() {
                Ok(key) => Ok(SigningKey::Es256(key)),
                Err(_) if ed25519().is_ok() => Err(wrong_type(algorithm)),
                Err(_) => Err(SigningKeyError::Unusable { expected: "P-256" }),
            },
            AssertionAlgorithm::EdDsa => match ed25519() {
                Ok(key) => Ok(SigningKey::Ed25519(key)),
                Err(_) if es256().is_ok() => Err(wrong_type(algorithm)),
                Err(_) => Err(SigningKeyError::Unusable {
                    expected: "Ed25519",
                }),
            },
        }
    }

    pub(super) fn sign(
        &self,
        rng: &SystemRandom,
        message: &[u8],
    ) -> Result<Signature, AssertionError> {
        match self {
            // FIXED = the JWS form (RFC 7518 §3.4): r || s, 32 bytes each, not ASN.1.
            SigningKey::Es256(key) => key.sign(rng, message).map_err(|_| AssertionError::Signing),
            SigningKey::Ed25519(key) => Ok(key.sign(message)),
        }
    }

    /// The public JWK members and the RFC 7638 thumbprint input (required members, sorted).
    fn public_members(&self) -> Result<(serde_json::Value, String), AssertionError> {
        match self {
            SigningKey::Es256(key) => {
                // ring gives the uncompressed point: 0x04 || x || y.
                let point = key.public_key().as_ref();
                let (Some(x), Some(y)) = (point.get(1..33), point.get(33..65)) else {
                    return Err(AssertionError::Signing);
                };
                let (x, y) = (URL_SAFE_NO_PAD.encode(x), URL_SAFE_NO_PAD.encode(y));
                let thumbprint = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
                let members = serde_json::json!({ "kty": "EC", "crv": "P-256", "x": x, "y": y });
                Ok((members, thumbprint))
            }
            SigningKey::Ed25519(key) => {
                let x = URL_SAFE_NO_PAD.encode(key.public_key().as_ref());
                // RFC 8037 §2 for the OKP member set.
                let thumbprint = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
                let members = serde_json::json!({ "kty": "OKP", "crv": "Ed25519", "x": x });
                Ok((members, thumbprint))
            }
        }
    }
}

fn wrong_type(algorithm: AssertionAlgorithm) -> SigningKeyError {
    let (found, expected) = match algorithm {
        AssertionAlgorithm::Es256 => ("an Ed25519", "P-256"),
        AssertionAlgorithm::EdDsa => ("a P-256", "Ed25519"),
    };
    SigningKeyError::WrongType {
        found,
        algorithm: algorithm_name(algorithm),
        expected,
    }
}

/// The JWS `alg` name of `algorithm`.
pub fn algorithm_name(algorithm: AssertionAlgorithm) -> &'static str {
    match algorithm {
        AssertionAlgorithm::Es256 => "ES256",
        AssertionAlgorithm::EdDsa => "EdDSA",
    }
}

/// A new PKCS#8 private key for `algorithm`, as PEM (for `portcullis keys generate`).
pub fn generate_pem(algorithm: AssertionAlgorithm) -> Result<String, AssertionError> {
    let der = generate_pkcs8(algorithm)?;
    let body = STANDARD.encode(der);
    let mut pem = String::with_capacity(body.len() + body.len() / 64 + 60);
    pem.push_str("-----BEGIN PRIVATE KEY-----\n");
    for line in body.as_bytes().chunks(64) {
        // Base64 output is ASCII, so every chunk is valid UTF-8.
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    Ok(pem)
}

pub(super) fn generate_pkcs8(algorithm: AssertionAlgorithm) -> Result<Vec<u8>, AssertionError> {
    let rng = SystemRandom::new();
    let document = match algorithm {
        AssertionAlgorithm::Es256 => {
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        }
        AssertionAlgorithm::EdDsa => Ed25519KeyPair::generate_pkcs8(&rng),
    };
    document
        .map(|doc| doc.as_ref().to_vec())
        .map_err(|_| AssertionError::Generation)
}

/// The PKCS#8 DER in a secret: a PEM `PRIVATE KEY` block, or (handy in environment
/// variables, like `audit.signing_key`) the DER as one line of base64.
pub(super) fn pkcs8_der(text: &str) -> Result<Vec<u8>, SigningKeyError> {
    if !text.contains("-----BEGIN") {
        let compact: String = text.split_whitespace().collect();
        return STANDARD
            .decode(compact)
            .map_err(|_| SigningKeyError::NotAKey);
    }
    let mut rest = text.as_bytes();
    loop {
        match rustls_pemfile::read_one_from_slice(rest) {
            Ok(Some((rustls_pemfile::Item::Pkcs8Key(key), _))) => {
                return Ok(key.secret_pkcs8_der().to_vec())
            }
            Ok(Some((rustls_pemfile::Item::Sec1Key(_), _))) => return Err(SigningKeyError::Sec1),
            Ok(Some((rustls_pemfile::Item::Pkcs1Key(_), _))) => return Err(SigningKeyError::Rsa),
            Ok(Some((_, tail))) => rest = tail,
            Ok(None) | Err(_) => return Err(SigningKeyError::NotAKey),
        }
    }
}

/// The serialised JWKS and the kid of each key, in order; refuses a key listed twice.
pub(super) fn build_jwks(
    keys: &[SigningKey],
    algorithm: AssertionAlgorithm,
) -> Result<(Bytes, Vec<String>), AssertionError> {
    let mut jwks = Vec::with_capacity(keys.len());
    let mut kids: Vec<String> = Vec::with_capacity(keys.len());
    for (index, key) in keys.iter().enumerate() {
        let (mut members, thumbprint) = key.public_members()?;
        let digest = ring::digest::digest(&ring::digest::SHA256, thumbprint.as_bytes());
        let kid = crate::audit::hex(digest.as_ref().get(..8).unwrap_or_default());
        if let Some(first) = kids.iter().position(|k| *k == kid) {
            let problem = SigningKeyError::Duplicate(first);
            return Err(AssertionError::SigningKey { index, problem });
        }
        if let Some(object) = members.as_object_mut() {
            object.insert("kid".into(), kid.clone().into());
            object.insert("use".into(), "sig".into());
            object.insert("alg".into(), algorithm_name(algorithm).into());
        }
        jwks.push(members);
        kids.push(kid);
    }
    let document = serde_json::to_vec(&serde_json::json!({ "keys": jwks }))?;
    Ok((Bytes::from(document), kids))
}
