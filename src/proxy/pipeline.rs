//! The request pipeline: the checks every request passes, top to bottom, before it is
//! forwarded or handed to one of Portcullis's own endpoints. Each step lets the request go
//! on or stops it with an answer and a closed reason ([`Stop`]); the first stop wins.

use std::sync::Arc;

use pingora::proxy::Session;

use super::{portal, Gateway, RequestCtx};
use crate::config::{AllowlistMode, App};
use crate::machine;
use crate::netguard::{RateLimitError, SizeError};
use crate::policy::{decide, Decision, Permit, Reason, Request};
use crate::respond::Reply;
use crate::route::Endpoint;
use crate::store::Disabled;

/// Where an admitted request goes.
pub(super) enum Admitted {
    /// To the upstream, under the permit now in the context.
    Forward,
    /// To one of Portcullis's own endpoints.
    Endpoint(Endpoint),
}

/// Why a request goes no further.
pub(super) enum Stop {
    /// Answer with this reply, recorded with this reason.
    Reply(Reply, Reason),
    /// Over a rate limit: 429 with `Retry-After`, counted by key kind.
    RateLimited(RateLimitError),
}

type Step<T = ()> = Result<T, Stop>;

impl Gateway {
    /// Every check of one request, in order.
    pub(super) async fn admit(&self, session: &Session, ctx: &mut RequestCtx) -> Step<Admitted> {
        self.check_sizes(session)?;
        check_host(ctx)?;
        self.check_server_allowlist(ctx)?;
        let (app, path) = routed(ctx)?;
        self.require_https(session, ctx, &app)?;
        let endpoint = path
            .strip_prefix(self.site.reserved_prefix.as_str())
            .map(Endpoint::parse);
        self.authenticate(session, ctx, &app, endpoint.is_none())
            .await;
        self.check_pre_auth_limit(ctx, endpoint).await?;
        if let Some(endpoint) = endpoint {
            check_endpoint_allowlist(ctx, &app, endpoint)?;
            return Ok(Admitted::Endpoint(endpoint));
        }
        refuse_credential(ctx)?;
        self.check_kill_switches(ctx, &app)?;
        let permit = self.authorize(session, ctx, &app, &path)?;
        self.check_rule_limits(ctx, &app, &permit, &path).await?;
        self.sign_assertion(ctx, &app, &permit)?;
        ctx.permit = Some(permit);
        Ok(Admitted::Forward)
    }

    /// Who the request is: a machine client's bearer token or API key, when the app takes
    /// them and one is sent (it never falls back to a cookie); else the session cookie (see
    /// [`Authenticator`]), when the app takes sessions or the request is for Portcullis's own
    /// endpoints.
    async fn authenticate(
        &self,
        session: &Session,
        ctx: &mut RequestCtx,
        app: &App,
        forwarded: bool,
    ) {
        if forwarded && app.accept.machines() {
            match machine::presented(&session.req_header().headers, app.accept) {
                Ok(Some((presented, header))) => {
                    ctx.credential_header = Some(header);
                    return self.authenticate_machine(ctx, app, presented).await;
                }
                Ok(None) => {}
                Err(refusal) => return self.credential_refused(ctx, "bearer", refusal),
            }
        }
        if forwarded && !app.accept.session {
            return;
        }
        let cookies = session
            .req_header()
            .headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok());
        let found = self
            .auth
            .authenticate(cookies, ctx.audit_ref(), portal::unix_now())
            .await;
        ctx.authenticated(found);
    }

    /// Checks a bearer token or API key; the caller becomes the request's session.
    async fn authenticate_machine(
        &self,
        ctx: &mut RequestCtx,
        app: &App,
        presented: machine::Presented<'_>,
    ) {
        let now = portal::unix_now();
        match self
            .machines
            .authenticate(presented, app.accept, ctx.client_ip, now)
            .await
        {
            Ok((caller, _)) if self.auth.is_revoked(&caller) => {
                self.credential_refused(ctx, presented.kind(), machine::Refusal::Revoked)
            }
            Ok((caller, how)) => {
                let result = match how {
                    machine::Accepted::Checked => "checked",
                    machine::Accepted::Cached => "cached",
                };
                self.metrics
                    .credentials
                    .with_label_values(&[caller.identity.auth_method.as_str(), result])
                    .inc();
                ctx.session = Some(caller);
            }
            Err(refusal) => self.credential_refused(ctx, presented.kind(), refusal),
        }
    }

    fn credential_refused(&self, ctx: &mut RequestCtx, kind: &str, refusal: machine::Refusal) {
        self.metrics
            .credentials
            .with_label_values(&[kind, refusal.as_str()])
            .inc();
        ctx.credential_refused = Some(refusal);
    }

    /// Header count and size, and the length of the request target.
    fn check_sizes(&self, session: &Session) -> Step {
        let request = session.req_header();
        let sizes = request
            .headers
            .iter()
            .map(|(k, v)| (k.as_str().len(), v.len()));
        let target_len = request.uri.path_and_query().map_or(0, |p| p.as_str().len());
        self.guards
            .limits
            .check(target_len, sizes)
            .map_err(|violation| match violation {
                SizeError::Headers => Stop::Reply(Reply::HeadersTooLarge, Reason::HeadersTooLarge),
                SizeError::Uri => Stop::Reply(Reply::UriTooLong, Reason::UriTooLong),
            })
    }

    /// The server-wide allowlist comes before routing: outsiders learn nothing, not even
    /// which hosts exist.
    fn check_server_allowlist(&self, ctx: &mut RequestCtx) -> Step {
        match &self.guards.ip_allowlist {
            Some(list) if !list.admits(ctx.client_ip) => match list.mode {
                AllowlistMode::Enforce => Err(Stop::Reply(Reply::Forbidden, Reason::IpNotAllowed)),
                AllowlistMode::Report => {
                    ctx.ip_reported = true;
                    Ok(())
                }
            },
            _ => Ok(()),
        }
    }

    /// Plain HTTP is redirected to HTTPS unless the app allows it.
    fn require_https(&self, session: &Session, ctx: &RequestCtx, app: &App) -> Step {
        if ctx.tls || app.insecure_allow_plain_http {
            return Ok(());
        }
        Err(match self.https_location(ctx, session) {
            Some(location) => Stop::Reply(Reply::RedirectHttps { location }, Reason::HttpsRequired),
            None => Stop::Reply(Reply::BadRequest, Reason::BadRequest),
        })
    }

    /// Without a session, sign-in endpoints and refused cookies are limited per address: a
    /// flood of callbacks or forged cookies cannot exhaust the CPU.
    async fn check_pre_auth_limit(&self, ctx: &RequestCtx, endpoint: Option<Endpoint>) -> Step {
        let limited = ctx.session.is_none()
            && (ctx.cookie_rejected
                || ctx.credential_refused.is_some()
                || endpoint.is_some_and(Endpoint::limited_before_sign_in));
        if !limited {
            return Ok(());
        }
        self.guards
            .rate_limits
            .check_pre_auth(ctx.client_ip)
            .await
            .map_err(Stop::RateLimited)
    }

    /// The access policy: a permit, or the answer that explains why not.
    fn authorize(
        &self,
        session: &Session,
        ctx: &mut RequestCtx,
        app: &Arc<App>,
        path: &str,
    ) -> Step<Permit> {
        let request = session.req_header();
        let policy_request = Request {
            method: request.method.as_str(),
            path,
            query: request.uri.query(),
            client_ip: ctx.client_ip,
        };
        let identity = ctx.session.as_ref().map(|s| &*s.identity);
        match decide(app, &policy_request, identity) {
            Decision::Allow(permit) => {
                ctx.ip_reported |= permit.ip_reported();
                Ok(permit)
            }
            // An app only for machine clients challenges for a credential: no sign-in page.
            Decision::LoginRequired if !app.accept.session => Err(Stop::Reply(
                Reply::BearerRefused {
                    status: 401,
                    error: None,
                    description: "",
                },
                Reason::LoginRequired,
            )),
            Decision::LoginRequired => Err(Stop::Reply(
                self.login_reply(session),
                Reason::LoginRequired,
            )),
            Decision::Deny(Reason::AppDisabled) => {
                Err(Stop::Reply(Reply::AppDisabled, Reason::AppDisabled))
            }
            Decision::Deny(Reason::MfaRequired) => {
                let return_to = request.uri.path_and_query().map_or("/", |p| p.as_str());
                let reply = match self.step_up_location(ctx, return_to) {
                    Some(location) if self.is_navigation(session) => {
                        Reply::RedirectLogin { location }
                    }
                    Some(login_url) => Reply::LoginRequired { login_url },
                    None => Reply::Forbidden,
                };
                Err(Stop::Reply(reply, Reason::MfaRequired))
            }
            Decision::Deny(reason) => Err(Stop::Reply(Reply::Forbidden, reason)),
        }
    }

    /// An app, user or entity an operator turned off: refused before the policy, whatever the
    /// session says (an app answers as with `enabled: false`).
    fn check_kill_switches(&self, ctx: &RequestCtx, app: &App) -> Step {
        if !self.switches.any_set() {
            return Ok(());
        }
        let now = portal::unix_now();
        if self.switches.app_off(&app.id, now) {
            return Err(Stop::Reply(Reply::AppDisabled, Reason::AppDisabled));
        }
        let Some(who) = ctx.session.as_ref().map(|s| &*s.identity) else {
            return Ok(());
        };
        match self
            .switches
            .stops(&who.user_id, who.entity.as_deref(), now)
        {
            Some(Disabled::User) => Err(Stop::Reply(Reply::Forbidden, Reason::UserDisabled)),
            Some(Disabled::Entity) => Err(Stop::Reply(Reply::Forbidden, Reason::EntityDisabled)),
            None => Ok(()),
        }
    }

    /// The rate limits of the app and of the rule that admitted the request.
    async fn check_rule_limits(
        &self,
        ctx: &RequestCtx,
        app: &App,
        permit: &Permit,
        path: &str,
    ) -> Step {
        let identity = ctx.session.as_ref().map(|s| &*s.identity);
        self.guards
            .rate_limits
            .check(app, permit.rule_index(), identity, ctx.client_ip, path)
            .await
            .map_err(Stop::RateLimited)
    }

    /// Signs the user-context assertion for a permit that carries the identity; a request
    /// that should carry one is never forwarded without it.
    fn sign_assertion(&self, ctx: &mut RequestCtx, app: &App, permit: &Permit) -> Step {
        if !permit.carries_identity() {
            return Ok(());
        }
        let failed = Stop::Reply(Reply::InternalError, Reason::AssertionFailed);
        let Some(data) = ctx.session.as_ref() else {
            return Err(failed);
        };
        match self
            .signer
            .token(&data.sid, app, &data.identity, portal::unix_now())
        {
            Ok(token) => {
                ctx.assertion = Some(token);
                Ok(())
            }
            Err(error) => {
                tracing::error!(%error, app = %app.id, "cannot sign the identity assertion");
                Err(failed)
            }
        }
    }
}

/// A refused bearer token or API key: 401 with an RFC 6750 challenge (never a sign-in
/// redirect, whatever the `Accept` header), 403 for a missing scope or an address outside
/// the account's allowlist, 503 when it could not be checked.
fn refuse_credential(ctx: &mut RequestCtx) -> Step {
    use machine::Refusal;
    let Some(refusal) = ctx.credential_refused else {
        return Ok(());
    };
    ctx.detail = Some(refusal.as_str());
    let description = refusal.description();
    let invalid = |reason| {
        let error = Some(match refusal {
            Refusal::CredentialsAmbiguous => "invalid_request",
            _ => "invalid_token",
        });
        Stop::Reply(
            Reply::BearerRefused {
                status: 401,
                error,
                description,
            },
            reason,
        )
    };
    Err(match refusal {
        Refusal::InsufficientScope => Stop::Reply(
            Reply::BearerRefused {
                status: 403,
                error: Some("insufficient_scope"),
                description,
            },
            Reason::InsufficientScope,
        ),
        Refusal::IpNotAllowed => Stop::Reply(Reply::Forbidden, Reason::IpNotAllowed),
        Refusal::CheckUnavailable => Stop::Reply(
            Reply::TemporarilyUnavailable,
            Reason::CredentialCheckUnavailable,
        ),
        Refusal::TokenExpired | Refusal::TokenNotYetValid | Refusal::ApiKeyExpired => {
            invalid(Reason::CredentialExpired)
        }
        _ => invalid(Reason::CredentialInvalid),
    })
}

/// `Host` missing (HTTP/1.1), repeated or malformed.
fn check_host(ctx: &RequestCtx) -> Step {
    if ctx.bad_host {
        return Err(Stop::Reply(Reply::BadRequest, Reason::BadHost));
    }
    Ok(())
}

/// The app for the request, and its normalised path.
fn routed(ctx: &RequestCtx) -> Step<(Arc<App>, String)> {
    let Some(path) = ctx.path.clone() else {
        return Err(Stop::Reply(Reply::BadRequest, Reason::BadRequest));
    };
    let Some(app) = ctx.app.clone() else {
        return Err(Stop::Reply(Reply::NotFound, Reason::UnknownHost));
    };
    Ok((app, path))
}

/// The app's enforced allowlist guards its sign-in endpoints too: outsiders are never sent
/// to the identity provider.
fn check_endpoint_allowlist(ctx: &RequestCtx, app: &App, endpoint: Endpoint) -> Step {
    let outsider = app
        .ip_allowlist
        .as_ref()
        .is_some_and(|l| l.mode == AllowlistMode::Enforce && !l.admits(ctx.client_ip));
    if outsider && !endpoint.open_to_outsiders() {
        return Err(Stop::Reply(Reply::Forbidden, Reason::IpNotAllowed));
    }
    Ok(())
}
