//! The Redis clients of a configuration: one for commands, one for pub/sub, for one server,
//! a Redis Cluster or a Sentinel-managed master, over TLS with `rediss://`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use fred::prelude::*;
use fred::types::config::{ClusterDiscoveryPolicy, TlsConnector};

use super::StoreError;
use crate::config::{RedisServers, RedisStore};

/// Where a Sentinel listens when its URL gives no port.
const SENTINEL_PORT: u16 = 26379;

/// A command client and a subscriber client for `settings`, not connected yet. Both
/// reconnect by themselves (unbounded attempts, 100 ms doubling to 2 s); the subscriber
/// subscribes again after a reconnect. Behind Sentinel, a reconnect asks the Sentinels for
/// the master again, which is how a failover is followed.
pub(super) fn clients(
    settings: &RedisStore,
) -> Result<(Client, fred::clients::SubscriberClient), StoreError> {
    let key = settings.servers.key();
    let mut config =
        servers(&settings.servers).map_err(|source| StoreError::Servers { key, source })?;
    config.tls = if settings.tls {
        Some(tls_connector(settings.ca_file.as_deref())?.into())
    } else {
        None
    };
    let builder = builder(config, settings);
    let built = builder
        .build()
        .and_then(|client| Ok((client, builder.build_subscriber_client()?)));
    built.map_err(|source| StoreError::Servers { key, source })
}

/// Behind Sentinel, a subscriber to the first Sentinel, to hear `+switch-master`. fred asks
/// the Sentinels for the master only when its connection drops, and the Sentinel cuts the
/// old master's clients only when it turns it into a replica, seconds after a failover;
/// meanwhile revocations would be written to a server whose data is about to be replaced.
pub(super) fn failover_watch(
    settings: &RedisStore,
) -> Result<Option<fred::clients::SubscriberClient>, StoreError> {
    let RedisServers::Sentinel { nodes, .. } = &settings.servers else {
        return Ok(None);
    };
    let Some(first) = nodes.first() else {
        return Ok(None);
    };
    let refused = |source| StoreError::Servers {
        key: "store.sentinel.nodes",
        source,
    };
    let mut config = plain(first.expose(), Some(SENTINEL_PORT))
        .and_then(|url| Config::from_url_centralized(&url))
        .map_err(refused)?;
    config.tls = if settings.tls {
        Some(tls_connector(settings.ca_file.as_deref())?.into())
    } else {
        None
    };
    let subscriber = builder(config, settings).build_subscriber_client();
    subscriber.map(Some).map_err(refused)
}

/// Reconnects without end (100 ms doubling to 2 s), waits at most `store.timeout` for a
/// command, and at least 500 ms for a connection.
fn builder(config: Config, settings: &RedisStore) -> Builder {
    let mut builder = Builder::from_config(config);
    builder.set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2));
    let timeout = settings.timeout;
    builder.with_performance_config(|c| c.default_command_timeout = timeout);
    builder.with_connection_config(|c| {
        c.connection_timeout = timeout.max(Duration::from_millis(500));
        c.internal_command_timeout = timeout.max(Duration::from_millis(500));
    });
    builder
}

/// The client config of `servers`, without TLS (set from `store.tls` by the caller).
fn servers(servers: &RedisServers) -> Result<Config, Error> {
    match servers {
        RedisServers::Single(url) => Config::from_url_centralized(&plain(url.expose(), None)?),
        RedisServers::Cluster(seeds) => {
            let mut config = Config::default();
            let mut hosts = Vec::new();
            // The seeds share their credentials (checked when the config was compiled).
            for seed in seeds {
                let node = Config::from_url_centralized(&plain(seed.expose(), None)?)?;
                hosts.extend(node.server.hosts());
                (config.username, config.password) = (node.username, node.password);
            }
            config.server = ServerConfig::Clustered {
                hosts,
                policy: ClusterDiscoveryPolicy::default(),
            };
            Ok(config)
        }
        RedisServers::Sentinel {
            master,
            nodes,
            password,
        } => {
            let mut hosts = Vec::new();
            let (mut sentinel_username, mut sentinel_password) = (None, None);
            for node in nodes {
                let node =
                    Config::from_url_centralized(&plain(node.expose(), Some(SENTINEL_PORT))?)?;
                hosts.extend(node.server.hosts());
                (sentinel_username, sentinel_password) = (node.username, node.password);
            }
            Ok(Config {
                server: ServerConfig::Sentinel {
                    hosts,
                    service_name: master.clone(),
                    username: sentinel_username,
                    password: sentinel_password,
                },
                password: password.as_ref().map(|p| p.expose().trim().to_string()),
                ..Config::default()
            })
        }
    }
}

/// `url` as `redis://` (TLS is set once for every node, from `store.tls`), with
/// `default_port` when it names none.
fn plain(url: &str, default_port: Option<u16>) -> Result<String, Error> {
    let mut parsed = url::Url::parse(url.trim())
        .map_err(|e| Error::new(ErrorKind::Config, format!("not a Redis URL: {e}")))?;
    let refused = || Error::new(ErrorKind::Config, "not a Redis URL");
    parsed.set_scheme("redis").map_err(|()| refused())?;
    if let (None, Some(port)) = (parsed.port(), default_port) {
        parsed.set_port(Some(port)).map_err(|()| refused())?;
    }
    Ok(parsed.into())
}

/// Trusts the CAs of `ca_file`, or the system's roots without one.
fn tls_connector(ca_file: Option<&Path>) -> Result<TlsConnector, StoreError> {
    let Some(path) = ca_file else {
        return TlsConnector::default_rustls().map_err(StoreError::SystemRoots);
    };
    let mut roots = rustls::RootCertStore::empty();
    for der in crate::pem::read_certs(path)? {
        roots
            .add(der.into())
            .map_err(|e| StoreError::CaRefused(e.to_string()))?;
    }
    // Ring explicitly: `portcullis check` builds this before any default provider is set.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::CaRefused(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config.into())
}
