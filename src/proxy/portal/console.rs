//! The security console's HTTP side (`<reserved_prefix>admin/…`): who may open it, the CSRF
//! and same-origin checks of its forms, its security headers. What it shows and does is
//! `crate::console`.

use std::sync::Arc;

use bytes::Bytes;
use pingora::prelude::*;
use pingora::proxy::Session;

use super::super::{Gateway, RequestCtx};
use super::common::redirect_response;
use crate::console::{Admission, Answer, ConsoleRequest};
use crate::identity::Identity;
use crate::policy::Reason;
use crate::respond::{Reply, Synthetic};
use crate::store::Disabled;

/// Scripts and styles only from the console's own files; no inline script, no framing, forms
/// only to itself.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; \
                   object-src 'none'";

impl Gateway {
    /// One request to the console: the gate, then the page or action.
    pub(super) async fn console(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<bool> {
        let Some(console) = self.console.as_ref() else {
            return self
                .reply(session, ctx, Reply::NotFound, Reason::UnknownEndpoint)
                .await;
        };
        let actor = match self.console_gate(session, ctx, console) {
            Ok(actor) => actor,
            Err((reply, reason)) => return self.reply(session, ctx, reply, reason).await,
        };
        let path = ctx.path.clone().unwrap_or_default();
        let Some(page) = path.strip_prefix(console.base()).map(str::to_string) else {
            // `…/admin` without the slash: the pages' relative links need it.
            let synthetic = console_headers(redirect_response(308, console.base().to_string()));
            return self
                .send(session, ctx, synthetic, Reason::Authenticated)
                .await;
        };
        let method = session.req_header().method.as_str().to_string();
        let form = if method == "POST" {
            match self.protected_form(session, ctx).await? {
                Some(form) => Some(form),
                None => return Ok(true),
            }
        } else {
            None
        };
        let csrf = self.csrf_token(ctx);
        let query = session.req_header().uri.query().map(str::to_string);
        let answer = console
            .answer(&ConsoleRequest {
                method: &method,
                page: &page,
                query: query.as_deref(),
                form: form.as_deref(),
                actor: &actor,
                csrf: &csrf,
                request: ctx.audit_ref(),
                now: super::unix_now(),
            })
            .await;
        match synthetic(answer) {
            // A refused action (400, 422, 503) is recorded as a bad request.
            Some(synthetic) => self.send(session, ctx, synthetic, Reason::BadRequest).await,
            None => {
                self.reply(session, ctx, Reply::NotFound, Reason::UnknownEndpoint)
                    .await
            }
        }
    }

    /// A person's session holding a console role (and MFA when required), not turned off
    /// by a kill switch; else the sign-in page, a step-up, or 403.
    fn console_gate(
        &self,
        session: &Session,
        ctx: &RequestCtx,
        console: &crate::console::Console,
    ) -> std::result::Result<Arc<Identity>, (Reply, Reason)> {
        let identity = ctx.session.as_ref().map(|s| s.identity.clone());
        let who = match console.admit(identity.as_deref()) {
            Admission::Admitted => identity.ok_or((Reply::Forbidden, Reason::LoginRequired))?,
            Admission::SignIn => return Err((self.login_reply(session), Reason::LoginRequired)),
            Admission::StepUp => {
                let return_to = console.base();
                let reply = match self.step_up_location(ctx, return_to) {
                    Some(location) if self.is_navigation(session) => {
                        Reply::RedirectLogin { location }
                    }
                    Some(login_url) => Reply::LoginRequired { login_url },
                    None => Reply::Forbidden,
                };
                return Err((reply, Reason::MfaRequired));
            }
            Admission::Refused(reason) => return Err((Reply::Forbidden, reason)),
        };
        let stopped = self
            .switches
            .stops(&who.user_id, who.entity.as_deref(), super::unix_now());
        match stopped {
            Some(Disabled::User) => Err((Reply::Forbidden, Reason::UserDisabled)),
            Some(Disabled::Entity) => Err((Reply::Forbidden, Reason::EntityDisabled)),
            None => Ok(who),
        }
    }
}

/// The console's answer as a response with its headers; `None`: no such page.
fn synthetic(answer: Answer) -> Option<Synthetic> {
    let synthetic = match answer {
        Answer::Page(status, html) => html_page(status, html),
        Answer::Fragment(html) => html_page(200, html),
        Answer::Redirect(location) => redirect_response(303, location),
        Answer::Asset(content_type, body) => Synthetic {
            status: 200,
            headers: vec![("Content-Type", content_type.into())],
            body: Bytes::from_static(body.as_bytes()),
        },
        Answer::NotFound => return None,
    };
    Some(console_headers(synthetic))
}

fn html_page(status: u16, html: String) -> Synthetic {
    Synthetic {
        status,
        headers: vec![("Content-Type", "text/html; charset=utf-8".into())],
        body: Bytes::from(html),
    }
}

/// Every console answer: never cached, never framed, its own CSP.
fn console_headers(mut synthetic: Synthetic) -> Synthetic {
    synthetic.headers.retain(|(name, _)| {
        !matches!(
            *name,
            "Content-Security-Policy" | "Cache-Control" | "X-Frame-Options"
        )
    });
    synthetic.headers.extend([
        ("Cache-Control", "no-store".to_string()),
        ("Content-Security-Policy", CSP.to_string()),
        ("X-Frame-Options", "DENY".to_string()),
        ("X-Content-Type-Options", "nosniff".to_string()),
        ("Referrer-Policy", "same-origin".to_string()),
        ("Cross-Origin-Opener-Policy", "same-origin".to_string()),
    ]);
    synthetic
}
