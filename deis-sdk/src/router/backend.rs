//! One backend address and its pool of idle keep-alive connections.
//!
//! A backend connection is not a task of its own: its hyper driver future travels with
//! it ([`Conn`]) and is polled by whichever client connection is using it, while it
//! waits for the response and while it streams the response body. A request therefore
//! costs no cross-task (and no cross-thread) wake-ups, only socket readiness. Idle
//! connections in the pool are not polled; one the backend closed meanwhile is noticed
//! (its driver finishes) when it is checked out, and skipped.

use std::cell::Cell;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::TrySendError;
use hyper::client::conn::http1::{Builder, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::body::RequestBody;

thread_local! {
    /// Index of the router worker running on this thread (0 elsewhere).
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// Marks this thread as router worker `index`: it uses that worker's connection pools.
pub(crate) fn set_worker_index(index: usize) {
    WORKER.set(index);
}

/// The router worker running on this thread (0 outside workers).
pub(crate) fn worker_index() -> usize {
    WORKER.get()
}

/// The future that runs a backend connection's HTTP/1 state machine (`Connection`
/// with upgrades; boxed because hyper does not name that type).
type Driver = Pin<Box<dyn Future<Output = hyper::Result<()>> + Send>>;

/// A connection to a backend: the request handle and the driver that must be polled
/// for anything to move on it.
pub(crate) struct Conn {
    sender: SendRequest<RequestBody>,
    /// `None` once the connection has ended.
    driver: Option<Driver>,
    addr: SocketAddr,
}

impl Conn {
    /// Polls the driver; returns `Ready` once the connection has ended (closed by the
    /// backend, failed, or upgraded).
    pub fn poll_driver(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(driver) = self.driver.as_mut() else { return Poll::Ready(()) };
        match driver.as_mut().poll(cx) {
            Poll::Ready(result) => {
                if let Err(e) = result {
                    tracing::debug!(backend = %self.addr, error = %e, "backend connection ended with an error");
                }
                // Dropping the driver hands any request still queued on it back to its
                // sender (as "not sent"), so waiting on a response never hangs.
                self.driver = None;
                Poll::Ready(())
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// Whether the connection has ended or can't take a request any more.
    pub fn is_closed(&self) -> bool {
        self.driver.is_none() || self.sender.is_closed()
    }

    /// Waits until the connection can take a request; `false` if it ended instead.
    async fn ready(&mut self) -> bool {
        std::future::poll_fn(|cx| {
            // The driver first: it is what tells the sender that the previous exchange
            // is complete.
            if self.poll_driver(cx).is_ready() {
                return Poll::Ready(false);
            }
            self.sender.poll_ready(cx).map(|r| r.is_ok())
        })
        .await
    }

    /// Sends a request and waits for the response head, driving the connection
    /// meanwhile (which also streams the request body).
    pub async fn send(
        &mut self,
        req: Request<RequestBody>,
    ) -> Result<Response<Incoming>, TrySendError<Request<RequestBody>>> {
        let mut response = std::pin::pin!(self.sender.try_send_request(req));
        let driver = &mut self.driver;
        let addr = self.addr;
        std::future::poll_fn(|cx| {
            if let Poll::Ready(r) = response.as_mut().poll(cx) {
                return Poll::Ready(r);
            }
            if let Some(d) = driver.as_mut()
                && let Poll::Ready(result) = d.as_mut().poll(cx)
            {
                if let Err(e) = result {
                    tracing::debug!(backend = %addr, error = %e, "backend connection ended with an error");
                }
                *driver = None;
            }
            // The driver may just have delivered the response, or (having ended) the
            // error; a dropped driver answers queued requests with "not sent".
            response.as_mut().poll(cx)
        })
        .await
    }

    /// Gives up the driver, for a connection that switched protocols: it must run to
    /// completion for the upgrade to finish.
    pub fn into_driver(self) -> Option<Driver> {
        self.driver
    }
}

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
    conn: Conn,
    since: Instant,
}

/// Settings of a backend's connection pool.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PoolSettings {
    /// Number of router workers; each has its own pool per backend.
    pub workers: usize,
    /// Most idle connections kept (per worker).
    pub max_idle: usize,
    /// Idle connections older than this are closed instead of reused.
    pub idle_timeout: Duration,
    /// Limit of a TCP connect.
    pub connect_timeout: Duration,
}

/// One worker's idle connections, on a cache line of its own so that workers never
/// contend for it.
#[repr(align(128))]
struct Slot(Mutex<Vec<Idle>>);

/// A backend (one unit's address) with its idle connections.
///
/// Each router worker has its own pool: a connection is registered with the event
/// loop of the worker that opened it and is only ever used by that worker.
/// Connections are kept last-in first-out, so the most recently used (least likely to
/// have been closed by the backend) is reused first, and when the top one is too old
/// all of them are.
pub(crate) struct Backend {
    /// Where the unit listens.
    pub addr: SocketAddr,
    settings: PoolSettings,
    idle: Box<[Slot]>,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend").field("addr", &self.addr).finish()
    }
}

impl Backend {
    /// A backend with an empty pool.
    pub fn new(addr: SocketAddr, settings: PoolSettings) -> Self {
        let idle = (0..settings.workers.max(1)).map(|_| Slot(Mutex::new(Vec::new()))).collect();
        Self { addr, settings, idle }
    }

    /// The calling worker's pool.
    fn pool(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        let slot = &self.idle[worker_index() % self.idle.len()];
        slot.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes an idle connection that is still open, if there is one.
    fn checkout(&self) -> Option<Conn> {
        let mut idle = self.pool();
        while let Some(conn) = idle.pop() {
            if conn.since.elapsed() > self.settings.idle_timeout {
                // LIFO: everything below is older still.
                idle.clear();
                return None;
            }
            if !conn.conn.is_closed() {
                return Some(conn.conn);
            }
        }
        None
    }

    /// A pooled connection that is ready for a request, or a new one.
    pub async fn acquire(&self) -> Result<Conn, ConnectError> {
        while let Some(mut conn) = self.checkout() {
            // Pooled connections were returned when their response ended, so they are
            // ready now or in a moment; one that was closed meanwhile ends here.
            if conn.ready().await {
                return Ok(conn);
            }
        }
        self.connect().await
    }

    /// Returns a connection whose last response is complete to the pool.
    pub fn checkin(&self, conn: Conn) {
        if conn.is_closed() {
            return;
        }
        // Taken before the lock: the clock read is the most expensive part.
        let since = Instant::now();
        let mut idle = self.pool();
        if idle.len() < self.settings.max_idle {
            idle.push(Idle { conn, since });
        }
    }

    /// Opens a new connection.
    pub async fn connect(&self) -> Result<Conn, ConnectError> {
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
        Ok(Conn { sender, driver: Some(Box::pin(conn.with_upgrades())), addr })
    }

    /// Number of idle pooled connections of each worker (for tests).
    #[cfg(test)]
    pub fn idle_counts(&self) -> Vec<usize> {
        self.idle.iter().map(|s| s.0.lock().unwrap_or_else(|e| e.into_inner()).len()).collect()
    }

    /// Number of idle pooled connections, all workers together (for tests).
    #[cfg(test)]
    pub fn idle_count(&self) -> usize {
        self.idle.iter().map(|s| s.0.lock().unwrap_or_else(|e| e.into_inner()).len()).sum()
    }
}
