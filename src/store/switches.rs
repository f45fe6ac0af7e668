//! Kill switches: a user, an entity or an app turned off by an operator, until a moment or
//! until turned on again. Checked on every request (after the session is read) and at
//! sign-in; with `store.kind: redis` every replica holds the same set (`redis` syncs it) and
//! a restart reads it back.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{OnceLock, RwLock};

/// What a kill switch turns off.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    /// A user id (of any identity provider).
    User(String),
    /// Every user of a tenant.
    Entity(String),
    /// An app: it answers 503 as with `enabled: false`.
    App(String),
}

impl Target {
    /// `user:<id>`, `entity:<id>`, `app:<id>`: the switch's name in the shared store.
    pub fn key(&self) -> String {
        match self {
            Target::User(id) => format!("user:{id}"),
            Target::Entity(id) => format!("entity:{id}"),
            Target::App(id) => format!("app:{id}"),
        }
    }
}

/// One switch turned off.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Switch {
    /// What.
    pub target: Target,
    /// Until when (unix seconds); `None`: until turned on again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<u64>,
    /// Why, as the operator said it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Who turned it off (the admin token's name).
    pub by: String,
    /// When (unix seconds).
    pub at: u64,
}

impl Switch {
    fn holds(&self, now: u64) -> bool {
        self.until.is_none_or(|until| until > now)
    }
}

/// A change of a switch, as replicas share it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SwitchChange {
    /// Turned off.
    Off(Switch),
    /// Turned on again.
    On(Target),
}

/// Which switch stops a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disabled {
    /// The user is disabled.
    User,
    /// The user's entity is disabled.
    Entity,
}

/// Every switch turned off, by kind, looked up by `&str`.
#[derive(Default)]
pub struct KillSwitches {
    users: RwLock<HashMap<String, Switch>>,
    entities: RwLock<HashMap<String, Switch>>,
    apps: RwLock<HashMap<String, Switch>>,
    /// None turned off: the per-request check is one atomic load.
    any: AtomicBool,
    /// Where changes made here go to be shared (`store.kind: redis`); unset in memory.
    outbox: OnceLock<tokio::sync::mpsc::Sender<SwitchChange>>,
}

impl KillSwitches {
    /// Shares every change made here from now on through `outbox`.
    pub fn share_through(&self, outbox: tokio::sync::mpsc::Sender<SwitchChange>) {
        let _ = self.outbox.set(outbox);
    }

    /// Applies `change` here and shares it with the other replicas.
    pub fn change(&self, change: SwitchChange) {
        self.apply(&change);
        if let Some(outbox) = self.outbox.get() {
            if outbox.try_send(change).is_err() {
                tracing::warn!("a kill switch could not be queued for the other replicas");
            }
        }
    }

    /// Applies a change made elsewhere (not shared again).
    pub fn apply(&self, change: &SwitchChange) {
        let target = match change {
            SwitchChange::Off(switch) => &switch.target,
            SwitchChange::On(target) => target,
        };
        let (map, id) = self.map(target);
        if let Ok(mut map) = map.write() {
            match change {
                SwitchChange::Off(switch) => {
                    map.insert(id.to_string(), switch.clone());
                }
                SwitchChange::On(_) => {
                    map.remove(id);
                }
            }
        }
        self.any.store(true, Ordering::Release);
    }

    /// Replaces every switch with `all` (a full read of the shared set).
    pub fn replace_all(&self, all: Vec<Switch>) {
        for map in [&self.users, &self.entities, &self.apps] {
            if let Ok(mut map) = map.write() {
                map.clear();
            }
        }
        for switch in all {
            self.apply(&SwitchChange::Off(switch));
        }
    }

    fn map<'t>(&self, target: &'t Target) -> (&RwLock<HashMap<String, Switch>>, &'t str) {
        match target {
            Target::User(id) => (&self.users, id),
            Target::Entity(id) => (&self.entities, id),
            Target::App(id) => (&self.apps, id),
        }
    }

    /// Whether any switch was ever turned off here: while not, a request need not look (nor
    /// read the clock).
    pub fn any_set(&self) -> bool {
        self.any.load(Ordering::Acquire)
    }

    /// Which switch, if any, stops `user` (of `entity`) at `now`. A poisoned lock stops.
    pub fn stops(&self, user: &str, entity: Option<&str>, now: u64) -> Option<Disabled> {
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        let off = |map: &RwLock<HashMap<String, Switch>>, id: &str| {
            map.read()
                .map_or(true, |map| map.get(id).is_some_and(|s| s.holds(now)))
        };
        if off(&self.users, user) {
            return Some(Disabled::User);
        }
        entity
            .filter(|entity| off(&self.entities, entity))
            .map(|_| Disabled::Entity)
    }

    /// True while `app` is turned off at `now`.
    pub fn app_off(&self, app: &str, now: u64) -> bool {
        self.any.load(Ordering::Acquire)
            && self
                .apps
                .read()
                .map_or(true, |apps| apps.get(app).is_some_and(|s| s.holds(now)))
    }

    /// Every switch turned off at `now`, users, then entities, then apps.
    pub fn list(&self, now: u64) -> Vec<Switch> {
        let mut all = Vec::new();
        for map in [&self.users, &self.entities, &self.apps] {
            if let Ok(map) = map.read() {
                let mut switches: Vec<Switch> =
                    map.values().filter(|s| s.holds(now)).cloned().collect();
                switches.sort_by_key(|s| s.target.key());
                all.extend(switches);
            }
        }
        all
    }
}
