//! Access decisions as values with reasons. Pure: no I/O, no Pingora types.
//!
//! Forwarding requires a [`Permit`], and only this module can make one (its field is
//! private), so no code path can reach an upstream without a decision.

use std::sync::Arc;

use serde::Serialize;

use crate::config::App;
use crate::identity::Identity;

/// Why a request was allowed or refused. A closed set shared by audit records and metric
/// labels; `as_str` is the kebab-case name used in both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
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
}

impl Reason {
    /// The kebab-case name (audit `reason`, metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::PublicPath => "public-path",
            Reason::Authenticated => "authenticated",
            Reason::UserTypeNotAllowed => "user-type-not-allowed",
            Reason::LoginRequired => "login-required",
            Reason::AppDisabled => "app-disabled",
            Reason::UnknownHost => "unknown-host",
            Reason::BadRequest => "bad-request",
            Reason::HttpsRequired => "https-required",
            Reason::UnknownEndpoint => "unknown-endpoint",
            Reason::CsrfFailed => "csrf-failed",
            Reason::LoginThrottled => "login-throttled",
            Reason::LoginFailed => "login-failed",
            Reason::HeadersTooLarge => "headers-too-large",
            Reason::UriTooLong => "uri-too-long",
        }
    }
}

/// Proof that a request may be forwarded to its app's upstream.
#[derive(Debug, Clone)]
pub struct Permit {
    app: Arc<App>,
    reason: Reason,
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

/// Decides for a request to `app` at the normalised `path` by `identity` (if signed in).
///
/// Nothing is anonymous unless the app lists it in `public_paths`; a signed-in user must be
/// of a type the app admits (an empty `access.user_types` admits nobody: fail closed).
pub fn decide(app: &Arc<App>, path: &str, identity: Option<&Identity>) -> Decision {
    if !app.enabled {
        return Decision::Deny(Reason::AppDisabled);
    }
    if app.public_paths.iter().any(|glob| glob.matches(path)) {
        return Decision::Allow(Permit {
            app: app.clone(),
            reason: Reason::PublicPath,
        });
    }
    let Some(identity) = identity else {
        return Decision::LoginRequired;
    };
    if !app.access.user_types.contains(&identity.user_type) {
        return Decision::Deny(Reason::UserTypeNotAllowed);
    }
    Decision::Allow(Permit {
        app: app.clone(),
        reason: Reason::Authenticated,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::with_apps;
    use crate::config::UserType;
    use crate::identity::AuthMethod;

    fn user(user_type: UserType) -> Identity {
        Identity {
            user_id: "u".into(),
            email: None,
            name: None,
            user_type,
            roles: vec![],
            entity: None,
            custom: Default::default(),
            idp: "local".into(),
            auth_method: AuthMethod::Local,
            mfa: false,
        }
    }

    #[test]
    fn table() {
        let config = with_apps(
            "  - id: staff\n    hosts: [s.test]\n    upstream: http://127.0.0.1:1\n    public_paths: [/healthz]\n    access: { user_types: [internal-user] }\n  - id: nobody\n    hosts: [n.test]\n    upstream: http://127.0.0.1:1\n  - id: off\n    hosts: [o.test]\n    enabled: false\n    upstream: http://127.0.0.1:1\n    public_paths: [\"/**\"]\n",
        )
        .expect("config");
        let (staff, nobody, off) = (&config.apps[0], &config.apps[1], &config.apps[2]);
        let internal = user(UserType::Internal);
        let external = user(UserType::External);
        let reason = |d: Decision| match d {
            Decision::Allow(p) => format!("allow:{}", p.reason().as_str()),
            Decision::LoginRequired => "login".into(),
            Decision::Deny(r) => format!("deny:{}", r.as_str()),
        };
        assert_eq!(reason(decide(staff, "/healthz", None)), "allow:public-path");
        assert_eq!(reason(decide(staff, "/chat", None)), "login");
        assert_eq!(
            reason(decide(staff, "/chat", Some(&internal))),
            "allow:authenticated"
        );
        assert_eq!(
            reason(decide(staff, "/chat", Some(&external))),
            "deny:user-type-not-allowed"
        );
        assert_eq!(
            reason(decide(nobody, "/", Some(&internal))),
            "deny:user-type-not-allowed",
            "no user types: nobody"
        );
        assert_eq!(
            reason(decide(off, "/", Some(&internal))),
            "deny:app-disabled"
        );
    }
}
