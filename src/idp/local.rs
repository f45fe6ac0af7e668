//! Users listed in the configuration: Argon2id passwords and an optional TOTP second factor.
//!
//! An unknown user name costs the same Argon2 work as a wrong password (the password is
//! checked against a configured user's hash, with that user's parameters, and refused whatever
//! the result), and both get the same answer: the login form does not reveal which users exist.

use std::collections::HashMap;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use ring::hmac;
use subtle::ConstantTimeEq;

use crate::config::{IdentityProvider, IdentityProviderKind, LocalUser};
use crate::identity::{AuthMethod, Identity};

/// Why a local login failed (audit reason; the user only ever sees one generic message);
/// displays as its audit name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.as_str())]
pub enum LocalLoginError {
    /// Unknown user or wrong password (deliberately one reason).
    BadCredentials,
    /// The password was right but the TOTP code is missing or wrong.
    BadSecondFactor,
}

impl LocalLoginError {
    /// Kebab-case audit reason.
    pub fn as_str(self) -> &'static str {
        match self {
            LocalLoginError::BadCredentials => "bad-credentials",
            LocalLoginError::BadSecondFactor => "bad-second-factor",
        }
    }
}

/// One local provider, ready to check logins.
pub struct LocalProvider {
    id: String,
    users: HashMap<String, LocalUser>,
    /// Verified for unknown users so that they take as long as known ones: the costliest
    /// configured hash (no Argon2 work, and no 19 MiB, at start).
    dummy_hash: String,
    /// The `identity:` rules (a local user may become internal or gain roles by them too).
    mapping: std::sync::Arc<crate::config::IdentityMapping>,
}

impl LocalProvider {
    /// Builds the provider; `None` if `provider` is not a local one.
    pub fn new(
        provider: &IdentityProvider,
        mapping: std::sync::Arc<crate::config::IdentityMapping>,
    ) -> Option<LocalProvider> {
        let IdentityProviderKind::Local { users } = &provider.kind else {
            return None;
        };
        let dummy_hash = users
            .iter()
            .max_by_key(|u| argon2_cost(&u.password_hash))
            .map(|u| u.password_hash.clone())
            .unwrap_or_default();
        Some(LocalProvider {
            id: provider.id.clone(),
            users: users
                .iter()
                .map(|u| (u.username.clone(), u.clone()))
                .collect(),
            dummy_hash,
            mapping,
        })
    }

    /// Checks a login. CPU-heavy (Argon2): call from a blocking thread. `unix_time` is the
    /// clock for TOTP.
    pub fn login(
        &self,
        username: &str,
        password: &str,
        totp_code: Option<&str>,
        unix_time: u64,
    ) -> Result<Identity, LocalLoginError> {
        let user = self.users.get(username);
        let hash = user.map_or(self.dummy_hash.as_str(), |u| u.password_hash.as_str());
        let password_ok = verify_password(password, hash);
        let Some(user) = user.filter(|_| password_ok) else {
            return Err(LocalLoginError::BadCredentials);
        };
        let mfa = match &user.totp_secret {
            None => false,
            Some(secret) => {
                let code = totp_code.unwrap_or_default().trim();
                if !verify_totp(&secret.0, code, unix_time) {
                    return Err(LocalLoginError::BadSecondFactor);
                }
                true
            }
        };
        let mut identity = Identity {
            user_id: user.username.clone(),
            email: user.email.clone(),
            name: user.name.clone(),
            user_type: user.user_type,
            roles: user.roles.clone(),
            entity: user.entity.clone(),
            custom: Default::default(),
            idp: self.id.clone(),
            auth_method: AuthMethod::Local,
            mfa,
            client_id: None,
        };
        let claims = serde_json::json!({
            "sub": user.username, "email": user.email, "name": user.name,
        });
        crate::identity::apply_rules(&mut identity, &[], &claims, &self.mapping);
        Ok(identity)
    }
}

/// Memory × iterations × lanes of a PHC hash (0 when it does not parse).
fn argon2_cost(hash: &str) -> u64 {
    let Ok(parsed) = PasswordHash::new(hash) else {
        return 0;
    };
    let param = |name: &str| parsed.params.get_decimal(name).map_or(1, u64::from);
    param("m") * param("t") * param("p")
}

/// Argon2id with the crate's default (OWASP-recommended) parameters and a random salt.
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut OsRng);
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// RFC 6238 TOTP (HMAC-SHA1, 30 s steps, 6 digits), accepting one step of clock skew either
/// way; compared in constant time.
pub fn verify_totp(secret: &[u8], code: &str, unix_time: u64) -> bool {
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let step = unix_time / 30;
    let mut matched = 0u8;
    for counter in [step.saturating_sub(1), step, step + 1] {
        matched |= totp_at(secret, counter)
            .as_bytes()
            .ct_eq(code.as_bytes())
            .unwrap_u8();
    }
    matched == 1
}

/// The 6-digit code for one time step (RFC 4226 §5.3 dynamic truncation).
pub fn totp_at(secret: &[u8], counter: u64) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret);
    let tag = hmac::sign(&key, &counter.to_be_bytes());
    let digest = tag.as_ref();
    let offset = usize::from(digest[digest.len() - 1] & 0x0f);
    let binary = (u32::from(digest[offset] & 0x7f) << 24)
        | (u32::from(digest[offset + 1]) << 16)
        | (u32::from(digest[offset + 2]) << 8)
        | u32::from(digest[offset + 3]);
    format!("{:06}", binary % 1_000_000)
}

#[cfg(test)]
mod tests;
