//! Typed leaf values shared by the config sections: secrets, durations, listen addresses.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Where a secret comes from, as written in the file (`env:NAME` or `file:PATH`).
#[derive(Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// Read from an environment variable.
    Env(String),
    /// Read from a file (trailing newline removed).
    File(PathBuf),
    /// Written in the file: for values that are secret only sometimes (a Redis URL without
    /// a password).
    Inline,
}

/// Why a secret could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// `env:` without a name.
    #[error("`env:` needs a variable name")]
    NoVariableName,
    /// `file:` without a path.
    #[error("`file:` needs a path")]
    NoPath,
    /// Neither `env:` nor `file:`: the value itself was written in the file.
    #[error("secrets are never written inline")]
    Inline,
    /// The environment variable is not set (or not Unicode).
    #[error("environment variable {0} is not set")]
    VariableNotSet(String),
    /// The file cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Unreadable {
        /// The file, resolved against the config file's directory.
        path: PathBuf,
        /// Why it cannot be read.
        source: std::io::Error,
    },
    /// The variable or file holds nothing (after the trailing newline).
    #[error("the secret is empty")]
    Empty,
}

/// A resolved secret. `Debug` never prints the value.
#[derive(Clone)]
pub struct Secret {
    source: SecretSource,
    value: String,
}

impl Secret {
    /// Parses `env:NAME` / `file:PATH` and reads the value now, so a missing secret is a
    /// config error at load time rather than a failure on the first request.
    /// A relative `file:` path is relative to `base_dir` (the config file's directory).
    pub fn resolve(spec: &str, base_dir: &std::path::Path) -> Result<Secret, SecretError> {
        let source = if let Some(name) = spec.strip_prefix("env:") {
            if name.is_empty() {
                return Err(SecretError::NoVariableName);
            }
            SecretSource::Env(name.to_string())
        } else if let Some(path) = spec.strip_prefix("file:") {
            if path.is_empty() {
                return Err(SecretError::NoPath);
            }
            SecretSource::File(base_dir.join(path))
        } else {
            return Err(SecretError::Inline);
        };
        let value = match &source {
            SecretSource::Inline => return Err(SecretError::Inline),
            SecretSource::Env(name) => {
                std::env::var(name).map_err(|_| SecretError::VariableNotSet(name.clone()))?
            }
            SecretSource::File(path) => std::fs::read_to_string(path)
                .map_err(|source| SecretError::Unreadable {
                    path: path.clone(),
                    source,
                })?
                .trim_end_matches(['\r', '\n'])
                .to_string(),
        };
        if value.is_empty() {
            return Err(SecretError::Empty);
        }
        Ok(Secret { source, value })
    }

    /// A value written in the file itself.
    pub fn inline(value: &str) -> Secret {
        Secret {
            source: SecretSource::Inline,
            value: value.to_string(),
        }
    }

    /// The secret itself. Callers must not log it.
    pub fn expose(&self) -> &str {
        &self.value
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            SecretSource::Env(name) => write!(f, "Secret(env:{name}, <redacted>)"),
            SecretSource::File(path) => write!(f, "Secret(file:{}, <redacted>)", path.display()),
            SecretSource::Inline => write!(f, "Secret(inline, <redacted>)"),
        }
    }
}

/// Text that is not a duration.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("`{text}` is not a duration ({source})")]
pub struct DurationError {
    /// The text as written.
    pub text: String,
    /// What the duration parser found wrong.
    pub source: humantime::DurationError,
}

/// Parses durations such as `30s`, `5m`, `12h`, `1h 30m`, `250ms`.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    humantime::parse_duration(text.trim()).map_err(|source| DurationError {
        text: text.to_string(),
        source,
    })
}

/// Text that is not a listen address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not an address like 0.0.0.0:443 or [::]:443")]
pub struct ListenError {
    /// The text as written.
    pub text: String,
}

/// Parses a listen address `IP:PORT` (IPv6 in brackets).
pub fn parse_listen(text: &str) -> Result<SocketAddr, ListenError> {
    text.parse::<SocketAddr>().map_err(|_| ListenError {
        text: text.to_string(),
    })
}

/// Accepts only Argon2id PHC strings.
pub fn is_argon2id_hash(hash: &str) -> bool {
    argon2::password_hash::PasswordHash::new(hash)
        .is_ok_and(|parsed| parsed.algorithm.as_str() == "argon2id")
}

/// RFC 4648 base32 (as authenticator apps show secrets): case-insensitive, spaces and
/// padding ignored.
pub fn decode_base32(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 5 / 8);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for c in text.chars().filter(|c| !c.is_whitespace() && *c != '=') {
        let value = match c.to_ascii_uppercase() {
            u @ 'A'..='Z' => u as u32 - 'A' as u32,
            d @ '2'..='7' => d as u32 - '2' as u32 + 26,
            _ => return None,
        };
        buffer = (buffer << 5) | value;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_debug_is_redacted() {
        let path = std::env::temp_dir().join(format!("portcullis-secret-{}", std::process::id()));
        std::fs::write(&path, "hunter2\n").expect("write temp secret");
        let secret = Secret::resolve(
            &format!("file:{}", path.display()),
            std::path::Path::new("/"),
        )
        .expect("resolves");
        assert_eq!(secret.expose(), "hunter2");
        assert!(!format!("{secret:?}").contains("hunter2"));
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn secret_sources_are_checked() {
        assert!(Secret::resolve("hunter2", std::path::Path::new("/")).is_err());
        assert!(Secret::resolve("env:", std::path::Path::new("/")).is_err());
        assert!(Secret::resolve(
            "env:PORTCULLIS_TEST_SURELY_UNSET_VAR",
            std::path::Path::new("/")
        )
        .unwrap_err()
        .to_string()
        .contains("PORTCULLIS_TEST_SURELY_UNSET_VAR"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("12h"), Ok(Duration::from_secs(12 * 3600)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("10").is_err());
    }
}
