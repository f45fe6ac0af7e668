//! The Pingora `ProxyHttp` phases. Thin on purpose: each callback reads the request context,
//! calls one phase function from the security core, and acts on its result.
//!
//! ```text
//! early_request_filter    client IP (trusted proxies), request id, host, normalised path, route
//! request_filter          malformed → 400 · no app → 404 · plain HTTP → 308 · disabled → 503
//!                         · Portcullis endpoints · decide → Permit | 401 | 403
//! upstream_peer           from the Permit only; no Permit → 500, never forward
//! upstream_request_filter strip (identity headers, hop-by-hop, own cookies, spoofable
//!                         forwarding headers) → set X-Forwarded-*, X-Request-Id, URI
//! response_filter         HSTS, request id, drop upstream attempts to set our cookies
//! logging                 exactly one metrics sample and one audit record per request
//! ```

mod ctx;
mod deadline;
mod hygiene;
mod peers;
mod portal;
mod proxy_protocol;
mod saml;
mod signin;

use std::sync::Arc;

use async_trait::async_trait;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{ErrorSource, ErrorType};

pub use ctx::RequestCtx;
pub use deadline::DeadlineApp;
pub use peers::PeerError;
pub use portal::unix_now;

use crate::assertion::Signer;
use crate::audit::{AuditEvent, Auditor, EventKind, Outcome};
use crate::config::{App, Config};
use crate::idp::local::LocalProvider;
use crate::idp::oidc::{OidcFailure, OidcProvider, OidcTokens};
use crate::metrics::Metrics;
use crate::netguard::{SizeLimits, SizeViolation};
use crate::policy::{decide, Decision, Reason, Request};
use crate::respond::{wants_html, Reply, Synthetic};
use crate::route::Router;
use crate::session::{clear_cookies, cookie_values, CookieJar, Rejection, SessionCodec};
use crate::store::{LoginThrottle, RevokedSessions, SeenTokens, SingleFlight};

/// What the sign-in page offers.
struct LoginOptions {
    /// Local providers: (id, display name, checker).
    local: Vec<(String, String, Arc<LocalProvider>)>,
    /// OpenID Connect providers.
    oidc: Vec<Arc<OidcProvider>>,
    /// SAML 2.0 providers.
    saml: Vec<Arc<crate::idp::saml::SamlProvider>>,
}

/// The gateway: everything a request needs, built once at start.
pub struct Gateway {
    router: Router<App>,
    peers: peers::Peers,
    trusted_proxies: Vec<ipnet::IpNet>,
    /// Client-address headers a trusted proxy may pass on (`server.client_ip_headers`).
    client_ip_headers: Vec<String>,
    /// Go straight to the only SSO provider (`server.sign_in.auto_redirect`).
    auto_redirect: bool,
    reserved_prefix: String,
    /// `server.public_url`'s origin (SAML SP metadata).
    public_origin: String,
    cookie_name: String,
    /// `<cookie_name>-csrf`, computed once.
    csrf_cookie_name: String,
    /// `<cookie_name>-flow-`, computed once.
    flow_prefix: String,
    hsts: Option<String>,
    limits: SizeLimits,
    https_port: Option<u16>,
    auditor: Auditor,
    metrics: Arc<Metrics>,
    codec: SessionCodec,
    session_lifetime: std::time::Duration,
    login: LoginOptions,
    throttle: LoginThrottle,
    revoked: RevokedSessions,
    /// Bounds concurrent Argon2 checks (memory and CPU under a login flood).
    password_checks: tokio::sync::Semaphore,
    /// Signs the user-context assertion; serves the JWKS.
    signer: Arc<Signer>,
    /// One token refresh per session at a time, shared with concurrent requests.
    refreshes: SingleFlight<std::result::Result<OidcTokens, OidcFailure>>,
    /// Back-channel logout tokens already used.
    logout_tokens: SeenTokens,
    /// Last time (unix seconds) a header-budget warning was logged: at most one a minute.
    budget_warned: std::sync::atomic::AtomicU64,
    /// Addresses allowed to reach anything.
    ip_allowlist: Option<crate::netguard::IpAllowlist>,
    /// Every rate limiter (shared with the sweeper).
    rate_limits: Arc<crate::netguard::RateLimits>,
}

impl Gateway {
    /// Compiles routing and upstream peers from `config`.
    pub fn new(
        config: &Config,
        auditor: Auditor,
        metrics: Arc<Metrics>,
        providers: crate::runtime::Providers,
        signer: Arc<Signer>,
        rate_limits: Arc<crate::netguard::RateLimits>,
    ) -> Result<Gateway, peers::PeerError> {
        let https_port = match &config.server.http {
            Some(http) if http.redirect_port.is_some() => http.redirect_port,
            _ => config
                .server
                .https
                .as_ref()
                .and_then(|h| h.listen.first())
                .map(|a| a.port()),
        };
        Ok(Gateway {
            router: Router::new(&config.apps),
            peers: peers::Peers::new(&config.apps)?,
            trusted_proxies: config.server.trusted_proxies.clone(),
            client_ip_headers: config.server.client_ip_headers.clone(),
            auto_redirect: config.server.sign_in.auto_redirect,
            reserved_prefix: config.server.reserved_prefix.clone(),
            public_origin: config.server.public_url.origin().ascii_serialization(),
            cookie_name: config.session.cookie_name.clone(),
            csrf_cookie_name: format!("{}-csrf", config.session.cookie_name),
            flow_prefix: format!("{}-flow-", config.session.cookie_name),
            hsts: config.server.hsts.clone(),
            limits: config.server.limits,
            https_port: https_port.filter(|p| *p != 443),
            auditor,
            metrics,
            codec: SessionCodec::new(
                &config.session.encryption_keys,
                &config.session.cookie_name,
                &config.session.deployment_id,
                config.session.max_chunks,
                config.session.idle_timeout,
            ),
            session_lifetime: config.session.lifetime,
            login: LoginOptions {
                local: providers.local,
                oidc: providers.oidc,
                saml: providers.saml,
            },
            throttle: LoginThrottle::new(5, std::time::Duration::from_secs(900)),
            revoked: RevokedSessions::default(),
            password_checks: tokio::sync::Semaphore::new(4),
            signer,
            refreshes: SingleFlight::new(std::time::Duration::from_secs(120)),
            logout_tokens: SeenTokens::default(),
            budget_warned: std::sync::atomic::AtomicU64::new(0),
            ip_allowlist: config.server.ip_allowlist.clone(),
            rate_limits,
        })
    }

    /// Reads the session cookie. A refused cookie (tampered, expired, revoked, from another
    /// deployment…) is audited, cleared, and the request continues unauthenticated.
    async fn authenticate(&self, session: &Session, ctx: &mut RequestCtx) {
        let headers = &session.req_header().headers;
        let cookies = headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok());
        let jar = CookieJar::parse(cookies, &self.cookie_name);
        ctx.cookie_chunks = jar.chunk_indexes(&self.cookie_name);
        ctx.csrf_cookie = jar.get(&self.csrf_cookie_name).map(str::to_string);
        ctx.flow_cookies_values = jar
            .with_prefix(&self.flow_prefix)
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        ctx.flow_cookies = ctx
            .flow_cookies_values
            .iter()
            .map(|(n, _)| n.clone())
            .collect();
        let now = portal::unix_now();
        let rejection = match self.codec.decode(&jar, now) {
            Ok(data) if self.is_revoked(&data) => Rejection::Revoked,
            Ok(mut data) => {
                let mut rewrite = self.codec.needs_touch(&data, now);
                if data.oidc.as_ref().is_some_and(|t| t.needs_refresh(now)) {
                    match self.refresh(ctx, &data, now).await {
                        Some(tokens) => {
                            data.oidc = Some(tokens);
                            rewrite = true;
                        }
                        None => {
                            ctx.set_cookies
                                .extend(clear_cookies(&self.cookie_name, &ctx.cookie_chunks));
                            return;
                        }
                    }
                }
                if rewrite {
                    data.last_seen = now;
                    if let Ok(values) = self.codec.encode(&data) {
                        let max_age = data.expires_at.saturating_sub(now);
                        ctx.set_cookies.extend(cookie_values(
                            &self.cookie_name,
                            &values,
                            max_age,
                            &ctx.cookie_chunks,
                        ));
                    }
                }
                ctx.session = Some(data);
                return;
            }
            Err(Rejection::Absent) => return,
            Err(rejection) => rejection,
        };
        ctx.cookie_rejected = true;
        ctx.set_cookies
            .extend(clear_cookies(&self.cookie_name, &ctx.cookie_chunks));
        let mut event = AuditEvent::new(EventKind::SessionRejected);
        event.request_id = Some(ctx.request_id.clone());
        event.client_ip = ctx.client_ip;
        event.app = ctx.app.as_ref().map(|a| a.audit_id.clone());
        event.detail = Some(rejection.as_str().to_string());
        self.auditor.record(event).await;
    }

    /// Ended here by logout, or at the IdP (OIDC back-channel logout, SAML single logout).
    fn is_revoked(&self, data: &crate::session::SessionData) -> bool {
        self.revoked.is_revoked(&data.sid)
            || data.oidc.as_ref().is_some_and(|t| {
                self.revoked.ended_at_op(
                    &data.identity.idp,
                    &t.sub,
                    t.op_sid.as_deref(),
                    data.issued_at,
                )
            })
            || data.saml.as_ref().is_some_and(|s| {
                self.revoked.ended_at_op(
                    &data.identity.idp,
                    &s.name_id,
                    s.session_index.as_deref(),
                    data.issued_at,
                )
            })
    }

    /// Refreshes the session's OP tokens, once per session however many requests ask at the
    /// same moment. `None` when the OP refuses: the session is over (audited).
    async fn refresh(
        &self,
        ctx: &RequestCtx,
        data: &crate::session::SessionData,
        now: u64,
    ) -> Option<OidcTokens> {
        let tokens = data.oidc.as_ref()?;
        let Some(provider) = self
            .login
            .oidc
            .iter()
            .find(|p| p.id == data.identity.idp)
            .cloned()
        else {
            // The provider is no longer configured: its sessions end, on the record.
            let mut event = AuditEvent::new(EventKind::RefreshFailed);
            event.request_id = Some(ctx.request_id.clone());
            event.client_ip = ctx.client_ip;
            event.user = Some(data.identity.user_id.clone());
            event.idp = Some(data.identity.idp.clone());
            event.sid = Some(data.sid.clone());
            event.detail = Some("idp-not-configured".into());
            self.auditor.record(event).await;
            return None;
        };
        let token_hash = ring::digest::digest(
            &ring::digest::SHA256,
            tokens
                .refresh_token
                .as_deref()
                .unwrap_or_default()
                .as_bytes(),
        );
        // The same tokens (a session and the moment they were obtained) refresh once; the
        // refreshed session has a new `obtained_at`, so its own refresh later is a new call.
        let key = format!(
            "{}:{}:{}",
            data.sid,
            tokens.obtained_at,
            crate::audit::hex(&token_hash.as_ref()[..8])
        );
        let (result, ran) = self
            .refreshes
            .run(
                key,
                now,
                || async move { provider.refresh(tokens, now).await },
            )
            .await;
        if ran {
            tracing::debug!(
                sid = %data.sid,
                ok = result.is_ok(),
                expires_at = ?result.as_ref().ok().and_then(|t| t.expires_at),
                "OIDC refresh"
            );
            let kind = if result.is_ok() {
                EventKind::RefreshSucceeded
            } else {
                EventKind::RefreshFailed
            };
            let mut event = AuditEvent::new(kind);
            event.request_id = Some(ctx.request_id.clone());
            event.client_ip = ctx.client_ip;
            event.app = ctx.app.as_ref().map(|a| a.audit_id.clone());
            event.user = Some(data.identity.user_id.clone());
            event.idp = Some(data.identity.idp.clone());
            event.sid = Some(data.sid.clone());
            event.detail = result.as_ref().err().map(|f| f.as_str().to_string());
            self.auditor.record(event).await;
        }
        match result {
            Ok(tokens) => Some(tokens),
            Err(OidcFailure::Unavailable) => {
                // The OP is unreachable: keep the session on its current tokens rather than
                // log everyone out during an IdP outage; the next request tries again.
                Some(tokens.clone())
            }
            Err(_) => None,
        }
    }

    /// 429 with `Retry-After` (whole seconds, at least 1), counted by app and key kind.
    async fn rate_limited(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        app: &crate::config::App,
        over: crate::netguard::OverLimit,
    ) -> Result<bool> {
        self.metrics
            .rate_limited
            .with_label_values(&[app.id.as_str(), over.key.as_str()])
            .inc();
        let retry_after = over.retry_after.as_secs_f64().ceil().max(1.0) as u64;
        self.reply(
            session,
            ctx,
            Reply::RateLimited { retry_after },
            Reason::RateLimited,
        )
        .await
    }

    /// Where a session without MFA is sent to sign in again with MFA, when its provider can
    /// ask for it and this session is not already the result of such a step-up.
    fn step_up_location(&self, ctx: &RequestCtx, return_to: &str) -> Option<String> {
        let data = ctx.session.as_ref()?;
        if data.stepped_up {
            return None;
        }
        let idp = &data.identity.idp;
        let provider_id = match data.identity.auth_method {
            crate::identity::AuthMethod::Oidc => self
                .login
                .oidc
                .iter()
                .find(|p| p.id == *idp && p.can_step_up())
                .map(|p| &p.id)?,
            // SAML always can: RequestedAuthnContext with the MFA contexts, ForceAuthn.
            crate::identity::AuthMethod::Saml => self
                .login
                .saml
                .iter()
                .find(|p| p.id == *idp)
                .map(|p| &p.id)?,
            _ => return None,
        };
        let rd: String = url::form_urlencoded::byte_serialize(
            crate::redirect::safe_return_path(return_to)
                .unwrap_or("/")
                .as_bytes(),
        )
        .collect();
        Some(format!(
            "{}login?idp={}&mfa=1&rd={rd}",
            self.reserved_prefix, provider_id
        ))
    }

    /// Browser navigations go to the login page; API calls (fetch/XHR, non-HTML clients) get
    /// a 401 with the login URL, which a single-page app can act on.
    fn login_reply(&self, session: &Session) -> Reply {
        let request = session.req_header();
        let navigation = self.is_navigation(session);
        let return_to = request.uri.path_and_query().map_or("/", |p| p.as_str());
        let login_url = self.login_url(crate::redirect::safe_return_path(return_to).unwrap_or("/"));
        if navigation {
            Reply::RedirectLogin {
                location: login_url,
            }
        } else {
            Reply::LoginRequired { login_url }
        }
    }

    /// A top-level browser navigation (which can follow a redirect), as opposed to fetch/XHR
    /// or an API client.
    fn is_navigation(&self, session: &Session) -> bool {
        let request = session.req_header();
        let header = |name: &str| request.headers.get(name).and_then(|v| v.to_str().ok());
        matches!(request.method.as_str(), "GET" | "HEAD")
            && header("x-requested-with").is_none()
            && match header("sec-fetch-mode") {
                Some(mode) => mode == "navigate",
                None => wants_html(header("accept").map(str::as_bytes)),
            }
    }

    /// Writes a synthetic response (see [`crate::respond`]) and records why.
    async fn reply(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        reply: Reply,
        reason: Reason,
    ) -> Result<bool> {
        let accept = session
            .req_header()
            .headers
            .get(http::header::ACCEPT)
            .map(|v| v.as_bytes());
        let synthetic = reply.render(wants_html(accept), &ctx.request_id);
        ctx.denial = Some(reason);
        self.write(session, ctx, synthetic).await
    }

    /// A successful answer from Portcullis itself (sign-in page, whoami…).
    async fn send(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        synthetic: Synthetic,
        reason: Reason,
    ) -> Result<bool> {
        if synthetic.status >= 400 {
            ctx.denial = Some(reason);
        }
        self.write(session, ctx, synthetic).await
    }

    /// Puts a synthetic response on the wire: always framed, with the request id, HSTS on
    /// TLS and any cookies the pipeline set.
    async fn write(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        synthetic: Synthetic,
    ) -> Result<bool> {
        let mut header =
            ResponseHeader::build(synthetic.status, Some(synthetic.headers.len() + 4))?;
        for (name, value) in synthetic.headers {
            header.insert_header(name, value)?;
        }
        header.insert_header(
            http::header::CONTENT_LENGTH,
            synthetic.body.len().to_string(),
        )?;
        header.insert_header("x-request-id", ctx.request_id.as_str())?;
        if let (true, Some(hsts)) = (ctx.tls, &self.hsts) {
            header.insert_header(http::header::STRICT_TRANSPORT_SECURITY, hsts.as_str())?;
        }
        for cookie in ctx.set_cookies.drain(..) {
            header.append_header(http::header::SET_COOKIE, cookie)?;
        }
        // An unread request body would be parsed as the next request (pingora#498): close.
        if ctx.body_unread || !(session.is_body_empty() || session.is_body_done()) {
            session.set_keepalive(None);
        }
        ctx.status = Some(synthetic.status);
        session
            .write_response_header(Box::new(header), false)
            .await?;
        session
            .write_response_body(Some(synthetic.body), true)
            .await?;
        Ok(true)
    }

    fn https_location(&self, ctx: &RequestCtx, session: &Session) -> Option<String> {
        let host = crate::route::normalize_host(ctx.host.as_deref()?)?;
        let port = self.https_port.map(|p| format!(":{p}")).unwrap_or_default();
        let query = session
            .req_header()
            .uri
            .query()
            .map(|q| format!("?{q}"))
            .unwrap_or_default();
        Some(format!(
            "https://{host}{port}{}{query}",
            ctx.path.as_deref()?
        ))
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::new()
    }

    async fn early_request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.inspect(session, &self.trusted_proxies);
        // Request bodies: the longest wait for their next piece (Pingora's default is 60 s).
        session.set_read_timeout(Some(self.limits.body_idle_timeout));
        if let (Some(path), Some(host)) = (ctx.path.as_deref(), ctx.host.as_deref()) {
            let routed = match self.router.route(host, path) {
                Some(app) => Some(app),
                None if path.starts_with(self.reserved_prefix.as_str()) => {
                    self.router.route_host(host)
                }
                None => None,
            };
            ctx.app = routed.cloned();
        }
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let request = session.req_header();
        let sizes = request
            .headers
            .iter()
            .map(|(k, v)| (k.as_str().len(), v.len()));
        let target_len = request.uri.path_and_query().map_or(0, |p| p.as_str().len());
        match self.limits.check(target_len, sizes) {
            Ok(()) => {}
            Err(SizeViolation::Headers) => {
                return self
                    .reply(
                        session,
                        ctx,
                        Reply::HeadersTooLarge,
                        Reason::HeadersTooLarge,
                    )
                    .await
            }
            Err(SizeViolation::Uri) => {
                return self
                    .reply(session, ctx, Reply::UriTooLong, Reason::UriTooLong)
                    .await
            }
        }
        if ctx.bad_host {
            return self
                .reply(session, ctx, Reply::BadRequest, Reason::BadHost)
                .await;
        }
        // The server-wide allowlist comes first: outsiders learn nothing, not even which
        // hosts exist.
        if let Some(list) = &self.ip_allowlist {
            if !list.admits(ctx.client_ip) {
                match list.mode {
                    crate::netguard::AllowlistMode::Enforce => {
                        return self
                            .reply(session, ctx, Reply::Forbidden, Reason::IpNotAllowed)
                            .await
                    }
                    crate::netguard::AllowlistMode::Report => ctx.ip_reported = true,
                }
            }
        }
        let Some(path) = ctx.path.clone() else {
            return self
                .reply(session, ctx, Reply::BadRequest, Reason::BadRequest)
                .await;
        };
        let Some(app) = ctx.app.clone() else {
            return self
                .reply(session, ctx, Reply::NotFound, Reason::UnknownHost)
                .await;
        };
        if !ctx.tls && !app.insecure_allow_plain_http {
            return match self.https_location(ctx, session) {
                Some(location) => {
                    self.reply(
                        session,
                        ctx,
                        Reply::RedirectHttps { location },
                        Reason::HttpsRequired,
                    )
                    .await
                }
                None => {
                    self.reply(session, ctx, Reply::BadRequest, Reason::BadRequest)
                        .await
                }
            };
        }
        self.authenticate(session, ctx).await;
        let endpoint = path.strip_prefix(self.reserved_prefix.as_str());
        // Without a session, sign-in endpoints and refused cookies are limited per address:
        // a flood of callbacks or forged cookies cannot exhaust the CPU.
        let pre_auth = ctx.session.is_none()
            && (ctx.cookie_rejected || endpoint.is_some_and(|e| e != "jwks.json"));
        if pre_auth {
            if let Err(over) = self.rate_limits.check_pre_auth(ctx.client_ip) {
                return self.rate_limited(session, ctx, &app, over).await;
            }
        }
        if let Some(endpoint) = endpoint {
            // The app's enforced allowlist guards its sign-in endpoints too: outsiders are
            // never sent to the identity provider.
            let outsider = app.ip_allowlist.as_ref().is_some_and(|l| {
                l.mode == crate::netguard::AllowlistMode::Enforce && !l.admits(ctx.client_ip)
            });
            // Exempt: the JWKS (public keys for backends) and the OP's back-channel logout
            // (authenticated by its signature, sent from the OP's own addresses).
            if outsider
                && !matches!(
                    endpoint,
                    "jwks.json" | "oidc/backchannel-logout" | "saml/metadata"
                )
            {
                return self
                    .reply(session, ctx, Reply::Forbidden, Reason::IpNotAllowed)
                    .await;
            }
            return self.portal(session, ctx, endpoint).await;
        }
        let request = session.req_header();
        let policy_request = Request {
            method: request.method.as_str(),
            path: &path,
            query: request.uri.query(),
            client_ip: ctx.client_ip,
        };
        let identity = ctx.session.as_ref().map(|s| &s.identity);
        match decide(&app, &policy_request, identity) {
            Decision::Allow(permit) => {
                let identity = ctx.session.as_ref().map(|s| &s.identity);
                if let Err(over) = self.rate_limits.check(
                    &app,
                    permit.rule_index(),
                    identity,
                    ctx.client_ip,
                    &path,
                ) {
                    return self.rate_limited(session, ctx, &app, over).await;
                }
                if permit.ip_reported() {
                    ctx.ip_reported = true;
                }
                if permit.carries_identity() {
                    let Some(data) = ctx.session.as_ref() else {
                        return self
                            .reply(session, ctx, Reply::InternalError, Reason::AssertionFailed)
                            .await;
                    };
                    match self
                        .signer
                        .token(&data.sid, &app, &data.identity, portal::unix_now())
                    {
                        Ok(token) => ctx.assertion = Some(token),
                        Err(error) => {
                            tracing::error!(%error, app = %app.id, "cannot sign the identity assertion");
                            return self
                                .reply(session, ctx, Reply::InternalError, Reason::AssertionFailed)
                                .await;
                        }
                    }
                }
                ctx.permit = Some(permit);
                Ok(false)
            }
            Decision::LoginRequired => {
                let reply = self.login_reply(session);
                self.reply(session, ctx, reply, Reason::LoginRequired).await
            }
            Decision::Deny(Reason::AppDisabled) => {
                self.reply(session, ctx, Reply::AppDisabled, Reason::AppDisabled)
                    .await
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
                self.reply(session, ctx, reply, Reason::MfaRequired).await
            }
            Decision::Deny(reason) => self.reply(session, ctx, Reply::Forbidden, reason).await,
        }
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        // Fail closed: only a Permit names an upstream.
        let Some(permit) = ctx.permit.as_ref() else {
            return Error::e_explain(
                ErrorType::InternalError,
                "upstream_peer reached without a permit",
            );
        };
        self.peers.peer(permit.app(), session.is_upgrade_req())
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let upgrade = session
            .is_upgrade_req()
            .then(|| upstream.headers.get(http::header::UPGRADE).cloned())
            .flatten();
        let connection: Vec<&str> = upstream
            .headers
            .get_all(http::header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        let names = upstream.headers.keys().map(|k| k.as_str());
        for name in hygiene::headers_to_remove(
            names,
            &connection,
            ctx.trusted_peer,
            &self.client_ip_headers,
        ) {
            upstream.remove_header(&name);
        }
        strip_cookies(upstream, &self.cookie_name)?;
        if let Some(upgrade) = upgrade {
            upstream.insert_header(http::header::CONNECTION, "Upgrade")?;
            upstream.insert_header(http::header::UPGRADE, upgrade)?;
        }
        let scheme = ctx.scheme(session);
        ctx.set_forwarding_headers(upstream, scheme)?;
        let Some(permit) = ctx.permit.as_ref() else {
            return Error::e_explain(
                ErrorType::InternalError,
                "upstream request without a permit",
            );
        };
        let app = permit.app();
        if permit.carries_identity() {
            // Never forward an authenticated request without its assertion.
            let (Some(token), Some(data)) = (ctx.assertion.as_deref(), ctx.session.as_ref()) else {
                return Error::e_explain(
                    ErrorType::InternalError,
                    "authenticated request without an assertion",
                );
            };
            upstream.insert_header("x-portcullis-assertion", token)?;
            let plain = if app.identity_headers.plain {
                crate::assertion::plain_headers(app, &data.identity)
            } else {
                Vec::new()
            };
            if crate::assertion::over_budget(app, token, &plain) {
                self.warn_budget(app, data);
            }
            for (name, value) in plain {
                upstream.insert_header(name, value)?;
            }
        }
        // Forward exactly the path that was authorised.
        let path = ctx.path.as_deref().unwrap_or("/");
        let target = match upstream.uri.query() {
            Some(q) => format!("{path}?{q}"),
            None => path.to_string(),
        };
        let uri = http::Uri::try_from(target)
            .map_err(|e| Error::because(ErrorType::InternalError, "normalised URI", e))?;
        upstream.set_uri(uri);
        if !app.preserve_host {
            upstream.insert_header(http::header::HOST, app.upstream.authority.as_str())?;
        } else if upstream.headers.get(http::header::HOST).is_none() {
            if let Some(host) = ctx.host.as_deref() {
                upstream.insert_header(http::header::HOST, host)?;
            }
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if response.status == http::StatusCode::SWITCHING_PROTOCOLS {
            // From here on the client's side is a WebSocket, not a request body: it may stay
            // quiet for as long as the app allows (`timeouts.websocket_idle`).
            if let Some(permit) = ctx.permit.as_ref() {
                session.set_read_timeout(Some(permit.app().upstream.timeouts.websocket_idle));
            }
        }
        let own: Vec<String> = response
            .headers
            .get_all(http::header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter(|v| !hygiene::sets_own_cookie(v, &self.cookie_name))
            .map(str::to_string)
            .collect();
        if own.len()
            != response
                .headers
                .get_all(http::header::SET_COOKIE)
                .iter()
                .count()
        {
            response.remove_header(&http::header::SET_COOKIE);
            for value in own {
                response.append_header(http::header::SET_COOKIE, value)?;
            }
        }
        if let (true, Some(hsts)) = (ctx.tls, &self.hsts) {
            response.insert_header(http::header::STRICT_TRANSPORT_SECURITY, hsts.as_str())?;
        }
        response.insert_header("x-request-id", ctx.request_id.as_str())?;
        for cookie in ctx.set_cookies.drain(..) {
            response.append_header(http::header::SET_COOKIE, cookie)?;
        }
        Ok(())
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let reply = match (e.esource(), e.etype()) {
            (_, ErrorType::HTTPStatus(400)) => Some(Reply::BadRequest),
            (
                ErrorSource::Upstream,
                ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout,
            ) => Some(Reply::GatewayTimeout),
            (ErrorSource::Upstream, _) => Some(Reply::BadGateway),
            (
                ErrorSource::Downstream,
                ErrorType::ReadError | ErrorType::WriteError | ErrorType::ConnectionClosed,
            ) => None,
            (ErrorSource::Downstream, _) => Some(Reply::BadRequest),
            _ => Some(Reply::InternalError),
        };
        let mut code = 0;
        if let Some(reply) = reply {
            code = reply.status();
            if session.response_written().is_none() {
                let reason = ctx.denial.unwrap_or(Reason::BadRequest);
                if let Err(write_error) = self.reply(session, ctx, reply, reason).await {
                    tracing::debug!(error = %write_error, "could not send error response");
                }
                // Failures after a decision keep the decision's record (an access with a 5xx).
                if ctx.permit.is_some() {
                    ctx.denial = None;
                }
            }
        }
        ctx.status = Some(code);
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    /// A client that goes away mid-response (a closed chat tab) is normal: counted and logged
    /// at debug. ERROR stays for Portcullis's own faults and the upstream's.
    fn suppress_error_log(&self, _session: &Session, ctx: &RequestCtx, error: &Error) -> bool {
        let client_left = error.esource() == &ErrorSource::Downstream
            && matches!(
                error.etype(),
                ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError
            );
        if client_left {
            let app = ctx.app.as_ref().map_or("-", |a| a.id.as_str());
            self.metrics
                .downstream_closed_early
                .with_label_values(&[app])
                .inc();
            tracing::debug!(app, request_id = %ctx.request_id, %error, "client closed the connection before the response was complete");
        }
        client_left
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut RequestCtx) {
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .or(ctx.status)
            .unwrap_or(0);
        let app_label = ctx.app.as_ref().map_or("-", |a| a.id.as_str());
        let (kind, outcome, reason) = match (&ctx.permit, ctx.denial) {
            (Some(permit), None) => (EventKind::Access, Outcome::Allow, permit.reason()),
            (_, Some(Reason::AppDisabled)) => {
                (EventKind::AppDisabled, Outcome::Deny, Reason::AppDisabled)
            }
            (_, Some(reason)) => (EventKind::AccessDenied, Outcome::Deny, reason),
            (None, None) if ctx.status.is_some() => {
                // Portcullis's own page (sign-in form, whoami…): counted, and audited by the
                // login/logout events themselves rather than as an access.
                self.metrics
                    .requests
                    .with_label_values(&[app_label, status_label(status), "portal"])
                    .inc();
                return;
            }
            (None, None) => (EventKind::AccessDenied, Outcome::Deny, Reason::BadRequest),
        };
        let status_label = status_label(status);
        self.metrics
            .requests
            .with_label_values(&[app_label, status_label, outcome_label(outcome)])
            .inc();
        if outcome == Outcome::Deny {
            self.metrics
                .denied
                .with_label_values(&[app_label, reason.as_str()])
                .inc();
        }
        self.metrics
            .duration
            .with_label_values(&[app_label])
            .observe(ctx.started.elapsed().as_secs_f64());
        let mut event = AuditEvent::new(kind);
        event.request_id = Some(std::mem::take(&mut ctx.request_id));
        event.client_ip = ctx.client_ip;
        event.app = ctx.app.as_ref().map(|a| a.audit_id.clone());
        event.method = Some(session.req_header().method.as_str().to_string());
        event.host = ctx.host.take();
        event.path = ctx.path.take();
        event.status = Some(status);
        event.decision = Some(outcome);
        event.reason = Some(reason);
        event.ip_reported = ctx.ip_reported;
        if ctx.ip_reported {
            self.metrics
                .ip_reported
                .with_label_values(&[app_label])
                .inc();
        }
        event.rule = ctx
            .permit
            .as_ref()
            .and_then(|p| p.rule())
            .map(str::to_string);
        if let Some(data) = ctx.session.take() {
            event.user = Some(data.identity.user_id);
            event.idp = Some(data.identity.idp);
            event.sid = Some(data.sid);
        }
        self.auditor.record(event).await;
    }
}

impl Gateway {
    /// Logs (at most once a minute) that a user's identity headers exceed the app's budget.
    fn warn_budget(&self, app: &crate::config::App, data: &crate::session::SessionData) {
        use std::sync::atomic::Ordering;
        let now = portal::unix_now();
        let last = self.budget_warned.load(Ordering::Relaxed);
        if now >= last + 60
            && self
                .budget_warned
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                app = %app.id,
                user = %data.identity.user_id,
                roles = data.identity.roles.len(),
                budget = app.identity_headers.budget_bytes,
                "identity headers exceed the app's budget: limit identity_headers.roles/custom"
            );
        }
    }
}

fn strip_cookies(upstream: &mut RequestHeader, cookie_name: &str) -> Result<()> {
    let cookies = upstream.headers.get_all(http::header::COOKIE);
    if cookies.iter().next().is_none() {
        return Ok(());
    }
    let kept: Vec<String> = cookies
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| hygiene::strip_own_cookies(v, cookie_name))
        .collect();
    upstream.remove_header(&http::header::COOKIE);
    if !kept.is_empty() {
        upstream.insert_header(http::header::COOKIE, kept.join("; "))?;
    }
    Ok(())
}

fn outcome_label(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Allow => "allow",
        Outcome::Deny => "deny",
    }
}

/// Status codes as static labels (bounded cardinality, no allocation): common codes
/// exactly, anything else by class.
#[allow(clippy::match_overlapping_arm)]
fn status_label(status: u16) -> &'static str {
    match status {
        101 => "101",
        200 => "200",
        201 => "201",
        204 => "204",
        206 => "206",
        301 => "301",
        302 => "302",
        304 => "304",
        307 => "307",
        308 => "308",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        414 => "414",
        429 => "429",
        431 => "431",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        0 => "0",
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}
