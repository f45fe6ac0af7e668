//! A real HTTP upstream for tests: echoes what it received, streams SSE with timestamps,
//! echoes WebSocket messages, and counts every request it sees.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{stream, SinkExt, StreamExt};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

type Body = BoxBody<Bytes, Infallible>;

/// Gap between SSE events.
pub const SSE_GAP: Duration = Duration::from_millis(300);
/// Number of SSE events.
pub const SSE_EVENTS: usize = 5;

pub struct Upstream {
    pub addr: SocketAddr,
    hits: Arc<AtomicUsize>,
}

impl Upstream {
    /// Starts on its own thread and runtime, so it works from sync and async tests alike.
    pub fn start() -> Upstream {
        let hits = Arc::new(AtomicUsize::new(0));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let counter = hits.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("rt");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                loop {
                    let Ok((socket, _)) = listener.accept().await else {
                        continue;
                    };
                    let counter = counter.clone();
                    tokio::spawn(async move {
                        let service = service_fn(move |req| {
                            counter.fetch_add(1, Ordering::SeqCst);
                            handle(req)
                        });
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(socket), service)
                            .with_upgrades()
                            .await;
                    });
                }
            });
        });
        Upstream { addr, hits }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// The request headers the upstream echoed (its JSON answer), in its order (sorted by name,
/// a repeated header once per value).
pub fn headers_of(echo: &serde_json::Value) -> Vec<(String, String)> {
    echo["headers"]
        .as_array()
        .expect("headers")
        .iter()
        .map(|pair| {
            (
                pair[0].as_str().unwrap_or_default().to_string(),
                pair[1].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// [`headers_of`] by name (of a repeated header, the last value).
pub fn received(echo: &serde_json::Value) -> BTreeMap<String, String> {
    headers_of(echo).into_iter().collect()
}

async fn handle(req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    if path.ends_with("/slow-sse") {
        return Ok(sse(SLOW_SSE_EVENTS, SLOW_SSE_GAP));
    }
    if path.ends_with("/long-sse") {
        return Ok(sse(LONG_SSE_EVENTS, LONG_SSE_GAP));
    }
    if path.ends_with("/sse") {
        return Ok(sse(SSE_EVENTS, SSE_GAP));
    }
    if path.ends_with("/ws") {
        return Ok(websocket(req));
    }
    // Read the whole request body, as real apps do: an unread body makes hyper close the
    // connection, which Pingora may be about to reuse for the next request.
    let (parts, body) = req.into_parts();
    let _ = body.collect().await;
    let req = Request::from_parts(parts, ());
    let mut headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    headers.sort();
    let body = serde_json::json!({
        "method": req.method().as_str(),
        "uri": req.uri().to_string(),
        "headers": headers,
    });
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())).boxed());
    response
        .headers_mut()
        .insert("content-type", "application/json".parse().expect("hv"));
    if path.ends_with("/set-cookie") {
        response.headers_mut().append(
            "set-cookie",
            "__Host-portcullis=forged; Path=/".parse().expect("hv"),
        );
        response
            .headers_mut()
            .append("set-cookie", "app=1; Path=/".parse().expect("hv"));
    }
    Ok(response)
}

/// `…/slow-sse`: an event a second for a minute (many streams at once, little traffic).
const SLOW_SSE_EVENTS: usize = 60;
const SLOW_SSE_GAP: Duration = Duration::from_secs(1);
/// `…/long-sse`: an event every 100 ms for a minute (a chat answer that outlives a test).
const LONG_SSE_EVENTS: usize = 600;
const LONG_SSE_GAP: Duration = Duration::from_millis(100);

fn sse(count: usize, gap: Duration) -> Response<Body> {
    let events = stream::unfold(0usize, move |i| async move {
        if i >= count {
            return None;
        }
        if i > 0 {
            tokio::time::sleep(gap).await;
        }
        let frame = Frame::data(Bytes::from(format!("data: event {i}\n\n")));
        Some((Ok::<_, Infallible>(frame), i + 1))
    });
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(events)));
    response
        .headers_mut()
        .insert("content-type", "text/event-stream".parse().expect("hv"));
    response
}

fn websocket(mut req: Request<Incoming>) -> Response<Body> {
    let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
        let mut r = Response::new(Full::new(Bytes::from_static(b"not a websocket")).boxed());
        *r.status_mut() = hyper::StatusCode::BAD_REQUEST;
        return r;
    };
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    tokio::spawn(async move {
        let Ok(upgraded) = hyper::upgrade::on(&mut req).await else {
            return;
        };
        let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            tokio_tungstenite::tungstenite::protocol::Role::Server,
            None,
        )
        .await;
        while let Some(Ok(message)) = ws.next().await {
            if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err() {
                break;
            }
        }
    });
    let mut response = Response::new(Full::new(Bytes::new()).boxed());
    *response.status_mut() = hyper::StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert("connection", "upgrade".parse().expect("hv"));
    headers.insert("upgrade", "websocket".parse().expect("hv"));
    headers.insert("sec-websocket-accept", accept.parse().expect("hv"));
    response
}
