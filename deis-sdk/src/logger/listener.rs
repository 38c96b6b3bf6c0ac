//! Syslog listeners: UDP (RFC 5426), TCP (RFC 6587) and TLS (RFC 5425), appending what
//! they receive to a [`LogStore`] in batches.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use deis_core::logs::syslog::{FrameDecoder, FrameError, MAX_DRAIN_HOPS, UNROUTED_APP, parse, to_log_line};
use deis_core::logs::{LogLine, LogStore};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use super::counters::IngestCounters;
use super::tls::{TlsError, server_config_from_pem};
use super::tokens::IngestTokens;

/// Most datagrams collected into one append by a UDP worker.
const UDP_BATCH: usize = 512;
/// Bytes read from a TCP connection at once.
const READ_CHUNK: usize = 64 * 1024;
/// Time a TLS client gets to finish its handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The TLS listener's address and certificate.
#[derive(Debug, Clone)]
pub struct TlsListenerConfig {
    /// Listen address.
    pub addr: SocketAddr,
    /// Certificate and key to present.
    pub server_config: Arc<rustls::ServerConfig>,
}

impl TlsListenerConfig {
    /// A TLS listener on `addr` presenting the PEM certificate chain `cert` and key `key`.
    pub fn from_pem_files(addr: SocketAddr, cert: &Path, key: &Path) -> Result<Self, TlsError> {
        Ok(Self { addr, server_config: server_config_from_pem(cert, key)? })
    }
}

/// Settings of a [`SyslogServer`]. Each listener is optional; at least one is needed.
#[derive(Debug, Clone)]
pub struct SyslogConfig {
    /// UDP listen address (one message per datagram).
    pub udp_addr: Option<SocketAddr>,
    /// TCP listen address (octet counting or LF framing, detected per connection).
    pub tcp_addr: Option<SocketAddr>,
    /// TLS listener (RFC 5425).
    pub tls: Option<TlsListenerConfig>,
    /// Largest message accepted, in bytes (default 64 KiB); larger ones are dropped and
    /// counted as oversized.
    pub max_message_bytes: usize,
    /// Most TCP and TLS connections open at once (default 1024); more are refused and
    /// counted.
    pub max_tcp_connections: usize,
    /// A TCP/TLS connection silent this long is closed (default 1 hour; `None`: never).
    /// Keep it long: Docker's syslog driver holds one connection per container.
    pub idle_timeout: Option<Duration>,
    /// Tasks receiving UDP datagrams (default: the number of cores, at most 4).
    pub udp_workers: usize,
    /// Kernel receive buffer asked for the UDP socket (default 8 MiB), to absorb bursts.
    pub udp_recv_buffer_bytes: usize,
    /// The `origin` this platform's drains write
    /// ([`DrainSetConfig::origin`](super::DrainSetConfig::origin)): lines carrying it
    /// came back through a drain pointed at us and are dropped (counted as
    /// `dropped_loop`), as are lines that went through
    /// [`MAX_DRAIN_HOPS`] drains whatever their origin.
    pub own_origin: Option<String>,
    /// When set, a line for an app is taken only with that app's ingest token (in
    /// `[deis@32473 token="…"]` or as the tag's last `/` part); others are dropped and
    /// counted as `dropped_bad_token`. Lines that name no app go to the unrouted log
    /// as before. `None` (the default): no check, for listeners only trusted senders
    /// reach.
    pub ingest_tokens: Option<Arc<IngestTokens>>,
}

impl Default for SyslogConfig {
    /// No listener; limits at their defaults.
    fn default() -> Self {
        Self {
            udp_addr: None,
            tcp_addr: None,
            tls: None,
            max_message_bytes: 64 * 1024,
            max_tcp_connections: 1024,
            idle_timeout: Some(Duration::from_secs(3600)),
            udp_workers: std::thread::available_parallelism().map_or(1, |n| n.get()).min(4),
            udp_recv_buffer_bytes: 8 << 20,
            own_origin: None,
            ingest_tokens: None,
        }
    }
}

/// Errors starting a [`SyslogServer`].
#[derive(Debug, thiserror::Error)]
pub enum SyslogError {
    /// A listen address can't be bound.
    #[error("syslog {transport} listener on {addr}: {source}; is the port taken? pick another address")]
    Bind {
        /// `udp`, `tcp` or `tls`.
        transport: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// No listener was configured.
    #[error("no syslog listener configured: give a UDP, TCP or TLS address")]
    NoListener,
}

/// Running syslog listeners. Dropping it (or [`shutdown`](Self::shutdown)) stops them.
#[derive(Debug)]
pub struct SyslogServer {
    udp_addr: Option<SocketAddr>,
    tcp_addr: Option<SocketAddr>,
    tls_addr: Option<SocketAddr>,
    counters: Arc<IngestCounters>,
    stop: watch::Sender<bool>,
    connections: Arc<Semaphore>,
    max_connections: u32,
    tasks: Vec<JoinHandle<()>>,
}

/// What every listener task shares.
#[derive(Debug)]
struct Ctx {
    sink: Arc<dyn LogStore>,
    counters: Arc<IngestCounters>,
    max_message: usize,
    idle_timeout: Option<Duration>,
    own_origin: Option<String>,
    ingest_tokens: Option<Arc<IngestTokens>>,
    /// Unix seconds of the last store-error warning (rate limit).
    last_warning: AtomicU64,
}

impl Ctx {
    /// The log line of one received message, counted; `None` for an empty one.
    fn line(&self, frame: &[u8], received: SystemTime) -> Option<LogLine> {
        if frame.iter().all(|b| b.is_ascii_whitespace() || *b == 0) {
            return None;
        }
        let c = &self.counters;
        IngestCounters::add(&c.received, 1);
        if frame.len() > self.max_message {
            IngestCounters::add(&c.dropped_oversized, 1);
            return None;
        }
        let msg = parse(frame, received);
        IngestCounters::add(if msg.raw { &c.unparsed } else { &c.parsed }, 1);
        let line = to_log_line(&msg);
        let params = msg.deis_params();
        let ours = || self.own_origin.is_some() && params.origin == self.own_origin;
        if line.hops >= MAX_DRAIN_HOPS || (line.hops > 0 && ours()) {
            IngestCounters::add(&c.dropped_loop, 1);
            return None;
        }
        if let Some(tokens) = &self.ingest_tokens
            && line.app != UNROUTED_APP
            && !tokens.verify(&line.app, params.token.as_deref())
        {
            IngestCounters::add(&c.dropped_bad_token, 1);
            return None;
        }
        Some(line)
    }

    fn frame_error(&self, e: &FrameError, peer: SocketAddr) {
        let c = &self.counters;
        match e {
            FrameError::Oversized { .. } => {
                IngestCounters::add(&c.received, 1);
                IngestCounters::add(&c.dropped_oversized, 1);
            }
            _ => IngestCounters::add(&c.dropped_framing_error, 1),
        }
        tracing::debug!(%peer, "syslog: {e}");
    }

    async fn append(&self, lines: Vec<LogLine>) {
        let n = lines.len() as u64;
        if let Err(e) = self.sink.append(lines).await {
            IngestCounters::add(&self.counters.dropped_store_error, n);
            let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
            if self.last_warning.swap(now, Ordering::Relaxed) != now {
                tracing::warn!("syslog: dropping {n} lines, the log store refused them: {e}");
            }
        }
    }
}

/// Sockets a caller bound for a [`SyslogServer`] (socket activation, tests that pick
/// their own ports); they are used instead of [`SyslogConfig::udp_addr`] and
/// [`SyslogConfig::tcp_addr`].
#[derive(Debug, Default)]
pub struct SyslogSockets {
    /// The UDP socket.
    pub udp: Option<std::net::UdpSocket>,
    /// The TCP listener.
    pub tcp: Option<std::net::TcpListener>,
}

impl SyslogServer {
    /// Binds the configured listeners and starts serving them on the current tokio
    /// runtime, appending to `sink`.
    pub async fn start(config: SyslogConfig, sink: Arc<dyn LogStore>) -> Result<Self, SyslogError> {
        Self::start_on(config, SyslogSockets::default(), sink).await
    }

    /// Like [`start`](Self::start), serving the sockets in `bound` where given and
    /// binding the configured addresses for the others.
    pub async fn start_on(
        config: SyslogConfig,
        bound: SyslogSockets,
        sink: Arc<dyn LogStore>,
    ) -> Result<Self, SyslogError> {
        let SyslogSockets { udp, tcp } = bound;
        if config.udp_addr.is_none()
            && config.tcp_addr.is_none()
            && config.tls.is_none()
            && udp.is_none()
            && tcp.is_none()
        {
            return Err(SyslogError::NoListener);
        }
        let counters = Arc::new(IngestCounters::default());
        let ctx = Arc::new(Ctx {
            sink,
            counters: counters.clone(),
            max_message: config.max_message_bytes.max(1),
            idle_timeout: config.idle_timeout,
            own_origin: config.own_origin.clone(),
            ingest_tokens: config.ingest_tokens.clone(),
            last_warning: AtomicU64::new(0),
        });
        let (stop, _) = watch::channel(false);
        let max_connections =
            u32::try_from(config.max_tcp_connections.clamp(1, Semaphore::MAX_PERMITS)).unwrap_or(u32::MAX);
        let connections = Arc::new(Semaphore::new(max_connections as usize));
        let mut server = Self {
            udp_addr: None,
            tcp_addr: None,
            tls_addr: None,
            counters,
            stop,
            connections,
            max_connections,
            tasks: Vec::new(),
        };
        let udp = match (udp, config.udp_addr) {
            (Some(sock), _) => {
                let addr = sock.local_addr().unwrap_or_else(|_| unspecified());
                let adopted = sock.set_nonblocking(true).and_then(|()| UdpSocket::from_std(sock));
                Some(adopted.map_err(bind_error("udp", addr))?)
            }
            (None, Some(addr)) => Some(UdpSocket::bind(addr).await.map_err(bind_error("udp", addr))?),
            (None, None) => None,
        };
        if let Some(sock) = udp {
            set_recv_buffer(&sock, config.udp_recv_buffer_bytes);
            server.udp_addr = Some(local_addr(&sock, "udp", UdpSocket::local_addr)?);
            let sock = Arc::new(sock);
            for _ in 0..config.udp_workers.max(1) {
                let task = udp_worker(sock.clone(), ctx.clone(), server.stop.subscribe());
                server.tasks.push(tokio::spawn(task));
            }
        }
        let tcp = match (tcp, config.tcp_addr) {
            (Some(listener), _) => {
                let addr = listener.local_addr().unwrap_or_else(|_| unspecified());
                let adopted = listener.set_nonblocking(true).and_then(|()| TcpListener::from_std(listener));
                Some(adopted.map_err(bind_error("tcp", addr))?)
            }
            (None, Some(addr)) => Some(TcpListener::bind(addr).await.map_err(bind_error("tcp", addr))?),
            (None, None) => None,
        };
        if let Some(listener) = tcp {
            server.tcp_addr = Some(local_addr(&listener, "tcp", TcpListener::local_addr)?);
            let task = accept_loop(listener, None, ctx.clone(), server.connections.clone(), server.stop.subscribe());
            server.tasks.push(tokio::spawn(task));
        }
        if let Some(tls) = config.tls {
            let addr = tls.addr;
            let listener = TcpListener::bind(addr).await.map_err(bind_error("tls", addr))?;
            server.tls_addr = Some(local_addr(&listener, "tls", TcpListener::local_addr)?);
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.server_config);
            let task =
                accept_loop(listener, Some(acceptor), ctx.clone(), server.connections.clone(), server.stop.subscribe());
            server.tasks.push(tokio::spawn(task));
        }
        Ok(server)
    }

    /// The bound UDP address, if listening on UDP.
    pub fn udp_addr(&self) -> Option<SocketAddr> {
        self.udp_addr
    }
    /// The bound TCP address, if listening on TCP.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp_addr
    }
    /// The bound TLS address, if listening with TLS.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }
    /// The ingest counters.
    pub fn counters(&self) -> &Arc<IngestCounters> {
        &self.counters
    }

    /// Stops accepting, lets each connection append what it already received, and
    /// waits (at most 5 s) for every listener and connection task to end.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        let wait = async {
            for t in self.tasks.drain(..) {
                let _ = t.await;
            }
            // Connection tasks hold a permit each: all permits back means all ended.
            let _ = self.connections.acquire_many(self.max_connections).await;
        };
        if tokio::time::timeout(Duration::from_secs(5), wait).await.is_err() {
            tracing::warn!("syslog: some connections did not end within 5 s of shutdown");
        }
    }
}

impl Drop for SyslogServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Asks the kernel for a larger UDP receive buffer (privileged `SO_RCVBUFFORCE`
/// first, then `SO_RCVBUF`, which the kernel caps at `net.core.rmem_max`).
/// The error of binding `transport` on `addr`.
fn bind_error(transport: &'static str, addr: SocketAddr) -> impl FnOnce(io::Error) -> SyslogError {
    move |source| SyslogError::Bind { transport, addr, source }
}

fn unspecified() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 0))
}

/// The bound address of a listener, or the bind error naming it.
fn local_addr<T>(
    sock: &T,
    transport: &'static str,
    addr_of: impl Fn(&T) -> io::Result<SocketAddr>,
) -> Result<SocketAddr, SyslogError> {
    addr_of(sock).map_err(bind_error(transport, unspecified()))
}

fn set_recv_buffer(sock: &UdpSocket, bytes: usize) {
    use std::os::fd::AsRawFd;
    let fd = sock.as_raw_fd();
    let size = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: `fd` is a valid open socket owned by `sock` for the duration of the
        // call, and `size` is a live c_int whose exact size is passed.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            return;
        }
    }
}

async fn udp_worker(sock: Arc<UdpSocket>, ctx: Arc<Ctx>, mut stop: watch::Receiver<bool>) {
    // One byte more than the limit, to tell an oversized datagram from a full one.
    let mut buf = vec![0u8; ctx.max_message.min(65_535) + 1];
    let mut batch = Vec::with_capacity(UDP_BATCH);
    loop {
        let first = tokio::select! {
            r = sock.recv_from(&mut buf) => r,
            _ = stop.changed() => return,
        };
        let mut next = first;
        loop {
            match next {
                Ok((n, _)) => {
                    IngestCounters::add(&ctx.counters.bytes_received, n as u64);
                    if let Some(line) = ctx.line(strip_octet_count(&buf[..n]), SystemTime::now()) {
                        batch.push(line);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    tracing::debug!("syslog: UDP receive: {e}");
                    break;
                }
            }
            if batch.len() >= UDP_BATCH {
                break;
            }
            // Collect what is already there without waiting.
            next = sock.try_recv_from(&mut buf);
        }
        if !batch.is_empty() {
            ctx.append(std::mem::replace(&mut batch, Vec::with_capacity(UDP_BATCH))).await;
        }
    }
}

/// A datagram framed as if it were TCP (`LEN SP MSG`, as util-linux `logger
/// --octet-count -d` sends) loses its length prefix when the length matches exactly.
fn strip_octet_count(datagram: &[u8]) -> &[u8] {
    let digits = datagram.iter().take(11).take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 10 || datagram.get(digits) != Some(&b' ') || datagram[0] == b'0' {
        return datagram;
    }
    let rest = &datagram[digits + 1..];
    let len = std::str::from_utf8(&datagram[..digits]).ok().and_then(|d| d.parse::<usize>().ok());
    if len == Some(rest.len()) { rest } else { datagram }
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    ctx: Arc<Ctx>,
    connections: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let (sock, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!("syslog: accepting a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            IngestCounters::add(&ctx.counters.dropped_too_many_connections, 1);
            tracing::debug!(%peer, "syslog: connection refused, too many connections");
            continue;
        };
        IngestCounters::add(&ctx.counters.connections_accepted, 1);
        let (ctx, tls, stop) = (ctx.clone(), tls.clone(), stop.clone());
        tokio::spawn(async move {
            IngestCounters::add(&ctx.counters.connections_open, 1);
            serve_connection(sock, peer, tls, &ctx, stop).await;
            ctx.counters.connections_open.fetch_sub(1, Ordering::Relaxed);
            drop(permit);
        });
    }
}

async fn serve_connection(
    sock: TcpStream,
    peer: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
    ctx: &Ctx,
    stop: watch::Receiver<bool>,
) {
    sock.set_nodelay(true).ok();
    match tls {
        None => read_frames(sock, peer, ctx, stop).await,
        Some(acceptor) => match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(sock)).await {
            Ok(Ok(stream)) => read_frames(stream, peer, ctx, stop).await,
            Ok(Err(e)) => {
                IngestCounters::add(&ctx.counters.dropped_tls_handshake, 1);
                tracing::debug!(%peer, "syslog: TLS handshake failed: {e}");
            }
            Err(_) => {
                IngestCounters::add(&ctx.counters.dropped_tls_handshake, 1);
                tracing::debug!(%peer, "syslog: TLS handshake timed out");
            }
        },
    }
}

/// Reads one connection's frames until it ends, appending each read's frames as one batch.
async fn read_frames<S: AsyncRead + Unpin>(mut s: S, peer: SocketAddr, ctx: &Ctx, mut stop: watch::Receiver<bool>) {
    let mut decoder = FrameDecoder::new(ctx.max_message);
    let mut buf = vec![0u8; READ_CHUNK];
    let mut batch = Vec::new();
    loop {
        let read = async {
            match ctx.idle_timeout {
                Some(t) => tokio::time::timeout(t, s.read(&mut buf)).await.ok(),
                None => Some(s.read(&mut buf).await),
            }
        };
        let read = tokio::select! {
            r = read => r,
            _ = stop.changed() => return,
        };
        let eof = match read {
            None => {
                tracing::debug!(%peer, "syslog: closing an idle connection");
                true
            }
            Some(Ok(0)) => true,
            Some(Ok(n)) => {
                IngestCounters::add(&ctx.counters.bytes_received, n as u64);
                decoder.push(&buf[..n]);
                false
            }
            Some(Err(e)) => {
                tracing::debug!(%peer, "syslog: reading: {e}");
                true
            }
        };
        let received = SystemTime::now();
        while let Some(frame) = decoder.next_frame() {
            match frame {
                Ok(frame) => batch.extend(ctx.line(frame, received)),
                Err(e) => ctx.frame_error(&e, peer),
            }
        }
        if eof && let Some(last) = decoder.finish() {
            match last {
                Ok(frame) => batch.extend(ctx.line(frame, received)),
                Err(e) => ctx.frame_error(&e, peer),
            }
        }
        if !batch.is_empty() {
            ctx.append(std::mem::take(&mut batch)).await;
        }
        if eof || decoder.is_done() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::strip_octet_count;

    #[test]
    fn strips_only_an_exact_octet_count() {
        assert_eq!(strip_octet_count(b"5 <13>x"), b"<13>x");
        assert_eq!(strip_octet_count(b"6 <13>x"), b"6 <13>x");
        assert_eq!(strip_octet_count(b"05 <13>x"), b"05 <13>x");
        assert_eq!(strip_octet_count(b"<13>x"), b"<13>x");
        assert_eq!(strip_octet_count(b"12345678901 x"), b"12345678901 x");
        assert_eq!(strip_octet_count(b"0 "), b"0 ");
        assert_eq!(strip_octet_count(b""), b"");
        assert_eq!(strip_octet_count(b"1 "), b"1 ");
    }
}
