//! Config types for who may do what: claim mapping per provider, identity mapping rules,
//! per-app access layers, per-path rules and entity isolation. Compiled once; the
//! `identity` and `policy` modules evaluate them.

use std::collections::HashMap;

use super::UserType;
use crate::route::PathGlob;

/// A claim, by name or by dotted path into nested objects (`address.country`). A name that
/// exists as a top-level key is used as is, so namespaced claims such as
/// `https://example.com/roles` work too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimPath(pub String);

impl ClaimPath {
    /// The value at this path in `claims`, if any.
    pub fn lookup<'a>(&self, claims: &'a serde_json::Value) -> Option<&'a serde_json::Value> {
        if let Some(v) = claims.get(&self.0) {
            return Some(v);
        }
        let mut current = claims;
        for part in self.0.split('.') {
            current = current.get(part)?;
        }
        Some(current)
    }

    /// A single string: a string claim, a number or boolean as text, or the first string of
    /// an array.
    pub fn string(&self, claims: &serde_json::Value) -> Option<String> {
        match self.lookup(claims)? {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            serde_json::Value::Bool(b) => Some(b.to_string()),
            serde_json::Value::Array(items) => {
                items.iter().find_map(|v| v.as_str()).map(Into::into)
            }
            _ => None,
        }
    }

    /// Every string: an array's strings, or a single string (a space- or comma-separated
    /// string is *not* split: IdPs differ and guessing would invent groups).
    pub fn strings(&self, claims: &serde_json::Value) -> Vec<String> {
        match self.lookup(claims) {
            Some(serde_json::Value::Array(items)) => items
                .iter()
                .filter_map(|v| match v {
                    serde_json::Value::String(s) => Some(s.clone()),
                    serde_json::Value::Number(n) => Some(n.to_string()),
                    _ => None,
                })
                .collect(),
            Some(serde_json::Value::String(s)) => vec![s.clone()],
            _ => Vec::new(),
        }
    }
}

/// `identity_providers[].claims`: which claims give the identity's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimMapping {
    /// User id (default `sub`).
    pub user_id: ClaimPath,
    /// E-mail (default `email`).
    pub email: ClaimPath,
    /// Display name (default `name`).
    pub name: ClaimPath,
    /// Groups (default `groups`): an array or a single string.
    pub groups: ClaimPath,
    /// Entity (tenant), when a claim carries it.
    pub entity: Option<ClaimPath>,
    /// `custom` key → claim.
    pub custom: Vec<(String, ClaimPath)>,
}

impl Default for ClaimMapping {
    fn default() -> Self {
        ClaimMapping {
            user_id: ClaimPath("sub".into()),
            email: ClaimPath("email".into()),
            name: ClaimPath("name".into()),
            groups: ClaimPath("groups".into()),
            entity: None,
            custom: Vec::new(),
        }
    }
}

/// An e-mail domain to match: exact (`corp.example.com`) or any subdomain
/// (`*.corp.example.com`), compared label by label, lower-case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainPattern {
    /// Exactly this domain.
    Exact(String),
    /// Any subdomain of this domain (not the domain itself).
    Subdomains(String),
}

impl DomainPattern {
    /// Matches the domain of an e-mail address with exactly one `@`.
    pub fn matches_email(&self, email: &str) -> bool {
        let mut parts = email.split('@');
        let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
            return false;
        };
        if local.is_empty() {
            return false;
        }
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        match self {
            DomainPattern::Exact(d) => domain == *d,
            DomainPattern::Subdomains(d) => domain
                .strip_suffix(d.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
        }
    }
}

/// Conditions on a freshly signed-in user; all that are set must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Matcher {
    /// The e-mail's domain.
    pub email_domain: Option<DomainPattern>,
    /// Member of this group.
    pub group: Option<String>,
    /// Signed in with this provider.
    pub provider: Option<String>,
    /// This claim has this value (or contains it, for arrays).
    pub claim: Option<(ClaimPath, String)>,
}

/// `identity.roles[]`: a role granted when the matcher holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleRule {
    /// Role name.
    pub role: String,
    /// When.
    pub when: Matcher,
}

/// `identity:` — how claims become user type, roles and entity (applied once, at login).
#[derive(Debug, Clone, Default)]
pub struct IdentityMapping {
    /// A user matching any of these is `internal-user`; everyone else `external-user`.
    pub internal_users: Vec<Matcher>,
    /// Role rules.
    pub roles: Vec<RoleRule>,
    /// Groups starting with this prefix become roles as they are.
    pub groups_as_roles: Option<String>,
    /// Entity by e-mail domain (exact, lower-case) when no claim gave one.
    pub entity_by_email_domain: HashMap<String, String>,
    /// Entity by group when neither a claim nor the domain gave one; a user in groups that
    /// map to different entities gets none (ambiguous: deny on doubt).
    pub entity_by_group: HashMap<String, String>,
}

/// Who may pass one access layer set. `None` means "no restriction from this set".
#[derive(Debug, Clone, Default)]
pub struct Requirements {
    /// User types admitted.
    pub user_types: Option<Vec<UserType>>,
    /// Entities admitted (applies to external users; internal users are not tenant-bound).
    pub entities: Option<Vec<String>>,
    /// Any of these roles.
    pub roles: Option<Vec<String>>,
    /// Only these users (user id or e-mail).
    pub users: Option<Vec<String>>,
    /// Users admitted regardless of `roles` and `users`.
    pub override_users: Vec<String>,
    /// Entities admitted regardless of `roles` and `users`.
    pub override_entities: Vec<String>,
    /// A second factor is required.
    pub require_mfa: bool,
    /// Only sessions from these identity providers.
    pub identity_providers: Option<Vec<String>>,
}

/// `apps[].rules[]`: narrows access for matching paths and methods; first match wins.
#[derive(Debug, Clone)]
pub struct PathRule {
    /// Name for explanations and audit records (default `rules[N]`).
    pub name: String,
    /// Path globs on the normalised path.
    pub paths: Vec<PathGlob>,
    /// Methods (upper-case); empty = any.
    pub methods: Vec<String>,
    /// Refuse every matching request.
    pub deny: bool,
    /// Additional requirements (all app layers apply too).
    pub access: Requirements,
    /// Addresses allowed for these paths (on top of the app's and the server's).
    pub ip_allowlist: Option<crate::config::IpAllowlist>,
    /// Rate limits for these paths (on top of the app's).
    pub rate_limits: Vec<crate::config::LimitSpec>,
}

/// `apps[].entity_scope`: where a request names the entity whose data it touches.
#[derive(Debug, Clone)]
pub struct EntityScope {
    /// `/api/entities/{entity}/**` split at the placeholder.
    pub path: Option<EntityPathPattern>,
    /// Query parameter naming the entity.
    pub query_param: Option<String>,
    /// Internal users are held to their own entity too.
    pub strict: bool,
}

/// A path pattern with one `{entity}` segment.
#[derive(Debug, Clone)]
pub struct EntityPathPattern {
    /// Literal segments before the placeholder.
    pub before: Vec<String>,
    /// The remainder after the entity segment, as a glob (`/**` when the pattern ends so).
    pub after: PathGlob,
    /// As written.
    pub source: String,
}

impl EntityPathPattern {
    /// The entity segment of `path`, when `path` matches the pattern.
    pub fn entity<'p>(&self, path: &'p str) -> Option<&'p str> {
        let mut rest = path.strip_prefix('/')?;
        for literal in &self.before {
            let (segment, tail) = rest.split_once('/').unwrap_or((rest, ""));
            if segment != literal {
                return None;
            }
            rest = tail;
        }
        let (entity, tail) = match rest.split_once('/') {
            Some((e, t)) => (e, &path[path.len() - t.len() - 1..]),
            None => (rest, "/"),
        };
        if entity.is_empty() {
            return None;
        }
        self.after.matches(tail).then_some(entity)
    }
}
