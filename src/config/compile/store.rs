//! Compiling `store:`: in memory (the default) or Redis shared by the replicas: one server,
//! a Redis Cluster or a Sentinel-managed master, over TLS with `rediss://`.

use std::time::Duration;

use super::Compiler;
use crate::config::raw::{RawSentinel, RawStore, RawStoreTls};
use crate::config::{RedisServers, RedisStore, Secret, Store};

/// Longest wait for one Redis operation when `store.timeout` is not set.
const DEFAULT_TIMEOUT: Duration = Duration::from_millis(50);

/// What a node URL addresses, which decides whether it may name a database.
#[derive(Clone, Copy, PartialEq)]
enum Node {
    /// `store.url`: any database.
    Single,
    /// A Cluster seed: a Cluster has only database 0.
    ClusterSeed,
    /// A Sentinel: it has no database.
    Sentinel,
}

/// A node URL as compiled: the secret, whether it is `rediss://`, and its credentials
/// (compared between the seeds of one Cluster).
struct NodeUrl {
    url: Secret,
    tls: bool,
    credentials: (String, Option<String>),
}

impl Compiler<'_> {
    pub(super) fn store(&mut self, raw: RawStore) -> Store {
        match raw.kind.as_deref() {
            None | Some("memory") => {
                for (key, given) in [
                    ("url", raw.url.is_some()),
                    ("cluster", raw.cluster.is_some()),
                    ("sentinel", raw.sentinel.is_some()),
                    ("tls", raw.tls.is_some()),
                ] {
                    if given {
                        self.issues.add(
                            &format!("store.{key}"),
                            "is only read with kind: redis",
                            format!("add `kind: redis`, or remove {key}"),
                        );
                    }
                }
                Store::Memory
            }
            Some("redis") => self.redis_store(raw),
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

    fn redis_store(&mut self, raw: RawStore) -> Store {
        let servers = self.redis_servers(raw.url.as_deref(), raw.cluster, raw.sentinel);
        let timeout = self.duration("store.timeout", raw.timeout.as_ref(), DEFAULT_TIMEOUT);
        if timeout.is_zero() || timeout > Duration::from_secs(5) {
            self.issues.add(
                "store.timeout",
                "must be between 1ms and 5s",
                "a local Redis answers in well under a millisecond; 50ms is the default",
            );
        }
        let key_prefix = raw.key_prefix.unwrap_or_else(|| "portcullis:".into());
        let Some((servers, tls)) = servers else {
            return Store::Memory;
        };
        let ca_file = self.store_tls(raw.tls, tls);
        Store::Redis(RedisStore {
            servers,
            tls,
            ca_file,
            key_prefix,
            timeout,
        })
    }

    /// Exactly one of `url`, `cluster` and `sentinel`, every node with the same scheme.
    fn redis_servers(
        &mut self,
        url: Option<&str>,
        cluster: Option<Vec<String>>,
        sentinel: Option<RawSentinel>,
    ) -> Option<(RedisServers, bool)> {
        let given: Vec<&str> = [
            ("url", url.is_some()),
            ("cluster", cluster.is_some()),
            ("sentinel", sentinel.is_some()),
        ]
        .into_iter()
        .filter_map(|(key, given)| given.then_some(key))
        .collect();
        if given.is_empty() {
            self.issues.add(
                "store.url",
                "is required with kind: redis (or store.cluster, or store.sentinel)",
                "e.g. redis://127.0.0.1:6379/0, or env:PORTCULLIS_REDIS_URL for one with a password",
            );
            return None;
        }
        if let [first, others @ ..] = given.as_slice() {
            for other in others {
                self.issues.add(
                    &format!("store.{other}"),
                    format!("cannot be given with store.{first}"),
                    "give exactly one of url (one server), cluster (Redis Cluster) and sentinel",
                );
            }
            if !others.is_empty() {
                return None;
            }
        }
        if let Some(spec) = url {
            let node = self.redis_url("store.url", spec, Node::Single)?;
            return Some((RedisServers::Single(node.url), node.tls));
        }
        if let Some(seeds) = cluster {
            return self.cluster(&seeds);
        }
        self.sentinel(sentinel.unwrap_or_default())
    }

    fn cluster(&mut self, seeds: &[String]) -> Option<(RedisServers, bool)> {
        if seeds.is_empty() {
            self.issues.add(
                "store.cluster",
                "lists no node",
                "list one or more nodes of the Cluster: [redis://10.0.0.1:6379, redis://10.0.0.2:6379]",
            );
            return None;
        }
        let nodes = self.nodes("store.cluster", seeds, Node::ClusterSeed)?;
        let tls = nodes.first().is_some_and(|n| n.tls);
        for (i, node) in nodes.iter().enumerate().skip(1) {
            if node.credentials != nodes[0].credentials {
                self.issues.add(
                    &format!("store.cluster[{i}]"),
                    "has another user or password than store.cluster[0]",
                    "the nodes of one Cluster share one user and password: give each seed the same",
                );
                return None;
            }
        }
        let urls = nodes.into_iter().map(|n| n.url).collect();
        Some((RedisServers::Cluster(urls), tls))
    }

    fn sentinel(&mut self, raw: RawSentinel) -> Option<(RedisServers, bool)> {
        let master = raw.master.filter(|m| !m.trim().is_empty());
        if master.is_none() {
            self.issues.add(
                "store.sentinel.master",
                "is required",
                "the name the Sentinels monitor (`sentinel monitor <name> …`), e.g. master: portcullis",
            );
        }
        let specs = raw.nodes.unwrap_or_default();
        if specs.is_empty() {
            self.issues.add(
                "store.sentinel.nodes",
                "lists no Sentinel",
                "e.g. nodes: [redis://10.0.0.5:26379, redis://10.0.0.6:26379]",
            );
        }
        let password = raw
            .password
            .as_deref()
            .map(|spec| self.secret("store.sentinel.password", spec));
        let nodes = self.nodes("store.sentinel.nodes", &specs, Node::Sentinel)?;
        let password = match password {
            Some(secret) => Some(secret?),
            None => None,
        };
        let tls = nodes.first()?.tls;
        let nodes = nodes.into_iter().map(|n| n.url).collect();
        Some((
            RedisServers::Sentinel {
                master: master?,
                nodes,
                password,
            },
            tls,
        ))
    }

    /// Every URL of a list, or `None` when one is wrong or the schemes differ.
    fn nodes(&mut self, key: &str, specs: &[String], kind: Node) -> Option<Vec<NodeUrl>> {
        let mut nodes = Vec::new();
        let mut all_valid = true;
        for (i, spec) in specs.iter().enumerate() {
            match self.redis_url(&format!("{key}[{i}]"), spec, kind) {
                Some(node) => nodes.push((i, node)),
                None => all_valid = false,
            }
        }
        let first_tls = nodes.first().map(|(_, n)| n.tls);
        for (i, node) in &nodes {
            if Some(node.tls) != first_tls {
                self.issues.add(
                    &format!("{key}[{i}]"),
                    format!(
                        "uses {} while the first node uses {}",
                        if node.tls { "rediss://" } else { "redis://" },
                        if node.tls { "redis://" } else { "rediss://" },
                    ),
                    "every node of one deployment is reached the same way: all redis:// or all rediss:// (TLS)",
                );
                all_valid = false;
            }
        }
        all_valid.then(|| nodes.into_iter().map(|(_, n)| n).collect())
    }

    /// `redis://…` written out, or from `env:`/`file:` (a URL with a password must be).
    fn redis_url(&mut self, key: &str, spec: &str, kind: Node) -> Option<NodeUrl> {
        let from_secret = spec.starts_with("env:") || spec.starts_with("file:");
        let url = if from_secret {
            self.secret(key, spec)?
        } else {
            Secret::inline(spec)
        };
        let parsed = url::Url::parse(url.expose().trim()).ok();
        let Some(parsed) = parsed.filter(|u| {
            matches!(u.scheme(), "redis" | "rediss") && u.host_str().is_some_and(|h| !h.is_empty())
        }) else {
            self.issues.add(
                key,
                "is not a redis:// or rediss:// URL with a host",
                "e.g. redis://127.0.0.1:6379/0 (rediss:// for TLS)",
            );
            return None;
        };
        if parsed.password().is_some() && !from_secret {
            self.issues.add(
                key,
                "holds a password written in the file",
                format!("put the URL in an environment variable or a file: {key}: env:PORTCULLIS_REDIS_URL"),
            );
            return None;
        }
        let database = parsed.path().trim_start_matches('/');
        let refused = match kind {
            Node::Single => None,
            Node::ClusterSeed => (!database.is_empty() && database != "0")
                .then_some("names a database: a Redis Cluster has only database 0"),
            Node::Sentinel => {
                (!database.is_empty()).then_some("names a database: a Sentinel has none")
            }
        };
        if let Some(message) = refused {
            self.issues
                .add(key, message, "write the node as redis://host:port");
            return None;
        }
        Some(NodeUrl {
            tls: parsed.scheme() == "rediss",
            credentials: (
                parsed.username().to_string(),
                parsed.password().map(str::to_string),
            ),
            url,
        })
    }

    /// `store.tls.ca_file`, only with `rediss://` (with `redis://` it would do nothing).
    fn store_tls(&mut self, raw: Option<RawStoreTls>, tls: bool) -> Option<std::path::PathBuf> {
        let raw = raw?;
        if !tls {
            self.issues.add(
                "store.tls",
                "TLS settings for plain redis:// servers would do nothing",
                "use rediss:// URLs, or remove store.tls",
            );
            return None;
        }
        let Some(ca_file) = raw.ca_file else {
            self.issues.add(
                "store.tls",
                "sets nothing",
                "add ca_file (a PEM file of the CAs of Redis's certificates), or remove store.tls",
            );
            return None;
        };
        // Read and parsed when the runtime is built (`check` reports it there).
        Some(self.file_path("store.tls.ca_file", &ca_file, false))
    }
}
