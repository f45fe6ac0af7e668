//! Encrypted assertions (XML Encryption): the content key is unwrapped with the SP's RSA key
//! (RSA-OAEP only; PKCS#1 v1.5 key transport is refused — it is the Bleichenbacher oracle),
//! the assertion decrypted with AES-CBC or AES-GCM through OpenSSL, then put back where the
//! `EncryptedAssertion` was, so that the usual checks — the IdP's signature first — run on it.

use base64::Engine;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::pkey_ctx::PkeyCtx;
use openssl::rsa::Padding;
use openssl::symm::{Cipher, Crypter, Mode};
use roxmltree::Node;

use super::response::SamlError;
use super::xml::{self, DSIG};

const XENC: &str = "http://www.w3.org/2001/04/xmlenc#";
const XENC11: &str = "http://www.w3.org/2009/xmlenc11#";

/// The SP's private key for encrypted assertions (RSA).
pub struct SpDecrypter {
    key: PKey<Private>,
}

impl std::fmt::Debug for SpDecrypter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpDecrypter").finish_non_exhaustive()
    }
}

impl SpDecrypter {
    /// From a PEM private key; `None` unless it is RSA (XML Encryption key transport).
    pub fn from_pem(pem: &[u8]) -> Option<SpDecrypter> {
        let key = PKey::private_key_from_pem(pem).ok()?;
        key.rsa().ok()?;
        Some(SpDecrypter { key })
    }

    /// `document` with its one `EncryptedAssertion` (the `encrypted` element) replaced by the
    /// decrypted assertion.
    pub fn splice(&self, document: &str, encrypted: Node<'_, '_>) -> Result<String, SamlError> {
        let plaintext = self.decrypt(encrypted)?;
        let plain = String::from_utf8(plaintext).map_err(|_| SamlError::DecryptionFailed)?;
        let range = encrypted.range();
        let mut out = String::with_capacity(document.len() + plain.len());
        out.push_str(&document[..range.start]);
        out.push_str(plain.trim());
        out.push_str(&document[range.end..]);
        Ok(out)
    }

    fn decrypt(&self, encrypted: Node<'_, '_>) -> Result<Vec<u8>, SamlError> {
        let data = xml::child(encrypted, XENC, "EncryptedData").ok_or(SamlError::Malformed)?;
        // The wrapped key: in the data's KeyInfo, or beside the data (RetrievalMethod).
        let wrapped = encrypted
            .descendants()
            .find(|n| xml::is(n, XENC, "EncryptedKey"))
            .ok_or(SamlError::Malformed)?;
        let content_key = self.unwrap_key(wrapped)?;
        let method = algorithm(data).ok_or(SamlError::Malformed)?;
        let cipher_text = cipher_value(data)?;
        let (cipher, gcm) = match method {
            m if m == format!("{XENC}aes128-cbc") => (Cipher::aes_128_cbc(), false),
            m if m == format!("{XENC}aes192-cbc") => (Cipher::aes_192_cbc(), false),
            m if m == format!("{XENC}aes256-cbc") => (Cipher::aes_256_cbc(), false),
            m if m == format!("{XENC11}aes128-gcm") => (Cipher::aes_128_gcm(), true),
            m if m == format!("{XENC11}aes192-gcm") => (Cipher::aes_192_gcm(), true),
            m if m == format!("{XENC11}aes256-gcm") => (Cipher::aes_256_gcm(), true),
            _ => return Err(SamlError::WeakAlgorithm),
        };
        if content_key.len() != cipher.key_len() {
            return Err(SamlError::DecryptionFailed);
        }
        if gcm {
            decrypt_gcm(cipher, &content_key, &cipher_text)
        } else {
            decrypt_cbc(cipher, &content_key, &cipher_text)
        }
    }

    fn unwrap_key(&self, wrapped: Node<'_, '_>) -> Result<Vec<u8>, SamlError> {
        let method = xml::child(wrapped, XENC, "EncryptionMethod").ok_or(SamlError::Malformed)?;
        let name = method.attribute("Algorithm").unwrap_or_default();
        let digest_of =
            |node: Option<Node<'_, '_>>, default: MessageDigest| match algorithm_of(node) {
                None => Ok(default),
                Some("http://www.w3.org/2000/09/xmldsig#sha1") => Ok(MessageDigest::sha1()),
                Some("http://www.w3.org/2001/04/xmlenc#sha256") => Ok(MessageDigest::sha256()),
                Some("http://www.w3.org/2001/04/xmlenc#sha512") => Ok(MessageDigest::sha512()),
                Some(_) => Err(SamlError::WeakAlgorithm),
            };
        let oaep_digest = digest_of(
            xml::child(method, DSIG, "DigestMethod"),
            MessageDigest::sha1(),
        )?;
        let mgf_digest = if name == format!("{XENC}rsa-oaep-mgf1p") {
            MessageDigest::sha1()
        } else if name == format!("{XENC11}rsa-oaep") {
            match xml::child(method, XENC11, "MGF").and_then(|m| m.attribute("Algorithm")) {
                None | Some("http://www.w3.org/2009/xmlenc11#mgf1sha1") => MessageDigest::sha1(),
                Some("http://www.w3.org/2009/xmlenc11#mgf1sha256") => MessageDigest::sha256(),
                Some("http://www.w3.org/2009/xmlenc11#mgf1sha512") => MessageDigest::sha512(),
                Some(_) => return Err(SamlError::WeakAlgorithm),
            }
        } else {
            // Including rsa-1_5.
            return Err(SamlError::WeakAlgorithm);
        };
        let wrapped_key = cipher_value(wrapped)?;
        let failed = |_| SamlError::DecryptionFailed;
        let mut ctx = PkeyCtx::new(&self.key).map_err(failed)?;
        ctx.decrypt_init().map_err(failed)?;
        ctx.set_rsa_padding(Padding::PKCS1_OAEP).map_err(failed)?;
        ctx.set_rsa_oaep_md(md_ref(oaep_digest)).map_err(failed)?;
        ctx.set_rsa_mgf1_md(md_ref(mgf_digest)).map_err(failed)?;
        let mut out = Vec::new();
        ctx.decrypt_to_vec(&wrapped_key, &mut out).map_err(failed)?;
        Ok(out)
    }
}

fn md_ref(digest: MessageDigest) -> &'static openssl::md::MdRef {
    if digest == MessageDigest::sha256() {
        openssl::md::Md::sha256()
    } else if digest == MessageDigest::sha512() {
        openssl::md::Md::sha512()
    } else {
        openssl::md::Md::sha1()
    }
}

fn algorithm<'a>(node: Node<'a, '_>) -> Option<&'a str> {
    xml::child(node, XENC, "EncryptionMethod").and_then(|m| m.attribute("Algorithm"))
}

fn algorithm_of<'a>(node: Option<Node<'a, '_>>) -> Option<&'a str> {
    node.and_then(|n| n.attribute("Algorithm"))
}

fn cipher_value(node: Node<'_, '_>) -> Result<Vec<u8>, SamlError> {
    let value = xml::child(node, XENC, "CipherData")
        .and_then(|d| xml::child(d, XENC, "CipherValue"))
        .ok_or(SamlError::Malformed)?;
    let compact: String = xml::text(value).split_ascii_whitespace().collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact)
        .map_err(|_| SamlError::Malformed)
}

/// AES-CBC, IV first; XML Encryption padding (the last byte counts the padding bytes).
fn decrypt_cbc(cipher: Cipher, key: &[u8], data: &[u8]) -> Result<Vec<u8>, SamlError> {
    let block = cipher.block_size();
    if data.len() < 2 * block || !data.len().is_multiple_of(block) {
        return Err(SamlError::DecryptionFailed);
    }
    let (iv, body) = data.split_at(block);
    let failed = |_| SamlError::DecryptionFailed;
    let mut crypter = Crypter::new(cipher, Mode::Decrypt, key, Some(iv)).map_err(failed)?;
    crypter.pad(false);
    let mut out = vec![0; body.len() + block];
    let mut n = crypter.update(body, &mut out).map_err(failed)?;
    n += crypter.finalize(&mut out[n..]).map_err(failed)?;
    out.truncate(n);
    let pad = usize::from(*out.last().ok_or(SamlError::DecryptionFailed)?);
    if pad == 0 || pad > block || pad > out.len() {
        return Err(SamlError::DecryptionFailed);
    }
    out.truncate(out.len() - pad);
    Ok(out)
}

/// AES-GCM: 96-bit IV first, 128-bit tag last.
fn decrypt_gcm(cipher: Cipher, key: &[u8], data: &[u8]) -> Result<Vec<u8>, SamlError> {
    const IV: usize = 12;
    const TAG: usize = 16;
    if data.len() < IV + TAG {
        return Err(SamlError::DecryptionFailed);
    }
    let (iv, rest) = data.split_at(IV);
    let (body, tag) = rest.split_at(rest.len() - TAG);
    let failed = |_| SamlError::DecryptionFailed;
    let mut crypter = Crypter::new(cipher, Mode::Decrypt, key, Some(iv)).map_err(failed)?;
    crypter.set_tag(tag).map_err(failed)?;
    let mut out = vec![0; body.len() + cipher.block_size()];
    let mut n = crypter.update(body, &mut out).map_err(failed)?;
    n += crypter.finalize(&mut out[n..]).map_err(failed)?;
    out.truncate(n);
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use openssl::rsa::Rsa;

    /// Encrypts `plain` for `key` the way an IdP does (OAEP-wrapped AES key).
    pub(crate) fn encrypt(key: &PKey<Private>, plain: &str, gcm: bool, transport: &str) -> String {
        let (cipher, method, iv_len) = if gcm {
            (Cipher::aes_256_gcm(), format!("{XENC11}aes256-gcm"), 12)
        } else {
            (Cipher::aes_128_cbc(), format!("{XENC}aes128-cbc"), 16)
        };
        let content_key: Vec<u8> = (0..cipher.key_len()).map(|i| i as u8 * 7).collect();
        let iv: Vec<u8> = (0..iv_len).map(|i| i as u8).collect();
        let mut body = if gcm {
            let mut tag = [0u8; 16];
            let mut out = openssl::symm::encrypt_aead(
                cipher,
                &content_key,
                Some(&iv),
                &[],
                plain.as_bytes(),
                &mut tag,
            )
            .expect("gcm");
            out.extend_from_slice(&tag);
            out
        } else {
            openssl::symm::encrypt(cipher, &content_key, Some(&iv), plain.as_bytes()).expect("cbc")
        };
        let mut data = iv;
        data.append(&mut body);
        let mut ctx = PkeyCtx::new(key).expect("ctx");
        ctx.encrypt_init().expect("init");
        ctx.set_rsa_padding(Padding::PKCS1_OAEP).expect("oaep");
        let mut wrapped = Vec::new();
        ctx.encrypt_to_vec(&content_key, &mut wrapped)
            .expect("wrap");
        let b64 = |v: &[u8]| base64::engine::general_purpose::STANDARD.encode(v);
        format!(
            r#"<saml:EncryptedAssertion xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion"><xenc:EncryptedData xmlns:xenc="{XENC}"><xenc:EncryptionMethod Algorithm="{method}"/><ds:KeyInfo xmlns:ds="{DSIG}"><xenc:EncryptedKey><xenc:EncryptionMethod Algorithm="{transport}"/><xenc:CipherData><xenc:CipherValue>{}</xenc:CipherValue></xenc:CipherData></xenc:EncryptedKey></ds:KeyInfo><xenc:CipherData><xenc:CipherValue>{}</xenc:CipherValue></xenc:CipherData></xenc:EncryptedData></saml:EncryptedAssertion>"#,
            b64(&wrapped),
            b64(&data)
        )
    }

    fn splice_in(decrypter: &SpDecrypter, encrypted: &str) -> Result<String, SamlError> {
        let doc = format!("<r>{encrypted}</r>");
        let parsed = xml::parse(&doc).expect("parses");
        let node = parsed.root_element().first_element_child().expect("child");
        decrypter.splice(&doc, node)
    }

    #[test]
    fn cbc_and_gcm_assertions_decrypt_in_place() {
        let key = PKey::from_rsa(Rsa::generate(2048).expect("rsa")).expect("pkey");
        let pem = key.private_key_to_pem_pkcs8().expect("pem");
        let decrypter = SpDecrypter::from_pem(&pem).expect("rsa key");
        for gcm in [false, true] {
            let encrypted = encrypt(&key, "<a>secret</a>", gcm, &format!("{XENC}rsa-oaep-mgf1p"));
            assert_eq!(
                splice_in(&decrypter, &encrypted).as_deref(),
                Ok("<r><a>secret</a></r>")
            );
        }
    }

    #[test]
    fn pkcs1_key_transport_another_key_and_damage_are_refused() {
        let key = PKey::from_rsa(Rsa::generate(2048).expect("rsa")).expect("pkey");
        let other = PKey::from_rsa(Rsa::generate(2048).expect("rsa")).expect("pkey");
        let decrypter =
            SpDecrypter::from_pem(&key.private_key_to_pem_pkcs8().expect("pem")).expect("rsa");
        let v15 = encrypt(&key, "<a/>", false, &format!("{XENC}rsa-1_5"));
        assert_eq!(splice_in(&decrypter, &v15), Err(SamlError::WeakAlgorithm));
        let for_other = encrypt(&other, "<a/>", true, &format!("{XENC}rsa-oaep-mgf1p"));
        assert_eq!(
            splice_in(&decrypter, &for_other),
            Err(SamlError::DecryptionFailed)
        );
        let good = encrypt(&key, "<a/>", true, &format!("{XENC}rsa-oaep-mgf1p"));
        let last_value = good.rfind("</xenc:CipherValue>").expect("value");
        let damaged = format!("{}QUFB{}", &good[..last_value - 4], &good[last_value..]);
        assert_eq!(
            splice_in(&decrypter, &damaged),
            Err(SamlError::DecryptionFailed)
        );
        let ec = rcgen::KeyPair::generate().expect("ec");
        assert!(SpDecrypter::from_pem(ec.serialize_pem().as_bytes()).is_none());
    }
}
