//! Access decisions as values with reasons. Pure: no I/O, no Pingora types.
//!
//! Forwarding requires a [`Permit`], and only this module can make one (its field is
//! private), so no code path can reach an upstream without a decision.

use std::sync::Arc;

use serde::Serialize;

use crate::config::{App, Requirements, UserType};
use crate::identity::Identity;

/// Why a request was allowed or refused. A closed set shared by audit records and metric
/// labels; `as_str` is the kebab-case name used in both.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    strum::IntoStaticStr,
    strum::EnumIter,
    strum::EnumString,
)]
#[serde(rename_all = "kebab-case")]
#[strum(serialize_all = "kebab-case")]
pub enum Reason {
    /// Allowed: the path is listed in the app's `public_paths`.
    PublicPath,
    /// Allowed: a signed-in user the app admits.
    Authenticated,
    /// The user's type is not among the app's `access.user_types`.
    UserTypeNotAllowed,
    /// No valid session or credential on a protected path.
    LoginRequired,
    /// The app is disabled.
    AppDisabled,
    /// No app serves this host and path.
    UnknownHost,
    /// The request line, path or headers are malformed.
    BadRequest,
    /// Plain HTTP to an app that requires HTTPS (answered with a redirect).
    HttpsRequired,
    /// An unknown Portcullis endpoint under the reserved prefix.
    UnknownEndpoint,
    /// A state-changing request to a Portcullis endpoint failed the CSRF checks.
    CsrfFailed,
    /// Too many failed logins for this user or address.
    LoginThrottled,
    /// A login attempt failed.
    LoginFailed,
    /// Headers too many or too large.
    HeadersTooLarge,
    /// Request target too long.
    UriTooLong,
    /// The session comes from an identity provider the app (or rule) does not accept.
    IdpNotAllowed,
    /// An external user's entity is not among the app's (or rule's) `entities`.
    EntityNotAllowed,
    /// None of the required roles.
    RoleMissing,
    /// Not in the `users` allowlist.
    UserNotAllowed,
    /// The request names another entity than the user's own (`entity_scope`).
    EntityMismatch,
    /// A `deny: true` rule matched.
    RuleDenied,
    /// A second factor is required and the session has none.
    MfaRequired,
    /// The signed identity assertion could not be made: nothing is forwarded.
    AssertionFailed,
    /// The client address is not in an enforced IP allowlist.
    IpNotAllowed,
    /// Over a rate limit.
    RateLimited,
    /// `Host` (or `:authority`) missing from an HTTP/1.1 request, repeated, or not a host
    /// and port (RFC 9112 §3.2).
    BadHost,
    /// An operator turned the user off (admin API kill switch).
    UserDisabled,
    /// An operator turned the user's entity off.
    EntityDisabled,
    /// A bearer token or API key was refused (forged, malformed, unknown, wrong issuer or
    /// audience, revoked; the audit `detail` says which check).
    CredentialInvalid,
    /// A bearer token or API key has expired (or is not valid yet).
    CredentialExpired,
    /// A bearer token lacks a scope the issuer's settings require.
    InsufficientScope,
    /// A credential could not be checked (issuer keys or introspection unreachable): refused.
    CredentialCheckUnavailable,
}

impl Reason {
    /// The kebab-case name (audit `reason`, metric label).
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Proof that a request may be forwarded to its app's upstream.
#[derive(Debug, Clone)]
pub struct Permit {
    app: Arc<App>,
    reason: Reason,
    rule: Option<usize>,
    ip_reported: bool,
}

impl Permit {
    /// The app the request is forwarded to.
    pub fn app(&self) -> &Arc<App> {
        &self.app
    }

    /// Why it was allowed.
    pub fn reason(&self) -> Reason {
        self.reason
    }

    /// The name of the path rule that matched, if any.
    pub fn rule(&self) -> Option<&str> {
        self.rule
            .and_then(|i| self.app.rules.get(i))
            .map(|r| r.name.as_str())
    }

    /// The index of the path rule that matched (its rate limits apply too).
    pub fn rule_index(&self) -> Option<usize> {
        self.rule
    }

    /// The client address missed an IP allowlist in `report` mode (forwarded, but flagged).
    pub fn ip_reported(&self) -> bool {
        self.ip_reported
    }

    /// Identity headers go upstream only for authenticated requests, never on public paths.
    pub fn carries_identity(&self) -> bool {
        self.reason == Reason::Authenticated
    }
}

/// The outcome of [`decide`].
#[derive(Debug, Clone)]
pub enum Decision {
    /// Forward, with the permit.
    Allow(Permit),
    /// Authenticate first (browser redirect or 401).
    LoginRequired,
    /// Refuse.
    Deny(Reason),
}

/// The parts of a request the policy looks at.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// Method, upper-case as sent.
    pub method: &'a str,
    /// The normalised path (the one that will be forwarded).
    pub path: &'a str,
    /// The raw query string, without `?`.
    pub query: Option<&'a str>,
    /// The client address (after trusted proxies); `None` when unknown, which no allowlist
    /// admits.
    pub client_ip: Option<std::net::IpAddr>,
}

/// How one layer ended, for [`explain`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// The layer let the request through.
    Pass,
    /// The layer refused (or, for `login`, asked for authentication).
    Fail,
    /// The layer did not apply.
    Skip,
}

/// One step of an explanation.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// Layer name (`enabled`, `public-path`, `rule`, `identity`, `user-type`, …).
    pub layer: &'static str,
    /// How it ended.
    pub verdict: Verdict,
    /// Why, in words.
    pub detail: String,
}

impl Decision {
    /// What `explain` says of the decision: the verdict, its reason, and what the client gets.
    pub fn answer(&self) -> (&'static str, &'static str, &'static str) {
        match self {
            Decision::Allow(permit) => ("allow", permit.reason().as_str(), "forwarded"),
            Decision::LoginRequired => ("login-required", "login-required", "302 to login / 401"),
            Decision::Deny(reason) => (
                "deny",
                reason.as_str(),
                match reason {
                    Reason::AppDisabled => "503",
                    Reason::UserDisabled | Reason::EntityDisabled => {
                        "403 (an operator's kill switch)"
                    }
                    Reason::MfaRequired => "sign in again with MFA (or 403)",
                    _ => "403",
                },
            ),
        }
    }
}

/// What [`explain`] reports: the decision and every layer on the way.
#[derive(Debug, Clone)]
pub struct Explanation {
    /// The decision the proxy would make.
    pub decision: Decision,
    /// The path rule that matched, if any.
    pub rule: Option<String>,
    /// Layers in evaluation order.
    pub steps: Vec<Step>,
}

/// Where evaluation reports its steps: nowhere on the hot path, a list for `explain`.
trait Trace {
    fn step(&mut self, layer: &'static str, verdict: Verdict, detail: impl FnOnce() -> String);
}

/// The hot path's trace: records nothing, and never runs the detail closures.
struct NoTrace;

impl Trace for NoTrace {
    #[inline(always)]
    fn step(&mut self, _: &'static str, _: Verdict, _: impl FnOnce() -> String) {}
}

impl Trace for Vec<Step> {
    fn step(&mut self, layer: &'static str, verdict: Verdict, detail: impl FnOnce() -> String) {
        self.push(Step {
            layer,
            verdict,
            detail: detail(),
        });
    }
}

/// Decides for `request` to `app` by `identity` (if signed in). The hot path: allocates
/// nothing.
pub fn decide(app: &Arc<App>, request: &Request<'_>, identity: Option<&Identity>) -> Decision {
    evaluate(app, request, identity, &mut NoTrace)
}

/// The same decision as [`decide`] (the same code), with the reason for every layer.
pub fn explain(app: &Arc<App>, request: &Request<'_>, identity: Option<&Identity>) -> Explanation {
    let mut steps = Vec::new();
    let decision = evaluate(app, request, identity, &mut steps);
    let rule = matching_rule(app, request).map(|i| app.rules[i].name.clone());
    Explanation {
        decision,
        rule,
        steps,
    }
}

/// Index of the first rule whose methods and paths match.
fn matching_rule(app: &App, request: &Request<'_>) -> Option<usize> {
    app.rules.iter().position(|rule| {
        (rule.methods.is_empty()
            || rule
                .methods
                .iter()
                .any(|m| method_matches(m, request.method)))
            && rule.paths.iter().any(|glob| glob.matches(request.path))
    })
}

/// Methods compare case-insensitively, and `HEAD` is held to `GET` rules: backends commonly
/// serve HEAD with their GET handler, so a GET-only rule must not be sidestepped with HEAD.
fn method_matches(rule: &str, request: &str) -> bool {
    rule.eq_ignore_ascii_case(request) || (rule == "GET" && request.eq_ignore_ascii_case("HEAD"))
}

/// Every layer of PRODUCT.md in order: enabled → public path → rule → signed in → (app, then
/// rule) provider, user type, entity, roles/users with overrides → entity scope → MFA.
/// Default deny: an app without `user_types` admits nobody.
fn evaluate(
    app: &Arc<App>,
    request: &Request<'_>,
    identity: Option<&Identity>,
    trace: &mut impl Trace,
) -> Decision {
    if !app.enabled {
        trace.step("enabled", Verdict::Fail, || "the app is disabled".into());
        return Decision::Deny(Reason::AppDisabled);
    }
    trace.step("enabled", Verdict::Pass, || "the app is enabled".into());
    let mut ip_reported = false;
    if let Err(reason) = ip_layer(
        "ip-allowlist",
        app.ip_allowlist.as_ref(),
        request,
        &mut ip_reported,
        trace,
    ) {
        return Decision::Deny(reason);
    }
    if let Some(glob) = app.public_paths.iter().find(|g| g.matches(request.path)) {
        trace.step("public-path", Verdict::Pass, || {
            format!("{} matches public path {}", request.path, glob.source())
        });
        return Decision::Allow(Permit {
            app: app.clone(),
            reason: Reason::PublicPath,
            rule: None,
            ip_reported,
        });
    }
    trace.step("public-path", Verdict::Skip, || "not a public path".into());
    let rule_index = matching_rule(app, request);
    let rule = rule_index.map(|i| &app.rules[i]);
    match rule {
        Some(r) => trace.step("rule", Verdict::Pass, || {
            format!(
                "rule `{}` matches {} {}",
                r.name, request.method, request.path
            )
        }),
        None => trace.step("rule", Verdict::Skip, || {
            "no path rule matches: the app's access applies".into()
        }),
    }
    let rule_list = rule.and_then(|r| r.ip_allowlist.as_ref());
    if let Err(reason) = ip_layer(
        "rule-ip-allowlist",
        rule_list,
        request,
        &mut ip_reported,
        trace,
    ) {
        return Decision::Deny(reason);
    }
    let Some(identity) = identity else {
        trace.step("login", Verdict::Fail, || "not signed in".into());
        return Decision::LoginRequired;
    };
    trace.step("login", Verdict::Pass, || {
        format!("signed in as {} via {}", identity.user_id, identity.idp)
    });
    if let Some(r) = rule.filter(|r| r.deny) {
        trace.step("rule-deny", Verdict::Fail, || {
            format!("rule `{}` denies", r.name)
        });
        return Decision::Deny(Reason::RuleDenied);
    }
    if let Err(reason) = check("app", &app.access, identity, trace) {
        return Decision::Deny(reason);
    }
    if let Some(r) = rule {
        if let Err(reason) = check("rule", &r.access, identity, trace) {
            return Decision::Deny(reason);
        }
    }
    if let Err(reason) = entity_scope(app, request, identity, trace) {
        return Decision::Deny(reason);
    }
    let mfa_needed = app.access.require_mfa || rule.is_some_and(|r| r.access.require_mfa);
    if mfa_needed && !identity.mfa {
        trace.step("mfa", Verdict::Fail, || {
            "a second factor is required; the session has none".into()
        });
        return Decision::Deny(Reason::MfaRequired);
    }
    trace.step(
        "mfa",
        if mfa_needed {
            Verdict::Pass
        } else {
            Verdict::Skip
        },
        || {
            if mfa_needed {
                "second factor present".into()
            } else {
                "not required".into()
            }
        },
    );
    Decision::Allow(Permit {
        app: app.clone(),
        reason: Reason::Authenticated,
        rule: rule_index,
        ip_reported,
    })
}

/// An IP allowlist layer: enforce refuses a miss (before any login); report lets it through
/// and flags it.
fn ip_layer(
    layer: &'static str,
    list: Option<&crate::netguard::IpAllowlist>,
    request: &Request<'_>,
    reported: &mut bool,
    trace: &mut impl Trace,
) -> Result<(), Reason> {
    use crate::netguard::AllowlistMode;
    let Some(list) = list else {
        return Ok(());
    };
    if list.admits(request.client_ip) {
        trace.step(layer, Verdict::Pass, || {
            format!("{:?} is allowed", request.client_ip)
        });
        return Ok(());
    }
    match list.mode {
        AllowlistMode::Enforce => {
            trace.step(layer, Verdict::Fail, || {
                format!("{} is not in the allowlist", shown_ip(request.client_ip))
            });
            Err(Reason::IpNotAllowed)
        }
        AllowlistMode::Report => {
            trace.step(layer, Verdict::Pass, || {
                format!(
                    "{:?} is not in the allowlist (report mode: flagged)",
                    request.client_ip
                )
            });
            *reported = true;
            Ok(())
        }
    }
}

/// The layers of one requirement set (the app's or a rule's), MFA excepted.
fn check(
    scope: &'static str,
    req: &Requirements,
    identity: &Identity,
    trace: &mut impl Trace,
) -> Result<(), Reason> {
    if let Some(idps) = &req.identity_providers {
        if !idps.contains(&identity.idp) {
            trace.step("identity-provider", Verdict::Fail, || {
                format!("{scope}: {} is not in {idps:?}", identity.idp)
            });
            return Err(Reason::IdpNotAllowed);
        }
        trace.step("identity-provider", Verdict::Pass, || {
            format!("{scope}: {} allowed", identity.idp)
        });
    }
    if let Some(types) = &req.user_types {
        if !types.contains(&identity.user_type) {
            trace.step("user-type", Verdict::Fail, || {
                format!(
                    "{scope}: {} is not in {}",
                    type_name(identity.user_type),
                    type_list(types)
                )
            });
            return Err(Reason::UserTypeNotAllowed);
        }
        trace.step("user-type", Verdict::Pass, || {
            format!("{scope}: {} allowed", type_name(identity.user_type))
        });
    }
    let overridden = req.override_users.iter().any(|u| names_user(u, identity))
        || identity
            .entity
            .as_deref()
            .is_some_and(|e| req.override_entities.iter().any(|x| x == e));
    if overridden {
        trace.step("override", Verdict::Pass, || {
            format!("{scope}: admitted by override (entities, roles and users lists not applied)")
        });
        return Ok(());
    }
    if let Some(entities) = &req.entities {
        if identity.user_type == UserType::External {
            let ok = identity
                .entity
                .as_deref()
                .is_some_and(|e| entities.iter().any(|x| x == e));
            if !ok {
                trace.step("entity", Verdict::Fail, || {
                    format!(
                        "{scope}: entity {:?} is not in {entities:?}",
                        identity.entity
                    )
                });
                return Err(Reason::EntityNotAllowed);
            }
            trace.step("entity", Verdict::Pass, || {
                format!("{scope}: entity {:?} allowed", identity.entity)
            });
        } else {
            trace.step("entity", Verdict::Skip, || {
                format!("{scope}: internal users are not bound to entities")
            });
        }
    }
    if let Some(roles) = &req.roles {
        if !identity.roles.iter().any(|r| roles.contains(r)) {
            trace.step("roles", Verdict::Fail, || {
                format!("{scope}: none of {roles:?} in {:?}", identity.roles)
            });
            return Err(Reason::RoleMissing);
        }
        trace.step("roles", Verdict::Pass, || {
            format!("{scope}: has one of {roles:?}")
        });
    }
    if let Some(users) = &req.users {
        if !users.iter().any(|u| names_user(u, identity)) {
            trace.step("users", Verdict::Fail, || {
                format!("{scope}: {} is not listed", identity.user_id)
            });
            return Err(Reason::UserNotAllowed);
        }
        trace.step("users", Verdict::Pass, || {
            format!("{scope}: {} is listed", identity.user_id)
        });
    }
    Ok(())
}

/// A `users`/`override.users` entry names a user by id, or by e-mail (case-insensitive).
fn names_user(entry: &str, identity: &Identity) -> bool {
    entry == identity.user_id
        || identity
            .email
            .as_deref()
            .is_some_and(|e| e.eq_ignore_ascii_case(entry))
}

/// Tenant isolation: a request naming an entity (in the path or the query) must name the
/// user's own, unless the user is internal and the app is not `strict`.
fn entity_scope(
    app: &App,
    request: &Request<'_>,
    identity: &Identity,
    trace: &mut impl Trace,
) -> Result<(), Reason> {
    let Some(scope) = &app.entity_scope else {
        return Ok(());
    };
    if identity.user_type == UserType::Internal && !scope.strict {
        trace.step("entity-scope", Verdict::Skip, || {
            "internal users may cross entities (strict: false)".into()
        });
        return Ok(());
    }
    let own = identity.entity.as_deref();
    if let Some(named) = scope.path.as_ref().and_then(|p| p.entity(request.path)) {
        if own != Some(named) {
            trace.step("entity-scope", Verdict::Fail, || {
                format!("path names entity {named}, the user's is {}", shown(own))
            });
            return Err(Reason::EntityMismatch);
        }
    }
    if let (Some(param), Some(query)) = (&scope.query_param, request.query) {
        // Every occurrence counts: `?entity=mine&entity=theirs` must not slip through.
        for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
            if name == param.as_str() && own != Some(value.as_ref()) {
                trace.step("entity-scope", Verdict::Fail, || {
                    format!("query names entity {value}, the user's is {}", shown(own))
                });
                return Err(Reason::EntityMismatch);
            }
        }
    }
    trace.step("entity-scope", Verdict::Pass, || {
        "no other entity named".into()
    });
    Ok(())
}

/// An optional value for explanations: the value, or "(none)".
fn shown(value: Option<&str>) -> &str {
    value.unwrap_or("(none)")
}

/// A client address for explanations.
fn shown_ip(ip: Option<std::net::IpAddr>) -> String {
    ip.map_or_else(|| "(unknown address)".into(), |ip| ip.to_string())
}

fn type_name(t: UserType) -> &'static str {
    match t {
        UserType::Internal => "internal-user",
        UserType::External => "external-user",
    }
}

fn type_list(types: &[UserType]) -> String {
    if types.is_empty() {
        return "[] (nobody)".into();
    }
    let names: Vec<&str> = types.iter().map(|t| type_name(*t)).collect();
    format!("[{}]", names.join(", "))
}

#[cfg(test)]
mod tests;
