//! The rate limiters of a running configuration: one per configured limit (server
//! pre-authentication, each app's, each path rule's), built once, swept periodically.

use std::net::IpAddr;
use std::time::Duration;

use super::{KeyHasher, LimitKey, LimitSpec, Limiter};
use crate::config::{App, Config};
use crate::identity::Identity;
use crate::store::LimitStore;

/// A configured limit and the store of its buckets.
struct Limit {
    spec: LimitSpec,
    store: Box<dyn LimitStore>,
}

impl Limit {
    /// In memory; the one place a shared store would be chosen instead.
    fn new(spec: LimitSpec) -> Limit {
        Limit {
            spec,
            store: Box::new(Limiter::new(spec)),
        }
    }
}

/// Limits of one app and of its rules (indexed like `app.rules`).
struct AppLimits {
    app: Vec<Limit>,
    rules: Vec<Vec<Limit>>,
}

/// A request over a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("over the per-{} rate limit; retry after {retry_after:?}", key.as_str())]
pub struct RateLimitError {
    /// What the limit counted by (metric label).
    pub key: LimitKey,
    /// When to try again.
    pub retry_after: Duration,
}

/// Every rate limiter.
pub struct RateLimits {
    pre_auth: Option<Limit>,
    apps: Vec<AppLimits>,
    hasher: KeyHasher,
}

impl RateLimits {
    /// Builds the limiters of `config`.
    pub fn new(config: &Config) -> RateLimits {
        RateLimits {
            pre_auth: config.server.pre_auth_rate_limit.map(Limit::new),
            apps: config
                .apps
                .iter()
                .map(|app| AppLimits {
                    app: app.rate_limits.iter().copied().map(Limit::new).collect(),
                    rules: app
                        .rules
                        .iter()
                        .map(|r| r.rate_limits.iter().copied().map(Limit::new).collect())
                        .collect(),
                })
                .collect(),
            hasher: KeyHasher::default(),
        }
    }

    /// The per-address limit on requests without a session to sign-in endpoints, and on
    /// refused cookies.
    pub fn check_pre_auth(&self, ip: Option<IpAddr>) -> Result<(), RateLimitError> {
        let Some(limiter) = &self.pre_auth else {
            return Ok(());
        };
        let Some(key) = self.hasher.key(LimitKey::Ip, usize::MAX, None, ip, "") else {
            return Ok(());
        };
        limiter
            .store
            .check(key)
            .map_err(|retry_after| RateLimitError {
                key: LimitKey::Ip,
                retry_after,
            })
    }

    /// Every limit of `app` and of the matched rule; the first one over its limit refuses.
    /// (Buckets of limits checked before a refusal were charged: a refused request still
    /// counts against the client, as it should.)
    pub fn check(
        &self,
        app: &App,
        rule: Option<usize>,
        identity: Option<&Identity>,
        ip: Option<IpAddr>,
        path: &str,
    ) -> Result<(), RateLimitError> {
        let Some(limits) = self.apps.get(app.index) else {
            return Ok(());
        };
        let rule_limits = rule
            .and_then(|i| limits.rules.get(i))
            .map_or(&[][..], Vec::as_slice);
        for limiter in limits.app.iter().chain(rule_limits) {
            let kind = limiter.spec.key;
            let Some(key) = self.hasher.key(kind, 0, identity, ip, path) else {
                continue;
            };
            limiter
                .store
                .check(key)
                .map_err(|retry_after| RateLimitError {
                    key: kind,
                    retry_after,
                })?;
        }
        Ok(())
    }

    /// Drops full buckets everywhere (periodically, off the request path).
    pub fn sweep(&self) {
        for limit in self.all() {
            limit.store.sweep();
        }
    }

    /// Buckets held across every limiter.
    pub fn buckets(&self) -> usize {
        self.all().map(|l| l.store.keys_held()).sum()
    }

    fn all(&self) -> impl Iterator<Item = &Limit> {
        self.pre_auth.iter().chain(
            self.apps
                .iter()
                .flat_map(|a| a.app.iter().chain(a.rules.iter().flatten())),
        )
    }
}
