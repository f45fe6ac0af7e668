//! The identity of an authenticated user, as every later stage sees it.
//!
//! Built once at login (from IdP claims, SAML attributes or a local user entry) and stored
//! in the encrypted session; never recomputed per request.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::{ClaimMapping, IdentityMapping, Matcher, UserType};

/// How the user authenticated.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, strum::IntoStaticStr, strum::EnumIter,
)]
#[serde(rename_all = "kebab-case")]
#[strum(serialize_all = "kebab-case")]
pub enum AuthMethod {
    /// OpenID Connect.
    Oidc,
    /// SAML 2.0.
    Saml,
    /// A user listed in the config.
    Local,
    /// A service account's API key.
    ApiKey,
    /// A bearer JWT from a trusted issuer.
    BearerJwt,
    /// An opaque bearer token, checked at an introspection endpoint.
    BearerIntrospected,
}

impl AuthMethod {
    /// The kebab-case name (as serialised; the metric label).
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// Position in declaration order (indexes per-method counters).
    pub fn index(self) -> usize {
        self as usize
    }

    /// A machine client's credential (no browser, no sign-in page, no cookie).
    pub fn is_machine(self) -> bool {
        matches!(
            self,
            AuthMethod::ApiKey | AuthMethod::BearerJwt | AuthMethod::BearerIntrospected
        )
    }
}

/// Who is making the request (PRODUCT.md, "The model").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// Stable user id at the IdP.
    pub user_id: String,
    /// E-mail address, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Display name, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Internal staff or external user.
    pub user_type: UserType,
    /// Roles.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Tenant / organisation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entity: Option<String>,
    /// Extra values forwarded to the backend.
    #[serde(default)]
    pub custom: BTreeMap<String, String>,
    /// Identity provider id.
    pub idp: String,
    /// How the user signed in.
    pub auth_method: AuthMethod,
    /// A second factor was used.
    #[serde(default)]
    pub mfa: bool,
    /// The machine client: a bearer token's `client_id` (or `azp`), a service account's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
}

impl Identity {
    /// A user as `policy explain` imagines them (the command line and the console): signed in
    /// through `idp` by OIDC, nothing else known.
    pub fn imagined(
        user_id: &str,
        user_type: UserType,
        roles: Vec<String>,
        entity: Option<String>,
        idp: String,
        mfa: bool,
    ) -> Identity {
        Identity {
            user_id: user_id.to_string(),
            email: None,
            name: None,
            user_type,
            roles,
            entity,
            custom: BTreeMap::new(),
            idp,
            auth_method: AuthMethod::Oidc,
            mfa,
            client_id: None,
        }
    }
}

/// What a provider said about a user, before the mapping rules: claims (OIDC) or
/// attributes (SAML) as JSON, plus how the user signed in.
#[derive(Debug, Clone)]
pub struct Assertions<'a> {
    /// Provider id.
    pub idp: &'a str,
    /// How the user signed in.
    pub auth_method: AuthMethod,
    /// The claims, as a JSON object.
    pub claims: &'a serde_json::Value,
    /// The provider reported a second factor (`amr`/`acr`/authn context, TOTP).
    pub mfa: bool,
}

/// Why claims could not become an identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    /// The claim that gives the user id is absent or empty.
    #[error("the user id claim `{0}` is missing")]
    MissingUserId(String),
}

/// Longest accepted value of a single identity field; longer IdP values are refused rather
/// than cut, so two users can never collapse into one.
const MAX_FIELD: usize = 512;

/// Builds the identity from a provider's claims (its `claims:` mapping), then applies the
/// `identity:` rules. Runs once per login; the result lives in the session.
pub fn from_claims(
    source: &Assertions<'_>,
    claims: &ClaimMapping,
    rules: &IdentityMapping,
) -> Result<Identity, MappingError> {
    let values = source.claims;
    let user_id = claims
        .user_id
        .string(values)
        .filter(|s| !s.is_empty() && s.len() <= MAX_FIELD)
        .ok_or_else(|| MappingError::MissingUserId(claims.user_id.0.clone()))?;
    let bounded = |v: Option<String>| v.filter(|s| !s.is_empty() && s.len() <= MAX_FIELD);
    let groups = claims.groups.strings(values);
    let mut identity = Identity {
        user_id,
        email: bounded(claims.email.string(values)),
        name: bounded(claims.name.string(values)),
        user_type: UserType::External,
        roles: Vec::new(),
        entity: bounded(claims.entity.as_ref().and_then(|c| c.string(values))),
        custom: claims
            .custom
            .iter()
            .filter_map(|(key, path)| bounded(path.string(values)).map(|v| (key.clone(), v)))
            .collect(),
        idp: source.idp.to_string(),
        auth_method: source.auth_method,
        mfa: source.mfa,
        client_id: None,
    };
    apply_rules(&mut identity, &groups, values, rules);
    Ok(identity)
}

/// The `identity:` rules: internal users, roles (rules, then groups passed through by
/// prefix), entity from e-mail domain or group when no claim gave one. An identity that is
/// already internal (a local user marked so) stays internal.
pub fn apply_rules(
    identity: &mut Identity,
    groups: &[String],
    claims: &serde_json::Value,
    rules: &IdentityMapping,
) {
    let holds = |m: &Matcher| matcher_holds(m, identity, groups, claims);
    if rules.internal_users.iter().any(holds) {
        identity.user_type = UserType::Internal;
    }
    let mut roles: Vec<String> = std::mem::take(&mut identity.roles);
    for rule in &rules.roles {
        if matcher_holds(&rule.when, identity, groups, claims) {
            roles.push(rule.role.clone());
        }
    }
    if let Some(prefix) = &rules.groups_as_roles {
        roles.extend(
            groups
                .iter()
                .filter(|g| g.starts_with(prefix.as_str()))
                .cloned(),
        );
    }
    let mut seen = std::collections::HashSet::new();
    roles.retain(|r| seen.insert(r.clone()));
    identity.roles = roles;
    if identity.entity.is_none() {
        let domain_entity = identity.email.as_deref().and_then(|email| {
            let (local, domain) = email.split_once('@')?;
            if local.is_empty() || domain.contains('@') {
                return None;
            }
            let domain = domain.trim_end_matches('.');
            rules
                .entity_by_email_domain
                .get(&domain.to_ascii_lowercase())
                .cloned()
        });
        identity.entity = domain_entity.or_else(|| {
            let mut found = groups.iter().filter_map(|g| rules.entity_by_group.get(g));
            let first = found.next()?;
            // Groups naming two different entities: ambiguous, so none (deny on doubt).
            found.all(|e| e == first).then(|| first.clone())
        });
    }
}

fn matcher_holds(
    m: &Matcher,
    identity: &Identity,
    groups: &[String],
    claims: &serde_json::Value,
) -> bool {
    m.email_domain.as_ref().is_none_or(|d| {
        identity
            .email
            .as_deref()
            .is_some_and(|email| d.matches_email(email))
    }) && m.group.as_ref().is_none_or(|g| groups.contains(g))
        && m.provider.as_ref().is_none_or(|p| *p == identity.idp)
        && m.claim
            .as_ref()
            .is_none_or(|(path, want)| match path.lookup(claims) {
                Some(serde_json::Value::Array(items)) => items.iter().any(|v| value_is(v, want)),
                Some(v) => value_is(v, want),
                None => false,
            })
}

fn value_is(value: &serde_json::Value, want: &str) -> bool {
    match value {
        serde_json::Value::String(s) => s == want,
        serde_json::Value::Bool(b) => want == if *b { "true" } else { "false" },
        serde_json::Value::Number(n) => n.to_string() == want,
        _ => false,
    }
}

#[cfg(test)]
mod tests;
