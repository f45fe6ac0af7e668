//! Per-request state, filled in `early_request_filter` and read by the later phases.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use ipnet::IpNet;
use pingora::http::RequestHeader;
use pingora::prelude::*;
use pingora::proxy::Session;

use super::hygiene::acceptable_request_id;
use crate::config::App;
use crate::netguard;
use crate::policy::{Permit, Reason};
use crate::route::{is_valid_authority, normalize_path};

/// What the pipeline knows about one request.
pub struct RequestCtx {
    /// When the request arrived.
    pub started: Instant,
    /// From a trusted proxy, or generated.
    pub request_id: String,
    /// Resolved client address (`None` only for non-IP listeners).
    pub client_ip: Option<IpAddr>,
    /// The TCP peer's address (IPv4-mapped IPv6 shown as IPv4).
    pub peer_ip: Option<IpAddr>,
    /// The TCP peer is a trusted proxy.
    pub trusted_peer: bool,
    /// The request arrived over TLS.
    pub tls: bool,
    /// Host as requested (authority for HTTP/2 and absolute-form, else `Host`).
    pub host: Option<String>,
    /// The normalised path; `None` when the path is malformed (→ 400).
    pub path: Option<String>,
    /// The routed app.
    pub app: Option<Arc<App>>,
    /// Set only by the policy decision; required to forward.
    pub permit: Option<Permit>,
    /// The signed identity assertion for the upstream (authenticated requests only).
    pub assertion: Option<Arc<str>>,
    /// The client address missed a report-mode IP allowlist (forwarded, flagged in audit).
    pub ip_reported: bool,
    /// The request carried a session cookie that was refused (counts against the
    /// pre-authentication limit).
    pub cookie_rejected: bool,
    /// The header that carried the machine credential (`authorization` or `x-api-key`):
    /// removed before the upstream, since the credential was Portcullis's to check.
    pub credential_header: Option<&'static str>,
    /// A bearer token or API key that was presented and refused.
    pub credential_refused: Option<crate::machine::Refusal>,
    /// Why Portcullis answered itself.
    pub denial: Option<Reason>,
    /// The precise refusal behind `denial`, when there is one (audit `detail`).
    pub detail: Option<&'static str>,
    /// Status of a response Portcullis wrote itself.
    pub status: Option<u16>,
    /// The signed-in session, when the request carries a valid one.
    pub session: Option<crate::session::SessionData>,
    /// `Set-Cookie` values to add to whatever response goes out.
    pub set_cookies: Vec<String>,
    /// Indexes of session chunk cookies the browser sent (to clear leftovers).
    pub cookie_chunks: Vec<usize>,
    /// The browser's CSRF cookie.
    pub csrf_cookie: Option<String>,
    /// A request body was left unread: the connection must close.
    pub body_unread: bool,
    /// `Host` is missing (HTTP/1.1), repeated or malformed: answered 400 `bad-host`.
    pub bad_host: bool,
    /// Sign-in flow cookies the browser sent: (name, value).
    pub flow_cookies: Vec<(String, String)>,
    /// This request's entry among the open streams, while its upstream connection is open.
    pub stream: Option<u64>,
    /// Its id, kept after: whether it was cut is asked at the response's end.
    pub stream_id: Option<u64>,
}

impl RequestCtx {
    /// What every audit record about this request carries.
    pub fn audit_ref(&self) -> crate::audit::RequestRef<'_> {
        crate::audit::RequestRef {
            request_id: &self.request_id,
            client_ip: self.client_ip,
            app: self.app.as_ref().map(|a| &a.audit_id),
        }
    }

    /// Takes in what the request's cookies said.
    pub fn authenticated(&mut self, found: crate::session::Authenticated) {
        self.session = found.session;
        self.cookie_rejected = found.cookie_rejected;
        self.set_cookies.extend(found.set_cookies);
        self.cookie_chunks = found.cookie_chunks;
        self.csrf_cookie = found.csrf_cookie;
        self.flow_cookies = found.flow_cookies;
    }

    /// An audit record of `kind` about this request.
    pub fn event(&self, kind: crate::audit::EventKind) -> crate::audit::AuditEvent {
        crate::audit::AuditEvent::for_request(kind, self.audit_ref())
    }

    /// An empty context.
    pub fn new() -> Self {
        RequestCtx {
            started: Instant::now(),
            request_id: String::new(),
            client_ip: None,
            peer_ip: None,
            trusted_peer: false,
            tls: false,
            host: None,
            path: None,
            app: None,
            permit: None,
            assertion: None,
            ip_reported: false,
            cookie_rejected: false,
            credential_header: None,
            credential_refused: None,
            denial: None,
            detail: None,
            status: None,
            session: None,
            set_cookies: Vec::new(),
            cookie_chunks: Vec::new(),
            csrf_cookie: None,
            body_unread: false,
            bad_host: false,
            flow_cookies: Vec::new(),
            stream: None,
            stream_id: None,
        }
    }

    /// Reads the connection and request line: client IP, TLS, request id, host, path.
    pub fn inspect(&mut self, session: &Session, trusted: &[IpNet]) {
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| netguard::canonical_ip(a.ip()));
        self.peer_ip = peer;
        let request = session.req_header();
        self.trusted_peer = peer.is_some_and(|ip| netguard::is_trusted(ip, trusted));
        self.client_ip = peer.and_then(|ip| {
            let xff = request
                .headers
                .get_all("x-forwarded-for")
                .iter()
                .map(|v| v.as_bytes());
            netguard::client_ip(ip, xff, trusted)
        });
        self.tls = session
            .digest()
            .and_then(|d| d.ssl_digest.as_ref())
            .is_some();
        self.request_id = match request.headers.get("x-request-id") {
            Some(id) if self.trusted_peer && acceptable_request_id(id.as_bytes()) => {
                String::from_utf8_lossy(id.as_bytes()).into_owned()
            }
            _ => new_request_id(),
        };
        let mut host_headers = request.headers.get_all(http::header::HOST).iter();
        let (host_header, repeated) = (host_headers.next(), host_headers.next().is_some());
        self.host = request
            .uri
            .authority()
            .map(|a| a.as_str().to_string())
            .or_else(|| {
                host_header
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_string)
            });
        // RFC 9112 §3.2: an HTTP/1.1 request without Host, with several, or with one that is
        // not a host is answered 400. HTTP/1.0 may omit it (and then matches no app).
        self.bad_host = repeated
            || match self.host.as_deref() {
                Some(host) => !is_valid_authority(host),
                None => host_header.is_some() || request.version >= http::Version::HTTP_11,
            };
        self.path = normalize_path(request.uri.path()).ok();
    }

    /// The scheme the client used: a trusted proxy's `X-Forwarded-Proto` (it terminated
    /// TLS), else this connection's.
    pub fn scheme(&self, session: &Session) -> &'static str {
        let forwarded = session
            .req_header()
            .headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok());
        match forwarded {
            Some(p) if self.trusted_peer && p.eq_ignore_ascii_case("https") => "https",
            Some(p) if self.trusted_peer && p.eq_ignore_ascii_case("http") => "http",
            _ if self.tls => "https",
            _ => "http",
        }
    }

    /// Sets `X-Forwarded-For/-Proto/-Host`, `X-Real-IP`, `Forwarded` and `X-Request-Id`.
    /// Spoofable values were already removed; a trusted proxy's `X-Forwarded-For` chain is
    /// extended. `X-Real-IP` and `Forwarded` carry the client address Portcullis decided on
    /// (the one its allowlists, limits and audit use), so backends of either convention read
    /// the same truth; `scheme` is the one the client used.
    pub fn set_forwarding_headers(
        &self,
        upstream: &mut RequestHeader,
        scheme: &'static str,
    ) -> Result<()> {
        if let Some(client) = self.client_ip {
            upstream.insert_header("x-real-ip", client.to_string())?;
        }
        upstream.insert_header(
            "forwarded",
            forwarded_element(self.client_ip, scheme, self.host.as_deref()),
        )?;
        if let Some(peer) = self.peer_ip.map(|ip| ip.to_string()) {
            // A trusted proxy may send its chain over several header lines; keep them all,
            // in order, as one list (RFC 9110 §5.3), then add this hop.
            let mut chain = String::new();
            if self.trusted_peer {
                for prior in upstream
                    .headers
                    .get_all("x-forwarded-for")
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                {
                    chain.push_str(prior);
                    chain.push_str(", ");
                }
            }
            chain.push_str(&peer);
            upstream.insert_header("x-forwarded-for", chain)?;
        }
        if !(self.trusted_peer && upstream.headers.contains_key("x-forwarded-proto")) {
            upstream.insert_header("x-forwarded-proto", if self.tls { "https" } else { "http" })?;
        }
        if !(self.trusted_peer && upstream.headers.contains_key("x-forwarded-host")) {
            if let Some(host) = self.host.as_deref() {
                upstream.insert_header("x-forwarded-host", host)?;
            }
        }
        upstream.insert_header("x-request-id", self.request_id.as_str())?;
        Ok(())
    }
}

/// One RFC 7239 element: `for=…;proto=…;host=…`. IPv6 addresses are bracketed and quoted,
/// a host with a port is quoted (`:` is not a token character); an unknown client is
/// `for=unknown`.
pub fn forwarded_element(client: Option<IpAddr>, scheme: &str, host: Option<&str>) -> String {
    let mut out = match client {
        Some(IpAddr::V6(v6)) => format!("for=\"[{v6}]\""),
        Some(IpAddr::V4(v4)) => format!("for={v4}"),
        None => "for=unknown".to_string(),
    };
    out.push_str(";proto=");
    out.push_str(scheme);
    if let Some(host) = host {
        out.push_str(";host=");
        if !host.is_empty() && host.bytes().all(is_token_byte) {
            out.push_str(host);
        } else {
            out.push('"');
            for c in host.chars() {
                if c == '"' || c == '\\' {
                    out.push('\\');
                }
                out.push(c);
            }
            out.push('"');
        }
    }
    out
}

/// RFC 9110 §5.6.2 `tchar`.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// 128 random bits, hex.
fn new_request_id() -> String {
    let bits: u128 = rand::random();
    format!("{bits:032x}")
}

impl Default for RequestCtx {
    fn default() -> Self {
        Self::new()
    }
}

/// What Pingora keeps per request: the configuration generation the request runs under from
/// start to end (a reload swaps in a new one for later requests), and the request's state.
/// Apart, so that a phase borrows both without touching the generation's reference count.
pub struct Generational {
    /// The gateway of the configuration in force when the request arrived.
    pub gateway: Arc<super::Gateway>,
    /// Everything the request learned on its way.
    pub request: RequestCtx,
}

#[cfg(test)]
mod tests {
    use super::forwarded_element;

    #[test]
    fn forwarded_elements_follow_rfc_7239() {
        let v4 = Some("192.0.2.60".parse().expect("ip"));
        let v6 = Some("2001:db8:cafe::17".parse().expect("ip"));
        assert_eq!(
            forwarded_element(v4, "https", Some("chat.example.com")),
            "for=192.0.2.60;proto=https;host=chat.example.com"
        );
        assert_eq!(
            forwarded_element(v6, "http", Some("localhost:8443")),
            "for=\"[2001:db8:cafe::17]\";proto=http;host=\"localhost:8443\""
        );
        assert_eq!(
            forwarded_element(None, "https", None),
            "for=unknown;proto=https"
        );
    }
}
