//! Compiling claim mapping, identity mapping, access layers, path rules, entity scope,
//! identity headers and assertion settings.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use super::Compiler;
use crate::config::raw::*;
use crate::config::*;
use crate::route::PathGlob;

/// Longest assertion lifetime accepted (PRODUCT.md: `exp` ≤ 5 minutes).
const MAX_ASSERTION_TTL: Duration = Duration::from_secs(300);

impl Compiler<'_> {
    pub(super) fn claims(&mut self, base: &str, raw: Option<&RawClaims>) -> ClaimMapping {
        let mut mapping = ClaimMapping::default();
        let Some(raw) = raw else {
            return mapping;
        };
        let mut path = |key: &str, value: &Option<String>, slot: &mut ClaimPath| {
            if let Some(v) = value {
                if let Some(p) = self.claim_path(&format!("{base}.claims.{key}"), v) {
                    *slot = p;
                }
            }
        };
        path("user_id", &raw.user_id, &mut mapping.user_id);
        path("email", &raw.email, &mut mapping.email);
        path("name", &raw.name, &mut mapping.name);
        path("groups", &raw.groups, &mut mapping.groups);
        mapping.entity = raw
            .entity
            .as_ref()
            .and_then(|e| self.claim_path(&format!("{base}.claims.entity"), e));
        for (key, claim) in raw.custom.iter().flatten() {
            let at = format!("{base}.claims.custom.{key}");
            if !valid_custom_key(key) {
                self.issues.add(
                    &at,
                    format!("`{key}` is not a valid custom key"),
                    "letters, digits, '_' and '-', up to 64",
                );
                continue;
            }
            if let Some(p) = self.claim_path(&at, claim) {
                mapping.custom.push((key.clone(), p));
            }
        }
        mapping
    }

    fn claim_path(&mut self, at: &str, text: &str) -> Option<ClaimPath> {
        if text.is_empty() || text.starts_with('.') || text.ends_with('.') || text.contains("..") {
            self.issues.add(
                at,
                format!("`{text}` is not a claim name"),
                "a claim name, or a dotted path into nested claims such as address.country",
            );
            return None;
        }
        Some(ClaimPath(text.to_string()))
    }

    fn matcher(
        &mut self,
        at: &str,
        email_domain: Option<&String>,
        group: Option<&String>,
        provider: Option<&String>,
        claim: Option<&String>,
        equals: Option<&String>,
    ) -> Option<Matcher> {
        let mut matcher = Matcher {
            group: group.cloned(),
            provider: provider.cloned(),
            ..Matcher::default()
        };
        if let Some(domain) = email_domain {
            matcher.email_domain =
                Some(self.domain_pattern(&format!("{at}.email_domain"), domain)?);
        }
        match (claim, equals) {
            (Some(c), Some(v)) => {
                matcher.claim = Some((self.claim_path(&format!("{at}.claim"), c)?, v.clone()));
            }
            (Some(_), None) => {
                self.issues.add(
                    &format!("{at}.equals"),
                    "`claim` needs `equals`",
                    "e.g. claim: employee_type, equals: staff",
                );
                return None;
            }
            (None, Some(_)) => {
                self.issues.add(
                    &format!("{at}.claim"),
                    "`equals` needs `claim`",
                    "name the claim to compare",
                );
                return None;
            }
            (None, None) => {}
        }
        if matcher == Matcher::default() {
            self.issues.add(
                at,
                "a rule needs at least one condition",
                "use email_domain, group, provider or claim + equals",
            );
            return None;
        }
        Some(matcher)
    }

    fn known_provider(&mut self, at: &str, provider: Option<&String>, providers: &HashSet<String>) {
        let checked = !self.providers_unknown;
        if let Some(id) = provider.filter(|id| checked && !providers.contains(*id)) {
            self.issues.add(
                &format!("{at}.provider"),
                format!("no identity provider has id `{id}`"),
                "use an id from identity_providers",
            );
        }
    }

    fn domain_pattern(&mut self, at: &str, text: &str) -> Option<DomainPattern> {
        let lower = text.to_ascii_lowercase();
        let (subdomains, domain) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest.to_string()),
            None => (false, lower),
        };
        let valid = !domain.is_empty()
            && domain.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !valid {
            self.issues.add(
                at,
                format!("`{text}` is not an e-mail domain"),
                "e.g. corp.example.com, or *.corp.example.com for its subdomains",
            );
            return None;
        }
        Some(if subdomains {
            DomainPattern::Subdomains(format!(".{domain}"))
        } else {
            DomainPattern::Exact(domain)
        })
    }

    pub(super) fn identity_mapping(
        &mut self,
        raw: Option<RawIdentity>,
        providers: &HashSet<String>,
    ) -> IdentityMapping {
        let Some(raw) = raw else {
            return IdentityMapping::default();
        };
        let mut mapping = IdentityMapping::default();
        for (i, m) in raw.internal_users.iter().flatten().enumerate() {
            let at = format!("identity.internal_users[{i}]");
            self.known_provider(&at, m.provider.as_ref(), providers);
            if let Some(matcher) = self.matcher(
                &at,
                m.email_domain.as_ref(),
                m.group.as_ref(),
                m.provider.as_ref(),
                m.claim.as_ref(),
                m.equals.as_ref(),
            ) {
                mapping.internal_users.push(matcher);
            }
        }
        for (i, r) in raw.roles.iter().flatten().enumerate() {
            let at = format!("identity.roles[{i}]");
            let Some(role) = self.required(&format!("{at}.role"), r.role.as_ref(), "the role name")
            else {
                continue;
            };
            let role = role.clone();
            self.known_provider(&at, r.provider.as_ref(), providers);
            if let Some(when) = self.matcher(
                &at,
                r.email_domain.as_ref(),
                r.group.as_ref(),
                r.provider.as_ref(),
                r.claim.as_ref(),
                r.equals.as_ref(),
            ) {
                mapping.roles.push(RoleRule { role, when });
            }
        }
        if let Some(g) = raw.groups_as_roles {
            match g.prefix {
                Some(prefix) if !prefix.is_empty() => mapping.groups_as_roles = Some(prefix),
                _ => self.issues.add(
                    "identity.groups_as_roles.prefix",
                    "a non-empty prefix is required",
                    "e.g. prefix: chat- (passing every group through would flood headers)",
                ),
            }
        }
        if let Some(entity) = raw.entity {
            for (domain, id) in entity.email_domains.unwrap_or_default() {
                let at = format!("identity.entity.email_domains.{domain}");
                if let Some(DomainPattern::Exact(d)) = self.domain_pattern(&at, &domain) {
                    mapping.entity_by_email_domain.insert(d, id);
                } else if domain.starts_with("*.") {
                    self.issues.add(
                        &at,
                        "only exact domains map to entities",
                        "list each domain",
                    );
                }
            }
            mapping.entity_by_group = entity
                .groups
                .unwrap_or_default()
                .into_iter()
                .collect::<HashMap<_, _>>();
        }
        mapping
    }

    /// `access` of an app (`for_app`: a missing `user_types` admits nobody) or of a rule
    /// (missing = no restriction).
    pub(super) fn requirements(
        &mut self,
        at: &str,
        raw: Option<RawAccess>,
        for_app: bool,
        providers: &HashSet<String>,
    ) -> Requirements {
        let Some(raw) = raw else {
            return Requirements {
                user_types: for_app.then(Vec::new),
                ..Requirements::default()
            };
        };
        let user_types = match raw.user_types {
            None if for_app => Some(Vec::new()),
            None => None,
            Some(list) => {
                let mut types = Vec::new();
                for (j, t) in list.iter().enumerate() {
                    match t.as_str() {
                        "internal-user" => types.push(UserType::Internal),
                        "external-user" => types.push(UserType::External),
                        other => self.issues.add(
                            &format!("{at}.user_types[{j}]"),
                            format!("unknown user type `{other}`"),
                            "use internal-user or external-user",
                        ),
                    }
                }
                Some(types)
            }
        };
        let nonempty = |this: &mut Self, key: &str, list: Option<Vec<String>>| match list {
            Some(l) if l.is_empty() => {
                this.issues.add(
                    &format!("{at}.{key}"),
                    "an empty list would admit nobody",
                    format!("list at least one, or remove `{key}` for no restriction"),
                );
                Some(l)
            }
            other => other,
        };
        let entities = nonempty(self, "entities", raw.entities);
        let roles = nonempty(self, "roles", raw.roles);
        let users = nonempty(self, "users", raw.users);
        let identity_providers = nonempty(self, "identity_providers", raw.identity_providers);
        for (j, id) in identity_providers.iter().flatten().enumerate() {
            if !self.providers_unknown && !providers.contains(id) {
                self.issues.add(
                    &format!("{at}.identity_providers[{j}]"),
                    format!("no identity provider has id `{id}`"),
                    "use an id from identity_providers",
                );
            }
        }
        let override_ = raw.override_.unwrap_or_default();
        Requirements {
            user_types,
            entities,
            roles,
            users,
            override_users: override_.users.unwrap_or_default(),
            override_entities: override_.entities.unwrap_or_default(),
            require_mfa: raw.require_mfa.unwrap_or(false),
            identity_providers,
        }
    }

    pub(super) fn rules(
        &mut self,
        base: &str,
        raw: Option<Vec<RawRule>>,
        providers: &HashSet<String>,
    ) -> Vec<PathRule> {
        let mut rules = Vec::new();
        let mut names = HashSet::new();
        for (i, rule) in raw.unwrap_or_default().into_iter().enumerate() {
            let at = format!("{base}.rules[{i}]");
            let name = rule.name.clone().unwrap_or_else(|| format!("rules[{i}]"));
            if !names.insert(name.clone()) {
                self.issues.add(
                    &format!("{at}.name"),
                    format!("duplicate rule name `{name}`"),
                    "",
                );
            }
            let mut paths = Vec::new();
            match rule.paths.as_deref() {
                None | Some([]) => self.issues.add(
                    &format!("{at}.paths"),
                    "a rule needs at least one path glob",
                    "e.g. [/api/agents/billing/**]",
                ),
                Some(list) => {
                    for (j, p) in list.iter().enumerate() {
                        match PathGlob::parse(p) {
                            Ok(g) => paths.push(g),
                            Err(e) => self.issues.add(
                                &format!("{at}.paths[{j}]"),
                                e.to_string(),
                                "e.g. /api/tools/* or /admin/**",
                            ),
                        }
                    }
                }
            }
            let mut methods = Vec::new();
            for (j, m) in rule.methods.iter().flatten().enumerate() {
                let upper = m.to_ascii_uppercase();
                if http::Method::from_bytes(upper.as_bytes()).is_err() || upper.is_empty() {
                    self.issues.add(
                        &format!("{at}.methods[{j}]"),
                        format!("`{m}` is not an HTTP method"),
                        "e.g. GET, POST",
                    );
                } else {
                    methods.push(upper);
                }
            }
            let deny = rule.deny.unwrap_or(false);
            let rule_has_access = rule.access.is_some();
            if deny && rule.access.is_some() {
                self.issues.add(
                    &format!("{at}.access"),
                    "a `deny: true` rule refuses everyone; `access` would do nothing",
                    "remove one of them",
                );
            }
            if !deny
                && rule.access.is_none()
                && rule.ip_allowlist.is_none()
                && rule.rate_limits.is_none()
            {
                self.issues.add(
                    &at,
                    "a rule needs `access`, `ip_allowlist`, `rate_limits` or `deny: true`",
                    "a rule that changes nothing only hides later rules",
                );
            }
            if rule
                .access
                .as_ref()
                .is_some_and(|a| a.user_types.as_ref().is_some_and(Vec::is_empty))
            {
                self.issues.add(
                    &format!("{at}.access.user_types"),
                    "an empty list would admit nobody",
                    "write `deny: true` to refuse every matching request",
                );
            }
            let access = self.requirements(&format!("{at}.access"), rule.access, false, providers);
            let changes_nothing = access.user_types.is_none()
                && access.entities.is_none()
                && access.roles.is_none()
                && access.users.is_none()
                && access.identity_providers.is_none()
                && !access.require_mfa;
            if !deny && changes_nothing && rule_has_access {
                self.issues.add(
                    &format!("{at}.access"),
                    "these requirements add nothing to the app's",
                    "set user_types, entities, roles, users, identity_providers or require_mfa",
                );
            }
            let ip_allowlist = self.ip_allowlist(&format!("{at}.ip_allowlist"), rule.ip_allowlist);
            let rate_limits = self.rate_limits(&format!("{at}.rate_limits"), rule.rate_limits);
            rules.push(PathRule {
                name,
                paths,
                methods,
                deny,
                access,
                ip_allowlist,
                rate_limits,
            });
        }
        rules
    }

    pub(super) fn entity_scope(
        &mut self,
        base: &str,
        raw: Option<RawEntityScope>,
    ) -> Option<EntityScope> {
        let raw = raw?;
        let at = format!("{base}.entity_scope");
        let path = raw
            .path_pattern
            .as_ref()
            .and_then(|p| self.entity_pattern(&format!("{at}.path_pattern"), p));
        if raw.path_pattern.is_none() && raw.query_param.is_none() {
            self.issues.add(
                &at,
                "needs `path_pattern` or `query_param`",
                "e.g. path_pattern: /api/entities/{entity}/**",
            );
        }
        if raw.query_param.as_deref() == Some("") {
            self.issues
                .add(&format!("{at}.query_param"), "is empty", "e.g. entity");
        }
        Some(EntityScope {
            path,
            query_param: raw.query_param.filter(|q| !q.is_empty()),
            strict: raw.strict.unwrap_or(false),
        })
    }

    fn entity_pattern(&mut self, at: &str, text: &str) -> Option<EntityPathPattern> {
        let hint = "one `{entity}` segment, e.g. /api/entities/{entity}/**";
        let Some((before, after)) = text.split_once("/{entity}") else {
            self.issues
                .add(at, format!("`{text}` has no `/{{entity}}` segment"), hint);
            return None;
        };
        if !before.is_empty() && !before.starts_with('/') || after.contains("{entity}") {
            self.issues
                .add(at, format!("`{text}` is not a valid pattern"), hint);
            return None;
        }
        let before: Vec<String> = before.split('/').skip(1).map(str::to_string).collect();
        if before.iter().any(|s| s.is_empty() || s.contains('*')) {
            self.issues.add(
                at,
                format!("`{text}`: segments before {{entity}} must be literal"),
                hint,
            );
            return None;
        }
        let after_glob = if after.is_empty() { "/" } else { after };
        match PathGlob::parse(after_glob) {
            Ok(after) => Some(EntityPathPattern {
                before,
                after,
                source: text.to_string(),
            }),
            Err(e) => {
                self.issues.add(at, e.to_string(), hint);
                None
            }
        }
    }

    pub(super) fn identity_headers(
        &mut self,
        base: &str,
        raw: Option<RawIdentityHeaders>,
    ) -> IdentityHeaders {
        let Some(raw) = raw else {
            return IdentityHeaders::default();
        };
        let budget_bytes = raw.budget_bytes.unwrap_or(8192);
        if !(512..=65536).contains(&budget_bytes) {
            self.issues.add(
                &format!("{base}.identity_headers.budget_bytes"),
                format!("{budget_bytes} is out of range"),
                "between 512 and 65536 (most servers refuse headers over 8-16 KB)",
            );
        }
        IdentityHeaders {
            plain: raw.plain.unwrap_or(false),
            roles: raw.roles,
            custom: raw.custom,
            budget_bytes,
        }
    }

    pub(super) fn assertion(
        &mut self,
        raw: Option<RawAssertion>,
        issuer: String,
    ) -> AssertionSettings {
        let raw = raw.unwrap_or_default();
        let algorithm = match raw.algorithm.as_deref() {
            None | Some("ES256") => AssertionAlgorithm::Es256,
            Some("EdDSA") => AssertionAlgorithm::EdDsa,
            Some(other) => {
                self.issues.add(
                    "assertion.algorithm",
                    format!("unsupported algorithm `{other}`"),
                    "use ES256 (default) or EdDSA",
                );
                AssertionAlgorithm::Es256
            }
        };
        let signing_keys = raw
            .signing_keys
            .iter()
            .flatten()
            .enumerate()
            .filter_map(|(i, spec)| self.secret(&format!("assertion.signing_keys[{i}]"), spec))
            .collect();
        let ttl = self.duration("assertion.ttl", raw.ttl.as_ref(), MAX_ASSERTION_TTL);
        if ttl > MAX_ASSERTION_TTL || ttl < Duration::from_secs(30) {
            self.issues.add(
                "assertion.ttl",
                format!("{} is out of range", humantime::format_duration(ttl)),
                "between 30s and 5m: a leaked assertion must expire quickly",
            );
        }
        AssertionSettings {
            algorithm,
            signing_keys,
            ttl,
            issuer,
        }
    }
}

impl Compiler<'_> {
    /// `ip_allowlist: { mode, cidrs }`.
    pub(super) fn ip_allowlist(
        &mut self,
        at: &str,
        raw: Option<RawIpAllowlist>,
    ) -> Option<crate::config::IpAllowlist> {
        let raw = raw?;
        let mode = match raw.mode.as_deref() {
            None | Some("enforce") => crate::config::AllowlistMode::Enforce,
            Some("report") => crate::config::AllowlistMode::Report,
            Some(other) => {
                self.issues.add(
                    &format!("{at}.mode"),
                    format!("unknown mode `{other}`"),
                    "use enforce (default) or report",
                );
                crate::config::AllowlistMode::Enforce
            }
        };
        let mut nets = Vec::new();
        match raw.cidrs.as_deref() {
            None | Some([]) => self.issues.add(
                &format!("{at}.cidrs"),
                "an allowlist needs at least one network",
                "e.g. [10.0.0.0/8, 2001:db8::/32]; remove ip_allowlist to allow every address",
            ),
            Some(list) => {
                for (i, text) in list.iter().enumerate() {
                    match super::parse_cidr(text) {
                        Ok(net) => nets.push(net),
                        Err(e) => self.issues.add(
                            &format!("{at}.cidrs[{i}]"),
                            e.to_string(),
                            "an address or a network, e.g. 192.0.2.0/24",
                        ),
                    }
                }
            }
        }
        Some(crate::config::IpAllowlist::new(mode, nets))
    }

    /// `rate_limits: [{ key, rate, burst }]`.
    pub(super) fn rate_limits(
        &mut self,
        at: &str,
        raw: Option<Vec<RawRateLimit>>,
    ) -> Vec<crate::config::LimitSpec> {
        raw.unwrap_or_default()
            .into_iter()
            .enumerate()
            .filter_map(|(i, r)| self.rate_limit(&format!("{at}[{i}]"), r, true))
            .collect()
    }

    /// One limit; `keyed`: a `key` is required (the pre-authentication limit is per address).
    pub(super) fn rate_limit(
        &mut self,
        at: &str,
        raw: RawRateLimit,
        keyed: bool,
    ) -> Option<crate::config::LimitSpec> {
        use crate::config::LimitKey;
        let key = match (keyed, raw.key.as_deref()) {
            (false, None) => LimitKey::Ip,
            (false, Some(_)) => {
                self.issues.add(
                    &format!("{at}.key"),
                    "this limit always counts by client address",
                    "remove `key`",
                );
                LimitKey::Ip
            }
            (true, Some("user")) => LimitKey::User,
            (true, Some("entity")) => LimitKey::Entity,
            (true, Some("ip")) => LimitKey::Ip,
            (true, Some("user+path")) => LimitKey::UserPath,
            (true, Some("client")) => LimitKey::Client,
            (true, other) => {
                self.issues.add(
                    &format!("{at}.key"),
                    match other {
                        Some(k) => format!("unknown key `{k}`"),
                        None => "is required".into(),
                    },
                    "use user, entity, ip, user+path or client",
                );
                return None;
            }
        };
        let Some(text) = raw.rate.as_deref() else {
            self.issues.add(
                &format!("{at}.rate"),
                "is required",
                "e.g. 10/s, 600/min or 5000/h",
            );
            return None;
        };
        let Some((rate, per)) = parse_rate(text) else {
            self.issues.add(
                &format!("{at}.rate"),
                format!("`{text}` is not a rate"),
                "requests per second, minute or hour: 10/s, 600/min, 5000/h",
            );
            return None;
        };
        let burst = match raw.burst {
            None => rate,
            Some(b) => match std::num::NonZeroU32::new(b) {
                Some(b) => b,
                None => {
                    self.issues
                        .add(&format!("{at}.burst"), "must be at least 1", "e.g. 20");
                    return None;
                }
            },
        };
        Some(crate::config::LimitSpec {
            key,
            rate,
            per,
            burst,
        })
    }
}

/// `10/s`, `600/min`, `5000/h`.
fn parse_rate(text: &str) -> Option<(std::num::NonZeroU32, Duration)> {
    let (count, unit) = text.split_once('/')?;
    let count: u32 = count.trim().parse().ok()?;
    let per = match unit.trim() {
        "s" | "sec" | "second" => Duration::from_secs(1),
        "m" | "min" | "minute" => Duration::from_secs(60),
        "h" | "hour" => Duration::from_secs(3600),
        _ => return None,
    };
    Some((std::num::NonZeroU32::new(count)?, per))
}

/// Keys of `custom` travel in the assertion and could become header names: keep them tame.
fn valid_custom_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 64
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
}
