//! The Pingora `ProxyHttp` phases. Thin on purpose: each callback reads the request context,
//! calls one phase function from the security core, and acts on its result.
//!
//! ```text
//! early_request_filter    client IP (trusted proxies), request id, host, normalised path, route
//! request_filter          pipeline.rs: the named steps → forward | own endpoint (portal/) | Stop
//! upstream_peer           from the Permit only; no Permit → 500, never forward
//! upstream_request_filter forward.rs: strip what a client must not decide, add the identity
//! response_filter         forward.rs: HSTS, request id, drop upstream attempts to set our cookies
//! logging                 record.rs: one metrics sample and one audit record per request
//! ```

mod answer;
mod ctx;
mod deadline;
mod forward;
mod hygiene;
mod peers;
mod pipeline;
mod portal;
mod proxy_protocol;
mod record;
mod streams;

use std::sync::Arc;

use async_trait::async_trait;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{ErrorSource, ErrorType};

pub use ctx::{Generational, RequestCtx};
pub use deadline::DeadlineApp;
pub use peers::PeerError;
pub use portal::unix_now;

use pipeline::{Admitted, Stop};

use crate::assertion::Signer;
use crate::audit::Auditor;
use crate::config::{App, Config};
use crate::idp::local::LocalProvider;
use crate::idp::oidc::OidcProvider;
use crate::metrics::Metrics;
use crate::netguard::SizeLimits;
use crate::policy::Reason;
use crate::respond::Reply;
use crate::route::Router;
use crate::session::{Authenticator, SessionCodec};
use crate::store::redis::SharedStore;
use crate::store::{KillSwitches, LiveSessions, LoginThrottle, SeenTokens};
pub use streams::{StreamRequest, Streams, SWEEP_EVERY};

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
    /// Each app's common metric series, resolved once (indexed by `App::index`).
    app_metrics: Vec<record::AppMetrics>,
    /// Who the client is, and what a request may carry.
    guards: Guards,
    /// Names and URLs of Portcullis's own surface.
    site: Site,
    /// Cookie → session → revocation → refresh.
    auth: Authenticator,
    /// Bearer tokens and API keys.
    machines: Arc<crate::machine::MachineAuth>,
    /// Sign-in and sign-out.
    sign_in: SignInState,
    /// Signs the user-context assertion; serves the JWKS.
    signer: Arc<Signer>,
    /// Users, entities and apps an operator turned off.
    switches: Arc<KillSwitches>,
    /// Open upstream connections of signed-in requests, cut when their session loses its
    /// right to run.
    streams: Arc<Streams>,
    /// The security console (`admin.console`), when configured.
    console: Option<crate::console::Console>,
    auditor: Auditor,
    metrics: Arc<Metrics>,
    /// Last time (unix seconds) a header-budget warning was logged: at most one a minute.
    budget_warned: std::sync::atomic::AtomicU64,
}

/// Network guards: trusted proxies, size limits, allowlists, rate limits.
struct Guards {
    trusted_proxies: Vec<ipnet::IpNet>,
    /// Client-address headers a trusted proxy may pass on (`server.client_ip_headers`).
    client_ip_headers: Vec<String>,
    limits: SizeLimits,
    /// Addresses allowed to reach anything.
    ip_allowlist: Option<crate::netguard::IpAllowlist>,
    /// Every rate limiter (shared with the sweeper).
    rate_limits: Arc<crate::netguard::RateLimits>,
}

/// Portcullis's own surface on every app host.
struct Site {
    /// Prefix of Portcullis's own endpoints.
    reserved_prefix: String,
    /// `server.public_url`'s origin (SAML SP metadata).
    public_origin: String,
    cookie_name: String,
    /// `<cookie_name>-flow-`, computed once.
    flow_prefix: String,
    hsts: Option<String>,
    /// Port put in HTTPS redirects (`None` for 443).
    https_port: Option<u16>,
    /// Go straight to the only SSO provider (`server.sign_in.auto_redirect`).
    auto_redirect: bool,
    /// `server.sse_end_event`.
    sse_end_event: bool,
}

/// What sign-in and sign-out keep.
struct SignInState {
    login: LoginOptions,
    throttle: Arc<LoginThrottle>,
    /// Bounds concurrent Argon2 checks (memory and CPU under a login flood).
    password_checks: tokio::sync::Semaphore,
    /// Back-channel logout tokens already used.
    logout_tokens: SeenTokens,
    /// Replay memory every replica shares (`store.kind: redis`).
    shared: Option<Arc<SharedStore>>,
    /// Live sessions by user and entity.
    sessions: Arc<LiveSessions>,
    session_lifetime: std::time::Duration,
}

/// The runtime objects the gateway takes over (built by `runtime::Runtime::build`).
pub struct GatewayParts {
    /// The sign-in methods.
    pub providers: crate::runtime::Providers,
    /// Revoked sessions, as this replica knows them.
    pub revoked: Arc<crate::store::RevokedSessions>,
    /// Failed local sign-ins.
    pub throttle: Arc<LoginThrottle>,
    /// Signs the user-context assertion.
    pub signer: Arc<Signer>,
    /// Every rate limiter (shared with the sweeper).
    pub rate_limits: Arc<crate::netguard::RateLimits>,
    /// What replicas share on Redis (`store.kind: redis`).
    pub shared: Option<Arc<SharedStore>>,
    /// Live sessions by user and entity.
    pub sessions: Arc<LiveSessions>,
    /// Users, entities and apps an operator turned off.
    pub switches: Arc<KillSwitches>,
    /// Open streams (swept by the server's background task).
    pub streams: Arc<Streams>,
    /// What the security console keeps across reloads.
    pub desk: Arc<crate::console::Desk>,
}

impl Gateway {
    /// Compiles routing and upstream peers from `config`.
    pub fn new(
        config: &Config,
        auditor: Auditor,
        metrics: Arc<Metrics>,
        parts: GatewayParts,
    ) -> Result<Gateway, peers::PeerError> {
        let GatewayParts {
            providers,
            revoked,
            throttle,
            signer,
            rate_limits,
            shared,
            sessions,
            switches,
            streams,
            desk,
        } = parts;
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
            app_metrics: config
                .apps
                .iter()
                .map(|app| record::AppMetrics::new(&metrics, &app.id))
                .collect(),
            guards: Guards {
                trusted_proxies: config.server.trusted_proxies.clone(),
                client_ip_headers: config.server.client_ip_headers.clone(),
                limits: config.server.limits,
                ip_allowlist: config.server.ip_allowlist.clone(),
                rate_limits,
            },
            site: Site {
                reserved_prefix: config.server.reserved_prefix.clone(),
                public_origin: config.server.public_url.origin().ascii_serialization(),
                cookie_name: config.session.cookie_name.clone(),
                flow_prefix: format!("{}-flow-", config.session.cookie_name),
                hsts: config.server.hsts.clone(),
                https_port: https_port.filter(|p| *p != 443),
                auto_redirect: config.server.sign_in.auto_redirect,
                sse_end_event: config.server.sse_end_event,
            },
            auth: Authenticator::new(
                SessionCodec::new(
                    &config.session.encryption_keys,
                    &config.session.cookie_name,
                    &config.session.deployment_id,
                    config.session.max_chunks,
                    config.session.idle_timeout,
                ),
                &config.session.cookie_name,
                providers.oidc.clone(),
                revoked,
                shared.clone(),
                sessions.clone(),
                auditor.clone(),
            ),
            machines: providers.machines,
            sign_in: SignInState {
                login: LoginOptions {
                    local: providers.local,
                    oidc: providers.oidc,
                    saml: providers.saml,
                },
                throttle,
                password_checks: tokio::sync::Semaphore::new(4),
                logout_tokens: SeenTokens::default(),
                shared,
                sessions,
                session_lifetime: config.session.lifetime,
            },
            signer,
            switches,
            streams,
            console: crate::console::Console::new(config, desk, auditor.clone()),
            auditor,
            metrics,
            budget_warned: std::sync::atomic::AtomicU64::new(0),
        })
    }
}

/// The `ProxyHttp` phases of one generation (see [`Reloadable`], which Pingora runs).
impl Gateway {
    pub(crate) async fn early_request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.inspect(session, &self.guards.trusted_proxies);
        // Request bodies: the longest wait for their next piece (Pingora's default is 60 s).
        session.set_read_timeout(Some(self.guards.limits.body_idle_timeout));
        if let (Some(path), Some(host)) = (ctx.path.as_deref(), ctx.host.as_deref()) {
            let routed = match self.router.route(host, path) {
                Some(app) => Some(app),
                None if path.starts_with(self.site.reserved_prefix.as_str()) => {
                    self.router.route_host(host)
                }
                None => None,
            };
            ctx.app = routed.cloned();
        }
        Ok(())
    }

    pub(crate) async fn request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<bool> {
        match self.admit(session, ctx).await {
            Ok(Admitted::Forward) => Ok(false),
            Ok(Admitted::Endpoint(endpoint)) => self.portal(session, ctx, endpoint).await,
            Err(Stop::Reply(reply, reason)) => self.reply(session, ctx, reply, reason).await,
            Err(Stop::RateLimited(over)) => self.rate_limited(session, ctx, over).await,
        }
    }

    pub(crate) async fn upstream_peer(
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

    pub(crate) async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        self.prepare_upstream_request(session, upstream, ctx)
    }

    pub(crate) async fn response_filter(
        &self,
        session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        self.prepare_response(session, response, ctx)
    }

    pub(crate) async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        if let Some(id) = ctx.stream.take() {
            self.streams.close(id);
        }
        self.tell_sse_client_why(session, ctx).await;
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
    pub(crate) fn suppress_error_log(
        &self,
        _session: &Session,
        ctx: &RequestCtx,
        error: &Error,
    ) -> bool {
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

    /// A signed-in request's upstream socket joins the open streams, so that a revocation
    /// can end its response however long it runs.
    pub(crate) async fn connected_to_upstream(
        &self,
        session: &mut Session,
        _reused: bool,
        _peer: &HttpPeer,
        fd: std::os::unix::io::RawFd,
        _digest: Option<&pingora::protocols::Digest>,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let (Some(data), Some(app), Some(path)) = (&ctx.session, &ctx.app, &ctx.path) {
            let request = session.req_header();
            let id = self.streams.open(
                StreamRequest {
                    session: data,
                    app: &app.id,
                    method: request.method.as_str(),
                    path,
                    query: request.uri.query(),
                    client_ip: ctx.client_ip,
                },
                fd,
            );
            (ctx.stream, ctx.stream_id) = (Some(id), Some(id));
        }
        Ok(())
    }

    /// The last upstream byte: out of the open streams before Pingora may pool the socket.
    pub(crate) fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        _body: &mut Option<bytes::Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<std::time::Duration>> {
        if end_of_stream {
            if let Some(id) = ctx.stream.take() {
                self.streams.close(id);
            }
        }
        Ok(None)
    }

    /// An SSE answer cut by a revocation (its upstream socket shut, so here as a failure)
    /// ends with a last event saying why, and a clean end of the chunked body.
    async fn tell_sse_client_why(&self, session: &mut Session, ctx: &RequestCtx) {
        let event_stream = session.response_written().is_some_and(|r| {
            r.headers
                .get(http::header::CONTENT_TYPE)
                .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"))
        });
        if !self.site.sse_end_event || !event_stream {
            return;
        }
        let Some(why) = ctx.stream_id.and_then(|id| self.streams.take_cut(id)) else {
            return;
        };
        let last = format!("event: portcullis-ended\ndata: {why}\n\n");
        if let Err(e) = session
            .write_response_body(Some(bytes::Bytes::from(last)), true)
            .await
        {
            tracing::debug!(error = %e, "the last SSE event could not be written");
        }
    }

    /// A WebSocket cut by a revocation ends with a close frame saying why (1008); the
    /// connection closes after it.
    pub(crate) fn response_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<std::time::Duration>> {
        if end_of_stream && session.was_upgraded() {
            if let Some(why) = ctx.stream_id.and_then(|id| self.streams.take_cut(id)) {
                let frame = streams::close_frame(why);
                *body = Some(match body.take() {
                    Some(rest) => [rest, frame].concat().into(),
                    None => frame,
                });
            }
        }
        Ok(None)
    }

    pub(crate) async fn logging(
        &self,
        session: &mut Session,
        _e: Option<&Error>,
        ctx: &mut RequestCtx,
    ) {
        if let Some(id) = ctx.stream.take() {
            self.streams.close(id);
        }
        if let Some(id) = ctx.stream_id.take() {
            self.streams.take_cut(id);
        }
        self.record(session, ctx).await;
    }
}

/// What Pingora runs: the current generation of the gateway. A reload builds a new one from the
/// new configuration and swaps it in whole; each request keeps the generation it started with,
/// so requests in flight finish under the configuration they began with.
pub struct Reloadable {
    current: Arc<arc_swap::ArcSwap<Gateway>>,
}

impl Reloadable {
    /// Runs `gateway` until a reload swaps another in through the returned handle.
    pub fn new(gateway: Gateway) -> (Reloadable, Arc<arc_swap::ArcSwap<Gateway>>) {
        let current = Arc::new(arc_swap::ArcSwap::from_pointee(gateway));
        (
            Reloadable {
                current: current.clone(),
            },
            current,
        )
    }
}

#[async_trait]
impl ProxyHttp for Reloadable {
    type CTX = Generational;

    /// No downstream modules: Portcullis compresses nothing (a streamed answer must never wait
    /// for a compressor), and Pingora's default, a disabled compression module, would still be
    /// allocated and called for every request.
    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

    fn new_ctx(&self) -> Generational {
        Generational {
            gateway: self.current.load_full(),
            request: RequestCtx::new(),
        }
    }

    async fn early_request_filter(
        &self,
        session: &mut Session,
        ctx: &mut Generational,
    ) -> Result<()> {
        let Generational { gateway, request } = ctx;
        gateway.early_request_filter(session, request).await
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Generational) -> Result<bool> {
        let Generational { gateway, request } = ctx;
        gateway.request_filter(session, request).await
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut Generational,
    ) -> Result<Box<HttpPeer>> {
        let Generational { gateway, request } = ctx;
        gateway.upstream_peer(session, request).await
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut Generational,
    ) -> Result<()> {
        let Generational { gateway, request } = ctx;
        gateway
            .upstream_request_filter(session, upstream, request)
            .await
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut Generational,
    ) -> Result<()> {
        let Generational { gateway, request } = ctx;
        gateway.response_filter(session, response, request).await
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut Generational,
    ) -> FailToProxy {
        let Generational { gateway, request } = ctx;
        gateway.fail_to_proxy(session, e, request).await
    }

    fn suppress_error_log(&self, session: &Session, ctx: &Generational, error: &Error) -> bool {
        ctx.gateway.suppress_error_log(session, &ctx.request, error)
    }

    async fn connected_to_upstream(
        &self,
        session: &mut Session,
        reused: bool,
        peer: &HttpPeer,
        fd: std::os::unix::io::RawFd,
        digest: Option<&pingora::protocols::Digest>,
        ctx: &mut Generational,
    ) -> Result<()> {
        let Generational { gateway, request } = ctx;
        gateway
            .connected_to_upstream(session, reused, peer, fd, digest, request)
            .await
    }

    fn upstream_response_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        end_of_stream: bool,
        ctx: &mut Generational,
    ) -> Result<Option<std::time::Duration>> {
        let Generational { gateway, request } = ctx;
        gateway.upstream_response_body_filter(session, body, end_of_stream, request)
    }

    fn response_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        end_of_stream: bool,
        ctx: &mut Generational,
    ) -> Result<Option<std::time::Duration>> {
        let Generational { gateway, request } = ctx;
        gateway.response_body_filter(session, body, end_of_stream, request)
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Generational) {
        let Generational { gateway, request } = ctx;
        gateway.logging(session, e, request).await;
    }
}
