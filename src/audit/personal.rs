//! `audit.personal_data: pseudonymised`: erasure by crypto-shredding.
//!
//! A record about a user names them by a random pseudonym (`p-…`, one per user), and carries
//! the personal fields (user id, client address, path, detail) encrypted under that user's
//! own key (AES-256-GCM, the pseudonym as associated data) in `personal`. The chain covers the
//! ciphertext, so nothing is ever rewritten: forgetting a user deletes their key (and their
//! pseudonym's link to them) from the key file, and every record about them, in every file,
//! rotated, compressed or exported, stays verifiable and becomes unreadable.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::AuditEvent;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// One user's line in the key file.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    user: String,
    pseudonym: String,
    key: String,
}

/// The personal fields of one record, as encrypted.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Personal {
    user: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_ip: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
}

/// The key file (`audit.personal_keys`): one JSON line per user, readable by root and the
/// service only. Appended when a user first appears; rewritten without a user to forget them.
pub struct PersonalKeys {
    path: PathBuf,
    by_user: HashMap<String, (String, Aes256Gcm)>,
    by_pseudonym: HashMap<String, String>,
}

impl PersonalKeys {
    /// Reads the key file (none yet: no keys).
    pub fn load(path: &Path) -> io::Result<PersonalKeys> {
        let mut keys = PersonalKeys {
            path: path.to_path_buf(),
            by_user: HashMap::new(),
            by_pseudonym: HashMap::new(),
        };
        let file = match File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(keys),
            Err(e) => return Err(e),
        };
        for (i, line) in BufReader::new(file).lines().enumerate() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            let entry: Entry = serde_json::from_str(&line).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}:{}: not a personal-data key line", path.display(), i + 1),
                )
            })?;
            keys.insert(entry)?;
        }
        Ok(keys)
    }

    fn insert(&mut self, entry: Entry) -> io::Result<()> {
        let key = B64
            .decode(&entry.key)
            .ok()
            .filter(|k| k.len() == 32)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: a key is not 32 bytes of base64", self.path.display()),
                )
            })?;
        let cipher = Aes256Gcm::new_from_slice(&key).map_err(io::Error::other)?;
        self.by_pseudonym
            .insert(entry.pseudonym.clone(), entry.user.clone());
        self.by_user.insert(entry.user, (entry.pseudonym, cipher));
        Ok(())
    }

    /// The user's pseudonym, made (with a new key, appended and synced) on first sight.
    fn pseudonym_for(&mut self, user: &str) -> io::Result<String> {
        if let Some((pseudonym, _)) = self.by_user.get(user) {
            return Ok(pseudonym.clone());
        }
        let key: [u8; 32] = rand::random();
        let tag: [u8; 12] = rand::random();
        let entry = Entry {
            user: user.to_string(),
            pseudonym: format!("p-{}", super::hex(&tag)),
            key: B64.encode(key),
        };
        let mut file = open_private(&self.path, OpenOptions::new().create(true).append(true))?;
        let mut line = serde_json::to_string(&entry).map_err(io::Error::other)?;
        line.push('\n');
        file.write_all(line.as_bytes())?;
        file.sync_data()?;
        let pseudonym = entry.pseudonym.clone();
        self.insert(entry)?;
        Ok(pseudonym)
    }

    /// Replaces the personal fields of `event` (which names a user) by the user's pseudonym
    /// and the sealed `personal` block.
    pub fn pseudonymise(&mut self, event: &mut AuditEvent) -> io::Result<()> {
        let Some(user) = event.user.take() else {
            return Ok(());
        };
        let pseudonym = self.pseudonym_for(&user)?;
        let personal = Personal {
            user,
            client_ip: event.client_ip.take(),
            path: event.path.take(),
            detail: event.detail.take(),
        };
        let Some((_, cipher)) = self.by_user.get(&personal.user) else {
            return Err(io::Error::other("key vanished"));
        };
        let plaintext = serde_json::to_vec(&personal).map_err(io::Error::other)?;
        let nonce: [u8; 12] = rand::random();
        let sealed = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &plaintext,
                    aad: pseudonym.as_bytes(),
                },
            )
            .map_err(|_| io::Error::other("encryption failed"))?;
        event.personal = Some(B64.encode([nonce.as_slice(), &sealed].concat()));
        event.user = Some(pseudonym);
        Ok(())
    }

    /// Deletes `user`'s key: the key file is rewritten without their line (written aside,
    /// synced, renamed). Their pseudonym, if they had one.
    pub fn forget(&mut self, user: &str) -> io::Result<Option<String>> {
        let Some((pseudonym, _)) = self.by_user.remove(user) else {
            return Ok(None);
        };
        self.by_pseudonym.remove(&pseudonym);
        let mut partial = self.path.as_os_str().to_owned();
        partial.push(".partial");
        let partial = PathBuf::from(partial);
        {
            let mut out = open_private(
                &partial,
                OpenOptions::new().create(true).write(true).truncate(true),
            )?;
            let kept = File::open(&self.path).map(BufReader::new)?;
            for line in kept.lines() {
                let line = line?;
                let forgotten = serde_json::from_str::<Entry>(&line).is_ok_and(|e| e.user == user);
                if !forgotten && !line.trim().is_empty() {
                    out.write_all(line.as_bytes())?;
                    out.write_all(b"\n")?;
                }
            }
            out.sync_all()?;
        }
        std::fs::rename(&partial, &self.path)?;
        if let Some(dir) = self.path.parent() {
            let _ = File::open(dir).and_then(|d| d.sync_all());
        }
        Ok(Some(pseudonym))
    }

    /// Puts a record's personal fields back (`audit export --keys`): `false` when the record
    /// has none, or its user was forgotten.
    pub fn reveal(&self, record: &mut serde_json::Value) -> bool {
        let (Some(sealed), Some(pseudonym)) = (
            record
                .get("personal")
                .and_then(|p| p.as_str())
                .map(str::to_string),
            record
                .get("user")
                .and_then(|u| u.as_str())
                .map(str::to_string),
        ) else {
            return false;
        };
        let pseudonym = pseudonym.as_str();
        let Some(user) = self.by_pseudonym.get(pseudonym) else {
            return false;
        };
        let Some((_, cipher)) = self.by_user.get(user) else {
            return false;
        };
        let Some(bytes) = B64.decode(sealed).ok().filter(|b| b.len() > 12) else {
            return false;
        };
        let (nonce, ciphertext) = bytes.split_at(12);
        let Ok(plain) = cipher.decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad: pseudonym.as_bytes(),
            },
        ) else {
            return false;
        };
        let Ok(personal) = serde_json::from_slice::<serde_json::Value>(&plain) else {
            return false;
        };
        if let (Some(record), Some(personal)) = (record.as_object_mut(), personal.as_object()) {
            for (name, value) in personal {
                record.insert(name.clone(), value.clone());
            }
            record.insert("pseudonym".into(), pseudonym.into());
            record.remove("personal");
            return true;
        }
        false
    }
}

/// Opens with mode 0600 when it creates the file.
fn open_private(path: &Path, options: &mut OpenOptions) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    options.mode(0o600).open(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::EventKind;

    #[test]
    fn pseudonymised_records_are_readable_with_the_key_and_not_after_forget() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keys.jsonl");
        let mut keys = PersonalKeys::load(&path).expect("load");
        let mut event = AuditEvent::new(EventKind::Access);
        event.user = Some("alice@example.com".into());
        event.client_ip = Some("203.0.113.7".parse().expect("ip"));
        event.path = Some("/chat/alice-secret".into());
        keys.pseudonymise(&mut event).expect("seal");
        let pseudonym = event.user.clone().expect("pseudonym");
        assert!(pseudonym.starts_with("p-"));
        assert!(event.client_ip.is_none() && event.path.is_none());
        let line = serde_json::to_string(&event).expect("json");
        assert!(
            !line.contains("alice") && !line.contains("203.0.113.7"),
            "{line}"
        );

        // The same user keeps one pseudonym, across a reload of the file.
        let mut again = AuditEvent::new(EventKind::Access);
        again.user = Some("alice@example.com".into());
        let mut reloaded = PersonalKeys::load(&path).expect("reload");
        reloaded.pseudonymise(&mut again).expect("seal");
        assert_eq!(again.user.as_deref(), Some(pseudonym.as_str()));

        let mut record: serde_json::Value = serde_json::from_str(&line).expect("json");
        assert!(reloaded.reveal(&mut record));
        assert_eq!(record["user"], "alice@example.com");
        assert_eq!(record["client_ip"], "203.0.113.7");
        assert_eq!(record["path"], "/chat/alice-secret");

        assert_eq!(
            reloaded.forget("alice@example.com").expect("forget"),
            Some(pseudonym)
        );
        let mut record: serde_json::Value = serde_json::from_str(&line).expect("json");
        assert!(!PersonalKeys::load(&path).expect("load").reveal(&mut record));
        let file = std::fs::read_to_string(&path).expect("keys");
        assert!(!file.contains("alice"), "{file}");
    }
}
