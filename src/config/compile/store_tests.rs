//! `store:` with Redis Cluster, Sentinel and TLS: what compiles, and every mistake by key.

use std::path::PathBuf;

use crate::config::{Config, ConfigIssue, RedisServers, RedisStore, Store};

const APP: &str = "  - id: a\n    hosts: [a.test]\n    upstream: http://127.0.0.1:1\n";

fn compiled(store: &str) -> Result<Config, Vec<ConfigIssue>> {
    crate::config::testing::with_sections(store, APP).map_err(|report| report.issues)
}

fn redis(store: &str) -> RedisStore {
    match compiled(store) {
        Ok(Config {
            store: Store::Redis(redis),
            ..
        }) => redis,
        Ok(_) => panic!("{store}: not a redis store"),
        Err(issues) => panic!("{store}: {issues:#?}"),
    }
}

/// A file holding `text`, for `file:` specs (kept for the life of the test process).
fn secret_file(text: &str) -> PathBuf {
    let dir = tempfile::tempdir().expect("dir").keep();
    let path = dir.join("redis.url");
    std::fs::write(&path, text).expect("write");
    path
}

#[test]
fn a_cluster_is_its_seed_nodes() {
    let store = redis(
        "store:\n  kind: redis\n  cluster: [redis://10.0.0.1:6379, \"redis://10.0.0.2:6379/0\"]\n",
    );
    let RedisServers::Cluster(seeds) = &store.servers else {
        panic!("{store:?}");
    };
    let seeds: Vec<&str> = seeds.iter().map(|s| s.expose()).collect();
    assert_eq!(seeds, ["redis://10.0.0.1:6379", "redis://10.0.0.2:6379/0"]);
    assert!(!store.tls);
    assert_eq!(store.servers.key(), "store.cluster");
}

#[test]
fn a_sentinel_deployment_is_a_master_name_and_sentinel_nodes() {
    let password = secret_file("s3cret\n");
    let sentinel = secret_file("rediss://:sentinel-pass@10.0.0.6:26379\n");
    let store = redis(&format!(
        "store:\n  kind: redis\n  sentinel:\n    master: portcullis\n    nodes: [rediss://10.0.0.5:26379, \"file:{}\"]\n    password: \"file:{}\"\n  tls: {{ ca_file: /etc/portcullis/redis-ca.pem }}\n",
        sentinel.display(),
        password.display()
    ));
    let RedisServers::Sentinel {
        master,
        nodes,
        password,
    } = &store.servers
    else {
        panic!("{store:?}");
    };
    assert_eq!(master, "portcullis");
    assert_eq!(nodes.len(), 2);
    assert_eq!(password.as_ref().map(|p| p.expose().trim()), Some("s3cret"));
    assert!(store.tls);
    assert_eq!(
        store.ca_file.as_deref(),
        Some(std::path::Path::new("/etc/portcullis/redis-ca.pem"))
    );
}

#[test]
fn one_server_over_tls_takes_a_ca_file() {
    let store = redis(
        "store:\n  kind: redis\n  url: rediss://127.0.0.1:6380/0\n  tls:\n    ca_file: ca.pem\n",
    );
    assert!(store.tls);
    assert!(matches!(store.servers, RedisServers::Single(_)));
    assert!(store.ca_file.is_some_and(|p| p.ends_with("ca.pem")));
}

#[test]
fn every_store_mistake_names_its_key() {
    let inline_password = "store:\n  kind: redis\n  sentinel:\n    master: m\n    nodes: [redis://10.0.0.5:26379]\n    password: hunter2\n";
    for (store, key, needle) in [
        (
            "store:\n  kind: redis\n  cluster: [redis://a:1]\n  sentinel: { master: m, nodes: [redis://b:2] }\n",
            "store.sentinel",
            "cannot be given with store.cluster",
        ),
        (
            "store:\n  kind: redis\n  cluster: []\n",
            "store.cluster",
            "lists no node",
        ),
        (
            "store:\n  kind: redis\n  cluster: [redis://a:1, rediss://b:2]\n",
            "store.cluster[1]",
            "uses rediss:// while the first node uses redis://",
        ),
        (
            "store:\n  kind: redis\n  cluster: [redis://a:1, \"redis://:pw@b:2\"]\n",
            "store.cluster[1]",
            "password written in the file",
        ),
        (
            "store:\n  kind: redis\n  cluster: [redis://a:1/3]\n",
            "store.cluster[0]",
            "only database 0",
        ),
        (
            "store:\n  kind: redis\n  cluster: [http://a:1]\n",
            "store.cluster[0]",
            "not a redis://",
        ),
        (
            "store:\n  kind: redis\n  sentinel: { nodes: [redis://b:26379] }\n",
            "store.sentinel.master",
            "is required",
        ),
        (
            "store:\n  kind: redis\n  sentinel: { master: m }\n",
            "store.sentinel.nodes",
            "lists no Sentinel",
        ),
        (
            "store:\n  kind: redis\n  sentinel: { master: m, nodes: [redis://b:26379/1] }\n",
            "store.sentinel.nodes[0]",
            "a Sentinel has none",
        ),
        (
            "store:\n  kind: redis\n  sentinel: { master: m, nodes: [rediss://a:1, redis://b:2] }\n",
            "store.sentinel.nodes[1]",
            "uses redis:// while the first node uses rediss://",
        ),
        (inline_password, "store.sentinel.password", ""),
        (
            "store:\n  kind: redis\n  sentinel: { master: m, nodes: [redis://b:2], replicas: 2 }\n",
            "store.sentinel",
            "",
        ),
        (
            "store:\n  kind: redis\n  url: redis://127.0.0.1\n  tls: { ca_file: ca.pem }\n",
            "store.tls",
            "would do nothing",
        ),
        (
            "store:\n  kind: redis\n  url: rediss://127.0.0.1\n  tls: {}\n",
            "store.tls",
            "sets nothing",
        ),
        (
            "store:\n  cluster: [redis://a:1]\n",
            "store.cluster",
            "only read with kind: redis",
        ),
        (
            "store:\n  tls: { ca_file: ca.pem }\n",
            "store.tls",
            "only read with kind: redis",
        ),
    ] {
        let Err(issues) = compiled(store) else {
            panic!("{store}: compiled");
        };
        assert!(
            issues
                .iter()
                .any(|i| i.path.starts_with(key) && i.message.contains(needle)),
            "{store}: {issues:#?}"
        );
    }
}
