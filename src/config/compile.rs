//! Raw structs → typed [`Config`], collecting every problem with its path, line and hint.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
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
    let Some(raw) = split_sections(value, &mut issues) else {
        // Not a mapping of sections: anything more would be about sections it never had.
        return Err(issues.into_report(file));
    };
    // Absolute, so `--daemon` (which changes directory to /) finds the same files.
    let absolute = std::path::absolute(file).unwrap_or_else(|_| file.to_path_buf());
    let base_dir = absolute.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut compiler = Compiler {
        issues,
        warnings: Vec::new(),
        base_dir,
        providers_unknown: false,
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
/// not hide problems elsewhere; `None` when the document is not a mapping of sections.
fn split_sections(value: Value, issues: &mut Issues<'_>) -> Option<RawConfig> {
    let mut raw = RawConfig::default();
    let map = match value {
        Value::Mapping(map) => map,
        Value::Null => return Some(raw),
        _ => {
            issues.add(
                "(top)",
                "the file must be a mapping of sections",
                "start with `server:`",
            );
            return None;
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
            "service_accounts" => raw.service_accounts = list(name, value, issues),
            "store" => raw.store = section("store", value, issues),
            other => issues.add(
                other,
                format!("unknown section `{other}`"),
                format!("top-level sections are: {}", SECTIONS.join(", ")),
            ),
        }
    }
    Some(raw)
}

/// Reads one section or list item. When it does not read, every unknown key and every value
/// of the wrong type in it is reported, the section is marked unreadable (so its values are not
/// checked, and checks elsewhere that depend on it hold back), and what does read is returned
/// for the other sections to see.
fn section<T: DeserializeOwned + Default>(
    path: &str,
    value: Value,
    issues: &mut Issues<'_>,
) -> Option<T> {
    if value.is_null() {
        return Some(T::default());
    }
    if let Ok(v) = T::deserialize(value.clone()) {
        return Some(v);
    }
    let (found, kept) = shape::unreadable_pieces::<T>(path, value);
    for issue in found {
        issues.push_unreadable(path, issue);
    }
    Some(
        kept.and_then(|v| T::deserialize(v).ok())
            .unwrap_or_default(),
    )
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
            issues.push_unreadable(
                path,
                ConfigIssue {
                    path: path.into(),
                    line: None,
                    message: "must be a list".into(),
                    hint: Some(format!("write `{path}:` followed by `- ...` items")),
                },
            );
            None
        }
    }
}

struct Compiler<'a> {
    issues: Issues<'a>,
    warnings: Vec<String>,
    base_dir: PathBuf,
    /// Some identity provider could not be read far enough to know its id: references to
    /// providers are not checked.
    providers_unknown: bool,
}

impl Compiler<'_> {
    fn config(&mut self, file: &Path, raw: RawConfig) -> Config {
        let server = self.server(raw.server.unwrap_or_default());
        let mut session = self.session(raw.session);
        if session.deployment_id.is_empty() {
            session.deployment_id = server.public_url.origin().ascii_serialization();
        }
        let raw_providers = raw.identity_providers.unwrap_or_default();
        // References are to providers as written: one with a mistake of its own still exists.
        // Service accounts' identities name the reserved pseudo-provider, so rules may too.
        let provider_ids: HashSet<String> = raw_providers
            .iter()
            .filter_map(|p| p.id.clone())
            .chain(
                raw.service_accounts
                    .as_ref()
                    .filter(|a| !a.is_empty())
                    .map(|_| SERVICE_ACCOUNTS_IDP.to_string()),
            )
            .collect();
        self.providers_unknown = self.issues.is_unreadable("identity_providers")
            || raw_providers.iter().enumerate().any(|(i, p)| {
                p.id.is_none()
                    && self
                        .issues
                        .is_unreadable(&format!("identity_providers[{i}]"))
            });
        let identity_providers = self.identity_providers(raw_providers, &server);
        let identity = self.identity_mapping(raw.identity, &provider_ids);
        let plain_http: Vec<bool> = raw
            .apps
            .iter()
            .flatten()
            .map(|app| app.allow_plain_http == Some(true))
            .collect();
        let apps = self.apps(raw.apps, &provider_ids);
        self.plain_http_consistency(&server, &plain_http);
        let audit = self.audit(raw.audit.unwrap_or_default());
        let admin = self.admin(raw.admin.unwrap_or_default());
        let store = self.store(raw.store.unwrap_or_default());
        let service_accounts =
            self.service_accounts(raw.service_accounts.unwrap_or_default(), &provider_ids);
        self.machine_consistency(&identity_providers, &service_accounts, &apps);
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
            store,
            service_accounts,
            warnings: std::mem::take(&mut self.warnings),
            lines: LineIndex::default(),
        }
    }

    /// An app that accepts a credential nobody can present would answer 401 to everyone.
    fn machine_consistency(
        &mut self,
        providers: &[IdentityProvider],
        accounts: &[ServiceAccount],
        apps: &[Arc<App>],
    ) {
        let bearer_issuers = providers.iter().any(|p| {
            matches!(
                p.kind,
                IdentityProviderKind::Jwt(_)
                    | IdentityProviderKind::Introspection(_)
                    | IdentityProviderKind::Oidc {
                        bearer: Some(_),
                        ..
                    }
            )
        });
        let mut issuers = std::collections::HashMap::new();
        for (i, p) in providers.iter().enumerate() {
            let issuer = match &p.kind {
                IdentityProviderKind::Jwt(jwt) => &jwt.issuer,
                IdentityProviderKind::Oidc {
                    issuer,
                    bearer: Some(_),
                    ..
                } => issuer,
                _ => continue,
            };
            if let Some(first) = issuers.insert(issuer.clone(), p.id.clone()) {
                // Tokens go to the verifier their `iss` names: the second would never see one.
                self.issues.add(
                    &format!("identity_providers[{i}].issuer"),
                    format!("provider `{first}` already checks bearer tokens of issuer {issuer}"),
                    "keep one of them (list several audiences in its `audiences` instead)",
                );
            }
        }
        if self.providers_unknown || self.issues.is_unreadable("service_accounts") {
            return;
        }
        for app in apps {
            let at = format!("apps[{}].accept", app.index);
            if app.accept.bearer && !bearer_issuers {
                self.issues.add(
                    &at,
                    "`bearer` is accepted but no identity provider checks bearer tokens",
                    "add a kind: jwt or kind: oauth2-introspection provider, or `bearer:` under an oidc provider",
                );
            }
            if app.accept.api_key && accounts.is_empty() {
                self.issues.add(
                    &at,
                    "`api-key` is accepted but there are no service_accounts",
                    "add service_accounts with key_hashes from `portcullis keys api-key`",
                );
            }
        }
    }

    /// Plain HTTP settings that could never take effect are errors, not surprises.
    /// `plain_http` is each app's `allow_plain_http` as written, in file order. An app that
    /// could not be read may allow plain HTTP, and a server that could not be read may have
    /// an HTTP listener: the checks that need them hold back.
    fn plain_http_consistency(&mut self, server: &Server, plain_http: &[bool]) {
        let any_plain = plain_http.contains(&true);
        // Unknown only when the list, an item as a whole, or an `allow_plain_http` itself did
        // not read; another key's mistake leaves the value as written.
        let plain_unknown = self.issues.is_unreadable("apps")
            || (0..plain_http.len()).any(|i| {
                self.issues.has_issue_at(&format!("apps[{i}]"))
                    || self
                        .issues
                        .has_issue_at(&format!("apps[{i}].allow_plain_http"))
            });
        if server.http.is_some() && server.https.is_none() && !any_plain && !plain_unknown {
            self.issues.add(
                "server.http",
                "every request here would be redirected to HTTPS, but no HTTPS listener is configured",
                "add server.https, or set allow_plain_http: true on the apps served over HTTP",
            );
        }
        if server.http.is_none() && !self.issues.has_unreadable("server") {
            for (i, _) in plain_http.iter().enumerate().filter(|(_, plain)| **plain) {
                self.issues.add(
                    &format!("apps[{i}].allow_plain_http"),
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
                    let hint = match t.trim().parse::<u64>() {
                        Ok(n) => format!("add a unit: {n}s"),
                        Err(_) => "write a duration like 30s, 5m, 12h or 250ms".into(),
                    };
                    self.issues.add(path, e.to_string(), hint);
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
                    e.to_string(),
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
                Err(e) => self.issues.add(&format!("{path}[{i}]"), e.to_string(), ""),
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

/// Text that is neither a CIDR nor an IP address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not a CIDR or IP address")]
pub struct CidrError {
    /// The text as written.
    pub text: String,
}

/// A CIDR, or a bare address meaning a single host.
pub fn parse_cidr(text: &str) -> Result<IpNet, CidrError> {
    if let Ok(net) = text.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    text.parse::<std::net::IpAddr>()
        .map(IpNet::from)
        .map_err(|_| CidrError {
            text: text.to_string(),
        })
}

mod access;
mod apps;
mod audit;
mod machine;
#[cfg(test)]
mod machine_tests;
mod providers;
mod saml;
mod server;
mod session;
mod shape;
mod store;
#[cfg(test)]
mod store_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod type_error_tests;
