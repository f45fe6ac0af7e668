//! Shared state that outlives one request: revoked sessions and failed-login counters.
//! In memory (per process); a Redis backend for several replicas plugs in behind the same
//! methods later.

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};
use std::time::Duration;

/// Most entries any map keeps; beyond it the oldest are pruned first, so memory stays bounded.
const MAX_ENTRIES: usize = 100_000;

/// Session ids ended before their expiry (logout), remembered until they would have expired.
#[derive(Default)]
pub struct RevokedSessions {
    by_sid: RwLock<HashMap<String, u64>>,
}

impl RevokedSessions {
    /// Remembers `sid` as revoked until `expires_at` (unix seconds).
    pub fn revoke(&self, sid: &str, expires_at: u64, now: u64) {
        if let Ok(mut map) = self.by_sid.write() {
            if map.len() >= MAX_ENTRIES {
                map.retain(|_, expiry| *expiry > now);
            }
            map.insert(sid.to_string(), expires_at);
        }
    }

    /// True when `sid` was revoked. A poisoned lock counts as revoked (fail closed).
    pub fn is_revoked(&self, sid: &str) -> bool {
        self.by_sid.read().map_or(true, |map| map.contains_key(sid))
    }
}

/// Failed logins per key (`user:<name>`, `ip:<addr>`), with exponential back-off.
pub struct LoginThrottle {
    free_attempts: u32,
    max_lockout: Duration,
    failures: Mutex<HashMap<String, Failures>>,
}

#[derive(Clone, Copy)]
struct Failures {
    count: u32,
    locked_until: u64,
    last: u64,
}

impl LoginThrottle {
    /// `free_attempts` failures are free; each further one doubles the lock-out (1 s, 2 s, …)
    /// up to `max_lockout`.
    pub fn new(free_attempts: u32, max_lockout: Duration) -> Self {
        LoginThrottle {
            free_attempts,
            max_lockout,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// `Err(seconds to wait)` while any of `keys` is locked out.
    pub fn check(&self, keys: &[String], now: u64) -> Result<(), u64> {
        let Ok(map) = self.failures.lock() else {
            return Err(1);
        };
        let wait = keys
            .iter()
            .filter_map(|k| map.get(k))
            .map(|f| f.locked_until.saturating_sub(now))
            .max()
            .unwrap_or(0);
        if wait > 0 {
            Err(wait)
        } else {
            Ok(())
        }
    }

    /// Records a failed attempt for every key.
    pub fn failed(&self, keys: &[String], now: u64) {
        let Ok(mut map) = self.failures.lock() else {
            return;
        };
        if map.len() >= MAX_ENTRIES {
            let horizon = self.max_lockout.as_secs().max(60) * 4;
            map.retain(|_, f| now.saturating_sub(f.last) < horizon);
        }
        for key in keys {
            let entry = map.entry(key.clone()).or_insert(Failures {
                count: 0,
                locked_until: 0,
                last: now,
            });
            // Old failures are forgiven after a quiet period.
            if now.saturating_sub(entry.last) > self.max_lockout.as_secs().max(60) * 4 {
                entry.count = 0;
            }
            entry.count += 1;
            entry.last = now;
            if entry.count > self.free_attempts {
                let exponent = (entry.count - self.free_attempts - 1).min(20);
                let lock = (1u64 << exponent).min(self.max_lockout.as_secs());
                entry.locked_until = now + lock;
            }
        }
    }

    /// Clears the counters after a successful login.
    pub fn succeeded(&self, keys: &[String]) {
        if let Ok(mut map) = self.failures.lock() {
            for key in keys {
                map.remove(key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_backs_off_exponentially_and_resets_on_success() {
        let throttle = LoginThrottle::new(3, Duration::from_secs(60));
        let keys = vec!["user:alice".to_string()];
        for _ in 0..3 {
            assert!(throttle.check(&keys, 100).is_ok());
            throttle.failed(&keys, 100);
        }
        assert!(throttle.check(&keys, 100).is_ok(), "three free attempts");
        throttle.failed(&keys, 100);
        assert_eq!(throttle.check(&keys, 100), Err(1));
        throttle.failed(&keys, 101);
        assert_eq!(throttle.check(&keys, 101), Err(2));
        for _ in 0..10 {
            throttle.failed(&keys, 101);
        }
        assert_eq!(throttle.check(&keys, 101), Err(60), "capped");
        let other = vec!["user:bob".to_string()];
        assert!(throttle.check(&other, 101).is_ok(), "others unaffected");
        throttle.succeeded(&keys);
        assert!(throttle.check(&keys, 101).is_ok());
    }

    #[test]
    fn revocation() {
        let revoked = RevokedSessions::default();
        assert!(!revoked.is_revoked("a"));
        revoked.revoke("a", 100, 0);
        assert!(revoked.is_revoked("a"));
    }
}
