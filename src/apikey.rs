//! API keys for service accounts (machine clients): `pck_<43 base62 characters>_<6 base62
//! characters>`, that is 256 random bits, then a CRC-32 of them.
//!
//! The recognisable prefix and the checksum let secret scanners find a leaked key (and tell a
//! real one from a look-alike) without asking anyone; the checksum also turns a mistyped key
//! into a clear error before any lookup. Only the key's hash is ever stored (the config's
//! `key_hashes`): keys are high-entropy, so a fast keyed hash (HMAC-SHA-256 under a fixed,
//! versioned label) is right where a password would need Argon2; every request pays it.

use std::fmt;

/// What every key starts with.
pub const PREFIX: &str = "pck_";
/// What every key hash starts with (the hash's version).
pub const HASH_PREFIX: &str = "pck-v1:";

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// 256 bits in base 62.
const SECRET_LEN: usize = 43;
/// 32 bits in base 62.
const CHECK_LEN: usize = 6;

/// Why a text is not an API key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ApiKeyError {
    /// Not `pck_…_…` with the right lengths and characters.
    #[error("not a Portcullis API key (pck_ followed by 43 and 6 letters or digits)")]
    Malformed,
    /// The checksum does not match: mistyped, truncated or made up.
    #[error("the API key's checksum does not match (mistyped or truncated)")]
    Checksum,
}

/// A new key, shown once, and the hash to configure.
pub struct NewKey {
    /// `pck_…`: give it to the client; it is not kept anywhere.
    pub key: String,
    /// For `service_accounts[].key_hashes`.
    pub hash: String,
}

impl fmt::Debug for NewKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewKey")
            .field("key", &"<redacted>")
            .field("hash", &self.hash)
            .finish()
    }
}

/// A fresh key from the system's random source.
pub fn generate() -> NewKey {
    let secret: [u8; 32] = rand::random();
    let body = base62(&secret, SECRET_LEN);
    let check = base62(&crc32fast::hash(body.as_bytes()).to_be_bytes(), CHECK_LEN);
    let key = format!("{PREFIX}{body}_{check}");
    let hash = hash(&key);
    NewKey { key, hash }
}

/// Checks the shape and checksum of `text`.
pub fn parse(text: &str) -> Result<(), ApiKeyError> {
    let rest = text.strip_prefix(PREFIX).ok_or(ApiKeyError::Malformed)?;
    let (body, check) = rest.split_once('_').ok_or(ApiKeyError::Malformed)?;
    let base62_of_len =
        |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_alphanumeric());
    if !base62_of_len(body, SECRET_LEN) || !base62_of_len(check, CHECK_LEN) {
        return Err(ApiKeyError::Malformed);
    }
    if decode_base62(check) == Some(crc32fast::hash(body.as_bytes())) {
        Ok(())
    } else {
        Err(ApiKeyError::Checksum)
    }
}

/// The hash of `key` as configured: `pck-v1:` and the base64url HMAC-SHA-256 of the key under
/// the label `portcullis api-key v1`.
pub fn hash(key: &str) -> String {
    use base64::Engine;
    format!(
        "{HASH_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest(key))
    )
}

/// The digest of `key` (what [`hash`] shows after its prefix).
pub fn digest(key: &str) -> [u8; 32] {
    // The HMAC key schedule is computed once, not per request.
    static LABEL: std::sync::OnceLock<ring::hmac::Key> = std::sync::OnceLock::new();
    let label = LABEL
        .get_or_init(|| ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"portcullis api-key v1"));
    let tag = ring::hmac::sign(label, key.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

/// The digest in a configured hash (`pck-v1:…`); `None` for anything else (a key pasted by
/// mistake, a truncated hash).
pub fn decode_hash(text: &str) -> Option<[u8; 32]> {
    use base64::Engine;
    let encoded = text.trim().strip_prefix(HASH_PREFIX)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(encoded)
        .ok()?;
    bytes.try_into().ok()
}

/// A base-62 number that fits 32 bits (a checksum), without allocating.
fn decode_base62(digits: &str) -> Option<u32> {
    digits.bytes().try_fold(0u32, |acc, b| {
        let value = ALPHABET.iter().position(|a| *a == b)?;
        acc.checked_mul(62)?.checked_add(u32::try_from(value).ok()?)
    })
}

/// `bytes` as a big-endian number in base 62, left-padded with `0` to `len` digits.
fn base62(bytes: &[u8], len: usize) -> String {
    let mut number = bytes.to_vec();
    let mut digits = Vec::with_capacity(len);
    while number.iter().any(|b| *b != 0) {
        let mut remainder = 0u32;
        for byte in &mut number {
            let value = (remainder << 8) | u32::from(*byte);
            *byte = u8::try_from(value / 62).unwrap_or(0);
            remainder = value % 62;
        }
        digits.push(ALPHABET[remainder as usize]);
    }
    while digits.len() < len {
        digits.push(b'0');
    }
    digits.reverse();
    String::from_utf8(digits).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_long_checksummed_and_hashed_the_same_way_every_time() {
        let new = generate();
        assert!(
            new.key.starts_with(PREFIX) && new.key.len() == 4 + 43 + 1 + 6,
            "{}",
            new.key
        );
        assert_eq!(parse(&new.key), Ok(()));
        assert_eq!(
            hash(&new.key),
            new.hash,
            "the hash is a function of the key"
        );
        assert!(new.hash.starts_with(HASH_PREFIX));
        assert_eq!(decode_hash(&new.hash), Some(digest(&new.key)));
        assert_eq!(decode_hash(&new.key), None, "a key is not a hash");
        assert_eq!(decode_hash(&new.hash[..new.hash.len() - 2]), None);
        let other = generate();
        assert_ne!(other.key, new.key);
        assert_ne!(other.hash, new.hash);
        assert!(
            !format!("{new:?}").contains(&new.key),
            "never in debug output"
        );
    }

    #[test]
    fn a_typo_a_truncation_or_a_look_alike_is_refused() {
        let key = generate().key;
        let mut typo = key.clone().into_bytes();
        typo[10] = if typo[10] == b'a' { b'b' } else { b'a' };
        assert_eq!(
            parse(&String::from_utf8(typo).expect("ascii")),
            Err(ApiKeyError::Checksum)
        );
        assert_eq!(parse(&key[..key.len() - 1]), Err(ApiKeyError::Malformed));
        assert_eq!(
            parse(&key.replacen("pck_", "pk_", 1)),
            Err(ApiKeyError::Malformed)
        );
        assert_eq!(parse(&key.replace('_', "-")), Err(ApiKeyError::Malformed));
        assert_eq!(parse(""), Err(ApiKeyError::Malformed));
    }

    #[test]
    fn base62_is_a_number_in_base_62() {
        assert_eq!(base62(&[0, 0], 3), "000");
        assert_eq!(base62(&[0, 61], 1), "z");
        assert_eq!(base62(&[0, 62], 2), "10");
        assert_eq!(base62(&[0xff, 0xff, 0xff, 0xff], 6), "4gfFC3");
    }
}
