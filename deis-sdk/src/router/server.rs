//! The serving model: one acceptor (on the caller's runtime) handing client
//! connections to worker threads, each with a single-threaded runtime, which serve
//! them with the proxy service.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::HeaderValue;
use hyper::body::{Body, Frame, SizeHint};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_rustls::TlsAcceptor;

use super::Shared;
use super::backend::set_worker_index;
use super::body::{BoxError, ResponseBody};
use super::proxy::{self, ConnCtx};

/// A connection handed to a worker, and whether it came in on the TLS listener.
type Accepted = (std::net::TcpStream, SocketAddr, bool);

/// The workers as seen by the acceptor.
struct Workers {
    queues: Vec<mpsc::UnboundedSender<Accepted>>,
    /// Open connections per worker.
    open: Arc<[AtomicUsize]>,
    next: usize,
}

impl Workers {
    /// Gives a connection to the worker with the fewest open connections (ties: the
    /// next in turn), so long-lived connections don't pile up on one worker.
    fn dispatch(&mut self, stream: TcpStream, peer: SocketAddr, tls: bool) {
        let n = self.queues.len();
        let start = self.next;
        self.next = (self.next + 1) % n;
        let pick = (0..n).map(|i| (start + i) % n).min_by_key(|&i| self.open[i].load(Ordering::Relaxed)).unwrap_or(0);
        // Workers register the socket with their own event loop.
        let stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(client = %peer, error = %e, "router: could not hand over a connection");
                return;
            }
        };
        self.open[pick].fetch_add(1, Ordering::Relaxed);
        if self.queues[pick].send((stream, peer, tls)).is_err() {
            self.open[pick].fetch_sub(1, Ordering::Relaxed);
            tracing::warn!(worker = pick, "router: worker is gone; connection dropped");
        }
    }
}

/// Starts the workers, accepts on the listeners and hands each connection to a worker
/// until `shutdown` resolves; then waits for the workers, which give their open
/// connections the grace period. Connections from the `tls` listener are handshaken
/// on their worker.
pub(crate) async fn serve(
    plain: Option<TcpListener>,
    tls: Option<(TcpListener, TlsAcceptor)>,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let count = shared.config.workers.max(1);
    let open: Arc<[AtomicUsize]> = (0..count).map(|_| AtomicUsize::new(0)).collect();
    let mut workers = Workers { queues: Vec::with_capacity(count), open: open.clone(), next: 0 };
    let mut finished = Vec::with_capacity(count);
    for index in 0..count {
        let (tx, rx) = mpsc::unbounded_channel();
        let (done_tx, done_rx) = oneshot::channel();
        let (shared, open) = (shared.clone(), open.clone());
        let acceptor = tls.as_ref().map(|(_, a)| a.clone());
        // Dropping `workers` (on return, or if this future is dropped) closes the
        // queues, which tells the workers to finish.
        std::thread::Builder::new().name(format!("deis-router-{index}")).spawn(move || {
            let _ = done_tx.send(run_worker(index, rx, shared, open, acceptor));
        })?;
        workers.queues.push(tx);
        finished.push(done_rx);
    }
    tokio::pin!(shutdown);
    let tls_listener = tls.as_ref().map(|(l, _)| l);
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            (accepted, secure) = accept_either(plain.as_ref(), tls_listener) => match accepted {
                Ok((stream, peer)) => workers.dispatch(stream, peer, secure),
                Err(e) if is_per_connection_error(&e) => {}
                Err(e) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %e, "router: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    drop((plain, tls));
    drop(workers);
    let mut result = Ok(());
    for done in finished {
        match done.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => result = Err(e),
            Err(_) => result = Err(std::io::Error::other("a router worker thread panicked")),
        }
    }
    result
}

/// The next connection from either listener (`true`: the TLS one). A missing
/// listener never yields.
async fn accept_either(
    plain: Option<&TcpListener>,
    tls: Option<&TcpListener>,
) -> (std::io::Result<(TcpStream, SocketAddr)>, bool) {
    async fn accept_on(l: Option<&TcpListener>) -> std::io::Result<(TcpStream, SocketAddr)> {
        match l {
            Some(l) => l.accept().await,
            None => std::future::pending().await,
        }
    }
    tokio::select! {
        r = accept_on(plain) => (r, false),
        r = accept_on(tls) => (r, true),
    }
}

/// One worker: a single-threaded runtime serving the connections it is handed until
/// its queue closes, then giving them the grace period to finish.
fn run_worker(
    index: usize,
    mut queue: mpsc::UnboundedReceiver<Accepted>,
    shared: Arc<Shared>,
    open: Arc<[AtomicUsize]>,
    acceptor: Option<TlsAcceptor>,
) -> std::io::Result<()> {
    set_worker_index(index);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    // Dropping the runtime afterwards cancels whatever outlived the grace period.
    runtime.block_on(async move {
        let mut builder = http1::Builder::new();
        // hyper's own header timeout arms a timer for every request; the connection's
        // watchdog (see `watchdog`) enforces the limit at a fraction of the cost. The
        // timer stays for hyper's other (unused here) timeouts.
        builder.timer(TokioTimer::new()).keep_alive(true).header_read_timeout(None);
        let builder = Arc::new(builder);
        let (stop_tx, stop_rx) = watch::channel(false);
        while let Some((stream, peer, secure)) = queue.recv().await {
            let open = OpenGuard { open: open.clone(), index };
            match (TcpStream::from_std(stream), acceptor.as_ref().filter(|_| secure)) {
                (Ok(stream), None) => {
                    let _ = stream.set_nodelay(true);
                    let conn = serve_connection(stream, peer, false, shared.clone(), builder.clone(), stop_rx.clone());
                    tokio::spawn(async move {
                        conn.await;
                        drop(open);
                    });
                }
                (Ok(stream), Some(acceptor)) => {
                    let _ = stream.set_nodelay(true);
                    let handshake = acceptor.accept(stream);
                    let (shared, builder, stop) = (shared.clone(), builder.clone(), stop_rx.clone());
                    tokio::spawn(async move {
                        match tokio::time::timeout(shared.config.tls_handshake_timeout, handshake).await {
                            Ok(Ok(tls)) => serve_connection(tls, peer, true, shared, builder, stop).await,
                            Ok(Err(e)) => tracing::debug!(client = %peer, error = %e, "router: TLS handshake failed"),
                            Err(_) => tracing::debug!(client = %peer, "router: no TLS handshake within the timeout"),
                        }
                        drop(open);
                    });
                }
                (Err(e), _) => tracing::debug!(client = %peer, error = %e, "router: could not register a connection"),
            }
        }
        drop(stop_rx);
        stop_tx.send_replace(true);
        if tokio::time::timeout(shared.config.shutdown_grace, stop_tx.closed()).await.is_err() {
            tracing::warn!(grace = ?shared.config.shutdown_grace, "router: connections still open after the grace period");
        }
    });
    Ok(())
}

/// Counts a connection as open on its worker while alive.
struct OpenGuard {
    open: Arc<[AtomicUsize]>,
    index: usize,
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.open[self.index].fetch_sub(1, Ordering::Relaxed);
    }
}

fn is_per_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted | WouldBlock)
}

async fn serve_connection<S>(
    stream: S,
    peer: SocketAddr,
    secure: bool,
    shared: Arc<Shared>,
    builder: Arc<http1::Builder>,
    mut stop: watch::Receiver<bool>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let client_ip = HeaderValue::try_from(peer.ip().to_string()).expect("an IP address is a valid header value");
    let header_read_timeout = shared.config.header_read_timeout;
    let response_timeout = shared.config.response_timeout;
    let trusted = shared.config.trusted_proxies.iter().any(|r| r.contains(peer.ip()));
    let ctx =
        Arc::new(ConnCtx { shared, client_ip, peer_ip: peer.ip(), secure, trusted, activity: Activity::default() });
    let watched = ctx.clone();
    let service = service_fn(move |req| proxy::handle(Busy::start(ctx.clone()), req));
    let conn = builder.serve_connection(TokioIo::new(stream), service).with_upgrades();
    tokio::pin!(conn);
    let watchdog = watchdog(&watched.activity, header_read_timeout, response_timeout);
    tokio::pin!(watchdog);
    // The stop flag only ever turns true, so any change (or a dropped sender) means stop.
    let finished = tokio::select! {
        // The connection first: it is what nearly every wake-up is for.
        biased;
        r = conn.as_mut() => Some(r),
        _ = stop.changed() => None,
        () = watchdog.as_mut() => {
            tracing::debug!(client = %peer, timeout = ?header_read_timeout,
                "router: no request headers within the header read timeout; closing the connection");
            return;
        }
    };
    let result = match finished {
        Some(r) => r,
        None => {
            conn.as_mut().graceful_shutdown();
            tokio::select! {
                biased;
                r = conn.as_mut() => r,
                () = watchdog.as_mut() => return,
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(client = %peer, error = %e, "router: client connection ended with an error");
    }
}

/// What a client connection's watchdog looks at: updated by the connection's requests
/// with two uncontended atomic operations each (the connection lives on one thread).
#[derive(Debug, Default)]
pub(crate) struct Activity {
    /// Requests whose head arrived and whose response has not been fully handed to
    /// hyper yet (a response body still streaming counts).
    busy: AtomicU32,
    /// Request heads received so far (wrapping).
    heads: AtomicU32,
    /// A request is waiting for its backend's response head (see [`ResponseDeadline`]).
    awaiting: AtomicBool,
    /// Set by the watchdog: the waiting request is past the response timeout.
    expired: AtomicBool,
}

/// Marks the connection's request as waiting for a response head while alive, so that
/// the connection's watchdog enforces [`RouterConfig::response_timeout`](super::RouterConfig)
/// on it: no timer per request.
pub(crate) struct ResponseDeadline<'a>(&'a Activity);

impl<'a> ResponseDeadline<'a> {
    pub(crate) fn start(activity: &'a Activity) -> Self {
        activity.expired.store(false, Ordering::Relaxed);
        activity.awaiting.store(true, Ordering::Relaxed);
        Self(activity)
    }

    /// Polls `fut`, the wait: `Some` once it completes, `None` once the watchdog
    /// found it past the response timeout.
    pub(crate) fn poll<F: Future>(&self, fut: Pin<&mut F>, cx: &mut Context<'_>) -> Poll<Option<F::Output>> {
        if self.0.expired.load(Ordering::Relaxed) {
            return Poll::Ready(None);
        }
        fut.poll(cx).map(Some)
    }
}

impl Drop for ResponseDeadline<'_> {
    fn drop(&mut self) {
        self.0.awaiting.store(false, Ordering::Relaxed);
    }
}

/// Marks a request as in progress on its connection until dropped (with the response
/// body, or with the request if that is dropped first).
pub(crate) struct Busy(Arc<ConnCtx>);

impl Busy {
    /// The connection's state.
    pub(crate) fn ctx(&self) -> &ConnCtx {
        &self.0
    }

    fn start(ctx: Arc<ConnCtx>) -> Self {
        ctx.activity.heads.fetch_add(1, Ordering::Relaxed);
        ctx.activity.busy.fetch_add(1, Ordering::Relaxed);
        Self(ctx)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.activity.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that keeps its request counted as in progress while it streams.
pub(crate) struct TrackedBody {
    body: ResponseBody,
    _busy: Busy,
    /// Where the body's bytes are counted, if traffic is.
    traffic: Option<Arc<crate::telemetry::traffic::AppTrafficCounters>>,
}

impl TrackedBody {
    pub(crate) fn new(
        body: ResponseBody,
        busy: Busy,
        traffic: Option<Arc<crate::telemetry::traffic::AppTrafficCounters>>,
    ) -> Self {
        Self { body, _busy: busy, traffic }
    }
}

impl Body for TrackedBody {
    type Data = bytes::Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Self::Data>, BoxError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        if let (Some(t), Poll::Ready(Some(Ok(frame)))) = (&this.traffic, &polled)
            && let Some(data) = frame.data_ref()
        {
            t.add_bytes(data.len() as u64);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The connection's one timer. It resolves once the connection has gone
/// `header_timeout` without a request in progress and without a new request head: a
/// client that sends its headers too slowly (slowloris) or stays idle between requests
/// for that long. Requests in progress (waiting for the backend, streaming a body
/// either way) are never cut off by it. It also ends a request's wait for its response
/// head after `response_timeout` (see [`ResponseDeadline`]).
///
/// It checks every quarter of `header_timeout` (and eighth of `response_timeout`), so
/// an idle connection is closed between 1 and 1.25 x `header_timeout` after its last
/// response (or after it was accepted), and a wait for a response ends between 1 and
/// 1.25 x `response_timeout`. That is one timer per connection, re-armed a few times
/// per period, instead of timers armed and disarmed for every request.
async fn watchdog(activity: &Activity, header_timeout: Duration, response_timeout: Option<Duration>) {
    let tick =
        response_timeout.map_or(header_timeout / 4, |r| (header_timeout / 4).min(r / 8)).max(Duration::from_millis(1));
    let mut seen = activity.heads.load(Ordering::Relaxed);
    let (mut idle, mut awaited) = (Duration::ZERO, Duration::ZERO);
    let sleep = tokio::time::sleep(tick);
    tokio::pin!(sleep);
    loop {
        sleep.as_mut().await;
        let next = sleep.deadline() + tick;
        sleep.as_mut().reset(next);
        let heads = activity.heads.load(Ordering::Relaxed);
        // The same request (its head came before the last tick) still waiting: it has
        // waited at least `awaited`.
        if heads == seen && activity.awaiting.load(Ordering::Relaxed) {
            awaited += tick;
            if response_timeout.is_some_and(|limit| awaited >= limit) {
                awaited = Duration::ZERO;
                activity.expired.store(true, Ordering::Relaxed);
                // The request runs in this task: have it polled to see the flag.
                std::future::poll_fn(|cx| {
                    cx.waker().wake_by_ref();
                    Poll::Ready(())
                })
                .await;
            }
        } else {
            awaited = Duration::ZERO;
        }
        if activity.busy.load(Ordering::Relaxed) > 0 || heads != seen {
            // Busy, or a request came and went during the last tick.
            seen = heads;
            idle = Duration::ZERO;
            continue;
        }
        idle += tick;
        if idle >= header_timeout {
            return;
        }
    }
}
