//! Bearer tokens already checked, by the SHA-256 of the token: a repeat request costs one
//! hash and one lookup instead of a signature check or an introspection call. Bounded;
//! an entry is never used past its token's expiry (or, for a refusal, a few seconds).

use std::collections::HashMap;
use std::sync::RwLock;

use super::{Caller, Refusal};

/// Most tokens held at once; a full cache first drops what has expired, then everything
/// (a burst of new tokens costs verifications, never memory).
pub const CAPACITY: usize = 10_000;

/// The cache key of a token.
pub fn digest(token: &str) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

struct Entry {
    outcome: Result<Caller, Refusal>,
    /// Unix seconds from which the entry is void.
    until: u64,
}

/// Verified (and recently refused) tokens.
pub struct VerifiedTokens {
    entries: RwLock<HashMap<[u8; 32], Entry>>,
    capacity: usize,
}

impl VerifiedTokens {
    /// Holds at most `capacity` tokens.
    pub fn new(capacity: usize) -> VerifiedTokens {
        VerifiedTokens {
            entries: RwLock::new(HashMap::new()),
            capacity,
        }
    }

    /// What was decided about the token, while it still holds at `now`.
    pub fn get(&self, digest: &[u8; 32], now: u64) -> Option<Result<Caller, Refusal>> {
        let entries = self.entries.read().ok()?;
        let entry = entries.get(digest)?;
        (now < entry.until).then(|| entry.outcome.clone())
    }

    /// Keeps `outcome` until `until` (unix seconds); nothing when that has passed.
    pub fn remember(
        &self,
        digest: [u8; 32],
        outcome: Result<Caller, Refusal>,
        until: u64,
        now: u64,
    ) {
        if until <= now {
            return;
        }
        let Ok(mut entries) = self.entries.write() else {
            return;
        };
        if entries.len() >= self.capacity {
            entries.retain(|_, e| e.until > now);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(digest, Entry { outcome, until });
    }

    /// Tokens held.
    pub fn len(&self) -> usize {
        self.entries.read().map_or(0, |e| e.len())
    }
}
