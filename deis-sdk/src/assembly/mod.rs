//! The whole platform, composed: [`Platform::builder`] takes every part as an
//! `Arc<dyn Trait>` you may supply and uses the embedded default where you don't.
//!
//! | slot | trait | embedded default |
//! |---|---|---|
//! | [`store`](PlatformBuilder::store) | [`Store`] | [`RedbStore`](deis_core::store::RedbStore) at `<data dir>/store.redb` |
//! | [`scheduler`](PlatformBuilder::scheduler) | [`Scheduler`] | [`LocalScheduler`] in `<data dir>/scheduler`, its units' output into the log store |
//! | [`log_store`](PlatformBuilder::log_store) | [`LogStore`] | [`RingLogStore`](deis_core::logs::RingLogStore), [`log_lines_per_app`](PlatformBuilder::log_lines_per_app) per app |
//! | [`tty_broker`](PlatformBuilder::tty_broker) | [`TtyBroker`] | [`LocalTtyBroker`] (PTYs and pipes in the app's build) |
//!
//! Listeners are optional and may be handed in bound ([`Listen`], [`SyslogListen`]):
//! the controller API (with the embedded TTY broker's attach route and whatever
//! [`api_routes`](PlatformBuilder::api_routes) adds), the router over HTTP and over
//! HTTPS ([`router_tls`](PlatformBuilder::router_tls), with the platform certificate
//! of [`tls_certificate`](PlatformBuilder::tls_certificate)), syslog, and with
//! feature `builder` the `git push` builder (`git_builder`, off unless set). Embedded
//! service brokers for add-ons go in [`service_broker`](PlatformBuilder::service_broker)
//! (by name; the user-provided broker is always there).
//!
//! ```no_run
//! # async fn demo(my_store: std::sync::Arc<dyn deis_core::Store>) -> Result<(), Box<dyn std::error::Error>> {
//! use std::net::SocketAddr;
//! use deis_sdk::Platform;
//!
//! let platform = Platform::builder("/var/lib/deis")
//!     .store(my_store) // everything else: embedded defaults
//!     .domain("deis.example.com")
//!     .api(SocketAddr::from(([127, 0, 0, 1], 8000)))
//!     .router(std::net::TcpListener::bind("0.0.0.0:80")?) // bound by you
//!     .start()
//!     .await?;
//! println!("API at http://{}", platform.api_addr().unwrap());
//! deis_sdk::shutdown_signal().await; // SIGTERM or SIGINT
//! platform.shutdown().await; // in-flight requests finish, then units stop
//! # Ok(()) }
//! ```
//!
//! Shutdown ([`Platform::shutdown`]): the listeners stop accepting, requests in flight
//! finish (for up to [`shutdown_grace`](PlatformBuilder::shutdown_grace); `deis logs
//! -f` streams end at once), then the scheduler's [`Scheduler::shutdown`] runs: the
//! local scheduler stops every unit (child processes can't outlive `deisd`), backends
//! on an engine leave their containers running. Last, units' final output and events
//! reach the log, and the syslog listener and drains stop.

mod listen;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use deis_core::artifact::{ArchiveLimits, ArtifactStore};
use deis_core::controller::{Controller, ControllerConfig, ControllerPolicy, RegistrationMode};
use deis_core::logs::{DEFAULT_QUEUE_LINES, LogError, LogStore, UnitLogSink};
use deis_core::model::{DEFAULT_IDENTITY_RANGE, IdentityRange};
use deis_core::scheduler::local::UnitOutput;
use deis_core::scheduler::{Capacity, LocalScheduler, LocalSchedulerConfig, Scheduler, SchedulerError};
use deis_core::store::{Store, StoreError};
use deis_core::tty::token::TokenSigner;
use deis_core::tty::{LocalTtyBroker, LocalTtyConfig, TtyBroker, TtyError};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use listen::{Listen, SyslogListen};

use crate::adapters::{LogStoreUri, StoreUri};
use crate::certs::PlatformCert;
use crate::controller::{self, ApiLimits};
use crate::logger::{
    DrainSet, DrainSetConfig, DrainingLogStore, IngestTokens, SyslogConfig, SyslogServer, SyslogSockets,
    sync_ingest_tokens,
};
use crate::publisher::{Publisher, PublisherConfig};
use crate::replica::{ReplicaConfig, ReplicatedScheduler, run_replica};
use crate::router::{Router, RouterConfig, TlsListener};
use crate::telemetry::{MeteredStore, Telemetry, TelemetrySettings};
use crate::tty::{LogAudit, TtyConfig, TtyService, ViaRouter, attach_router};

/// Fewest bytes of a [`PlatformBuilder::tty_secret`].
pub const MIN_TTY_SECRET_BYTES: usize = 32;

/// Default largest source build once unpacked: 500 MiB, Heroku's slug size limit.
pub const DEFAULT_MAX_BUILD_BYTES: u64 = 500 << 20;

/// Errors starting a [`Platform`]. Each says which part failed and why.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The data directory can't be created or used.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The embedded store can't be opened.
    #[error("opening the store: {0}")]
    Store(#[from] StoreError),
    /// The embedded scheduler can't start.
    #[error("starting the scheduler: {0}")]
    Scheduler(#[from] SchedulerError),
    /// The embedded log store can't be opened.
    #[error("opening the log store: {0}")]
    LogStore(#[from] LogError),
    /// The embedded TTY broker can't start.
    #[error("starting the TTY broker: {0}")]
    Tty(#[from] TtyError),
    /// A setting is out of range.
    #[error("{setting}: {message}")]
    Setting {
        /// The setting (`log_lines_per_app`, `tty_secret`, ...).
        setting: &'static str,
        /// What is wrong and what would be right.
        message: String,
    },
    /// A listen address is taken or invalid.
    #[error("listening on {addr} ({what}): {source}; pick another with --{what}-addr")]
    Listen {
        /// Which listener (`api`, `router`).
        what: &'static str,
        /// The address.
        addr: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The `git push` builder can't start (its host key can't be read or made).
    #[cfg(feature = "builder")]
    #[error("starting the builder: {0}")]
    Builder(#[source] std::io::Error),
    /// The platform certificate of the HTTPS listener can't be loaded or made.
    #[error("platform TLS certificate: {0}; give a PEM certificate and its key with --tls-cert and --tls-key")]
    Tls(#[from] crate::certs::PlatformCertError),
    /// The syslog listener can't start.
    #[error("starting the syslog listener on {addr}: {source}; pick another with --syslog-addr")]
    Syslog {
        /// The address.
        addr: String,
        /// The cause.
        #[source]
        source: crate::logger::SyslogError,
    },
}

/// Builds a [`Platform`]: every part has a default, [`start`](Self::start) checks the
/// settings once and starts everything. See the [module docs](self).
#[derive(Debug)]
#[must_use = "a builder does nothing until `start`"]
pub struct PlatformBuilder {
    data_dir: PathBuf,
    store: Option<Arc<dyn Store>>,
    scheduler: Option<SchedulerFactory>,
    log_store: Option<Arc<dyn LogStore>>,
    tty_broker: Option<Arc<dyn TtyBroker>>,
    api: Listen,
    router: Listen,
    router_tls: Listen,
    platform_cert: Option<PlatformCert>,
    syslog: SyslogListen,
    #[cfg(feature = "builder")]
    git_builder: (Listen, crate::builder::BuilderConfig),
    api_routes: Vec<axum::Router>,
    #[cfg(feature = "registry")]
    registry: Option<crate::controller::PlatformRegistry>,
    service_brokers: std::collections::BTreeMap<String, Arc<dyn deis_core::ServiceBroker>>,
    domain: String,
    registration: RegistrationMode,
    capacity: Option<Capacity>,
    limits: ApiLimits,
    log_lines_per_app: usize,
    tty_secret: Option<Vec<u8>>,
    tty: TtyConfig,
    shutdown_grace: Duration,
    trusted_proxies: Vec<deis_core::AddressRange>,
    replica: Option<ReplicaConfig>,
    app_identities: Option<Option<IdentityRange>>,
    max_units_per_user: Option<u32>,
    max_build_bytes: u64,
    telemetry: TelemetrySettings,
}

impl PlatformBuilder {
    fn new(data_dir: PathBuf) -> Self {
        Self {
            data_dir,
            store: None,
            scheduler: None,
            log_store: None,
            tty_broker: None,
            api: Listen::Addr(SocketAddr::from(([127, 0, 0, 1], 8000))),
            router: Listen::Addr(SocketAddr::from(([127, 0, 0, 1], 8080))),
            router_tls: Listen::Off,
            platform_cert: None,
            syslog: SyslogListen::Addr(SocketAddr::from(([127, 0, 0, 1], 5514))),
            #[cfg(feature = "builder")]
            git_builder: (Listen::Off, crate::builder::BuilderConfig::default()),
            api_routes: Vec::new(),
            #[cfg(feature = "registry")]
            registry: None,
            service_brokers: std::collections::BTreeMap::new(),
            domain: "localhost".into(),
            registration: RegistrationMode::Enabled,
            capacity: None,
            limits: ApiLimits::default(),
            log_lines_per_app: 1000,
            tty_secret: None,
            tty: TtyConfig::default(),
            shutdown_grace: Duration::from_secs(30),
            trusted_proxies: Vec::new(),
            replica: None,
            app_identities: None,
            max_units_per_user: None,
            max_build_bytes: DEFAULT_MAX_BUILD_BYTES,
            telemetry: TelemetrySettings::default(),
        }
    }

    /// Telemetry: the interval, the sinks snapshots are pushed to, whether the router
    /// counts traffic, autoscaling (default: 10 s, no sink, counting, autoscaling on).
    /// `GET /metrics`, the app metrics and the dashboard are served on the API listener.
    pub fn telemetry(mut self, settings: TelemetrySettings) -> Self {
        self.telemetry = settings;
        self
    }

    /// Runs this platform as one replica of several on a shared store (etcd): every
    /// replica serves the API and routes, the elected one runs the units (see
    /// [`crate::replica`]). Without this, the platform assumes it is alone.
    pub fn replica(mut self, config: ReplicaConfig) -> Self {
        self.replica = Some(config);
        self
    }

    /// The store of every record (default: [`RedbStore`](deis_core::store::RedbStore) at
    /// `<data dir>/store.redb`).
    pub fn store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// What runs the units (default: [`LocalScheduler`], child processes on this
    /// machine, offering [`capacity`](Self::capacity)). A scheduler given here sends
    /// its units' output wherever it was set up to; to have it reach the platform's
    /// log (and drains), build it with [`scheduler_with`](Self::scheduler_with).
    pub fn scheduler(mut self, scheduler: Arc<dyn Scheduler>) -> Self {
        self.scheduler = Some(SchedulerFactory(Box::new(move |_| Box::pin(async move { Ok(scheduler) }))));
        self
    }

    /// Builds the scheduler at [`start`](Self::start) from what the platform has made
    /// by then ([`SchedulerContext`]: the store, where units' output goes, the data
    /// directory, the capacity), e.g. a `LocalScheduler` wrapped in a decorator, or a
    /// container backend that ships its units' logs.
    pub fn scheduler_with<F, Fut>(mut self, make: F) -> Self
    where
        F: FnOnce(SchedulerContext) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Arc<dyn Scheduler>, SchedulerError>> + Send + 'static,
    {
        self.scheduler = Some(SchedulerFactory(Box::new(move |ctx| Box::pin(make(ctx)))));
        self
    }

    /// Where app logs are kept (default: a ring of
    /// [`log_lines_per_app`](Self::log_lines_per_app) lines per app, in memory).
    pub fn log_store(mut self, logs: Arc<dyn LogStore>) -> Self {
        self.log_store = Some(logs);
        self
    }

    /// What runs `deis run` sessions (default: PTYs and pipes in the app's build
    /// directory, on this machine).
    pub fn tty_broker(mut self, broker: Arc<dyn TtyBroker>) -> Self {
        self.tty_broker = Some(broker);
        self
    }

    /// The controller API listener (default `127.0.0.1:8000`).
    pub fn api(mut self, listen: impl Into<Listen>) -> Self {
        self.api = listen.into();
        self
    }

    /// The router listener (default `127.0.0.1:8080`).
    pub fn router(mut self, listen: impl Into<Listen>) -> Self {
        self.router = listen.into();
        self
    }

    /// The router's HTTPS listener (default: off; `deisd` binds `127.0.0.1:8443`).
    /// It terminates TLS with the certificates users attach to their domains and
    /// the platform certificate ([`tls_certificate`](Self::tls_certificate)) for the
    /// rest; apps with `deis tls:enable` are redirected to its port.
    pub fn router_tls(mut self, listen: impl Into<Listen>) -> Self {
        self.router_tls = listen.into();
        self
    }

    /// The platform certificate for `*.<domain>` the HTTPS listener presents to names
    /// without a certificate of their own: a PEM chain and its PEM key. Default: a
    /// self-signed one made at the first start and kept in `<data dir>/tls/`.
    pub fn tls_certificate(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.platform_cert = Some(PlatformCert::Files { cert: cert.into(), key: key.into() });
        self
    }

    /// Load balancers in front of the router whose `X-Forwarded-For`,
    /// `X-Forwarded-Proto` and `X-Real-IP` are believed (app allow-lists, the client
    /// address passed on); default none: the TCP peer is the client.
    pub fn trusted_proxies(mut self, ranges: Vec<deis_core::AddressRange>) -> Self {
        self.trusted_proxies = ranges;
        self
    }

    /// The syslog listener, UDP and TCP (default `127.0.0.1:5514`).
    pub fn syslog(mut self, listen: impl Into<SyslogListen>) -> Self {
        self.syslog = listen.into();
        self
    }

    /// The `git push` builder's SSH listener (default: off; `deisd` listens on
    /// `127.0.0.1:2222`) and its settings. The router port for the app URL it shows is
    /// filled in at start.
    #[cfg(feature = "builder")]
    pub fn git_builder(mut self, listen: impl Into<Listen>, config: crate::builder::BuilderConfig) -> Self {
        self.git_builder = (listen.into(), config);
        self
    }

    /// An embedded service broker for add-ons (`deis addons:create`), by name: the
    /// PostgreSQL or Redis broker in-process, or a client of a remote one. The
    /// user-provided broker is always there; brokers an admin registers by URL
    /// (`deis brokers:add`) come on top.
    pub fn service_broker(mut self, name: impl Into<String>, broker: Arc<dyn deis_core::ServiceBroker>) -> Self {
        self.service_brokers.insert(name.into(), broker);
        self
    }

    /// More routes served on the API listener (your own endpoints), merged with the
    /// controller's; a path both define is a panic at [`start`](Self::start).
    pub fn api_routes(mut self, routes: axum::Router) -> Self {
        self.api_routes.push(routes);
        self
    }

    /// The platform registry `deis push` pushes to (feature `registry`): serves
    /// `GET`/`POST /v2/apps/<app>/push/` (see [`crate::controller::push_routes`]).
    #[cfg(feature = "registry")]
    pub fn registry(mut self, registry: crate::controller::PlatformRegistry) -> Self {
        self.registry = Some(registry);
        self
    }

    /// The platform domain: apps answer at `<app>.<domain>` (default `localhost`).
    pub fn domain(mut self, domain: impl Into<String>) -> Self {
        self.domain = domain.into().trim_end_matches('.').to_ascii_lowercase();
        self
    }

    /// Who may register (default: anyone).
    pub fn registration(mut self, mode: RegistrationMode) -> Self {
        self.registration = mode;
        self
    }

    /// What this node offers to units of the embedded scheduler (default: this
    /// machine's cores and memory).
    pub fn capacity(mut self, capacity: Capacity) -> Self {
        self.capacity = Some(capacity);
        self
    }

    /// Request body limits of the API (largest JSON body, largest source upload).
    pub fn api_limits(mut self, limits: ApiLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Lines the embedded log store keeps per app (default 1000, at least 1).
    pub fn log_lines_per_app(mut self, lines: usize) -> Self {
        self.log_lines_per_app = lines;
        self
    }

    /// The secret signing `deis run` session tokens (at least
    /// [`MIN_TTY_SECRET_BYTES`]), shared with any standalone `deis-tty-broker`.
    /// Default: random at each start, so tokens don't survive a restart (they live
    /// 60 s anyway).
    pub fn tty_secret(mut self, secret: impl Into<Vec<u8>>) -> Self {
        self.tty_secret = Some(secret.into());
        self
    }

    /// Settings of the embedded TTY service (timeouts, allowed origins, ...). Its
    /// `via_router` is set at start: sessions attach through the router at
    /// `deis.<domain>`.
    pub fn tty_config(mut self, config: TtyConfig) -> Self {
        self.tty = config;
        self
    }

    /// How long requests in flight get to finish at [`Platform::shutdown`] before
    /// their connections are closed (default 30 s).
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// The uids and gids apps get, one each, for their units and `deis run` sessions
    /// (`None`: none, units run as the platform's user). Default: when the platform
    /// runs as root, [`DEFAULT_IDENTITY_RANGE`]; otherwise none (an unprivileged
    /// process can't change identity: units run as its user and can read what it can,
    /// its data directory included).
    pub fn app_identities(mut self, range: Option<IdentityRange>) -> Self {
        self.app_identities = Some(range);
        self
    }

    /// Most units the apps of one non-admin user may run together (default: no cap).
    pub fn max_units_per_user(mut self, max: u32) -> Self {
        self.max_units_per_user = Some(max);
        self
    }

    /// Largest size of a source build once unpacked (default
    /// [`DEFAULT_MAX_BUILD_BYTES`], like Heroku's slug limit): larger uploads are refused
    /// with a 400 before anything is written.
    pub fn max_build_bytes(mut self, max: u64) -> Self {
        self.max_build_bytes = max;
        self
    }

    /// Checks the settings, opens the parts not supplied, binds the listeners and
    /// starts serving. Units of existing apps are converged on what the store says.
    pub async fn start(self) -> Result<Platform, StartError> {
        let signer = match &self.tty_secret {
            Some(secret) if secret.len() < MIN_TTY_SECRET_BYTES => {
                return Err(StartError::Setting {
                    setting: "tty_secret",
                    message: format!(
                        "{} bytes; it needs at least {MIN_TTY_SECRET_BYTES} (e.g. `openssl rand -hex 32`)",
                        secret.len()
                    ),
                });
            }
            Some(secret) => TokenSigner::new(secret),
            None => TokenSigner::random(),
        };
        if self.log_lines_per_app == 0 {
            return Err(StartError::Setting { setting: "log_lines_per_app", message: "must be at least 1".into() });
        }
        let data = self.data_dir.clone();
        let data_err = |source| StartError::DataDir { path: data.clone(), source };
        tokio::fs::create_dir_all(&data).await.map_err(data_err)?;
        // The store, builds and scheduler state are nobody else's business (units see
        // only their own build, through their mount namespace).
        tokio::fs::set_permissions(&data, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .await
            .map_err(data_err)?;
        let root = deis_core::sys::isolation::running_as_root();
        let identities = self.app_identities.unwrap_or(root.then_some(DEFAULT_IDENTITY_RANGE));
        if identities.is_some() && !root {
            return Err(StartError::Setting {
                setting: "app_identities",
                message: "an identity per app needs root; run as root or leave identities off".into(),
            });
        }
        let store = match self.store {
            Some(store) => store,
            None => StoreUri::Redb(data.join("store.redb")).open().await?,
        };
        let telemetry = Arc::new(Telemetry::new(true));
        let store = MeteredStore::wrap(store, telemetry.store.clone());

        // Logs: the store, drains forwarding from it, and units' output into it.
        let base_logs = match self.log_store {
            Some(logs) => logs,
            None => LogStoreUri::Ring.open(self.log_lines_per_app).await?,
        };
        let drain_config = DrainSetConfig::default();
        let origin = drain_config.origin.clone();
        let drains = Arc::new(DrainSet::new(drain_config));
        let logs: Arc<dyn LogStore> = Arc::new(DrainingLogStore::new(base_logs, drains.clone()));
        let unit_logs = UnitLogSink::start(logs.clone(), DEFAULT_QUEUE_LINES);
        let ingest_tokens = IngestTokens::new();

        let context = SchedulerContext {
            data_dir: data.clone(),
            store: store.clone(),
            unit_output: unit_logs.clone(),
            capacity: self.capacity.unwrap_or_else(Capacity::of_this_machine),
            ingest_tokens: ingest_tokens.clone(),
        };
        let scheduler = match self.scheduler {
            Some(SchedulerFactory(make)) => make(context).await?,
            None => {
                let scheduler: Arc<dyn Scheduler> = LocalScheduler::new(context.local_config()).await?;
                scheduler
            }
        };
        // A replica's controller asks the leader; its publisher publishes what runs here.
        let (units, scheduler, node, mut publisher_config) = match &self.replica {
            Some(config) => {
                let replicated = ReplicatedScheduler::new(store.clone(), scheduler.clone(), config.clone());
                let mut publishing = PublisherConfig::new(config.id.clone());
                publishing.lease_ttl = config.ttl;
                publishing.keep_alive_interval = config.ttl / 3;
                (scheduler, replicated.clone() as Arc<dyn Scheduler>, Some(replicated), publishing)
            }
            None => (scheduler.clone(), scheduler, None, PublisherConfig::new(deis_core::scheduler::local::hostname())),
        };
        let tty_broker: Arc<dyn TtyBroker> = match self.tty_broker {
            Some(broker) => broker,
            None => {
                let mut config = LocalTtyConfig::with_state_dir(&data);
                config.isolation.hidden_dir = Some(data.clone());
                Arc::new(LocalTtyBroker::new(config).await?)
            }
        };
        let controller = Controller::new(ControllerConfig {
            store: store.clone(),
            scheduler: scheduler.clone(),
            artifacts: ArtifactStore::new(data.join("builds"))
                .with_limits(ArchiveLimits { max_unpacked_bytes: self.max_build_bytes, ..ArchiveLimits::default() }),
            domain: self.domain.clone(),
            registration: self.registration,
            logs: Some(unit_logs.clone()),
            policy: {
                let mut policy = ControllerPolicy::default();
                policy.identities = identities;
                policy.max_units_per_user = self.max_units_per_user;
                policy
            },
        });

        // Apps from before ingest tokens get one, and the listener (and the Docker log
        // tags) know them all before any unit starts or any line arrives.
        if let Err(e) = controller.ensure_ingest_tokens().await {
            tracing::warn!(error = %e, "cannot make ingest tokens for apps that have none");
        }
        if let Err(e) = ingest_tokens.load(&*store).await {
            tracing::warn!(error = %e, "cannot load the apps' ingest tokens; retrying in the background");
        }

        let addons = crate::addons::Addons::new(controller.clone(), self.service_brokers)
            .await
            .map_err(|e| StartError::Setting { setting: "service_broker", message: e.to_string() })?;
        if let Err(e) = addons.resume().await {
            tracing::error!(error = %e, "resuming add-on provisioning");
        }

        let api_listener = open(self.api, "api").await?;
        let router_listener = open(self.router, "router").await?;
        let router_tls_listener = open(self.router_tls, "router-tls").await?;
        let router_tls_addr = local_addr(router_tls_listener.as_ref(), "router-tls")?;
        let tls_listener = match router_tls_listener {
            Some(listener) => {
                let source =
                    self.platform_cert.clone().unwrap_or_else(|| PlatformCert::SelfSigned { dir: data.join("tls") });
                let (domain, source) = (self.domain.clone(), source);
                let platform = tokio::task::spawn_blocking(move || source.load(&domain))
                    .await
                    .map_err(|e| StartError::Setting { setting: "tls_certificate", message: e.to_string() })??;
                Some(TlsListener::new(listener, platform.key))
            }
            None => None,
        };
        let api_addr = local_addr(api_listener.as_ref(), "api")?;
        let router_addr = local_addr(router_listener.as_ref(), "router")?;
        let syslog = start_syslog(self.syslog, logs.clone(), origin, ingest_tokens.clone()).await?;
        #[cfg(feature = "builder")]
        let git_builder = {
            let (listen, mut config) = self.git_builder;
            config.router_port = router_addr.map(|a| a.port());
            match open(listen, "builder").await? {
                Some(listener) => Some(
                    crate::builder::Builder::start(listener, controller.clone(), &data, config)
                        .map_err(StartError::Builder)?,
                ),
                None => None,
            }
        };

        let (stop, stopped) = watch::channel(false);
        let stop_signal = |rx: &watch::Receiver<bool>| {
            let mut rx = rx.clone();
            async move {
                let _ = rx.wait_for(|s| *s).await;
            }
        };
        publisher_config.resync_interval = publisher_config.resync_interval.min(publisher_config.lease_ttl);
        let publisher = Publisher::start(store.clone(), units, publisher_config);
        let mut servers = Vec::new();
        // Unit events are logged until the units are stopped too (see `shutdown`).
        let (events_stop, events_stopped) = watch::channel(false);
        let c = controller.clone();
        let until = stop_signal(&events_stopped);
        let events = tokio::spawn(async move { c.log_unit_events(until).await });
        let (st, ds, until) = (store.clone(), drains.clone(), stop_signal(&stopped));
        servers.push(tokio::spawn(async move { controller::sync_drains(st, ds, until).await }));
        let (st, tokens, until) = (store.clone(), ingest_tokens.clone(), stop_signal(&stopped));
        servers.push(tokio::spawn(async move { sync_ingest_tokens(st, tokens, until).await }));

        // The platform host `deis.<domain>` goes to the controller API (and so to the
        // embedded TTY broker): `deis run` sessions come through the routing mesh.
        let mut router_config = RouterConfig::new(self.domain.clone());
        router_config.shutdown_grace = self.shutdown_grace;
        router_config.trusted_proxies = self.trusted_proxies.clone();
        // `tls:enable` redirects to where HTTPS is served.
        if let Some(addr) = router_tls_addr {
            router_config.https_port = addr.port();
        }
        if let Some(api) = api_addr {
            router_config = router_config.with_platform_backend(listen::reachable(api));
        }
        router_config.metrics = self.telemetry.router_metrics.then(|| telemetry.router.clone());
        let platform_host = router_config.platform_host.as_ref().map(|(host, _)| host.clone());
        if router_listener.is_some() || tls_listener.is_some() {
            let router = Arc::new(Router::new(store.clone(), router_config));
            let until = stop_signal(&stopped);
            servers.push(tokio::spawn(async move {
                if let Err(e) = router.serve_with_tls(router_listener, tls_listener, until).await {
                    tracing::error!(error = %e, "router stopped");
                }
            }));
        }

        let mut tty_config = self.tty.clone();
        tty_config.via_router = match (platform_host, router_addr) {
            (Some(host), Some(router)) => Some(ViaRouter { router: listen::reachable(router).to_string(), host }),
            _ => None,
        };
        let tty = Arc::new(
            TtyService::embedded(tty_broker, signer, tty_config).with_audit(Arc::new(LogAudit::new(logs.clone()))),
        );
        let sessions = tty.clone();
        telemetry.add_source(Arc::new(move || sessions.counters().families()));
        if let Some(listener) = api_listener {
            let mut app = controller::router(controller.clone(), self.limits)
                .merge(attach_router(tty.clone()))
                .merge(controller::addons_router(controller.clone(), self.limits, addons));
            let api_state = controller::ApiState::new(controller.clone(), self.limits);
            app = app.merge(crate::telemetry::http::routes(api_state, telemetry.clone()));
            for routes in self.api_routes {
                app = app.merge(routes);
            }
            #[cfg(feature = "registry")]
            if let Some(registry) = self.registry {
                app = app.merge(controller::push_routes(controller.clone(), self.limits, registry));
            }
            // Drains may not point back at any listener of ours.
            #[cfg(feature = "builder")]
            let builder_addr = git_builder.as_ref().map(crate::builder::Builder::addr);
            #[cfg(not(feature = "builder"))]
            let builder_addr = None;
            let own = [api_addr, router_addr, router_tls_addr, builder_addr]
                .into_iter()
                .chain(syslog.iter().flat_map(|s| [s.udp_addr(), s.tcp_addr(), s.tls_addr()]))
                .flatten()
                .collect();
            let metrics = telemetry.api.clone();
            let app = app.layer(axum::middleware::from_fn(move |req, next| {
                crate::telemetry::metered::count_api_requests(metrics.clone(), req, next)
            }));
            let app = app
                .layer(axum::Extension(tty))
                .layer(axum::Extension(telemetry.clone()))
                .layer(axum::Extension(controller::FollowShutdown(stopped.clone())))
                .layer(axum::Extension(controller::PlatformListeners(own)));
            let (until, grace, limits) = (stop_signal(&stopped), self.shutdown_grace, self.limits);
            let mut cut = stopped.clone();
            servers.push(tokio::spawn(async move {
                let serve = controller::serve(listener, app, limits, until);
                let deadline = async move {
                    let _ = cut.wait_for(|s| *s).await;
                    tokio::time::sleep(grace).await;
                };
                tokio::select! {
                    () = serve => {}
                    () = deadline => tracing::warn!(?grace, "controller API: requests still open after the grace period"),
                }
            }));
        }

        telemetry.set_health("api", api_addr.is_some());
        telemetry.set_health("router", router_addr.is_some() || router_tls_addr.is_some());
        if let Some(s) = &syslog {
            let counters = s.counters().clone();
            telemetry.add_source(Arc::new(move || counters.families()));
            telemetry.set_health("logger", true);
        }
        let ds = drains.clone();
        telemetry.add_source(Arc::new(move || ds.families()));
        servers.extend(crate::telemetry::start_platform_tasks(
            &telemetry,
            &self.telemetry,
            &controller,
            stopped.clone(),
        ));

        // Converge units on the store's desired state (after a restart, or a crash); a
        // replica does so when it is elected.
        let replica = match node {
            Some(replicated) => Some(run_replica(replicated, controller.clone(), stopped.clone())),
            None => {
                let c = controller.clone();
                tokio::spawn(async move { c.reconcile_all().await });
                None
            }
        };

        tracing::info!(
            api = ?api_addr,
            router = ?router_addr,
            router_tls = ?router_tls_addr,
            data_dir = %data.display(),
            domain = %self.domain,
            "platform started"
        );
        Ok(Platform {
            api_addr,
            router_addr,
            #[cfg(feature = "builder")]
            git_builder,
            router_tls_addr,
            domain: self.domain,
            controller,
            scheduler,
            publisher: Some(publisher),
            logs,
            unit_logs,
            drains,
            syslog,
            events: Some((events_stop, events)),
            stop,
            servers,
            replica,
            telemetry,
        })
    }
}

/// What [`PlatformBuilder::scheduler_with`] gets to build a scheduler from.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SchedulerContext {
    /// The platform's data directory (the embedded scheduler keeps its state in
    /// `scheduler/` under it).
    pub data_dir: PathBuf,
    /// The platform's store.
    pub store: Arc<dyn Store>,
    /// Where units' output lines go: the platform's log store (and its drains).
    pub unit_output: Arc<dyn UnitOutput>,
    /// What the node offers to units ([`PlatformBuilder::capacity`]).
    pub capacity: Capacity,
    /// The apps' syslog ingest tokens, kept in step with the store: a backend that
    /// sends units' output to the platform's syslog listener puts the app's token in
    /// each line (the Docker backend's log tag).
    pub ingest_tokens: Arc<IngestTokens>,
}

impl SchedulerContext {
    /// The settings the embedded [`LocalScheduler`] starts with: state in
    /// `<data dir>/scheduler`, output to the log, the capacity above, the data
    /// directory hidden from units (each sees only its own build in it).
    pub fn local_config(&self) -> LocalSchedulerConfig {
        let mut config = LocalSchedulerConfig::new(self.data_dir.join("scheduler"));
        config.output = self.unit_output.clone();
        config.capacity = self.capacity;
        config.isolation.hidden_dir = Some(self.data_dir.clone());
        config
    }
}

type SchedulerFuture = Pin<Box<dyn Future<Output = Result<Arc<dyn Scheduler>, SchedulerError>> + Send>>;

/// Makes the scheduler at start.
struct SchedulerFactory(Box<dyn FnOnce(SchedulerContext) -> SchedulerFuture + Send>);

impl std::fmt::Debug for SchedulerFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SchedulerFactory")
    }
}

async fn open(listen: Listen, what: &'static str) -> Result<Option<TcpListener>, StartError> {
    let addr = listen.describe().map_or_else(|| "?".to_string(), |a| a.to_string());
    listen.open().await.map_err(|source| StartError::Listen { what, addr, source })
}

fn local_addr(listener: Option<&TcpListener>, what: &'static str) -> Result<Option<SocketAddr>, StartError> {
    listener.map(|l| l.local_addr().map_err(|source| StartError::Listen { what, addr: "?".into(), source })).transpose()
}

/// Starts the syslog listener, dropping lines our own drains (`origin`) sent back and
/// lines for an app without its ingest token.
async fn start_syslog(
    listen: SyslogListen,
    logs: Arc<dyn LogStore>,
    origin: String,
    tokens: Arc<IngestTokens>,
) -> Result<Option<SyslogServer>, StartError> {
    let addr = listen.describe().map_or_else(|| "?".to_string(), |a| a.to_string());
    let (mut config, sockets) = match listen {
        SyslogListen::Off => return Ok(None),
        SyslogListen::Addr(a) => {
            (SyslogConfig { udp_addr: Some(a), tcp_addr: Some(a), ..SyslogConfig::default() }, SyslogSockets::default())
        }
        SyslogListen::Bound { udp, tcp } => (SyslogConfig::default(), SyslogSockets { udp, tcp }),
    };
    config.own_origin = Some(origin);
    config.ingest_tokens = Some(tokens);
    let server = SyslogServer::start_on(config, sockets, logs).await;
    server.map(Some).map_err(|source| StartError::Syslog { addr, source })
}

/// A running platform. Stop it with [`Platform::shutdown`]; dropping it without
/// stops the listeners but leaves units to the scheduler's parent-death handling.
#[derive(Debug)]
pub struct Platform {
    api_addr: Option<SocketAddr>,
    router_addr: Option<SocketAddr>,
    #[cfg(feature = "builder")]
    git_builder: Option<crate::builder::Builder>,
    router_tls_addr: Option<SocketAddr>,
    domain: String,
    controller: Arc<Controller>,
    scheduler: Arc<dyn Scheduler>,
    publisher: Option<Publisher>,
    logs: Arc<dyn LogStore>,
    unit_logs: Arc<UnitLogSink>,
    drains: Arc<DrainSet>,
    events: Option<(watch::Sender<bool>, JoinHandle<()>)>,
    syslog: Option<SyslogServer>,
    stop: watch::Sender<bool>,
    servers: Vec<JoinHandle<()>>,
    replica: Option<JoinHandle<()>>,
    telemetry: Arc<Telemetry>,
}

impl Platform {
    /// The platform's collectors (what `/metrics` and the sinks read).
    pub fn telemetry(&self) -> &Arc<Telemetry> {
        &self.telemetry
    }

    /// A builder with state kept in `data_dir` (the embedded store, scheduler state,
    /// builds) and every other setting at its default.
    pub fn builder(data_dir: impl AsRef<Path>) -> PlatformBuilder {
        PlatformBuilder::new(data_dir.as_ref().to_path_buf())
    }

    /// Where the controller API listens, if it does.
    pub fn api_addr(&self) -> Option<SocketAddr> {
        self.api_addr
    }

    /// Where the router listens, if it does.
    pub fn router_addr(&self) -> Option<SocketAddr> {
        self.router_addr
    }

    /// Where the `git push` builder listens, if it does.
    #[cfg(feature = "builder")]
    pub fn builder_addr(&self) -> Option<SocketAddr> {
        self.git_builder.as_ref().map(crate::builder::Builder::addr)
    }

    /// Where the router serves HTTPS, if it does.
    pub fn router_tls_addr(&self) -> Option<SocketAddr> {
        self.router_tls_addr
    }

    /// The platform domain.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The controller logic (users, apps, releases, ...), to drive without HTTP.
    pub fn controller(&self) -> &Arc<Controller> {
        &self.controller
    }

    /// The scheduler running the units.
    pub fn scheduler(&self) -> &Arc<dyn Scheduler> {
        &self.scheduler
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

    /// Graceful stop: the listeners stop accepting, requests in flight finish (within
    /// the shutdown grace), this node's endpoints are withdrawn, the scheduler shuts
    /// down (see [`Scheduler::shutdown`]) and the units' last output reaches the log.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        #[cfg(feature = "builder")]
        if let Some(b) = self.git_builder.take() {
            b.shutdown().await;
        }
        for s in self.servers.drain(..) {
            let _ = s.await;
        }
        if let Some(r) = self.replica.take() {
            let _ = r.await; // resigned: another replica takes over
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
        tracing::info!("platform stopped");
    }
}

impl Drop for Platform {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}
