//! What crosses to the upstream and back: the request stripped of what a client must not
//! decide (identity and client-address headers, hop-by-hop headers, Portcullis's cookies) and
//! given the signed identity; the response stripped of attempts to set Portcullis's cookies.

use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::Session;
use pingora::ErrorType;

use super::{hygiene, portal, Gateway, RequestCtx};

impl Gateway {
    /// The request as the upstream receives it.
    pub(super) fn prepare_upstream_request(
        &self,
        session: &Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let upgrade = session
            .is_upgrade_req()
            .then(|| upstream.headers.get(http::header::UPGRADE).cloned())
            .flatten();
        let connection: Vec<&str> = upstream
            .headers
            .get_all(http::header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        let names = upstream.headers.keys().map(|k| k.as_str());
        for name in hygiene::headers_to_remove(
            names,
            &connection,
            ctx.trusted_peer,
            &self.guards.client_ip_headers,
        ) {
            upstream.remove_header(&name);
        }
        strip_cookies(upstream, &self.site.cookie_name)?;
        if let Some(header) = ctx.credential_header {
            // The credential was Portcullis's to check; the upstream gets the assertion.
            upstream.remove_header(header);
        }
        if let Some(upgrade) = upgrade {
            upstream.insert_header(http::header::CONNECTION, "Upgrade")?;
            upstream.insert_header(http::header::UPGRADE, upgrade)?;
        }
        let scheme = ctx.scheme(session);
        ctx.set_forwarding_headers(upstream, scheme)?;
        let Some(permit) = ctx.permit.as_ref() else {
            return Error::e_explain(
                ErrorType::InternalError,
                "upstream request without a permit",
            );
        };
        let app = permit.app();
        if permit.carries_identity() {
            // Never forward an authenticated request without its assertion.
            let (Some(token), Some(data)) = (ctx.assertion.as_deref(), ctx.session.as_ref()) else {
                return Error::e_explain(
                    ErrorType::InternalError,
                    "authenticated request without an assertion",
                );
            };
            upstream.insert_header("x-portcullis-assertion", token)?;
            let plain = if app.identity_headers.plain {
                crate::assertion::plain_headers(app, &data.identity)
            } else {
                Vec::new()
            };
            if crate::assertion::over_budget(app, token, &plain) {
                self.warn_budget(app, data);
            }
            for (name, value) in plain {
                upstream.insert_header(name, value)?;
            }
        }
        // Forward exactly the path that was authorised.
        let path = ctx.path.as_deref().unwrap_or("/");
        let target = match upstream.uri.query() {
            Some(q) => format!("{path}?{q}"),
            None => path.to_string(),
        };
        let uri = http::Uri::try_from(target)
            .map_err(|e| Error::because(ErrorType::InternalError, "normalised URI", e))?;
        upstream.set_uri(uri);
        if !app.preserve_host {
            upstream.insert_header(http::header::HOST, app.upstream.authority.as_str())?;
        } else if upstream.headers.get(http::header::HOST).is_none() {
            if let Some(host) = ctx.host.as_deref() {
                upstream.insert_header(http::header::HOST, host)?;
            }
        }
        Ok(())
    }

    /// The response as the client receives it.
    pub(super) fn prepare_response(
        &self,
        session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if response.status == http::StatusCode::SWITCHING_PROTOCOLS {
            // From here on the client's side is a WebSocket, not a request body: it may stay
            // quiet for as long as the app allows (`timeouts.websocket_idle`).
            if let Some(permit) = ctx.permit.as_ref() {
                session.set_read_timeout(Some(permit.app().upstream.timeouts.websocket_idle));
            }
        }
        let own: Vec<String> = response
            .headers
            .get_all(http::header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter(|v| !hygiene::sets_own_cookie(v, &self.site.cookie_name))
            .map(str::to_string)
            .collect();
        if own.len()
            != response
                .headers
                .get_all(http::header::SET_COOKIE)
                .iter()
                .count()
        {
            response.remove_header(&http::header::SET_COOKIE);
            for value in own {
                response.append_header(http::header::SET_COOKIE, value)?;
            }
        }
        if let (true, Some(hsts)) = (ctx.tls, &self.site.hsts) {
            response.insert_header(http::header::STRICT_TRANSPORT_SECURITY, hsts.as_str())?;
        }
        response.insert_header("x-request-id", ctx.request_id.as_str())?;
        for cookie in ctx.set_cookies.drain(..) {
            response.append_header(http::header::SET_COOKIE, cookie)?;
        }
        Ok(())
    }
    /// Logs (at most once a minute) that a user's identity headers exceed the app's budget.
    fn warn_budget(&self, app: &crate::config::App, data: &crate::session::SessionData) {
        use std::sync::atomic::Ordering;
        let now = portal::unix_now();
        let last = self.budget_warned.load(Ordering::Relaxed);
        if now >= last + 60
            && self
                .budget_warned
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                app = %app.id,
                user = %data.identity.user_id,
                roles = data.identity.roles.len(),
                budget = app.identity_headers.budget_bytes,
                "identity headers exceed the app's budget: limit identity_headers.roles/custom"
            );
        }
    }
}

fn strip_cookies(upstream: &mut RequestHeader, cookie_name: &str) -> Result<()> {
    let cookies = upstream.headers.get_all(http::header::COOKIE);
    if cookies.iter().next().is_none() {
        return Ok(());
    }
    let kept: Vec<String> = cookies
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| hygiene::strip_own_cookies(v, cookie_name))
        .collect();
    upstream.remove_header(&http::header::COOKIE);
    if !kept.is_empty() {
        upstream.insert_header(http::header::COOKIE, kept.join("; "))?;
    }
    Ok(())
}
