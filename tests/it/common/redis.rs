//! A redis-server on a free loopback port, started and stopped by the tests.

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

/// `requirepass` of the password test (redis-cli sends it to every server; one without a
/// password ignores it with a warning).
pub const REDIS_PASSWORD: &str = "s3cret-redis";

/// A redis-server on a free loopback port, without persistence, stopped on drop.
pub struct Redis {
    /// Its port on 127.0.0.1.
    pub port: u16,
    child: Child,
}

impl Redis {
    pub fn start() -> Redis {
        Redis::start_on(free_port())
    }

    pub fn start_on(port: u16) -> Redis {
        Redis::start_with(port, &[])
    }

    pub fn start_with(port: u16, extra: &[&str]) -> Redis {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(extra)
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (Debian package redis-server)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Redis { port, child }
    }

    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .env("REDISCLI_AUTH", REDIS_PASSWORD)
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Waits until `n` replicas listen for revocations.
    pub fn wait_for_subscribers(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = self.cli(&["PUBSUB", "NUMSUB", "t:revocations"]);
            if out.lines().nth(1) == Some(n.to_string().as_str()) {
                return;
            }
            assert!(Instant::now() < deadline, "subscribers: {out}");
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
