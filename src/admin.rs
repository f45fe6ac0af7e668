//! The admin listener: `/healthz`, `/readyz`, `/metrics` (open), and the admin API under
//! `/api/v1/` (bearer tokens with scopes, every call audited; see `control`). Keep it off the
//! public network.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::audit::{AuditEvent, Auditor, EventKind};
use crate::config::AdminScope;
use crate::control::{Control, ControlError, Reload};
use crate::listeners::Listening;
use crate::metrics::Metrics;
use arc_swap::ArcSwap;

/// The largest admin API request body read.
const MAX_BODY: usize = 64 * 1024;

/// Serves the admin endpoints.
pub struct AdminApp {
    metrics: Arc<Metrics>,
    /// `host:port` of every upstream, checked by `/readyz`.
    upstreams: Vec<String>,
    /// Whether the proxy's listeners are open.
    listening: Listening,
    /// The admin API (swapped by a reload: tokens and apps may change).
    control: Arc<ArcSwap<Control>>,
    /// Reads the configuration file again and swaps it in.
    reloader: Arc<dyn Reload>,
    auditor: Auditor,
}

impl AdminApp {
    /// An admin app over `metrics`, reporting readiness of `upstreams`.
    pub fn new(
        metrics: Arc<Metrics>,
        upstreams: Vec<String>,
        listening: Listening,
        control: Arc<ArcSwap<Control>>,
        reloader: Arc<dyn Reload>,
        auditor: Auditor,
    ) -> Self {
        AdminApp {
            metrics,
            upstreams,
            listening,
            control,
            reloader,
            auditor,
        }
    }

    /// One admin API call: the token checked for the route's scope, the call made, the
    /// answer as JSON, and one audit record with the token's name (never the token).
    async fn api(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let method = session.req_header().method.clone();
        let path = session.req_header().uri.path().to_string();
        let query = session.req_header().uri.query().map(str::to_string);
        let scope = match (method.as_str(), path.as_str()) {
            ("GET", "/api/v1/sessions" | "/api/v1/disabled") => AdminScope::Read,
            ("POST", "/api/v1/revoke" | "/api/v1/forget") => AdminScope::Revoke,
            ("POST", "/api/v1/disable" | "/api/v1/enable") => AdminScope::Disable,
            ("POST", "/api/v1/reload") => AdminScope::Reload,
            _ => return json_error(404, "no such admin API call"),
        };
        let authorization = session
            .req_header()
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let mut event = AuditEvent::new(EventKind::AdminCall);
        event.method = Some(method.to_string());
        event.path = Some(path.clone());
        event.client_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let control = self.control.load_full();
        let outcome = match control.caller(authorization.as_deref(), scope) {
            Ok(name) => {
                event.operator = Some(name.to_string());
                let name = name.to_string();
                self.call(
                    &control,
                    session,
                    &path,
                    query.as_deref(),
                    &name,
                    &mut event,
                )
                .await
            }
            Err(refused) => {
                if let ControlError::Forbidden { caller, .. } = &refused {
                    event.operator = Some(caller.clone());
                }
                Err(refused)
            }
        };
        let (status, body) = match outcome {
            Ok((answer, detail)) => {
                event.detail = detail;
                (200, answer)
            }
            Err(refused) => {
                event.detail = Some(refused.to_string());
                let mut body = serde_json::json!({ "error": refused.to_string() });
                if let ControlError::ConfigRefused(problems) = &refused {
                    body["problems"] = serde_json::json!(problems);
                }
                (refused.status(), body)
            }
        };
        event.status = Some(status);
        self.auditor.record(event).await;
        json_response(status, &body)
    }

    async fn call(
        &self,
        control: &Control,
        session: &mut ServerSession,
        path: &str,
        query: Option<&str>,
        caller: &str,
        event: &mut AuditEvent,
    ) -> Result<(serde_json::Value, Option<String>), ControlError> {
        let now = crate::proxy::unix_now();
        match path {
            "/api/v1/sessions" => Ok((control.sessions(query, now).await?, None)),
            "/api/v1/disabled" => Ok((control.disabled(now), None)),
            "/api/v1/reload" => match self.reloader.reload(caller).await {
                Ok(done) => Ok((
                    serde_json::json!({
                        "applied": true,
                        "config_sha256": done.sha256,
                        "needs_handover": done.needs_handover,
                    }),
                    Some(format!("sha256={}", done.sha256)),
                )),
                Err(problems) => Err(ControlError::ConfigRefused(problems)),
            },
            "/api/v1/forget" => {
                let body = read_body(session).await?;
                let user = control.forget(&body, now).await?;
                // The writer deletes the key when it takes this record, so every record
                // before it was sealed with the key and none after it is.
                let mut forgotten = AuditEvent::new(EventKind::UserForgotten);
                forgotten.user = Some(user);
                self.auditor.record(forgotten).await;
                // The admin call's own record must not name the user either.
                Ok((
                    serde_json::json!({ "forgotten": true, "sessions_revoked": true }),
                    Some("forget".into()),
                ))
            }
            _ => {
                let body = read_body(session).await?;
                event.user = Control::named_user(&body);
                let (answer, detail) = match path {
                    "/api/v1/revoke" => control.revoke(&body, now).await?,
                    "/api/v1/disable" => control.disable(&body, caller, now)?,
                    _ => control.enable(&body)?,
                };
                Ok((answer, Some(detail)))
            }
        }
    }

    /// Ready when every upstream host name resolves (the config is loaded, or we would not
    /// be running). Connectivity is not required: an upstream may be briefly down.
    async fn unresolvable(&self) -> Vec<String> {
        let mut failed = Vec::new();
        for address in &self.upstreams {
            let lookup = tokio::time::timeout(
                Duration::from_secs(2),
                tokio::net::lookup_host(address.as_str()),
            )
            .await;
            let resolved = match lookup {
                Ok(Ok(mut addrs)) => addrs.next().is_some(),
                _ => false,
            };
            if !resolved {
                failed.push(address.clone());
            }
        }
        failed
    }
}

/// The request body, at most [`MAX_BODY`] bytes.
async fn read_body(session: &mut ServerSession) -> Result<Vec<u8>, ControlError> {
    let mut body = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_BODY {
                    return Err(ControlError::BadRequest("the body is too large".into()));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(_) => {
                return Err(ControlError::BadRequest(
                    "the body could not be read".into(),
                ))
            }
        }
    }
}

fn json_response(status: u16, body: &serde_json::Value) -> Response<Vec<u8>> {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut text = body.to_string().into_bytes();
    text.push(b'\n');
    respond(status, "application/json", text)
}

fn json_error(status: u16, message: &str) -> Response<Vec<u8>> {
    json_response(status, &serde_json::json!({ "error": message }))
}

fn respond(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        headers.insert(http::header::CONTENT_TYPE, v);
    }
    headers.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    let length = response.body().len();
    response
        .headers_mut()
        .insert(http::header::CONTENT_LENGTH, length.into());
    response
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        match session.req_header().uri.path() {
            "/healthz" => respond(StatusCode::OK, "text/plain", b"ok\n".to_vec()),
            "/readyz" => {
                if !self.listening.is_open() {
                    let body = b"not ready: the proxy listeners are not open yet\n".to_vec();
                    return respond(StatusCode::SERVICE_UNAVAILABLE, "text/plain", body);
                }
                if self.metrics.audit_writer_up.get() != 1 {
                    let body = b"not ready: the audit trail is not being written\n".to_vec();
                    return respond(StatusCode::SERVICE_UNAVAILABLE, "text/plain", body);
                }
                let failed = self.unresolvable().await;
                if failed.is_empty() && self.metrics.store_up.get() != 1 {
                    // Still ready: every replica would fail together, and the local view of
                    // revocations keeps working. Said, so that it is seen.
                    let body = b"ready, degraded: the shared store is unreachable (sign-outs on other replicas arrive when it is back)\n";
                    respond(StatusCode::OK, "text/plain", body.to_vec())
                } else if failed.is_empty() {
                    respond(StatusCode::OK, "text/plain", b"ready\n".to_vec())
                } else {
                    let body = format!(
                        "not ready: upstream(s) do not resolve: {}\n",
                        failed.join(", ")
                    );
                    respond(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "text/plain",
                        body.into_bytes(),
                    )
                }
            }
            "/metrics" => respond(
                StatusCode::OK,
                "text/plain; version=0.0.4",
                self.metrics.render(),
            ),
            path if path.starts_with("/api/") => self.api(session).await,
            _ => respond(StatusCode::NOT_FOUND, "text/plain", b"not found\n".to_vec()),
        }
    }
}
