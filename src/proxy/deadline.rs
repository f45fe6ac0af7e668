//! A total deadline for reading each request's headers (slowloris defence).
//!
//! Pingora 0.9 bounds each *read* (60 s), not the whole header: a client sending one byte every
//! few seconds would hold a connection and a task forever. [`HeaderDeadline`] wraps the
//! connection below the HTTP/1 parser and starts a timer at the first byte of a request; if the
//! blank line ending the headers has not arrived when it fires, the read fails and Pingora
//! closes the connection. Writing a response re-arms it for the next request on the connection.
//! HTTP/2 connections (ALPN h2) are not wrapped: their framing is not HTTP/1 text.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::tls::{SslDigest, TlsRef};
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Where the connection is in the request cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Between requests: waiting for the first byte (Pingora's keep-alive timeout applies).
    Idle,
    /// Inside a request's headers: the deadline runs.
    Headers,
    /// Headers complete (body, or waiting for the response).
    Done,
    /// Switched protocols (WebSocket): the bytes are no longer HTTP requests.
    Upgraded,
}

/// Tracks where a request's headers end in the bytes read.
#[derive(Debug, Clone, Copy)]
struct HeaderScan {
    phase: Phase,
    /// The last byte seen in the headers was a line feed (a second one ends the headers;
    /// carriage returns in between are ignored, so both CRLF and bare LF work).
    after_lf: bool,
}

impl HeaderScan {
    const fn new() -> Self {
        HeaderScan {
            phase: Phase::Idle,
            after_lf: false,
        }
    }

    /// Follows `bytes`; true when they started a new request (the deadline starts).
    fn observe(&mut self, bytes: &[u8]) -> bool {
        if bytes.is_empty() {
            return false;
        }
        let started = self.phase == Phase::Idle;
        if started {
            self.phase = Phase::Headers;
            self.after_lf = false;
        }
        if self.phase == Phase::Headers {
            for &b in bytes {
                match b {
                    b'\n' if self.after_lf => {
                        self.phase = Phase::Done;
                        break;
                    }
                    b'\n' => self.after_lf = true,
                    b'\r' => {}
                    _ => self.after_lf = false,
                }
            }
        }
        started
    }

    /// Bytes of a response are being written. A final response means the next bytes read
    /// begin a new request; `101 Switching Protocols` ends HTTP on this connection; other
    /// interim responses (`100 Continue`) change nothing, the request body is still coming.
    fn responding(&mut self, data: &[u8]) {
        if self.phase != Phase::Done {
            return;
        }
        if data.starts_with(b"HTTP/1.1 101") || data.starts_with(b"HTTP/1.0 101") {
            self.phase = Phase::Upgraded;
        } else if !(data.starts_with(b"HTTP/1.1 1") || data.starts_with(b"HTTP/1.0 1")) {
            self.phase = Phase::Idle;
        }
    }
}

/// A connection whose request headers must arrive within a deadline.
#[derive(Debug)]
pub struct HeaderDeadline {
    inner: Stream,
    limit: Duration,
    scan: HeaderScan,
    timer: Pin<Box<Sleep>>,
    /// The client's address from a PROXY protocol header, reported as the peer.
    proxied: Option<Arc<SocketDigest>>,
}

impl HeaderDeadline {
    /// Wraps `inner` with a header deadline of `limit`.
    pub fn new(inner: Stream, limit: Duration) -> HeaderDeadline {
        HeaderDeadline {
            inner,
            limit,
            scan: HeaderScan::new(),
            timer: Box::pin(tokio::time::sleep(limit)),
            proxied: None,
        }
    }

    /// Reports `client` (from a PROXY protocol header) as the connection's peer address.
    fn with_client(mut self, client: std::net::SocketAddr) -> Self {
        // A digest of its own with the addresses filled in: its file descriptor is never used
        // for them (socket options on it simply fail, as for any closed socket).
        let digest = SocketDigest::from_raw_fd(-1);
        let _ = digest
            .peer_addr
            .set(Some(pingora::protocols::l4::socket::SocketAddr::Inet(
                client,
            )));
        let local = self
            .inner
            .get_socket_digest()
            .and_then(|d| d.local_addr().cloned());
        let _ = digest.local_addr.set(local);
        self.proxied = Some(Arc::new(digest));
        self
    }
}

impl AsyncRead for HeaderDeadline {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.scan.phase == Phase::Headers && this.timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "request headers not complete within server.limits.header_timeout",
            )));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let new = buf.filled().get(before..).unwrap_or_default();
            if this.scan.observe(new) {
                this.timer.as_mut().reset(Instant::now() + this.limit);
            }
            // Register the timer's waker while the headers are incomplete, so a client that
            // stops sending is cut off when the deadline passes, not at its next byte.
            if this.scan.phase == Phase::Headers {
                let _ = this.timer.as_mut().poll(cx);
            }
        }
        polled
    }
}

impl AsyncWrite for HeaderDeadline {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        // A response is going out: the next bytes read start a new request.
        self.scan.responding(data);
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let first = bufs
            .iter()
            .find(|b| !b.is_empty())
            .map_or(&[][..], |b| &b[..]);
        self.scan.responding(first);
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for HeaderDeadline {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

impl UniqueID for HeaderDeadline {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for HeaderDeadline {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for HeaderDeadline {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for HeaderDeadline {
    fn get_proxy_digest(&self) -> Option<Arc<pingora::protocols::raw_connect::ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: pingora::protocols::raw_connect::ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for HeaderDeadline {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.proxied
            .clone()
            .or_else(|| self.inner.get_socket_digest())
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}

#[async_trait]
impl Peek for HeaderDeadline {
    async fn try_peek(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

/// The proxy application, with two guards on every connection: at most
/// `max_per_ip` open connections per TCP peer address (trusted proxies exempt), and a
/// [`HeaderDeadline`] on every HTTP/1 connection.
pub struct DeadlineApp<A> {
    inner: Arc<A>,
    limit: Duration,
    max_per_ip: Option<usize>,
    trusted: Vec<ipnet::IpNet>,
    open: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
    /// Listen addresses where every connection starts with a PROXY protocol header.
    proxy_protocol: Vec<std::net::SocketAddr>,
    /// How long idle keep-alive connections stay open once a shutdown or upgrade begins.
    drain: Duration,
}

impl<A> DeadlineApp<A> {
    /// Wraps `inner`'s connections with a header deadline of `limit` and an optional cap on
    /// concurrent connections per peer address.
    pub fn new(
        inner: A,
        limit: Duration,
        max_per_ip: Option<usize>,
        trusted: Vec<ipnet::IpNet>,
    ) -> Self {
        DeadlineApp {
            inner: Arc::new(inner),
            limit,
            max_per_ip,
            trusted,
            open: std::sync::Mutex::new(std::collections::HashMap::new()),
            proxy_protocol: Vec::new(),
            drain: Duration::ZERO,
        }
    }

    /// Keeps idle keep-alive connections open for `drain` after a shutdown or upgrade begins.
    ///
    /// Pingora closes every idle HTTP/1.1 keep-alive connection the moment its listeners stop;
    /// a client that sent its next request at that moment gets a reset and, if it does not
    /// retry (a POST), an error. Left open, each connection's next request is still read,
    /// answered with `Connection: close` (Pingora does so once the shutdown has begun), and
    /// the client reconnects to the new process. Only connections that stay idle for the whole
    /// drain are closed at its end. HTTP/2 connections get a GOAWAY at once, from Pingora.
    pub fn with_drain(mut self, drain: Duration) -> Self {
        self.drain = drain;
        self
    }

    /// Connections to these listen addresses start with a PROXY protocol header.
    pub fn with_proxy_protocol(mut self, listen: Vec<std::net::SocketAddr>) -> Self {
        self.proxy_protocol = listen;
        self
    }

    /// The connection arrived on a PROXY protocol listener.
    fn expects_proxy_header(&self, stream: &Stream) -> bool {
        let Some(local) = stream
            .get_socket_digest()
            .and_then(|d| d.local_addr().and_then(|a| a.as_inet()).copied())
        else {
            return false;
        };
        self.proxy_protocol.iter().any(|listen| {
            listen.port() == local.port()
                && (listen.ip().is_unspecified()
                    || crate::netguard::canonical_ip(listen.ip())
                        == crate::netguard::canonical_ip(local.ip()))
        })
    }

    /// Counts a new connection from `peer`; `None` when it is one too many.
    fn admit(
        self: &Arc<Self>,
        peer: Option<std::net::IpAddr>,
    ) -> Option<Option<OpenConnection<A>>> {
        let (Some(max), Some(peer)) = (self.max_per_ip, peer) else {
            return Some(None);
        };
        let peer = crate::netguard::canonical_ip(peer);
        if crate::netguard::is_trusted(peer, &self.trusted) {
            return Some(None);
        }
        let mut open = match self.open.lock() {
            Ok(open) => open,
            Err(poisoned) => poisoned.into_inner(),
        };
        let count = open.entry(peer).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(Some(OpenConnection {
            app: self.clone(),
            peer,
        }))
    }
}

/// One counted connection; uncounted when dropped (however the connection ends).
struct OpenConnection<A> {
    app: Arc<DeadlineApp<A>>,
    peer: std::net::IpAddr,
}

impl<A> Drop for OpenConnection<A> {
    fn drop(&mut self) {
        let mut open = match self.app.open.lock() {
            Ok(open) => open,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(count) = open.get_mut(&self.peer) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.peer);
            }
        }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for DeadlineApp<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let mut stream = stream;
        let peer = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        let mut client = None;
        if self.expects_proxy_header(&stream) {
            // Only a trusted proxy may say who the client is.
            if !peer.is_some_and(|p| crate::netguard::is_trusted(p, &self.trusted)) {
                tracing::debug!(
                    ?peer,
                    "PROXY protocol listener: peer is not a trusted proxy"
                );
                return None;
            }
            let header = super::proxy_protocol::read_header(&mut stream);
            match tokio::time::timeout(self.limit, header).await {
                Ok(Ok(found)) => client = found,
                Ok(Err(error)) => {
                    tracing::debug!(?peer, %error, "connection closed");
                    return None;
                }
                Err(_) => return None,
            }
        }
        let counted_address = client.map(|c| c.ip()).or(peer);
        let Some(_counted) = self.admit(counted_address) else {
            tracing::debug!(
                ?counted_address,
                "connection refused: too many open from this address"
            );
            return None;
        };
        let stream: Stream = if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            stream
        } else {
            let wrapped = HeaderDeadline::new(stream, self.limit);
            Box::new(match client {
                Some(client) => wrapped.with_client(client),
                None => wrapped,
            })
        };
        self.inner.process_new(stream, shutdown).await
    }

    async fn cleanup(&self) {
        tokio::time::sleep(self.drain).await;
        self.inner.cleanup().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_end_at_a_blank_line_crlf_or_lf() {
        for (chunks, done) in [
            (vec!["GET / HTTP/1.1\r\nHost: a\r\n\r\n"], true),
            (vec!["GET / HTTP/1.1\r\n", "Host: a\r", "\n", "\r\n"], true),
            (vec!["GET / HTTP/1.1\nHost: a\n\n"], true),
            (vec!["GET / HTTP/1.1\r\nHost: a\r\n"], false),
            (vec!["G", "E", "T"], false),
        ] {
            let mut scan = HeaderScan::new();
            for chunk in &chunks {
                scan.observe(chunk.as_bytes());
            }
            assert_eq!(scan.phase == Phase::Done, done, "{chunks:?}");
        }
    }

    #[test]
    fn the_deadline_starts_with_each_request() {
        let mut scan = HeaderScan::new();
        assert!(!scan.observe(b""), "no bytes, no request");
        assert!(scan.observe(b"GET / HTTP/1.1\r\n"), "first bytes start it");
        assert!(!scan.observe(b"Host: a\r\n\r\nbody"), "same request");
        assert_eq!(scan.phase, Phase::Done);
        assert!(
            !scan.observe(b"more body"),
            "body bytes are not a new request"
        );
        scan.responding(b"HTTP/1.1 100 Continue\r\n\r\n");
        assert!(
            !scan.observe(b"still the body"),
            "100 Continue: the body is still coming"
        );
        scan.responding(b"HTTP/1.1 200 OK\r\n");
        assert!(
            scan.observe(b"GET /next"),
            "after the response, a new request"
        );
        scan.observe(b" HTTP/1.1\r\nUpgrade: websocket\r\n\r\n");
        scan.responding(b"HTTP/1.1 101 Switching Protocols\r\n");
        assert!(
            !scan.observe(b"\x81\x05hello"),
            "WebSocket frames are not requests"
        );
        scan.responding(b"\x81\x05hello");
        assert!(!scan.observe(b"\x81\x05again"));
        assert_eq!(scan.phase, Phase::Upgraded);
    }
}
