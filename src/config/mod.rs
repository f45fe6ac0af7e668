//! Typed, validated configuration: loaded once from YAML, never parsed on the hot path.
//!
//! `load` reads the file, deserialises it into the `raw` structs (unknown keys are errors),
//! and `compile`s them into the types below, collecting *every* problem into a
//! [`ConfigReport`] with key paths, lines and hints.

mod access;
mod allowlist;
mod compile;
mod limits;
mod machine;
mod raw;
mod report;
mod sinks;
mod summary;
mod values;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use url::Url;

pub use access::{
    ClaimMapping, ClaimPath, DomainPattern, EntityPathPattern, EntityScope, IdentityMapping,
    Matcher, PathRule, Requirements, RoleRule,
};
pub use allowlist::{canonical_ip, AllowlistMode, IpAllowlist};
pub use limits::{
    LimitKey, LimitSpec, SizeError, SizeLimits, CLIENT_ADDRESS_HEADERS,
    PASSABLE_CLIENT_ADDRESS_HEADERS,
};
pub use machine::{
    Accept, BearerRules, IntrospectionSettings, JwtIssuerSettings, ServiceAccount,
    DEFAULT_ALGORITHMS, SERVICE_ACCOUNTS_IDP,
};
pub use report::{ConfigIssue, ConfigReport};
pub use sinks::{AuditSink, OnFull, SinkTarget, SyslogTransport};
pub use values::{decode_base32, is_argon2id_hash, Secret, SecretError};

use crate::route::{HostPattern, PathGlob};

/// Default prefix of Portcullis's own endpoints on every app host.
pub const DEFAULT_RESERVED_PREFIX: &str = "/.portcullis/";
/// Default name of the session cookie (and the prefix of its chunks).
pub const DEFAULT_COOKIE_NAME: &str = "__Host-portcullis";

/// A loaded configuration.
#[derive(Debug)]
pub struct Config {
    /// The file it came from.
    pub source: PathBuf,
    /// Listeners, TLS, trusted proxies, process settings.
    pub server: Server,
    /// Session cookie settings.
    pub session: Session,
    /// Identity providers (OIDC and local sign-in; SAML is accepted, its sign-in comes later).
    pub identity_providers: Vec<IdentityProvider>,
    /// How claims become user type, roles and entity.
    pub identity: IdentityMapping,
    /// Protected applications.
    pub apps: Vec<Arc<App>>,
    /// How the user-context assertion is signed.
    pub assertion: AssertionSettings,
    /// Audit trail.
    pub audit: Audit,
    /// Admin listener.
    pub admin: Admin,
    /// Where state shared by replicas lives.
    pub store: Store,
    /// Machine clients with API keys.
    pub service_accounts: Vec<ServiceAccount>,
    /// Settings that are accepted but weaken security or do nothing yet; logged at start.
    pub warnings: Vec<String>,
    /// Where each key path is in the file, for problems found after compiling.
    lines: report::LineIndex,
}

/// `server:`
#[derive(Debug)]
pub struct Server {
    /// The canonical public URL (scheme, host, optional port).
    pub public_url: Url,
    /// TLS listeners.
    pub https: Option<Https>,
    /// Plain-HTTP listeners (redirect to HTTPS unless an app allows plain HTTP).
    pub http: Option<Http>,
    /// `Strict-Transport-Security` value, precomputed; `None` = not sent.
    pub hsts: Option<String>,
    /// Peers whose `X-Forwarded-*` and `X-Request-Id` are believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Prefix of Portcullis's own endpoints, with leading and trailing `/`.
    pub reserved_prefix: String,
    /// An SSE answer cut by a revocation ends with `event: portcullis-ended` (and the reason)
    /// before the connection closes.
    pub sse_end_event: bool,
    /// Worker threads.
    pub threads: usize,
    /// One multi-thread tokio runtime whose workers steal each other's tasks (`true`), or a
    /// current-thread runtime per worker thread (`false`, the default).
    pub work_stealing: bool,
    /// How long an old process keeps serving after a graceful upgrade or stop begins.
    pub grace_period: Duration,
    /// After the grace period, how long Pingora waits for its runtimes to stop (requests still
    /// in flight when the grace period ends are cut: raise `grace_period` for long streams).
    pub shutdown_timeout: Duration,
    /// PID file (for `ExecReload` and upgrades).
    pub pid_file: PathBuf,
    /// Socket over which listeners are handed to a new process on upgrade.
    pub upgrade_sock: PathBuf,
    /// Log output.
    pub log: Log,
    /// Request size limits.
    pub limits: SizeLimits,
    /// Addresses allowed to reach anything (checked before routing and login).
    pub ip_allowlist: Option<IpAllowlist>,
    /// Per-address limit on requests that carry no valid session to Portcullis's own endpoints
    /// (sign-in, callback) and on refused cookies; `None` = off.
    pub pre_auth_rate_limit: Option<LimitSpec>,
    /// Client-address headers (lower case) a trusted proxy may pass to the upstream, such as
    /// `cf-connecting-ip`; every other one is removed.
    pub client_ip_headers: Vec<String>,
    /// The sign-in page.
    pub sign_in: SignIn,
}

/// `server.sign_in`
#[derive(Debug, Clone, Copy)]
pub struct SignIn {
    /// With exactly one single sign-on provider (OIDC or SAML) and no local users for the app,
    /// go straight to it instead of showing a chooser.
    pub auto_redirect: bool,
}

/// `server.https`
#[derive(Debug)]
pub struct Https {
    /// Addresses to listen on.
    pub listen: Vec<SocketAddr>,
    /// Certificate/key pairs; chosen by SNI, the first is the default.
    pub certificates: Vec<CertificatePair>,
}

/// A PEM certificate chain and its private key.
#[derive(Debug, Clone)]
pub struct CertificatePair {
    /// PEM chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// `server.http`
#[derive(Debug)]
pub struct Http {
    /// Addresses to listen on.
    pub listen: Vec<SocketAddr>,
    /// Port put in HTTPS redirects; `None` means the default 443.
    pub redirect_port: Option<u16>,
    /// Every connection starts with a PROXY protocol (v1 or v2) header from a trusted proxy.
    pub proxy_protocol: bool,
}

/// `server.log`
#[derive(Debug, Clone)]
pub struct Log {
    /// Output format.
    pub format: LogFormat,
    /// `tracing` filter directive, e.g. `info` or `portcullis=debug,info`.
    pub level: String,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable.
    Text,
    /// One JSON object per line.
    Json,
}

/// `session:`
#[derive(Debug)]
pub struct Session {
    /// AES-256 keys; the first encrypts, all decrypt.
    pub encryption_keys: Vec<SessionKey>,
    /// Cookie name; chunks and flow cookies share it as a prefix.
    pub cookie_name: String,
    /// Absolute lifetime from login.
    pub lifetime: Duration,
    /// Longest gap between requests before the session ends.
    pub idle_timeout: Duration,
    /// Most cookies one session may use (each under 4 KB).
    pub max_chunks: usize,
    /// Bound into every cookie: a cookie from another deployment does not decrypt.
    pub deployment_id: String,
}

/// 32 bytes of key material. `Debug` is redacted.
#[derive(Clone)]
pub struct SessionKey(pub [u8; 32]);

impl SessionKey {
    /// First 8 hex digits of the key's SHA-256: tells keys apart without revealing them.
    pub fn fingerprint(&self) -> String {
        let digest = ring::digest::digest(&ring::digest::SHA256, &self.0);
        digest.as_ref()[..4]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKey(<redacted>)")
    }
}

/// `identity_providers[]`
#[derive(Debug)]
pub struct IdentityProvider {
    /// Stable id (used in `?idp=`, audit, sessions).
    pub id: String,
    /// Name on the login page.
    pub display_name: String,
    /// Protocol.
    pub kind: IdentityProviderKind,
    /// Which claims (or attributes) give the identity's fields.
    pub claims: ClaimMapping,
}

/// The protocol of an identity provider.
#[derive(Debug)]
pub enum IdentityProviderKind {
    /// OpenID Connect relying party.
    Oidc {
        /// Issuer URL exactly as configured (discovery at `/.well-known/openid-configuration`).
        issuer: String,
        /// Client id registered at the OP.
        client_id: String,
        /// Client secret.
        client_secret: Option<Secret>,
        /// Scopes requested (`openid` is always added).
        scopes: Vec<String>,
        /// `acr_values` sent with every authorization request (e.g. to ask for MFA).
        acr_values: Option<String>,
        /// `prompt` sent with every authorization request (`login`, `consent`, …).
        prompt: Option<String>,
        /// Send the client secret in the token request body (`client_secret_post`) instead of
        /// HTTP Basic (`client_secret_basic`, the default).
        secret_in_body: bool,
        /// Also read the userinfo endpoint and merge its claims (the ID token's win).
        userinfo: bool,
        /// `acr` values that mean a second factor was used; also sent as `acr_values` (with
        /// `prompt=login`) when an app requires MFA that the session lacks.
        mfa_acr_values: Vec<String>,
        /// Also accept the OP's JWT access tokens as bearer tokens, under these rules.
        bearer: Option<Box<BearerRules>>,
    },
    /// Bearer JWT access tokens from an issuer, checked against its JWKS; no sign-in.
    Jwt(Box<JwtIssuerSettings>),
    /// Opaque bearer tokens, checked at an RFC 7662 introspection endpoint; no sign-in.
    Introspection(Box<IntrospectionSettings>),
    /// SAML 2.0 service provider.
    Saml(Box<SamlSettings>),
    /// Users listed in the config.
    Local {
        /// The users.
        users: Vec<LocalUser>,
    },
}

/// A SAML 2.0 provider's settings (`kind: saml`).
#[derive(Debug, Clone)]
pub struct SamlSettings {
    /// Metadata fetched from this URL at start and refreshed in the background.
    pub metadata_url: Option<Url>,
    /// The text of a metadata file (`idp_metadata` naming a file); parsed when the provider
    /// is built.
    pub idp_metadata_xml: Option<String>,
    /// Picks the IdP in an aggregate, and must match the fetched metadata.
    pub idp_entity_id: Option<String>,
    /// Replaces the metadata's SSO endpoint.
    pub idp_sso_url: Option<Url>,
    /// Replaces the metadata's SLO endpoint.
    pub idp_slo_url: Option<Url>,
    /// Trusted in addition to the metadata's certificates (rotation), DER.
    pub idp_certificates: Vec<Vec<u8>>,
    /// This service provider's entity id (the audience of assertions).
    pub sp_entity_id: String,
    /// The SP's key pair: signs AuthnRequests and logout messages (published in SP
    /// metadata) and, when RSA, decrypts encrypted assertions.
    pub sp_keys: Option<SpKeyPair>,
    /// NameID format requested.
    pub name_id_format: Option<String>,
    /// Accept IdP-initiated sign-in.
    pub allow_unsolicited: bool,
    /// Tolerated clock difference.
    pub clock_skew: Duration,
    /// Oldest accepted response.
    pub max_response_age: Duration,
    /// `AuthnContextClassRef` values that mean a second factor.
    pub mfa_authn_contexts: Vec<String>,
    /// Accept SHA-1 signatures.
    pub insecure_allow_sha1: bool,
    /// How often metadata from a URL is fetched again.
    pub metadata_refresh: Duration,
}

/// `sp_signing_key` + `sp_certificate` of a SAML provider, as PEM.
#[derive(Debug, Clone)]
pub struct SpKeyPair {
    /// The private key (PEM).
    pub key: Secret,
    /// The certificate (PEM).
    pub certificate: Vec<u8>,
}

/// `identity_providers[].users[]` of a local provider.
#[derive(Debug, Clone)]
pub struct LocalUser {
    /// Login name (compared exactly).
    pub username: String,
    /// Argon2id PHC string from `portcullis hash-password`.
    pub password_hash: String,
    /// E-mail address.
    pub email: Option<String>,
    /// Display name.
    pub name: Option<String>,
    /// User type (default external-user).
    pub user_type: UserType,
    /// Roles.
    pub roles: Vec<String>,
    /// Entity.
    pub entity: Option<String>,
    /// RFC 6238 shared secret (decoded base32); when set, a TOTP code is required.
    pub totp_secret: Option<TotpSecret>,
}

/// TOTP key bytes. `Debug` is redacted.
#[derive(Clone)]
pub struct TotpSecret(pub Vec<u8>);

impl std::fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TotpSecret(<redacted>)")
    }
}

/// `apps[]`
#[derive(Debug)]
pub struct App {
    /// Stable id (assertion audience, audit, metrics label).
    pub id: String,
    /// The id, shared cheaply with audit records.
    pub audit_id: Arc<str>,
    /// Position in `apps` (indexes per-app runtime state such as upstream peers).
    pub index: usize,
    /// Hosts this app answers to.
    pub hosts: Vec<HostPattern>,
    /// Path prefix within those hosts (`/` = everything).
    pub path_prefix: String,
    /// A disabled app answers 503 and forwards nothing.
    pub enabled: bool,
    /// Where allowed requests go.
    pub upstream: Upstream,
    /// Keep the client's `Host` (default) or send the upstream's authority.
    pub preserve_host: bool,
    /// Serve this app on the plain-HTTP listener instead of redirecting to HTTPS.
    pub insecure_allow_plain_http: bool,
    /// Paths reachable without login (still stripped of identity headers).
    pub public_paths: Vec<PathGlob>,
    /// Who may use the app (every layer must pass).
    pub access: Requirements,
    /// Per-path/method rules that narrow access; first match wins.
    pub rules: Vec<PathRule>,
    /// Where requests name an entity, for tenant isolation.
    pub entity_scope: Option<EntityScope>,
    /// Addresses allowed to reach this app (on top of the server's).
    pub ip_allowlist: Option<IpAllowlist>,
    /// Rate limits for every request to this app.
    pub rate_limits: Vec<LimitSpec>,
    /// What the upstream learns about the user.
    pub identity_headers: IdentityHeaders,
    /// Which credentials the app takes (sessions, bearer tokens, API keys).
    pub accept: Accept,
}

impl crate::route::Routable for App {
    fn hosts(&self) -> &[HostPattern] {
        &self.hosts
    }

    fn path_prefix(&self) -> &str {
        &self.path_prefix
    }
}

/// `apps[].upstream` and `apps[].upstream_tls`
#[derive(Debug, Clone)]
pub struct Upstream {
    /// As configured.
    pub url: Url,
    /// `host:port` to connect to.
    pub address: String,
    /// `https://` upstream.
    pub tls: bool,
    /// Name sent in SNI and verified in the upstream certificate.
    pub server_name: String,
    /// Authority for the `Host` header when `preserve_host` is off.
    pub authority: String,
    /// CA bundle (PEM) that replaces the system roots for this upstream.
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key for mTLS to the upstream (PEM).
    pub client_cert: Option<CertificatePair>,
    /// Timeouts.
    pub timeouts: Timeouts,
}

/// Upstream timeouts. There is no total timeout: chat answers stream for minutes.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// TCP (and TLS) connect.
    pub connect: Duration,
    /// Longest wait for any read from the upstream: the first response byte and every gap
    /// between chunks of a stream.
    pub read: Duration,
    /// Longest wait for the upstream to accept request bytes.
    pub write: Duration,
    /// A WebSocket with no frame either way is closed after this long (from its handshake
    /// request on, in place of `read` and of `server.limits.body_idle_timeout`).
    pub websocket_idle: Duration,
}

/// Internal staff or external (customer, partner) users.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum UserType {
    /// `internal-user`
    #[serde(rename = "internal-user")]
    Internal,
    /// `external-user`
    #[serde(rename = "external-user")]
    External,
}

/// `assertion:` — the signed user-context JWT sent upstream in `X-Portcullis-Assertion`.
#[derive(Debug, Clone)]
pub struct AssertionSettings {
    /// Signature algorithm of new assertions.
    pub algorithm: AssertionAlgorithm,
    /// PKCS#8 PEM private keys; the first signs, all are published in the JWKS (rotation).
    /// Empty: a key is generated at start (fine for one process; replicas need shared keys).
    pub signing_keys: Vec<Secret>,
    /// Lifetime of one assertion (`exp - iat`), at most 5 minutes.
    pub ttl: Duration,
    /// `iss` claim: the public URL's origin.
    pub issuer: String,
}

/// Signature algorithm of the assertion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssertionAlgorithm {
    /// ECDSA P-256 with SHA-256 (default).
    Es256,
    /// Ed25519.
    EdDsa,
}

/// `apps[].identity_headers`: what the upstream learns besides the assertion.
#[derive(Debug, Clone)]
pub struct IdentityHeaders {
    /// Also send `X-Portcullis-User`, `-Email`, `-User-Type`, `-Roles`, `-Entity`.
    pub plain: bool,
    /// Only these roles go upstream (assertion and plain header); `None` = all.
    pub roles: Option<Vec<String>>,
    /// Only these `custom` keys go upstream; `None` = all.
    pub custom: Option<Vec<String>>,
    /// Warn (at most once a minute per process) when the identity headers would exceed this
    /// many bytes.
    pub budget_bytes: usize,
}

impl Default for IdentityHeaders {
    fn default() -> Self {
        IdentityHeaders {
            plain: false,
            roles: None,
            custom: None,
            budget_bytes: 8192,
        }
    }
}

/// `audit:`
#[derive(Debug)]
pub struct Audit {
    /// JSON Lines file.
    pub path: PathBuf,
    /// When records are forced to disk.
    pub fsync: FsyncPolicy,
    /// Records waiting for the writer before `on_queue_full` applies.
    pub queue_capacity: usize,
    /// What a request does when the queue is full.
    pub on_queue_full: QueueFullPolicy,
    /// Ed25519 PKCS#8 key (base64) that signs checkpoints; `None` = a per-process key.
    pub signing_key: Option<Secret>,
    /// A signed checkpoint after this many records...
    pub checkpoint_every: u64,
    /// ...or after this long, whichever comes first.
    pub checkpoint_interval: Duration,
    /// When the file is sealed and a new one begins (also on `SIGUSR1`).
    pub rotate: Rotation,
    /// What happens to rotated files; `None` keeps them forever, uncompressed.
    pub retention: Option<Retention>,
    /// Copies of the trail delivered elsewhere.
    pub sinks: Vec<AuditSink>,
    /// Where each sink keeps its cursor (default: `audit-sinks/` beside the file).
    pub spool: PathBuf,
    /// `personal_data: pseudonymised`: the per-user key file; `None` for `plain`.
    pub personal_keys: Option<PathBuf>,
}

/// `audit.rotate`: a new file when the current one reaches either bound.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rotation {
    /// Bytes.
    pub max_size: Option<u64>,
    /// Since the file was opened.
    pub max_age: Option<Duration>,
}

/// `audit.retention`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Rotated files older than this (by the time they were rotated) are deleted.
    pub keep: Option<Duration>,
    /// Rotated files are gzip-compressed once rotated.
    pub compress: bool,
}

/// `audit.fsync`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// After every record.
    Always,
    /// At most this often (records are flushed to the OS immediately).
    Interval(Duration),
    /// Leave it to the OS.
    Never,
}

/// `audit.on_queue_full`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueFullPolicy {
    /// The request waits until the writer catches up: no record is lost.
    Block,
    /// The record is dropped, counted in `portcullis_audit_dropped_total`, and the next
    /// written record carries `dropped_before` so the gap is visible in the chain.
    Drop,
}

/// `store:`: where the state that replicas share lives.
#[derive(Debug, Clone)]
pub enum Store {
    /// In this process (the default): right for one instance.
    Memory,
    /// A Redis server shared by every replica.
    Redis(RedisStore),
}

/// `store: { kind: redis, … }`
#[derive(Debug, Clone)]
pub struct RedisStore {
    /// Which Redis deployment: one server, a Cluster or a Sentinel-managed master.
    pub servers: RedisServers,
    /// Every node is `rediss://`: the client speaks TLS to each.
    pub tls: bool,
    /// `store.tls.ca_file`: the CAs that Redis's certificates must chain to, instead of the
    /// system's roots (read when the runtime is built, so `check` reports a bad file).
    pub ca_file: Option<PathBuf>,
    /// Put before every key and channel name: several deployments can share one Redis.
    pub key_prefix: String,
    /// Longest wait for one operation.
    pub timeout: Duration,
}

/// Where the Redis of `store:` is; each URL keeps its password when it has one.
#[derive(Debug, Clone)]
pub enum RedisServers {
    /// `store.url`: one server.
    Single(Secret),
    /// `store.cluster`: seed nodes of a Redis Cluster; the client discovers the others.
    Cluster(Vec<Secret>),
    /// `store.sentinel`: the master named `master`, found through the Sentinel `nodes`.
    Sentinel {
        /// The name the Sentinels monitor (`sentinel monitor <master> …`).
        master: String,
        /// Sentinel URLs; their credentials are the Sentinels' own.
        nodes: Vec<Secret>,
        /// `store.sentinel.password`: the master's and replicas' password, if they need one.
        password: Option<Secret>,
    },
}

impl RedisServers {
    /// The config key these servers come from, for problems found when connecting.
    pub fn key(&self) -> &'static str {
        match self {
            RedisServers::Single(_) => "store.url",
            RedisServers::Cluster(_) => "store.cluster",
            RedisServers::Sentinel { .. } => "store.sentinel",
        }
    }
}

/// `admin:`
#[derive(Debug)]
pub struct Admin {
    /// Admin listener address (keep it on loopback or a management network).
    pub listen: SocketAddr,
    /// Bearer tokens of the admin API; none: the API answers 401 to everyone.
    pub tokens: Vec<AdminToken>,
    /// `admin.console`: the security console on the public listeners; none: not served.
    pub console: Option<Console>,
}

/// `admin.console`: who may open the security console (`<reserved_prefix>admin/`).
#[derive(Debug, Clone)]
pub struct Console {
    /// A signed-in user holding any of these roles gets in.
    pub roles: Vec<String>,
    /// The session must have used a second factor (else a step-up, as for apps).
    pub require_mfa: bool,
}

/// `admin.tokens[]`: who may call the admin API, and for what.
#[derive(Debug)]
pub struct AdminToken {
    /// Recorded in the audit trail (never the token).
    pub name: String,
    /// The bearer token.
    pub token: Secret,
    /// What it may do.
    pub scopes: Vec<AdminScope>,
}

/// What an admin token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::EnumString, strum::IntoStaticStr)]
#[strum(serialize_all = "kebab-case")]
pub enum AdminScope {
    /// List sessions and kill switches.
    Read,
    /// End sessions.
    Revoke,
    /// Turn users, entities and apps off and on.
    Disable,
    /// Reload the configuration.
    Reload,
}

impl Config {
    /// Reads and compiles `path`; every problem is in the returned report.
    /// A problem found after compiling (when the runtime objects are built), at `path` with
    /// its line in the file.
    pub fn issue(&self, path: &str, message: impl Into<String>, hint: &str) -> ConfigIssue {
        ConfigIssue {
            path: path.to_string(),
            line: self.lines.line(path),
            message: message.into(),
            hint: (!hint.is_empty()).then(|| hint.to_string()),
        }
    }

    /// A report of `issues` in this config's file.
    pub fn report(&self, issues: Vec<ConfigIssue>) -> ConfigReport {
        ConfigReport {
            file: self.source.clone(),
            issues,
        }
    }

    /// Loads and compiles `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigReport> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigReport {
            file: path.to_path_buf(),
            issues: vec![ConfigIssue {
                path: "(file)".into(),
                line: None,
                message: format!("cannot read the file: {e}"),
                hint: Some("check the path given with -c".into()),
            }],
        })?;
        Config::from_yaml(path, &text)
    }

    /// Compiles YAML text; `path` is used for messages only.
    pub fn from_yaml(path: &Path, text: &str) -> Result<Config, ConfigReport> {
        compile::compile(path, text)
    }
}

/// Builds configs from YAML snippets in unit tests (a session key file is made for them).
#[cfg(test)]
pub mod testing {
    use std::path::Path;

    use super::{Config, ConfigReport};

    /// A key file that lives for the whole test run.
    pub fn key_file() -> String {
        use std::sync::OnceLock;
        static PATH: OnceLock<String> = OnceLock::new();
        PATH.get_or_init(|| {
            let path =
                std::env::temp_dir().join(format!("portcullis-test-key-{}", std::process::id()));
            std::fs::write(&path, "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=")
                .expect("write key");
            path.display().to_string()
        })
        .clone()
    }

    /// A development certificate made once for the whole test run: (cert, key).
    pub fn certificate() -> (String, String) {
        use std::sync::OnceLock;
        static PAIR: OnceLock<(String, String)> = OnceLock::new();
        PAIR.get_or_init(|| {
            // Made here with rcgen, not with `keys` (which sits above the config).
            let dir =
                std::env::temp_dir().join(format!("portcullis-test-cert-{}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("dir");
            let made = rcgen::generate_simple_self_signed(vec!["chat.example.com".to_string()])
                .expect("dev cert");
            let (cert, key) = (dir.join("server.crt"), dir.join("server.key"));
            std::fs::write(&cert, made.cert.pem()).expect("write");
            std::fs::write(&key, made.key_pair.serialize_pem()).expect("write");
            (cert.display().to_string(), key.display().to_string())
        })
        .clone()
    }

    /// Compiles `server:` (HTTPS and HTTP), `session:` and the given `apps:` YAML (indented as
    /// a top-level `apps:` list body).
    pub fn with_apps(apps: &str) -> Result<Config, ConfigReport> {
        with_sections("", apps)
    }

    /// Like [`with_apps`], with more top-level sections (`identity_providers:`, `identity:`…)
    /// written before `apps:`.
    pub fn with_sections(sections: &str, apps: &str) -> Result<Config, ConfigReport> {
        let (cert, key) = certificate();
        let yaml = format!(
            "server:\n  public_url: https://chat.example.com\n  https:\n    listen: [\"127.0.0.1:0\"]\n    certificates: [{{ cert: \"{cert}\", key: \"{key}\" }}]\n  http:\n    listen: [\"127.0.0.1:0\"]\nsession:\n  encryption_keys: [\"file:{}\"]\n{sections}apps:\n{apps}",
            key_file()
        );
        Config::from_yaml(Path::new("test.yaml"), &yaml)
    }
}
