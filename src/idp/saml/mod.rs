//! SAML 2.0 service provider: SP-initiated sign-in (HTTP-Redirect AuthnRequest, HTTP-POST
//! response), IdP-initiated sign-in when allowed, single logout both ways, SP metadata.
//!
//! Signatures on responses are verified by xmlsec (through samael), never by code here; see
//! [`response`] for the checks around that verification and their order.

pub mod binding;
mod decrypt;
pub mod metadata;
pub mod response;
mod xml;
mod xmlsec_log;

use std::sync::{Arc, RwLock};

use openidconnect::reqwest;
use serde::{Deserialize, Serialize};
use url::Url;

pub use binding::SpSigner;
pub use decrypt::SpDecrypter;
pub use metadata::IdpDescriptor;
pub use response::SamlError;

use super::UseOnce;
use crate::config::{
    ClaimMapping, IdentityMapping, IdentityProvider, IdentityProviderKind, SamlSettings,
};
use crate::identity::{self, AuthMethod, Identity};
use crate::store::SeenTokens;
use binding::{Carrier, RedirectMessage};

/// Largest metadata document fetched from a URL.
const MAX_METADATA_BYTES: usize = 4 * 1024 * 1024;

/// Why metadata could not be fetched from its URL (the last good copy stays in use).
#[derive(Debug, thiserror::Error)]
pub enum MetadataFetchError {
    /// The request failed, or reading its body did.
    #[error("fetch {url}: {source}")]
    Fetch {
        /// The metadata URL.
        url: Url,
        /// What failed.
        source: reqwest::Error,
    },
    /// The server answered with a status other than success.
    #[error("fetch {url}: HTTP {status}")]
    Status {
        /// The metadata URL.
        url: Url,
        /// The status it answered.
        status: reqwest::StatusCode,
    },
    /// The document is larger than 4 MiB.
    #[error("{url}: metadata larger than 4 MiB")]
    TooLarge {
        /// The metadata URL.
        url: Url,
    },
    /// The document is not UTF-8.
    #[error("{url}: not UTF-8")]
    NotUtf8 {
        /// The metadata URL.
        url: Url,
    },
    /// The document is not usable IdP metadata.
    #[error("{url}: {source}")]
    Invalid {
        /// The metadata URL.
        url: Url,
        /// What is wrong with it.
        source: metadata::MetadataError,
    },
}

/// One configured SAML IdP.
pub struct SamlProvider {
    /// Provider id.
    pub id: String,
    /// Name on the login page.
    pub display_name: String,
    settings: SamlSettings,
    /// Signs AuthnRequests and logout messages; published in SP metadata.
    sp_signer: Option<SpSigner>,
    /// Decrypts encrypted assertions (an RSA SP key).
    sp_decrypter: Option<SpDecrypter>,
    claims: ClaimMapping,
    mapping: Arc<IdentityMapping>,
    /// The IdP as last read (file, inline, or the last good fetch).
    idp: RwLock<Option<Arc<IdpDescriptor>>>,
    /// Assertion ids consumed, until they expire.
    consumed: SeenTokens,
    http: reqwest::Client,
}

/// A sign-in in progress, sealed in a short-lived cookie of the browser that started it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SamlFlow {
    /// Provider id.
    pub idp: String,
    /// `AuthnRequest/@ID`: the response must answer exactly this.
    pub request_id: String,
    /// Where the browser goes after sign-in.
    pub return_to: String,
    /// Unix seconds.
    pub started: u64,
    /// This sign-in asked for MFA.
    pub step_up: bool,
    /// The RelayState sent with the request (the cookie is found by its prefix; the whole
    /// value must match).
    pub relay_state: String,
}

/// What single logout needs to know about a SAML session (kept in the session cookie).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SamlSession {
    /// The subject as the IdP named it.
    pub name_id: String,
    /// Its format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_id_format: Option<String>,
    /// The IdP's session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_index: Option<String>,
}

/// A successful sign-in.
#[derive(Debug)]
pub struct SamlLogin {
    /// Who.
    pub identity: Identity,
    /// For single logout.
    pub session: SamlSession,
    /// The IdP's `SessionNotOnOrAfter`: the session may not outlive it.
    pub ends_at: Option<u64>,
    /// The assertion: taken once here, and once across replicas when they share a store.
    pub assertion: UseOnce,
}

/// How a logout message arrived, and so how its signature is checked.
pub enum Carried<'m> {
    /// HTTP-Redirect: a detached signature over the query string.
    Redirect(&'m RedirectMessage<'m>),
    /// HTTP-POST: an enveloped XML signature, checked by xmlsec.
    Post {
        /// `RelayState`, to send back with the answer.
        relay_state: Option<String>,
    },
}

/// Which sessions an IdP-initiated LogoutRequest ends, and the answer to send.
#[derive(Debug)]
pub struct LogoutOrder {
    /// NameID.
    pub name_id: String,
    /// SessionIndex, when given: only that session.
    pub session_index: Option<String>,
    /// Where to send the LogoutResponse (redirect URL), when the IdP has an endpoint.
    pub answer: Option<String>,
    /// The request: taken once here, and once across replicas when they share a store.
    pub request: UseOnce,
}

impl SamlProvider {
    /// The provider for a `kind: saml` entry (`None` for other kinds): the IdP as described
    /// by a metadata file or inline keys, and the SP's key pair.
    pub fn new(
        provider: &IdentityProvider,
        mapping: Arc<IdentityMapping>,
    ) -> Result<Option<SamlProvider>, crate::idp::ProviderError> {
        let IdentityProviderKind::Saml(settings) = &provider.kind else {
            return Ok(None);
        };
        let settings = SamlSettings::clone(settings);
        let mut described = match (&settings.idp_metadata_xml, &settings.idp_entity_id) {
            (Some(xml), entity_id) => Some(metadata::parse(xml, entity_id.as_deref())?),
            (None, Some(entity_id)) if settings.metadata_url.is_none() => {
                settings.idp_sso_url.clone().map(|sso_url| IdpDescriptor {
                    entity_id: entity_id.clone(),
                    sso_url,
                    slo_url: settings.idp_slo_url.clone(),
                    slo_response_url: settings.idp_slo_url.clone(),
                    certificates: Vec::new(),
                })
            }
            _ => None,
        };
        if let Some(d) = described.as_mut() {
            d.apply_overrides(
                &settings.idp_sso_url,
                &settings.idp_slo_url,
                &settings.idp_certificates,
            );
        }
        let (sp_signer, sp_decrypter) = match &settings.sp_keys {
            Some(pair) => {
                let key = pair.key.expose().as_bytes();
                (
                    Some(SpSigner::from_pem(key, &pair.certificate)?),
                    SpDecrypter::from_pem(key),
                )
            }
            None => (None, None),
        };
        Ok(Some(SamlProvider {
            id: provider.id.clone(),
            display_name: provider.display_name.clone(),
            idp: RwLock::new(described.map(Arc::new)),
            settings,
            sp_signer,
            sp_decrypter,
            claims: provider.claims.clone(),
            mapping,
            consumed: SeenTokens::default(),
            http: crate::idp::back_channel_client()?,
        }))
    }

    /// Metadata is known (file, inline, or fetched at least once).
    pub fn is_available(&self) -> bool {
        self.descriptor().is_some()
    }

    fn descriptor(&self) -> Option<Arc<IdpDescriptor>> {
        self.idp.read().ok().and_then(|d| d.clone())
    }

    /// The IdP's entity id, once known.
    pub fn idp_entity_id(&self) -> Option<String> {
        self.descriptor().map(|d| d.entity_id.clone())
    }

    /// How often metadata from a URL is fetched again; `None` when it is not from a URL.
    pub fn metadata_refresh(&self) -> Option<std::time::Duration> {
        self.settings
            .metadata_url
            .as_ref()
            .map(|_| self.settings.metadata_refresh)
    }

    /// Fetches metadata from its URL (when it has one). A failure keeps the last good copy.
    pub async fn refresh_metadata(&self) -> Result<(), MetadataFetchError> {
        let Some(url) = &self.settings.metadata_url else {
            return Ok(());
        };
        let fetch = |source| MetadataFetchError::Fetch {
            url: url.clone(),
            source,
        };
        let response = self.http.get(url.clone()).send().await.map_err(fetch)?;
        if !response.status().is_success() {
            return Err(MetadataFetchError::Status {
                url: url.clone(),
                status: response.status(),
            });
        }
        let too_large = || MetadataFetchError::TooLarge { url: url.clone() };
        if response
            .content_length()
            .is_some_and(|l| l > MAX_METADATA_BYTES as u64)
        {
            return Err(too_large());
        }
        let bytes = response.bytes().await.map_err(fetch)?;
        if bytes.len() > MAX_METADATA_BYTES {
            return Err(too_large());
        }
        let text = String::from_utf8(bytes.to_vec())
            .map_err(|_| MetadataFetchError::NotUtf8 { url: url.clone() })?;
        let mut found =
            metadata::parse(&text, self.settings.idp_entity_id.as_deref()).map_err(|source| {
                MetadataFetchError::Invalid {
                    url: url.clone(),
                    source,
                }
            })?;
        found.apply_overrides(
            &self.settings.idp_sso_url,
            &self.settings.idp_slo_url,
            &self.settings.idp_certificates,
        );
        if let Ok(mut slot) = self.idp.write() {
            *slot = Some(Arc::new(found));
        }
        Ok(())
    }

    /// The redirect to the IdP and the flow to remember. `step_up` asks for MFA and a
    /// fresh authentication.
    pub fn start(
        &self,
        acs_url: &str,
        return_to: &str,
        relay_state: &str,
        now: u64,
        step_up: bool,
    ) -> Option<(String, SamlFlow)> {
        let idp = self.descriptor()?;
        let request_id = binding::new_id();
        let contexts: &[String] = if step_up {
            &self.settings.mfa_authn_contexts
        } else {
            &[]
        };
        let request = binding::AuthnRequest {
            id: &request_id,
            now,
            destination: idp.sso_url.as_str(),
            acs_url,
            sp_entity_id: &self.settings.sp_entity_id,
            name_id_format: self.settings.name_id_format.as_deref(),
            force_authn: step_up,
            authn_contexts: contexts,
        };
        let location = binding::redirect_url(
            &idp.sso_url,
            Carrier::Request,
            &request.to_xml(),
            Some(relay_state),
            self.sp_signer.as_ref(),
        )?;
        let flow = SamlFlow {
            idp: self.id.clone(),
            request_id,
            return_to: return_to.to_string(),
            started: now,
            step_up,
            relay_state: relay_state.to_string(),
        };
        Some((location, flow))
    }

    /// Verifies a posted response (blocking: run it off the proxy workers) and maps the
    /// assertion to an identity. `flow` is the browser's pending sign-in, if any.
    pub fn finish(
        &self,
        response_xml: &str,
        flow: Option<&SamlFlow>,
        acs_url: &str,
        now: u64,
    ) -> Result<SamlLogin, SamlError> {
        let idp = self.descriptor().ok_or(SamlError::SignatureInvalid)?;
        let now_signed = i64::try_from(now).unwrap_or(i64::MAX);
        let consumed = |id: &str| self.consumed.seen(id, now);
        let expect = response::Expectations {
            idp_entity_id: &idp.entity_id,
            certificates: &idp.certificates,
            sp_entity_id: &self.settings.sp_entity_id,
            acs_url,
            request_id: flow.map(|f| f.request_id.as_str()),
            allow_unsolicited: self.settings.allow_unsolicited,
            allow_sha1: self.settings.insecure_allow_sha1,
            clock_skew: seconds(self.settings.clock_skew),
            max_age: seconds(self.settings.max_response_age),
            now: now_signed,
            decrypter: self.sp_decrypter.as_ref(),
            consumed: &consumed,
        };
        let verified = response::verify(response_xml, &expect)?;
        let remember = u64::try_from(verified.remember_until).unwrap_or(now);
        // Recorded only once everything else held, and atomically: of two concurrent posts
        // of one response, one wins.
        if !self
            .consumed
            .first_use(&verified.assertion_id, remember, now)
        {
            return Err(SamlError::Replayed);
        }
        let claims = claims_of(&verified);
        let mfa = self.is_mfa(&verified);
        let source = identity::Assertions {
            idp: &self.id,
            auth_method: AuthMethod::Saml,
            claims: &claims,
            mfa,
        };
        let identity = identity::from_claims(&source, &self.claims, &self.mapping)
            .map_err(|_| SamlError::SubjectMissing)?;
        Ok(SamlLogin {
            identity,
            session: SamlSession {
                name_id: verified.name_id,
                name_id_format: verified.name_id_format,
                session_index: verified.session_index,
            },
            ends_at: verified
                .session_not_on_or_after
                .and_then(|t| u64::try_from(t).ok()),
            assertion: UseOnce {
                id: verified.assertion_id,
                until: remember,
            },
        })
    }

    /// A second factor: an MFA authentication context, or Entra ID's
    /// `authnmethodsreferences` attribute naming one.
    fn is_mfa(&self, verified: &response::VerifiedAssertion) -> bool {
        let mfa = &self.settings.mfa_authn_contexts;
        verified
            .authn_context
            .as_ref()
            .is_some_and(|c| mfa.contains(c))
            || verified
                .attributes
                .iter()
                .filter(|a| a.name == "http://schemas.microsoft.com/claims/authnmethodsreferences")
                .flat_map(|a| &a.values)
                .any(|v| mfa.contains(v))
    }

    /// SP-initiated logout: the redirect that asks the IdP to end its session too; `None`
    /// when the IdP has no single logout endpoint.
    pub fn logout_url(&self, session: &SamlSession, now: u64) -> Option<String> {
        let idp = self.descriptor()?;
        let slo = idp.slo_url.as_ref()?;
        let request = binding::logout_request(
            &binding::new_id(),
            now,
            slo.as_str(),
            &self.settings.sp_entity_id,
            &session.name_id,
            session.name_id_format.as_deref(),
            session.session_index.as_deref(),
        );
        binding::redirect_url(
            slo,
            Carrier::Request,
            &request,
            None,
            self.sp_signer.as_ref(),
        )
    }

    /// An IdP-initiated LogoutRequest, which must be signed by the IdP (query signature over
    /// HTTP-Redirect, enveloped XML signature over HTTP-POST).
    /// `slo_urls`: where this SP takes logout messages (the public URL's, and the host's the
    /// message arrived at); `Destination` must be one of them.
    pub fn logout_order(
        &self,
        carried: &Carried<'_>,
        request_xml: &str,
        slo_urls: &[&str],
        now: u64,
    ) -> Result<LogoutOrder, SamlError> {
        let idp = self.descriptor().ok_or(SamlError::SignatureInvalid)?;
        let allow_sha1 = self.settings.insecure_allow_sha1;
        let (signed, relay_state) = match carried {
            Carried::Redirect(message) => {
                message.verify(&idp.certificates, allow_sha1)?;
                (request_xml.to_string(), message.relay_state())
            }
            Carried::Post { relay_state } => (
                response::verify_enveloped(
                    request_xml,
                    "LogoutRequest",
                    &idp.certificates,
                    allow_sha1,
                )?,
                relay_state.clone(),
            ),
        };
        let request = logout::read_request(&signed)?;
        if request.issuer.as_deref() != Some(idp.entity_id.as_str()) {
            return Err(SamlError::IssuerMismatch);
        }
        if request
            .destination
            .as_deref()
            .is_some_and(|d| !slo_urls.contains(&d))
        {
            return Err(SamlError::DestinationMismatch);
        }
        let skew = seconds(self.settings.clock_skew);
        let max_age = seconds(self.settings.max_response_age);
        let now_signed = i64::try_from(now).unwrap_or(i64::MAX);
        if request
            .not_on_or_after
            .is_some_and(|t| t <= now_signed - skew)
            || request.issued < now_signed - max_age - skew
        {
            return Err(SamlError::Expired);
        }
        if request.issued > now_signed + skew {
            return Err(SamlError::NotYetValid);
        }
        // Remembered for as long as it could be accepted: a captured request cannot be
        // replayed later to end sessions again.
        let remember = u64::try_from(request.issued + max_age + skew).unwrap_or(now);
        if !self.consumed.first_use(&request.id, remember, now) {
            return Err(SamlError::Replayed);
        }
        let used = UseOnce {
            id: request.id.clone(),
            until: remember,
        };
        let answer = idp.slo_response_url.as_ref().and_then(|to| {
            let xml = binding::logout_response(
                &binding::new_id(),
                now,
                to.as_str(),
                &request.id,
                &self.settings.sp_entity_id,
                true,
            );
            binding::redirect_url(
                to,
                Carrier::Response,
                &xml,
                relay_state.as_deref(),
                self.sp_signer.as_ref(),
            )
        });
        Ok(LogoutOrder {
            name_id: request.name_id,
            session_index: request.session_index,
            answer,
            request: used,
        })
    }

    /// The IdP's answer to our LogoutRequest: its signature is checked when it has one; the
    /// local session ended before the browser left, so an unsigned answer only changes which
    /// page is shown.
    pub fn logout_answer(
        &self,
        carried: &Carried<'_>,
        response_xml: &str,
    ) -> Result<bool, SamlError> {
        let idp = self.descriptor().ok_or(SamlError::SignatureInvalid)?;
        let allow_sha1 = self.settings.insecure_allow_sha1;
        match carried {
            Carried::Redirect(message) if message.is_signed() => {
                message.verify(&idp.certificates, allow_sha1)?;
            }
            Carried::Post { .. } if response_xml.contains("Signature") => {
                let signed = response::verify_enveloped(
                    response_xml,
                    "LogoutResponse",
                    &idp.certificates,
                    allow_sha1,
                )?;
                return logout::read_response(&signed, &idp.entity_id);
            }
            _ => {}
        }
        logout::read_response(response_xml, &idp.entity_id)
    }

    /// SP metadata for this provider.
    pub fn sp_metadata(&self, acs_urls: &[String], slo_url: &str) -> String {
        binding::SpMetadata {
            entity_id: &self.settings.sp_entity_id,
            acs_urls,
            slo_url,
            certificate: self.sp_signer.as_ref().map(|s| s.certificate.as_slice()),
            encrypts: self.sp_decrypter.is_some(),
            name_id_format: self.settings.name_id_format.as_deref(),
        }
        .to_xml()
    }
}

/// The unverified `Issuer` of a logout message: only to pick which provider's keys check it.
pub fn message_issuer(message_xml: &str) -> Option<String> {
    let doc = xml::parse(message_xml).ok()?;
    xml::child(doc.root_element(), xml::ASSERTION, "Issuer").map(xml::text)
}

fn seconds(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// Well-known attribute names, so the default mapping (`email`, `name`, `groups`) works with
/// Okta, Entra ID, ADFS and Shibboleth without configuration.
const ALIASES: [(&str, &[&str]); 3] = [
    (
        "email",
        &[
            "mail",
            "emailaddress",
            "urn:oid:0.9.2342.19200300.100.1.3",
            "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress",
        ],
    ),
    (
        "name",
        &[
            "displayName",
            "urn:oid:2.16.840.1.113730.3.1.241",
            "http://schemas.microsoft.com/identity/claims/displayname",
            "cn",
        ],
    ),
    (
        "groups",
        &[
            "memberOf",
            "isMemberOf",
            "urn:oid:1.3.6.1.4.1.5923.1.5.1.1",
            "http://schemas.microsoft.com/ws/2008/06/identity/claims/groups",
        ],
    ),
];

/// The assertion as JSON claims: `name_id`, `name_id_format`, `authn_context`, then every
/// attribute by `Name` and by `FriendlyName` (one value: a string; several: an array), then
/// the aliases above where absent.
fn claims_of(verified: &response::VerifiedAssertion) -> serde_json::Value {
    let mut claims = serde_json::Map::new();
    claims.insert("name_id".into(), verified.name_id.clone().into());
    if let Some(format) = &verified.name_id_format {
        claims.insert("name_id_format".into(), format.clone().into());
    }
    if let Some(context) = &verified.authn_context {
        claims.insert("authn_context".into(), context.clone().into());
    }
    for attribute in &verified.attributes {
        let value: serde_json::Value = match attribute.values.as_slice() {
            [one] => one.clone().into(),
            many => many.to_vec().into(),
        };
        for key in std::iter::once(&attribute.name).chain(attribute.friendly_name.as_ref()) {
            claims.entry(key.clone()).or_insert_with(|| value.clone());
        }
    }
    for (alias, names) in ALIASES {
        if claims.contains_key(alias) {
            continue;
        }
        if let Some(value) = names.iter().find_map(|n| claims.get(*n)).cloned() {
            claims.insert(alias.into(), value);
        }
    }
    serde_json::Value::Object(claims)
}

/// Logout messages.
mod logout {
    use super::response::SamlError;
    use super::xml::{self, ASSERTION, PROTOCOL};

    /// What an IdP's LogoutRequest says.
    pub struct Request {
        pub id: String,
        pub issuer: Option<String>,
        pub destination: Option<String>,
        pub not_on_or_after: Option<i64>,
        pub issued: i64,
        pub name_id: String,
        pub session_index: Option<String>,
    }

    pub fn read_request(text: &str) -> Result<Request, SamlError> {
        let doc = xml::parse(text)?;
        let root = doc.root_element();
        if !xml::is(&root, PROTOCOL, "LogoutRequest") {
            return Err(SamlError::Malformed);
        }
        let name_id = xml::child(root, ASSERTION, "NameID").ok_or(SamlError::SubjectMissing)?;
        if xml::has_comment(name_id) {
            return Err(SamlError::CommentInjected);
        }
        let not_on_or_after = super::response::time(root.attribute("NotOnOrAfter"))?;
        let issued =
            super::response::time(root.attribute("IssueInstant"))?.ok_or(SamlError::Malformed)?;
        Ok(Request {
            id: root
                .attribute("ID")
                .filter(|id| !id.is_empty())
                .ok_or(SamlError::Malformed)?
                .to_string(),
            issuer: xml::child(root, ASSERTION, "Issuer").map(xml::text),
            destination: root.attribute("Destination").map(str::to_string),
            not_on_or_after,
            issued,
            name_id: xml::text(name_id),
            session_index: xml::child(root, PROTOCOL, "SessionIndex").map(xml::text),
        })
    }

    /// `true` when the IdP reports success.
    pub fn read_response(text: &str, idp_entity_id: &str) -> Result<bool, SamlError> {
        let doc = xml::parse(text)?;
        let root = doc.root_element();
        if !xml::is(&root, PROTOCOL, "LogoutResponse") {
            return Err(SamlError::Malformed);
        }
        if xml::child(root, ASSERTION, "Issuer")
            .map(xml::text)
            .as_deref()
            != Some(idp_entity_id)
        {
            return Err(SamlError::IssuerMismatch);
        }
        Ok(xml::child(root, PROTOCOL, "Status")
            .and_then(|s| xml::child(s, PROTOCOL, "StatusCode"))
            .and_then(|c| c.attribute("Value"))
            == Some("urn:oasis:names:tc:SAML:2.0:status:Success"))
    }
}

#[cfg(test)]
mod tests;
