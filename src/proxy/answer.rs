//! Answers Portcullis writes itself: refusals, redirects to sign in, its own pages. Every
//! one is framed, carries the request id, HSTS on TLS and the cookies the pipeline set, and
//! records its closed reason in the context for the audit record.

use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::Session;

use super::{Gateway, RequestCtx};
use crate::policy::Reason;
use crate::respond::{wants_html, Reply, Synthetic};
use crate::route::Endpoint;

impl Gateway {
    /// 429 with `Retry-After` (whole seconds, at least 1), counted by app and key kind.
    pub(super) async fn rate_limited(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        over: crate::netguard::RateLimitError,
    ) -> Result<bool> {
        let app = ctx.app.as_ref().map_or("-", |a| a.id.as_str());
        self.metrics
            .rate_limited
            .with_label_values(&[app, over.key.as_str()])
            .inc();
        let retry_after = over.retry_after.as_secs_f64().ceil().max(1.0) as u64;
        self.reply(
            session,
            ctx,
            Reply::RateLimited { retry_after },
            Reason::RateLimited,
        )
        .await
    }

    /// Where a session without MFA is sent to sign in again with MFA, when its provider can
    /// ask for it and this session is not already the result of such a step-up.
    pub(super) fn step_up_location(&self, ctx: &RequestCtx, return_to: &str) -> Option<String> {
        let data = ctx.session.as_ref()?;
        if data.stepped_up {
            return None;
        }
        let idp = &data.identity.idp;
        let provider_id = match data.identity.auth_method {
            crate::identity::AuthMethod::Oidc => self
                .sign_in
                .login
                .oidc
                .iter()
                .find(|p| p.id == *idp && p.can_step_up())
                .map(|p| &p.id)?,
            // SAML always can: RequestedAuthnContext with the MFA contexts, ForceAuthn.
            crate::identity::AuthMethod::Saml => self
                .sign_in
                .login
                .saml
                .iter()
                .find(|p| p.id == *idp)
                .map(|p| &p.id)?,
            // No provider to send anyone else to (a bearer token or an API key cannot sign in
            // at all): refused with 403, never redirected.
            _ => return None,
        };
        let rd: String = url::form_urlencoded::byte_serialize(
            crate::redirect::safe_return_path(return_to)
                .unwrap_or("/")
                .as_bytes(),
        )
        .collect();
        Some(format!(
            "{}login?idp={}&mfa=1&rd={rd}",
            self.site.reserved_prefix, provider_id
        ))
    }

    /// Browser navigations go to the login page; API calls (fetch/XHR, non-HTML clients) get
    /// a 401 with the login URL, which a single-page app can act on.
    pub(super) fn login_reply(&self, session: &Session) -> Reply {
        let request = session.req_header();
        let navigation = self.is_navigation(session);
        let return_to = request.uri.path_and_query().map_or("/", |p| p.as_str());
        let login_url = self.login_url(crate::redirect::safe_return_path(return_to).unwrap_or("/"));
        if navigation {
            Reply::RedirectLogin {
                location: login_url,
            }
        } else {
            Reply::LoginRequired { login_url }
        }
    }

    /// A top-level browser navigation (which can follow a redirect), as opposed to fetch/XHR
    /// or an API client.
    pub(super) fn is_navigation(&self, session: &Session) -> bool {
        let request = session.req_header();
        let header = |name: &str| request.headers.get(name).and_then(|v| v.to_str().ok());
        matches!(request.method.as_str(), "GET" | "HEAD")
            && header("x-requested-with").is_none()
            && match header("sec-fetch-mode") {
                Some(mode) => mode == "navigate",
                None => wants_html(header("accept").map(str::as_bytes)),
            }
    }

    /// Writes a synthetic response (see [`crate::respond`]) and records why.
    pub(super) async fn reply(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        reply: Reply,
        reason: Reason,
    ) -> Result<bool> {
        let accept = session
            .req_header()
            .headers
            .get(http::header::ACCEPT)
            .map(|v| v.as_bytes());
        let synthetic = reply.render(wants_html(accept), &ctx.request_id);
        ctx.denial = Some(reason);
        self.write(session, ctx, synthetic).await
    }

    /// A successful answer from Portcullis itself (sign-in page, whoami…).
    pub(super) async fn send(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        synthetic: Synthetic,
        reason: Reason,
    ) -> Result<bool> {
        if synthetic.status >= 400 {
            ctx.denial = Some(reason);
        }
        self.write(session, ctx, synthetic).await
    }

    /// Puts a synthetic response on the wire: always framed, with the request id, HSTS on
    /// TLS and any cookies the pipeline set.
    pub(super) async fn write(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        synthetic: Synthetic,
    ) -> Result<bool> {
        let mut header =
            ResponseHeader::build(synthetic.status, Some(synthetic.headers.len() + 4))?;
        for (name, value) in synthetic.headers {
            header.insert_header(name, value)?;
        }
        header.insert_header(
            http::header::CONTENT_LENGTH,
            synthetic.body.len().to_string(),
        )?;
        header.insert_header("x-request-id", ctx.request_id.as_str())?;
        if let (true, Some(hsts)) = (ctx.tls, &self.site.hsts) {
            header.insert_header(http::header::STRICT_TRANSPORT_SECURITY, hsts.as_str())?;
        }
        for cookie in ctx.set_cookies.drain(..) {
            header.append_header(http::header::SET_COOKIE, cookie)?;
        }
        // An unread request body would be parsed as the next request (pingora#498): close.
        if ctx.body_unread || !(session.is_body_empty() || session.is_body_done()) {
            session.set_keepalive(None);
        }
        ctx.status = Some(synthetic.status);
        session
            .write_response_header(Box::new(header), false)
            .await?;
        session
            .write_response_body(Some(synthetic.body), true)
            .await?;
        Ok(true)
    }

    pub(super) fn https_location(&self, ctx: &RequestCtx, session: &Session) -> Option<String> {
        let host = crate::route::normalize_host(ctx.host.as_deref()?)?;
        let port = self
            .site
            .https_port
            .map(|p| format!(":{p}"))
            .unwrap_or_default();
        let query = session
            .req_header()
            .uri
            .query()
            .map(|q| format!("?{q}"))
            .unwrap_or_default();
        Some(format!(
            "https://{host}{port}{}{query}",
            ctx.path.as_deref()?
        ))
    }

    /// The path of one of Portcullis's own endpoints.
    pub(super) fn endpoint(&self, endpoint: Endpoint) -> String {
        format!("{}{}", self.site.reserved_prefix, endpoint.name())
    }

    /// The URL of the login page returning to `rd`.
    pub(super) fn login_url(&self, return_to: &str) -> String {
        let encoded: String = url::form_urlencoded::byte_serialize(return_to.as_bytes()).collect();
        format!("{}?rd={encoded}", self.endpoint(Endpoint::Login))
    }
}
