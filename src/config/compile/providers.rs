//! Compiling `identity_providers:`: each provider's id and kind, keys that belong to another
//! kind, OIDC settings and local users (SAML is in `saml.rs`, claim mappings in `access.rs`).

use std::collections::HashSet;

use url::Url;

use super::Compiler;

const KINDS_HINT: &str = "use oidc, saml, local, jwt or oauth2-introspection";
use crate::config::raw::*;
use crate::config::values::{decode_base32, is_argon2id_hash};
use crate::config::*;

impl Compiler<'_> {
    pub(super) fn identity_providers(
        &mut self,
        raw: Vec<RawIdentityProvider>,
        server: &Server,
    ) -> Vec<IdentityProvider> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for (i, idp) in raw.into_iter().enumerate() {
            let base = format!("identity_providers[{i}]");
            let id = self.identifier(&format!("{base}.id"), idp.id.as_ref(), &mut seen);
            if id.as_deref() == Some(SERVICE_ACCOUNTS_IDP) {
                // Service accounts' identities name it as their provider.
                self.issues.add(
                    &format!("{base}.id"),
                    format!("`{SERVICE_ACCOUNTS_IDP}` is reserved for service accounts"),
                    "choose another id",
                );
            }
            self.foreign_provider_keys(&base, &idp);
            let kind = match idp.kind.as_deref() {
                Some("oidc") => self.oidc(&base, &idp),
                Some("saml") => self.saml(&base, &idp, &server.public_url, &server.reserved_prefix),
                Some("local") => self.local_users(&base, idp.users.as_deref().unwrap_or_default()),
                Some("jwt") => self.jwt_issuer(&base, &idp),
                Some("oauth2-introspection") => self.introspection(&base, &idp),
                Some(other) => {
                    self.issues.add(
                        &format!("{base}.kind"),
                        format!("unknown kind `{other}`"),
                        KINDS_HINT,
                    );
                    None
                }
                None => {
                    self.issues
                        .add(&format!("{base}.kind"), "is required", KINDS_HINT);
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
            let user_type = self.user_type(&path, user.user_type.as_deref());
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
        const OIDC: &[&str] = &["oidc"];
        const SAML: &[&str] = &["saml"];
        const CLIENT: &[&str] = &["oidc", "oauth2-introspection"];
        const TOKENS: &[&str] = &["jwt", "oauth2-introspection"];
        let present: [(&str, &[&str], bool); 34] = [
            (
                "issuer",
                &["oidc", "jwt", "oauth2-introspection"],
                idp.issuer.is_some(),
            ),
            ("client_id", CLIENT, idp.client_id.is_some()),
            ("client_secret", CLIENT, idp.client_secret.is_some()),
            ("scopes", OIDC, idp.scopes.is_some()),
            ("acr_values", OIDC, idp.acr_values.is_some()),
            (
                "token_endpoint_auth",
                CLIENT,
                idp.token_endpoint_auth.is_some(),
            ),
            ("prompt", OIDC, idp.prompt.is_some()),
            ("userinfo", OIDC, idp.userinfo.is_some()),
            ("mfa_acr_values", OIDC, idp.mfa_acr_values.is_some()),
            ("bearer", OIDC, idp.bearer.is_some()),
            ("idp_metadata", SAML, idp.idp_metadata.is_some()),
            ("idp_entity_id", SAML, idp.idp_entity_id.is_some()),
            ("idp_sso_url", SAML, idp.idp_sso_url.is_some()),
            ("idp_slo_url", SAML, idp.idp_slo_url.is_some()),
            ("idp_certificates", SAML, idp.idp_certificates.is_some()),
            ("sp_entity_id", SAML, idp.sp_entity_id.is_some()),
            ("sp_signing_key", SAML, idp.sp_signing_key.is_some()),
            ("sp_certificate", SAML, idp.sp_certificate.is_some()),
            ("name_id_format", SAML, idp.name_id_format.is_some()),
            ("allow_unsolicited", SAML, idp.allow_unsolicited.is_some()),
            (
                "clock_skew",
                &["saml", "jwt", "oauth2-introspection"],
                idp.clock_skew.is_some(),
            ),
            ("max_response_age", SAML, idp.max_response_age.is_some()),
            ("mfa_authn_contexts", SAML, idp.mfa_authn_contexts.is_some()),
            (
                "insecure_allow_sha1",
                SAML,
                idp.insecure_allow_sha1.is_some(),
            ),
            ("metadata_refresh", SAML, idp.metadata_refresh.is_some()),
            ("users", &["local"], idp.users.is_some()),
            ("jwks_uri", &["jwt"], idp.jwks_uri.is_some()),
            ("audiences", TOKENS, idp.audiences.is_some()),
            ("algorithms", &["jwt"], idp.algorithms.is_some()),
            ("required_scopes", TOKENS, idp.required_scopes.is_some()),
            (
                "introspection_endpoint",
                &["oauth2-introspection"],
                idp.introspection_endpoint.is_some(),
            ),
            (
                "cache_ttl",
                &["oauth2-introspection"],
                idp.cache_ttl.is_some(),
            ),
            ("timeout", &["oauth2-introspection"], idp.timeout.is_some()),
            (
                "display_name",
                &["oidc", "saml", "local"],
                idp.display_name.is_some(),
            ),
        ];
        let Some(kind) = idp.kind.as_deref() else {
            return;
        };
        if !matches!(
            kind,
            "oidc" | "saml" | "local" | "jwt" | "oauth2-introspection"
        ) {
            return;
        }
        if kind == "local" && idp.claims.is_some() {
            self.issues.add(
                &format!("{base}.claims"),
                "local users have no claims to map",
                "set email, name, user_type, roles and entity on each user instead",
            );
        }
        for (key, owners, set) in present {
            if set && !owners.contains(&kind) {
                self.issues.add(
                    &format!("{base}.{key}"),
                    format!(
                        "`{key}` belongs to {} providers and does nothing for kind: {kind}",
                        owners.join(" and ")
                    ),
                    "remove it, or fix `kind`",
                );
            }
        }
    }

    fn oidc(&mut self, base: &str, idp: &RawIdentityProvider) -> Option<IdentityProviderKind> {
        let issuer = self.issuer(base, idp.issuer.as_ref(), Some("the OP's issuer URL"))?;
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
        let secret_in_body = self.token_endpoint_auth(base, idp);
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
            bearer: idp
                .bearer
                .as_ref()
                .and_then(|b| self.oidc_bearer(&format!("{base}.bearer"), b)),
        })
    }

    /// An issuer URL, kept exactly as written: tokens must carry this string in `iss`, and URL
    /// parsing would add a trailing slash to a bare origin. `required`: the hint when absent
    /// (`None`: optional).
    pub(super) fn issuer(
        &mut self,
        base: &str,
        text: Option<&String>,
        required: Option<&str>,
    ) -> Option<String> {
        let at = format!("{base}.issuer");
        let text = match required {
            Some(hint) => self.required(&at, text, hint)?,
            None => text?,
        };
        match Url::parse(text) {
            Ok(u) if matches!(u.scheme(), "https" | "http") => Some(text.clone()),
            _ => {
                self.issues.add(
                    &at,
                    format!("`{text}` is not a URL"),
                    "e.g. https://login.example.com",
                );
                None
            }
        }
    }

    /// `user_type` of a local user or a service account (default external).
    pub(super) fn user_type(&mut self, base: &str, text: Option<&str>) -> UserType {
        match text {
            None | Some("external-user") => UserType::External,
            Some("internal-user") => UserType::Internal,
            Some(other) => {
                self.issues.add(
                    &format!("{base}.user_type"),
                    format!("unknown user type `{other}`"),
                    "use internal-user or external-user",
                );
                UserType::External
            }
        }
    }

    /// `token_endpoint_auth`: true for `client_secret_post`.
    pub(super) fn token_endpoint_auth(&mut self, base: &str, idp: &RawIdentityProvider) -> bool {
        match idp.token_endpoint_auth.as_deref() {
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
        }
    }
}
