//! Raw structs → typed [`Config`], collecting every problem with its path, line and hint.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use serde::de::DeserializeOwned;
use serde_yaml_ng::Value;

use super::raw::*;
use super::report::{ConfigIssue, ConfigReport, Issues, LineIndex};
use super::values::{parse_duration, parse_listen, Secret};
use super::*;

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

mod access;
mod apps;
mod audit;
mod providers;
mod saml;
mod server;
mod session;
#[cfg(test)]
mod tests;
