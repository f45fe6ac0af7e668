//! Ed25519 key that signs audit checkpoints (ring; keys are PKCS#8 DER in base64).

use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};

/// Signs checkpoints.
pub struct CheckpointSigner {
    pair: Ed25519KeyPair,
    public_b64: String,
}

/// A key that is not a valid Ed25519 PKCS#8 document.
#[derive(Debug, thiserror::Error)]
#[error("not a base64 Ed25519 PKCS#8 private key")]
pub struct CheckpointKeyError;

impl CheckpointSigner {
    /// Loads a base64 PKCS#8 key (as printed by `portcullis keys generate`).
    pub fn from_base64(text: &str) -> Result<Self, CheckpointKeyError> {
        let der = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| CheckpointKeyError)?;
        Self::from_pkcs8(&der)
    }

    fn from_pkcs8(der: &[u8]) -> Result<Self, CheckpointKeyError> {
        let pair =
            Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).map_err(|_| CheckpointKeyError)?;
        let public_b64 =
            base64::engine::general_purpose::STANDARD.encode(pair.public_key().as_ref());
        Ok(CheckpointSigner { pair, public_b64 })
    }

    /// A fresh key, returned with its base64 PKCS#8 encoding.
    pub fn generate() -> Result<(Self, String), CheckpointKeyError> {
        let der =
            Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| CheckpointKeyError)?;
        let signer = Self::from_pkcs8(der.as_ref())?;
        Ok((
            signer,
            base64::engine::general_purpose::STANDARD.encode(der.as_ref()),
        ))
    }

    /// Base64 of the raw 32-byte public key (what `audit verify --key` takes).
    pub fn public_key_base64(&self) -> &str {
        &self.public_b64
    }

    /// Base64 signature over `message`.
    pub fn sign(&self, message: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.pair.sign(message).as_ref())
    }
}
