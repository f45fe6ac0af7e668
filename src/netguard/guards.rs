//! The rate limiters of a running configuration: one per configured limit (server
//! pre-authentication, each app's, each path rule's), built once, swept periodically.
//!
//! With a shared store (Redis) every replica takes from one bucket per key, one round trip
//! per limit; while Redis is unreachable (or slower than `store.timeout`) each replica falls
//! back to its own buckets, so a limit holds per replica rather than not at all.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use super::{KeyHasher, LimitKey, LimitSpec, Limiter};
use crate::config::{App, Config};
use crate::identity::Identity;
use crate::store::redis::SharedStore;

/// A configured limit: its name in the shared store and this replica's buckets.
struct Limit {
    spec: LimitSpec,
    /// `pre-auth`, `<app>.<i>`, `<app>.rule<r>.<i>`: stable across replicas of one config.
    bucket: String,
    local: Limiter,
}

impl Limit {
    fn new(spec: LimitSpec, bucket: String) -> Limit {
        Limit {
            spec,
            bucket,
            local: Limiter::new(spec),
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
    shared: Option<Arc<SharedStore>>,
}

/// Several shared buckets in one pipelined round trip (fred pipelines concurrent commands);
/// one that Redis did not answer falls back to its local bucket.
async fn take_together(
    store: &SharedStore,
    keyed: impl Iterator<Item = (&Limit, u64)>,
) -> Result<(), RateLimitError> {
    let keyed: Vec<(&Limit, u64)> = keyed.collect();
    let answers = futures_util::future::join_all(
        keyed
            .iter()
            .map(|(limit, key)| store.take(&limit.bucket, &limit.spec, *key)),
    )
    .await;
    for ((limit, key), answer) in keyed.into_iter().zip(answers) {
        answer
            .unwrap_or_else(|_| limit.local.check(key))
            .map_err(|retry_after| RateLimitError {
                key: limit.spec.key,
                retry_after,
            })?;
    }
    Ok(())
}

impl RateLimits {
    /// Builds the limiters of `config`, in this process only.
    pub fn new(config: &Config) -> RateLimits {
        RateLimits::build(config, KeyHasher::default(), None)
    }

    /// Builds the limiters of `config` with buckets shared through `store`; keys are hashed
    /// under `secret`, which every replica of the deployment holds.
    pub fn shared(config: &Config, store: Arc<SharedStore>, secret: &[u8]) -> RateLimits {
        RateLimits::build(config, KeyHasher::derived_from(secret), Some(store))
    }

    fn build(config: &Config, hasher: KeyHasher, shared: Option<Arc<SharedStore>>) -> RateLimits {
        let limits = |specs: &[LimitSpec], name: &dyn Fn(usize) -> String| -> Vec<Limit> {
            specs
                .iter()
                .enumerate()
                .map(|(i, spec)| Limit::new(*spec, name(i)))
                .collect()
        };
        RateLimits {
            pre_auth: config
                .server
                .pre_auth_rate_limit
                .map(|spec| Limit::new(spec, "pre-auth".into())),
            apps: config
                .apps
                .iter()
                .map(|app| AppLimits {
                    app: limits(&app.rate_limits, &|i| format!("{}.{i}", app.id)),
                    rules: app
                        .rules
                        .iter()
                        .enumerate()
                        .map(|(r, rule)| {
                            limits(&rule.rate_limits, &|i| format!("{}.rule{r}.{i}", app.id))
                        })
                        .collect(),
                })
                .collect(),
            hasher,
            shared,
        }
    }

    /// Takes one request from `limit`'s bucket for `key`: the shared one while the store
    /// answers, this replica's otherwise.
    async fn take(&self, limit: &Limit, key: u64) -> Result<(), RateLimitError> {
        let answer = match self.shared.as_deref().filter(|store| store.is_up()) {
            Some(store) => match store.take(&limit.bucket, &limit.spec, key).await {
                Ok(answer) => answer,
                Err(_) => limit.local.check(key),
            },
            None => limit.local.check(key),
        };
        answer.map_err(|retry_after| RateLimitError {
            key: limit.spec.key,
            retry_after,
        })
    }

    /// The per-address limit on requests without a session to sign-in endpoints, and on
    /// refused cookies.
    pub async fn check_pre_auth(&self, ip: Option<IpAddr>) -> Result<(), RateLimitError> {
        let Some(limit) = &self.pre_auth else {
            return Ok(());
        };
        let Some(key) = self.hasher.key(LimitKey::Ip, usize::MAX, None, ip, "") else {
            return Ok(());
        };
        self.take(limit, key).await
    }

    /// Every limit of `app` and of the matched rule; the first one over its limit refuses.
    /// (Buckets of limits checked before a refusal were charged, and with a shared store,
    /// whose buckets are all asked at once, every one was: a refused request still counts
    /// against the client, as it should.)
    pub async fn check(
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
        let keyed = limits.app.iter().chain(rule_limits).filter_map(|limit| {
            let key = self.hasher.key(limit.spec.key, 0, identity, ip, path)?;
            Some((limit, key))
        });
        if let Some(store) = self.shared.as_deref().filter(|store| store.is_up()) {
            if limits.app.len() + rule_limits.len() > 1 {
                return take_together(store, keyed).await;
            }
        }
        for (limit, key) in keyed {
            self.take(limit, key).await?;
        }
        Ok(())
    }

    /// Drops full buckets everywhere (periodically, off the request path).
    pub fn sweep(&self) {
        for limit in self.all() {
            limit.local.sweep();
        }
    }

    /// Buckets held across every limiter.
    pub fn buckets(&self) -> usize {
        self.all().map(|l| l.local.keys_held()).sum()
    }

    fn all(&self) -> impl Iterator<Item = &Limit> {
        self.pre_auth.iter().chain(
            self.apps
                .iter()
                .flat_map(|a| a.app.iter().chain(a.rules.iter().flatten())),
        )
    }
}
