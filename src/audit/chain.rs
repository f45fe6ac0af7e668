//! The hash chain: how a record line is sealed and how a file is verified.
//!
//! A sealed line is the record's JSON object (fields `seq`, `ts`, …, `prev`) followed by
//! `,"hash":"<sha256 hex>"}` where the hash covers every byte of the object before that
//! suffix (with its closing brace). Hashing the bytes as written, rather than a re-serialised
//! form, means verification needs no canonical JSON and any edit shows.

use ring::digest::{digest, SHA256};
use serde::Deserialize;

/// `prev` of the first record of a chain.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

const HASH_KEY: &str = ",\"hash\":\"";

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// Seals a record object (serialised JSON ending in `}`), returning the line (without
/// newline) and its hash.
pub fn seal(object: &str) -> (String, String) {
    let hash = hex(digest(&SHA256, object.as_bytes()).as_ref());
    let body = object.strip_suffix('}').unwrap_or(object);
    let line = format!("{body}{HASH_KEY}{hash}\"}}");
    (line, hash)
}

/// Splits a sealed line into the hashed object and the claimed hash.
pub fn unseal(line: &str) -> Option<(String, &str)> {
    let at = line.rfind(HASH_KEY)?;
    let claimed = line[at + HASH_KEY.len()..].strip_suffix("\"}")?;
    if claimed.len() != 64 || !claimed.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some((format!("{}}}", &line[..at]), claimed))
}

/// The fields verification reads from each record.
#[derive(Debug, Deserialize)]
pub struct ChainFields {
    /// Position in the chain, from 1.
    pub seq: u64,
    /// Hash of the previous record.
    pub prev: String,
    /// Event name.
    pub event: String,
    /// Checkpoints only: base64 Ed25519 public key.
    pub public_key: Option<String>,
    /// Checkpoints only: base64 signature over [`checkpoint_message`].
    pub signature: Option<String>,
}

/// What a checkpoint signs: the chain position and the hash of everything before it.
pub fn checkpoint_message(seq: u64, prev: &str) -> String {
    format!("portcullis-audit-checkpoint:v1:{seq}:{prev}")
}

/// Why a file fails verification; `line` is 1-based.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// Not a sealed JSON record.
    #[error("line {line}: not a sealed audit record")]
    Malformed {
        /// Line number.
        line: usize,
    },
    /// The content does not match its hash: the line was edited.
    #[error("line {line}: content does not match its hash (edited)")]
    HashMismatch {
        /// Line number.
        line: usize,
    },
    /// `prev` does not name the previous record: a line was removed, inserted or moved.
    #[error(
        "line {line}: prev does not match the previous record (deleted, inserted or reordered)"
    )]
    BrokenLink {
        /// Line number.
        line: usize,
    },
    /// `seq` is not one more than the previous record's.
    #[error("line {line}: seq {found} where {expected} was expected (deleted or reordered)")]
    Sequence {
        /// Line number.
        line: usize,
        /// Expected seq.
        expected: u64,
        /// Seq found.
        found: u64,
    },
    /// A checkpoint whose signature does not verify.
    #[error("line {line}: checkpoint signature does not verify{}", if *.pinned { " with the given key" } else { "" })]
    BadSignature {
        /// Line number.
        line: usize,
        /// Whether a trusted key was given.
        pinned: bool,
    },
    /// Records after the last checkpoint: the file was truncated or is still being written.
    #[error("{records} record(s) after the last checkpoint at line {last_checkpoint_line} are not covered by a signature (truncated, or the log is still open: use --open)")]
    UnsealedTail {
        /// Records not covered.
        records: u64,
        /// Line of the last checkpoint (0 = none).
        last_checkpoint_line: usize,
    },
    /// An empty file.
    #[error("the file holds no records")]
    Empty,
    /// The first record is not the start of a chain: leading records were removed.
    #[error("line 1: the chain starts at seq {seq}, not 1 (leading records removed; use --continuation for a rotated file)")]
    NotChainStart {
        /// Seq of the first record.
        seq: u64,
    },
}

/// How strictly [`verify`] reads a file.
#[derive(Debug, Clone, Copy, Default)]
pub struct VerifyOptions<'a> {
    /// Raw 32-byte Ed25519 public key that must have signed every checkpoint; without it each
    /// checkpoint is checked against the key it names (integrity, not origin).
    pub trusted_key: Option<&'a [u8]>,
    /// Accept records after the last checkpoint (a live log).
    pub allow_open_tail: bool,
    /// Accept a file whose first record continues an earlier file (after rotation).
    pub allow_continuation: bool,
}

/// Summary of a verified file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Records checked.
    pub records: u64,
    /// Checkpoints whose signatures verified.
    pub checkpoints: u64,
    /// Records after the last checkpoint (only non-zero with `allow_open_tail`).
    pub unsealed_tail: u64,
    /// Lines of `unclean-shutdown` records: a process that ended without sealing the file
    /// (its torn last line, if any, was moved aside; the record says where).
    pub unclean_shutdowns: Vec<usize>,
}

/// Verifies a whole file's text; the error names the first line that breaks the chain.
pub fn verify(text: &str, options: VerifyOptions<'_>) -> Result<Verified, ChainError> {
    let VerifyOptions {
        trusted_key,
        allow_open_tail,
        allow_continuation,
    } = options;
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut prev_hash = GENESIS.to_string();
    let mut expected_seq: Option<u64> = None;
    let (mut records, mut checkpoints, mut since_checkpoint, mut last_cp_line) =
        (0u64, 0u64, 0u64, 0usize);
    let mut unclean_shutdowns = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let (object, claimed) = unseal(line).ok_or(ChainError::Malformed { line: n })?;
        if hex(digest(&SHA256, object.as_bytes()).as_ref()) != claimed {
            return Err(ChainError::HashMismatch { line: n });
        }
        let fields: ChainFields =
            serde_json::from_str(&object).map_err(|_| ChainError::Malformed { line: n })?;
        if expected_seq.is_none()
            && !allow_continuation
            && (fields.seq != 1 || fields.prev != GENESIS)
        {
            return Err(ChainError::NotChainStart { seq: fields.seq });
        }
        if let Some(expected) = expected_seq {
            if fields.prev != prev_hash {
                return Err(ChainError::BrokenLink { line: n });
            }
            if fields.seq != expected {
                return Err(ChainError::Sequence {
                    line: n,
                    expected,
                    found: fields.seq,
                });
            }
        }
        if fields.event == "checkpoint" {
            let verified = match (&fields.public_key, &fields.signature) {
                (Some(pk), Some(sig)) => {
                    let pk = b64.decode(pk).unwrap_or_default();
                    let sig = b64.decode(sig).unwrap_or_default();
                    let key = trusted_key.unwrap_or(&pk);
                    let message = checkpoint_message(fields.seq, &fields.prev);
                    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, key)
                        .verify(message.as_bytes(), &sig)
                        .is_ok()
                }
                _ => false,
            };
            if !verified {
                return Err(ChainError::BadSignature {
                    line: n,
                    pinned: trusted_key.is_some(),
                });
            }
            checkpoints += 1;
            since_checkpoint = 0;
            last_cp_line = n;
        } else {
            if fields.event == "unclean-shutdown" {
                unclean_shutdowns.push(n);
            }
            since_checkpoint += 1;
        }
        prev_hash = claimed.to_string();
        expected_seq = Some(fields.seq + 1);
        records += 1;
    }
    if records == 0 {
        return Err(ChainError::Empty);
    }
    if since_checkpoint > 0 && !allow_open_tail {
        return Err(ChainError::UnsealedTail {
            records: since_checkpoint,
            last_checkpoint_line: last_cp_line,
        });
    }
    Ok(Verified {
        records,
        checkpoints,
        unsealed_tail: since_checkpoint,
        unclean_shutdowns,
    })
}

#[cfg(test)]
mod tests;
