//! One backend address and its pool of idle keep-alive connections.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hyper::client::conn::http1::{Builder, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::body::RequestBody;

/// Why a new connection to a backend could not be made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    /// The TCP connect failed (refused, unreachable, ...).
    #[error("connecting to {addr}: {source}")]
    Io {
        /// Backend address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The TCP connect did not finish in time.
    #[error("connecting to {addr} timed out after {timeout:?}")]
    Timeout {
        /// Backend address.
        addr: SocketAddr,
        /// The connect timeout.
        timeout: Duration,
    },
    /// The HTTP/1 handshake failed.
    #[error("HTTP handshake with {addr}: {source}")]
    Handshake {
        /// Backend address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: hyper::Error,
    },
}

struct Idle {
    sender: SendRequest<RequestBody>,
    since: Instant,
}

/// Settings of a backend's connection pool.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PoolSettings {
    /// Most idle connections kept.
    pub max_idle: usize,
    /// Idle connections older than this are closed instead of reused.
    pub idle_timeout: Duration,
    /// Limit of a TCP connect.
    pub connect_timeout: Duration,
}

/// A backend (one unit's address) with its idle connections.
///
/// Connections are kept last-in first-out, so the most recently used (least likely to
/// have been closed by the backend) is reused first, and when the top one is too old
/// all of them are.
pub(crate) struct Backend {
    /// Where the unit listens.
    pub addr: SocketAddr,
    settings: PoolSettings,
    idle: Mutex<Vec<Idle>>,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend").field("addr", &self.addr).finish()
    }
}

impl Backend {
    /// A backend with an empty pool.
    pub fn new(addr: SocketAddr, settings: PoolSettings) -> Self {
        Self { addr, settings, idle: Mutex::new(Vec::new()) }
    }

    /// Takes an idle connection that is still open, if there is one.
    pub fn checkout(&self) -> Option<SendRequest<RequestBody>> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(conn) = idle.pop() {
            if conn.since.elapsed() > self.settings.idle_timeout {
                // LIFO: everything below is older still.
                idle.clear();
                return None;
            }
            if !conn.sender.is_closed() {
                return Some(conn.sender);
            }
        }
        None
    }

    /// Returns a connection whose last response is complete to the pool.
    pub fn checkin(&self, sender: SendRequest<RequestBody>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.settings.max_idle {
            idle.push(Idle { sender, since: Instant::now() });
        }
    }

    /// Opens a new connection and spawns its driver task.
    pub async fn connect(&self) -> Result<SendRequest<RequestBody>, ConnectError> {
        let addr = self.addr;
        let timeout = self.settings.connect_timeout;
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(source)) => return Err(ConnectError::Io { addr, source }),
            Err(_) => return Err(ConnectError::Timeout { addr, timeout }),
        };
        let _ = stream.set_nodelay(true);
        let (sender, conn) = Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|source| ConnectError::Handshake { addr, source })?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(backend = %addr, error = %e, "backend connection ended with an error");
            }
        });
        Ok(sender)
    }

    /// Number of idle pooled connections (for tests and stats).
    #[cfg(test)]
    pub fn idle_count(&self) -> usize {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}
