//! The admin API's operations in plain Rust: who may call (bearer tokens with scopes) and what
//! each call does to the state every replica shares (sessions, cutoffs, kill switches). The
//! shell (`admin`) speaks HTTP and writes the audit record.

use std::sync::Arc;

use serde_json::{json, Value};
use subtle::ConstantTimeEq;

use crate::config::{AdminScope, AdminToken, Config};
use crate::store::{
    Cutoff, KillSwitches, LiveSessions, Owner, RevokedSessions, SessionRecord, Switch,
    SwitchChange, Target,
};

/// What a successful reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// SHA-256 (hex) of the file now in force.
    pub sha256: String,
    /// Settings that changed but only take effect at the next process handover (listeners,
    /// store, audit trail, …), by key.
    pub needs_handover: Vec<String>,
}

/// Reading the configuration file again and swapping it in (the shell does it; the admin API
/// and `SIGHUP` ask for it).
pub trait Reload: Send + Sync {
    /// Reloads now, on behalf of `by` (audit). `Err`: every problem, as `check` prints them;
    /// the running configuration is kept.
    fn reload<'a>(
        &'a self,
        by: &'a str,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Reloaded, Vec<String>>> + Send + 'a>,
    >;
}

/// Why a call was refused; each maps to one status and a message for the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// No token, or one that is not configured.
    #[error("a valid admin token is required (Authorization: Bearer …)")]
    Unauthorized,
    /// The token (named) lacks the scope the call needs.
    #[error("this token lacks the `{scope}` scope")]
    Forbidden {
        /// The scope the call needs.
        scope: &'static str,
        /// The token's name.
        caller: String,
    },
    /// The request cannot be understood.
    #[error("{0}")]
    BadRequest(String),
    /// The shared store did not answer.
    #[error("the session index is unavailable: the shared store did not answer")]
    Unavailable,
    /// A reload found problems in the file; the running configuration is kept.
    #[error("the configuration file has problems; the running configuration is kept")]
    ConfigRefused(Vec<String>),
}

impl ControlError {
    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            ControlError::Unauthorized => 401,
            ControlError::Forbidden { .. } => 403,
            ControlError::BadRequest(_) => 400,
            ControlError::Unavailable => 503,
            ControlError::ConfigRefused(_) => 422,
        }
    }
}

/// A token as it is checked: the SHA-256 of its value, so that every comparison is over
/// equal lengths and in constant time.
struct Caller {
    name: String,
    digest: [u8; 32],
    scopes: Vec<AdminScope>,
}

/// The admin API's state and operations.
pub struct Control {
    callers: Vec<Caller>,
    apps: Vec<String>,
    /// The longest a session lives: how long a revoked session id must be remembered.
    session_lifetime: u64,
    revoked: Arc<RevokedSessions>,
    sessions: Arc<LiveSessions>,
    switches: Arc<KillSwitches>,
    /// `audit.personal_data: pseudonymised`: a user's data in the trail can be forgotten.
    forgettable: bool,
}

fn digest(token: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, token).as_ref());
    out
}

/// What a call names: exactly one of `sid`, `user`, `entity`, `idp`, `app`, `all` (the admin
/// API's JSON body; the console fills it from a form).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selector {
    /// One session.
    pub sid: Option<String>,
    /// A user's sessions, or the user (disable).
    pub user: Option<String>,
    /// An entity's sessions, or the entity (disable).
    pub entity: Option<String>,
    /// A provider's sessions.
    pub idp: Option<String>,
    /// An app (disable).
    pub app: Option<String>,
    /// Every session.
    #[serde(default)]
    pub all: bool,
    /// RFC 3339 (disable only).
    pub until: Option<String>,
    /// Free text (disable only).
    pub reason: Option<String>,
}

impl Control {
    /// The admin API of `config`, over the state the gateway uses.
    pub fn new(
        config: &Config,
        revoked: Arc<RevokedSessions>,
        sessions: Arc<LiveSessions>,
        switches: Arc<KillSwitches>,
    ) -> Control {
        Control {
            callers: config.admin.tokens.iter().map(caller_of).collect(),
            apps: config.apps.iter().map(|a| a.id.clone()).collect(),
            session_lifetime: config.session.lifetime.as_secs(),
            revoked,
            sessions,
            switches,
            forgettable: config.audit.personal_keys.is_some(),
        }
    }

    /// `POST /api/v1/forget {"user": …}`: the user's sessions are revoked everywhere; the
    /// caller then asks the audit writer to delete the user's key. The user id, for that.
    pub async fn forget(&self, body: &[u8], now: u64) -> Result<String, ControlError> {
        if !self.forgettable {
            return Err(ControlError::BadRequest(
                "audit.personal_data is plain: records name users in clear and cannot be made unreadable without rewriting the trail; set personal_data: pseudonymised (docs/operations.md, Retention and erasure)".into(),
            ));
        }
        let selector = parse(body)?;
        let Selector {
            user: Some(user),
            sid: None,
            entity: None,
            idp: None,
            app: None,
            all: false,
            ..
        } = selector
        else {
            return Err(ControlError::BadRequest(
                "forget takes exactly one user: {\"user\": \"ID\"}".into(),
            ));
        };
        let only_user = Selector {
            user: Some(user.clone()),
            ..Selector::default()
        };
        self.revoke_selected(only_user, now).await?;
        Ok(user)
    }

    /// The user a revoke, disable or enable body names, if any: the admin call's record names
    /// them in `user`, so that a pseudonymised trail seals the id like any other mention.
    pub fn named_user(body: &[u8]) -> Option<String> {
        parse(body).ok()?.user
    }

    /// The name of the token in `authorization` (`Bearer <token>`), if it may do `needs`.
    pub fn caller(
        &self,
        authorization: Option<&str>,
        needs: AdminScope,
    ) -> Result<&str, ControlError> {
        let presented = authorization
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(|t| digest(t.trim().as_bytes()))
            .ok_or(ControlError::Unauthorized)?;
        // Every token is compared, whichever matches: the time says nothing about which.
        let mut found = None;
        for caller in &self.callers {
            if bool::from(caller.digest.ct_eq(&presented)) {
                found = Some(caller);
            }
        }
        let caller = found.ok_or(ControlError::Unauthorized)?;
        if caller.scopes.contains(&needs) {
            Ok(&caller.name)
        } else {
            Err(ControlError::Forbidden {
                scope: needs.into(),
                caller: caller.name.clone(),
            })
        }
    }

    /// `GET /api/v1/sessions?user=…|entity=…|idp=…`: the live sessions, revoked ones left out.
    pub async fn sessions(&self, query: Option<&str>, now: u64) -> Result<Value, ControlError> {
        let pairs: Vec<(String, String)> =
            url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
                .into_owned()
                .collect();
        let value = |key: &str| {
            pairs
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        };
        let owner = match (value("user"), value("entity"), value("idp")) {
            (Some(user), None, None) => Owner::User(user),
            (None, Some(entity), None) => Owner::Entity(entity),
            (None, None, Some(idp)) => Owner::Provider(idp),
            (None, None, None) => Owner::All,
            _ => {
                return Err(ControlError::BadRequest(
                    "name at most one of user, entity, idp".into(),
                ))
            }
        };
        let live = self.live(owner, now).await?;
        Ok(json!({ "sessions": live.iter().map(session_json).collect::<Vec<_>>() }))
    }

    /// Live sessions of `owner` that no revocation ends yet.
    pub async fn live(
        &self,
        owner: Owner<'_>,
        now: u64,
    ) -> Result<Vec<SessionRecord>, ControlError> {
        let listed = self
            .sessions
            .of(owner, now)
            .await
            .map_err(|_| ControlError::Unavailable)?;
        Ok(listed
            .into_iter()
            .filter(|r| {
                !self.revoked.is_revoked(&r.sid)
                    && !self.revoked.is_cut_off(
                        &r.idp,
                        &r.user_id,
                        r.entity.as_deref(),
                        r.issued_at,
                    )
            })
            .collect())
    }

    /// `POST /api/v1/revoke` with one of `sid`, `user`, `entity`, `idp`, `all: true`: every
    /// matching session is refused from now on, on every replica. Returns the answer and the
    /// audit detail.
    pub async fn revoke(&self, body: &[u8], now: u64) -> Result<(Value, String), ControlError> {
        self.revoke_selected(parse(body)?, now).await
    }

    /// [`Control::revoke`] of a parsed body.
    pub async fn revoke_selected(
        &self,
        selector: Selector,
        now: u64,
    ) -> Result<(Value, String), ControlError> {
        let (owner, cutoff, detail) = match &selector {
            Selector {
                sid: Some(sid),
                user: None,
                entity: None,
                idp: None,
                app: None,
                all: false,
                ..
            } => {
                self.revoked
                    .revoke(sid, now.saturating_add(self.session_lifetime), now);
                return Ok((json!({ "revoked": 1 }), format!("sid={sid}")));
            }
            Selector {
                sid: None,
                user: Some(user),
                entity: None,
                idp: None,
                app: None,
                all: false,
                ..
            } => (
                Owner::User(user),
                Cutoff::User { user: user.clone() },
                format!("user={user}"),
            ),
            Selector {
                sid: None,
                user: None,
                entity: Some(entity),
                idp: None,
                app: None,
                all: false,
                ..
            } => (
                Owner::Entity(entity),
                Cutoff::Entity {
                    entity: entity.clone(),
                },
                format!("entity={entity}"),
            ),
            Selector {
                sid: None,
                user: None,
                entity: None,
                idp: Some(idp),
                app: None,
                all: false,
                ..
            } => (
                Owner::Provider(idp),
                Cutoff::Provider { idp: idp.clone() },
                format!("idp={idp}"),
            ),
            Selector {
                sid: None,
                user: None,
                entity: None,
                idp: None,
                app: None,
                all: true,
                ..
            } => (Owner::All, Cutoff::All, "all".to_string()),
            _ => {
                return Err(ControlError::BadRequest(
                    "name exactly one of sid, user, entity, idp, or all: true".into(),
                ))
            }
        };
        // Counted before the cutoff (which hides them); the index may be unreachable, the
        // cutoff never is.
        let count = self.live(owner, now).await.map(|l| l.len()).ok();
        self.revoked.cut_off(cutoff, now);
        Ok((json!({ "revoked": count }), detail))
    }

    /// `POST /api/v1/disable` with one of `user`, `entity`, `app`, and optional `until`
    /// (RFC 3339) and `reason`.
    pub fn disable(
        &self,
        body: &[u8],
        by: &str,
        now: u64,
    ) -> Result<(Value, String), ControlError> {
        self.disable_selected(parse(body)?, by, now)
    }

    /// [`Control::disable`] of a parsed body.
    pub fn disable_selected(
        &self,
        selector: Selector,
        by: &str,
        now: u64,
    ) -> Result<(Value, String), ControlError> {
        let target = self.target(&selector)?;
        let until = match &selector.until {
            Some(text) => {
                let at = chrono::DateTime::parse_from_rfc3339(text).map_err(|_| {
                    ControlError::BadRequest(format!("until `{text}` is not an RFC 3339 time"))
                })?;
                let at = u64::try_from(at.timestamp()).unwrap_or(0);
                if at <= now {
                    return Err(ControlError::BadRequest("until is in the past".into()));
                }
                Some(at)
            }
            None => None,
        };
        let detail = target.key();
        let switch = Switch {
            target,
            until,
            reason: selector.reason.clone(),
            by: by.to_string(),
            at: now,
        };
        let answer = json!({ "disabled": switch_json(&switch) });
        self.switches.change(SwitchChange::Off(switch));
        Ok((answer, detail))
    }

    /// `POST /api/v1/enable` with one of `user`, `entity`, `app`.
    pub fn enable(&self, body: &[u8]) -> Result<(Value, String), ControlError> {
        self.enable_selected(parse(body)?)
    }

    /// [`Control::enable`] of a parsed body.
    pub fn enable_selected(&self, selector: Selector) -> Result<(Value, String), ControlError> {
        if selector.until.is_some() || selector.reason.is_some() {
            return Err(ControlError::BadRequest(
                "enable takes no until or reason".into(),
            ));
        }
        let target = self.target(&selector)?;
        let detail = target.key();
        self.switches.change(SwitchChange::On(target));
        Ok((json!({ "enabled": detail }), detail))
    }

    /// `GET /api/v1/disabled`.
    pub fn disabled(&self, now: u64) -> Value {
        let all: Vec<Value> = self.switches(now).iter().map(switch_json).collect();
        json!({ "disabled": all })
    }

    /// The kill switches that hold at `now`.
    pub fn switches(&self, now: u64) -> Vec<Switch> {
        self.switches.list(now)
    }

    fn target(&self, selector: &Selector) -> Result<Target, ControlError> {
        let target = match selector {
            Selector {
                user: Some(user),
                entity: None,
                app: None,
                sid: None,
                idp: None,
                all: false,
                ..
            } => Target::User(user.clone()),
            Selector {
                user: None,
                entity: Some(entity),
                app: None,
                sid: None,
                idp: None,
                all: false,
                ..
            } => Target::Entity(entity.clone()),
            Selector {
                user: None,
                entity: None,
                app: Some(app),
                sid: None,
                idp: None,
                all: false,
                ..
            } => {
                if !self.apps.contains(app) {
                    return Err(ControlError::BadRequest(format!(
                        "no app `{app}` is configured"
                    )));
                }
                Target::App(app.clone())
            }
            _ => {
                return Err(ControlError::BadRequest(
                    "name exactly one of user, entity, app".into(),
                ))
            }
        };
        Ok(target)
    }
}

fn caller_of(token: &AdminToken) -> Caller {
    Caller {
        name: token.name.clone(),
        digest: digest(token.token.expose().trim().as_bytes()),
        scopes: token.scopes.clone(),
    }
}

fn parse(body: &[u8]) -> Result<Selector, ControlError> {
    serde_json::from_slice(body)
        .map_err(|e| ControlError::BadRequest(format!("the body is not the expected JSON: {e}")))
}

/// Unix seconds as RFC 3339 in UTC (`2026-12-03T19:41:07Z`); empty when out of range.
pub fn rfc3339(unix: u64) -> String {
    i64::try_from(unix)
        .ok()
        .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
        .map_or_else(String::new, |t| {
            t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        })
}

fn session_json(r: &SessionRecord) -> Value {
    json!({
        "sid": r.sid,
        "user_id": r.user_id,
        "entity": r.entity,
        "idp": r.idp,
        "issued_at": rfc3339(r.issued_at),
        "expires_at": rfc3339(r.expires_at),
        "last_seen": rfc3339(r.last_seen),
    })
}

fn switch_json(s: &Switch) -> Value {
    let (kind, id) = match &s.target {
        Target::User(id) => ("user", id),
        Target::Entity(id) => ("entity", id),
        Target::App(id) => ("app", id),
    };
    json!({
        kind: id,
        "until": s.until.map(rfc3339),
        "reason": s.reason,
        "by": s.by,
        "at": rfc3339(s.at),
    })
}

#[cfg(test)]
mod tests;
