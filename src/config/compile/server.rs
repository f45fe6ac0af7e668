//! Compiling `server:` (public URL, listeners, HSTS, trusted proxies, client-address headers,
//! size limits, log, pre-authentication rate limit) and `admin:`.

use std::net::SocketAddr;
use std::time::Duration;

use ipnet::IpNet;
use url::Url;

use super::{parse_cidr, Compiler};
use crate::config::raw::*;
use crate::config::values::parse_listen;
use crate::config::*;

/// Default pre-authentication limit per client address: 10 requests a second, bursts of 50.
const DEFAULT_PRE_AUTH_RATE: std::num::NonZeroU32 = match std::num::NonZeroU32::new(10) {
    Some(n) => n,
    None => std::num::NonZeroU32::MIN,
};
const DEFAULT_PRE_AUTH_BURST: std::num::NonZeroU32 = match std::num::NonZeroU32::new(50) {
    Some(n) => n,
    None => std::num::NonZeroU32::MIN,
};

impl Compiler<'_> {
    pub(super) fn server(&mut self, raw: RawServer) -> Server {
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
                    e.to_string(),
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
            sse_end_event: raw.sse_end_event.unwrap_or(true),
            threads: threads.max(1),
            work_stealing: raw.work_stealing.unwrap_or(false),
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

    pub(super) fn admin(&mut self, raw: RawAdmin) -> Admin {
        let text = raw.listen.unwrap_or_else(|| "127.0.0.1:9901".into());
        let listen = parse_listen(&text).unwrap_or_else(|e| {
            self.issues
                .add("admin.listen", e.to_string(), "e.g. 127.0.0.1:9901");
            SocketAddr::from(([127, 0, 0, 1], 9901))
        });
        if !listen.ip().is_loopback() {
            self.warnings.push(format!(
                "admin.listen {listen} is not loopback: protect it with a firewall"
            ));
        }
        let tokens = self.admin_tokens(raw.tokens.unwrap_or_default());
        let console = raw.console.map(|c| self.console(c));
        Admin {
            listen,
            tokens,
            console,
        }
    }

    /// The console admits by role: an empty list would admit nobody, which is never meant.
    fn console(&mut self, raw: RawConsole) -> Console {
        let roles: Vec<String> = raw
            .roles
            .into_iter()
            .map(|r| r.trim().to_string())
            .filter(|r| !r.is_empty())
            .collect();
        if roles.is_empty() {
            self.issues.add(
                "admin.console.roles",
                "is empty: nobody could open the console",
                "name the role(s) of the security team, e.g. roles: [security-admin]",
            );
        }
        Console {
            roles,
            require_mfa: raw.require_mfa.unwrap_or(true),
        }
    }

    /// Tokens come from `env:`/`file:` like every secret, are long enough to resist guessing,
    /// and have distinct names (the audit trail tells them apart by name).
    fn admin_tokens(&mut self, raw: Vec<RawAdminToken>) -> Vec<AdminToken> {
        let mut tokens: Vec<AdminToken> = Vec::new();
        for (i, entry) in raw.into_iter().enumerate() {
            let base = format!("admin.tokens[{i}]");
            if entry.name.is_empty() || tokens.iter().any(|t| t.name == entry.name) {
                self.issues.add(
                    &format!("{base}.name"),
                    format!("`{}` is empty or used twice", entry.name),
                    "give every token its own name (it is what the audit trail records)",
                );
            }
            let mut scopes = Vec::new();
            for (j, scope) in entry.scopes.iter().enumerate() {
                match scope.parse::<AdminScope>() {
                    Ok(scope) if !scopes.contains(&scope) => scopes.push(scope),
                    Ok(_) => {}
                    Err(_) => self.issues.add(
                        &format!("{base}.scopes[{j}]"),
                        format!("unknown scope `{scope}`"),
                        "use read, revoke, disable, reload",
                    ),
                }
            }
            if entry.scopes.is_empty() {
                self.issues.add(
                    &format!("{base}.scopes"),
                    "is empty: the token could do nothing",
                    "e.g. scopes: [read]",
                );
            }
            let Some(token) = self.secret(&format!("{base}.token"), &entry.token) else {
                continue;
            };
            if token.expose().trim().len() < 32 {
                self.issues.add(
                    &format!("{base}.token"),
                    "is shorter than 32 characters",
                    "make one with `openssl rand -hex 32`",
                );
                continue;
            }
            tokens.push(AdminToken {
                name: entry.name,
                token,
                scopes,
            });
        }
        tokens
    }
}

fn placeholder_url() -> Url {
    // Only used while collecting errors; a config with an invalid URL is never returned.
    Url::parse("https://invalid.invalid/").unwrap_or_else(|_| unreachable!("static URL parses"))
}
