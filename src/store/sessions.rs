//! Live sessions by user, entity and identity provider: what an operator lists and ends, since
//! a session lives in its cookie and no server would otherwise know it.
//!
//! In memory by default; with `store.kind: redis` in Redis (one sorted set per user, entity,
//! provider, and one of all sessions, member: session id, score: its expiry; one hash per
//! session with what the admin API shows), so every replica sees the sessions of all. Sign-in
//! and sign-out pay one pipelined round trip; a failure is logged and counted, never refuses a
//! sign-in (the index serves the operator, not the request).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::redis::SharedStore;
use super::MAX_ENTRIES;

/// Which index a session is filed under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Owner<'a> {
    /// A user id (of whichever identity provider).
    User(&'a str),
    /// Every user of an identity provider.
    Provider(&'a str),
    /// Every user of a tenant.
    Entity(&'a str),
    /// Every session.
    All,
}

impl Owner<'_> {
    /// The index's name: `user:<user id>`, `idp:<provider>`, `entity:<entity>`, `all`.
    pub fn name(&self) -> String {
        match self {
            Owner::User(user) => format!("user:{user}"),
            Owner::Provider(idp) => format!("idp:{idp}"),
            Owner::Entity(entity) => format!("entity:{entity}"),
            Owner::All => "all".to_string(),
        }
    }
}

/// A live session as the index knows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SessionRecord {
    /// Session id.
    pub sid: String,
    /// User id.
    pub user_id: String,
    /// The user's entity.
    pub entity: Option<String>,
    /// Identity provider id.
    pub idp: String,
    /// Unix seconds of the sign-in.
    pub issued_at: u64,
    /// Unix seconds when it ends, whatever the activity.
    pub expires_at: u64,
    /// Unix seconds of the last request that rewrote its cookie.
    pub last_seen: u64,
}

impl SessionRecord {
    /// The indexes it is filed under.
    pub fn owners(&self) -> Vec<Owner<'_>> {
        let mut owners = vec![
            Owner::All,
            Owner::User(&self.user_id),
            Owner::Provider(&self.idp),
        ];
        if let Some(entity) = &self.entity {
            owners.push(Owner::Entity(entity));
        }
        owners
    }
}

/// Index name → session id → expiry; and the records.
#[derive(Default)]
struct Local {
    indexes: HashMap<String, HashMap<String, u64>>,
    records: HashMap<String, SessionRecord>,
}

/// The index of live sessions.
#[derive(Default)]
pub struct LiveSessions {
    /// Used without a shared store.
    local: Mutex<Local>,
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

    /// Files a new session.
    pub async fn started(&self, record: &SessionRecord, now: u64) {
        let names: Vec<String> = record.owners().iter().map(Owner::name).collect();
        if let Some(store) = &self.shared {
            if let Err(e) = store.index_session(&names, record).await {
                tracing::warn!(error = %e, "a new session could not be added to the shared index");
            }
            return;
        }
        let Ok(mut local) = self.local.lock() else {
            return;
        };
        if local.records.len() >= MAX_ENTRIES {
            local.records.retain(|_, r| r.expires_at > now);
            let live = std::mem::take(&mut local.indexes);
            local.indexes = live
                .into_iter()
                .filter_map(|(name, mut sids)| {
                    sids.retain(|_, expiry| *expiry > now);
                    (!sids.is_empty()).then_some((name, sids))
                })
                .collect();
        }
        for name in names {
            let sids = local.indexes.entry(name).or_default();
            sids.insert(record.sid.clone(), record.expires_at);
        }
        local.records.insert(record.sid.clone(), record.clone());
    }

    /// Notes a request that rewrote the session's cookie (in the background with Redis).
    pub fn touched(&self, sid: &str, now: u64) {
        if let Some(store) = &self.shared {
            let (store, sid) = (store.clone(), sid.to_string());
            tokio::spawn(async move {
                let _ = store.touch_session(&sid, now).await;
            });
            return;
        }
        if let Ok(mut local) = self.local.lock() {
            if let Some(record) = local.records.get_mut(sid) {
                record.last_seen = now;
            }
        }
    }

    /// Removes a session that ended (signed out or revoked).
    pub async fn ended(&self, record_owner: &SessionRecord) {
        let names: Vec<String> = record_owner.owners().iter().map(Owner::name).collect();
        let sid = &record_owner.sid;
        if let Some(store) = &self.shared {
            if let Err(e) = store.unindex_session(&names, sid).await {
                tracing::warn!(error = %e, "an ended session could not be removed from the shared index");
            }
            return;
        }
        if let Ok(mut local) = self.local.lock() {
            for name in names {
                if let Some(sids) = local.indexes.get_mut(&name) {
                    sids.remove(sid);
                    if sids.is_empty() {
                        local.indexes.remove(&name);
                    }
                }
            }
            local.records.remove(sid);
        }
    }

    /// The live sessions of `owner` at `now`, soonest to expire first.
    pub async fn of(&self, owner: Owner<'_>, now: u64) -> Result<Vec<SessionRecord>, IndexError> {
        let name = owner.name();
        let mut records = match &self.shared {
            Some(store) => store
                .indexed_sessions(&name, now)
                .await
                .map_err(|_| IndexError::Unavailable)?,
            None => {
                let local = self.local.lock().map_err(|_| IndexError::Unavailable)?;
                local.indexes.get(&name).map_or_else(Vec::new, |sids| {
                    sids.iter()
                        .filter(|(_, expiry)| **expiry > now)
                        .filter_map(|(sid, _)| local.records.get(sid).cloned())
                        .collect()
                })
            }
        };
        records.sort_by(|a, b| (a.expires_at, &a.sid).cmp(&(b.expires_at, &b.sid)));
        Ok(records)
    }
}

/// Why the index could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IndexError {
    /// The shared store did not answer (or a lock was poisoned).
    #[error("the session index is unavailable")]
    Unavailable,
}
