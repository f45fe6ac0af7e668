//! Sessions in an encrypted cookie (AES-256-GCM), split into chunks when large.
//!
//! Wire format of the first cookie (`<name>`):
//! `1.<chunks>.<key id>.<base64url(nonce ‖ ciphertext ‖ tag), first part>`; further parts
//! go in `<name>.1`, `<name>.2`, … Each write uses a fresh random 96-bit nonce. The
//! associated data binds the ciphertext to the cookie name and to this deployment, so a
//! cookie copied from another deployment or cookie name does not decrypt (the cookie itself
//! is host-only, `__Host-`, so browsers never send it to another host).
//!
//! Any failure to read a session (absent, malformed, unknown version or key, failed
//! decryption, expired) is a [`SessionError`] with a reason: the request is simply
//! unauthenticated, never an error page.

mod authenticate;
mod cookie;
mod flight;

use std::time::Duration;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};

pub use authenticate::{Authenticated, Authenticator};
pub use cookie::{clear_cookies, cookie_values, CookieJar};

use crate::config::SessionKey;
use crate::identity::Identity;

/// Format version written in every cookie.
const VERSION: &str = "1";
/// Longest value of one cookie; with the name and attributes each `Set-Cookie` stays < 4 KB.
pub const CHUNK_LEN: usize = 3800;

/// What a session holds. Tokens from the IdP live only here, encrypted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionData {
    /// Session id (random, 128 bits): revocation and audit.
    pub sid: String,
    /// Unix seconds of the login.
    pub issued_at: u64,
    /// Unix seconds after which the session is over, whatever the activity.
    pub expires_at: u64,
    /// Unix seconds of the last request that refreshed the cookie.
    pub last_seen: u64,
    /// Who.
    /// Shared, not copied, with what outlives the request (an open stream's registry entry).
    pub identity: std::sync::Arc<Identity>,
    /// What the OP issued (ID and refresh tokens, subject, OP session id), kept encrypted in
    /// the cookie only, for refresh and logout. Never forwarded, never shown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oidc: Option<crate::idp::oidc::OidcTokens>,
    /// The SAML subject and IdP session, for single logout. Never forwarded, never shown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub saml: Option<crate::idp::saml::SamlSession>,
    /// This session came from a sign-in that asked the IdP for MFA (no second step-up loop).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stepped_up: bool,
}

impl SessionData {
    /// What the live-session index keeps of it.
    pub fn record(&self) -> crate::store::SessionRecord {
        crate::store::SessionRecord {
            sid: self.sid.clone(),
            user_id: self.identity.user_id.clone(),
            entity: self.identity.entity.clone(),
            idp: self.identity.idp.clone(),
            issued_at: self.issued_at,
            expires_at: self.expires_at,
            last_seen: self.last_seen,
        }
    }

    /// A fresh session (new id) for `identity`, starting `now`.
    pub fn new(identity: Identity, now: u64, lifetime: Duration) -> Self {
        let sid: u128 = rand::random();
        SessionData {
            sid: format!("{sid:032x}"),
            issued_at: now,
            expires_at: now.saturating_add(lifetime.as_secs()),
            last_seen: now,
            identity: std::sync::Arc::new(identity),
            oidc: None,
            saml: None,
            stepped_up: false,
        }
    }
}

/// Why a request carries no usable session (audit reason, kebab-case); displays as its
/// audit name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.as_str())]
pub enum SessionError {
    /// No session cookie.
    Absent,
    /// Not in the cookie format, or chunks missing.
    Malformed,
    /// A format version this build does not read.
    UnknownVersion,
    /// Encrypted with a key that is not configured (any more).
    UnknownKey,
    /// Tampered, truncated, or from another deployment or cookie name.
    DecryptFailed,
    /// Past its absolute lifetime.
    Expired,
    /// Unused for longer than the idle timeout.
    Idle,
    /// Ended by a logout before its expiry (here, or at the OP by back-channel logout).
    Revoked,
    /// The OP refused to refresh the session's tokens.
    RefreshFailed,
}

impl SessionError {
    /// Kebab-case name for audit records and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionError::Absent => "session-absent",
            SessionError::Malformed => "session-malformed",
            SessionError::UnknownVersion => "session-unknown-version",
            SessionError::UnknownKey => "session-unknown-key",
            SessionError::DecryptFailed => "session-decrypt-failed",
            SessionError::Expired => "session-expired",
            SessionError::Idle => "session-idle",
            SessionError::Revoked => "session-revoked",
            SessionError::RefreshFailed => "session-refresh-failed",
        }
    }
}

/// A session that cannot be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// Larger than `session.max_chunks` cookies.
    #[error("the session needs {needed} cookies, more than the configured maximum of {max}")]
    TooLarge {
        /// Chunks needed.
        needed: usize,
        /// Configured maximum.
        max: usize,
    },
    /// Encryption failed (not expected with valid keys).
    #[error("session encryption failed")]
    Encrypt,
}

/// Encrypts and decrypts sessions. Ciphers are built once; nothing is derived per request.
pub struct SessionCodec {
    /// (key id, cipher); the first encrypts, all decrypt.
    keys: Vec<(String, Aes256Gcm)>,
    cookie_name: String,
    associated_data: Vec<u8>,
    max_chunks: usize,
    idle_timeout: Duration,
}

impl SessionCodec {
    /// A codec for `keys` (first encrypts) bound to `cookie_name` and `deployment` (the
    /// public URL's origin, or an explicit deployment id).
    pub fn new(
        keys: &[SessionKey],
        cookie_name: &str,
        deployment: &str,
        max_chunks: usize,
        idle_timeout: Duration,
    ) -> Self {
        let keys = keys
            .iter()
            .map(|key| (key.fingerprint(), Aes256Gcm::new((&key.0).into())))
            .collect();
        SessionCodec {
            keys,
            cookie_name: cookie_name.to_string(),
            associated_data: format!("portcullis-session:{VERSION}:{cookie_name}:{deployment}")
                .into_bytes(),
            max_chunks: max_chunks.max(1),
            idle_timeout,
        }
    }

    /// The cookie values (first, then chunks) for `session`.
    pub fn encode(&self, session: &SessionData) -> Result<Vec<String>, EncodeError> {
        let (kid, cipher) = self.keys.first().ok_or(EncodeError::Encrypt)?;
        let plaintext = serde_json::to_vec(session).map_err(|_| EncodeError::Encrypt)?;
        let nonce_bytes: [u8; 12] = rand::random();
        let nonce = Nonce::from_slice(&nonce_bytes);
        let ciphertext = cipher
            .encrypt(
                nonce,
                Payload {
                    msg: &plaintext,
                    aad: &self.associated_data,
                },
            )
            .map_err(|_| EncodeError::Encrypt)?;
        let mut sealed = Vec::with_capacity(12 + ciphertext.len());
        sealed.extend_from_slice(&nonce_bytes);
        sealed.extend_from_slice(&ciphertext);
        let data = URL_SAFE_NO_PAD.encode(sealed);
        // The header (version, count, key id) shares the first cookie with data.
        let header_len = VERSION.len() + kid.len() + 6;
        let first_room = CHUNK_LEN - header_len;
        let rest = data.len().saturating_sub(first_room);
        let needed = 1 + rest.div_ceil(CHUNK_LEN);
        if needed > self.max_chunks {
            return Err(EncodeError::TooLarge {
                needed,
                max: self.max_chunks,
            });
        }
        let (first, tail) = data.split_at(first_room.min(data.len()));
        let mut values = vec![format!("{VERSION}.{needed}.{kid}.{first}")];
        values.extend(
            tail.as_bytes()
                .chunks(CHUNK_LEN)
                .map(|c| String::from_utf8_lossy(c).into_owned()),
        );
        Ok(values)
    }

    /// Reads the session from the request's cookies, checking expiry against `now`.
    pub fn decode(&self, jar: &CookieJar<'_>, now: u64) -> Result<SessionData, SessionError> {
        let first = jar.get(&self.cookie_name).ok_or(SessionError::Absent)?;
        let mut fields = first.splitn(4, '.');
        let (Some(version), Some(count), Some(kid), Some(head)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(SessionError::Malformed);
        };
        if version != VERSION {
            return Err(SessionError::UnknownVersion);
        }
        let count: usize = count.parse().map_err(|_| SessionError::Malformed)?;
        if count == 0 || count > self.max_chunks {
            return Err(SessionError::Malformed);
        }
        let cipher = self
            .keys
            .iter()
            .find(|(id, _)| id == kid)
            .map(|(_, c)| c)
            .ok_or(SessionError::UnknownKey)?;
        let mut data = String::with_capacity(head.len() + (count - 1) * CHUNK_LEN);
        data.push_str(head);
        for i in 1..count {
            data.push_str(
                jar.get_chunk(&self.cookie_name, i)
                    .ok_or(SessionError::Malformed)?,
            );
        }
        let sealed = URL_SAFE_NO_PAD
            .decode(data.as_bytes())
            .map_err(|_| SessionError::Malformed)?;
        if sealed.len() < 12 + 16 {
            return Err(SessionError::Malformed);
        }
        let (nonce, ciphertext) = sealed.split_at(12);
        let plaintext = cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &self.associated_data,
                },
            )
            .map_err(|_| SessionError::DecryptFailed)?;
        let session: SessionData =
            serde_json::from_slice(&plaintext).map_err(|_| SessionError::Malformed)?;
        if now >= session.expires_at {
            return Err(SessionError::Expired);
        }
        if now.saturating_sub(session.last_seen) > self.idle_timeout.as_secs() {
            return Err(SessionError::Idle);
        }
        Ok(session)
    }

    /// Encrypts a short-lived record that is not a session (an OIDC login flow), bound to
    /// `purpose` so it can never be read as a session or for another purpose.
    pub fn seal(&self, purpose: &str, plaintext: &[u8]) -> Result<String, EncodeError> {
        let (kid, cipher) = self.keys.first().ok_or(EncodeError::Encrypt)?;
        let aad = [self.associated_data.as_slice(), b":", purpose.as_bytes()].concat();
        let nonce_bytes: [u8; 12] = rand::random();
        let ciphertext = cipher
            .encrypt(
                Nonce::from_slice(&nonce_bytes),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .map_err(|_| EncodeError::Encrypt)?;
        let sealed = [nonce_bytes.as_slice(), ciphertext.as_slice()].concat();
        Ok(format!("{kid}.{}", URL_SAFE_NO_PAD.encode(sealed)))
    }

    /// Opens what [`SessionCodec::seal`] made for the same `purpose`.
    pub fn open(&self, purpose: &str, text: &str) -> Option<Vec<u8>> {
        let (kid, data) = text.split_once('.')?;
        let cipher = self.keys.iter().find(|(id, _)| id == kid).map(|(_, c)| c)?;
        let sealed = URL_SAFE_NO_PAD.decode(data.as_bytes()).ok()?;
        if sealed.len() < 28 {
            return None;
        }
        let (nonce, ciphertext) = sealed.split_at(12);
        let aad = [self.associated_data.as_slice(), b":", purpose.as_bytes()].concat();
        cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .ok()
    }

    /// True when the cookie should be rewritten to move `last_seen` forward (a quarter of the
    /// idle timeout has passed): bounded writes, yet an active user never idles out.
    pub fn needs_touch(&self, session: &SessionData, now: u64) -> bool {
        now.saturating_sub(session.last_seen) >= (self.idle_timeout.as_secs() / 4).max(1)
    }
}

#[cfg(test)]
mod tests;
