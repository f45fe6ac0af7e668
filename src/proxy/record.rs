//! One metrics sample and one audit record per request, written when it ends.

use pingora::proxy::Session;

use prometheus::{Histogram, IntCounter};

use super::{Gateway, RequestCtx};
use crate::audit::{AuditEvent, EventKind, Outcome};
use crate::policy::Reason;

impl Gateway {
    /// Counts the request and records the decision.
    pub(super) async fn record(&self, session: &Session, ctx: &mut RequestCtx) {
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .or(ctx.status)
            .unwrap_or(0);
        let app_label = ctx.app.as_ref().map_or("-", |a| a.id.as_str());
        let (kind, outcome, reason) = match (&ctx.permit, ctx.denial) {
            (Some(permit), None) => (EventKind::Access, Outcome::Allow, permit.reason()),
            (_, Some(Reason::AppDisabled)) => {
                (EventKind::AppDisabled, Outcome::Deny, Reason::AppDisabled)
            }
            (_, Some(reason)) => (EventKind::AccessDenied, Outcome::Deny, reason),
            (None, None) if ctx.status.is_some() => {
                // Portcullis's own page (sign-in form, whoami…): counted, and audited by the
                // login/logout events themselves rather than as an access.
                self.metrics
                    .requests
                    .with_label_values(&[app_label, status_label(status), "portal"])
                    .inc();
                return;
            }
            (None, None) => (EventKind::AccessDenied, Outcome::Deny, Reason::BadRequest),
        };
        let app_metrics = ctx.app.as_ref().and_then(|a| self.app_metrics.get(a.index));
        match app_metrics {
            Some(handles) if outcome == Outcome::Allow && status == 200 => handles.allowed_ok.inc(),
            _ => self
                .metrics
                .requests
                .with_label_values(&[app_label, status_label(status), outcome_label(outcome)])
                .inc(),
        }
        if outcome == Outcome::Deny {
            self.metrics
                .denied
                .with_label_values(&[app_label, reason.as_str()])
                .inc();
        }
        let elapsed = ctx.started.elapsed().as_secs_f64();
        match app_metrics {
            Some(handles) => handles.duration.observe(elapsed),
            None => self
                .metrics
                .duration
                .with_label_values(&[app_label])
                .observe(elapsed),
        }
        // The request's last record moves the id out of the context instead of copying it
        // (`RequestCtx::event`, used by every other record of a request): this one is on the
        // hot path, once per request.
        let mut event = AuditEvent::new(kind);
        event.request_id = Some(std::mem::take(&mut ctx.request_id));
        event.client_ip = ctx.client_ip;
        event.app = ctx.app.as_ref().map(|a| a.audit_id.clone());
        event.method = Some(session.req_header().method.as_str().to_string());
        event.host = ctx.host.take();
        event.path = ctx.path.take();
        event.status = Some(status);
        event.decision = Some(outcome);
        event.reason = Some(reason);
        event.ip_reported = ctx.ip_reported;
        if ctx.ip_reported {
            self.metrics
                .ip_reported
                .with_label_values(&[app_label])
                .inc();
        }
        event.rule = ctx
            .permit
            .as_ref()
            .and_then(|p| p.rule())
            .map(str::to_string);
        event.detail = ctx.detail.map(str::to_string);
        if let Some(data) = ctx.session.take() {
            self.metrics.authenticated(data.identity.auth_method);
            // Moved out when the request holds the only reference (its stream entry is gone);
            // a machine caller's identity is shared with its account or the verified-token
            // cache: only the two names are copied then.
            let (user, idp, method, entity) = match std::sync::Arc::try_unwrap(data.identity) {
                Ok(who) => (who.user_id, who.idp, who.auth_method, who.entity),
                Err(shared) => (
                    shared.user_id.clone(),
                    shared.idp.clone(),
                    shared.auth_method,
                    shared.entity.clone(),
                ),
            };
            event.auth_method = Some(method);
            event.user = Some(user);
            event.entity = entity;
            event.idp = Some(idp);
            event.sid = Some(data.sid);
        }
        self.auditor.record(event).await;
    }
}

/// One app's most common series: an allowed request answered 200, and the duration
/// histogram. Resolved with the gateway, so the usual request does no label hashing.
pub(super) struct AppMetrics {
    allowed_ok: IntCounter,
    duration: Histogram,
}

impl AppMetrics {
    pub(super) fn new(metrics: &crate::metrics::Metrics, app: &str) -> AppMetrics {
        AppMetrics {
            allowed_ok: metrics.requests.with_label_values(&[app, "200", "allow"]),
            duration: metrics.duration.with_label_values(&[app]),
        }
    }
}

fn outcome_label(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Allow => "allow",
        Outcome::Deny => "deny",
    }
}

/// Status codes as static labels (bounded cardinality, no allocation): common codes
/// exactly, anything else by class.
#[allow(clippy::match_overlapping_arm)]
fn status_label(status: u16) -> &'static str {
    match status {
        101 => "101",
        200 => "200",
        201 => "201",
        204 => "204",
        206 => "206",
        301 => "301",
        302 => "302",
        304 => "304",
        307 => "307",
        308 => "308",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        414 => "414",
        429 => "429",
        431 => "431",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        0 => "0",
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}
