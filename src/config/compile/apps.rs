//! Compiling `apps:`: ids, hosts and path prefixes (each route owned by one app), upstream URL,
//! TLS and timeouts, public paths, and the per-app policy (compiled in `access.rs`).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use url::Url;

use super::Compiler;
use crate::config::raw::*;
use crate::config::*;
use crate::route::{HostPattern, PathGlob};

/// Chat UIs hold WebSockets open for minutes without a frame.
const DEFAULT_WEBSOCKET_IDLE: Duration = Duration::from_secs(15 * 60);

impl Compiler<'_> {
    pub(super) fn apps(
        &mut self,
        raw: Option<Vec<RawApp>>,
        providers: &HashSet<String>,
    ) -> Vec<Arc<App>> {
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
            // An app that could not be read routes what is left of it (a path_prefix of the
            // wrong type reads as `/`): its routes would only make conflicts up.
            let routes = if self.issues.is_unreadable(&base) {
                &[][..]
            } else {
                &app.hosts[..]
            };
            for host in routes {
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
                        Err(e) => self
                            .issues
                            .add(&format!("{base}.hosts[{j}]"), e.to_string(), ""),
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
                    e.to_string(),
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
        let accept = self.accept(base, raw.accept.as_deref());
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
            accept,
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
}
