//! What `portcullis check` prints for a valid file: what Portcullis understood, so an
//! operator can compare it with what they meant.

use std::fmt::Write;

use super::{Config, IdentityProviderKind, UserType};
use crate::route::HostPattern;

impl Config {
    /// A short, secret-free description of the loaded configuration.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "public URL: {}", self.server.public_url);
        if let Some(https) = &self.server.https {
            let listen: Vec<String> = https.listen.iter().map(ToString::to_string).collect();
            let _ = writeln!(
                out,
                "https: {} ({} certificate(s))",
                listen.join(", "),
                https.certificates.len()
            );
        }
        if let Some(http) = &self.server.http {
            let listen: Vec<String> = http.listen.iter().map(ToString::to_string).collect();
            let _ = writeln!(
                out,
                "http: {} (redirects to https unless an app allows plain HTTP)",
                listen.join(", ")
            );
        }
        let fingerprints: Vec<String> = self
            .session
            .encryption_keys
            .iter()
            .map(|k| k.fingerprint())
            .collect();
        let _ = writeln!(
            out,
            "session: key(s) {} (first encrypts), cookie {}",
            fingerprints.join(", "),
            self.session.cookie_name
        );
        for idp in &self.identity_providers {
            let kind = match &idp.kind {
                IdentityProviderKind::Oidc {
                    issuer,
                    client_id,
                    client_secret,
                    bearer,
                    ..
                } => format!(
                    "oidc issuer {issuer} client {client_id}{}{}",
                    if client_secret.is_some() {
                        " (with secret)"
                    } else {
                        ""
                    },
                    bearer.as_ref().map_or(String::new(), |b| format!(
                        "; bearer JWTs for {}",
                        b.audiences.join(", ")
                    ))
                ),
                IdentityProviderKind::Saml(saml) => match (&saml.metadata_url, &saml.idp_entity_id)
                {
                    (Some(url), _) => format!("saml metadata {url}"),
                    (None, Some(entity_id)) => format!("saml idp {entity_id}"),
                    (None, None) => "saml metadata file".to_string(),
                },
                IdentityProviderKind::Local { users } => format!("{} local user(s)", users.len()),
                IdentityProviderKind::Jwt(jwt) => format!(
                    "bearer JWTs from {} for {}",
                    jwt.issuer,
                    jwt.rules.audiences.join(", ")
                ),
                IdentityProviderKind::Introspection(settings) => {
                    format!("bearer tokens introspected at {}", settings.endpoint)
                }
            };
            let _ = writeln!(out, "identity provider {}: {kind}", idp.id);
        }
        for app in &self.apps {
            let hosts: Vec<String> = app
                .hosts
                .iter()
                .map(|h| match h {
                    HostPattern::Exact(name) => name.clone(),
                    HostPattern::Wildcard(suffix) => format!("*{suffix}"),
                })
                .collect();
            let user_types: Vec<&str> = app
                .access
                .user_types
                .iter()
                .flatten()
                .map(|t| match t {
                    UserType::Internal => "internal-user",
                    UserType::External => "external-user",
                })
                .collect();
            let accepted: Vec<&str> = [
                (app.accept.session, "session"),
                (app.accept.bearer, "bearer"),
                (app.accept.api_key, "api-key"),
            ]
            .into_iter()
            .filter_map(|(on, name)| on.then_some(name))
            .collect();
            let _ = writeln!(
                out,
                "app {}{}: {}{} -> {} (accepts {}; user types: {}; {} rule(s); {} public path(s))",
                app.id,
                if app.enabled { "" } else { " [disabled]" },
                hosts.join(", "),
                if app.path_prefix == "/" {
                    String::new()
                } else {
                    app.path_prefix.clone()
                },
                app.upstream.url,
                accepted.join(", "),
                if user_types.is_empty() {
                    "none".to_string()
                } else {
                    user_types.join(", ")
                },
                app.rules.len(),
                app.public_paths.len(),
            );
        }
        for account in &self.service_accounts {
            let _ = writeln!(
                out,
                "service account {}: {} key(s){}",
                account.id,
                account.key_hashes.len(),
                match account.expires {
                    Some(end) => format!(
                        ", expires {}",
                        chrono::DateTime::from_timestamp(i64::try_from(end).unwrap_or(i64::MAX), 0)
                            .map_or_else(|| end.to_string(), |t| t.to_rfc3339())
                    ),
                    None => String::new(),
                }
            );
        }
        let _ = writeln!(
            out,
            "audit: {}{}",
            self.audit.path.display(),
            audit_extras(&self.audit)
        );
        let _ = write!(out, "admin: {}", self.admin.listen);
        if let Some(console) = &self.admin.console {
            let _ = write!(
                out,
                "\nconsole: {}admin/ for role(s) {}{}",
                self.server.reserved_prefix,
                console.roles.join(", "),
                if console.require_mfa {
                    ", MFA required"
                } else {
                    ", MFA not required"
                }
            );
        }
        out
    }
}

/// `90d`, `12h`, or humantime's form for anything else (as the config would say it).
fn days_or_hours(duration: std::time::Duration) -> String {
    match duration.as_secs() {
        secs if secs > 0 && secs % 86_400 == 0 => format!("{}d", secs / 86_400),
        secs if secs > 0 && secs % 3_600 == 0 => format!("{}h", secs / 3_600),
        _ => humantime::format_duration(duration).to_string(),
    }
}

/// What `check` says about rotation, retention, personal data and sinks (no secret).
fn audit_extras(audit: &super::Audit) -> String {
    let mut parts = Vec::new();
    let rotate = &audit.rotate;
    if rotate.max_size.is_some() || rotate.max_age.is_some() {
        let mut bounds = Vec::new();
        if let Some(size) = rotate.max_size {
            bounds.push(format!("{size} bytes"));
        }
        if let Some(age) = rotate.max_age {
            bounds.push(days_or_hours(age));
        }
        parts.push(format!("rotated at {}", bounds.join(" or ")));
    }
    if let Some(retention) = &audit.retention {
        let mut kept = Vec::new();
        if retention.compress {
            kept.push("compressed".to_string());
        }
        if let Some(keep) = retention.keep {
            kept.push(format!("kept {}", days_or_hours(keep)));
        }
        parts.push(format!("rotated files {}", kept.join(", ")));
    }
    if audit.personal_keys.is_some() {
        parts.push("personal data pseudonymised".into());
    }
    for sink in &audit.sinks {
        let target = match &sink.target {
            super::SinkTarget::Syslog {
                transport, address, ..
            } => format!("syslog {transport:?} {address}").to_lowercase(),
            super::SinkTarget::Http { url, .. } => {
                // The URL without its query (which may hold a token).
                format!("http {}", url.split('?').next().unwrap_or_default())
            }
        };
        parts.push(format!("sink {}: {target}", sink.id));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join("; "))
    }
}
