//! Listening sockets: bound by Portcullis before it reports anything, so a busy port ends the
//! start with a clear message and a non-zero exit instead of a process that looks healthy and
//! serves nothing.
//!
//! Pingora binds a service's listeners only when the service starts, retries a busy port for
//! 30 s and then panics in a service thread while the process lives on. Here every address is
//! bound on the main thread first (before any daemonising fork, so `--daemon` exits non-zero
//! too) and handed to Pingora through its listening-fd table, the same table a zero-downtime
//! upgrade fills with the old process's sockets. Pingora then never binds by itself.
//!
//! During an upgrade (`--upgrade`) the sockets come from the old process. An address it did not
//! hand over (a listener added to the config) is bound with a short retry
//! ([`HANDOVER_RETRY`]), then the process exits if it is still taken.

use std::net::{SocketAddr, TcpListener};
use std::os::fd::IntoRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::{ListenFds, ShutdownWatch};
use pingora::services::{Service, ServiceReadyNotifier, ServiceWithDependents};

/// How long an upgrading process waits for an address the old process did not hand over.
pub const HANDOVER_RETRY: Duration = Duration::from_secs(5);
const HANDOVER_STEP: Duration = Duration::from_millis(250);

/// A configured address that could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {address} ({key}): {source}{}", hint(source))]
pub struct BindError {
    /// The config key that names the address.
    pub key: &'static str,
    /// The address.
    pub address: SocketAddr,
    /// What the operating system said.
    #[source]
    pub source: std::io::Error,
}

fn hint(error: &std::io::Error) -> &'static str {
    match error.kind() {
        std::io::ErrorKind::AddrInUse => {
            "; another process is listening there: stop it, or choose another port (for a zero-downtime upgrade start the new process with --upgrade)"
        }
        std::io::ErrorKind::PermissionDenied => {
            "; ports below 1024 need CAP_NET_BIND_SERVICE (the systemd unit grants it)"
        }
        std::io::ErrorKind::AddrNotAvailable => "; no local interface has this address",
        _ => "",
    }
}

/// Sockets bound for one service, keyed as Pingora keys its fd table (`ip:port`).
#[derive(Debug, Default)]
pub struct Bound {
    sockets: Vec<(String, TcpListener)>,
}

impl Bound {
    /// Binds every address, or names the first that cannot be bound.
    pub fn bind(key: &'static str, addresses: &[SocketAddr]) -> Result<Bound, BindError> {
        let mut sockets = Vec::with_capacity(addresses.len());
        for &address in addresses {
            let listener = bind_one(address).map_err(|source| BindError {
                key,
                address,
                source,
            })?;
            sockets.push((address.to_string(), listener));
        }
        Ok(Bound { sockets })
    }

    /// Adds the sockets of `other`.
    pub fn extend(&mut self, other: Bound) {
        self.sockets.extend(other.sockets);
    }
}

/// `std` sets `SO_REUSEADDR` on Unix, as Pingora does: a port in TIME_WAIT is free, a port
/// someone listens on is not. Non-blocking, as tokio requires of a socket it adopts.
fn bind_one(address: SocketAddr) -> std::io::Result<TcpListener> {
    let listener = TcpListener::bind(address)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Set once every listener of the proxy service is open; `/readyz` reads it.
#[derive(Debug, Clone, Default)]
pub struct Listening(Arc<AtomicBool>);

impl Listening {
    /// True once the service's sockets are in place and accepting.
    pub fn is_open(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    fn open(&self) {
        self.0.store(true, Ordering::Release);
    }
}

/// A Pingora listening service whose sockets were bound by [`Bound::bind`].
pub struct Gated<S> {
    inner: S,
    bound: Bound,
    upgrade: bool,
    listening: Listening,
}

impl<S: Service> Gated<S> {
    /// Wraps `inner`; `listening` is set when its sockets are handed over.
    pub fn new(inner: S, bound: Bound, upgrade: bool, listening: Listening) -> Self {
        Gated {
            inner,
            bound,
            upgrade,
            listening,
        }
    }

    /// Puts every socket this service needs into Pingora's table: the pre-bound ones, and in
    /// an upgrade those the old process did not hand over. Exits the process when one cannot
    /// be had: a proxy that does not listen must not keep running.
    async fn hand_over(&mut self, table: &ListenFds) {
        for (address, listener) in self.bound.sockets.drain(..) {
            let mut fds = table.lock();
            if fds.get(&address).is_none() {
                fds.add(address, listener.into_raw_fd());
            }
        }
        if !self.upgrade {
            return;
        }
        for address in self.inner.listen_addresses().unwrap_or_default() {
            if table.lock().get(&address).is_some() {
                continue;
            }
            match bind_with_retry(&address).await {
                Ok(listener) => table.lock().add(address, listener.into_raw_fd()),
                Err(error) => {
                    tracing::error!(%address, %error, "cannot listen after the upgrade handover; exiting");
                    std::process::exit(1);
                }
            }
        }
    }
}

async fn bind_with_retry(address: &str) -> std::io::Result<TcpListener> {
    let parsed: SocketAddr = address.parse().map_err(|_| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "not an ip:port address")
    })?;
    let deadline = tokio::time::Instant::now() + HANDOVER_RETRY;
    loop {
        match bind_one(parsed) {
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrInUse
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(HANDOVER_STEP).await;
            }
            other => return other,
        }
    }
}

#[async_trait]
impl<S: Service> ServiceWithDependents for Gated<S> {
    async fn start_service(
        &mut self,
        fds: Option<ListenFds>,
        shutdown: ShutdownWatch,
        listeners_per_fd: usize,
        ready_notifier: ServiceReadyNotifier,
    ) {
        let Some(table) = fds else {
            tracing::error!(
                service = self.inner.name(),
                "no listening-fd table; exiting"
            );
            std::process::exit(1);
        };
        self.hand_over(&table).await;
        // The sockets listen already (the kernel completes handshakes into the backlog);
        // Pingora adopts them from the table without binding.
        self.listening.open();
        ready_notifier.notify_ready();
        self.inner
            .start_service(Some(table), shutdown, listeners_per_fd)
            .await;
    }

    fn name(&self) -> &str {
        self.inner.name()
    }

    fn threads(&self) -> Option<usize> {
        self.inner.threads()
    }

    fn listen_addresses(&self) -> Option<Vec<String>> {
        self.inner.listen_addresses()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_port_names_key_address_and_fix() {
        let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = taken.local_addr().expect("addr");
        let error = Bound::bind("server.https.listen", &[address]).expect_err("busy");
        let message = error.to_string();
        assert!(message.contains("server.https.listen"), "{message}");
        assert!(message.contains(&address.to_string()), "{message}");
        assert!(
            message.contains("another process is listening"),
            "{message}"
        );
    }

    #[test]
    fn free_ports_are_bound_and_listening() {
        let probe = TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = probe.local_addr().expect("addr");
        drop(probe);
        let bound = Bound::bind("admin.listen", &[address]).expect("free");
        assert_eq!(bound.sockets.len(), 1);
        assert_eq!(bound.sockets[0].0, address.to_string());
        std::net::TcpStream::connect(address).expect("accepts into the backlog");
    }
}
