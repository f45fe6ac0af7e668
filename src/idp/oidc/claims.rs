//! Verified claims to an identity: the `claims:` mapping, MFA from `amr` or `acr`, the
//! `identity:` rules; and the small helpers that read claims from a token or userinfo.

use base64::Engine;
use serde::{Deserialize, Serialize};

use super::{OidcError, OidcProvider};
use crate::identity::{AuthMethod, Identity};

impl OidcProvider {
    /// The identity from verified claims: `claims:` mapping, MFA from `amr`/`acr`, then the
    /// `identity:` rules.
    pub(super) fn identity_from_claims(
        &self,
        claims: &serde_json::Value,
    ) -> Result<Identity, OidcError> {
        let amr: Vec<String> = claims
            .get("amr")
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let acr_mfa =
            string_claim(claims, "acr").is_some_and(|acr| self.mfa_acr_values.contains(&acr));
        let source = crate::identity::Assertions {
            idp: &self.id,
            auth_method: AuthMethod::Oidc,
            claims,
            mfa: mfa_from_amr(&amr) || acr_mfa,
        };
        crate::identity::from_claims(&source, &self.claims, &self.mapping).map_err(|e| {
            tracing::warn!(idp = %self.id, error = %e, "OIDC claims unusable");
            OidcError::Claims
        })
    }
}

/// Every claim of a userinfo response, kept as JSON.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct AllClaims(serde_json::Map<String, serde_json::Value>);

impl openidconnect::AdditionalClaims for AllClaims {}

/// Adds `extra`'s claims that `claims` lacks (the verified ID token wins on conflicts).
pub(super) fn merge_under(claims: &mut serde_json::Value, extra: serde_json::Value) {
    if let (Some(base), serde_json::Value::Object(extra)) = (claims.as_object_mut(), extra) {
        for (k, v) in extra {
            base.entry(k).or_insert(v);
        }
    }
}

pub(super) fn string_claim(claims: &serde_json::Value, name: &str) -> Option<String> {
    claims
        .get(name)
        .and_then(|v| v.as_str())
        .map(str::to_string)
}

pub(super) fn payload(jwt: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    let part = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// RFC 8176 authentication method references that mean a second factor (or "mfa" itself).
pub fn mfa_from_amr(amr: &[String]) -> bool {
    amr.iter().any(|m| {
        matches!(
            m.as_str(),
            "mfa" | "otp" | "hwk" | "swk" | "sms" | "fpt" | "face" | "iris" | "retina" | "sc"
        )
    })
}
