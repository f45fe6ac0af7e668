//! The configuration file exactly as written: serde structs with `deny_unknown_fields`.
//!
//! Values that need checking (URLs, CIDRs, durations, secrets, paths) stay strings here so
//! that one bad value never hides the next: `compile` parses them all and reports every
//! problem at once. Nothing outside `config` sees these types. Durations and byte sizes read
//! through [`duration`] and [`bytes`], whose type errors say what was expected so that
//! `compile` can suggest the fix (`add a unit: 30s`).

use std::fmt;

use serde::de::{Deserializer, Error, Unexpected, Visitor};
use serde::Deserialize;

/// What a duration key expects, as its type errors say it (`compile` recognises it).
pub const EXPECTED_DURATION: &str = "a duration with a unit, such as 30s";
/// What a byte-size key expects, as its type errors say it (`compile` recognises it).
pub const EXPECTED_BYTES: &str = "a whole number of bytes, such as 16384";

/// A duration key: a string such as `30s`, checked by `compile`. A bare number is a type error
/// that expects [`EXPECTED_DURATION`].
fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    struct Text;
    impl Visitor<'_> for Text {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(EXPECTED_DURATION)
        }
        fn visit_str<E: Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_owned())
        }
        fn visit_string<E: Error>(self, v: String) -> Result<String, E> {
            Ok(v)
        }
    }
    struct DurationText(String);
    impl<'de> Deserialize<'de> for DurationText {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_string(Text).map(DurationText)
        }
    }
    Ok(Option::<DurationText>::deserialize(deserializer)?.map(|t| t.0))
}

/// A byte-size key: a whole number of bytes. Anything else (`16KiB`, `"16384"`) is a type
/// error that expects [`EXPECTED_BYTES`].
fn bytes<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<usize>, D::Error> {
    struct Count;
    impl Visitor<'_> for Count {
        type Value = usize;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(EXPECTED_BYTES)
        }
        fn visit_u64<E: Error>(self, v: u64) -> Result<usize, E> {
            usize::try_from(v).map_err(|_| E::invalid_value(Unexpected::Unsigned(v), &self))
        }
        fn visit_i64<E: Error>(self, v: i64) -> Result<usize, E> {
            usize::try_from(v).map_err(|_| E::invalid_value(Unexpected::Signed(v), &self))
        }
    }
    struct ByteCount(usize);
    impl<'de> Deserialize<'de> for ByteCount {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_u64(Count).map(ByteCount)
        }
    }
    Ok(Option::<ByteCount>::deserialize(deserializer)?.map(|c| c.0))
}

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub server: Option<RawServer>,
    pub session: Option<RawSession>,
    pub identity_providers: Option<Vec<RawIdentityProvider>>,
    pub identity: Option<RawIdentity>,
    pub assertion: Option<RawAssertion>,
    pub apps: Option<Vec<RawApp>>,
    pub service_accounts: Option<Vec<RawServiceAccount>>,
    pub audit: Option<RawAudit>,
    pub store: Option<RawStore>,
    pub admin: Option<RawAdmin>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub public_url: Option<String>,
    pub https: Option<RawHttps>,
    pub http: Option<RawHttp>,
    pub hsts: Option<RawHsts>,
    pub trusted_proxies: Option<Vec<String>>,
    pub reserved_prefix: Option<String>,
    pub sse_end_event: Option<bool>,
    pub threads: Option<usize>,
    pub work_stealing: Option<bool>,
    #[serde(default, deserialize_with = "duration")]
    pub grace_period: Option<String>,
    #[serde(default, deserialize_with = "duration")]
    pub shutdown_timeout: Option<String>,
    pub pid_file: Option<String>,
    pub upgrade_sock: Option<String>,
    pub log: Option<RawLog>,
    pub limits: Option<RawLimits>,
    pub ip_allowlist: Option<RawIpAllowlist>,
    pub pre_auth_rate_limit: Option<RawRateLimit>,
    pub client_ip_headers: Option<Vec<String>>,
    pub sign_in: Option<RawSignIn>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSignIn {
    pub auto_redirect: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIpAllowlist {
    pub mode: Option<String>,
    pub cidrs: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    pub key: Option<String>,
    pub rate: Option<String>,
    pub burst: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    #[serde(default, deserialize_with = "bytes")]
    pub max_header_bytes: Option<usize>,
    pub max_headers: Option<usize>,
    #[serde(default, deserialize_with = "bytes")]
    pub max_uri_bytes: Option<usize>,
    #[serde(default, deserialize_with = "duration")]
    pub header_timeout: Option<String>,
    #[serde(default, deserialize_with = "duration")]
    pub body_idle_timeout: Option<String>,
    pub max_connections_per_ip: Option<usize>,
    #[serde(default, deserialize_with = "bytes")]
    pub max_form_bytes: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttps {
    pub listen: Option<Vec<String>>,
    pub certificates: Option<Vec<RawCertificate>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCertificate {
    pub cert: Option<String>,
    pub key: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttp {
    pub listen: Option<Vec<String>>,
    pub redirect_port: Option<u16>,
    pub proxy_protocol: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHsts {
    #[serde(default, deserialize_with = "duration")]
    pub max_age: Option<String>,
    pub include_subdomains: Option<bool>,
    pub preload: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    pub format: Option<String>,
    pub level: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSession {
    pub encryption_keys: Option<Vec<String>>,
    pub cookie_name: Option<String>,
    #[serde(default, deserialize_with = "duration")]
    pub lifetime: Option<String>,
    #[serde(default, deserialize_with = "duration")]
    pub idle_timeout: Option<String>,
    pub max_chunks: Option<usize>,
    pub deployment_id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLocalUser {
    pub username: Option<String>,
    pub password_hash: Option<String>,
    pub email: Option<String>,
    pub name: Option<String>,
    pub user_type: Option<String>,
    pub roles: Option<Vec<String>>,
    pub entity: Option<String>,
    pub totp_secret: Option<String>,
}

/// One identity provider; which keys apply depends on `kind` (others are errors).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIdentityProvider {
    pub id: Option<String>,
    pub kind: Option<String>,
    pub display_name: Option<String>,
    // oidc
    pub issuer: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub scopes: Option<Vec<String>>,
    pub acr_values: Option<String>,
    pub token_endpoint_auth: Option<String>,
    pub prompt: Option<String>,
    pub userinfo: Option<bool>,
    pub mfa_acr_values: Option<Vec<String>>,
    // oidc and saml
    pub claims: Option<RawClaims>,
    // saml
    pub idp_metadata: Option<String>,
    pub idp_entity_id: Option<String>,
    pub idp_sso_url: Option<String>,
    pub idp_slo_url: Option<String>,
    pub idp_certificates: Option<Vec<String>>,
    pub sp_entity_id: Option<String>,
    pub sp_signing_key: Option<String>,
    pub sp_certificate: Option<String>,
    pub name_id_format: Option<String>,
    pub allow_unsolicited: Option<bool>,
    #[serde(default, deserialize_with = "duration")]
    pub clock_skew: Option<String>,
    #[serde(default, deserialize_with = "duration")]
    pub max_response_age: Option<String>,
    pub mfa_authn_contexts: Option<Vec<String>>,
    pub insecure_allow_sha1: Option<bool>,
    #[serde(default, deserialize_with = "duration")]
    pub metadata_refresh: Option<String>,
    // local
    pub users: Option<Vec<RawLocalUser>>,
    // jwt (and oidc's `bearer`)
    pub jwks_uri: Option<String>,
    pub audiences: Option<Vec<String>>,
    pub algorithms: Option<Vec<String>>,
    pub required_scopes: Option<Vec<String>>,
    pub bearer: Option<RawBearer>,
    // oauth2-introspection
    pub introspection_endpoint: Option<String>,
    #[serde(default, deserialize_with = "duration")]
    pub cache_ttl: Option<String>,
    #[serde(default, deserialize_with = "duration")]
    pub timeout: Option<String>,
}

/// `identity_providers[].bearer` (OIDC): the OP's JWT access tokens as bearer tokens.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBearer {
    pub audiences: Option<Vec<String>>,
    pub algorithms: Option<Vec<String>>,
    pub required_scopes: Option<Vec<String>>,
    #[serde(default, deserialize_with = "duration")]
    pub clock_skew: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServiceAccount {
    pub id: Option<String>,
    pub key_hashes: Option<Vec<String>>,
    pub name: Option<String>,
    pub email: Option<String>,
    pub roles: Option<Vec<String>>,
    pub entity: Option<String>,
    pub user_type: Option<String>,
    pub scopes: Option<Vec<String>>,
    pub ip_allowlist: Option<RawIpAllowlist>,
    pub expires: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApp {
    pub id: Option<String>,
    pub hosts: Option<Vec<String>>,
    pub path_prefix: Option<String>,
    pub enabled: Option<bool>,
    pub upstream: Option<String>,
    pub upstream_tls: Option<RawUpstreamTls>,
    pub preserve_host: Option<bool>,
    pub timeouts: Option<RawTimeouts>,
    pub allow_plain_http: Option<bool>,
    pub public_paths: Option<Vec<String>>,
    pub access: Option<RawAccess>,
    pub rules: Option<Vec<RawRule>>,
    pub entity_scope: Option<RawEntityScope>,
    pub ip_allowlist: Option<RawIpAllowlist>,
    pub rate_limits: Option<Vec<RawRateLimit>>,
    pub identity_headers: Option<RawIdentityHeaders>,
    pub accept: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamTls {
    pub ca_file: Option<String>,
    pub client_cert: Option<String>,
    pub client_key: Option<String>,
    pub server_name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    #[serde(default, deserialize_with = "duration")]
    pub connect: Option<String>,
    #[serde(default, deserialize_with = "duration")]
    pub read: Option<String>,
    #[serde(default, deserialize_with = "duration")]
    pub write: Option<String>,
    #[serde(default, deserialize_with = "duration")]
    pub websocket_idle: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccess {
    pub user_types: Option<Vec<String>>,
    pub entities: Option<Vec<String>>,
    pub roles: Option<Vec<String>>,
    pub users: Option<Vec<String>>,
    #[serde(rename = "override")]
    pub override_: Option<RawOverride>,
    pub require_mfa: Option<bool>,
    pub identity_providers: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOverride {
    pub users: Option<Vec<String>>,
    pub entities: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    pub name: Option<String>,
    pub paths: Option<Vec<String>>,
    pub methods: Option<Vec<String>>,
    pub deny: Option<bool>,
    pub access: Option<RawAccess>,
    pub ip_allowlist: Option<RawIpAllowlist>,
    pub rate_limits: Option<Vec<RawRateLimit>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEntityScope {
    pub path_pattern: Option<String>,
    pub query_param: Option<String>,
    pub strict: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIdentityHeaders {
    pub plain: Option<bool>,
    pub roles: Option<Vec<String>>,
    pub custom: Option<Vec<String>>,
    #[serde(default, deserialize_with = "bytes")]
    pub budget_bytes: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClaims {
    pub user_id: Option<String>,
    pub email: Option<String>,
    pub name: Option<String>,
    pub groups: Option<String>,
    pub entity: Option<String>,
    pub custom: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMatcher {
    pub email_domain: Option<String>,
    pub group: Option<String>,
    pub provider: Option<String>,
    pub claim: Option<String>,
    pub equals: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoleRule {
    pub role: Option<String>,
    pub email_domain: Option<String>,
    pub group: Option<String>,
    pub provider: Option<String>,
    pub claim: Option<String>,
    pub equals: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEntityMap {
    pub email_domains: Option<std::collections::BTreeMap<String, String>>,
    pub groups: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIdentity {
    pub internal_users: Option<Vec<RawMatcher>>,
    pub roles: Option<Vec<RawRoleRule>>,
    pub groups_as_roles: Option<RawGroupsAsRoles>,
    pub entity: Option<RawEntityMap>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGroupsAsRoles {
    pub prefix: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAssertion {
    pub algorithm: Option<String>,
    pub signing_keys: Option<Vec<String>>,
    #[serde(default, deserialize_with = "duration")]
    pub ttl: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    pub path: Option<String>,
    pub fsync: Option<String>,
    #[serde(default, deserialize_with = "duration")]
    pub fsync_interval: Option<String>,
    pub queue_capacity: Option<usize>,
    pub on_queue_full: Option<String>,
    pub signing_key: Option<String>,
    pub checkpoint_every: Option<u64>,
    #[serde(default, deserialize_with = "duration")]
    pub checkpoint_interval: Option<String>,
    pub rotate: Option<RawAuditRotate>,
    pub retention: Option<RawAuditRetention>,
    pub sinks: Option<Vec<RawAuditSink>>,
    pub spool: Option<String>,
    pub personal_data: Option<String>,
    pub personal_keys: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuditSink {
    pub id: Option<String>,
    pub kind: Option<String>,
    pub address: Option<String>,
    pub url: Option<String>,
    pub ca: Option<String>,
    pub headers: Option<std::collections::BTreeMap<String, String>>,
    pub batch: Option<RawSinkBatch>,
    pub format: Option<String>,
    #[serde(default, deserialize_with = "duration")]
    pub timeout: Option<String>,
    pub on_full: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSinkBatch {
    pub max_records: Option<usize>,
    #[serde(default, deserialize_with = "duration")]
    pub max_wait: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuditRotate {
    #[serde(default, deserialize_with = "bytes")]
    pub max_size: Option<usize>,
    #[serde(default, deserialize_with = "duration")]
    pub max_age: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuditRetention {
    #[serde(default, deserialize_with = "duration")]
    pub keep: Option<String>,
    pub compress: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    pub kind: Option<String>,
    pub url: Option<String>,
    pub cluster: Option<Vec<String>>,
    pub sentinel: Option<RawSentinel>,
    pub tls: Option<RawStoreTls>,
    pub key_prefix: Option<String>,
    #[serde(default, deserialize_with = "duration")]
    pub timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSentinel {
    pub master: Option<String>,
    pub nodes: Option<Vec<String>>,
    pub password: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStoreTls {
    pub ca_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub listen: Option<String>,
    pub tokens: Option<Vec<RawAdminToken>>,
    pub console: Option<RawConsole>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConsole {
    pub roles: Vec<String>,
    pub require_mfa: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdminToken {
    pub name: String,
    pub token: String,
    pub scopes: Vec<String>,
}
