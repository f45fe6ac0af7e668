//! `portcullis demo`: the whole product from one command, on loopback.
//!
//! Makes (once) a development certificate, a session key and an audit key under the demo
//! directory, starts the sample chat upstream on a free loopback port, writes the demo
//! config next to them and runs the real server with it: the same code path as `run`.

mod upstream;

use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::keys::{self, KeyGenerationError};
use crate::server::{self, RunOptions, StartError};

/// Demo settings from the command line.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Where keys, certificates, config and the audit log live.
    pub dir: PathBuf,
    /// HTTPS port on 127.0.0.1.
    pub port: u16,
    /// Plain-HTTP port on 127.0.0.1 (redirects to HTTPS).
    pub http_port: u16,
    /// Admin port on 127.0.0.1.
    pub admin_port: u16,
}

/// Why the demo could not start.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// Keys or certificate.
    #[error(transparent)]
    Keys(#[from] KeyGenerationError),
    /// The sample upstream.
    #[error("sample upstream: {0}")]
    Upstream(std::io::Error),
    /// The generated config did not load (a bug: please report it).
    #[error("generated config is invalid:\n{0}")]
    Config(#[from] crate::config::ConfigReport),
    /// The server.
    #[error(transparent)]
    Start(#[from] StartError),
}

/// Runs the demo until Ctrl-C.
pub fn run(options: &DemoOptions) -> Result<(), DemoError> {
    let dir = std::path::absolute(&options.dir).map_err(|source| KeyGenerationError::Write {
        path: options.dir.clone(),
        source,
    })?;
    let cert = keys::dev_certificate(
        &dir.join("certs"),
        &["localhost".into(), "127.0.0.1".into()],
    )?;
    let session_key = ensure_secret(&dir, "session.key", keys::session_key)?;
    let audit_key = ensure_secret(&dir, "audit.key", || {
        keys::audit_key()
            .map(|(private, _)| private)
            .unwrap_or_default()
    })?;
    let passwords = ensure_secret(&dir, "passwords.txt", || {
        format!("alice {}\nbob {}\n", new_password(), new_password())
    })?;
    let users = demo_users(&passwords)?;
    let upstream_port = start_upstream()?;
    let config_path = dir.join("demo.yaml");
    let yaml = demo_config(
        options,
        &dir,
        &cert,
        &session_key,
        &audit_key,
        upstream_port,
        &users.hashes,
    );
    keys::write_file(&dir, &config_path, yaml.as_bytes(), false)?;
    let config = Config::load(&config_path)?;
    println!(
        "\nPortcullis demo\n  open      https://127.0.0.1:{port}/   (certificate: trust {ca} or accept the warning)\n  \
         upstream  sample chat app on http://127.0.0.1:{upstream_port} (unprotected: use the address above)\n  \
         admin     http://127.0.0.1:{admin}/metrics\n  \
         console   https://127.0.0.1:{port}/.portcullis/admin/   (security console: alice)\n  audit     {audit}\n  config    {config}\n\n  \
         Sign in as:\n{logins}\n  \
         alice (staff: admin, billing) may call the billing agent; bob (customer of acme) gets 403\n  \
         for it and for other entities' data (/api/entities/globex/...); see the audit log.\n  \
         Point it at a real OpenID Provider: docs/identity-providers.md and conf/oidc-*.yaml.\n\n  \
         Stop with Ctrl-C.\n",
        logins = users.logins,
        port = options.port,
        ca = cert.ca_cert.display(),
        admin = options.admin_port,
        audit = config.audit.path.display(),
        config = config_path.display(),
    );
    server::run(config, RunOptions::default())?;
    Ok(())
}

/// Demo users' password hashes (for the config) and the lines to print.
struct DemoUsers {
    hashes: Vec<String>,
    logins: String,
}

fn new_password() -> String {
    format!("{:016x}", rand::random::<u64>())
}

fn demo_users(passwords_file: &Path) -> Result<DemoUsers, DemoError> {
    let text =
        std::fs::read_to_string(passwords_file).map_err(|source| KeyGenerationError::Write {
            path: passwords_file.to_path_buf(),
            source,
        })?;
    let mut hashes = Vec::new();
    let mut logins = String::new();
    for line in text.lines() {
        let Some((user, password)) = line.split_once(' ') else {
            continue;
        };
        hashes.push(
            crate::idp::local::hash_password(password)
                .map_err(|_| KeyGenerationError::Generation)?,
        );
        logins.push_str(&format!("    {user:<6} {password}\n"));
    }
    Ok(DemoUsers { hashes, logins })
}

fn ensure_secret(
    dir: &Path,
    name: &str,
    make: impl FnOnce() -> String,
) -> Result<PathBuf, KeyGenerationError> {
    let path = dir.join(name);
    if !path.is_file() {
        keys::write_file(dir, &path, make().as_bytes(), true)?;
    }
    Ok(path)
}

fn start_upstream() -> Result<u16, DemoError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(DemoError::Upstream)?;
    let port = listener.local_addr().map_err(DemoError::Upstream)?.port();
    listener
        .set_nonblocking(true)
        .map_err(DemoError::Upstream)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(DemoError::Upstream)?;
    std::thread::Builder::new()
        .name("demo-upstream".into())
        .spawn(move || {
            runtime.block_on(async move {
                match tokio::net::TcpListener::from_std(listener) {
                    Ok(listener) => upstream::serve(listener).await,
                    Err(e) => tracing::error!(error = %e, "demo upstream cannot listen"),
                }
            })
        })
        .map_err(DemoError::Upstream)?;
    Ok(port)
}

fn demo_config(
    options: &DemoOptions,
    dir: &Path,
    cert: &keys::DevCertificate,
    session_key: &Path,
    audit_key: &Path,
    upstream_port: u16,
    hashes: &[String],
) -> String {
    let alice = hashes.first().map_or("", String::as_str);
    let bob = hashes.get(1).map_or("", String::as_str);
    format!(
        r#"# Written by `portcullis demo` at every start; edit conf/demo.yaml instead.
server:
  public_url: https://127.0.0.1:{port}
  https:
    listen: ["127.0.0.1:{port}"]
    certificates: [{{ cert: "{cert}", key: "{key}" }}]
  http:
    listen: ["127.0.0.1:{http_port}"]
  pid_file: "{dir}/portcullis.pid"
  upgrade_sock: "{dir}/upgrade.sock"
  grace_period: 1s
  shutdown_timeout: 2s
session:
  encryption_keys: ["file:{session_key}"]
identity_providers:
  - id: demo
    kind: local
    display_name: Demo users
    users:
      - username: alice
        password_hash: "{alice}"
        name: Alice (staff)
        email: alice@corp.example
        user_type: internal-user
        roles: [admin, billing]
      - username: bob
        password_hash: "{bob}"
        name: Bob (customer)
        email: bob@acme.example
        user_type: external-user
        roles: [customer]
        entity: acme
apps:
  - id: demo-chat
    hosts: [127.0.0.1, localhost]
    upstream: http://127.0.0.1:{upstream_port}
    access:
      user_types: [internal-user, external-user]
      roles: [admin, customer]
    rules:
      - name: billing-agent
        paths: ["/api/agents/billing-*/**"]
        access: {{ roles: [billing] }}
    entity_scope:
      path_pattern: "/api/entities/{{entity}}/**"
    identity_headers:
      plain: true
audit:
  path: "{dir}/audit.jsonl"
  signing_key: "file:{audit_key}"
admin:
  listen: 127.0.0.1:{admin_port}
  # The demo's users have no second factor; a real deployment keeps require_mfa (default true).
  console: {{ roles: [admin], require_mfa: false }}
"#,
        port = options.port,
        http_port = options.http_port,
        admin_port = options.admin_port,
        cert = cert.cert.display(),
        key = cert.key.display(),
        dir = dir.display(),
        session_key = session_key.display(),
        audit_key = audit_key.display(),
    )
}
