//! Compiling `session:` (encryption keys, cookie name and size, lifetimes).

use std::time::Duration;

use base64::Engine;

use super::Compiler;
use crate::config::raw::*;
use crate::config::*;

impl Compiler<'_> {
    pub(super) fn session(&mut self, raw: Option<RawSession>) -> Session {
        let raw = raw.unwrap_or_default();
        let mut encryption_keys = Vec::new();
        match raw.encryption_keys.as_deref() {
            None | Some([]) => self.issues.add(
                "session.encryption_keys",
                "at least one key is required",
                "run `portcullis keys generate` and reference it as env:PORTCULLIS_SESSION_KEY",
            ),
            Some(specs) => {
                for (i, spec) in specs.iter().enumerate() {
                    let path = format!("session.encryption_keys[{i}]");
                    let Some(secret) = self.secret(&path, spec) else {
                        continue;
                    };
                    match decode_key(secret.expose()) {
                        Some(key) => encryption_keys.push(SessionKey(key)),
                        None => self.issues.add(
                            &path,
                            "the key is not 32 bytes of base64",
                            "generate one with `portcullis keys generate`",
                        ),
                    }
                }
            }
        }
        let cookie_name = raw
            .cookie_name
            .unwrap_or_else(|| DEFAULT_COOKIE_NAME.into());
        let valid_cookie = !cookie_name.is_empty()
            && cookie_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'));
        if !valid_cookie {
            self.issues.add(
                "session.cookie_name",
                format!("`{cookie_name}` is not a cookie name"),
                "letters, digits, '-' and '_' only",
            );
        }
        let max_chunks = raw.max_chunks.unwrap_or(5);
        if !(1..=20).contains(&max_chunks) {
            self.issues.add(
                "session.max_chunks",
                "must be between 1 and 20",
                "the default is 5 (about 19 KB of session)",
            );
        }
        let lifetime = self.duration(
            "session.lifetime",
            raw.lifetime.as_ref(),
            Duration::from_secs(12 * 3600),
        );
        let idle_timeout = self.duration(
            "session.idle_timeout",
            raw.idle_timeout.as_ref(),
            Duration::from_secs(3600),
        );
        if idle_timeout.is_zero() || lifetime.is_zero() {
            self.issues.add(
                "session",
                "lifetime and idle_timeout must be longer than zero",
                "",
            );
        }
        Session {
            encryption_keys,
            cookie_name,
            lifetime,
            idle_timeout,
            max_chunks: max_chunks.clamp(1, 20),
            deployment_id: raw.deployment_id.unwrap_or_default(),
        }
    }
}

/// Session keys are 32 bytes, base64 (standard or URL-safe, padding optional).
fn decode_key(text: &str) -> Option<[u8; 32]> {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    let trimmed = text.trim();
    let bytes = STANDARD
        .decode(trimmed)
        .or_else(|_| URL_SAFE_NO_PAD.decode(trimmed.trim_end_matches('=')))
        .ok()?;
    bytes.try_into().ok()
}
