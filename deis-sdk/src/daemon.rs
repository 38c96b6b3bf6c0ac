//! `deisd`: the whole platform on embedded defaults, in one process and one data
//! directory. The reference binary only parses flags and calls [`Daemon::start`];
//! integrators can do the same to embed a complete platform.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use deis_core::artifact::ArtifactStore;
use deis_core::platform::{Platform, PlatformConfig, RegistrationMode};
use deis_core::scheduler::{Capacity, LocalScheduler, LocalSchedulerConfig, Scheduler};
use deis_core::store::{RedbStore, Store};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::controller::{self, ApiLimits};
use crate::publisher::{Publisher, PublisherConfig};
use crate::router::{Router, RouterConfig};

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
    stop: watch::Sender<bool>,
    servers: Vec<JoinHandle<()>>,
}

impl Daemon {
    /// Opens the data directory, starts every component and binds both listeners.
    /// Units of existing apps are converged on what the store says.
    pub async fn start(config: DaemonConfig) -> Result<Self, DaemonError> {
        let data = &config.data_dir;
        std::fs::create_dir_all(data).map_err(|source| DaemonError::DataDir { path: data.clone(), source })?;
        let store: Arc<dyn Store> = RedbStore::open(&data.join("store.redb"))?;
        let mut sched_config = LocalSchedulerConfig::new(data.join("scheduler"));
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

        let router = Arc::new(Router::new(store.clone(), RouterConfig::new(config.domain.clone())));
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
        let app = controller::router(platform.clone(), limits);
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
        Ok(Self { api_addr, router_addr, platform, scheduler, publisher: Some(publisher), stop, servers })
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
        tracing::info!("deisd stopped");
    }
}
