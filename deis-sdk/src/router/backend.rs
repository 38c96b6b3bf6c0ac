//! One backend address and its pool of idle keep-alive connections.
//!
//! A backend connection is a socket and its read buffer ([`Conn`]), driven directly by
//! the client connection using it: the request head is written, the response head
//! read and parsed ([`super::h1`]), and the body streamed, by the client connection's
//! own task. A request therefore costs no cross-task (and no cross-thread) wake-ups,
//! only socket readiness, and no other task, channel or timer.

use std::cell::Cell;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::net::TcpStream;

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

/// A keep-alive connection to a backend, with the bytes read from it and not yet
/// consumed. It is used by one request at a time, on the worker that opened it, and
/// never polled while idle in the pool: a connection the backend closed meanwhile is
/// noticed by its read readiness when it is checked out, at no syscall's cost.
pub(crate) struct Conn {
    pub stream: TcpStream,
    /// Read from the backend, not yet consumed (a response head, body bytes).
    pub buf: BytesMut,
    /// The request head being written (kept to reuse its allocation).
    pub out: Vec<u8>,
    pub addr: SocketAddr,
    /// Bytes to make room for before the next read (grows while reads fill it).
    read_size: usize,
}

/// First read size of a connection; doubled while reads fill it, up to [`MAX_READ`].
const MIN_READ: usize = 8 * 1024;
const MAX_READ: usize = 256 * 1024;

impl Conn {
    fn new(stream: TcpStream, addr: SocketAddr) -> Self {
        Self { stream, buf: BytesMut::new(), out: Vec::new(), addr, read_size: MIN_READ }
    }

    /// Whether an idle connection can still take a request: not closed by the backend,
    /// and nothing unsolicited arrived on it.
    fn is_reusable(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        match self.stream.poll_read_ready(&mut cx) {
            // Nothing happened since the last read drained the socket.
            Poll::Pending => true,
            // Readable: end of stream, stray bytes, or a readiness left over from a read
            // that filled the buffer exactly. Only the last one is still usable.
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
            }
            Poll::Ready(Err(_)) => false,
        }
    }

    /// Reads more from the backend into `buf`; `Ok(0)` at the end of the stream.
    pub fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < self.read_size / 2 {
            self.buf.reserve(self.read_size);
        }
        let room = self.buf.capacity() - self.buf.len();
        let n = std::task::ready!(tokio_util::io::poll_read_buf(Pin::new(&mut self.stream), cx, &mut self.buf))?;
        if n == room && self.read_size < MAX_READ {
            self.read_size *= 2;
        }
        Poll::Ready(Ok(n))
    }

    /// Reads more from the backend into `buf`; `Ok(0)` at the end of the stream.
    pub async fn fill(&mut self) -> std::io::Result<usize> {
        std::future::poll_fn(|cx| self.poll_fill(cx)).await
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
    pub fn checkout(&self) -> Option<Conn> {
        let mut idle = self.pool();
        while let Some(conn) = idle.pop() {
            if conn.since.elapsed() > self.settings.idle_timeout {
                // LIFO: everything below is older still.
                idle.clear();
                return None;
            }
            let mut conn = conn.conn;
            if conn.is_reusable() {
                return Some(conn);
            }
        }
        None
    }

    /// Returns a connection whose last response is complete to the pool.
    pub fn checkin(&self, conn: Conn) {
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
        Ok(Conn::new(stream, addr))
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
