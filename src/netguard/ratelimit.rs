//! Rate limits (GCRA, `governor`), keyed by who is asking: user, entity, address, or user and
//! path. Keys are 64-bit hashes of what they name, so a check allocates nothing; the hash is
//! keyed (per process, or by the deployment's session key when replicas share buckets), so
//! nobody can aim two identities at one bucket.

use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::{LimitKey, LimitSpec};
use crate::identity::Identity;

/// One limit with its buckets.
pub struct Limiter {
    /// The configuration.
    pub spec: LimitSpec,
    buckets: DefaultKeyedRateLimiter<u64>,
    /// Checks since the last size check (`len()` visits every shard: not on every request).
    checks: std::sync::atomic::AtomicU32,
}

/// Buckets beyond this are swept at once rather than waiting for the periodic sweep.
const MAX_KEYS: usize = 1_000_000;

impl Limiter {
    /// A limiter for `spec`.
    pub fn new(spec: LimitSpec) -> Limiter {
        let replenish = spec.per / spec.rate.get();
        let quota = Quota::with_period(replenish.max(Duration::from_nanos(1)))
            .unwrap_or_else(|| Quota::per_second(spec.rate))
            .allow_burst(spec.burst);
        Limiter {
            spec,
            buckets: RateLimiter::keyed(quota),
            checks: std::sync::atomic::AtomicU32::new(0),
        }
    }

    /// Looks at the size once every 4,096 checks.
    fn sweep_if_huge(&self) {
        let n = self
            .checks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if n % 4096 == 4095 && self.buckets.len() > MAX_KEYS {
            self.sweep();
        }
    }
}

impl Limiter {
    /// Takes one request from `key`'s bucket; `Err(retry after)` when it is empty.
    pub fn check(&self, key: u64) -> Result<(), Duration> {
        self.sweep_if_huge();
        self.buckets
            .check_key(&key)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    /// Drops buckets that are full again (they would behave exactly like absent ones) and
    /// returns their memory, so millions of distinct keys do not pile up.
    pub fn sweep(&self) {
        self.buckets.retain_recent();
        self.buckets.shrink_to_fit();
    }

    /// Keys held (for the `portcullis_rate_limit_buckets` gauge).
    pub fn keys_held(&self) -> usize {
        self.buckets.len()
    }
}

/// Hashes limit keys (SipHash-1-3) under a secret key.
#[derive(Clone)]
pub struct KeyHasher {
    key: [u8; 16],
}

impl Default for KeyHasher {
    /// A random key: right when buckets stay in this process.
    fn default() -> Self {
        KeyHasher {
            key: rand::random(),
        }
    }
}

impl KeyHasher {
    /// A key every replica derives alike from `secret`: shared buckets need equal hashes.
    pub fn derived_from(secret: &[u8]) -> KeyHasher {
        let mac = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
        let tag = ring::hmac::sign(&mac, b"portcullis rate-limit keys");
        let mut key = [0u8; 16];
        key.copy_from_slice(&tag.as_ref()[..16]);
        KeyHasher { key }
    }

    /// The bucket key of a request for `kind`; `None` when the key cannot be formed (no
    /// address on a non-IP listener).
    pub fn key(
        &self,
        kind: LimitKey,
        scope: usize,
        identity: Option<&Identity>,
        ip: Option<IpAddr>,
        path: &str,
    ) -> Option<u64> {
        let mut h = siphasher::sip::SipHasher13::new_with_key(&self.key);
        scope.hash(&mut h);
        match (kind, identity) {
            (LimitKey::Ip, _) | (_, None) => {
                0u8.hash(&mut h);
                ip?.hash(&mut h);
                if kind == LimitKey::UserPath {
                    path.hash(&mut h);
                }
            }
            (LimitKey::User, Some(who)) => {
                1u8.hash(&mut h);
                (&who.idp, &who.user_id).hash(&mut h);
            }
            (LimitKey::Entity, Some(who)) => match &who.entity {
                Some(entity) => {
                    2u8.hash(&mut h);
                    entity.hash(&mut h);
                }
                None => {
                    1u8.hash(&mut h);
                    (&who.idp, &who.user_id).hash(&mut h);
                }
            },
            (LimitKey::UserPath, Some(who)) => {
                3u8.hash(&mut h);
                (&who.idp, &who.user_id, path).hash(&mut h);
            }
            (LimitKey::Client, Some(who)) => match &who.client_id {
                Some(client) => {
                    4u8.hash(&mut h);
                    (&who.idp, client).hash(&mut h);
                }
                None => {
                    1u8.hash(&mut h);
                    (&who.idp, &who.user_id).hash(&mut h);
                }
            },
        }
        Some(h.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU32;

    fn spec(key: LimitKey, rate: u32, burst: u32) -> LimitSpec {
        LimitSpec {
            key,
            rate: NonZeroU32::new(rate).expect("rate"),
            per: Duration::from_secs(60),
            burst: NonZeroU32::new(burst).expect("burst"),
        }
    }

    #[test]
    fn bursts_then_refuses_with_a_retry_after() {
        let limiter = Limiter::new(spec(LimitKey::User, 60, 3));
        for _ in 0..3 {
            assert!(limiter.check(1).is_ok());
        }
        let wait = limiter.check(1).expect_err("over the limit");
        assert!(
            wait > Duration::from_millis(500) && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert!(limiter.check(2).is_ok(), "another key has its own bucket");
    }

    #[test]
    fn memory_stays_bounded_with_many_keys() {
        let limiter = Limiter::new(LimitSpec {
            per: Duration::from_millis(1),
            ..spec(LimitKey::Ip, 1000, 1)
        });
        for key in 0..200_000u64 {
            let _ = limiter.check(key);
        }
        assert_eq!(limiter.keys_held(), 200_000);
        std::thread::sleep(Duration::from_millis(20));
        limiter.sweep();
        assert_eq!(limiter.keys_held(), 0, "full buckets are dropped");
    }

    #[test]
    fn replicas_of_one_deployment_hash_alike_and_others_do_not() {
        let ip: Option<IpAddr> = Some("10.0.0.1".parse().expect("ip"));
        let key = |hasher: &KeyHasher| hasher.key(LimitKey::Ip, 0, None, ip, "/");
        let (a, b) = (
            KeyHasher::derived_from(b"one deployment's key"),
            KeyHasher::derived_from(b"one deployment's key"),
        );
        assert_eq!(key(&a), key(&b), "replicas share buckets");
        assert_ne!(key(&a), key(&KeyHasher::derived_from(b"another key")));
        assert_ne!(key(&KeyHasher::default()), key(&KeyHasher::default()));
    }

    #[test]
    fn keys_separate_users_entities_and_paths() {
        let hasher = KeyHasher::default();
        let who = |user: &str, entity: Option<&str>| Identity {
            user_id: user.into(),
            email: None,
            name: None,
            user_type: crate::config::UserType::External,
            roles: vec![],
            entity: entity.map(Into::into),
            custom: Default::default(),
            idp: "corp".into(),
            auth_method: crate::identity::AuthMethod::Oidc,
            mfa: false,
            client_id: None,
        };
        let (a, b) = (who("a", Some("acme")), who("b", Some("acme")));
        let ip: Option<IpAddr> = Some("10.0.0.1".parse().expect("ip"));
        let k = |kind, id: Option<&Identity>, path| hasher.key(kind, 0, id, ip, path);
        assert_ne!(
            k(LimitKey::User, Some(&a), "/"),
            k(LimitKey::User, Some(&b), "/")
        );
        assert_eq!(
            k(LimitKey::Entity, Some(&a), "/"),
            k(LimitKey::Entity, Some(&b), "/")
        );
        assert_ne!(
            k(LimitKey::UserPath, Some(&a), "/x"),
            k(LimitKey::UserPath, Some(&a), "/y")
        );
        assert_eq!(
            k(LimitKey::Ip, Some(&a), "/"),
            k(LimitKey::Ip, Some(&b), "/")
        );
        // One client's tokens share a bucket whatever their subject; without a client id
        // (a person's session) the bucket is the user's.
        let bot = |user: &str, client: &str| Identity {
            client_id: Some(client.into()),
            ..who(user, None)
        };
        assert_eq!(
            k(LimitKey::Client, Some(&bot("x", "sync")), "/"),
            k(LimitKey::Client, Some(&bot("y", "sync")), "/")
        );
        assert_ne!(
            k(LimitKey::Client, Some(&bot("x", "sync")), "/"),
            k(LimitKey::Client, Some(&bot("x", "other")), "/")
        );
        assert_eq!(
            k(LimitKey::Client, Some(&a), "/"),
            k(LimitKey::User, Some(&a), "/")
        );
        assert_eq!(
            k(LimitKey::User, None, "/"),
            k(LimitKey::Ip, None, "/"),
            "anonymous: by address"
        );
        assert_ne!(
            hasher.key(LimitKey::User, 1, Some(&a), ip, "/"),
            k(LimitKey::User, Some(&a), "/"),
            "scopes apart"
        );
        assert_eq!(hasher.key(LimitKey::Ip, 0, None, None, "/"), None);
    }
}
