//! Shared state that outlives one request: revoked sessions (ours and the OP's), failed-login
//! counters, single-flight token refreshes and replay memory for logout tokens.
//! In memory, per process. With `store.kind: redis`, replicas share it (`redis`): each keeps
//! its own view of revocations and lock-outs, so a signed-in request never waits on the
//! network; rate limits, replay memory and refreshes ask Redis when they are used.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// Most entries any map keeps; beyond it the oldest are pruned first, so memory stays bounded.
const MAX_ENTRIES: usize = 100_000;

/// A revocation as replicas share it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Revocation {
    /// A session signed out, until it would have expired (unix seconds).
    Session {
        /// Session id.
        sid: String,
        /// Its expiry.
        until: u64,
    },
    /// An OP session ended by the IdP, at `at`.
    OpSession {
        /// Provider id.
        idp: String,
        /// The OP's session id (OIDC `sid`, SAML SessionIndex).
        op_sid: String,
        /// When.
        at: u64,
    },
    /// Every session of a subject issued until `at`, ended by the IdP.
    Subject {
        /// Provider id.
        idp: String,
        /// The subject (OIDC `sub`, SAML NameID).
        sub: String,
        /// When.
        at: u64,
    },
    /// Every session of a user, entity, provider or everyone issued until `at`, ended by an
    /// operator.
    Wholesale {
        /// Whose.
        of: Cutoff,
        /// When.
        at: u64,
    },
}

impl Revocation {
    /// Until when it must be remembered (unix seconds).
    pub fn expires_at(&self) -> u64 {
        match self {
            Revocation::Session { until, .. } => *until,
            Revocation::OpSession { at, .. }
            | Revocation::Subject { at, .. }
            | Revocation::Wholesale { at, .. } => at.saturating_add(OP_LOGOUT_MEMORY.as_secs()),
        }
    }
}

/// Session ids ended before their expiry (logout), remembered until they would have expired;
/// and sessions the OP ended by back-channel logout, by OP session id or by subject.
#[derive(Default)]
pub struct RevokedSessions {
    by_sid: RwLock<HashMap<String, u64>>,
    /// idp → OP sid → unix seconds of the logout.
    by_op_sid: RwLock<OpLogouts>,
    /// idp → sub → unix seconds of the logout: sessions issued up to then are over.
    by_subject: RwLock<OpLogouts>,
    /// Nothing from the OP yet: the per-request check skips two lock acquisitions.
    any_op_logout: std::sync::atomic::AtomicBool,
    /// Sessions ended wholesale by an operator.
    cutoffs: Cutoffs,
    /// Where local revocations go to be shared (`store.kind: redis`); unset in memory.
    outbox: std::sync::OnceLock<tokio::sync::mpsc::Sender<Revocation>>,
}

/// Local revocations waiting to be shared, at most; beyond it the newest are kept locally only
/// (and logged), which a long Redis outage under a sign-out storm could reach.
pub const OUTBOX_CAPACITY: usize = 10_000;

impl RevokedSessions {
    /// Shares every revocation made here from now on through `outbox`.
    pub fn share_through(&self, outbox: tokio::sync::mpsc::Sender<Revocation>) {
        let _ = self.outbox.set(outbox);
    }

    fn share(&self, revocation: Revocation) {
        if let Some(outbox) = self.outbox.get() {
            if outbox.try_send(revocation).is_err() {
                tracing::warn!(
                    "a revocation could not be queued for the other replicas; it holds here"
                );
            }
        }
    }

    /// Applies a revocation made elsewhere (not shared again).
    pub fn apply(&self, revocation: &Revocation, now: u64) {
        match revocation {
            Revocation::Session { sid, until } => self.insert_sid(sid, *until, now),
            Revocation::OpSession { idp, op_sid, at } => {
                self.insert_op(idp, None, Some(op_sid), *at)
            }
            Revocation::Subject { idp, sub, at } => self.insert_op(idp, Some(sub), None, *at),
            Revocation::Wholesale { of, at } => self.cutoffs.insert(of, *at),
        }
    }

    /// Ends, at `now`, every session `of` names that began until then, on every replica.
    pub fn cut_off(&self, of: Cutoff, now: u64) {
        self.cutoffs.insert(&of, now);
        self.share(Revocation::Wholesale { of, at: now });
    }

    /// True when an operator ended the sessions of this user, entity or provider (or all)
    /// after this one began.
    pub fn is_cut_off(&self, idp: &str, user: &str, entity: Option<&str>, issued_at: u64) -> bool {
        self.cutoffs.cut(idp, user, entity, issued_at)
    }

    /// Remembers `sid` as revoked until `expires_at` (unix seconds).
    pub fn revoke(&self, sid: &str, expires_at: u64, now: u64) {
        self.insert_sid(sid, expires_at, now);
        self.share(Revocation::Session {
            sid: sid.to_string(),
            until: expires_at,
        });
    }

    fn insert_sid(&self, sid: &str, expires_at: u64, now: u64) {
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

    /// Ends, at `now`, the sessions of `idp` with this OP session id; or, when the OP names
    /// no session, every session of the subject issued until now (Back-Channel Logout §2.4).
    pub fn end_op_sessions(&self, idp: &str, sub: Option<&str>, op_sid: Option<&str>, now: u64) {
        self.insert_op(idp, sub, op_sid, now);
        let shared = match (op_sid, sub) {
            (Some(op_sid), _) => Revocation::OpSession {
                idp: idp.to_string(),
                op_sid: op_sid.to_string(),
                at: now,
            },
            (None, Some(sub)) => Revocation::Subject {
                idp: idp.to_string(),
                sub: sub.to_string(),
                at: now,
            },
            (None, None) => return,
        };
        self.share(shared);
    }

    fn insert_op(&self, idp: &str, sub: Option<&str>, op_sid: Option<&str>, now: u64) {
        let horizon = now.saturating_sub(OP_LOGOUT_MEMORY.as_secs());
        let sub = if op_sid.is_some() { None } else { sub };
        for (map, key) in [(&self.by_op_sid, op_sid), (&self.by_subject, sub)] {
            let (Some(key), Ok(mut map)) = (key, map.write()) else {
                continue;
            };
            let per_idp = map.entry(idp.to_string()).or_default();
            if per_idp.len() >= MAX_ENTRIES {
                per_idp.retain(|_, at| *at > horizon);
            }
            per_idp.insert(key.to_string(), now);
        }
        self.any_op_logout
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// True when the OP ended this session: its OP session id was logged out, or its subject
    /// was logged out after the session began. A poisoned lock counts as ended.
    pub fn ended_at_op(&self, idp: &str, sub: &str, op_sid: Option<&str>, issued_at: u64) -> bool {
        if !self
            .any_op_logout
            .load(std::sync::atomic::Ordering::Acquire)
        {
            return false;
        }
        // Looked up by `&str` at both levels: nothing is allocated on the request path.
        let logged_out_at = |map: &RwLock<OpLogouts>, key: &str| -> Result<Option<u64>, ()> {
            let map = map.read().map_err(|_| ())?;
            Ok(map.get(idp).and_then(|per_idp| per_idp.get(key)).copied())
        };
        let by_sid = op_sid.is_some_and(|s| logged_out_at(&self.by_op_sid, s) != Ok(None));
        by_sid
            || match logged_out_at(&self.by_subject, sub) {
                Ok(at) => at.is_some_and(|at| at >= issued_at),
                Err(()) => true,
            }
    }
}

/// Back-channel logouts by provider, then by OP sid or subject.
type OpLogouts = HashMap<String, HashMap<String, u64>>;

/// How long a back-channel logout is remembered: longer than any session lives.
const OP_LOGOUT_MEMORY: Duration = Duration::from_secs(31 * 24 * 3600);

/// Token ids seen before (back-channel logout tokens), remembered until they expire.
#[derive(Default)]
pub struct SeenTokens {
    seen: Mutex<HashMap<String, u64>>,
}

impl SeenTokens {
    /// Was `id` recorded and is it still remembered? (Does not record it.) Fails closed.
    pub fn seen(&self, id: &str, now: u64) -> bool {
        self.seen
            .lock()
            .map_or(true, |map| map.get(id).is_some_and(|exp| *exp > now))
    }

    /// Records `jti`; false when it was already seen (a replay). Fails closed.
    pub fn first_use(&self, jti: &str, expires_at: u64, now: u64) -> bool {
        let Ok(mut map) = self.seen.lock() else {
            return false;
        };
        if map.len() >= MAX_ENTRIES {
            map.retain(|_, exp| *exp > now);
        }
        if map.contains_key(jti) {
            return false;
        }
        map.insert(jti.to_string(), expires_at.max(now + 300));
        true
    }
}

/// Runs one call per key at a time and shares its result with every concurrent caller, and
/// with callers that arrive within `keep` seconds after it finished (late requests that still
/// carry the old cookie must get the same answer, not a second refresh that a rotating OP
/// would treat as token reuse).
pub struct SingleFlight<T> {
    calls: Mutex<HashMap<String, Call<T>>>,
    keep: u64,
}

/// A shared call and when it began.
type Call<T> = (Arc<tokio::sync::OnceCell<T>>, u64);

impl<T: Clone> SingleFlight<T> {
    /// Results are shared for `keep` after the call began.
    pub fn new(keep: Duration) -> Self {
        SingleFlight {
            calls: Mutex::new(HashMap::new()),
            keep: keep.as_secs(),
        }
    }

    /// The result of `call` for `key`, run at most once per key; `true` for the caller that ran it.
    pub async fn run<F, Fut>(&self, key: String, now: u64, call: F) -> (T, bool)
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = T>,
    {
        let cell = {
            let mut calls = match self.calls.lock() {
                Ok(calls) => calls,
                Err(poisoned) => poisoned.into_inner(),
            };
            let keep = self.keep;
            calls.retain(|_, (_, started)| started.saturating_add(keep) > now);
            calls
                .entry(key)
                .or_insert_with(|| (Arc::new(tokio::sync::OnceCell::new()), now))
                .0
                .clone()
        };
        let mut ran = false;
        let value = cell
            .get_or_init(|| {
                ran = true;
                call()
            })
            .await
            .clone();
        (value, ran)
    }
}

/// A sign-in outcome as replicas share it, so that lock-outs count across all of them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ThrottleEvent {
    /// A failed attempt against these keys, at `at`.
    Failed {
        /// `user:<idp>:<name>`, `ip:<addr>`.
        keys: Vec<String>,
        /// Unix seconds.
        at: u64,
    },
    /// A successful sign-in: these keys' counters start again.
    Succeeded {
        /// The account's key.
        keys: Vec<String>,
    },
}

/// Failed logins per key (`user:<name>`, `ip:<addr>`), with exponential back-off.
pub struct LoginThrottle {
    free_attempts: u32,
    max_lockout: Duration,
    failures: Mutex<HashMap<String, Failures>>,
    /// Where local outcomes go to be shared (`store.kind: redis`); unset in memory.
    outbox: std::sync::OnceLock<tokio::sync::mpsc::Sender<ThrottleEvent>>,
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
            outbox: std::sync::OnceLock::new(),
        }
    }

    /// Shares every outcome recorded here from now on through `outbox`.
    pub fn share_through(&self, outbox: tokio::sync::mpsc::Sender<ThrottleEvent>) {
        let _ = self.outbox.set(outbox);
    }

    fn share(&self, event: ThrottleEvent) {
        if let Some(outbox) = self.outbox.get() {
            if outbox.try_send(event).is_err() {
                tracing::debug!("a sign-in outcome could not be queued for the other replicas");
            }
        }
    }

    /// Applies an outcome recorded by another replica (not shared again).
    pub fn apply(&self, event: &ThrottleEvent) {
        match event {
            ThrottleEvent::Failed { keys, at } => self.record_failure(keys, *at),
            ThrottleEvent::Succeeded { keys } => self.clear(keys),
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
        self.record_failure(keys, now);
        self.share(ThrottleEvent::Failed {
            keys: keys.to_vec(),
            at: now,
        });
    }

    fn record_failure(&self, keys: &[String], now: u64) {
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
        self.clear(keys);
        self.share(ThrottleEvent::Succeeded {
            keys: keys.to_vec(),
        });
    }

    fn clear(&self, keys: &[String]) {
        if let Ok(mut map) = self.failures.lock() {
            for key in keys {
                map.remove(key);
            }
        }
    }
}

pub mod cutoffs;
pub mod redis;
pub mod sessions;
pub mod switches;

pub use cutoffs::{Cutoff, Cutoffs};
pub use sessions::{LiveSessions, Owner, SessionRecord};
pub use switches::{Disabled, KillSwitches, Switch, SwitchChange, Target};

#[cfg(test)]
mod tests;
