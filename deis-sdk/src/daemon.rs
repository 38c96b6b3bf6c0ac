//! `deisd`: the whole platform on embedded defaults, in one process and one data
//! directory. The reference binary only parses flags and calls [`Daemon::start`];
//! integrators can do the same to embed a complete platform.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use deis_core::artifact::ArtifactStore;
use deis_core::logs::{DEFAULT_QUEUE_LINES, LogStore, RingConfig, RingLogStore, UnitLogSink};
use deis_core::platform::{Platform, PlatformConfig, RegistrationMode};
use deis_core::scheduler::{Capacity, LocalScheduler, LocalSchedulerConfig, Scheduler};
use deis_core::store::{RedbStore, Store};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::controller::{self, ApiLimits};
use crate::logger::{DrainSet, DrainSetConfig, DrainingLogStore, SyslogConfig, SyslogServer};
use crate::publisher::{Publisher, PublisherConfig};
use crate::router::{Router, RouterConfig};
use crate::tty::{LogAudit, TtyConfig, TtyService, ViaRouter, attach_router};

/// Settings of a [`Daemon`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DaemonConfig {
    /// Holds the store file, build artifacts and the scheduler's state.
    pub data_dir: PathBuf,
    /// Controller API listen address.
    pub api_addr: SocketAddr,
    /// Router listen address.
    pub router_addr: SocketAddr,
    /// Platform domain: apps answer at `<app>.<domain>`.
    pub domain: String,
    /// What this node offers to units (default: this machine's cores and memory).
    pub capacity: Capacity,
    /// Who may register.
    pub registration: RegistrationMode,
    /// Largest source upload (`deis deploy`), in bytes.
    pub max_upload_bytes: usize,
    /// Where the embedded syslog listener takes app logs, on UDP and TCP (default
    /// 127.0.0.1:5514); `None`: no syslog listener.
    pub syslog_addr: Option<SocketAddr>,
    /// Log lines kept per app (default 1000).
    pub log_lines_per_app: usize,
    /// Where app logs are kept.
    pub log_store: LogStoreChoice,
    /// Secret signing `deis run` session tokens (at least 32 bytes), shared with any
    /// standalone `deis-tty-broker --secret`. `None` (default): a random secret per
    /// start, so session tokens don't survive a restart (they live 60 s anyway).
    pub tty_secret: Option<Vec<u8>>,
    /// Settings of the embedded TTY broker (idle timeout, maximum session length,
    /// allowed origins, ...). Its `via_router` is set by the daemon: sessions attach
    /// through the router at `deis.<domain>`.
    pub tty: TtyConfig,
}

/// Fewest bytes of a [`DaemonConfig::tty_secret`].
pub const MIN_TTY_SECRET_BYTES: usize = 32;

/// Which [`LogStore`] the daemon keeps app logs in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum LogStoreChoice {
    /// In memory ([`RingLogStore`]); lost on restart.
    #[default]
    Ring,
    /// In Redis at this URL (`redis://host:port`); survives restarts and can be shared.
    /// Needs deis-sdk's `redis` feature.
    Redis(String),
}

impl DaemonConfig {
    /// Defaults: API on 127.0.0.1:8000, router on 127.0.0.1:8080, domain `localhost`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            api_addr: SocketAddr::from(([127, 0, 0, 1], 8000)),
            router_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            domain: "localhost".into(),
            capacity: Capacity::of_this_machine(),
            registration: RegistrationMode::Enabled,
            max_upload_bytes: 256 << 20,
            syslog_addr: Some(SocketAddr::from(([127, 0, 0, 1], 5514))),
            log_lines_per_app: 1000,
            log_store: LogStoreChoice::Ring,
            tty_secret: None,
            tty: TtyConfig::default(),
        }
    }
}

/// Errors starting the daemon.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The data directory can't be created or used.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The store can't be opened.
    #[error("opening the store: {0}")]
    Store(#[from] deis_core::store::StoreError),
    /// The scheduler can't start.
    #[error("starting the scheduler: {0}")]
    Scheduler(#[from] deis_core::scheduler::SchedulerError),
    /// The log store can't be opened.
    #[error("opening the log store: {0}")]
    LogStore(String),
    /// The syslog listener can't start.
    #[error("starting the syslog listener on {addr}: {source}; pick another with --syslog-addr")]
    Syslog {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: crate::logger::SyslogError,
    },
    /// The TTY broker can't start.
    #[error("starting the TTY broker: {0}")]
    Tty(#[from] deis_core::tty::TtyError),
    /// The TTY session secret is too short.
    #[error(
        "the TTY session secret has {0} bytes; it needs at least {MIN_TTY_SECRET_BYTES} (e.g. `openssl rand -hex 32`)"
    )]
    TtySecret(usize),
    /// A listen address is taken or invalid.
    #[error("listening on {addr} ({what}): {source}; pick another with --{what}-addr")]
    Listen {
        /// Which listener.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// A running platform. Stop it with [`Daemon::shutdown`].
#[derive(Debug)]
pub struct Daemon {
    api_addr: SocketAddr,
    router_addr: SocketAddr,
    platform: Arc<Platform>,
    scheduler: Arc<LocalScheduler>,
    publisher: Option<Publisher>,
    logs: Arc<dyn LogStore>,
    unit_logs: Arc<UnitLogSink>,
    drains: Arc<DrainSet>,
    events: Option<(watch::Sender<bool>, JoinHandle<()>)>,
    syslog: Option<SyslogServer>,
    stop: watch::Sender<bool>,
    servers: Vec<JoinHandle<()>>,
}

impl Daemon {
    /// Opens the data directory, starts every component and binds both listeners.
    /// Units of existing apps are converged on what the store says.
    pub async fn start(config: DaemonConfig) -> Result<Self, DaemonError> {
        let data = &config.data_dir;
        let signer = match &config.tty_secret {
            Some(secret) if secret.len() < MIN_TTY_SECRET_BYTES => return Err(DaemonError::TtySecret(secret.len())),
            Some(secret) => deis_core::tty::token::TokenSigner::new(secret),
            None => deis_core::tty::token::TokenSigner::random(),
        };
        std::fs::create_dir_all(data).map_err(|source| DaemonError::DataDir { path: data.clone(), source })?;
        let store: Arc<dyn Store> = RedbStore::open(&data.join("store.redb"))?;
        // Logs: the store, drains forwarding from it, and units' output into it.
        let base_logs: Arc<dyn LogStore> = open_log_store(&config).await?;
        let drains = Arc::new(DrainSet::new(DrainSetConfig::default()));
        let logs: Arc<dyn LogStore> = Arc::new(DrainingLogStore::new(base_logs, drains.clone()));
        let unit_logs = UnitLogSink::start(logs.clone(), DEFAULT_QUEUE_LINES);
        let mut sched_config = LocalSchedulerConfig::new(data.join("scheduler"));
        sched_config.output = unit_logs.clone();
        let unit_logs_handle = unit_logs.clone();
        sched_config.capacity = config.capacity;
        let node = sched_config.node_name.clone();
        let scheduler = LocalScheduler::new(sched_config).await?;
        let dyn_scheduler: Arc<dyn Scheduler> = scheduler.clone();

        let artifacts = ArtifactStore::new(data.join("builds"));
        let platform = Platform::new(PlatformConfig {
            store: store.clone(),
            scheduler: dyn_scheduler.clone(),
            artifacts,
            domain: config.domain.clone(),
            registration: config.registration,
            logs: Some(unit_logs.clone()),
        });

        let api_listener = TcpListener::bind(config.api_addr).await.map_err(|source| DaemonError::Listen {
            what: "api",
            addr: config.api_addr,
            source,
        })?;
        let router_listener = TcpListener::bind(config.router_addr).await.map_err(|source| DaemonError::Listen {
            what: "router",
            addr: config.router_addr,
            source,
        })?;
        let api_addr = api_listener.local_addr().map_err(|source| DaemonError::Listen {
            what: "api",
            addr: config.api_addr,
            source,
        })?;
        let router_addr = router_listener.local_addr().map_err(|source| DaemonError::Listen {
            what: "router",
            addr: config.router_addr,
            source,
        })?;

        let publisher = Publisher::start(store.clone(), dyn_scheduler, PublisherConfig::new(node));
        let (stop, stopped) = watch::channel(false);
        let mut servers = vec![];

        let syslog = match config.syslog_addr {
            Some(addr) => {
                let sc = SyslogConfig { udp_addr: Some(addr), tcp_addr: Some(addr), ..SyslogConfig::default() };
                let server = SyslogServer::start(sc, logs.clone()).await;
                Some(server.map_err(|source| DaemonError::Syslog { addr, source })?)
            }
            None => None,
        };
        // Unit events are logged until the units are stopped too (see `shutdown`).
        let (events_stop, mut estop) = watch::channel(false);
        let p = platform.clone();
        let events_task = tokio::spawn(async move {
            p.log_unit_events(async move {
                let _ = estop.wait_for(|s| *s).await;
            })
            .await;
        });
        let (st, ds, mut dstop) = (store.clone(), drains.clone(), stopped.clone());
        servers.push(tokio::spawn(async move {
            controller::sync_drains(st, ds, async move {
                let _ = dstop.wait_for(|s| *s).await;
            })
            .await;
        }));

        // The platform host `deis.<domain>` goes to the controller API (and so to the
        // embedded TTY broker): `deis run` sessions come through the routing mesh.
        let router_config = RouterConfig::new(config.domain.clone()).with_platform_backend(reachable(api_addr));
        let platform_host = router_config.platform_host.as_ref().map(|(host, _)| host.clone());
        let router = Arc::new(Router::new(store.clone(), router_config));
        let mut rstop = stopped.clone();
        servers.push(tokio::spawn(async move {
            let shutdown = async move {
                let _ = rstop.wait_for(|s| *s).await;
            };
            if let Err(e) = router.serve(router_listener, shutdown).await {
                tracing::error!(error = %e, "router stopped");
            }
        }));

        let limits = ApiLimits { max_upload_bytes: config.max_upload_bytes, ..ApiLimits::default() };
        // The TTY broker is embedded: `deis run` sessions attach on the API listener.
        let tty_broker =
            deis_core::tty::LocalTtyBroker::new(deis_core::tty::LocalTtyConfig::with_state_dir(data)).await?;
        let mut tty_config = config.tty.clone();
        tty_config.via_router =
            platform_host.map(|host| ViaRouter { router: reachable(router_addr).to_string(), host });
        let tty = Arc::new(
            TtyService::embedded(Arc::new(tty_broker), signer, tty_config)
                .with_audit(Arc::new(LogAudit::new(logs.clone()))),
        );
        let app = controller::router(platform.clone(), limits)
            .merge(attach_router(tty.clone()))
            .layer(axum::Extension(tty))
            .layer(axum::Extension(controller::FollowShutdown(stopped.clone())));
        let mut astop = stopped.clone();
        servers.push(tokio::spawn(async move {
            let shutdown = async move {
                let _ = astop.wait_for(|s| *s).await;
            };
            if let Err(e) = axum::serve(api_listener, app).with_graceful_shutdown(shutdown).await {
                tracing::error!(error = %e, "controller API stopped");
            }
        }));

        // Converge units on the store's desired state (after a restart, or a crash).
        let p = platform.clone();
        tokio::spawn(async move { p.reconcile_all().await });

        tracing::info!(%api_addr, %router_addr, data_dir = %data.display(), domain = %config.domain, "deisd started");
        Ok(Self {
            api_addr,
            router_addr,
            platform,
            scheduler,
            publisher: Some(publisher),
            logs,
            unit_logs: unit_logs_handle,
            drains,
            syslog,
            events: Some((events_stop, events_task)),
            stop,
            servers,
        })
    }

    /// Where the controller API listens.
    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    /// Where the router listens.
    pub fn router_addr(&self) -> SocketAddr {
        self.router_addr
    }

    /// The controller logic, for embedding.
    pub fn platform(&self) -> &Arc<Platform> {
        &self.platform
    }

    /// The app log store (drains forward what is appended to it).
    pub fn logs(&self) -> &Arc<dyn LogStore> {
        &self.logs
    }

    /// Where the syslog listener takes UDP, if it runs.
    pub fn syslog_udp_addr(&self) -> Option<SocketAddr> {
        self.syslog.as_ref().and_then(SyslogServer::udp_addr)
    }

    /// Where the syslog listener takes TCP, if it runs.
    pub fn syslog_tcp_addr(&self) -> Option<SocketAddr> {
        self.syslog.as_ref().and_then(SyslogServer::tcp_addr)
    }

    /// Graceful stop: stop accepting, let requests finish, stop every unit
    /// (SIGTERM, then SIGKILL after the stop timeout), withdraw endpoints.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        for s in self.servers.drain(..) {
            let _ = s.await;
        }
        if let Some(p) = self.publisher.take() {
            p.shutdown().await;
        }
        self.scheduler.shutdown().await;
        // The units' last words and their `stopped` events go into the log too.
        self.unit_logs.flush().await;
        if let Some((stop, task)) = self.events.take() {
            let _ = stop.send(true);
            let _ = task.await;
        }
        if let Some(s) = self.syslog.take() {
            s.shutdown().await;
        }
        self.drains.shutdown();
        tracing::info!("deisd stopped");
    }
}

/// An address clients on this host can connect to: `0.0.0.0:p` / `[::]:p` become the
/// loopback address with the same port.
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::from(([127, 0, 0, 1], addr.port())),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, addr.port()))
        }
        _ => addr,
    }
}

/// Opens the log store `config` asks for.
async fn open_log_store(config: &DaemonConfig) -> Result<Arc<dyn LogStore>, DaemonError> {
    if config.log_lines_per_app == 0 {
        return Err(DaemonError::LogStore("--log-lines-per-app must be at least 1".into()));
    }
    match &config.log_store {
        LogStoreChoice::Ring => Ok(Arc::new(RingLogStore::with_config(RingConfig {
            lines_per_app: config.log_lines_per_app,
            ..RingConfig::default()
        }))),
        #[cfg(feature = "redis")]
        LogStoreChoice::Redis(url) => {
            let mut rc = crate::logger::RedisLogStoreConfig::new(url.clone());
            rc.lines_per_app = config.log_lines_per_app;
            let store = crate::logger::RedisLogStore::connect(rc)
                .await
                .map_err(|e| DaemonError::LogStore(format!("Redis at {url}: {e}; check --redis-url")))?;
            Ok(Arc::new(store))
        }
        #[cfg(not(feature = "redis"))]
        LogStoreChoice::Redis(_) => Err(DaemonError::LogStore(
            "this build has no Redis support (build deis-sdk/deisd with the `redis` feature) - use --log-store ring"
                .into(),
        )),
    }
}

/// Resolves on the first SIGTERM or SIGINT: what the reference daemons wait for before
/// a graceful [`Daemon::shutdown`].
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
}
