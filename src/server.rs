//! Wiring: builds the Pingora server from a loaded [`Config`] and runs it until shutdown.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};
use pingora::services::listening::Service;
use pingora::services::ServiceReadyNotifier;

use crate::admin::AdminApp;
use crate::audit::{self, AuditEvent, EventKind, PendingWriter, WriterHandle};
use crate::config::Config;
use crate::idp::oidc::OidcProvider;
use crate::idp::saml::SamlProvider;
use crate::listeners::{Bound, Gated, Listening};
use crate::metrics::Metrics;
use crate::proxy::Gateway;
use arc_swap::ArcSwap;

mod reload;
use crate::runtime::Runtime;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Metrics registry.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// A runtime object (certificate, key, provider) cannot be built from the config.
    #[error("{0}")]
    Config(#[from] crate::config::ConfigReport),
    /// Upstream TLS files.
    #[error("upstream: {0}")]
    Upstream(#[from] crate::proxy::PeerError),
    /// Pingora refused a listener setting.
    #[error("listener: {0}")]
    Listener(String),
    /// A listening address is taken or not available.
    #[error(transparent)]
    Bind(#[from] crate::listeners::BindError),
}

/// Process options from the command line.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Take over listening sockets from a running instance (zero-downtime upgrade).
    pub upgrade: bool,
    /// Detach from the terminal.
    pub daemon: bool,
}

/// Runs until a shutdown signal; returns after the audit trail is sealed.
pub fn run(config: Config, options: RunOptions) -> Result<(), StartError> {
    let metrics = Arc::new(Metrics::new()?);
    crate::logging::init(&config.server.log, Some(metrics.clone()));
    for warning in &config.warnings {
        tracing::warn!(config.file = %config.source.display(), "{warning}");
    }
    // Built after logging starts: building may warn (a generated assertion key).
    let runtime = Runtime::build(&config, &metrics)?;
    let kept = runtime.kept();
    let Runtime {
        certificates,
        checkpoint_signer: signer,
        assertion_signer,
        rate_limits,
        providers,
        revoked,
        throttle,
        revocation_sync,
        shared,
        sessions,
        switches,
    } = runtime;
    tracing::info!(audit.public_key = signer.public_key_base64(), audit.file = %config.audit.path.display(), "audit checkpoints signed with this key");
    // Bound first, before anything reports ready or the process daemonises: a busy port
    // ends the start here with a message and a non-zero exit.
    let (proxy_sockets, admin_sockets) = bind_listeners(&config, options.upgrade)?;
    let (auditor, pending_writer) = audit::channel(&config.audit, signer, metrics.clone());
    let writer_slot: Arc<Mutex<Option<WriterHandle>>> = Arc::default();

    let mut server = Server::new_with_opt_and_conf(
        Opt {
            upgrade: options.upgrade,
            daemon: options.daemon,
            ..Opt::default()
        },
        server_conf(&config),
    );
    server.bootstrap();

    let oidc = Arc::new(ArcSwap::from_pointee(providers.oidc.clone()));
    let saml = Arc::new(ArcSwap::from_pointee(providers.saml.clone()));
    let limits = Arc::new(ArcSwap::new(rate_limits.clone()));
    let certificates = certificates.map(|c| Arc::new(crate::certs::LiveCertificates::new(c)));
    let streams = Arc::new(crate::proxy::Streams::default());
    let stream_sweeper = StreamSweeper {
        streams: streams.clone(),
        metrics: metrics.clone(),
        revoked: revoked.clone(),
        switches: switches.clone(),
        auditor: auditor.clone(),
    };
    let control = Arc::new(ArcSwap::from_pointee(crate::control::Control::new(
        &config,
        revoked.clone(),
        sessions.clone(),
        switches.clone(),
    )));
    let sha256 = std::fs::read(&config.source)
        .map(|bytes| reload::sha256_hex(&bytes))
        .unwrap_or_default();
    let desk = Arc::new(crate::console::Desk::new(control.clone(), sha256.clone()));
    let gateway = Gateway::new(
        &config,
        auditor.clone(),
        metrics.clone(),
        crate::proxy::GatewayParts {
            providers,
            revoked,
            throttle,
            signer: assertion_signer,
            rate_limits: rate_limits.clone(),
            shared,
            sessions,
            switches,
            streams: streams.clone(),
            desk: desk.clone(),
        },
    )?;
    let (reloadable, current) = crate::proxy::Reloadable::new(gateway);
    let reloader = Arc::new(reload::Reloader {
        path: config.source.clone(),
        fixed: tokio::sync::Mutex::new(reload::fixed_settings(&config)),
        metrics: metrics.clone(),
        auditor: auditor.clone(),
        kept,
        streams,
        gateway: current,
        control: control.clone(),
        certificates: certificates.clone(),
        oidc: oidc.clone(),
        saml: saml.clone(),
        limits: limits.clone(),
        desk: desk.clone(),
    });
    let _ = desk.reloader.set(reloader.clone());
    if !sha256.is_empty() {
        metrics.config_info.with_label_values(&[&sha256]).set(1);
    }
    // Every HTTP/1 connection gets a total deadline for its request headers (slowloris).
    let mut proxy = pingora::services::listening::Service::new(
        "portcullis".to_string(),
        crate::proxy::DeadlineApp::new(
            pingora::proxy::http_proxy(&server.configuration, reloadable),
            config.server.limits.header_timeout,
            config.server.limits.max_connections_per_ip,
            config.server.trusted_proxies.clone(),
        )
        .with_proxy_protocol(
            config
                .server
                .http
                .as_ref()
                .filter(|h| h.proxy_protocol)
                .map(|h| h.listen.clone())
                .unwrap_or_default(),
        )
        .with_drain(keep_alive_drain(config.server.grace_period)),
    );
    if let (Some(https), Some(resolver)) = (&config.server.https, &certificates) {
        for addr in &https.listen {
            let settings = crate::tls::listener_settings(resolver)
                .map_err(|e| StartError::Listener(e.to_string()))?;
            proxy.add_listener(client_listener(addr).tls(settings));
        }
    }
    if let Some(http) = &config.server.http {
        for addr in &http.listen {
            proxy.add_listener(client_listener(addr));
        }
    }
    let upstreams = config
        .apps
        .iter()
        .map(|a| a.upstream.address.clone())
        .collect();
    let listening = Listening::default();
    let mut admin = Service::new(
        "admin".to_string(),
        AdminApp::new(
            metrics.clone(),
            upstreams,
            listening.clone(),
            control,
            reloader.clone(),
            auditor.clone(),
        ),
    );
    admin.add_tcp(&config.admin.listen.to_string());
    let audit_service = background_service(
        "audit",
        AuditWriterService {
            pending: Mutex::new(Some(pending_writer)),
            started: writer_slot.clone(),
        },
    );
    let audit_handle = server.add_service(audit_service);
    let discovery_handle = server.add_service(background_service(
        "oidc-discovery",
        Discovery { providers: oidc },
    ));
    let saml_handle = server.add_service(background_service(
        "saml-metadata",
        SamlMetadata { providers: saml },
    ));
    if let Some(sync) = revocation_sync {
        server.add_service(background_service(
            "store-sync",
            StoreSync {
                sync,
                metrics: metrics.clone(),
            },
        ));
    }
    server.add_service(background_service("stream-sweeper", stream_sweeper));
    server.add_service(background_service("sighup-reload", HangUp { reloader }));
    server.add_service(background_service(
        "rate-limit-sweeper",
        Sweeper {
            limits,
            metrics: metrics.clone(),
        },
    ));
    // Listeners open only once the audit file is writable (nothing is served unaudited) and
    // every OIDC provider had its first discovery attempt.
    let proxy_handle =
        server.add_service(Gated::new(proxy, proxy_sockets, options.upgrade, listening));
    proxy_handle.add_dependency(&audit_handle);
    proxy_handle.add_dependency(&discovery_handle);
    proxy_handle.add_dependency(&saml_handle);
    server.add_service(Gated::new(
        admin,
        admin_sockets,
        options.upgrade,
        Listening::default(),
    ));

    let mut loaded = AuditEvent::new(EventKind::ConfigLoaded);
    loaded.detail = Some(config.source.display().to_string());
    auditor.record_blocking(loaded);
    tracing::info!(config.file = %config.source.display(), apps = config.apps.len(), "portcullis starting");
    server.run(RunArgs::default());
    let writer = writer_slot.lock().ok().and_then(|mut slot| slot.take());
    if let Some(writer) = writer {
        writer.finish();
    }
    Ok(())
}

/// Idle keep-alive connections close one second before the grace period ends (Pingora stops
/// its runtimes then), so the close is a clean FIN and not a dropped task.
fn keep_alive_drain(grace_period: std::time::Duration) -> std::time::Duration {
    grace_period.saturating_sub(std::time::Duration::from_secs(1))
}

/// Binds the proxy's and the admin listeners, unless an upgrade hands them over.
fn bind_listeners(config: &Config, upgrade: bool) -> Result<(Bound, Bound), StartError> {
    if upgrade {
        return Ok((Bound::default(), Bound::default()));
    }
    let mut proxy = Bound::default();
    if let Some(https) = &config.server.https {
        proxy.extend(Bound::bind("server.https.listen", &https.listen)?);
    }
    if let Some(http) = &config.server.http {
        proxy.extend(Bound::bind("server.http.listen", &http.listen)?);
    }
    let admin = Bound::bind("admin.listen", &[config.admin.listen])?;
    Ok((proxy, admin))
}

/// Discovers every OIDC provider (and its JWKS) at start, then refreshes them so that key
/// rotation at the OP is picked up; a failed refresh keeps the last good copy.
struct Discovery {
    /// Swapped by a reload.
    providers: Arc<ArcSwap<Vec<Arc<OidcProvider>>>>,
}

impl Discovery {
    async fn discover_all(&self) -> bool {
        let mut all = true;
        let providers = self.providers.load_full();
        for provider in providers.iter() {
            if let Err(e) = provider.discover().await {
                tracing::warn!(idp = %provider.id, error = %e, "OIDC discovery failed; sign-in with this provider is unavailable until it succeeds");
                all = false;
            }
        }
        all
    }
}

#[async_trait]
impl BackgroundService for Discovery {
    async fn start_with_ready_notifier(
        &self,
        mut shutdown: ShutdownWatch,
        ready: ServiceReadyNotifier,
    ) {
        let mut healthy = self.discover_all().await;
        ready.notify_ready();
        loop {
            let wait = if healthy {
                std::time::Duration::from_secs(600)
            } else {
                std::time::Duration::from_secs(10)
            };
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(wait) => healthy = self.discover_all().await,
            }
        }
    }

    async fn start(&self, _shutdown: ShutdownWatch) {}
}

/// Fetches SAML metadata published at a URL at start, then again every `metadata_refresh`
/// (every minute while it fails); a failed fetch keeps the last good copy.
struct SamlMetadata {
    /// Swapped by a reload.
    providers: Arc<ArcSwap<Vec<Arc<SamlProvider>>>>,
}

impl SamlMetadata {
    /// Fetches what is due; returns the seconds until the next fetch (a minute at most, so
    /// that providers a reload adds are seen).
    async fn fetch_due(&self, due: &mut Vec<u64>, now: u64) -> u64 {
        let providers = self.providers.load_full();
        if due.len() != providers.len() {
            // A reload changed the list (it fetched the new ones itself): start over.
            *due = providers
                .iter()
                .map(|p| {
                    p.metadata_refresh()
                        .map_or(0, |every| now + every.as_secs())
                })
                .collect();
        }
        let mut next = 60;
        for (provider, at) in providers.iter().zip(due.iter_mut()) {
            let Some(every) = provider.metadata_refresh() else {
                continue;
            };
            if *at <= now {
                *at = match provider.refresh_metadata().await {
                    Ok(()) => now + every.as_secs(),
                    Err(e) => {
                        tracing::warn!(idp = %provider.id, error = %e, "SAML metadata fetch failed; keeping the last good copy (sign-in unavailable until one succeeds)");
                        now + 60
                    }
                };
            }
            next = next.min(at.saturating_sub(now));
        }
        next
    }
}

#[async_trait]
impl BackgroundService for SamlMetadata {
    async fn start_with_ready_notifier(
        &self,
        mut shutdown: ShutdownWatch,
        ready: ServiceReadyNotifier,
    ) {
        let mut due = vec![0; self.providers.load().len()];
        let mut wait = self.fetch_due(&mut due, crate::proxy::unix_now()).await;
        ready.notify_ready();
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(std::time::Duration::from_secs(wait.max(1))) => {
                    wait = self.fetch_due(&mut due, crate::proxy::unix_now()).await;
                }
            }
        }
    }

    async fn start(&self, _shutdown: ShutdownWatch) {}
}

/// Drops full rate-limit buckets every 10 s, so millions of distinct keys (say, rotating IPv6
/// addresses) do not pile up in memory.
struct Sweeper {
    /// Swapped by a reload.
    limits: Arc<ArcSwap<crate::netguard::RateLimits>>,
    metrics: Arc<Metrics>,
}

#[async_trait]
impl BackgroundService for Sweeper {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(std::time::Duration::from_secs(10)) => {
                    let limits = self.limits.load();
                    limits.sweep();
                    let held = i64::try_from(limits.buckets()).unwrap_or(i64::MAX);
                    self.metrics.rate_limit_buckets.set(held);
                }
            }
        }
    }
}

/// `SIGHUP` reloads the configuration in place (the result is logged and audited).
struct HangUp {
    reloader: Arc<reload::Reloader>,
}

#[async_trait]
impl BackgroundService for HangUp {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        use crate::control::Reload;
        let Ok(mut hangups) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            tracing::warn!("SIGHUP cannot be watched: reload through the admin API");
            return;
        };
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                Some(()) = hangups.recv() => {
                    let _ = self.reloader.reload("SIGHUP").await;
                }
            }
        }
    }
}

/// Ends open streams whose session lost its right to run (see `proxy::Streams`).
struct StreamSweeper {
    streams: Arc<crate::proxy::Streams>,
    metrics: Arc<Metrics>,
    revoked: Arc<crate::store::RevokedSessions>,
    switches: Arc<crate::store::KillSwitches>,
    auditor: crate::audit::Auditor,
}

#[async_trait]
impl BackgroundService for StreamSweeper {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut every = tokio::time::interval(crate::proxy::SWEEP_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = every.tick() => {
                    let now = crate::proxy::unix_now();
                    self.streams
                        .sweep(&self.revoked, &self.switches, &self.auditor, now)
                        .await;
                    let open = i64::try_from(self.streams.len()).unwrap_or(i64::MAX);
                    self.metrics.streams_open.set(open);
                }
            }
        }
    }
}

/// Starts the audit writer inside the server (after any daemonising fork) and reports
/// ready only when the file is open. If it cannot start, the process exits: serving
/// without an audit trail is not an option.
struct AuditWriterService {
    pending: Mutex<Option<PendingWriter>>,
    started: Arc<Mutex<Option<WriterHandle>>>,
}

#[async_trait]
impl BackgroundService for AuditWriterService {
    async fn start_with_ready_notifier(
        &self,
        mut shutdown: ShutdownWatch,
        ready: ServiceReadyNotifier,
    ) {
        let pending = self.pending.lock().ok().and_then(|mut p| p.take());
        let Some(pending) = pending else { return };
        match pending.start() {
            Ok(handle) => {
                if let Ok(mut slot) = self.started.lock() {
                    *slot = Some(handle);
                }
                ready.notify_ready();
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot open the audit trail; refusing to serve");
                std::process::exit(1);
            }
        }
        let _ = shutdown.changed().await;
    }

    async fn start(&self, _shutdown: ShutdownWatch) {}
}

/// Read buffer of each client connection. Pingora's default is 64 KiB, allocated for every
/// connection however little it sends; a chat app's clients send small requests and then hold
/// the connection open for a streamed answer, so a large buffer is mostly memory per open
/// stream. 16 KiB still takes a whole TLS record (or a typical request head) in one read.
const CLIENT_READ_BUFFER: usize = 16 * 1024;

/// A client-facing listener on `addr` with [`CLIENT_READ_BUFFER`].
fn client_listener(addr: &std::net::SocketAddr) -> pingora::listeners::ListenerConfig {
    pingora::listeners::ListenerConfig::tcp(addr.to_string()).l4_buffer(
        pingora::protocols::l4::stream::L4BufferSettings::default().read(CLIENT_READ_BUFFER),
    )
}

fn server_conf(config: &Config) -> ServerConf {
    let server = &config.server;
    ServerConf {
        threads: server.threads,
        pid_file: server.pid_file.display().to_string(),
        upgrade_sock: server.upgrade_sock.display().to_string(),
        grace_period_seconds: Some(server.grace_period.as_secs()),
        graceful_shutdown_timeout_seconds: Some(server.shutdown_timeout.as_secs()),
        // Default false: each worker keeps its own tasks, with no cross-thread stealing (and
        // the wake-ups and cache misses it costs) for short proxied requests.
        work_stealing: server.work_stealing,
        ..ServerConf::default()
    }
}

/// Shares revocations with the other replicas through Redis until shutdown.
struct StoreSync {
    sync: crate::store::redis::RevocationSync,
    metrics: Arc<Metrics>,
}

#[async_trait]
impl BackgroundService for StoreSync {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let stopped = async move {
            let _ = shutdown.changed().await;
        };
        self.sync.run(self.metrics.clone(), stopped).await;
    }
}
