//! Live sessions by user and by entity: what "sign this user (or tenant) out everywhere"
//! needs, since a session lives in its cookie and no server holds a list of them.
//!
//! In memory by default; with `store.kind: redis` the index is in Redis (one sorted set per
//! user and per entity, member: session id, score: its expiry), so every replica sees the
//! sessions of all. Sign-in and sign-out pay one pipelined round trip; a failure is logged
//! and counted, never refuses a sign-in (the index serves the operator, not the request).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::redis::SharedStore;
use super::MAX_ENTRIES;

/// Which index a session is filed under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Owner<'a> {
    /// `(idp, user id)`.
    User(&'a str, &'a str),
    /// A tenant.
    Entity(&'a str),
}

impl Owner<'_> {
    /// The index's name: `user:<idp>:<user id>`, `entity:<entity>`.
    pub fn name(&self) -> String {
        match self {
            Owner::User(idp, user) => format!("user:{idp}:{user}"),
            Owner::Entity(entity) => format!("entity:{entity}"),
        }
    }
}

/// The index of live sessions.
#[derive(Default)]
pub struct LiveSessions {
    /// Index name → session id → expiry (unix seconds); used without a shared store.
    local: Mutex<HashMap<String, HashMap<String, u64>>>,
    shared: Option<Arc<SharedStore>>,
}

impl LiveSessions {
    /// An index kept in `store`, which every replica reads.
    pub fn shared(store: Arc<SharedStore>) -> LiveSessions {
        LiveSessions {
            local: Mutex::default(),
            shared: Some(store),
        }
    }

    /// Files session `sid`, valid until `expires_at`, under each of `owners`.
    pub async fn started(&self, sid: &str, owners: &[Owner<'_>], expires_at: u64, now: u64) {
        let names: Vec<String> = owners.iter().map(Owner::name).collect();
        if let Some(store) = &self.shared {
            if let Err(e) = store.index_session(&names, sid, expires_at).await {
                tracing::warn!(error = %e, "a new session could not be added to the shared index");
            }
            return;
        }
        let Ok(mut local) = self.local.lock() else {
            return;
        };
        if local.len() >= MAX_ENTRIES {
            local.retain(|_, sessions| {
                sessions.retain(|_, expiry| *expiry > now);
                !sessions.is_empty()
            });
        }
        for name in names {
            let sessions = local.entry(name).or_default();
            sessions.retain(|_, expiry| *expiry > now);
            sessions.insert(sid.to_string(), expires_at);
        }
    }

    /// Removes a session that ended (signed out) from each of `owners`' indexes.
    pub async fn ended(&self, sid: &str, owners: &[Owner<'_>]) {
        let names: Vec<String> = owners.iter().map(Owner::name).collect();
        if let Some(store) = &self.shared {
            if let Err(e) = store.unindex_session(&names, sid).await {
                tracing::warn!(error = %e, "an ended session could not be removed from the shared index");
            }
            return;
        }
        if let Ok(mut local) = self.local.lock() {
            for name in names {
                if let Some(sessions) = local.get_mut(&name) {
                    sessions.remove(sid);
                    if sessions.is_empty() {
                        local.remove(&name);
                    }
                }
            }
        }
    }

    /// The live sessions of `owner` at `now`, with their expiries, soonest first.
    pub async fn of(&self, owner: Owner<'_>, now: u64) -> Result<Vec<(String, u64)>, IndexError> {
        let name = owner.name();
        let mut sessions = match &self.shared {
            Some(store) => store
                .indexed_sessions(&name, now)
                .await
                .map_err(|_| IndexError::Unavailable)?,
            None => {
                let local = self.local.lock().map_err(|_| IndexError::Unavailable)?;
                local.get(&name).map_or_else(Vec::new, |sessions| {
                    sessions
                        .iter()
                        .filter(|(_, expiry)| **expiry > now)
                        .map(|(sid, expiry)| (sid.clone(), *expiry))
                        .collect()
                })
            }
        };
        sessions.sort_by_key(|(sid, expiry)| (*expiry, sid.clone()));
        Ok(sessions)
    }
}

/// Why the index could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IndexError {
    /// The shared store did not answer (or a lock was poisoned).
    #[error("the session index is unavailable")]
    Unavailable,
}
