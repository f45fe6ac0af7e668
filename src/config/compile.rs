//! Raw structs → typed [`Config`], collecting every problem with its path, line and hint.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use ipnet::IpNet;
use serde::de::DeserializeOwned;
use serde_yaml_ng::Value;
use url::Url;

use super::raw::*;
use super::report::{ConfigIssue, ConfigReport, Issues, LineIndex};
use super::values::{parse_duration, parse_listen, Secret};
use super::*;
use crate::route::{HostPattern, PathGlob};

/// Default pre-authentication limit per client address: 10 requests a second, bursts of 50.
/// Chat UIs hold WebSockets open for minutes without a frame.
const DEFAULT_WEBSOCKET_IDLE: Duration = Duration::from_secs(15 * 60);
const DEFAULT_PRE_AUTH_RATE: std::num::NonZeroU32 = match std::num::NonZeroU32::new(10) {
    Some(n) => n,
    None => std::num::NonZeroU32::MIN,
};
const DEFAULT_PRE_AUTH_BURST: std::num::NonZeroU32 = match std::num::NonZeroU32::new(50) {
    Some(n) => n,
    None => std::num::NonZeroU32::MIN,
};

const SECTIONS: &[&str] = &[
    "server",
    "session",
    "identity_providers",
    "identity",
    "assertion",
    "apps",
    "service_accounts",
    "audit",
    "store",
    "admin",
];

/// Compiles YAML text into a [`Config`] or a report of every problem.
pub fn compile(file: &Path, text: &str) -> Result<Config, ConfigReport> {
    let index = LineIndex::build(text);
    let mut issues = Issues::new(&index);
    let value: Value = match serde_yaml_ng::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            issues.push(ConfigIssue {
                path: "(syntax)".into(),
                line: e.location().map(|l| l.line()),
                message: e.to_string(),
                hint: Some("fix the YAML syntax (indentation, quotes, `key: value`)".into()),
            });
            return Err(issues.into_report(file));
        }
    };
    let raw = split_sections(value, &mut issues);
    // Absolute, so `--daemon` (which changes directory to /) finds the same files.
    let absolute = std::path::absolute(file).unwrap_or_else(|_| file.to_path_buf());
    let base_dir = absolute.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut compiler = Compiler {
        issues,
        warnings: Vec::new(),
        base_dir,
    };
    let mut config = compiler.config(file, raw);
    if compiler.issues.is_empty() {
        drop(compiler);
        config.lines = index;
        Ok(config)
    } else {
        Err(compiler.issues.into_report(file))
    }
}

/// Deserialises each section (and each list item) on its own so that one unknown key does
/// not hide problems elsewhere.
fn split_sections(value: Value, issues: &mut Issues<'_>) -> RawConfig {
    let mut raw = RawConfig::default();
    let map = match value {
        Value::Mapping(map) => map,
        Value::Null => return raw,
        _ => {
            issues.add(
                "(top)",
                "the file must be a mapping of sections",
                "start with `server:`",
            );
            return raw;
        }
    };
    for (key, value) in map {
        let Some(name) = key.as_str() else {
            issues.add("(top)", format!("non-string key {key:?}"), "");
            continue;
        };
        match name {
            "server" => raw.server = section(name, value, issues),
            "session" => raw.session = section(name, value, issues),
            "audit" => raw.audit = section(name, value, issues),
            "admin" => raw.admin = section(name, value, issues),
            "identity_providers" => raw.identity_providers = list(name, value, issues),
            "apps" => raw.apps = list(name, value, issues),
            "identity" => raw.identity = section(name, value, issues),
            "assertion" => raw.assertion = section(name, value, issues),
            "service_accounts" => raw.service_accounts = Some(value),
            "store" => raw.store = Some(value),
            other => issues.add(
                other,
                format!("unknown section `{other}`"),
                format!("top-level sections are: {}", SECTIONS.join(", ")),
            ),
        }
    }
    raw
}

fn section<T: DeserializeOwned + Default>(
    path: &str,
    value: Value,
    issues: &mut Issues<'_>,
) -> Option<T> {
    if value.is_null() {
        return Some(T::default());
    }
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(v) => Some(v),
        Err(e) => {
            let inner = e.path().to_string();
            let full = if inner == "." {
                path.to_string()
            } else {
                format!("{path}.{inner}")
            };
            let message = e.into_inner().to_string();
            let hint = if message.starts_with("unknown field") {
                "remove the key or fix its spelling; see docs/configuration.md"
            } else {
                "see docs/configuration.md for the expected type"
            };
            issues.push_unreadable(
                path,
                ConfigIssue {
                    path: full,
                    line: None,
                    message,
                    hint: Some(hint.into()),
                },
            );
            None
        }
    }
}

fn list<T: DeserializeOwned + Default>(
    path: &str,
    value: Value,
    issues: &mut Issues<'_>,
) -> Option<Vec<T>> {
    match value {
        Value::Null => Some(Vec::new()),
        Value::Sequence(items) => Some(
            items
                .into_iter()
                .enumerate()
                .map(|(i, item)| section(&format!("{path}[{i}]"), item, issues).unwrap_or_default())
                .collect(),
        ),
        _ => {
            issues.add(
                path,
                "must be a list",
                format!("write `{path}:` followed by `- ...` items"),
            );
            None
        }
    }
}

struct Compiler<'a> {
    issues: Issues<'a>,
    warnings: Vec<String>,
    base_dir: PathBuf,
}

impl Compiler<'_> {
    fn config(&mut self, file: &Path, raw: RawConfig) -> Config {
        let server = self.server(raw.server.unwrap_or_default());
        let mut session = self.session(raw.session);
        if session.deployment_id.is_empty() {
            session.deployment_id = server.public_url.origin().ascii_serialization();
        }
        let identity_providers =
            self.identity_providers(raw.identity_providers.unwrap_or_default(), &server);
        let provider_ids: HashSet<String> =
            identity_providers.iter().map(|p| p.id.clone()).collect();
        let identity = self.identity_mapping(raw.identity, &provider_ids);
        let apps = self.apps(raw.apps, &provider_ids);
        self.plain_http_consistency(&server, &apps);
        let audit = self.audit(raw.audit.unwrap_or_default());
        let admin = self.admin(raw.admin.unwrap_or_default());
        for (name, value) in [
            ("service_accounts", &raw.service_accounts),
            ("store", &raw.store),
        ] {
            if value.as_ref().is_some_and(|v| !v.is_null()) {
                self.warnings.push(format!(
                    "`{name}` is accepted but not enforced by this version of Portcullis"
                ));
            }
        }
        let issuer = server.public_url.origin().ascii_serialization();
        Config {
            source: file.to_path_buf(),
            server,
            session,
            identity_providers,
            apps,
            identity,
            assertion: self.assertion(raw.assertion, issuer),
            audit,
            admin,
            warnings: std::mem::take(&mut self.warnings),
            lines: LineIndex::default(),
        }
    }

    /// Plain HTTP settings that could never take effect are errors, not surprises.
    fn plain_http_consistency(&mut self, server: &Server, apps: &[Arc<App>]) {
        let any_plain = apps.iter().any(|a| a.insecure_allow_plain_http);
        if server.http.is_some() && server.https.is_none() && !any_plain {
            self.issues.add(
                "server.http",
                "every request here would be redirected to HTTPS, but no HTTPS listener is configured",
                "add server.https, or set allow_plain_http: true on the apps served over HTTP",
            );
        }
        if server.http.is_none() {
            for app in apps.iter().filter(|a| a.insecure_allow_plain_http) {
                self.issues.add(
                    &format!("apps[{}].allow_plain_http", app.index),
                    "there is no server.http listener to serve plain HTTP on",
                    "add server.http.listen, or remove allow_plain_http",
                );
            }
        }
    }

    // --- helpers -----------------------------------------------------------------------

    fn duration(&mut self, path: &str, text: Option<&String>, default: Duration) -> Duration {
        match text {
            None => default,
            Some(t) => match parse_duration(t) {
                Ok(d) => d,
                Err(e) => {
                    self.issues
                        .add(path, e, "write a duration like 30s, 5m, 12h or 250ms");
                    default
                }
            },
        }
    }

    fn secret(&mut self, path: &str, spec: &str) -> Option<Secret> {
        match Secret::resolve(spec, &self.base_dir) {
            Ok(s) => Some(s),
            Err(e) => {
                self.issues.add(
                    path,
                    e,
                    "write env:NAME (and export NAME) or file:/path/to/secret",
                );
                None
            }
        }
    }

    fn listen_list(&mut self, path: &str, list: &[String]) -> Vec<SocketAddr> {
        let mut out = Vec::new();
        for (i, text) in list.iter().enumerate() {
            match parse_listen(text) {
                Ok(addr) => out.push(addr),
                Err(e) => self.issues.add(&format!("{path}[{i}]"), e, ""),
            }
        }
        out
    }

    /// Relative paths in the file are relative to the file's directory.
    fn file_path(&mut self, path: &str, text: &str, must_exist: bool) -> PathBuf {
        let p = self.base_dir.join(text);
        if must_exist && !p.is_file() {
            self.issues.add(
                path,
                format!("file {} does not exist or is not readable", p.display()),
                "give an absolute path, or one relative to the config file",
            );
        }
        p
    }

    fn required<'v, T>(&mut self, path: &str, value: Option<&'v T>, hint: &str) -> Option<&'v T> {
        if value.is_none() {
            self.issues.add(path, "is required", hint);
        }
        value
    }

    // --- sections ------------------------------------------------------------------------

    fn server(&mut self, raw: RawServer) -> Server {
        let public_url = match self.required(
            "server.public_url",
            raw.public_url.as_ref(),
            "the URL users type, e.g. https://chat.example.com",
        ) {
            Some(text) => match Url::parse(text) {
                Ok(url) if matches!(url.scheme(), "https" | "http") && url.host().is_some() => url,
                _ => {
                    self.issues.add(
                        "server.public_url",
                        format!("`{text}` is not an http(s) URL"),
                        "e.g. https://chat.example.com",
                    );
                    placeholder_url()
                }
            },
            None => placeholder_url(),
        };
        let https = raw.https.map(|h| self.https(h));
        let http = raw.http.map(|h| Http {
            listen: self.listen_list(
                "server.http.listen",
                h.listen.as_deref().unwrap_or_default(),
            ),
            redirect_port: h.redirect_port,
            proxy_protocol: h.proxy_protocol.unwrap_or(false),
        });
        if raw.hsts.is_some() && https.is_none() {
            self.issues.add(
                "server.hsts",
                "HSTS is only sent over HTTPS, and no HTTPS listener is configured",
                "add server.https or remove server.hsts",
            );
        }
        if https.is_none() && http.is_none() {
            self.issues.add(
                "server.https",
                "no listener is configured",
                "add server.https.listen and certificates (and optionally server.http)",
            );
        }
        let hsts = raw.hsts.map(|h| {
            let max_age = self.duration(
                "server.hsts.max_age",
                h.max_age.as_ref(),
                Duration::from_secs(31_536_000),
            );
            let mut value = format!("max-age={}", max_age.as_secs());
            if h.include_subdomains.unwrap_or(false) {
                value.push_str("; includeSubDomains");
            }
            if h.preload.unwrap_or(false) {
                value.push_str("; preload");
            }
            value
        });
        let mut trusted_proxies = Vec::new();
        for (i, text) in raw.trusted_proxies.unwrap_or_default().iter().enumerate() {
            match parse_cidr(text) {
                Ok(net) => trusted_proxies.push(net),
                Err(e) => self.issues.add(
                    &format!("server.trusted_proxies[{i}]"),
                    e,
                    "write a CIDR like 10.0.0.0/8 or fd00::/8, or a single address",
                ),
            }
        }
        if http.as_ref().is_some_and(|h| h.proxy_protocol) && trusted_proxies.is_empty() {
            self.issues.add(
                "server.http.proxy_protocol",
                "the PROXY protocol is only accepted from server.trusted_proxies, which is empty",
                "list the load balancer's addresses in server.trusted_proxies",
            );
        }
        let reserved_prefix = raw
            .reserved_prefix
            .unwrap_or_else(|| DEFAULT_RESERVED_PREFIX.into());
        if !(reserved_prefix.starts_with('/')
            && reserved_prefix.ends_with('/')
            && reserved_prefix.len() > 2)
        {
            self.issues.add(
                "server.reserved_prefix",
                format!("`{reserved_prefix}` must start and end with '/' and not be '/'"),
                "the default is /.portcullis/",
            );
        }
        let threads = raw
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        if threads == 0 {
            self.issues.add("server.threads", "must be at least 1", "");
        }
        let log = self.log(raw.log.unwrap_or_default());
        let limits = self.limits(raw.limits.unwrap_or_default());
        let ip_allowlist = self.ip_allowlist("server.ip_allowlist", raw.ip_allowlist);
        let pre_auth_rate_limit = match raw.pre_auth_rate_limit {
            None => Some(crate::config::LimitSpec {
                key: crate::config::LimitKey::Ip,
                rate: DEFAULT_PRE_AUTH_RATE,
                per: Duration::from_secs(1),
                burst: DEFAULT_PRE_AUTH_BURST,
            }),
            Some(raw) if raw.rate.as_deref() == Some("off") => {
                self.warnings.push(
                    "server.pre_auth_rate_limit is off: sign-in endpoints and refused cookies are not rate limited".into(),
                );
                None
            }
            Some(raw) => self.rate_limit("server.pre_auth_rate_limit", raw, false),
        };
        let client_ip_headers =
            self.client_ip_headers(raw.client_ip_headers.unwrap_or_default(), &trusted_proxies);
        let sign_in = crate::config::SignIn {
            auto_redirect: raw.sign_in.and_then(|s| s.auto_redirect).unwrap_or(true),
        };
        Server {
            public_url,
            https,
            http,
            hsts,
            trusted_proxies,
            client_ip_headers,
            sign_in,
            reserved_prefix,
            threads: threads.max(1),
            grace_period: self.duration(
                "server.grace_period",
                raw.grace_period.as_ref(),
                Duration::from_secs(5),
            ),
            shutdown_timeout: self.duration(
                "server.shutdown_timeout",
                raw.shutdown_timeout.as_ref(),
                Duration::from_secs(30),
            ),
            pid_file: self.base_dir.join(
                raw.pid_file
                    .unwrap_or_else(|| "/run/portcullis/portcullis.pid".into()),
            ),
            upgrade_sock: self.base_dir.join(
                raw.upgrade_sock
                    .unwrap_or_else(|| "/run/portcullis/upgrade.sock".into()),
            ),
            log,
            limits,
            ip_allowlist,
            pre_auth_rate_limit,
        }
    }

    fn client_ip_headers(&mut self, raw: Vec<String>, trusted: &[IpNet]) -> Vec<String> {
        use crate::config::PASSABLE_CLIENT_ADDRESS_HEADERS as PASSABLE;
        if !raw.is_empty() && trusted.is_empty() {
            self.issues.add(
                "server.client_ip_headers",
                "these headers are only passed on from server.trusted_proxies, which is empty",
                "list the proxy or CDN addresses in server.trusted_proxies",
            );
        }
        let mut out = Vec::new();
        for (i, name) in raw.iter().enumerate() {
            let lower = name.trim().to_ascii_lowercase().replace('_', "-");
            if PASSABLE.contains(&lower.as_str()) {
                out.push(lower);
            } else if lower == "x-real-ip" || lower == "forwarded" || lower == "x-forwarded-for" {
                self.issues.add(
                    &format!("server.client_ip_headers[{i}]"),
                    format!("`{name}` is set by Portcullis from the client address it decided on"),
                    "remove it; backends receive X-Real-IP, X-Forwarded-For and Forwarded from Portcullis",
                );
            } else {
                self.issues.add(
                    &format!("server.client_ip_headers[{i}]"),
                    format!("`{name}` is not a client-address header Portcullis removes"),
                    format!("one of: {}", PASSABLE.join(", ")),
                );
            }
        }
        out
    }

    fn limits(&mut self, raw: RawLimits) -> crate::config::SizeLimits {
        let defaults = crate::config::SizeLimits::default();
        let mut pick = |key: &str, value: Option<usize>, default: usize| match value {
            Some(0) => {
                self.issues.add(
                    &format!("server.limits.{key}"),
                    "must be at least 1",
                    "remove it to use the default",
                );
                default
            }
            Some(v) => v,
            None => default,
        };
        crate::config::SizeLimits {
            max_header_bytes: pick(
                "max_header_bytes",
                raw.max_header_bytes,
                defaults.max_header_bytes,
            ),
            max_headers: pick("max_headers", raw.max_headers, defaults.max_headers),
            max_uri_bytes: pick("max_uri_bytes", raw.max_uri_bytes, defaults.max_uri_bytes),
            max_form_bytes: pick(
                "max_form_bytes",
                raw.max_form_bytes,
                defaults.max_form_bytes,
            ),
            header_timeout: {
                let t = self.duration(
                    "server.limits.header_timeout",
                    raw.header_timeout.as_ref(),
                    defaults.header_timeout,
                );
                if t < Duration::from_secs(1) || t > Duration::from_secs(300) {
                    self.issues.add(
                        "server.limits.header_timeout",
                        "out of range",
                        "between 1s and 5m (default 10s)",
                    );
                }
                t
            },
            body_idle_timeout: self.duration(
                "server.limits.body_idle_timeout",
                raw.body_idle_timeout.as_ref(),
                defaults.body_idle_timeout,
            ),
            max_connections_per_ip: match raw.max_connections_per_ip {
                Some(0) => {
                    self.issues.add(
                        "server.limits.max_connections_per_ip",
                        "must be at least 1",
                        "remove it for no cap",
                    );
                    None
                }
                other => other,
            },
        }
    }

    fn https(&mut self, raw: RawHttps) -> Https {
        let listen = self.listen_list(
            "server.https.listen",
            raw.listen.as_deref().unwrap_or_default(),
        );
        if listen.is_empty() {
            self.issues.add(
                "server.https.listen",
                "needs at least one address",
                "e.g. [\"0.0.0.0:443\"]",
            );
        }
        let mut certificates = Vec::new();
        for (i, c) in raw.certificates.unwrap_or_default().into_iter().enumerate() {
            let base = format!("server.https.certificates[{i}]");
            let cert = self
                .required(
                    &format!("{base}.cert"),
                    c.cert.as_ref(),
                    "path to a PEM certificate chain",
                )
                .cloned();
            let key = self
                .required(
                    &format!("{base}.key"),
                    c.key.as_ref(),
                    "path to the PEM private key",
                )
                .cloned();
            if let (Some(cert), Some(key)) = (cert, key) {
                let cert = self.file_path(&format!("{base}.cert"), &cert, true);
                let key = self.file_path(&format!("{base}.key"), &key, true);
                certificates.push(CertificatePair { cert, key });
            }
        }
        if certificates.is_empty() {
            self.issues.add(
                "server.https.certificates",
                "needs at least one certificate",
                "`portcullis keys dev-cert --out certs/dev` makes one for testing",
            );
        }
        Https {
            listen,
            certificates,
        }
    }

    fn log(&mut self, raw: RawLog) -> Log {
        let format = match raw.format.as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                self.issues.add(
                    "server.log.format",
                    format!("unknown format `{other}`"),
                    "use text or json",
                );
                LogFormat::Text
            }
        };
        let level = raw.level.unwrap_or_else(|| "info".into());
        if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
            self.issues.add(
                "server.log.level",
                format!("`{level}` is not a log filter"),
                "e.g. info, debug, or portcullis=debug,info",
            );
        }
        Log { format, level }
    }

    fn session(&mut self, raw: Option<RawSession>) -> Session {
        let raw = raw.unwrap_or_default();
        let mut encryption_keys = Vec::new();
        match raw.encryption_keys.as_deref() {
            None | Some([]) => self.issues.add(
                "session.encryption_keys",
                "at least one key is required",
                "run `portcullis keys generate` and reference it as env:PORTCULLIS_SESSION_KEY",
            ),
            Some(specs) => {
                for (i, spec) in specs.iter().enumerate() {
                    let path = format!("session.encryption_keys[{i}]");
                    let Some(secret) = self.secret(&path, spec) else {
                        continue;
                    };
                    match decode_key(secret.expose()) {
                        Some(key) => encryption_keys.push(SessionKey(key)),
                        None => self.issues.add(
                            &path,
                            "the key is not 32 bytes of base64",
                            "generate one with `portcullis keys generate`",
                        ),
                    }
                }
            }
        }
        let cookie_name = raw
            .cookie_name
            .unwrap_or_else(|| DEFAULT_COOKIE_NAME.into());
        let valid_cookie = !cookie_name.is_empty()
            && cookie_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'));
        if !valid_cookie {
            self.issues.add(
                "session.cookie_name",
                format!("`{cookie_name}` is not a cookie name"),
                "letters, digits, '-' and '_' only",
            );
        }
        let max_chunks = raw.max_chunks.unwrap_or(5);
        if !(1..=20).contains(&max_chunks) {
            self.issues.add(
                "session.max_chunks",
                "must be between 1 and 20",
                "the default is 5 (about 19 KB of session)",
            );
        }
        let lifetime = self.duration(
            "session.lifetime",
            raw.lifetime.as_ref(),
            Duration::from_secs(12 * 3600),
        );
        let idle_timeout = self.duration(
            "session.idle_timeout",
            raw.idle_timeout.as_ref(),
            Duration::from_secs(3600),
        );
        if idle_timeout.is_zero() || lifetime.is_zero() {
            self.issues.add(
                "session",
                "lifetime and idle_timeout must be longer than zero",
                "",
            );
        }
        Session {
            encryption_keys,
            cookie_name,
            lifetime,
            idle_timeout,
            max_chunks: max_chunks.clamp(1, 20),
            deployment_id: raw.deployment_id.unwrap_or_default(),
        }
    }

    fn identity_providers(
        &mut self,
        raw: Vec<RawIdentityProvider>,
        server: &Server,
    ) -> Vec<IdentityProvider> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for (i, idp) in raw.into_iter().enumerate() {
            let base = format!("identity_providers[{i}]");
            let id = self.identifier(&format!("{base}.id"), idp.id.as_ref(), &mut seen);
            self.foreign_provider_keys(&base, &idp);
            let kind = match idp.kind.as_deref() {
                Some("oidc") => self.oidc(&base, &idp),
                Some("saml") => self.saml(&base, &idp, &server.public_url, &server.reserved_prefix),
                Some("local") => self.local_users(&base, idp.users.as_deref().unwrap_or_default()),
                Some(other) => {
                    self.issues.add(
                        &format!("{base}.kind"),
                        format!("unknown kind `{other}`"),
                        "use oidc, saml or local",
                    );
                    None
                }
                None => {
                    self.issues.add(
                        &format!("{base}.kind"),
                        "is required",
                        "use oidc, saml or local",
                    );
                    None
                }
            };
            let mut claims = self.claims(&base, idp.claims.as_ref());
            // A SAML subject is its NameID, unless the mapping names an attribute.
            if idp.kind.as_deref() == Some("saml")
                && idp.claims.as_ref().is_none_or(|c| c.user_id.is_none())
            {
                claims.user_id = ClaimPath("name_id".into());
            }
            if let (Some(id), Some(kind)) = (id, kind) {
                let display_name = idp.display_name.clone().unwrap_or_else(|| id.clone());
                out.push(IdentityProvider {
                    id,
                    display_name,
                    kind,
                    claims,
                });
            }
        }
        out
    }

    fn local_users(&mut self, base: &str, raw: &[RawLocalUser]) -> Option<IdentityProviderKind> {
        if raw.is_empty() {
            self.issues.add(
                &format!("{base}.users"),
                "a local provider needs users",
                "see docs/identity-providers.md",
            );
            return None;
        }
        let mut seen = HashSet::new();
        let mut users = Vec::new();
        for (j, user) in raw.iter().enumerate() {
            let path = format!("{base}.users[{j}]");
            let Some(username) = self.required(
                &format!("{path}.username"),
                user.username.as_ref(),
                "the login name",
            ) else {
                continue;
            };
            if !seen.insert(username.clone()) {
                self.issues.add(
                    &format!("{path}.username"),
                    format!("duplicate user `{username}`"),
                    "",
                );
            }
            let Some(hash) = self.required(
                &format!("{path}.password_hash"),
                user.password_hash.as_ref(),
                "run `portcullis hash-password`",
            ) else {
                continue;
            };
            if !is_argon2id_hash(hash) {
                self.issues.add(
                    &format!("{path}.password_hash"),
                    "not an Argon2id hash",
                    "run `portcullis hash-password` and paste its output",
                );
                continue;
            }
            let user_type = match user.user_type.as_deref() {
                None | Some("external-user") => UserType::External,
                Some("internal-user") => UserType::Internal,
                Some(other) => {
                    self.issues.add(
                        &format!("{path}.user_type"),
                        format!("unknown user type `{other}`"),
                        "use internal-user or external-user",
                    );
                    UserType::External
                }
            };
            let totp_secret = match user.totp_secret.as_ref() {
                None => None,
                Some(spec) => {
                    let secret = self.secret(&format!("{path}.totp_secret"), spec);
                    match secret.map(|s| decode_base32(s.expose())) {
                        Some(Some(bytes)) if bytes.len() >= 10 => Some(TotpSecret(bytes)),
                        Some(_) => {
                            self.issues.add(
                                &format!("{path}.totp_secret"),
                                "not a base32 secret of at least 80 bits",
                                "as shown by authenticator set-up (e.g. JBSWY3DPEHPK3PXP…)",
                            );
                            None
                        }
                        None => None,
                    }
                }
            };
            users.push(LocalUser {
                username: username.clone(),
                password_hash: hash.clone(),
                email: user.email.clone(),
                name: user.name.clone(),
                user_type,
                roles: user.roles.clone().unwrap_or_default(),
                entity: user.entity.clone(),
                totp_secret,
            });
        }
        Some(IdentityProviderKind::Local { users })
    }

    /// Keys that belong to another kind of provider would silently do nothing.
    fn foreign_provider_keys(&mut self, base: &str, idp: &RawIdentityProvider) {
        let present = [
            ("issuer", "oidc", idp.issuer.is_some()),
            ("client_id", "oidc", idp.client_id.is_some()),
            ("client_secret", "oidc", idp.client_secret.is_some()),
            ("scopes", "oidc", idp.scopes.is_some()),
            ("acr_values", "oidc", idp.acr_values.is_some()),
            (
                "token_endpoint_auth",
                "oidc",
                idp.token_endpoint_auth.is_some(),
            ),
            ("prompt", "oidc", idp.prompt.is_some()),
            ("userinfo", "oidc", idp.userinfo.is_some()),
            ("mfa_acr_values", "oidc", idp.mfa_acr_values.is_some()),
            ("idp_metadata", "saml", idp.idp_metadata.is_some()),
            ("idp_entity_id", "saml", idp.idp_entity_id.is_some()),
            ("idp_sso_url", "saml", idp.idp_sso_url.is_some()),
            ("idp_slo_url", "saml", idp.idp_slo_url.is_some()),
            ("idp_certificates", "saml", idp.idp_certificates.is_some()),
            ("sp_entity_id", "saml", idp.sp_entity_id.is_some()),
            ("sp_signing_key", "saml", idp.sp_signing_key.is_some()),
            ("sp_certificate", "saml", idp.sp_certificate.is_some()),
            ("name_id_format", "saml", idp.name_id_format.is_some()),
            ("allow_unsolicited", "saml", idp.allow_unsolicited.is_some()),
            ("clock_skew", "saml", idp.clock_skew.is_some()),
            ("max_response_age", "saml", idp.max_response_age.is_some()),
            (
                "mfa_authn_contexts",
                "saml",
                idp.mfa_authn_contexts.is_some(),
            ),
            (
                "insecure_allow_sha1",
                "saml",
                idp.insecure_allow_sha1.is_some(),
            ),
            ("metadata_refresh", "saml", idp.metadata_refresh.is_some()),
            ("users", "local", idp.users.is_some()),
        ];
        let Some(kind) = idp.kind.as_deref() else {
            return;
        };
        if !matches!(kind, "oidc" | "saml" | "local") {
            return;
        }
        if kind == "local" && idp.claims.is_some() {
            self.issues.add(
                &format!("{base}.claims"),
                "local users have no claims to map",
                "set email, name, user_type, roles and entity on each user instead",
            );
        }
        for (key, owner, set) in present {
            if set && owner != kind {
                self.issues.add(
                    &format!("{base}.{key}"),
                    format!(
                        "`{key}` belongs to {owner} providers and does nothing for kind: {kind}"
                    ),
                    "remove it, or fix `kind`",
                );
            }
        }
    }

    fn oidc(&mut self, base: &str, idp: &RawIdentityProvider) -> Option<IdentityProviderKind> {
        let issuer = self.required(
            &format!("{base}.issuer"),
            idp.issuer.as_ref(),
            "the OP's issuer URL",
        )?;
        // Kept exactly as written: ID tokens must carry this string in `iss`, and URL
        // parsing would add a trailing slash to a bare origin.
        let issuer = match Url::parse(issuer) {
            Ok(u) if matches!(u.scheme(), "https" | "http") => issuer.clone(),
            _ => {
                self.issues.add(
                    &format!("{base}.issuer"),
                    format!("`{issuer}` is not a URL"),
                    "e.g. https://login.example.com",
                );
                return None;
            }
        };
        let client_id = self
            .required(
                &format!("{base}.client_id"),
                idp.client_id.as_ref(),
                "the client id registered at the OP",
            )?
            .clone();
        let client_secret = idp
            .client_secret
            .as_ref()
            .and_then(|s| self.secret(&format!("{base}.client_secret"), s));
        let scopes = idp
            .scopes
            .clone()
            .unwrap_or_else(|| vec!["openid".into(), "email".into(), "profile".into()]);
        if let Some(prompt) = &idp.prompt {
            let known = prompt
                .split(' ')
                .all(|p| matches!(p, "none" | "login" | "consent" | "select_account"));
            if !known {
                self.issues.add(
                    &format!("{base}.prompt"),
                    format!("`{prompt}` is not an OIDC prompt"),
                    "use login, consent, select_account or none (space-separated)",
                );
            }
        }
        let secret_in_body = match idp.token_endpoint_auth.as_deref() {
            None | Some("client_secret_basic") => false,
            Some("client_secret_post") => true,
            Some(other) => {
                self.issues.add(
                    &format!("{base}.token_endpoint_auth"),
                    format!("unknown method `{other}`"),
                    "use client_secret_basic (default) or client_secret_post",
                );
                false
            }
        };
        Some(IdentityProviderKind::Oidc {
            issuer,
            client_id,
            client_secret,
            scopes,
            acr_values: idp.acr_values.clone(),
            prompt: idp.prompt.clone(),
            secret_in_body,
            userinfo: idp.userinfo.unwrap_or(false),
            mfa_acr_values: idp.mfa_acr_values.clone().unwrap_or_default(),
        })
    }

    /// A stable lower-case id, unique within its list.
    fn identifier(
        &mut self,
        path: &str,
        id: Option<&String>,
        seen: &mut HashSet<String>,
    ) -> Option<String> {
        let id = self.required(path, id, "a short stable name such as `chat`")?;
        let valid = !id.is_empty()
            && id.len() <= 64
            && id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_'));
        if !valid {
            self.issues.add(
                path,
                format!("`{id}` is not a valid id"),
                "lower-case letters, digits, '-' and '_', up to 64",
            );
            return None;
        }
        if !seen.insert(id.clone()) {
            self.issues
                .add(path, format!("duplicate id `{id}`"), "ids must be unique");
            return None;
        }
        Some(id.clone())
    }

    fn apps(&mut self, raw: Option<Vec<RawApp>>, providers: &HashSet<String>) -> Vec<Arc<App>> {
        let raw = raw.unwrap_or_default();
        if raw.is_empty() {
            self.issues.add(
                "apps",
                "at least one app is required",
                "see conf/demo.yaml for an example",
            );
        }
        let mut seen_ids = HashSet::new();
        let mut seen_routes: HashSet<(HostPattern, String)> = HashSet::new();
        let mut out = Vec::new();
        for (i, raw_app) in raw.into_iter().enumerate() {
            let base = format!("apps[{i}]");
            let Some(app) = self.app(&base, raw_app, &mut seen_ids, providers) else {
                continue;
            };
            for host in &app.hosts {
                if !seen_routes.insert((host.clone(), app.path_prefix.clone())) {
                    self.issues.add(
                        &format!("{base}.hosts"),
                        format!(
                            "another app already serves {host:?} with path_prefix {}",
                            app.path_prefix
                        ),
                        "each host + path_prefix pair must belong to exactly one app",
                    );
                }
            }
            let index = out.len();
            out.push(Arc::new(App { index, ..app }));
        }
        out
    }

    fn app(
        &mut self,
        base: &str,
        raw: RawApp,
        seen_ids: &mut HashSet<String>,
        providers: &HashSet<String>,
    ) -> Option<App> {
        let id = self.identifier(&format!("{base}.id"), raw.id.as_ref(), seen_ids);
        let mut hosts = Vec::new();
        match raw.hosts.as_deref() {
            None | Some([]) => self.issues.add(
                &format!("{base}.hosts"),
                "at least one host is required",
                "e.g. [chat.example.com]",
            ),
            Some(list) => {
                for (j, h) in list.iter().enumerate() {
                    match HostPattern::parse(h) {
                        Ok(p) => hosts.push(p),
                        Err(e) => self.issues.add(&format!("{base}.hosts[{j}]"), e, ""),
                    }
                }
            }
        }
        let path_prefix = raw.path_prefix.unwrap_or_else(|| "/".into());
        let prefix_ok = path_prefix.starts_with('/')
            && (path_prefix == "/" || !path_prefix.ends_with('/'))
            && crate::route::normalize_path(&path_prefix).as_deref() == Ok(path_prefix.as_str());
        if !prefix_ok {
            self.issues.add(
                &format!("{base}.path_prefix"),
                format!("`{path_prefix}` is not a normalised path prefix"),
                "e.g. / or /chat (no trailing slash)",
            );
        }
        let upstream = self.upstream(
            base,
            raw.upstream.as_ref(),
            raw.upstream_tls,
            raw.timeouts.unwrap_or_default(),
        );
        let mut public_paths = Vec::new();
        for (j, p) in raw.public_paths.unwrap_or_default().iter().enumerate() {
            match PathGlob::parse(p) {
                Ok(g) => public_paths.push(g),
                Err(e) => self.issues.add(
                    &format!("{base}.public_paths[{j}]"),
                    e,
                    "e.g. /healthz or /static/**",
                ),
            }
        }
        let access = self.requirements(&format!("{base}.access"), raw.access, true, providers);
        let rules = self.rules(base, raw.rules, providers);
        let entity_scope = self.entity_scope(base, raw.entity_scope);
        let ip_allowlist = self.ip_allowlist(&format!("{base}.ip_allowlist"), raw.ip_allowlist);
        let rate_limits = self.rate_limits(&format!("{base}.rate_limits"), raw.rate_limits);
        let identity_headers = self.identity_headers(base, raw.identity_headers);
        let insecure_allow_plain_http = raw.allow_plain_http.unwrap_or(false);
        if insecure_allow_plain_http {
            self.warnings.push(format!(
                "{base}.allow_plain_http: app is served over unencrypted HTTP"
            ));
        }
        let id = id?;
        Some(App {
            audit_id: Arc::from(id.as_str()),
            index: 0,
            id,
            hosts,
            path_prefix,
            enabled: raw.enabled.unwrap_or(true),
            upstream: upstream?,
            preserve_host: raw.preserve_host.unwrap_or(true),
            insecure_allow_plain_http,
            public_paths,
            access,
            rules,
            entity_scope,
            ip_allowlist,
            rate_limits,
            identity_headers,
        })
    }

    fn upstream(
        &mut self,
        base: &str,
        url: Option<&String>,
        tls: Option<RawUpstreamTls>,
        timeouts: RawTimeouts,
    ) -> Option<Upstream> {
        let path = format!("{base}.upstream");
        let text = self.required(&path, url, "e.g. http://127.0.0.1:3000")?;
        let url = match Url::parse(text) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => u,
            _ => {
                self.issues.add(
                    &path,
                    format!("`{text}` is not an http:// or https:// URL"),
                    "e.g. http://127.0.0.1:3000",
                );
                return None;
            }
        };
        if url.path() != "/" || url.query().is_some() {
            self.issues.add(
                &path,
                "an upstream URL carries no path or query",
                "requests keep their own path; use the app's path_prefix to route",
            );
        }
        let is_tls = url.scheme() == "https";
        let host = url.host_str().unwrap_or_default().to_string();
        let port = url
            .port_or_known_default()
            .unwrap_or(if is_tls { 443 } else { 80 });
        let bare_host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let address = if bare_host.contains(':') {
            format!("[{bare_host}]:{port}")
        } else {
            format!("{bare_host}:{port}")
        };
        let authority = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.clone(),
        };
        let raw_tls = tls.unwrap_or_default();
        if !is_tls
            && (raw_tls.ca_file.is_some()
                || raw_tls.client_cert.is_some()
                || raw_tls.server_name.is_some())
        {
            self.issues.add(
                &format!("{base}.upstream_tls"),
                "TLS settings for a plain http:// upstream would do nothing",
                "use an https:// upstream or remove upstream_tls",
            );
        }
        let ca_file = raw_tls.ca_file.map(|f| {
            let path = format!("{base}.upstream_tls.ca_file");
            let file = self.file_path(&path, &f, true);
            if file.is_file() {
                if let Err(e) = crate::pem::read_certs(&file) {
                    self.issues
                        .add(&path, e.to_string(), "a PEM file of CA certificates");
                }
            }
            file
        });
        let client_cert = match (raw_tls.client_cert, raw_tls.client_key) {
            (Some(cert), Some(key)) => {
                let pair = CertificatePair {
                    cert: self.file_path(&format!("{base}.upstream_tls.client_cert"), &cert, true),
                    key: self.file_path(&format!("{base}.upstream_tls.client_key"), &key, true),
                };
                if pair.cert.is_file() {
                    if let Err(e) = crate::pem::read_certs(&pair.cert) {
                        self.issues.add(
                            &format!("{base}.upstream_tls.client_cert"),
                            e.to_string(),
                            "a PEM certificate chain",
                        );
                    }
                }
                if pair.key.is_file() {
                    if let Err(e) = crate::pem::read_key(&pair.key) {
                        self.issues.add(
                            &format!("{base}.upstream_tls.client_key"),
                            e.to_string(),
                            "a PEM private key",
                        );
                    }
                }
                Some(pair)
            }
            (None, None) => None,
            _ => {
                self.issues.add(
                    &format!("{base}.upstream_tls"),
                    "client_cert and client_key go together",
                    "set both for mTLS, or neither",
                );
                None
            }
        };
        let timeouts = Timeouts {
            connect: self.duration(
                &format!("{base}.timeouts.connect"),
                timeouts.connect.as_ref(),
                Duration::from_secs(10),
            ),
            read: self.duration(
                &format!("{base}.timeouts.read"),
                timeouts.read.as_ref(),
                Duration::from_secs(300),
            ),
            write: self.duration(
                &format!("{base}.timeouts.write"),
                timeouts.write.as_ref(),
                Duration::from_secs(60),
            ),
            websocket_idle: self.duration(
                &format!("{base}.timeouts.websocket_idle"),
                timeouts.websocket_idle.as_ref(),
                DEFAULT_WEBSOCKET_IDLE,
            ),
        };
        Some(Upstream {
            server_name: raw_tls.server_name.unwrap_or(bare_host),
            url,
            address,
            tls: is_tls,
            authority,
            ca_file,
            client_cert,
            timeouts,
        })
    }

    fn audit(&mut self, raw: RawAudit) -> Audit {
        let fsync = match raw.fsync.as_deref() {
            None | Some("interval") => FsyncPolicy::Interval(self.duration(
                "audit.fsync_interval",
                raw.fsync_interval.as_ref(),
                Duration::from_secs(1),
            )),
            Some("always") => FsyncPolicy::Always,
            Some("never") => FsyncPolicy::Never,
            Some(other) => {
                self.issues.add(
                    "audit.fsync",
                    format!("unknown policy `{other}`"),
                    "use always, interval or never",
                );
                FsyncPolicy::Always
            }
        };
        if raw.fsync_interval.is_some() && !matches!(fsync, FsyncPolicy::Interval(_)) {
            self.issues.add(
                "audit.fsync_interval",
                "only applies with fsync: interval",
                "remove it or set fsync: interval",
            );
        }
        let on_queue_full = match raw.on_queue_full.as_deref() {
            None | Some("block") => QueueFullPolicy::Block,
            Some("drop") => QueueFullPolicy::Drop,
            Some(other) => {
                self.issues.add(
                    "audit.on_queue_full",
                    format!("unknown policy `{other}`"),
                    "use block or drop",
                );
                QueueFullPolicy::Block
            }
        };
        let queue_capacity = raw.queue_capacity.unwrap_or(65_536);
        if queue_capacity == 0 {
            self.issues
                .add("audit.queue_capacity", "must be at least 1", "");
        }
        let checkpoint_every = raw.checkpoint_every.unwrap_or(1000);
        if checkpoint_every == 0 {
            self.issues
                .add("audit.checkpoint_every", "must be at least 1", "");
        }
        let signing_key = raw
            .signing_key
            .as_ref()
            .and_then(|s| self.secret("audit.signing_key", s));
        if signing_key.is_none() {
            self.warnings.push("audit.signing_key is not set: checkpoints are signed with a key made for this process only".into());
        }
        let path = raw
            .path
            .unwrap_or_else(|| "/var/log/portcullis/audit.jsonl".into());
        Audit {
            path: self.base_dir.join(path),
            fsync,
            queue_capacity: queue_capacity.max(1),
            on_queue_full,
            signing_key,
            checkpoint_every: checkpoint_every.max(1),
            checkpoint_interval: self.duration(
                "audit.checkpoint_interval",
                raw.checkpoint_interval.as_ref(),
                Duration::from_secs(60),
            ),
        }
    }

    fn admin(&mut self, raw: RawAdmin) -> Admin {
        let text = raw.listen.unwrap_or_else(|| "127.0.0.1:9901".into());
        let listen = parse_listen(&text).unwrap_or_else(|e| {
            self.issues.add("admin.listen", e, "e.g. 127.0.0.1:9901");
            SocketAddr::from(([127, 0, 0, 1], 9901))
        });
        if !listen.ip().is_loopback() {
            self.warnings.push(format!(
                "admin.listen {listen} is not loopback: protect it with a firewall"
            ));
        }
        Admin { listen }
    }
}

fn placeholder_url() -> Url {
    // Only used while collecting errors; a config with an invalid URL is never returned.
    Url::parse("https://invalid.invalid/").unwrap_or_else(|_| unreachable!("static URL parses"))
}

/// A CIDR, or a bare address meaning a single host.
pub fn parse_cidr(text: &str) -> Result<IpNet, String> {
    if let Ok(net) = text.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    text.parse::<std::net::IpAddr>()
        .map(IpNet::from)
        .map_err(|_| format!("`{text}` is not a CIDR or IP address"))
}

/// Session keys are 32 bytes, base64 (standard or URL-safe, padding optional).
fn decode_key(text: &str) -> Option<[u8; 32]> {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    let trimmed = text.trim();
    let bytes = STANDARD
        .decode(trimmed)
        .or_else(|_| URL_SAFE_NO_PAD.decode(trimmed.trim_end_matches('=')))
        .ok()?;
    bytes.try_into().ok()
}

mod access;
mod saml;
#[cfg(test)]
mod tests;
