//! redis-servers on free loopback ports, started and stopped by the tests: one server (plain
//! or TLS), a Redis Cluster of three masters, a master and replica watched by a Sentinel.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

/// `requirepass` of the password test (redis-cli sends it to every server; one without a
/// password ignores it with a warning).
pub const REDIS_PASSWORD: &str = "s3cret-redis";

/// A redis-server on a free loopback port, without persistence, stopped on drop.
pub struct Redis {
    /// Its port on 127.0.0.1 (its TLS port when it speaks TLS).
    pub port: u16,
    child: Child,
    /// The CA that redis-cli trusts, when the server speaks only TLS.
    tls_ca: Option<PathBuf>,
    _dir: tempfile::TempDir,
}

impl Redis {
    pub fn start() -> Redis {
        Redis::start_on(free_port())
    }

    pub fn start_on(port: u16) -> Redis {
        Redis::start_with(port, &[])
    }

    pub fn start_with(port: u16, extra: &[&str]) -> Redis {
        let mut args = vec!["--port".to_string(), port.to_string()];
        args.extend(extra.iter().map(|a| a.to_string()));
        Redis::spawn(port, &args, None)
    }

    /// A server that speaks only TLS on its port, with `cert` and `key` (clients are not
    /// asked for certificates); redis-cli trusts `ca`.
    pub fn start_tls(cert: &Path, key: &Path, ca: &Path) -> Redis {
        let port = free_port();
        let path = |p: &Path| p.display().to_string();
        let args = [
            "--port".to_string(),
            "0".into(),
            "--tls-port".into(),
            port.to_string(),
            "--tls-cert-file".into(),
            path(cert),
            "--tls-key-file".into(),
            path(key),
            "--tls-ca-cert-file".into(),
            path(ca),
            "--tls-auth-clients".into(),
            "no".into(),
        ];
        Redis::spawn(port, &args, Some(ca.to_path_buf()))
    }

    /// redis-server with `args` (a config file first, if any), listening on `port`.
    fn spawn(port: u16, args: &[String], tls_ca: Option<PathBuf>) -> Redis {
        // Its own directory: a replica writes the master's data to dump.rdb there, which any
        // server started in the same directory would load.
        let dir = tempfile::tempdir().expect("tempdir");
        let child = Command::new("redis-server")
            .args(args)
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (Debian package redis-server)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Redis {
            port,
            child,
            tls_ca,
            _dir: dir,
        }
    }

    pub fn cli(&self, args: &[&str]) -> String {
        let mut command = Command::new("redis-cli");
        command.args(["-p", &self.port.to_string()]);
        if let Some(ca) = &self.tls_ca {
            command.args(["--tls", "--cacert"]).arg(ca);
        }
        let out = command
            .env("REDISCLI_AUTH", REDIS_PASSWORD)
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// How many replicas listen for revocations on this server.
    pub fn subscribers(&self) -> usize {
        let out = self.cli(&["PUBSUB", "NUMSUB", "t:revocations"]);
        out.lines()
            .nth(1)
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Waits until `n` replicas listen for revocations.
    pub fn wait_for_subscribers(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let found = self.subscribers();
            if found == n {
                return;
            }
            assert!(Instant::now() < deadline, "subscribers: {found}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Redis Cluster of three masters (no replicas), its files in a temporary directory.
pub struct RedisCluster {
    pub nodes: Vec<Redis>,
    _dir: tempfile::TempDir,
}

impl RedisCluster {
    pub fn start() -> RedisCluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let nodes: Vec<Redis> = (0..3)
            .map(|_| {
                let (port, bus) = (free_port(), free_port());
                let conf = dir.path().join(format!("nodes-{port}.conf"));
                let args = [
                    "--port".to_string(),
                    port.to_string(),
                    "--cluster-enabled".into(),
                    "yes".into(),
                    "--cluster-config-file".into(),
                    conf.display().to_string(),
                    // The bus would be port + 10000 otherwise: maybe taken, maybe past 65535.
                    "--cluster-port".into(),
                    bus.to_string(),
                ];
                Redis::spawn(port, &args, None)
            })
            .collect();
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli --cluster create");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        for node in &nodes {
            while !node.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok") {
                assert!(Instant::now() < deadline, "the cluster did not form");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        RedisCluster { nodes, _dir: dir }
    }

    /// `store.cluster`'s list: every node.
    pub fn seeds(&self) -> String {
        let urls: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}", n.port))
            .collect();
        format!("[{}]", urls.join(", "))
    }

    /// redis-cli on the first node, following redirections (without a password: after a
    /// redirection, a refused AUTH would end redis-cli before the answer).
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-c", "-p", &self.nodes[0].port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Waits until `n` replicas listen for revocations, on whichever nodes they chose.
    pub fn wait_for_subscribers(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let found: usize = self.nodes.iter().map(Redis::subscribers).sum();
            if found == n {
                return;
            }
            assert!(Instant::now() < deadline, "subscribers: {found}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The master name the Sentinel of [`RedisSentinel`] monitors.
pub const SENTINEL_MASTER: &str = "portcullis";

/// A master, its replica and one Sentinel watching them (quorum 1, short timeouts).
pub struct RedisSentinel {
    pub master: Redis,
    pub replica: Redis,
    pub sentinel: Redis,
    _dir: tempfile::TempDir,
}

impl RedisSentinel {
    pub fn start() -> RedisSentinel {
        let dir = tempfile::tempdir().expect("tempdir");
        // A replica's first sync would wait 5 s for others to join (repl-diskless-sync-delay).
        let no_delay = ["--repl-diskless-sync-delay", "0"];
        let master = Redis::start_with(free_port(), &no_delay);
        let master_port = master.port.to_string();
        let replica = Redis::start_with(
            free_port(),
            &[&no_delay[..], &["--replicaof", "127.0.0.1", &master_port]].concat(),
        );
        let sentinel_port = free_port();
        let conf = dir.path().join("sentinel.conf");
        // Sentinel rewrites its file: it must be its own, and writable.
        std::fs::write(
            &conf,
            format!(
                "port {sentinel_port}\nsentinel monitor {SENTINEL_MASTER} 127.0.0.1 {master_port} 1\nsentinel down-after-milliseconds {SENTINEL_MASTER} 1000\nsentinel failover-timeout {SENTINEL_MASTER} 5000\n",
            ),
        )
        .expect("write sentinel.conf");
        let args = [conf.display().to_string(), "--sentinel".into()];
        let sentinel = Redis::spawn(sentinel_port, &args, None);
        RedisSentinel {
            master,
            replica,
            sentinel,
            _dir: dir,
        }
    }

    /// The port of the master as the Sentinel names it now.
    pub fn master_port(&self) -> Option<u16> {
        let out = self
            .sentinel
            .cli(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_MASTER]);
        out.lines().nth(1)?.trim().parse().ok()
    }

    /// Makes the replica the master (`SENTINEL FAILOVER`), once the Sentinel knows it and it
    /// has caught up; returns when the replica says it is the master.
    pub fn failover(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = self
                .sentinel
                .cli(&["SENTINEL", "FAILOVER", SENTINEL_MASTER]);
            if out == "OK" {
                break;
            }
            // NOGOODSLAVE until the Sentinel has heard of the replica.
            assert!(Instant::now() < deadline, "failover refused: {out}");
            std::thread::sleep(Duration::from_millis(100));
        }
        while self.master_port() != Some(self.replica.port)
            || !self.replica.cli(&["ROLE"]).starts_with("master")
        {
            assert!(Instant::now() < deadline, "the replica was not promoted");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
