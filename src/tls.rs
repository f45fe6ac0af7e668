//! Downstream TLS on Pingora's rustls backend: the listener settings for the SNI resolver.
//!
//! Pingora's rustls acceptor offers TLS 1.2 and 1.3 only (1.0/1.1 are refused) and we add
//! ALPN `h2` + `http/1.1`.

use std::sync::Arc;

use pingora::listeners::tls::TlsSettings;
use pingora::listeners::{TlsAccept, TlsAcceptCallbacks};

use crate::certs::LiveCertificates;

/// Listener settings for one address: the resolver, ALPN h2 + http/1.1.
pub fn listener_settings(resolver: &Arc<LiveCertificates>) -> pingora::Result<TlsSettings> {
    pingora::tls::install_default_crypto_provider();
    let mut settings = TlsSettings::with_callbacks(Box::new(NoCallbacks) as TlsAcceptCallbacks)?;
    settings.set_cert_resolver(resolver.clone());
    settings.enable_h2();
    Ok(settings)
}

struct NoCallbacks;

#[async_trait::async_trait]
impl TlsAccept for NoCallbacks {}
