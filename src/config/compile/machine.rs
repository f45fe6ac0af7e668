//! Compiling machine clients: `kind: jwt` and `kind: oauth2-introspection` providers, an
//! OIDC provider's `bearer`, `service_accounts`, and `apps[].accept`.

use std::collections::HashSet;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use url::Url;

use super::Compiler;
use crate::config::raw::*;
use crate::config::*;

const ALGORITHMS_HINT: &str = "asymmetric only: RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384 or EdDSA (never none or HS*)";

impl Compiler<'_> {
    pub(super) fn jwt_issuer(
        &mut self,
        base: &str,
        idp: &RawIdentityProvider,
    ) -> Option<IdentityProviderKind> {
        let issuer = self.issuer(
            base,
            idp.issuer.as_ref(),
            Some("exactly the `iss` of the tokens, e.g. https://auth.example.com"),
        );
        let jwks_uri = idp
            .jwks_uri
            .as_ref()
            .and_then(|u| self.http_url(&format!("{base}.jwks_uri"), u));
        let rules = self.bearer_rules(
            base,
            idp.audiences.as_deref(),
            idp.algorithms.as_deref(),
            idp.required_scopes.as_deref(),
            idp.clock_skew.as_ref(),
            true,
        );
        Some(IdentityProviderKind::Jwt(Box::new(JwtIssuerSettings {
            issuer: issuer?,
            jwks_uri,
            rules,
        })))
    }

    pub(super) fn introspection(
        &mut self,
        base: &str,
        idp: &RawIdentityProvider,
    ) -> Option<IdentityProviderKind> {
        let endpoint = self
            .required(
                &format!("{base}.introspection_endpoint"),
                idp.introspection_endpoint.as_ref(),
                "the RFC 7662 endpoint, e.g. https://auth.example.com/oauth2/introspect",
            )
            .cloned()
            .and_then(|u| self.http_url(&format!("{base}.introspection_endpoint"), &u));
        let issuer = self.issuer(base, idp.issuer.as_ref(), None);
        let client_id = self
            .required(
                &format!("{base}.client_id"),
                idp.client_id.as_ref(),
                "the client id Portcullis authenticates with at the endpoint",
            )
            .cloned();
        let client_secret = self
            .required(
                &format!("{base}.client_secret"),
                idp.client_secret.as_ref(),
                "env:NAME or file:/path (the endpoint requires client authentication)",
            )
            .cloned()
            .and_then(|s| self.secret(&format!("{base}.client_secret"), &s));
        let secret_in_body = self.token_endpoint_auth(base, idp);
        let rules = self.bearer_rules(
            base,
            idp.audiences.as_deref(),
            None,
            idp.required_scopes.as_deref(),
            idp.clock_skew.as_ref(),
            false,
        );
        let cache_ttl = self.duration(
            &format!("{base}.cache_ttl"),
            idp.cache_ttl.as_ref(),
            Duration::from_secs(60),
        );
        let timeout = self.duration(
            &format!("{base}.timeout"),
            idp.timeout.as_ref(),
            Duration::from_secs(3),
        );
        if timeout.is_zero() {
            self.issues.add(
                &format!("{base}.timeout"),
                "must be longer than 0s",
                "e.g. 3s",
            );
        }
        Some(IdentityProviderKind::Introspection(Box::new(
            IntrospectionSettings {
                endpoint: endpoint?,
                client_id: client_id?,
                client_secret: client_secret?,
                secret_in_body,
                issuer,
                rules,
                cache_ttl,
                timeout,
            },
        )))
    }

    /// `bearer:` under an OIDC provider.
    pub(super) fn oidc_bearer(&mut self, at: &str, raw: &RawBearer) -> Option<Box<BearerRules>> {
        Some(Box::new(self.bearer_rules(
            at,
            raw.audiences.as_deref(),
            raw.algorithms.as_deref(),
            raw.required_scopes.as_deref(),
            raw.clock_skew.as_ref(),
            true,
        )))
    }

    fn http_url(&mut self, at: &str, text: &str) -> Option<Url> {
        match Url::parse(text) {
            Ok(u) if matches!(u.scheme(), "https" | "http") => Some(u),
            _ => {
                self.issues.add(
                    at,
                    format!("`{text}` is not an http(s) URL"),
                    "e.g. https://auth.example.com/keys",
                );
                None
            }
        }
    }

    fn bearer_rules(
        &mut self,
        base: &str,
        audiences: Option<&[String]>,
        algorithms: Option<&[String]>,
        required_scopes: Option<&[String]>,
        clock_skew: Option<&String>,
        audience_required: bool,
    ) -> BearerRules {
        let audiences: Vec<String> = audiences
            .unwrap_or_default()
            .iter()
            .filter(|a| !a.is_empty())
            .cloned()
            .collect();
        if audience_required && audiences.is_empty() {
            self.issues.add(
                &format!("{base}.audiences"),
                "at least one audience is required",
                "the `aud` your API's tokens carry, e.g. [chat-api] (without it any token the issuer makes for any API would do)",
            );
        }
        let algorithms = match algorithms {
            None => DEFAULT_ALGORITHMS.to_vec(),
            Some(names) => {
                let mut out = Vec::new();
                for (i, name) in names.iter().enumerate() {
                    match asymmetric_algorithm(name) {
                        Some(alg) => out.push(alg),
                        None => self.issues.add(
                            &format!("{base}.algorithms[{i}]"),
                            format!("`{name}` is not accepted"),
                            ALGORITHMS_HINT,
                        ),
                    }
                }
                if names.is_empty() {
                    self.issues.add(
                        &format!("{base}.algorithms"),
                        "an empty list accepts nothing",
                        "remove it for the default (RS256 PS256 ES256 EdDSA)",
                    );
                }
                out
            }
        };
        let required_scopes = required_scopes.unwrap_or_default().to_vec();
        for (i, scope) in required_scopes.iter().enumerate() {
            if scope.is_empty() || scope.contains(' ') {
                self.issues.add(
                    &format!("{base}.required_scopes[{i}]"),
                    "a scope is one word",
                    "list each scope on its own",
                );
            }
        }
        let clock_skew = self.duration(
            &format!("{base}.clock_skew"),
            clock_skew,
            Duration::from_secs(60),
        );
        BearerRules {
            audiences,
            algorithms,
            required_scopes,
            clock_skew,
        }
    }

    pub(super) fn service_accounts(
        &mut self,
        raw: Vec<RawServiceAccount>,
        provider_ids: &HashSet<String>,
    ) -> Vec<ServiceAccount> {
        let mut seen = HashSet::new();
        let mut all_hashes = HashSet::new();
        let mut out = Vec::new();
        for (i, account) in raw.into_iter().enumerate() {
            let base = format!("service_accounts[{i}]");
            let id = self.identifier(&format!("{base}.id"), account.id.as_ref(), &mut seen);
            let mut key_hashes = Vec::new();
            match account.key_hashes.as_deref() {
                None | Some([]) => self.issues.add(
                    &format!("{base}.key_hashes"),
                    "at least one key hash is required",
                    "run `portcullis keys api-key` and paste its key_hash",
                ),
                Some(list) => {
                    for (j, text) in list.iter().enumerate() {
                        match crate::apikey::decode_hash(text) {
                            Some(digest) if all_hashes.insert(digest) => key_hashes.push(digest),
                            Some(_) => self.issues.add(
                                &format!("{base}.key_hashes[{j}]"),
                                "this key hash is listed twice",
                                "each key belongs to one account; make a new key",
                            ),
                            None => self.issues.add(
                                &format!("{base}.key_hashes[{j}]"),
                                "not a Portcullis key hash",
                                "paste the key_hash printed by `portcullis keys api-key` (pck-v1:…), never the key itself",
                            ),
                        }
                    }
                }
            }
            let user_type = self.user_type(&base, account.user_type.as_deref());
            let expires = account
                .expires
                .as_deref()
                .and_then(|text| self.expiry(&format!("{base}.expires"), text));
            let ip_allowlist =
                self.ip_allowlist(&format!("{base}.ip_allowlist"), account.ip_allowlist);
            if let Some(id) = &id {
                if provider_ids.contains(id) {
                    // Not an error: ids live apart (`idp` tells them apart), but worth knowing.
                    self.warnings.push(format!(
                        "{base}.id: `{id}` is also an identity provider's id"
                    ));
                }
            }
            if let Some(id) = id {
                out.push(ServiceAccount {
                    id,
                    key_hashes,
                    name: account.name,
                    email: account.email,
                    roles: account.roles.unwrap_or_default(),
                    entity: account.entity,
                    user_type,
                    scopes: account.scopes.unwrap_or_default(),
                    ip_allowlist,
                    expires,
                });
            }
        }
        out
    }

    /// `expires`: a date (the key works through that day, UTC) or an RFC 3339 time.
    fn expiry(&mut self, at: &str, text: &str) -> Option<u64> {
        let parsed = chrono::DateTime::parse_from_rfc3339(text)
            .map(|t| t.timestamp())
            .ok()
            .or_else(|| {
                chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
                    .ok()
                    .and_then(|d| d.succ_opt())
                    .and_then(|d| d.and_hms_opt(0, 0, 0))
                    .map(|t| t.and_utc().timestamp())
            });
        match parsed.and_then(|t| u64::try_from(t).ok()) {
            Some(t) => Some(t),
            None => {
                self.issues.add(
                    at,
                    format!("`{text}` is not a date"),
                    "write 2027-06-30 (valid through that day, UTC) or 2027-06-30T12:00:00Z",
                );
                None
            }
        }
    }

    /// `apps[].accept`.
    pub(super) fn accept(&mut self, base: &str, raw: Option<&[String]>) -> Accept {
        let Some(list) = raw else {
            return Accept::default();
        };
        let mut accept = Accept {
            session: false,
            bearer: false,
            api_key: false,
        };
        for (i, name) in list.iter().enumerate() {
            match name.as_str() {
                "session" => accept.session = true,
                "bearer" => accept.bearer = true,
                "api-key" => accept.api_key = true,
                other => self.issues.add(
                    &format!("{base}.accept[{i}]"),
                    format!("unknown credential `{other}`"),
                    "use session, bearer or api-key",
                ),
            }
        }
        if list.is_empty() {
            self.issues.add(
                &format!("{base}.accept"),
                "an app that accepts nothing can never be used",
                "remove it for [session], or list session, bearer and/or api-key",
            );
        }
        accept
    }
}

/// An asymmetric JWS algorithm by its JOSE name.
fn asymmetric_algorithm(name: &str) -> Option<Algorithm> {
    let alg = match name {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        _ => return None,
    };
    Some(alg)
}
