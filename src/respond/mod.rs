//! Every response Portcullis writes itself: status, body (HTML for browsers, JSON for API
//! clients), framing. Pure data; the proxy only copies it onto the wire.
//!
//! Bodies are generic on purpose: the reason for a refusal goes to the audit trail, never
//! to the client. Every body carries the request id so support can find the record.

mod pages;

use bytes::Bytes;

pub use pages::{login_page, logout_page, signed_out_page, LoginPage};

/// What to tell the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// 400: malformed request.
    BadRequest,
    /// 401: a session is needed; API clients get the login URL to show or open.
    LoginRequired {
        /// Where a person signs in.
        login_url: String,
    },
    /// 302 to the login page (a browser navigation without a session).
    RedirectLogin {
        /// The login page with `rd`.
        location: String,
    },
    /// 429: too many attempts.
    TooManyAttempts {
        /// Seconds to wait.
        retry_after: u64,
    },
    /// 429: over a rate limit.
    RateLimited {
        /// Seconds to wait.
        retry_after: u64,
    },
    /// 413: a body too large for a Portcullis endpoint.
    PayloadTooLarge,
    /// 403: refused.
    Forbidden,
    /// 403: an identity provider's answer (a SAML response or logout message) was refused.
    SignInRefused,
    /// 404: no app here, or an unknown Portcullis endpoint.
    NotFound,
    /// 414: request target too long.
    UriTooLong,
    /// 431: too many or too large headers.
    HeadersTooLarge,
    /// 308 to HTTPS (plain-HTTP listener).
    RedirectHttps {
        /// Absolute `https://` URL.
        location: String,
    },
    /// 500: Portcullis failed (never forwards in this case).
    InternalError,
    /// 502: the upstream could not be reached or answered badly.
    BadGateway,
    /// 503: the app is disabled.
    AppDisabled,
    /// 504: the upstream timed out.
    GatewayTimeout,
    /// 401 or 403 to a machine client, with an RFC 6750 `WWW-Authenticate: Bearer` challenge.
    BearerRefused {
        /// 401 (no or bad credential) or 403 (insufficient scope).
        status: u16,
        /// RFC 6750 `error` (`invalid_token`, `insufficient_scope`, `invalid_request`);
        /// `None` when no credential was sent.
        error: Option<&'static str>,
        /// `error_description`: fixed text, never anything the client sent.
        description: &'static str,
    },
    /// 503: a check Portcullis must make could not be made now (the shared store is
    /// unreachable); refused rather than accepted unchecked.
    TemporarilyUnavailable,
}

/// A fully rendered response.
#[derive(Debug, Clone)]
pub struct Synthetic {
    /// HTTP status.
    pub status: u16,
    /// Headers besides `Content-Length` (always set by the writer from `body`).
    pub headers: Vec<(&'static str, String)>,
    /// Body bytes.
    pub body: Bytes,
}

impl Reply {
    /// The status code.
    pub fn status(&self) -> u16 {
        match self {
            Reply::BadRequest => 400,
            Reply::LoginRequired { .. } => 401,
            Reply::BearerRefused { status, .. } => *status,
            Reply::RedirectLogin { .. } => 302,
            Reply::TooManyAttempts { .. } | Reply::RateLimited { .. } => 429,
            Reply::PayloadTooLarge => 413,
            Reply::Forbidden | Reply::SignInRefused => 403,
            Reply::NotFound => 404,
            Reply::UriTooLong => 414,
            Reply::HeadersTooLarge => 431,
            Reply::RedirectHttps { .. } => 308,
            Reply::InternalError => 500,
            Reply::BadGateway => 502,
            Reply::AppDisabled | Reply::TemporarilyUnavailable => 503,
            Reply::GatewayTimeout => 504,
        }
    }

    fn texts(&self) -> (&'static str, &'static str, &'static str) {
        match self {
            Reply::TooManyAttempts { .. } => (
                "too_many_attempts",
                "Too many attempts",
                "Too many attempts. Please wait and try again.",
            ),
            Reply::RateLimited { .. } => (
                "rate_limited",
                "Too many requests",
                "Too many requests. Please slow down and try again shortly.",
            ),
            Reply::PayloadTooLarge => (
                "payload_too_large",
                "Request too large",
                "The request body is too large.",
            ),
            Reply::BadRequest => (
                "bad_request",
                "Bad request",
                "The request could not be understood.",
            ),
            Reply::LoginRequired { .. } | Reply::RedirectLogin { .. } => (
                "login_required",
                "Sign-in required",
                "You need to sign in to use this application.",
            ),
            Reply::BearerRefused { status: 403, .. } => (
                "insufficient_scope",
                "Access denied",
                "The credential does not grant access to this resource.",
            ),
            Reply::BearerRefused { error: None, .. } => (
                "login_required",
                "Credentials required",
                "This application needs a bearer token or an API key.",
            ),
            Reply::BearerRefused { .. } => (
                "invalid_token",
                "Credentials refused",
                "The bearer token or API key could not be accepted.",
            ),
            Reply::Forbidden => (
                "forbidden",
                "Access denied",
                "You do not have access to this resource.",
            ),
            Reply::SignInRefused => (
                "sign_in_refused",
                "Sign-in refused",
                "The identity provider's answer could not be accepted. Please sign in again; if this keeps happening, give your administrator the request id below.",
            ),
            Reply::NotFound => ("not_found", "Not found", "There is nothing here."),
            Reply::UriTooLong => (
                "uri_too_long",
                "Address too long",
                "The requested address is too long.",
            ),
            Reply::HeadersTooLarge => (
                "headers_too_large",
                "Request headers too large",
                "The request carries too many or too large headers.",
            ),
            Reply::RedirectHttps { .. } => (
                "https_required",
                "Moved to HTTPS",
                "This application is only served over HTTPS.",
            ),
            Reply::InternalError => (
                "internal_error",
                "Something went wrong",
                "The request could not be completed. Please try again.",
            ),
            Reply::BadGateway => (
                "bad_gateway",
                "Application unavailable",
                "The application is not reachable right now. Please try again.",
            ),
            Reply::AppDisabled => (
                "app_disabled",
                "Application unavailable",
                "This application is currently disabled.",
            ),
            Reply::TemporarilyUnavailable => (
                "temporarily_unavailable",
                "Temporarily unavailable",
                "This cannot be completed right now. Please try again in a moment.",
            ),
            Reply::GatewayTimeout => (
                "gateway_timeout",
                "Application timed out",
                "The application did not answer in time. Please try again.",
            ),
        }
    }

    /// Renders for a client that prefers HTML (`wants_html`) or JSON.
    pub fn render(&self, wants_html: bool, request_id: &str) -> Synthetic {
        let (code, title, message) = self.texts();
        let mut headers: Vec<(&'static str, String)> = vec![
            ("Cache-Control", "no-store".into()),
            ("X-Content-Type-Options", "nosniff".into()),
            ("X-Request-Id", request_id.to_string()),
        ];
        match self {
            Reply::RedirectHttps { location } => headers.push(("Location", location.clone())),
            // RFC 9110 §11.6.1: a 401 names its scheme. Bearer, not Basic: a browser must
            // never pop up a password dialog for Portcullis.
            Reply::LoginRequired { .. } => {
                headers.push(("WWW-Authenticate", "Bearer realm=\"portcullis\"".into()))
            }
            Reply::RedirectLogin { location } => headers.push(("Location", location.clone())),
            Reply::BearerRefused {
                error, description, ..
            } => headers.push(("WWW-Authenticate", bearer_challenge(*error, description))),
            Reply::TooManyAttempts { retry_after } | Reply::RateLimited { retry_after } => {
                headers.push(("Retry-After", retry_after.to_string()))
            }
            _ => {}
        }
        let body = if wants_html {
            headers.push(("Content-Type", "text/html; charset=utf-8".into()));
            headers.push((
                "Content-Security-Policy",
                "default-src 'none'; style-src 'unsafe-inline'".into(),
            ));
            html_page(title, message, request_id)
        } else {
            headers.push(("Content-Type", "application/json".into()));
            let mut json = serde_json::json!({
                "error": code,
                "message": message,
                "request_id": request_id,
            });
            if let Reply::LoginRequired { login_url } = self {
                json["login_url"] = serde_json::Value::from(login_url.as_str());
            }
            if let Reply::BearerRefused {
                error: Some(error),
                description,
                ..
            } = self
            {
                json["error"] = serde_json::Value::from(*error);
                json["error_description"] = serde_json::Value::from(*description);
            }
            json.to_string()
        };
        Synthetic {
            status: self.status(),
            headers,
            body: Bytes::from(body),
        }
    }
}

/// RFC 6750 §3: `Bearer realm="portcullis"`, with `error` and `error_description` when a
/// credential was sent and refused.
fn bearer_challenge(error: Option<&str>, description: &str) -> String {
    match error {
        Some(error) => format!(
            "Bearer realm=\"portcullis\", error=\"{error}\", error_description=\"{description}\""
        ),
        None => "Bearer realm=\"portcullis\"".to_string(),
    }
}

/// True when the `Accept` header prefers HTML (a browser navigation).
pub fn wants_html(accept: Option<&[u8]>) -> bool {
    accept.is_some_and(|a| a.windows(9).any(|w| w.eq_ignore_ascii_case(b"text/html")))
}

fn html_page(title: &str, message: &str, request_id: &str) -> String {
    // request_id is either generated (hex) or validated to a safe charset before use;
    // escape anyway so this function is safe on its own.
    let request_id = escape_markup(request_id);
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <style>body{{font-family:system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem;color:#222}}\
         small{{color:#777}}</style></head><body><h1>{title}</h1><p>{message}</p>\
         <p><small>Request id: {request_id}</small></p></body></html>"
    )
}

/// Escapes text for HTML and XML, in element content and quoted attributes alike (the same
/// five characters; `&#39;` is valid in both).
pub(crate) fn escape_markup(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_by_default_html_for_browsers() {
        let json = Reply::Forbidden.render(false, "abc");
        assert_eq!(json.status, 403);
        let v: serde_json::Value = serde_json::from_slice(&json.body).expect("json body");
        assert_eq!(v["error"], "forbidden");
        assert_eq!(v["request_id"], "abc");
        let html = Reply::Forbidden.render(true, "<x>");
        assert!(std::str::from_utf8(&html.body)
            .expect("utf8")
            .contains("&lt;x&gt;"));
        assert!(html
            .headers
            .iter()
            .any(|(k, v)| *k == "Content-Type" && v.starts_with("text/html")));
    }

    #[test]
    fn machine_refusals_carry_an_rfc_6750_challenge() {
        let refused = Reply::BearerRefused {
            status: 401,
            error: Some("invalid_token"),
            description: "the token has expired",
        }
        .render(false, "id");
        assert_eq!(refused.status, 401);
        let challenge = refused
            .headers
            .iter()
            .find(|(k, _)| *k == "WWW-Authenticate")
            .map(|(_, v)| v.as_str());
        assert_eq!(
            challenge,
            Some(
                r#"Bearer realm="portcullis", error="invalid_token", error_description="the token has expired""#
            )
        );
        let v: serde_json::Value = serde_json::from_slice(&refused.body).expect("json");
        assert_eq!(v["error"], "invalid_token");
        assert_eq!(v["error_description"], "the token has expired");
        let scope = Reply::BearerRefused {
            status: 403,
            error: Some("insufficient_scope"),
            description: "the token lacks a required scope",
        }
        .render(true, "id");
        assert_eq!(scope.status, 403);
        let none = Reply::BearerRefused {
            status: 401,
            error: None,
            description: "",
        }
        .render(false, "id");
        assert!(none
            .headers
            .iter()
            .any(|(k, v)| *k == "WWW-Authenticate" && v == r#"Bearer realm="portcullis""#));
    }

    #[test]
    fn accept_detection() {
        assert!(wants_html(Some(
            b"text/html,application/xhtml+xml;q=0.9,*/*;q=0.8"
        )));
        assert!(wants_html(Some(b"TEXT/HTML")));
        assert!(!wants_html(Some(b"application/json")));
        assert!(!wants_html(Some(b"*/*")));
        assert!(!wants_html(None));
    }

    #[test]
    fn redirect_carries_location() {
        let r = Reply::RedirectHttps {
            location: "https://a.test/x".into(),
        }
        .render(false, "id");
        assert_eq!(r.status, 308);
        assert!(r
            .headers
            .iter()
            .any(|(k, v)| *k == "Location" && v == "https://a.test/x"));
    }
}
