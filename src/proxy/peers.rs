//! Upstream peers, built once per app: address, TLS, CA, client certificate, timeouts.

use std::sync::Arc;

use pingora::prelude::*;
use pingora::utils::tls::{CertKey, WrappedX509};

use crate::config::App;
use crate::pem::{read_certs, read_key, PemError};

/// A TLS file for an upstream that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("app {app}: {source}")]
pub struct PeerError {
    app: String,
    source: PemError,
}

/// One prepared peer per app, indexed by [`App::index`].
pub struct Peers {
    by_app: Vec<HttpPeer>,
}

impl Peers {
    /// Prepares every app's peer, reading CA and client-certificate files now.
    pub fn new(apps: &[Arc<App>]) -> Result<Peers, PeerError> {
        let mut by_app = Vec::with_capacity(apps.len());
        for app in apps {
            by_app.push(prepare(app)?);
        }
        Ok(Peers { by_app })
    }

    /// A copy of the app's peer for one request. A WebSocket handshake waits for the upstream
    /// under the app's WebSocket idle timeout instead of `read`: Pingora fixes the upstream
    /// read timeout when it connects, and after the `101` that timeout is the only one left.
    pub fn peer(&self, app: &App, websocket: bool) -> Result<Box<HttpPeer>> {
        match self.by_app.get(app.index) {
            Some(peer) => {
                let mut peer = Box::new(peer.clone());
                if websocket {
                    peer.options.read_timeout = Some(app.upstream.timeouts.websocket_idle);
                }
                Ok(peer)
            }
            None => Error::e_explain(ErrorType::InternalError, "no peer for app"),
        }
    }
}

fn prepare(app: &App) -> Result<HttpPeer, PeerError> {
    let upstream = &app.upstream;
    let mut peer = HttpPeer::new(
        upstream.address.as_str(),
        upstream.tls,
        upstream.server_name.clone(),
    );
    peer.options.connection_timeout = Some(upstream.timeouts.connect);
    peer.options.total_connection_timeout = Some(upstream.timeouts.connect);
    peer.options.read_timeout = Some(upstream.timeouts.read);
    peer.options.write_timeout = Some(upstream.timeouts.write);
    if let Some(ca_file) = &upstream.ca_file {
        let certs = read_certs(ca_file).map_err(|source| PeerError {
            app: app.id.clone(),
            source,
        })?;
        let wrapped: Vec<WrappedX509> = certs
            .into_iter()
            .map(|der| WrappedX509::new(der, pingora::utils::tls::parse_x509))
            .collect();
        peer.options.ca = Some(Arc::from(wrapped.into_boxed_slice()));
    }
    if let Some(pair) = &upstream.client_cert {
        let fail = |source| PeerError {
            app: app.id.clone(),
            source,
        };
        let certs = read_certs(&pair.cert).map_err(fail)?;
        let key = read_key(&pair.key).map_err(fail)?;
        peer.client_cert_key = Some(Arc::new(CertKey::new(certs, key)));
    }
    Ok(peer)
}
