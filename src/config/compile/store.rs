//! Compiling `store:`: in memory (the default) or a Redis server shared by the replicas.

use std::time::Duration;

use super::Compiler;
use crate::config::raw::RawStore;
use crate::config::{RedisStore, Secret, Store};

/// Longest wait for one Redis operation when `store.timeout` is not set.
const DEFAULT_TIMEOUT: Duration = Duration::from_millis(50);

impl Compiler<'_> {
    pub(super) fn store(&mut self, raw: RawStore) -> Store {
        for (key, given) in [
            ("cluster", raw.cluster.is_some()),
            ("sentinel", raw.sentinel.is_some()),
        ] {
            if given {
                self.issues.add(
                    &format!("store.{key}"),
                    "Redis Cluster and Sentinel are not supported by this version",
                    "use store.url with one Redis server (redis:// or rediss://)",
                );
            }
        }
        match raw.kind.as_deref() {
            None | Some("memory") => {
                if raw.url.is_some() {
                    self.issues.add(
                        "store.url",
                        "is only read with kind: redis",
                        "add `kind: redis`, or remove url",
                    );
                }
                Store::Memory
            }
            Some("redis") => {
                let url = self.redis_url(raw.url.as_deref());
                let timeout = self.duration("store.timeout", raw.timeout.as_ref(), DEFAULT_TIMEOUT);
                if timeout.is_zero() || timeout > Duration::from_secs(5) {
                    self.issues.add(
                        "store.timeout",
                        "must be between 1ms and 5s",
                        "a local Redis answers in well under a millisecond; 50ms is the default",
                    );
                }
                let key_prefix = raw.key_prefix.unwrap_or_else(|| "portcullis:".into());
                match url {
                    Some(url) => Store::Redis(RedisStore {
                        url,
                        key_prefix,
                        timeout,
                    }),
                    None => Store::Memory,
                }
            }
            Some(other) => {
                self.issues.add(
                    "store.kind",
                    format!("unknown store `{other}`"),
                    "use memory (one instance) or redis (several replicas)",
                );
                Store::Memory
            }
        }
    }

    /// `redis://…` written out, or from `env:`/`file:` (a URL with a password must be).
    fn redis_url(&mut self, spec: Option<&str>) -> Option<Secret> {
        let Some(spec) = spec else {
            self.issues.add(
                "store.url",
                "is required with kind: redis",
                "e.g. redis://127.0.0.1:6379/0, or env:PORTCULLIS_REDIS_URL for one with a password",
            );
            return None;
        };
        let url = if spec.starts_with("env:") || spec.starts_with("file:") {
            self.secret("store.url", spec)?
        } else {
            Secret::inline(spec)
        };
        let parsed = url::Url::parse(url.expose()).ok();
        let Some(parsed) = parsed.filter(|u| matches!(u.scheme(), "redis" | "rediss")) else {
            self.issues.add(
                "store.url",
                "is not a redis:// or rediss:// URL",
                "e.g. redis://127.0.0.1:6379/0 (rediss:// for TLS)",
            );
            return None;
        };
        if parsed.password().is_some() && !(spec.starts_with("env:") || spec.starts_with("file:")) {
            self.issues.add(
                "store.url",
                "holds a password written in the file",
                "put the URL in an environment variable or a file: url: env:PORTCULLIS_REDIS_URL",
            );
            return None;
        }
        Some(url)
    }
}
