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
    /// A file of a sequence does not continue the one before it.
    #[error("line 1: the file does not continue the previous one (seq {found} where {expected} was expected): a file is missing or out of order")]
    FileGap {
        /// Seq that would continue the previous file.
        expected: u64,
        /// Seq of this file's first record.
        found: u64,
    },
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
#[cfg(test)]
pub fn verify(text: &str, options: VerifyOptions<'_>) -> Result<Verified, ChainError> {
    let mut verifier = ChainVerifier::new(options);
    for line in text.lines() {
        verifier.line(line)?;
    }
    verifier.finish()
}

/// Checks a chain line by line, over one file or a sequence of rotated files (so that a
/// trail of any size is read in constant memory).
pub struct ChainVerifier<'a> {
    options: VerifyOptions<'a>,
    prev_hash: String,
    expected_seq: Option<u64>,
    records: u64,
    checkpoints: u64,
    since_checkpoint: u64,
    last_cp_line: usize,
    unclean_shutdowns: Vec<usize>,
    /// Line number within the current file.
    line: usize,
}

impl<'a> ChainVerifier<'a> {
    /// A verifier at the start of a chain (or of a continuation, if the options allow it).
    pub fn new(options: VerifyOptions<'a>) -> Self {
        ChainVerifier {
            options,
            prev_hash: GENESIS.to_string(),
            expected_seq: None,
            records: 0,
            checkpoints: 0,
            since_checkpoint: 0,
            last_cp_line: 0,
            unclean_shutdowns: Vec::new(),
            line: 0,
        }
    }

    /// Lines of `unclean-shutdown` records so far (line numbers within their file).
    pub fn unclean_shutdowns(&self) -> &[usize] {
        &self.unclean_shutdowns
    }

    /// Ends one file of a sequence: a rotated file must end sealed by a checkpoint, and the
    /// next file's first record must continue this one's last.
    pub fn end_file(&mut self) -> Result<(), ChainError> {
        if self.since_checkpoint > 0 {
            return Err(ChainError::UnsealedTail {
                records: self.since_checkpoint,
                last_checkpoint_line: self.last_cp_line,
            });
        }
        self.line = 0;
        self.last_cp_line = 0;
        Ok(())
    }

    /// Checks the next line.
    pub fn line(&mut self, line: &str) -> Result<(), ChainError> {
        self.line += 1;
        let n = self.line;
        let (object, claimed) = unseal(line).ok_or(ChainError::Malformed { line: n })?;
        if hex(digest(&SHA256, object.as_bytes()).as_ref()) != claimed {
            return Err(ChainError::HashMismatch { line: n });
        }
        let fields: ChainFields =
            serde_json::from_str(&object).map_err(|_| ChainError::Malformed { line: n })?;
        if self.expected_seq.is_none()
            && !self.options.allow_continuation
            && (fields.seq != 1 || fields.prev != GENESIS)
        {
            return Err(ChainError::NotChainStart { seq: fields.seq });
        }
        if let Some(expected) = self.expected_seq {
            if n == 1 && (fields.seq != expected || fields.prev != self.prev_hash) {
                return Err(ChainError::FileGap {
                    expected,
                    found: fields.seq,
                });
            }
            if fields.prev != self.prev_hash {
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
            if !self.signature_verifies(&fields) {
                return Err(ChainError::BadSignature {
                    line: n,
                    pinned: self.options.trusted_key.is_some(),
                });
            }
            self.checkpoints += 1;
            self.since_checkpoint = 0;
            self.last_cp_line = n;
        } else {
            if fields.event == "unclean-shutdown" {
                self.unclean_shutdowns.push(n);
            }
            self.since_checkpoint += 1;
        }
        self.prev_hash = claimed.to_string();
        self.expected_seq = Some(fields.seq + 1);
        self.records += 1;
        Ok(())
    }

    fn signature_verifies(&self, fields: &ChainFields) -> bool {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        let (Some(pk), Some(sig)) = (&fields.public_key, &fields.signature) else {
            return false;
        };
        let pk = b64.decode(pk).unwrap_or_default();
        let sig = b64.decode(sig).unwrap_or_default();
        let key = self.options.trusted_key.unwrap_or(&pk);
        let message = checkpoint_message(fields.seq, &fields.prev);
        ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, key)
            .verify(message.as_bytes(), &sig)
            .is_ok()
    }

    /// The summary, once every line is read.
    pub fn finish(self) -> Result<Verified, ChainError> {
        if self.records == 0 {
            return Err(ChainError::Empty);
        }
        if self.since_checkpoint > 0 && !self.options.allow_open_tail {
            return Err(ChainError::UnsealedTail {
                records: self.since_checkpoint,
                last_checkpoint_line: self.last_cp_line,
            });
        }
        Ok(Verified {
            records: self.records,
            checkpoints: self.checkpoints,
            unsealed_tail: self.since_checkpoint,
            unclean_shutdowns: self.unclean_shutdowns,
        })
    }
}

#[cfg(test)]
mod tests;
