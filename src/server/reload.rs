//! In-place reload: the configuration file read again, checked in full, and swapped in whole
//! (`POST /api/v1/reload`, `SIGHUP`). New requests run under the new configuration as soon as
//! the swap returns; requests in flight finish under the one they began with (each holds its
//! generation, see `proxy::Reloadable`). What outlives a configuration is kept
//! (`runtime::Kept`: revocations, lock-outs, kill switches, the session index, the store).
//! Settings a running process cannot change (its sockets, store, audit file, threads) are
//! reported as needing the process handover; the rest still applies.

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::audit::{AuditEvent, Auditor, EventKind};
use crate::certs::LiveCertificates;
use crate::config::Config;
use crate::control::{Control, Reload, Reloaded};
use crate::idp::oidc::OidcProvider;
use crate::idp::saml::SamlProvider;
use crate::metrics::Metrics;
use crate::netguard::RateLimits;
use crate::proxy::{Gateway, GatewayParts, Streams};
use crate::runtime::{Kept, Rebuilt};

/// Everything a reload replaces, and what it keeps.
pub(super) struct Reloader {
    pub(super) path: PathBuf,
    /// Settings that need a handover, as running now (key, value); also serialises reloads.
    pub(super) fixed: tokio::sync::Mutex<Vec<(&'static str, String)>>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) auditor: Auditor,
    pub(super) kept: Kept,
    pub(super) streams: Arc<Streams>,
    pub(super) gateway: Arc<ArcSwap<Gateway>>,
    pub(super) control: Arc<ArcSwap<Control>>,
    pub(super) certificates: Option<Arc<LiveCertificates>>,
    pub(super) oidc: Arc<ArcSwap<Vec<Arc<OidcProvider>>>>,
    pub(super) saml: Arc<ArcSwap<Vec<Arc<SamlProvider>>>>,
    pub(super) limits: Arc<ArcSwap<RateLimits>>,
    /// The console's view of the configuration in force and of the last reload.
    pub(super) desk: Arc<crate::console::Desk>,
}

/// The settings of `config` that a running process keeps until a handover.
pub(super) fn fixed_settings(config: &Config) -> Vec<(&'static str, String)> {
    let server = &config.server;
    vec![
        (
            "server.https.listen",
            format!("{:?}", server.https.as_ref().map(|h| &h.listen)),
        ),
        (
            "server.http",
            format!(
                "{:?}",
                server.http.as_ref().map(|h| (&h.listen, h.proxy_protocol))
            ),
        ),
        ("admin.listen", config.admin.listen.to_string()),
        ("server.threads", server.threads.to_string()),
        ("server.work_stealing", server.work_stealing.to_string()),
        ("server.log", format!("{:?}", server.log)),
        (
            "server.limits",
            format!(
                "{:?}",
                (
                    server.limits.header_timeout,
                    server.limits.max_connections_per_ip
                )
            ),
        ),
        ("store", format!("{:?}", config.store)),
        ("audit", format!("{:?}", config.audit.path)),
    ]
}

/// The SHA-256 of a configuration file's bytes, as `portcullis_config_info` labels it.
pub(super) fn sha256_hex(bytes: &[u8]) -> String {
    crate::audit::hex(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

impl Reloader {
    async fn apply(&self, by: &str) -> Result<Reloaded, Vec<String>> {
        let mut fixed = self.fixed.lock().await;
        let report_lines = |report: crate::config::ConfigReport| -> Vec<String> {
            report.to_string().lines().map(str::to_string).collect()
        };
        let bytes = std::fs::read(&self.path).map_err(|e| {
            vec![format!(
                "{}: cannot read the file: {e}",
                self.path.display()
            )]
        })?;
        let config = Config::load(&self.path).map_err(report_lines)?;
        let rebuilt = Rebuilt::build(&config, &self.kept).map_err(report_lines)?;
        let wanted = fixed_settings(&config);
        let needs_handover: Vec<String> = wanted
            .iter()
            .zip(fixed.iter())
            .filter(|(new, old)| new.1 != old.1)
            .map(|(new, _)| new.0.to_string())
            .collect();
        // New providers sign nobody in until they know their IdP: learn it before the swap.
        for provider in &rebuilt.providers.oidc {
            let discovered =
                tokio::time::timeout(std::time::Duration::from_secs(5), provider.discover()).await;
            if !matches!(discovered, Ok(Ok(_))) {
                tracing::warn!(idp = %provider.id, "OIDC discovery failed at reload; sign-in with this provider is unavailable until it succeeds");
            }
        }
        for provider in &rebuilt.providers.saml {
            if provider.metadata_refresh().is_some() {
                if let Err(e) = provider.refresh_metadata().await {
                    tracing::warn!(idp = %provider.id, error = %e, "SAML metadata fetch failed at reload");
                }
            }
        }
        let (oidc, saml) = (
            rebuilt.providers.oidc.clone(),
            rebuilt.providers.saml.clone(),
        );
        let parts = GatewayParts {
            providers: rebuilt.providers,
            revoked: self.kept.revoked.clone(),
            throttle: self.kept.throttle.clone(),
            signer: rebuilt.assertion_signer,
            rate_limits: rebuilt.rate_limits.clone(),
            shared: self.kept.shared.clone(),
            sessions: self.kept.sessions.clone(),
            switches: self.kept.switches.clone(),
            streams: self.streams.clone(),
            desk: self.desk.clone(),
        };
        let gateway = Gateway::new(&config, self.auditor.clone(), self.metrics.clone(), parts)
            .map_err(|e| vec![format!("{}: {e}", self.path.display())])?;
        let control = Control::new(
            &config,
            self.kept.revoked.clone(),
            self.kept.sessions.clone(),
            self.kept.switches.clone(),
        );
        // The swap: from here on, new requests and handshakes use the new configuration.
        self.gateway.store(Arc::new(gateway));
        self.control.store(Arc::new(control));
        if let (Some(live), Some(resolver)) = (&self.certificates, rebuilt.certificates) {
            live.replace(resolver);
        }
        self.oidc.store(Arc::new(oidc));
        self.saml.store(Arc::new(saml));
        self.limits.store(rebuilt.rate_limits);
        // Open streams the new configuration would refuse end now.
        self.streams.recheck(&config.apps, &self.auditor).await;
        for (i, setting) in wanted.into_iter().enumerate() {
            if !needs_handover.iter().any(|key| key == setting.0) {
                if let Some(slot) = fixed.get_mut(i) {
                    *slot = setting;
                }
            }
        }
        let sha256 = sha256_hex(&bytes);
        self.metrics.config_info.reset();
        self.metrics
            .config_info
            .with_label_values(&[sha256.as_str()])
            .set(1);
        let mut loaded = AuditEvent::new(EventKind::ConfigLoaded);
        loaded.operator = Some(by.to_string());
        loaded.detail = Some(format!(
            "reloaded {} sha256={sha256}{}",
            self.path.display(),
            if needs_handover.is_empty() {
                String::new()
            } else {
                format!("; at the next handover: {}", needs_handover.join(", "))
            }
        ));
        self.auditor.record(loaded).await;
        Ok(Reloaded {
            sha256,
            needs_handover,
        })
    }
}

impl Reload for Reloader {
    fn reload<'a>(
        &'a self,
        by: &'a str,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Reloaded, Vec<String>>> + Send + 'a>,
    > {
        Box::pin(async move {
            let outcome = self.apply(by).await;
            let result = if outcome.is_ok() {
                "applied"
            } else {
                "refused"
            };
            self.metrics
                .config_reloads
                .with_label_values(&[result])
                .inc();
            match &outcome {
                Ok(done) => {
                    tracing::info!(by, sha256 = %done.sha256, needs_handover = ?done.needs_handover, "configuration reloaded")
                }
                Err(problems) => {
                    tracing::warn!(by, problems = %problems.join("; "), "configuration reload refused; the running configuration is kept")
                }
            }
            self.desk.reloaded(crate::console::ReloadResult {
                at: crate::proxy::unix_now(),
                by: by.to_string(),
                outcome: outcome.clone(),
            });
            outcome
        })
    }
}
