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
use crate::route::normalize_path;

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
    /// Why Portcullis answered itself.
    pub denial: Option<Reason>,
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
    /// Names of OIDC login-flow cookies the browser sent.
    pub flow_cookies: Vec<String>,
    /// The same cookies with their values.
    pub flow_cookies_values: Vec<(String, String)>,
}

impl RequestCtx {
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
            denial: None,
            status: None,
            session: None,
            set_cookies: Vec::new(),
            cookie_chunks: Vec::new(),
            csrf_cookie: None,
            body_unread: false,
            flow_cookies: Vec::new(),
            flow_cookies_values: Vec::new(),
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
        self.host = request
            .uri
            .authority()
            .map(|a| a.as_str().to_string())
            .or_else(|| {
                request
                    .headers
                    .get(http::header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_string)
            });
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

    /// Sets `X-Forwarded-For/-Proto/-Host` and `X-Request-Id`. Spoofable values from
    /// untrusted peers were already removed; a trusted proxy's chain is extended.
    pub fn set_forwarding_headers(&self, upstream: &mut RequestHeader) -> Result<()> {
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

impl Default for RequestCtx {
    fn default() -> Self {
        Self::new()
    }
}

/// 128 random bits, hex.
fn new_request_id() -> String {
    let bits: u128 = rand::random();
    format!("{bits:032x}")
}
