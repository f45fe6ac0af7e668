//! Service accounts and their API keys: the key's shape and checksum, its keyed hash
//! compared in constant time with every configured hash, the account's expiry and IP
//! allowlist. Each account's identity is built once, with the configuration.

use std::net::IpAddr;
use std::sync::Arc;

use subtle::ConstantTimeEq;

use super::{caller, Caller, Refusal};
use crate::apikey::{self, ApiKeyError};
use crate::config::{
    AllowlistMode, IdentityMapping, IpAllowlist, ServiceAccount, SERVICE_ACCOUNTS_IDP,
};
use crate::identity::{AuthMethod, Identity};

struct Account {
    /// `api-key:<id>`: the caller's `sid`.
    sid: String,
    identity: Arc<Identity>,
    key_hashes: Vec<[u8; 32]>,
    ip_allowlist: Option<IpAllowlist>,
    expires: Option<u64>,
}

/// The configured service accounts.
pub struct ServiceAccounts {
    accounts: Vec<Account>,
}

impl ServiceAccounts {
    /// Builds every account's identity: its configured fields, then the `identity:` rules
    /// (a rule may match `provider: service-accounts`).
    pub fn new(accounts: &[ServiceAccount], rules: &IdentityMapping) -> ServiceAccounts {
        let accounts = accounts
            .iter()
            .map(|account| {
                let mut identity = Identity {
                    user_id: account.id.clone(),
                    email: account.email.clone(),
                    name: account.name.clone(),
                    user_type: account.user_type,
                    roles: account.roles.clone(),
                    entity: account.entity.clone(),
                    custom: Default::default(),
                    idp: SERVICE_ACCOUNTS_IDP.to_string(),
                    auth_method: AuthMethod::ApiKey,
                    mfa: false,
                    client_id: Some(account.id.clone()),
                };
                if !account.scopes.is_empty() {
                    identity
                        .custom
                        .insert("scopes".into(), account.scopes.join(" "));
                }
                crate::identity::apply_rules(&mut identity, &[], &serde_json::Value::Null, rules);
                Account {
                    sid: format!("api-key:{}", account.id),
                    identity: Arc::new(identity),
                    key_hashes: account.key_hashes.clone(),
                    ip_allowlist: account.ip_allowlist.clone(),
                    expires: account.expires,
                }
            })
            .collect();
        ServiceAccounts { accounts }
    }

    /// No accounts configured.
    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty()
    }

    /// The account whose key `key` is, if it may be used from `client_ip` at `now`.
    pub fn authenticate(
        &self,
        key: &str,
        client_ip: Option<IpAddr>,
        now: u64,
    ) -> Result<Caller, Refusal> {
        apikey::parse(key).map_err(|e| match e {
            ApiKeyError::Malformed => Refusal::ApiKeyMalformed,
            ApiKeyError::Checksum => Refusal::ApiKeyChecksum,
        })?;
        let digest = apikey::digest(key);
        // Every hash is compared, whichever matches: the time taken says nothing of which.
        let mut found = None;
        for account in &self.accounts {
            for hash in &account.key_hashes {
                if bool::from(hash.ct_eq(&digest)) {
                    found = Some(account);
                }
            }
        }
        let account = found.ok_or(Refusal::ApiKeyUnknown)?;
        if account.expires.is_some_and(|end| now >= end) {
            return Err(Refusal::ApiKeyExpired);
        }
        let outside = account.ip_allowlist.as_ref().is_some_and(|list| {
            list.mode == AllowlistMode::Enforce
                && !client_ip.is_some_and(|ip| list.admits(Some(ip)))
        });
        if outside {
            return Err(Refusal::IpNotAllowed);
        }
        let expires_at = account.expires.unwrap_or(u64::MAX);
        Ok(caller(
            account.identity.clone(),
            account.sid.clone(),
            now,
            expires_at,
        ))
    }
}
