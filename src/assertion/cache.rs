//! Signed assertions cached by (session id, app), so that the hot path signs once per token
//! lifetime rather than once per request.
//!
//! Sharded and bounded; a hit allocates nothing. A poisoned shard lock is recovered, never a
//! panic.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard};

/// Most tokens cached at once, over all shards.
pub(super) const CACHE_CAPACITY: usize = 65_536;
/// Independent locks of the cache, so that workers rarely wait for each other.
pub(super) const CACHE_SHARDS: usize = 16;

/// A cached token and what it was made for.
pub(super) struct Cached {
    /// Compared on lookup: the map key is only a 64-bit hash of the sid.
    pub(super) sid: Box<str>,
    pub(super) token: Arc<str>,
    /// Unix seconds from which the token is too close to `exp` to hand out.
    pub(super) refresh_at: u64,
}

pub(super) type Shard = HashMap<(u64, usize), Cached>;

/// Signed tokens by (session id, app index): sharded, bounded, allocation-free on a hit.
///
/// The map key is `(SipHash(sid), app index)` rather than the sid itself, so a lookup needs
/// no `String`; the entry keeps the sid and a hit requires it to match, so a hash collision
/// is a miss (and the newer token replaces the other), never another session's token. The
/// hasher has a random per-process key, so collisions cannot be aimed at.
pub(super) struct TokenCache {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    shard_capacity: usize,
}

impl TokenCache {
    pub(super) fn new(capacity: usize) -> Self {
        TokenCache {
            shards: (0..CACHE_SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            shard_capacity: (capacity / CACHE_SHARDS).max(1),
        }
    }

    pub(super) fn locate(&self, sid: &str, app_index: usize) -> (&Mutex<Shard>, (u64, usize)) {
        let hash = self.hasher.hash_one(sid);
        // The shard count is a power of two, so this keeps the low bits of the hash.
        let shard = (hash as usize) % self.shards.len();
        (&self.shards[shard], (hash, app_index))
    }

    pub(super) fn get(&self, sid: &str, app_index: usize, now: u64) -> Option<Arc<str>> {
        let (shard, key) = self.locate(sid, app_index);
        let map = lock(shard);
        let cached = map.get(&key)?;
        (*cached.sid == *sid && now < cached.refresh_at).then(|| Arc::clone(&cached.token))
    }

    pub(super) fn insert(
        &self,
        sid: &str,
        app_index: usize,
        token: Arc<str>,
        refresh_at: u64,
        now: u64,
    ) {
        let (shard, key) = self.locate(sid, app_index);
        let mut map = lock(shard);
        if map.len() >= self.shard_capacity && !map.contains_key(&key) {
            map.retain(|_, cached| now < cached.refresh_at);
            if map.len() >= self.shard_capacity {
                // Every entry is live: start over rather than track recency on the hot path.
                map.clear();
            }
        }
        let sid = sid.into();
        map.insert(
            key,
            Cached {
                sid,
                token,
                refresh_at,
            },
        );
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.shards.iter().map(|shard| lock(shard).len()).sum()
    }
}

/// Locks a shard; a poisoned lock (a panic elsewhere while holding it) is recovered: the map
/// is still a valid map, and at worst holds a token that would have been signed anyway.
pub(super) fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    shard.lock().unwrap_or_else(|poisoned| {
        shard.clear_poison();
        poisoned.into_inner()
    })
}
