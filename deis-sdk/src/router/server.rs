//! The serving model: worker threads, each with a single-threaded runtime, accepting
//! client connections from a shared listener and serving them with the proxy service.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};

use super::Shared;
use super::backend::set_worker_index;
use super::proxy::{self, ConnCtx};

/// Sets the stop flag when dropped, so the workers stop whichever way `serve` ends.
struct StopOnDrop(watch::Sender<bool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.send_replace(true);
    }
}

/// Starts the workers on `listener`, waits for `shutdown`, then for the workers to
/// finish their connections (each gives them the grace period).
pub(crate) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let workers = shared.config.workers.max(1);
    // Every worker registers its own handle of the listening socket with its own
    // event loop; the kernel hands each new connection to one of them.
    let listener = listener.into_std()?;
    let stop = StopOnDrop(watch::channel(false).0);
    let mut finished = Vec::with_capacity(workers);
    for index in 0..workers {
        let listener = listener.try_clone()?;
        let shared = shared.clone();
        let stop_rx = stop.0.subscribe();
        let (done_tx, done_rx) = oneshot::channel();
        std::thread::Builder::new().name(format!("deis-router-{index}")).spawn(move || {
            let _ = done_tx.send(run_worker(index, listener, shared, stop_rx));
        })?;
        finished.push(done_rx);
    }
    drop(listener);
    shutdown.await;
    stop.0.send_replace(true);
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

/// One worker: a single-threaded runtime accepting and serving until `stop`.
fn run_worker(
    index: usize,
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    set_worker_index(index);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    // Dropping the runtime afterwards cancels whatever outlived the grace period.
    runtime.block_on(async move {
        let listener = TcpListener::from_std(listener)?;
        accept_loop(listener, shared, stop).await;
        Ok(())
    })
}

/// Accepts until `stop` turns true (or its sender is gone), then lets open connections
/// finish their current request (up to the configured grace period).
async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).keep_alive(true).header_read_timeout(shared.config.header_read_timeout);
    let builder = Arc::new(builder);
    let (conns_stop_tx, conns_stop_rx) = watch::channel(false);
    loop {
        tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    tokio::spawn(serve_connection(stream, peer, shared.clone(), builder.clone(), conns_stop_rx.clone()));
                }
                Err(e) if is_per_connection_error(&e) => {}
                Err(e) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %e, "router: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    drop(listener);
    drop(conns_stop_rx);
    conns_stop_tx.send_replace(true);
    if tokio::time::timeout(shared.config.shutdown_grace, conns_stop_tx.closed()).await.is_err() {
        tracing::warn!(grace = ?shared.config.shutdown_grace, "router: connections still open after the grace period");
    }
}

fn is_per_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted | WouldBlock)
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    builder: Arc<http1::Builder>,
    mut stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let client_ip = HeaderValue::try_from(peer.ip().to_string()).expect("an IP address is a valid header value");
    let ctx = Arc::new(ConnCtx { shared, client_ip });
    let service = service_fn(move |req| {
        let ctx = ctx.clone();
        async move { Ok::<_, Infallible>(proxy::handle(&ctx, req).await) }
    });
    let conn = builder.serve_connection(TokioIo::new(stream), service).with_upgrades();
    tokio::pin!(conn);
    // The stop flag only ever turns true, so any change (or a dropped sender) means stop.
    let finished = tokio::select! {
        r = conn.as_mut() => Some(r),
        _ = stop.changed() => None,
    };
    let result = match finished {
        Some(r) => r,
        None => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(client = %peer, error = %e, "router: client connection ended with an error");
    }
}
