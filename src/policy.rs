//! Access decisions as values with reasons. Pure: no I/O, no Pingora types.
//!
//! Forwarding requires a [`Permit`], and only this module can make one (its field is
//! private), so no code path can reach an upstream without a decision.

use std::sync::Arc;

use serde::Serialize;

use crate::config::App;

/// Why a request was allowed or refused. A closed set shared by audit records and metric
/// labels; `as_str` is the kebab-case name used in both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// Allowed: the path is listed in the app's `public_paths`.
    PublicPath,
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
            Reason::LoginRequired => "login-required",
            Reason::AppDisabled => "app-disabled",
            Reason::UnknownHost => "unknown-host",
            Reason::BadRequest => "bad-request",
            Reason::HttpsRequired => "https-required",
            Reason::UnknownEndpoint => "unknown-endpoint",
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

/// Decides for a request to `app` at the normalised `path`.
///
/// Until sign-in exists every non-public path needs a login, so the default is to refuse:
/// nothing is anonymous unless the app lists it in `public_paths`.
pub fn decide(app: &Arc<App>, path: &str) -> Decision {
    if !app.enabled {
        return Decision::Deny(Reason::AppDisabled);
    }
    if app.public_paths.iter().any(|glob| glob.matches(path)) {
        return Decision::Allow(Permit {
            app: app.clone(),
            reason: Reason::PublicPath,
        });
    }
    Decision::LoginRequired
}
