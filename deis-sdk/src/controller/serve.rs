//! Serving the controller API on a listener, so that slow or idle clients can't take
//! it down: each connection has [`ApiLimits::header_read_timeout`] to send a request
//! head (and the same to start the next one when kept alive), and at most
//! [`ApiLimits::max_connections`] are open at once. Past the cap, new connections are
//! accepted and closed at once: the listen queue does not fill, and the descriptors
//! the process has left stay for its other listeners (router, syslog, units).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::ApiLimits;

/// How long to wait after a failed `accept` (out of descriptors, mostly) before the
/// next one, so the loop doesn't spin while nothing can be accepted.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Serves `app` on `listener` until `until` completes, then lets open requests finish
/// (connections are closed as their requests end; the caller bounds how long).
pub async fn serve(listener: TcpListener, app: axum::Router, limits: ApiLimits, until: impl Future<Output = ()>) {
    let max = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    let slots = Arc::new(Semaphore::new(max));
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).keep_alive(true).header_read_timeout(limits.header_read_timeout);
    let service = TowerToHyperService::new(app);
    tokio::pin!(until);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut until => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "the controller API cannot accept a connection");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, max = limits.max_connections, "controller API at its connection cap: closed");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let mut conn = builder.serve_connection(TokioIo::new(stream), service.clone()).with_upgrades();
        let stopping = stopping.clone();
        tokio::spawn(async move {
            let ended = tokio::select! {
                ended = &mut conn => ended,
                () = stopped(stopping) => {
                    // Finish the request in progress, then close.
                    std::pin::Pin::new(&mut conn).graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = ended {
                tracing::debug!(%peer, error = %e, "controller API connection ended");
            }
            drop(permit);
        });
    }
    drop(listener);
    let _ = stop.send(true);
    // Every connection holds a slot until it ends.
    let _ = slots.acquire_many(u32::try_from(max).unwrap_or(u32::MAX)).await;
}

/// Serves `app` on `listener` under `limits` until `until` completes, then lets open
/// requests finish for at most `grace`.
pub async fn serve_with_grace(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    limits: ApiLimits,
    until: impl std::future::Future<Output = ()> + Send + 'static,
    grace: Duration,
) {
    let (stopping, stopped) = tokio::sync::oneshot::channel::<()>();
    let until = async move {
        until.await;
        let _ = stopping.send(());
    };
    let serving = serve(listener, app, limits, until);
    tokio::pin!(serving);
    tokio::select! {
        () = &mut serving => {}
        () = async {
            if stopped.await.is_ok() {
                tokio::time::sleep(grace).await;
            } else {
                std::future::pending::<()>().await;
            }
        } => tracing::warn!(?grace, "requests still open after the shutdown grace period: stopping anyway"),
    }
}

/// Completes once `rx` says the server stops.
async fn stopped(mut rx: tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}
