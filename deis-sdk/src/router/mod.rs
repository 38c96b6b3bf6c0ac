//! The HTTP router: a reverse proxy that routes requests by `Host` to apps' web units.
//!
//! Hosts are `<app>.<domain>` for every app, plus each custom domain (`domains/` records;
//! `*.example.com` matches one label). The reserved platform host
//! ([`RouterConfig::platform_host`], `deis.<domain>` by convention) goes to the
//! controller API (and the TTY broker it embeds), whatever apps and domains say. An app's backends are its `web` (or `cmd`, for
//! image apps) endpoints, which the [publisher](crate::publisher) writes under
//! `endpoints/`. The table is loaded from the store and kept live by watching it; the
//! request path reads it without locks.
//!
//! The router serves with [`RouterConfig::workers`] threads (one per core by default),
//! each with its own single-threaded event loop, like nginx's worker processes. The
//! acceptor hands each client connection to the worker with the fewest open ones;
//! the connection, the backend connections it uses and their pools stay on that
//! worker, so a proxied request involves no cross-thread wake-up. Routes, stats and
//! configuration are shared.
//!
//! Requests are spread round-robin over an app's backends, over pooled keep-alive
//! connections, spoken to with the router's own HTTP/1.1 codec ([`h1`]). A backend that
//! refuses or times out a connect is skipped for the next one; a request whose head
//! could not be written is sent again, and a body-less idempotent request whose
//! connection dies before any answer is replayed on the next backend (at most once per
//! backend). `Connection: upgrade` requests (WebSocket) are passed through.
//! The router answers itself with a plain-text explanation when it can't proxy:
//! 404 (no app at this host), 503 (app has no running web unit), 502 (no unit
//! answered), 504 (response timeout), 413 (body over the limit).
//!
//! ```no_run
//! # async fn run(store: std::sync::Arc<dyn deis_core::Store>) -> std::io::Result<()> {
//! use deis_sdk::router::{Router, RouterConfig};
//! let router = Router::new(store, RouterConfig::new("deis.example.com"));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! router.serve(listener, async { tokio::signal::ctrl_c().await.ok(); }).await
//! # }
//! ```

mod backend;
mod body;
pub mod h1;
mod policy;
mod proxy;
mod server;
mod table;
mod tls;
mod watcher;

pub(crate) use table::ROUTED_PROC_TYPES;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use deis_core::Store;
use tokio::net::TcpListener;
use tokio::sync::watch;

use backend::PoolSettings;
use table::RoutingTable;
use tls::SniTable;
pub use tls::TlsListener;

/// Settings of a [`Router`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RouterConfig {
    /// The platform domain: app `hello` is served at `hello.<domain>`. Empty means
    /// only custom domains are routed.
    pub domain: String,
    /// Number of worker threads serving connections (each runs its own event loop and
    /// backend pools). At least 1.
    pub workers: usize,
    /// Limit of a TCP connect to a backend; past it the next backend is tried.
    pub connect_timeout: Duration,
    /// Limit on the wait for a backend's response head (`None`: wait as long as the
    /// client does). Past it the client gets 504. Enforced by each client connection's
    /// watchdog (no timer per request): the 504 comes between 1 and 1.25 x the limit.
    pub response_timeout: Option<Duration>,
    /// Largest request body forwarded, in bytes (`None`: no limit; bodies are streamed,
    /// never buffered). Larger bodies get 413.
    pub max_request_body: Option<u64>,
    /// Limit on receiving a request's headers; also closes client connections idle
    /// between requests for this long.
    pub header_read_timeout: Duration,
    /// Most idle keep-alive connections kept per backend and worker.
    pub max_idle_per_backend: usize,
    /// Idle backend connections older than this are closed rather than reused.
    pub backend_idle_timeout: Duration,
    /// On shutdown, how long open connections may take to finish their request.
    pub shutdown_grace: Duration,
    /// The reserved platform host and the controller API address it routes to (see
    /// [`RouterConfig::with_platform_backend`]). It wins over any app or custom domain.
    /// `None` (the default): no platform host.
    pub platform_host: Option<(String, SocketAddr)>,
    /// Proxies (load balancers) in front of the router whose `X-Forwarded-For`,
    /// `X-Forwarded-Proto` and `X-Real-IP` are believed (for an app's allow-list and
    /// passed on to units). From anyone else those headers are replaced with what the
    /// connection says. Empty (the default): the TCP peer is the client.
    pub trusted_proxies: Vec<deis_core::AddressRange>,
    /// The port clients reach HTTPS on, for the redirect of apps that enforce HTTPS
    /// (default 443; the platform assembly sets its TLS listener's port).
    pub https_port: u16,
    /// Limit on a client's TLS handshake on the HTTPS listener; past it the
    /// connection is closed. After the handshake the same header/idle timeout as on
    /// plain HTTP applies.
    pub tls_handshake_timeout: Duration,
    /// Where per-app traffic (requests by status class, latency, bytes) is counted
    /// (`None`, the default: not counted). Counting is a few atomic adds per request.
    pub metrics: Option<Arc<crate::telemetry::RouterMetrics>>,
}

impl RouterConfig {
    /// Defaults for a platform domain: one worker per available core, 3 s connect
    /// timeout, 60 s response timeout, no body limit, 30 s header/idle timeout, 256
    /// idle connections per backend (and worker) kept up to 60 s, 10 s shutdown grace.
    pub fn new(domain: impl Into<String>) -> Self {
        Self {
            domain: domain.into().trim_end_matches('.').to_ascii_lowercase(),
            workers: std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
            connect_timeout: Duration::from_secs(3),
            response_timeout: Some(Duration::from_secs(60)),
            max_request_body: None,
            header_read_timeout: Duration::from_secs(30),
            max_idle_per_backend: 256,
            backend_idle_timeout: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(10),
            platform_host: None,
            trusted_proxies: Vec::new(),
            https_port: 443,
            tls_handshake_timeout: Duration::from_secs(10),
            metrics: None,
        }
    }

    /// Routes the platform host, [`platform_host`]`(domain)`, to the controller API at
    /// `addr`: `deis` clients (and `deis run` sessions, through the embedded TTY broker)
    /// reach the platform through the routing mesh.
    pub fn with_platform_backend(mut self, addr: SocketAddr) -> Self {
        self.platform_host = Some((platform_host(&self.domain), addr));
        self
    }
}

/// The reserved platform host of `domain`: `deis.<domain>` (just `deis` for an empty
/// domain). `deis` is a reserved app name, so no app's default host collides with it.
pub fn platform_host(domain: &str) -> String {
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    if domain.is_empty() { "deis".to_string() } else { format!("deis.{domain}") }
}

/// Counters of a router since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct RouterStats {
    /// Requests received.
    pub requests: u64,
    /// 400: no usable `Host`.
    pub bad_request: u64,
    /// 404: no app at the host.
    pub not_found: u64,
    /// 503: the app has no routed unit.
    pub no_backend: u64,
    /// 502: no backend answered.
    pub bad_gateway: u64,
    /// 504: a backend did not answer in time.
    pub gateway_timeout: u64,
    /// 413: the body was over the limit.
    pub too_large: u64,
    /// Backend connects that failed (each was followed by a try on the next backend).
    pub connect_failures: u64,
    /// Requests replayed after their connection died before answering.
    pub retries: u64,
    /// Connections upgraded (WebSocket and other protocols).
    pub upgrades: u64,
    /// Requests answered by the app's settings instead of a unit: 403 (allow-list),
    /// 301 (HTTPS enforced) or 503 (maintenance).
    pub policy_answers: u64,
}

#[derive(Debug, Default)]
struct Stats {
    /// Requests received, counted per worker (the only per-request counter, kept off
    /// shared cache lines).
    requests: Box<[PaddedCounter]>,
    bad_request: AtomicU64,
    not_found: AtomicU64,
    no_backend: AtomicU64,
    bad_gateway: AtomicU64,
    gateway_timeout: AtomicU64,
    too_large: AtomicU64,
    connect_failures: AtomicU64,
    retries: AtomicU64,
    upgrades: AtomicU64,
    /// Requests answered by an app's policy (allow-list, HTTPS redirect, maintenance).
    policy_answers: AtomicU64,
}

/// A counter on a cache line of its own.
#[derive(Debug, Default)]
#[repr(align(128))]
struct PaddedCounter(AtomicU64);

impl Stats {
    fn new(workers: usize) -> Self {
        Self { requests: (0..workers).map(|_| PaddedCounter::default()).collect(), ..Self::default() }
    }

    /// Counts a request received by the calling worker.
    fn count_request(&self) {
        let slot = &self.requests[backend::worker_index() % self.requests.len()];
        slot.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// A routed host, as listed by [`Router::routes`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Route {
    /// Host name (`hello.deis.example.com`, `www.example.com`, `*.example.com`).
    pub host: String,
    /// App id.
    pub app: String,
    /// Addresses of the app's web units.
    pub backends: Vec<SocketAddr>,
}

/// State shared by the watcher, the accept loop and every request.
#[derive(Debug)]
struct Shared {
    config: RouterConfig,
    pool: PoolSettings,
    table: ArcSwap<RoutingTable>,
    /// Certificates by domain, for TLS handshakes.
    sni: Arc<ArcSwap<SniTable>>,
    stats: Stats,
    synced: watch::Sender<bool>,
}

/// The HTTP router. Cheap to clone; clones share routes, pools and stats.
#[derive(Debug, Clone)]
pub struct Router {
    store: Arc<dyn Store>,
    shared: Arc<Shared>,
}

impl Router {
    /// A router reading routes from `store`. Nothing runs until [`Router::serve`].
    pub fn new(store: Arc<dyn Store>, config: RouterConfig) -> Self {
        let workers = config.workers.max(1);
        let pool = PoolSettings {
            workers,
            max_idle: config.max_idle_per_backend,
            idle_timeout: config.backend_idle_timeout,
            connect_timeout: config.connect_timeout,
        };
        let shared = Shared {
            config,
            pool,
            table: ArcSwap::from_pointee(RoutingTable::default()),
            sni: Arc::new(ArcSwap::from_pointee(SniTable::default())),
            stats: Stats::new(workers),
            synced: watch::channel(false).0,
        };
        Self { store, shared: Arc::new(shared) }
    }

    /// Serves HTTP/1.1 on `listener` until `shutdown` resolves, then stops accepting
    /// and gives open connections [`RouterConfig::shutdown_grace`] to finish.
    ///
    /// Connections are accepted by this future (on the caller's runtime, with the route
    /// watcher) and served by [`RouterConfig::workers`] threads of the router's own,
    /// each a single-threaded tokio runtime. Dropping the future also stops the
    /// workers, which still give open connections the grace period.
    ///
    /// The routes are loaded from the store before the first connection is accepted
    /// (connections wait in the listen backlog meanwhile) and followed live after;
    /// store failures are retried with backoff while serving the last known routes.
    /// Call it once per router.
    pub async fn serve(&self, listener: TcpListener, shutdown: impl Future<Output = ()> + Send) -> std::io::Result<()> {
        self.serve_with_tls(Some(listener), None, shutdown).await
    }

    /// Like [`Router::serve`], on a plain HTTP listener, an HTTPS listener
    /// ([`TlsListener`]), or both, with the same workers, routes and limits.
    ///
    /// On HTTPS the router terminates TLS (1.2 and 1.3, ALPN `http/1.1`) within
    /// [`RouterConfig::tls_handshake_timeout`], presenting the certificate attached to
    /// the client's SNI name (`deis certs:attach`; changes apply to new handshakes
    /// without a restart, open connections keep theirs) or else the listener's
    /// fallback certificate. Requests over it are forwarded with
    /// `X-Forwarded-Proto: https` and are not redirected by `tls:enable`.
    pub async fn serve_with_tls(
        &self,
        plain: Option<TcpListener>,
        tls: Option<TlsListener>,
        shutdown: impl Future<Output = ()> + Send,
    ) -> std::io::Result<()> {
        let watcher = tokio::spawn(watcher::run(self.store.clone(), self.shared.clone(), self.shared.synced.clone()));
        let _stop_watcher = AbortOnDrop(watcher);
        tokio::pin!(shutdown);
        tokio::select! {
            () = self.synced() => {}
            () = &mut shutdown => return Ok(()),
        }
        if let Some(addr) = plain.as_ref().and_then(|l| l.local_addr().ok()) {
            tracing::info!(%addr, domain = %self.shared.config.domain, "router: serving HTTP");
        }
        let tls = tls.map(|t| {
            if let Ok(addr) = t.listener.local_addr() {
                tracing::info!(%addr, https_port = self.shared.config.https_port, "router: serving HTTPS");
            }
            let config = tls::server_config(self.shared.sni.clone(), t.fallback);
            (t.listener, tokio_rustls::TlsAcceptor::from(config))
        });
        server::serve(plain, tls, self.shared.clone(), shutdown).await
    }

    /// Resolves once the routes have been loaded from the store (by a running
    /// [`Router::serve`]).
    pub async fn synced(&self) {
        let mut rx = self.shared.synced.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// The configuration.
    pub fn config(&self) -> &RouterConfig {
        &self.shared.config
    }

    /// Counters since the router was created.
    pub fn stats(&self) -> RouterStats {
        let s = &self.shared.stats;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        RouterStats {
            requests: s.requests.iter().map(|c| get(&c.0)).sum(),
            bad_request: get(&s.bad_request),
            not_found: get(&s.not_found),
            no_backend: get(&s.no_backend),
            bad_gateway: get(&s.bad_gateway),
            gateway_timeout: get(&s.gateway_timeout),
            too_large: get(&s.too_large),
            connect_failures: get(&s.connect_failures),
            retries: get(&s.retries),
            upgrades: get(&s.upgrades),
            policy_answers: get(&s.policy_answers),
        }
    }

    /// The current routes, sorted by host.
    pub fn routes(&self) -> Vec<Route> {
        self.shared
            .table
            .load()
            .describe()
            .into_iter()
            .map(|(host, app, backends)| Route { host, app, backends })
            .collect()
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
