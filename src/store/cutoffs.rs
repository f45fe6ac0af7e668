//! Sessions ended wholesale by an operator: every session of a user, of an entity, of an
//! identity provider, or every session, issued at or before a moment. A session lives in its
//! cookie, so these are checked against what the cookie says (who, and when it began) rather
//! than looked up by session id.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::RwLock;

/// What a wholesale revocation names.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "scope", rename_all = "kebab-case")]
pub enum Cutoff {
    /// One user (by user id, of whichever identity provider).
    User {
        /// User id.
        user: String,
    },
    /// Every user of a tenant.
    Entity {
        /// The entity.
        entity: String,
    },
    /// Every user of an identity provider.
    Provider {
        /// Provider id.
        idp: String,
    },
    /// Everyone.
    All,
}

/// The moments before which sessions are over, by scope.
#[derive(Default)]
pub struct Cutoffs {
    /// user id → unix seconds.
    users: RwLock<HashMap<String, u64>>,
    entities: RwLock<HashMap<String, u64>>,
    providers: RwLock<HashMap<String, u64>>,
    all: std::sync::atomic::AtomicU64,
    /// None yet: the per-request check is one atomic load.
    any: AtomicBool,
}

impl Cutoffs {
    /// Sessions of `cutoff`'s scope issued at or before `at` are over (a later cutoff of the
    /// same scope replaces an earlier one).
    pub fn insert(&self, cutoff: &Cutoff, at: u64) {
        let raise = |slot: &mut u64| *slot = (*slot).max(at);
        match cutoff {
            Cutoff::User { user } => {
                if let Ok(mut users) = self.users.write() {
                    raise(users.entry(user.clone()).or_default());
                }
            }
            Cutoff::Entity { entity } => {
                if let Ok(mut entities) = self.entities.write() {
                    raise(entities.entry(entity.clone()).or_default());
                }
            }
            Cutoff::Provider { idp } => {
                if let Ok(mut providers) = self.providers.write() {
                    raise(providers.entry(idp.clone()).or_default());
                }
            }
            Cutoff::All => {
                self.all.fetch_max(at, Ordering::AcqRel);
            }
        }
        self.any.store(true, Ordering::Release);
    }

    /// True when a session of (`idp`, `user`, `entity`) issued at `issued_at` was cut off.
    /// Looked up by `&str`: nothing is allocated. A poisoned lock counts as cut off.
    pub fn cut(&self, idp: &str, user: &str, entity: Option<&str>, issued_at: u64) -> bool {
        if !self.any.load(Ordering::Acquire) {
            return false;
        }
        if self.all.load(Ordering::Acquire) >= issued_at {
            return true;
        }
        let at_or_after = |at: Option<&u64>| at.is_some_and(|at| *at >= issued_at);
        let by_user = self
            .users
            .read()
            .map_or(true, |users| at_or_after(users.get(user)));
        let by_entity = entity.is_some_and(|entity| {
            self.entities
                .read()
                .map_or(true, |entities| at_or_after(entities.get(entity)))
        });
        let by_provider = self
            .providers
            .read()
            .map_or(true, |providers| at_or_after(providers.get(idp)));
        by_user || by_entity || by_provider
    }
}
