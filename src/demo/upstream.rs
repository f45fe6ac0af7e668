//! The demo's sample chat app: a page, an SSE endpoint that streams an answer token by
//! token, and an endpoint that shows the headers it received (what a backend learns).

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

type Body = BoxBody<Bytes, Infallible>;

/// Serves connections from `listener` until the process ends.
pub async fn serve(listener: TcpListener) {
    loop {
        let Ok((socket, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let connection =
                http1::Builder::new().serve_connection(TokioIo::new(socket), service_fn(handle));
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "demo upstream connection ended");
            }
        });
    }
}

async fn handle(request: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    Ok(match request.uri().path() {
        "/" => text(StatusCode::OK, "text/html; charset=utf-8", PAGE.to_string()),
        "/api/headers" => {
            let headers: serde_json::Map<String, serde_json::Value> = request
                .headers()
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned().into(),
                    )
                })
                .collect();
            text(
                StatusCode::OK,
                "application/json",
                serde_json::Value::Object(headers).to_string(),
            )
        }
        "/api/chat" => chat_stream(),
        path if path.starts_with("/api/agents/") || path.starts_with("/api/entities/") => {
            // What an agent endpoint would see: the path, and who Portcullis says is calling.
            let header = |name: &str| {
                request
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string()
            };
            let body = serde_json::json!({
                "path": path,
                "user": header("x-portcullis-user"),
                "roles": header("x-portcullis-roles"),
                "entity": header("x-portcullis-entity"),
                "signed_assertion": !header("x-portcullis-assertion").is_empty(),
            });
            text(StatusCode::OK, "application/json", body.to_string())
        }
        _ => text(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    })
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body)).boxed());
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    response
}

const ANSWER: &str = "Portcullis checked who you are before this answer streamed to you, token by token, with nothing buffered on the way.";

fn chat_stream() -> Response<Body> {
    let tokens: Vec<String> = ANSWER.split(' ').map(|w| format!("{w} ")).collect();
    let events = stream::unfold((tokens, 0usize), |(tokens, i)| async move {
        if i > tokens.len() {
            return None;
        }
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(120)).await;
        }
        let data = match tokens.get(i) {
            Some(token) => format!("data: {}\n\n", serde_json::json!({ "token": token })),
            None => "event: done\ndata: {}\n\n".to_string(),
        };
        Some((
            Ok::<_, Infallible>(Frame::data(Bytes::from(data))),
            (tokens, i + 1),
        ))
    });
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(events)));
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-cache"),
    );
    response
}

const PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Portcullis demo chat</title>
<meta name="viewport" content="width=device-width,initial-scale=1">
<style>body{font-family:system-ui,sans-serif;max-width:44rem;margin:2rem auto;padding:0 1rem;color:#222}
#answer{white-space:pre-wrap;border:1px solid #ccc;border-radius:6px;padding:1rem;min-height:3rem}
pre{background:#f5f5f5;padding:1rem;overflow:auto}</style></head>
<body><h1>Demo chat app</h1>
<p>This page is served by the sample upstream behind Portcullis.</p>
<button id="ask">Ask a question</button>
<h2>Answer (streamed with server-sent events)</h2><div id="answer"></div>
<h2>Billing agent</h2>
<p>Only users with the <code>billing</code> role may call it (alice can, bob gets 403).</p>
<button id="billing">Call /api/agents/billing-specialist/run</button><pre id="agent"></pre>
<h2>Headers the app received</h2><pre id="headers">loading…</pre>
<script>
fetch('/api/headers').then(r => r.json()).then(h => {
  document.getElementById('headers').textContent = JSON.stringify(h, null, 2);
});
document.getElementById('billing').onclick = () => {
  fetch('/api/agents/billing-specialist/run', { method: 'POST' })
    .then(async r => { document.getElementById('agent').textContent = r.status + ' ' + await r.text(); });
};
document.getElementById('ask').onclick = () => {
  const out = document.getElementById('answer');
  out.textContent = '';
  const es = new EventSource('/api/chat');
  es.onmessage = e => { out.textContent += JSON.parse(e.data).token; };
  es.addEventListener('done', () => es.close());
  es.onerror = () => es.close();
};
</script></body></html>
"#;
