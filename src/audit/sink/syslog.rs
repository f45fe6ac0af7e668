//! Syslog delivery: RFC 5424 messages, octet-counted over TCP and TLS (RFC 6587 / RFC 5425),
//! one datagram each over UDP (RFC 5426).
//!
//! TCP has no application acknowledgement, so before and after each batch the connection is
//! checked for the receiver having closed it; a batch written into a dead connection is sent
//! again on a new one (at least once: the receiver may see it twice, never not at all while
//! the close is seen).

use std::io::{self, Write};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::tail::Line;
use crate::config::{AuditSink, SinkTarget, SyslogTransport};

/// RFC 5424 facility 13, "log audit".
const FACILITY: u8 = 13;

enum Connection {
    Udp(UdpSocket),
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

pub struct Syslog {
    transport: SyslogTransport,
    address: String,
    server_name: rustls::pki_types::ServerName<'static>,
    tls: Option<TlsConnector>,
    timeout: Duration,
    hostname: String,
    procid: String,
    connection: Option<Connection>,
}

impl Syslog {
    pub fn new(sink: &AuditSink) -> io::Result<Syslog> {
        let SinkTarget::Syslog {
            transport,
            address,
            server_name,
            ca,
        } = &sink.target
        else {
            return Err(io::Error::other("not a syslog sink"));
        };
        let tls = match transport {
            SyslogTransport::Tls => Some(connector(ca.as_deref())?),
            _ => None,
        };
        let server_name = rustls::pki_types::ServerName::try_from(server_name.clone())
            .map_err(|e| io::Error::other(format!("{server_name}: {e}")))?;
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| !h.is_empty() && h.is_ascii() && !h.contains(' '))
            .unwrap_or_else(|| "-".into());
        Ok(Syslog {
            transport: *transport,
            address: address.clone(),
            server_name,
            tls,
            timeout: sink.timeout,
            hostname,
            procid: std::process::id().to_string(),
            connection: None,
        })
    }

    /// Sends `batch`; an error drops the connection (the next call makes a new one).
    pub async fn send(&mut self, batch: &[Line]) -> io::Result<()> {
        let result = self.try_send(batch).await;
        if result.is_err() {
            self.connection = None;
        }
        result
    }

    async fn try_send(&mut self, batch: &[Line]) -> io::Result<()> {
        if let Some(connection) = self.connection.as_mut() {
            if closed(connection).await {
                self.connection = None;
            }
        }
        if self.connection.is_none() {
            self.connection = Some(self.connect().await?);
        }
        let timeout = self.timeout;
        let mut frames = Vec::new();
        let Some(connection) = self.connection.as_mut() else {
            return Err(io::Error::other("no connection"));
        };
        match connection {
            Connection::Udp(socket) => {
                for line in batch {
                    let message = message(&self.hostname, &self.procid, &line.text);
                    within(timeout, socket.send(message.as_bytes())).await?;
                }
                return Ok(());
            }
            Connection::Tcp(_) | Connection::Tls(_) => {
                for line in batch {
                    let message = message(&self.hostname, &self.procid, &line.text);
                    write!(frames, "{} ", message.len())?;
                    frames.extend_from_slice(message.as_bytes());
                }
            }
        }
        match connection {
            Connection::Tcp(stream) => within(timeout, stream.write_all(&frames)).await?,
            Connection::Tls(stream) => {
                within(timeout, stream.write_all(&frames)).await?;
                within(timeout, stream.flush()).await?;
            }
            Connection::Udp(_) => {}
        }
        // A receiver that went away while the batch was written answers it with a reset.
        tokio::time::sleep(Duration::from_millis(1)).await;
        if closed(connection).await {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "the receiver closed the connection",
            ));
        }
        Ok(())
    }

    async fn connect(&self) -> io::Result<Connection> {
        match self.transport {
            SyslogTransport::Udp => {
                let socket = UdpSocket::bind(if self.address.starts_with('[') {
                    "[::]:0"
                } else {
                    "0.0.0.0:0"
                })
                .await?;
                socket.connect(&self.address).await?;
                Ok(Connection::Udp(socket))
            }
            SyslogTransport::Tcp => {
                let stream = within(self.timeout, TcpStream::connect(&self.address)).await?;
                stream.set_nodelay(true)?;
                Ok(Connection::Tcp(stream))
            }
            SyslogTransport::Tls => {
                let stream = within(self.timeout, TcpStream::connect(&self.address)).await?;
                stream.set_nodelay(true)?;
                let Some(tls) = self.tls.as_ref() else {
                    return Err(io::Error::other("no TLS settings"));
                };
                let stream =
                    within(self.timeout, tls.connect(self.server_name.clone(), stream)).await?;
                Ok(Connection::Tls(Box::new(stream)))
            }
        }
    }
}

/// Whether the receiver closed (or reset) the connection. A syslog receiver sends nothing, so
/// anything readable is the end (or a TLS close).
async fn closed(connection: &mut Connection) -> bool {
    let mut byte = [0u8; 64];
    let read = match connection {
        Connection::Udp(_) => return false,
        Connection::Tcp(stream) => {
            tokio::time::timeout(Duration::ZERO, stream.read(&mut byte)).await
        }
        Connection::Tls(stream) => {
            tokio::time::timeout(Duration::ZERO, stream.read(&mut byte)).await
        }
    };
    matches!(read, Ok(Ok(0)) | Ok(Err(_)))
}

async fn within<T>(
    timeout: Duration,
    work: impl std::future::Future<Output = io::Result<T>>,
) -> io::Result<T> {
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "syslog receiver timed out"))?
}

/// The CAs of `ca` (PEM), or the system's roots without it.
fn connector(ca: Option<&std::path::Path>) -> io::Result<TlsConnector> {
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(path) => {
            for der in crate::pem::read_certs(path).map_err(io::Error::other)? {
                roots.add(der.into()).map_err(io::Error::other)?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// The RFC 5424 message of one record: `<PRI>1 TIMESTAMP HOST portcullis PID EVENT - JSON`.
/// Refusals and failures are warnings, the rest informational.
pub fn message(hostname: &str, procid: &str, record: &str) -> String {
    let ts = string_field(record, "ts").unwrap_or("-");
    let event = string_field(record, "event")
        .filter(|e| e.len() <= 32 && e.bytes().all(|b| b.is_ascii_graphic()))
        .unwrap_or("-");
    let warning = record.contains("\"decision\":\"deny\"")
        || event.ends_with("-failed")
        || event.ends_with("-refused")
        || event.ends_with("-rejected")
        || event == "unclean-shutdown";
    let severity = if warning { 4 } else { 6 };
    format!(
        "<{}>1 {ts} {hostname} portcullis {procid} {event} - {record}",
        FACILITY * 8 + severity
    )
}

/// The value of a top-level string field the writer wrote (`"key":"value"`, no escapes in
/// the fields read here).
fn string_field<'a>(record: &'a str, key: &str) -> Option<&'a str> {
    let needle = format!("\"{key}\":\"");
    let start = record.find(&needle)? + needle.len();
    let end = record[start..].find('"')?;
    Some(&record[start..start + end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_follow_rfc_5424() {
        let record = r#"{"seq":7,"ts":"2026-12-03T10:00:00.000Z","event":"access-denied","decision":"deny","prev":"x","hash":"y"}"#;
        assert_eq!(
            message("proxy-1", "42", record),
            format!(
                "<108>1 2026-12-03T10:00:00.000Z proxy-1 portcullis 42 access-denied - {record}"
            )
        );
        let allowed =
            r#"{"seq":8,"ts":"2026-12-03T10:00:01.000Z","event":"access","decision":"allow"}"#;
        assert!(message("h", "1", allowed).starts_with("<110>1 "));
        assert!(message("h", "1", "{}").starts_with("<110>1 - h portcullis 1 - - {}"));
    }
}
