//! `deisd`: the Deis platform in one process: controller API, router, scheduler, logs
//! and `deis run`, on embedded defaults (one data directory, no outside service) or on
//! the adapters its flags pick.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use deis_sdk::adapters::{LogStoreUri, SchedulerUri, StoreUri};
use deis_sdk::builder::{BuilderConfig, DockerfileBuilds};
use deis_sdk::controller::ApiLimits;
use deis_sdk::controller::RegistrationMode;
use deis_sdk::daemon::{LogFormat, init_tracing, parse_flags};

mod registry;
use deis_sdk::controller::PlatformRegistry;
use deis_sdk::deis_core::model::limits;
use deis_sdk::deis_core::scheduler::Capacity;
use deis_sdk::deis_core::scheduler::PullCredentials;
use deis_sdk::deis_core::scheduler::placement::Policy;
use deis_sdk::deis_core::update::{StoreUpdateChannel, UpdateChannel};
use deis_sdk::replica::ReplicaConfig;
use deis_sdk::scheduler::docker::{DEFAULT_STACK_IMAGE, DockerHost, DockerScheduler, DockerSchedulerConfig};
use deis_sdk::scheduler::kubernetes::{self, KubernetesScheduler, KubernetesSchedulerConfig};
use deis_sdk::scheduler::marathon::{MarathonScheduler, MarathonSchedulerConfig};
use deis_sdk::scheduler::swarm::{SwarmScheduler, SwarmSchedulerConfig};
use deis_sdk::telemetry::TelemetrySettings;
use deis_sdk::telemetry::config::{SinkUri, TelemetryConfig};
use deis_sdk::telemetry::docker_units::DockerUnitStats;
use deis_sdk::tty::TtyConfig;
use deis_sdk::tty::docker_hosts::DockerHostsTtyBroker;
use deis_sdk::tty::kubernetes::KubernetesTtyBroker;
use deis_sdk::tty::swarm::SwarmTtyBroker;
use deis_sdk::{Listen, MIN_TTY_SECRET_BYTES, Platform, PlatformBuilder, SyslogListen};

/// mimalloc: glibc's malloc and free took a fifth of deisd's CPU per request
/// (BENCHMARKS.md, update checks: 25-30% more checks per second with mimalloc).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The Deis platform daemon: controller API, router, scheduler, logs and `deis run` in
/// one process.
#[derive(Debug, Parser)]
#[command(name = "deisd", version, about)]
struct Args {
    /// Directory holding all platform state (store, builds, scheduler state).
    #[arg(long, env = "DEIS_DATA_DIR", default_value = ".deis/data")]
    data_dir: PathBuf,
    /// Where records are kept: `redb:PATH` (default: `redb:<data-dir>/store.redb`), or an
    /// etcd v3 cluster, `etcd://HOST:PORT,HOST:PORT` (`etcds://…?ca=PATH` for TLS; see
    /// docs/ETCD.md). On etcd, several deisd may share the store: one leads (runs the
    /// units), all serve the API and route.
    #[arg(long, env = "DEIS_STORE")]
    store: Option<StoreUri>,
    /// What runs units: local (child processes on this machine), docker (containers
    /// on the engines of --docker-host, placed over them), swarm (the services of the
    /// Docker Swarm whose manager is --docker-host), or the previews kubernetes (pods of
    /// the cluster of --kubeconfig) and marathon (tasks of --marathon-url).
    #[arg(long, env = "DEIS_SCHEDULER", default_value = "local")]
    scheduler: SchedulerUri,
    /// A Docker engine units run on, for --scheduler docker (repeatable, one per host),
    /// or the swarm manager for --scheduler swarm (once, endpoint only):
    /// `unix:///path/to.sock` or `tcp://host:port`, optionally followed by
    /// `;name=N;cpu=4;memory=8G;label=KEY=VALUE;planes=data;network=host|bridge`.
    /// Default: DOCKER_HOST, else the local engine.
    #[arg(long = "docker-host", value_name = "ENDPOINT[;KEY=VALUE...]")]
    docker_hosts: Vec<DockerHost>,
    /// Kubeconfig of the cluster for --scheduler kubernetes (a `KUBECONFIG`-style list
    /// `a:b` is merged). Default: KUBECONFIG, else ~/.kube/config, else in-cluster.
    #[arg(long, env = "KUBECONFIG", value_name = "PATH")]
    kubeconfig: Option<String>,
    /// Marathon's URL for --scheduler marathon (`http://host:8080`); --cpu and
    /// --memory give what the cluster offers deis.
    #[arg(long, env = "DEIS_MARATHON_URL", value_name = "URL")]
    marathon_url: Option<String>,
    /// How units are placed over nodes: binpack (fill nodes first) or spread.
    #[arg(long, env = "DEIS_PLACEMENT", default_value = "binpack")]
    placement: Policy,
    /// The image source builds run on with --scheduler docker (build one offline, see
    /// the docs).
    #[arg(long, env = "DEIS_STACK_IMAGE", default_value = DEFAULT_STACK_IMAGE)]
    stack_image: String,
    #[command(flatten)]
    registry: registry::RegistryArgs,
    /// Controller API listen address.
    #[arg(long, env = "DEIS_API_ADDR", default_value = "127.0.0.1:8000")]
    api_addr: SocketAddr,
    /// Router (app traffic) listen address.
    #[arg(long, env = "DEIS_ROUTER_ADDR", default_value = "127.0.0.1:8080")]
    router_addr: SocketAddr,
    /// `git push` builder (SSH) listen address, or `off`.
    #[arg(long, env = "DEIS_BUILDER_ADDR", default_value = "127.0.0.1:2222", value_parser = optional_addr)]
    builder_addr: OptionalAddr,
    /// Where the router serves HTTPS (IP:PORT), or `off`. Apps with `deis tls:enable`
    /// are redirected to this port.
    #[arg(long, env = "DEIS_ROUTER_TLS_ADDR", default_value = "127.0.0.1:8443", value_parser = optional_addr)]
    router_tls_addr: OptionalAddr,
    /// PEM certificate chain of the platform certificate (`*.<domain>`), presented on
    /// HTTPS to names without a certificate of their own. Without it (and --tls-key)
    /// a self-signed one is made at the first start and kept in `<data dir>/tls/`.
    #[arg(long, env = "DEIS_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "DEIS_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Platform domain: app `hello` answers at `hello.<domain>`.
    #[arg(long, env = "DEIS_DOMAIN", default_value = "localhost")]
    domain: String,
    /// CPU this node offers to units (`4`, `3500m`); default: all cores.
    #[arg(long, env = "DEIS_CPU", value_parser = cpu)]
    cpu: Option<u64>,
    /// Memory this node offers to units (`8G`, `512M`); default: all memory.
    #[arg(long, env = "DEIS_MEMORY", value_parser = memory)]
    memory: Option<u64>,
    /// Who may register: enabled, admin_only or disabled.
    #[arg(long, env = "DEIS_REGISTRATION", default_value = "enabled")]
    registration: RegistrationMode,
    /// Largest source upload accepted by `deis deploy`, in MiB.
    #[arg(long, env = "DEIS_MAX_UPLOAD_MB", default_value_t = 256)]
    max_upload_mb: usize,
    /// Largest source build once unpacked, in MiB (per build; an app keeps its two
    /// newest builds unpacked).
    #[arg(long, env = "DEIS_MAX_BUILD_MB", default_value_t = 500)]
    max_build_mb: u64,
    /// Most source uploads processed at once; more are answered 503 with Retry-After.
    #[arg(long, env = "DEIS_MAX_CONCURRENT_UPLOADS", default_value_t = 4)]
    max_concurrent_uploads: usize,
    /// Seconds a controller API client has to send a request head (and to start the
    /// next one on a kept-alive connection) before the connection is closed.
    #[arg(
        long,
        env = "DEIS_API_HEADER_READ_TIMEOUT",
        default_value_t = 30,
        value_parser = clap::value_parser!(u64).range(1..=3600)
    )]
    api_header_read_timeout: u64,
    /// Most controller API connections open at once; past it new ones are closed at once.
    #[arg(
        long,
        env = "DEIS_API_MAX_CONNECTIONS",
        default_value_t = 1024,
        value_parser = clap::value_parser!(u64).range(1..=1_000_000)
    )]
    api_max_connections: u64,
    /// Log format of deisd itself: text or json.
    #[arg(long, env = "DEIS_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
    /// Where apps' syslog lines are taken, on UDP and TCP (`off` for no listener).
    #[arg(long, env = "DEIS_SYSLOG_ADDR", default_value = "127.0.0.1:5514", value_parser = optional_addr)]
    syslog_addr: OptionalAddr,
    /// Log lines kept per app.
    #[arg(long, env = "DEIS_LOG_LINES_PER_APP", default_value_t = 1000, value_parser = at_least_one)]
    log_lines_per_app: usize,
    /// Where app logs are kept: `ring` (in memory) or `redis://HOST[:PORT][/DB]` (survives
    /// restarts); `redis` alone means the server of --redis-url.
    #[arg(long, env = "DEIS_LOG_STORE", default_value = "ring", value_parser = log_store)]
    log_store: LogStoreArg,
    /// Redis server of `--log-store redis`.
    #[arg(long, env = "DEIS_REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// Secret signing `deis run` session tokens: any string of 32+ bytes (e.g. `openssl
    /// rand -hex 32`), used as is; give the same to a standalone `deis-tty-broker
    /// --secret`. Default: random at each start (tokens then don't survive a restart).
    #[arg(long, env = "DEIS_TTY_SECRET", hide_env_values = true, value_parser = tty_secret)]
    tty_secret: Option<String>,
    /// End `deis run` sessions without input or output for this long (`30m`, `1h`).
    #[arg(long, env = "DEIS_TTY_IDLE_TIMEOUT", default_value = "30m", value_parser = duration)]
    tty_idle_timeout: Duration,
    /// End `deis run` sessions after this long (`12h`).
    #[arg(long, env = "DEIS_TTY_MAX_SESSION", default_value = "12h", value_parser = duration)]
    tty_max_session: Duration,
    /// A browser `Origin` allowed to open `deis run` sessions besides the platform's own
    /// host (repeatable; e.g. `https://console.example.com`).
    #[arg(long = "tty-allowed-origin", value_name = "ORIGIN")]
    tty_allowed_origins: Vec<String>,
    /// A load balancer in front of the router (address or CIDR) whose X-Forwarded-For,
    /// X-Forwarded-Proto and X-Real-IP are believed (repeatable, or comma-separated);
    /// from anyone else they are replaced with what the connection says.
    #[arg(
        long = "router-trusted-proxy",
        env = "DEIS_ROUTER_TRUSTED_PROXIES",
        value_name = "CIDR",
        value_delimiter = ','
    )]
    router_trusted_proxies: Vec<deis_sdk::deis_core::AddressRange>,
    /// This replica's name among the deisd sharing an etcd store (default
    /// `<hostname>:<api port>`): shown as the scheduler's leader, and the node of the
    /// endpoints it publishes.
    #[arg(long, env = "DEIS_REPLICA_ID")]
    replica_id: Option<String>,
    /// On SIGTERM, how long requests in flight get to finish (`30s`).
    #[arg(long, env = "DEIS_SHUTDOWN_GRACE", default_value = "30s", value_parser = duration)]
    shutdown_grace: Duration,
    /// Uids (and gids) for apps when running as root, one each: `FIRST-LAST`, ids no
    /// one else on this machine uses (default 200000-299999). Unprivileged, units run
    /// as deisd's own user.
    #[arg(long, env = "DEIS_APP_UID_RANGE")]
    app_uid_range: Option<deis_sdk::deis_core::model::IdentityRange>,
    /// Most units the apps of one non-admin user may run together.
    #[arg(long, env = "DEIS_MAX_UNITS_PER_USER", default_value_t = 100)]
    max_units_per_user: u32,
    /// Embed the PostgreSQL service broker (service `postgresql`, plan `shared`) for the
    /// server at this superuser URL (postgres://user:password@host:port/postgres).
    #[arg(long, env = "DEIS_BROKER_POSTGRES_URL", hide_env_values = true)]
    broker_postgres: Option<String>,
    /// Embed the Redis service broker (service `redis`, plans `prefix` and `db`) for the
    /// server at this URL (`redis://[user:password@]host:port`).
    #[arg(long, env = "DEIS_BROKER_REDIS_URL", hide_env_values = true)]
    broker_redis: Option<String>,
    /// Where telemetry snapshots are pushed (repeatable): `statsd://HOST:PORT`,
    /// `influxdb://HOST:PORT/DB`, `webhook+http://HOST:PORT/PATH`. Prometheus scrapes
    /// `GET /metrics` on the API address (with an admin's token) instead.
    #[arg(long = "telemetry-sink", value_name = "URI")]
    telemetry_sinks: Vec<SinkUri>,
    /// How often units are read and snapshots pushed (`10s`).
    #[arg(long, env = "DEIS_TELEMETRY_INTERVAL", value_parser = duration)]
    telemetry_interval: Option<Duration>,
    /// A telemetry config file (`interval = 10s`, `queue = 8`, `sink = URI` lines);
    /// flags add to it.
    #[arg(long, env = "DEIS_TELEMETRY_CONFIG")]
    telemetry_config: Option<PathBuf>,
    /// Whether the router counts per-app traffic: on or off.
    #[arg(long, env = "DEIS_ROUTER_METRICS", default_value = "on", value_parser = on_off, action = clap::ArgAction::Set)]
    router_metrics: bool,
    /// Whether process types with `deis autoscale:set` bounds are scaled on their cpu: on or off.
    #[arg(long, env = "DEIS_AUTOSCALE", default_value = "on", value_parser = on_off, action = clap::ArgAction::Set)]
    autoscale: bool,
    /// How often the autoscaler looks at the units' cpu (`10s`). It reads what the
    /// telemetry loop collected, so keep it at least `--telemetry-interval`.
    #[arg(long, env = "DEIS_AUTOSCALE_INTERVAL", value_parser = duration)]
    autoscale_interval: Option<Duration>,
    /// How long every reading must ask for more units before the autoscaler adds any (`30s`).
    #[arg(long, env = "DEIS_AUTOSCALE_UP_WINDOW", value_parser = duration)]
    autoscale_up_window: Option<Duration>,
    /// How long every reading must ask for fewer units before the autoscaler removes any (`3m`).
    #[arg(long, env = "DEIS_AUTOSCALE_DOWN_WINDOW", value_parser = duration)]
    autoscale_down_window: Option<Duration>,
}

fn on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" | "true" => Ok(true),
        "off" | "false" => Ok(false),
        _ => Err("use on or off".into()),
    }
}

/// `--log-store`: a log store URI, or `redis` for the server of `--redis-url`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum LogStoreArg {
    Uri(LogStoreUri),
    RedisUrlFlag,
}

fn log_store(s: &str) -> Result<LogStoreArg, deis_sdk::adapters::UriError> {
    match s {
        "redis" => Ok(LogStoreArg::RedisUrlFlag),
        _ => s.parse().map(LogStoreArg::Uri),
    }
}

/// A positive duration (`90s`, `30m`, `12h`, or seconds).
fn duration(s: &str) -> Result<Duration, String> {
    deis_sdk::deis_core::time::parse_duration(s).map_err(|e| e.to_string())
}

fn cpu(s: &str) -> Result<u64, String> {
    limits::parse_cpu(s).map(|c| c.0).map_err(|e| e.message)
}

fn memory(s: &str) -> Result<u64, String> {
    limits::parse_memory(s).map(|m| m.0).map_err(|e| e.message)
}

fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{e} (want a whole number, at least 1)")),
    }
}

/// `--syslog-addr`, `--builder-addr`, `--router-tls-addr`: an address, or none for `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct OptionalAddr(Option<SocketAddr>);

fn optional_addr(s: &str) -> Result<OptionalAddr, String> {
    match s {
        "off" | "none" | "" => Ok(OptionalAddr(None)),
        a => a.parse().map(|a| OptionalAddr(Some(a))).map_err(|e| format!("{e} (want IP:PORT, or off)")),
    }
}

fn tty_secret(s: &str) -> Result<String, String> {
    if s.len() < MIN_TTY_SECRET_BYTES {
        return Err(format!(
            "{} bytes; it needs at least {MIN_TTY_SECRET_BYTES} (e.g. `openssl rand -hex 32`)",
            s.len()
        ));
    }
    Ok(s.to_string())
}

impl Args {
    /// Telemetry from the config file, then the flags.
    fn telemetry(&self) -> Result<TelemetrySettings, String> {
        let mut config = TelemetryConfig::default();
        if let Some(path) = &self.telemetry_config {
            config = config.merge_path(path).map_err(|e| format!("--telemetry-config {e}"))?;
        }
        config.sinks.extend(self.telemetry_sinks.iter().cloned());
        if let Some(i) = self.telemetry_interval {
            config.interval = i;
        }
        let mut settings = TelemetrySettings::default();
        settings.config = config;
        settings.router_metrics = self.router_metrics;
        if !self.autoscale {
            settings.autoscale = None;
        }
        if let Some(autoscale) = &mut settings.autoscale {
            autoscale.interval = self.autoscale_interval.unwrap_or(autoscale.interval);
            autoscale.up_window = self.autoscale_up_window.unwrap_or(autoscale.up_window);
            autoscale.down_window = self.autoscale_down_window.unwrap_or(autoscale.down_window);
        }
        if matches!(self.scheduler, SchedulerUri::Docker | SchedulerUri::Swarm) {
            // The units are containers: their usage comes from the engines' stats API (a
            // swarm's: its manager's engine; other nodes' units by the agent there).
            let endpoints: Vec<String> = self.docker_hosts()?.into_iter().map(|h| h.endpoint).collect();
            settings.unit_stats = Some(std::sync::Arc::new(DockerUnitStats::connect(&endpoints)?));
        }
        Ok(settings)
    }

    fn store(&self) -> StoreUri {
        self.store.clone().unwrap_or_else(|| StoreUri::Redb(self.data_dir.join("store.redb")))
    }

    fn replica_id(&self) -> String {
        self.replica_id.clone().unwrap_or_else(|| {
            format!("{}:{}", deis_sdk::deis_core::scheduler::local::hostname(), self.api_addr.port())
        })
    }

    fn log_store(&self) -> Result<LogStoreUri, deis_sdk::adapters::UriError> {
        match &self.log_store {
            LogStoreArg::Uri(uri) => Ok(uri.clone()),
            LogStoreArg::RedisUrlFlag => self.redis_url.parse(),
        }
    }

    fn tty_config(&self) -> TtyConfig {
        let mut tty = TtyConfig::default();
        tty.idle_timeout = self.tty_idle_timeout;
        tty.max_session = self.tty_max_session;
        tty.allowed_origins = self.tty_allowed_origins.clone();
        tty
    }

    /// The engines of `--docker-host`; without any, `DOCKER_HOST` or the local engine.
    fn docker_hosts(&self) -> Result<Vec<DockerHost>, String> {
        if !self.docker_hosts.is_empty() {
            return Ok(self.docker_hosts.clone());
        }
        let fallback = std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into());
        fallback.parse::<DockerHost>().map(|h| vec![h]).map_err(|e| format!("DOCKER_HOST: {e}"))
    }

    /// The platform these flags describe, with its adapters opened and `registry` (the
    /// opened `--registry`) as its platform registry, and the update service's records
    /// (to flush at shutdown).
    async fn builder(
        &self,
        registry: Option<&PlatformRegistry>,
    ) -> Result<(PlatformBuilder, Arc<dyn UpdateChannel>), String> {
        let mut capacity = Capacity::of_this_machine();
        capacity.cpu_millis = self.cpu.unwrap_or(capacity.cpu_millis);
        capacity.memory_bytes = self.memory.unwrap_or(capacity.memory_bytes);
        let limits = ApiLimits {
            max_upload_bytes: self.max_upload_mb.saturating_mul(1 << 20),
            max_concurrent_uploads: self.max_concurrent_uploads,
            header_read_timeout: Duration::from_secs(self.api_header_read_timeout),
            max_connections: usize::try_from(self.api_max_connections).unwrap_or(usize::MAX),
            ..ApiLimits::default()
        };
        let store_uri = self.store();
        let store = store_uri.open().await.map_err(|e| format!("--store {store_uri}: {e}"))?;
        let log_uri = self.log_store().map_err(|e| format!("--redis-url: {e}"))?;
        let logs = log_uri.open(self.log_lines_per_app).await.map_err(|e| format!("--log-store {log_uri}: {e}"))?;
        let updates: Arc<dyn UpdateChannel> = Arc::new(StoreUpdateChannel::new(store.clone()));
        let mut b = Platform::builder(&self.data_dir)
            .store(store.clone())
            .log_store(logs)
            .api(self.api_addr)
            .router(self.router_addr)
            .router_tls(self.router_tls_addr.0.map_or(Listen::Off, Listen::Addr))
            .syslog(self.syslog_addr.0.map_or(SyslogListen::Off, SyslogListen::Addr))
            .domain(&self.domain)
            .registration(self.registration)
            .capacity(capacity)
            .api_limits(limits)
            .log_lines_per_app(self.log_lines_per_app)
            .tty_config(self.tty_config())
            .trusted_proxies(self.router_trusted_proxies.clone())
            .shutdown_grace(self.shutdown_grace)
            .max_units_per_user(self.max_units_per_user)
            .max_build_bytes(self.max_build_mb.saturating_mul(1 << 20))
            .telemetry(self.telemetry()?)
            // The update service: Omaha at /v1/update/, its admin API under /v2/updates/.
            .api_routes(deis_sdk::update::routes_on(store.clone(), updates.clone()));
        let mut builder_config = BuilderConfig::default();
        if let Some(range) = self.app_uid_range {
            b = b.app_identities(Some(range));
        }
        match self.scheduler {
            // The embedded default, with the capacity above.
            SchedulerUri::Local => {}
            SchedulerUri::Docker => {
                let mut config = DockerSchedulerConfig::new(self.docker_hosts()?);
                config.policy = self.placement;
                config.stack_image = self.stack_image.clone();
                // Units' output goes from the engine to our syslog listener.
                config.syslog_address = self.syslog_addr.0.map(|a| format!("tcp://{a}"));
                if let Some(login) = registry.and_then(|r| r.login.clone()) {
                    let host = registry.map(|r| r.client.host().to_string()).unwrap_or_default();
                    let login = PullCredentials { username: login.username, password: login.password };
                    config.registry_logins.insert(host, login);
                }
                // `deis run` where the units run: in a unit's container, else a one-off
                // container on a data-plane engine.
                let broker =
                    DockerHostsTtyBroker::connect(&config.hosts, &config.stack_image, config.registry_logins.clone())
                        .await
                        .map_err(|e| format!("--docker-host: {e}"))?;
                b = b.tty_broker(std::sync::Arc::new(broker));
                b = b.scheduler_with(move |ctx| async move {
                    let store = ctx.store.clone();
                    config.supervision = ctx.local_config();
                    // Container log tags carry the app's ingest token.
                    config.ingest_tokens = Some(ctx.ingest_tokens.clone());
                    let scheduler: std::sync::Arc<dyn deis_sdk::deis_core::Scheduler> =
                        DockerScheduler::connect(config, store).await?;
                    Ok(scheduler)
                });
            }
            SchedulerUri::Swarm => {
                let hosts = self.docker_hosts()?;
                let [manager] = hosts.as_slice() else {
                    return Err("--scheduler swarm takes one --docker-host: a manager of the swarm".into());
                };
                let mut config = SwarmSchedulerConfig::new(manager.endpoint.clone());
                config.address = manager.address;
                if let Some((registry, login)) = registry.and_then(|r| Some((r, r.login.clone()?))) {
                    let login = PullCredentials { username: login.username, password: login.password };
                    config.registry_logins.insert(registry.client.host().to_string(), login);
                }
                config.policy = self.placement;
                config.stack_image = self.stack_image.clone();
                // Source builds go to the platform registry, for every node to pull.
                if let Some(registry) = registry {
                    let publisher = DockerfileBuilds::connect(&manager.endpoint, registry.clone())?;
                    config.publisher = Some(std::sync::Arc::new(publisher));
                }
                // `deis run` in the release's image, on the manager's engine.
                let broker = SwarmTtyBroker::connect(&manager.endpoint, config.registry_logins.clone())
                    .await
                    .map_err(|e| format!("--docker-host {}: {e}", manager.endpoint))?;
                b = b.tty_broker(std::sync::Arc::new(broker));
                // Units' output goes from the nodes' engines to our syslog listener.
                config.syslog_address = self.syslog_addr.0.map(|a| format!("tcp://{a}"));
                b = b.scheduler_with(move |ctx| async move {
                    let local = ctx.local_config();
                    config.stop_timeout = local.stop_timeout;
                    config.ready_timeout = local.ready_timeout;
                    // Unit log tags carry the app's ingest token.
                    config.ingest_tokens = Some(ctx.ingest_tokens.clone());
                    let scheduler: std::sync::Arc<dyn deis_sdk::deis_core::Scheduler> =
                        SwarmScheduler::connect(config).await?;
                    Ok(scheduler)
                });
            }
            SchedulerUri::Kubernetes => {
                let paths = self.kubeconfig.as_deref().map(KubernetesSchedulerConfig::paths).unwrap_or_default();
                let mut config = KubernetesSchedulerConfig::new(paths);
                config.policy = self.placement;
                config.stack_image = self.stack_image.clone();
                // `deis run` execs in the app's pods.
                let client = kubernetes::client(&config).await.map_err(|e| format!("--kubeconfig: {e}"))?;
                b = b.tty_broker(std::sync::Arc::new(KubernetesTtyBroker::new(client)));
                b = b.scheduler_with(move |_| async move {
                    let scheduler: std::sync::Arc<dyn deis_sdk::deis_core::Scheduler> =
                        KubernetesScheduler::connect(config).await?;
                    Ok(scheduler)
                });
            }
            SchedulerUri::Marathon => {
                let url =
                    self.marathon_url.clone().ok_or("--scheduler marathon needs --marathon-url http://HOST:PORT")?;
                let config = MarathonSchedulerConfig::new(url, capacity);
                b = b.scheduler_with(move |_| async move {
                    let scheduler: std::sync::Arc<dyn deis_sdk::deis_core::Scheduler> =
                        MarathonScheduler::connect(config).await?;
                    Ok(scheduler)
                });
            }
            other => return Err(format!("--scheduler {other}: not supported by this deisd")),
        }
        // Image schedulers with a registry build pushed Dockerfiles on the (first) engine.
        if let (SchedulerUri::Docker | SchedulerUri::Swarm, Some(registry)) = (&self.scheduler, registry) {
            let endpoint = self.docker_hosts()?.first().map(|h| h.endpoint.clone()).unwrap_or_default();
            builder_config.dockerfile_builds = Some(DockerfileBuilds::connect(&endpoint, registry.clone())?);
        }
        b = b.git_builder(self.builder_addr.0.map_or(Listen::Off, Listen::Addr), builder_config);
        if let Some(registry) = registry {
            b = b.registry(registry.clone());
        }
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            b = b.tls_certificate(cert, key);
        }
        if let Some(secret) = &self.tty_secret {
            b = b.tty_secret(secret.as_bytes());
        }
        for (name, broker) in self.service_brokers(&store).await? {
            b = b.service_broker(name, broker);
        }
        // A shared store may have other deisd on it: one is elected to run the units.
        if matches!(store_uri, StoreUri::Etcd(..)) {
            b = b.replica(ReplicaConfig::new(self.replica_id()));
        }
        Ok((b, updates))
    }
}

impl Args {
    /// The embedded service brokers `--broker-postgres` and `--broker-redis` ask for,
    /// their state in the platform's store.
    async fn service_brokers(
        &self,
        store: &std::sync::Arc<dyn deis_sdk::deis_core::Store>,
    ) -> Result<Vec<(&'static str, std::sync::Arc<dyn deis_sdk::deis_core::ServiceBroker>)>, String> {
        use deis_sdk::deis_core::broker::{Backend, ManagedBroker};
        let mut backends: Vec<(&'static str, std::sync::Arc<dyn Backend>)> = Vec::new();
        if let Some(url) = &self.broker_postgres {
            let backend =
                deis_sdk::osb::postgres::PostgresBackend::new(url).map_err(|e| format!("--broker-postgres: {e}"))?;
            backends.push(("postgresql", std::sync::Arc::new(backend)));
        }
        if let Some(url) = &self.broker_redis {
            let backend =
                deis_sdk::osb::redis::RedisBackend::new(url, 16).map_err(|e| format!("--broker-redis: {e}"))?;
            backends.push(("redis", std::sync::Arc::new(backend)));
        }
        let mut brokers = Vec::new();
        for (name, backend) in backends {
            let broker = ManagedBroker::start(store.clone(), format!("brokers/{name}/"), backend)
                .await
                .map_err(|e| format!("the {name} broker: {e}"))?;
            brokers.push((name, std::sync::Arc::new(broker) as std::sync::Arc<dyn deis_sdk::deis_core::ServiceBroker>));
        }
        Ok(brokers)
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Args = parse_flags("deisd");
    init_tracing(args.log_format);
    let registry = match args.registry.open(&args.data_dir, args.api_addr).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("deisd: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (platform, updates) = match args.builder(registry.as_ref().map(|r| &r.platform)).await {
        Ok((builder, updates)) => (builder.start().await.map_err(|e| e.to_string()), Some(updates)),
        Err(e) => (Err(e), None),
    };
    let platform = match platform {
        Ok(p) => p,
        Err(e) => {
            eprintln!("deisd: {e}");
            return ExitCode::FAILURE;
        }
    };
    let show = |a: Option<SocketAddr>| a.map_or_else(|| "off".to_string(), |a| format!("http://{a}"));
    let https = platform.router_tls_addr().map_or_else(|| "off".to_string(), |a| format!("https://{a}"));
    eprintln!(
        "deisd is up: controller API {}  router {}  HTTPS {https}  builder {}  (apps at http://<app>.{}:{})",
        show(platform.api_addr()),
        show(platform.router_addr()),
        platform.builder_addr().map_or_else(|| "off".to_string(), |a| format!("ssh://git@{a}")),
        platform.domain(),
        platform.router_addr().map_or(0, |a| a.port())
    );
    deis_sdk::shutdown_signal().await;
    platform.shutdown().await;
    // Check-ins the update service buffered in memory.
    if let Some(updates) = updates
        && let Err(e) = updates.flush().await
    {
        eprintln!("deisd: writing buffered update check-ins: {e}");
    }
    if let Some(mut embedded) = registry.and_then(|r| r.embedded) {
        embedded.stop().await;
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &[&str]) -> Result<Args, String> {
        Args::try_parse_from(["deisd"].iter().chain(extra)).map_err(|e| e.to_string())
    }

    #[test]
    fn tty_flags_configure_the_embedded_broker() {
        let a = parse(&[]).unwrap();
        let c = a.tty_config();
        assert_eq!((c.idle_timeout, c.max_session), (Duration::from_secs(1800), Duration::from_secs(43200)));
        assert_eq!(a.tty_secret, None, "random per start by default");
        let secret = "0123456789abcdef0123456789abcdef";
        let a = parse(&[
            "--tty-secret",
            secret,
            "--tty-idle-timeout",
            "90s",
            "--tty-max-session",
            "2h 30m",
            "--tty-allowed-origin",
            "https://a.example",
            "--tty-allowed-origin",
            "https://b.example",
        ])
        .unwrap();
        assert_eq!(a.tty_secret.as_deref(), Some(secret), "used as is, like deis-tty-broker --secret");
        let c = a.tty_config();
        assert_eq!(c.idle_timeout, Duration::from_secs(90));
        assert_eq!(c.max_session, Duration::from_secs(9000));
        assert_eq!(c.allowed_origins, ["https://a.example", "https://b.example"]);

        let e = parse(&["--tty-secret", "short"]).unwrap_err();
        assert!(e.contains("--tty-secret") && e.contains("5 bytes; it needs at least 32"), "{e}");
        let e = parse(&["--tty-idle-timeout", "soon"]).unwrap_err();
        assert!(e.contains("--tty-idle-timeout") && e.contains("30m"), "{e}");
        assert!(parse(&["--tty-max-session", "0s"]).unwrap_err().contains("more than 0"));
    }

    #[test]
    fn the_builder_listens_on_2222_unless_off() {
        assert_eq!(parse(&[]).unwrap().builder_addr, OptionalAddr(Some("127.0.0.1:2222".parse().unwrap())));
        assert_eq!(parse(&["--builder-addr", "off"]).unwrap().builder_addr, OptionalAddr(None));
        let a = parse(&["--builder-addr", "0.0.0.0:22"]).unwrap();
        assert_eq!(a.builder_addr, OptionalAddr(Some("0.0.0.0:22".parse().unwrap())));
        let e = parse(&["--builder-addr", "loud"]).unwrap_err();
        assert!(e.lines().next().unwrap().contains("--builder-addr"), "{e}");
    }

    #[test]
    fn telemetry_comes_from_the_file_then_the_flags() {
        let dir = std::env::temp_dir().join(format!("deisd-telemetry-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("telemetry.conf");
        std::fs::write(&file, "interval = 30s\nsink = statsd://127.0.0.1:8125\n").unwrap();
        let a = parse(&[
            "--telemetry-config",
            file.to_str().unwrap(),
            "--telemetry-sink",
            "influxdb://127.0.0.1:8086/deis",
            "--telemetry-interval",
            "5s",
            "--router-metrics",
            "off",
        ])
        .unwrap();
        let t = a.telemetry().unwrap();
        assert_eq!(t.config.interval, Duration::from_secs(5), "the flag wins");
        assert_eq!(t.config.sinks.len(), 2);
        assert!(!t.router_metrics && t.autoscale.is_some());
        std::fs::write(&file, "sink = nowhere\n").unwrap();
        let e = parse(&["--telemetry-config", file.to_str().unwrap()]).unwrap().telemetry().unwrap_err();
        assert!(e.starts_with("--telemetry-config") && e.contains("line 1"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_autoscaler_takes_its_interval_and_windows_from_flags() {
        let secs = Duration::from_secs;
        let d = parse(&[]).unwrap().telemetry().unwrap().autoscale.unwrap();
        assert_eq!((d.interval, d.up_window, d.down_window), (secs(10), secs(30), secs(180)));
        let a =
            parse(&["--autoscale-interval", "500ms", "--autoscale-up-window", "2s", "--autoscale-down-window", "4s"])
                .unwrap();
        let c = a.telemetry().unwrap().autoscale.unwrap();
        assert_eq!((c.interval, c.up_window, c.down_window), (Duration::from_millis(500), secs(2), secs(4)));
        assert!(
            parse(&["--autoscale", "off", "--autoscale-interval", "1s"])
                .unwrap()
                .telemetry()
                .unwrap()
                .autoscale
                .is_none()
        );
        assert!(parse(&["--autoscale-down-window", "0s"]).unwrap_err().contains("more than 0"));
    }

    #[test]
    fn adapters_are_picked_by_uri() {
        let a = parse(&["--data-dir", "/d"]).unwrap();
        assert_eq!(a.store(), StoreUri::Redb("/d/store.redb".into()));
        assert_eq!(a.log_store().unwrap(), LogStoreUri::Ring);
        assert_eq!(a.scheduler, SchedulerUri::Local);
        let a = parse(&[
            "--scheduler",
            "docker",
            "--docker-host",
            "unix:///a.sock;name=a",
            "--docker-host",
            "tcp://10.0.0.2:2375",
        ])
        .unwrap();
        assert_eq!(a.scheduler, SchedulerUri::Docker);
        let hosts = a.docker_hosts().unwrap();
        assert_eq!(hosts.len(), 2);
        assert_eq!((hosts[0].name.as_deref(), hosts[1].endpoint.as_str()), (Some("a"), "tcp://10.0.0.2:2375"));
        assert_eq!(a.placement, Policy::Binpack);
        let a = parse(&["--store", "redb:/elsewhere/s.redb", "--log-store", "redis://10.0.0.1:6380/1"]).unwrap();
        assert_eq!(a.store(), StoreUri::Redb("/elsewhere/s.redb".into()));
        assert_eq!(a.log_store().unwrap(), LogStoreUri::Redis("redis://10.0.0.1:6380/1".into()));
        // The older spelling: `redis` plus --redis-url.
        let a = parse(&["--log-store", "redis", "--redis-url", "redis://10.0.0.2"]).unwrap();
        assert_eq!(a.log_store().unwrap(), LogStoreUri::Redis("redis://10.0.0.2".into()));
        // The previews: a kubeconfig (a KUBECONFIG-style list), Marathon's URL.
        let a = parse(&["--scheduler", "kubernetes", "--kubeconfig", "/a/config:/b/config"]).unwrap();
        assert_eq!(a.scheduler, SchedulerUri::Kubernetes);
        let paths = KubernetesSchedulerConfig::paths(a.kubeconfig.as_deref().unwrap());
        assert_eq!(paths, [std::path::PathBuf::from("/a/config"), "/b/config".into()]);
        let a = parse(&["--scheduler", "marathon", "--marathon-url", "http://10.0.0.3:8080"]).unwrap();
        assert_eq!((a.scheduler, a.marathon_url.as_deref()), (SchedulerUri::Marathon, Some("http://10.0.0.3:8080")));
    }

    #[tokio::test]
    async fn marathon_needs_its_url() {
        let dir = std::env::temp_dir().join(format!("deisd-marathon-{}", std::process::id()));
        let data = dir.to_str().unwrap();
        let a = parse(&["--scheduler", "marathon", "--data-dir", data, "--builder-addr", "off"]).unwrap();
        let Err(err) = a.builder(None).await else { panic!("--scheduler marathon without --marathon-url accepted") };
        let _ = std::fs::remove_dir_all(&dir);
        assert!(err.contains("--marathon-url"), "{err}");
    }

    #[test]
    fn bad_values_name_the_flag_and_the_accepted_forms() {
        for (flag, value, wanted) in [
            ("--store", "etcd2://x", "accepted forms are redb:PATH, etcd://"),
            ("--log-store", "kafka://x", "accepted forms are ring, redis://"),
            ("--scheduler", "fleet", "accepted forms are local, docker, swarm, kubernetes, marathon"),
            ("--docker-host", "/run/docker.sock", "the endpoint must be unix:///PATH or tcp://HOST:PORT"),
            ("--placement", "random", "use binpack or spread"),
            ("--registration", "sometimes", "use enabled, admin_only or disabled"),
            ("--syslog-addr", "loud", "want IP:PORT, or off"),
            ("--cpu", "lots", ""),
            ("--log-lines-per-app", "0", "at least 1"),
            ("--log-format", "xml", "use text or json"),
            ("--telemetry-sink", "kafka://x", "accepted forms are statsd://"),
            ("--router-metrics", "maybe", "use on or off"),
        ] {
            let e = parse(&[flag, value]).unwrap_err();
            let first = e.lines().next().unwrap();
            assert!(first.contains(flag) && first.contains(wanted), "{flag} {value}: {e}");
        }
    }
}
