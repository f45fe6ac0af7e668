//! Runtime objects built from the config model, in one place.
//!
//! `config` is plain data; everything that holds keys, parsed certificates, network clients
//! or counters is built here from it: `check` calls [`Runtime::build`] to find what `run`
//! would refuse, `run` calls it to start, and an in-place reload will call it to swap. A
//! failure names the key at fault, with its line, like any config problem.

use std::sync::Arc;
use std::time::Duration;

use crate::assertion::{AssertionError, Signer};
use crate::audit::CheckpointSigner;
use crate::certs::SniResolver;
use crate::config::{Config, ConfigIssue, ConfigReport, IdentityProviderKind, Store};
use crate::idp::local::LocalProvider;
use crate::idp::oidc::OidcProvider;
use crate::idp::saml::SamlProvider;
use crate::machine::MachineAuth;
use crate::metrics::Metrics;
use crate::netguard::RateLimits;
use crate::store::redis::{RevocationSync, SharedStore};
use crate::store::{KillSwitches, LiveSessions, LoginThrottle, RevokedSessions};

/// What the request path needs besides the config.
pub struct Runtime {
    /// Listener certificates chosen by SNI; `None` without an HTTPS listener.
    pub certificates: Option<Arc<SniResolver>>,
    /// Signs audit checkpoints: the configured key, or one made for this process.
    pub checkpoint_signer: CheckpointSigner,
    /// Signs the user-context assertion.
    pub assertion_signer: Arc<Signer>,
    /// Every rate limiter.
    pub rate_limits: Arc<RateLimits>,
    /// The sign-in methods.
    pub providers: Providers,
    /// Sessions ended before their expiry, as this replica knows them.
    pub revoked: Arc<RevokedSessions>,
    /// Failed local sign-ins, with exponential back-off.
    pub throttle: Arc<LoginThrottle>,
    /// Shares revocations with the other replicas (`store.kind: redis`).
    pub revocation_sync: Option<RevocationSync>,
    /// What the request path asks Redis directly (`store.kind: redis`).
    pub shared: Option<Arc<SharedStore>>,
    /// Live sessions by user and entity (in Redis when it is configured).
    pub sessions: Arc<LiveSessions>,
    /// Users, entities and apps an operator turned off (shared when Redis is configured).
    pub switches: Arc<KillSwitches>,
}

/// The identity providers, by kind, in config order.
pub struct Providers {
    /// `kind: oidc`.
    pub oidc: Vec<Arc<OidcProvider>>,
    /// `kind: saml`.
    pub saml: Vec<Arc<SamlProvider>>,
    /// `kind: local`, with their ids and display names.
    pub local: Vec<(String, String, Arc<LocalProvider>)>,
    /// Bearer-token issuers, introspection endpoints and service accounts.
    pub machines: Arc<MachineAuth>,
}

/// What outlives one configuration: the state requests share (sessions ended, lock-outs,
/// kill switches, the live-session index, the shared store's client). A reload keeps it.
#[derive(Clone)]
pub struct Kept {
    /// Sessions ended before their expiry.
    pub revoked: Arc<RevokedSessions>,
    /// Failed local sign-ins.
    pub throttle: Arc<LoginThrottle>,
    /// Users, entities and apps turned off.
    pub switches: Arc<KillSwitches>,
    /// Live sessions by user and entity.
    pub sessions: Arc<LiveSessions>,
    /// The shared store (`store.kind: redis`).
    pub shared: Option<Arc<SharedStore>>,
}

/// What a reload builds anew from the new configuration.
pub struct Rebuilt {
    /// Listener certificates (`None` without an HTTPS listener).
    pub certificates: Option<Arc<SniResolver>>,
    /// Signs the user-context assertion.
    pub assertion_signer: Arc<Signer>,
    /// Every rate limiter (buckets start full again).
    pub rate_limits: Arc<RateLimits>,
    /// The sign-in methods.
    pub providers: Providers,
}

impl Rebuilt {
    /// Builds what a configuration change may change, with the state `kept` from before, or
    /// reports every problem (`store` changes are not among them: see [`Kept`]).
    pub fn build(config: &Config, kept: &Kept) -> Result<Rebuilt, ConfigReport> {
        let mut issues = Vec::new();
        let certificates = certificates(config, &mut issues);
        let assertion_signer = assertion_signer(config, &mut issues);
        let providers = providers(config, &mut issues);
        let rate_limits = rate_limits(config, kept.shared.as_ref());
        match assertion_signer {
            Some(signer) if issues.is_empty() => Ok(Rebuilt {
                certificates,
                assertion_signer: Arc::new(signer),
                rate_limits: Arc::new(rate_limits),
                providers,
            }),
            _ => Err(config.report(issues)),
        }
    }
}

/// Shared buckets when a store is shared (keys hashed under the first session key), else
/// this process's.
fn rate_limits(config: &Config, shared: Option<&Arc<SharedStore>>) -> RateLimits {
    match (shared, config.session.encryption_keys.first()) {
        (Some(store), Some(key)) => RateLimits::shared(config, store.clone(), &key.0),
        _ => RateLimits::new(config),
    }
}

impl Runtime {
    /// What a reload keeps.
    pub fn kept(&self) -> Kept {
        Kept {
            revoked: self.revoked.clone(),
            throttle: self.throttle.clone(),
            switches: self.switches.clone(),
            sessions: self.sessions.clone(),
            shared: self.shared.clone(),
        }
    }

    /// Builds every runtime object of `config`, or reports every one that cannot be built.
    /// Shared-store operations are measured in `metrics`.
    pub fn build(config: &Config, metrics: &Arc<Metrics>) -> Result<Runtime, ConfigReport> {
        let mut issues = Vec::new();
        let certificates = certificates(config, &mut issues);
        let checkpoint_signer = checkpoint_signer(config, &mut issues);
        let assertion_signer = assertion_signer(config, &mut issues);
        let providers = providers(config, &mut issues);
        // A sink that cannot be built (an unreadable CA) is a configuration problem.
        for (i, sink) in config.audit.sinks.iter().enumerate() {
            if let Err(e) = crate::audit::sink::check(sink) {
                issues.push(config.issue(
                    &format!("audit.sinks[{i}]"),
                    e.to_string(),
                    "check `ca` (a readable PEM file of CA certificates) and the address or URL",
                ));
            }
        }
        let revoked = Arc::new(RevokedSessions::default());
        // Five free attempts, then 1 s doubling up to 15 minutes.
        let throttle = Arc::new(LoginThrottle::new(5, Duration::from_secs(900)));
        let switches = Arc::new(KillSwitches::default());
        let revocation_sync = match &config.store {
            Store::Memory => None,
            Store::Redis(settings) => {
                match RevocationSync::new(
                    settings,
                    revoked.clone(),
                    throttle.clone(),
                    switches.clone(),
                ) {
                    Ok(sync) => Some(sync),
                    Err(e) => {
                        issues.push(config.issue(e.key(), e.to_string(), e.hint()));
                        None
                    }
                }
            }
        };
        let shared = revocation_sync
            .as_ref()
            .map(|sync| Arc::new(sync.shared(metrics.clone())));
        let rate_limits = rate_limits(config, shared.as_ref());
        let sessions = Arc::new(match &shared {
            Some(store) => LiveSessions::shared(store.clone()),
            None => LiveSessions::default(),
        });
        match (checkpoint_signer, assertion_signer) {
            (Some(checkpoint_signer), Some(assertion_signer)) if issues.is_empty() => Ok(Runtime {
                certificates,
                checkpoint_signer,
                assertion_signer: Arc::new(assertion_signer),
                rate_limits: Arc::new(rate_limits),
                providers,
                revoked,
                throttle,
                revocation_sync,
                shared,
                sessions,
                switches,
            }),
            _ => Err(config.report(issues)),
        }
    }
}

/// `None` without an HTTPS listener, or when the certificates cannot be served (recorded).
fn certificates(config: &Config, issues: &mut Vec<ConfigIssue>) -> Option<Arc<SniResolver>> {
    let https = config.server.https.as_ref()?;
    match SniResolver::load(&https.certificates) {
        Ok(resolver) => Some(Arc::new(resolver)),
        Err(e) => {
            issues.push(config.issue(
                "server.https.certificates",
                e.to_string(),
                "use a PEM certificate chain (leaf first) and its matching PEM private key",
            ));
            None
        }
    }
}

fn checkpoint_signer(config: &Config, issues: &mut Vec<ConfigIssue>) -> Option<CheckpointSigner> {
    let signer = match &config.audit.signing_key {
        Some(secret) => CheckpointSigner::from_base64(secret.expose()),
        None => CheckpointSigner::generate().map(|(signer, _)| signer),
    };
    match signer {
        Ok(signer) => Some(signer),
        Err(_) => {
            issues.push(config.issue(
                "audit.signing_key",
                "not a base64 Ed25519 PKCS#8 key",
                "generate one with `portcullis keys generate`",
            ));
            None
        }
    }
}

fn assertion_signer(config: &Config, issues: &mut Vec<ConfigIssue>) -> Option<Signer> {
    match Signer::new(&config.assertion) {
        Ok(signer) => Some(signer),
        Err(AssertionError::SigningKey { index, problem }) => {
            issues.push(config.issue(
                &format!("assertion.signing_keys[{index}]"),
                problem.to_string(),
                "make one with `portcullis keys assertion` (PKCS#8 PEM)",
            ));
            None
        }
        Err(other) => {
            issues.push(config.issue("assertion.signing_keys", other.to_string(), ""));
            None
        }
    }
}

fn providers(config: &Config, issues: &mut Vec<ConfigIssue>) -> Providers {
    let mapping = Arc::new(config.identity.clone());
    let mut providers = Providers {
        oidc: Vec::new(),
        saml: Vec::new(),
        local: Vec::new(),
        machines: Arc::new(MachineAuth::empty()),
    };
    for (index, provider) in config.identity_providers.iter().enumerate() {
        let built = match &provider.kind {
            IdentityProviderKind::Oidc { .. } => OidcProvider::new(provider, mapping.clone())
                .map(|p| providers.oidc.extend(p.map(Arc::new))),
            IdentityProviderKind::Saml(_) => SamlProvider::new(provider, mapping.clone())
                .map(|p| providers.saml.extend(p.map(Arc::new))),
            IdentityProviderKind::Local { .. } => {
                if let Some(local) = LocalProvider::new(provider, mapping.clone()) {
                    let (id, name) = (provider.id.clone(), provider.display_name.clone());
                    providers.local.push((id, name, Arc::new(local)));
                }
                Ok(())
            }
            // Built below, once the OIDC providers whose keys they share exist.
            IdentityProviderKind::Jwt(_) | IdentityProviderKind::Introspection(_) => Ok(()),
        };
        if let Err(e) = built {
            issues.push(config.issue(
                &format!("identity_providers[{index}].{}", e.key()),
                e.to_string(),
                e.hint(),
            ));
        }
    }
    match MachineAuth::new(config, &providers.oidc, &mapping) {
        Ok(machines) => providers.machines = Arc::new(machines),
        Err(e) => issues.push(config.issue("identity_providers", e.to_string(), e.hint())),
    }
    providers
}

#[cfg(test)]
mod tests;
