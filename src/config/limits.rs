//! Values from `server.limits`, `rate_limits` and `server.client_ip_headers`: plain data
//! the network guards enforce.

use std::num::NonZeroU32;
use std::time::Duration;

/// Request size limits (slowloris and memory abuse are bounded by Pingora's own read
/// timeouts and buffers; these bound what a request may carry into the pipeline).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizeLimits {
    /// Sum of header name and value lengths.
    pub max_header_bytes: usize,
    /// Number of header lines.
    pub max_headers: usize,
    /// Length of the request target (path and query).
    pub max_uri_bytes: usize,
    /// Longest time from a request's first byte to the end of its headers (slowloris).
    pub header_timeout: std::time::Duration,
    /// Longest wait for the next piece of a request body.
    pub body_idle_timeout: std::time::Duration,
    /// Most connections open at once from one peer address (trusted proxies exempt).
    pub max_connections_per_ip: Option<usize>,
    /// Largest body Portcullis reads for its own endpoints (sign-in and sign-out forms,
    /// back-channel logout).
    pub max_form_bytes: usize,
}

impl Default for SizeLimits {
    fn default() -> Self {
        SizeLimits {
            max_header_bytes: 32 * 1024,
            max_headers: 100,
            max_uri_bytes: 8 * 1024,
            header_timeout: std::time::Duration::from_secs(10),
            body_idle_timeout: std::time::Duration::from_secs(60),
            max_connections_per_ip: None,
            max_form_bytes: 16 * 1024,
        }
    }
}

/// Which limit a request broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    /// Too many or too large headers (431).
    #[error("request headers too many or too large")]
    Headers,
    /// Request target too long (414).
    #[error("request target too long")]
    Uri,
}

impl SizeLimits {
    /// Checks a request given its target length and `(name, value)` lengths of each header.
    pub fn check(
        &self,
        uri_len: usize,
        headers: impl Iterator<Item = (usize, usize)>,
    ) -> Result<(), SizeError> {
        if uri_len > self.max_uri_bytes {
            return Err(SizeError::Uri);
        }
        let (mut count, mut bytes) = (0usize, 0usize);
        for (name, value) in headers {
            count += 1;
            bytes += name + value;
            if count > self.max_headers || bytes > self.max_header_bytes {
                return Err(SizeError::Headers);
            }
        }
        Ok(())
    }
}

/// Headers that name the client's address under other conventions (CDNs, nginx, RFC 7239).
/// A backend or its rate limiter may believe any of them, so none passes from a client under
/// any spelling. `X-Real-IP` and `Forwarded` are set by Portcullis from the address it decided
/// on; the others pass from a trusted proxy only when listed in `server.client_ip_headers`
/// ([`PASSABLE_CLIENT_ADDRESS_HEADERS`]).
pub const CLIENT_ADDRESS_HEADERS: &[&str] = &[
    "x-real-ip",
    "forwarded",
    "true-client-ip",
    "cf-connecting-ip",
    "x-client-ip",
    "x-cluster-client-ip",
    "fastly-client-ip",
];

/// The client-address headers a trusted proxy may pass on to the upstream.
pub const PASSABLE_CLIENT_ADDRESS_HEADERS: &[&str] = &[
    "true-client-ip",
    "cf-connecting-ip",
    "x-client-ip",
    "x-cluster-client-ip",
    "fastly-client-ip",
];

/// What a limit counts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKey {
    /// The signed-in user (anonymous requests: their address).
    User,
    /// The user's entity (users without one: the user).
    Entity,
    /// The client address.
    Ip,
    /// The user and the normalised path.
    UserPath,
    /// The machine client: the service account, or the token's `client_id`, `azp`, `cid` or `appid` (people
    /// signed in with a session: the user).
    Client,
}

impl LimitKey {
    /// Metric label and config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            LimitKey::User => "user",
            LimitKey::Entity => "entity",
            LimitKey::Ip => "ip",
            LimitKey::UserPath => "user+path",
            LimitKey::Client => "client",
        }
    }
}

/// A configured limit: `rate` requests per `per`, bursts up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitSpec {
    /// Counted by.
    pub key: LimitKey,
    /// Requests...
    pub rate: NonZeroU32,
    /// ...per this period.
    pub per: Duration,
    /// Largest burst.
    pub burst: NonZeroU32,
}
