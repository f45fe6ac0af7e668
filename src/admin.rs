//! The admin listener: `/healthz`, `/readyz`, `/metrics`. Keep it off the public network.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::listeners::Listening;
use crate::metrics::Metrics;

/// Serves the admin endpoints.
pub struct AdminApp {
    metrics: Arc<Metrics>,
    /// `host:port` of every upstream, checked by `/readyz`.
    upstreams: Vec<String>,
    /// Whether the proxy's listeners are open.
    listening: Listening,
}

impl AdminApp {
    /// An admin app over `metrics`, reporting readiness of `upstreams`.
    pub fn new(metrics: Arc<Metrics>, upstreams: Vec<String>, listening: Listening) -> Self {
        AdminApp {
            metrics,
            upstreams,
            listening,
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
            _ => respond(StatusCode::NOT_FOUND, "text/plain", b"not found\n".to_vec()),
        }
    }
}
