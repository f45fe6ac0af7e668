//! `pingora-baseline LISTEN UPSTREAM THREADS`: a plain Pingora HTTP reverse proxy with no
//! logic at all (no routing, policy, header hygiene, metrics or audit). bench/run.sh runs it
//! next to nginx and Portcullis to show how much of Portcullis's cost is Pingora's own.

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::server::configuration::{Opt, ServerConf};

struct Bare {
    upstream: String,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream.as_str(), false, String::new())))
    }

    async fn upstream_request_filter(&self, _session: &mut Session, upstream: &mut RequestHeader, _ctx: &mut ()) -> Result<()> {
        upstream.insert_header("host", self.upstream.as_str())?;
        Ok(())
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 5 {
        eprintln!("usage: pingora-baseline LISTEN UPSTREAM THREADS PIDDIR");
        std::process::exit(2);
    }
    let conf = ServerConf {
        threads: args[3].parse().unwrap_or(1),
        pid_file: format!("{}/pingora.pid", args[4]),
        upgrade_sock: format!("{}/pingora-upgrade.sock", args[4]),
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        // For experiments: PINGORA_WORK_STEALING=0 runs each thread's own runtime.
        work_stealing: std::env::var("PINGORA_WORK_STEALING").map_or(true, |v| v != "0"),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();
    let mut proxy = pingora::proxy::http_proxy_service(&server.configuration, Bare { upstream: args[2].clone() });
    proxy.add_tcp(&args[1]);
    server.add_service(proxy);
    server.run_forever();
}
