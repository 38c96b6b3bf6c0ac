//! [`DockerScheduler`]: units as containers on one or more Docker engines (feature
//! `docker`).
//!
//! - **Hosts**: each [`DockerHost`] is an engine's API (`unix:///…` or `tcp://…`) with
//!   the node's name, capacity (default: what the engine reports), labels and planes.
//!   They are registered as nodes in the placement records of the [`Store`], which
//!   every deisd replica shares.
//! - **Placement**: `apply` places every slot (`<app>.<type>.<n>`) with the placement
//!   engine ([`deis_core::scheduler::placement`]): data-plane nodes only, the app's
//!   tags as a label selector, units of one type spread over nodes, bin-pack or
//!   spread; the plan is committed with compare-and-swap, so two schedulers never
//!   overcommit a node. A spec that does not fit is refused
//!   ([`SchedulerError::Capacity`]) and nothing changes; a tag no node carries is
//!   refused as [`SchedulerError::Invalid`], naming the labels nodes do carry.
//! - **Containers**: one per unit instance, on its slot's node, labelled `deis.app`,
//!   `deis.type` (so `deis run` finds them, see [`crate::tty::docker`]), `deis.unit`
//!   and `deis.release`; cpu (`NanoCpus`) and memory limits from the unit's limits
//!   (its requests where no limit is set), a pids limit, no capabilities and
//!   `no-new-privileges`, optionally a read-only root; the app's own uid and gid
//!   (when the platform gives apps identities) unless the image names a non-root
//!   user; an init as PID 1; the release's config plus `PORT`, `DEIS_APP`,
//!   `DEIS_RELEASE`, `DEIS_UNIT` as environment. Images run as they are (a non-empty
//!   command runs with `/bin/sh -c`); a source build runs on the
//!   [stack image](DockerSchedulerConfig::stack_image) with the build copied to
//!   [`APP_DIR`]. Networking per host ([`Networking`]): the host's own network (the
//!   unit listens on its `PORT` there) or the default bridge with `PORT` published.
//! - **Supervision** is the local scheduler's ([`LocalScheduler::on_runtime`]): rolling
//!   replacement one unit at a time, new before old, gated on readiness (the process
//!   type's healthcheck: `httpGet` and `tcpSocket` from here to the unit's address,
//!   `exec` inside the container; without one an open `PORT` for `web`); a unit whose
//!   container exits is announced `crashed` with its exit status and restarted with
//!   backoff. The engine's restart policy is `no`: restarts are the scheduler's, so a
//!   unit can come back on another node.
//! - **Lost nodes**: every [`health_interval`](DockerSchedulerConfig::health_interval)
//!   each engine is pinged; one that does not answer is marked down (it gets no new
//!   units), and once it has been down for
//!   [`down_grace`](DockerSchedulerConfig::down_grace) its slots are placed on other
//!   nodes, where their next restart runs.
//! - **Logs**: the containers' output goes to the scheduler's
//!   [`UnitOutput`](deis_core::scheduler::local::UnitOutput), or, with
//!   [`syslog_address`](DockerSchedulerConfig::syslog_address), straight from the
//!   engine to the logger through Docker's syslog log driver (RFC 5424, tag = unit
//!   name, then `/` and the app's ingest token with
//!   [`ingest_tokens`](DockerSchedulerConfig::ingest_tokens)).
//!
//! - **Images** are pulled onto the data-plane engines that answer before a spec is
//!   applied (one that does not answer is being watched as lost, and skipped), with the
//!   platform registry's credentials ([`DockerSchedulerConfig::registry_logins`]) or
//!   the app's ([`AppSpec::pull_credentials`]); one that cannot be pulled refuses the
//!   spec (a clear [`SchedulerError::Invalid`], nothing changed). Images pushed with
//!   `deis push` are named by digest.
//!
//! - **Restarts of deisd**: unit containers outlive deisd (shutdown leaves them
//!   running, and so does a crash). At start the scheduler lists the running unit
//!   containers (labels `deis.unit`, [`LABEL_CONFIG`], [`LABEL_PORT`]); a unit it starts
//!   adopts the container of its name on its node when the config digest matches (the
//!   same artifact, command, environment, resources and networking), keeping its port;
//!   others are removed: at once when the app's spec has no such slot or a different
//!   config, after [`adopt_grace`](DockerSchedulerConfig::adopt_grace) for apps that
//!   are never applied again. Stopped unit containers are removed at start.
//!
//! Not done yet: ports are allocated on the machine deisd runs on, which is right for
//! engines on this machine and a guess for remote ones.

mod host;
mod pull;
mod runtime;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker;
use deis_core::Store;
use deis_core::model::{AppName, Unit};
use deis_core::scheduler::local::{LocalScheduler, LocalSchedulerConfig};
use deis_core::scheduler::placement::{Health, NodeInfo, PlacementStore, Policy};
use deis_core::scheduler::{
    AppSpec, Capacity, NodeStatus, PullCredentials, RestartFilter, Result, Scheduler, SchedulerError, UnitEvent,
};
use deis_core::time::Timestamp;
use tokio::sync::broadcast;

pub use self::host::{DockerHost, DockerHostError, Networking};
pub(crate) use self::pull::pull;
pub use self::pull::registry_of;
pub(crate) use self::runtime::tar_of;
pub use self::runtime::{APP_DIR, DockerRuntime, LABEL_CONFIG, LABEL_PORT, LABEL_RELEASE, LABEL_UNIT};
use self::runtime::{ContainerSettings, Host};

pub use super::DEFAULT_STACK_IMAGE;
/// How long connecting to an engine may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings of the [`DockerScheduler`]. [`DockerSchedulerConfig::new`] gives the
/// defaults; adjust the public fields after.
#[derive(Debug, Clone)]
pub struct DockerSchedulerConfig {
    /// The engines units run on (at least one).
    pub hosts: Vec<DockerHost>,
    /// How placement ranks nodes (default bin-pack).
    pub policy: Policy,
    /// The image source builds run on (default [`DEFAULT_STACK_IMAGE`]).
    pub stack_image: String,
    /// Send units' output through Docker's syslog log driver to this address
    /// (`tcp://127.0.0.1:5514`) instead of streaming it to
    /// [`supervision`](Self::supervision)'s output.
    pub syslog_address: Option<String>,
    /// The apps' syslog ingest tokens: each container's syslog tag ends in its app's
    /// token (`hello.web.1/TOKEN`), so a listener that checks tokens takes its lines
    /// (deisd passes its [`SchedulerContext::ingest_tokens`](crate::assembly::SchedulerContext::ingest_tokens)).
    /// A container made before a rotation keeps the old token until it restarts.
    pub ingest_tokens: Option<Arc<crate::logger::IngestTokens>>,
    /// Supervision settings (stop and ready timeouts, drain delay, unit output); its
    /// state directory, node name and capacity are not used.
    pub supervision: LocalSchedulerConfig,
    /// How often each engine is pinged (default 5 s).
    pub health_interval: Duration,
    /// How long an engine may not answer before its units are placed elsewhere
    /// (default 30 s).
    pub down_grace: Duration,
    /// Most processes in one unit's container (default 1024): a fork bomb stays in
    /// its unit.
    pub pids_limit: u32,
    /// Run containers with a read-only root filesystem and a private writable
    /// `/tmp` (tmpfs) (default off: many images write where they run).
    pub read_only_root: bool,
    /// Credentials the engines pull with, by registry (`host[:port]`): the platform
    /// registry's. Other registries get the app's (`deis registry:set`).
    pub registry_logins: BTreeMap<String, PullCredentials>,
    /// How long unit containers a previous run left wait to be adopted by their apps
    /// before they are removed (default 5 min).
    pub adopt_grace: Duration,
}

impl DockerSchedulerConfig {
    /// Defaults, on `hosts`.
    pub fn new(hosts: Vec<DockerHost>) -> Self {
        Self {
            hosts,
            policy: Policy::Binpack,
            stack_image: DEFAULT_STACK_IMAGE.into(),
            syslog_address: None,
            ingest_tokens: None,
            supervision: LocalSchedulerConfig::new(std::env::temp_dir()),
            health_interval: Duration::from_secs(5),
            down_grace: Duration::from_secs(30),
            pids_limit: 1024,
            read_only_root: false,
            registry_logins: BTreeMap::new(),
            adopt_grace: Duration::from_secs(300),
        }
    }
}

/// Runs units as containers on Docker engines. See the module docs.
#[derive(Debug)]
pub struct DockerScheduler {
    inner: Arc<LocalScheduler>,
    runtime: Arc<DockerRuntime>,
    monitor: tokio::task::JoinHandle<()>,
    registry_logins: BTreeMap<String, PullCredentials>,
    /// The engines of data-plane nodes (the ones units run on), where images are pulled.
    data_engines: Vec<(String, Docker)>,
}

fn backend(what: String, e: impl std::fmt::Display) -> SchedulerError {
    SchedulerError::Backend(format!("{what}: {e}").into())
}

/// Connects to the engine of `host` and works out its node.
async fn connect(host: &DockerHost, taken: &[String]) -> Result<(Host, NodeInfo)> {
    let endpoint = &host.endpoint;
    let docker = Docker::connect_with_host(endpoint).map_err(|e| backend(format!("docker host {endpoint}"), e))?;
    let probe = async {
        let docker = docker.negotiate_version().await?;
        let info = docker.info().await?;
        Ok::<_, bollard::errors::Error>((docker, info))
    };
    let (docker, info) = tokio::time::timeout(CONNECT_TIMEOUT, probe)
        .await
        .map_err(|_| backend(format!("docker host {endpoint}"), "no answer within 10 s; is the engine running?"))?
        .map_err(|e| backend(format!("docker host {endpoint}"), e))?;
    let mut name = host.name.clone().or(info.name).unwrap_or_else(|| "docker".into());
    if host.name.is_none() && taken.contains(&name) {
        // Two engines on one machine report the same host name.
        name = (2..).map(|i| format!("{name}-{i}")).find(|n| !taken.contains(n)).unwrap_or(name);
    }
    if taken.contains(&name) {
        return Err(SchedulerError::Invalid(format!("two docker hosts are named {name}: give each its own name=")));
    }
    let capacity = Capacity {
        cpu_millis: host.cpu_millis.unwrap_or_else(|| info.ncpu.map_or(1000, |n| n.max(1) as u64 * 1000)),
        memory_bytes: host.memory_bytes.unwrap_or_else(|| info.mem_total.map_or(1 << 30, |m| m.max(0) as u64)),
    };
    let ip = host.address.or_else(|| host.default_address()).ok_or_else(|| {
        SchedulerError::Invalid(format!(
            "docker host {endpoint}: the units' address is not an IP; add address=IP to its --docker-host"
        ))
    })?;
    let mut node = NodeInfo::new(name.clone(), capacity).planes(host.planes);
    node.labels = host.labels.clone();
    Ok((Host { name, docker, ip, networking: host.networking }, node))
}

impl DockerScheduler {
    /// Connects to every host (each must answer), registers them as nodes in the
    /// placement records of `store`, and starts watching their health.
    pub async fn connect(config: DockerSchedulerConfig, store: Arc<dyn Store>) -> Result<Arc<Self>> {
        if config.hosts.is_empty() {
            return Err(SchedulerError::Invalid("the docker scheduler needs at least one --docker-host".into()));
        }
        let placement = PlacementStore::new(store, config.policy);
        let mut hosts: Vec<Host> = Vec::new();
        for h in &config.hosts {
            let taken: Vec<String> = hosts.iter().map(|h| h.name.clone()).collect();
            let (host, node) = connect(h, &taken).await?;
            placement.register(node).await.map_err(|e| backend("registering the docker hosts".into(), e))?;
            tracing::info!(node = %host.name, endpoint = %h.endpoint, "docker scheduler: node up");
            hosts.push(host);
        }
        let settings = ContainerSettings {
            stack_image: config.stack_image.clone(),
            syslog_address: config.syslog_address.clone(),
            ingest_tokens: config.ingest_tokens.clone(),
            pids_limit: i64::from(config.pids_limit),
            read_only_root: config.read_only_root,
        };
        let data_engines = hosts
            .iter()
            .zip(&config.hosts)
            .filter(|(_, h)| h.planes.contains(deis_core::scheduler::placement::Plane::Data))
            .map(|(host, _)| (host.name.clone(), host.docker.clone()))
            .collect();
        let runtime = Arc::new(DockerRuntime::new(hosts, placement.clone(), settings));
        runtime.refresh(None).await?;
        let orphans = runtime.find_orphans().await?;
        if orphans > 0 {
            tracing::info!(orphans, "docker scheduler: unit containers of a previous run found, to adopt");
            // Apps applied again adopt theirs; what is left after the grace belongs to
            // apps that are gone.
            let (runtime, grace) = (runtime.clone(), config.adopt_grace);
            tokio::spawn(async move {
                tokio::time::sleep(grace).await;
                runtime.remove_orphans(None).await;
            });
        }
        let inner = LocalScheduler::on_runtime(config.supervision.clone(), runtime.clone());
        let monitor = tokio::spawn(watch_health(runtime.clone(), placement, config.health_interval, config.down_grace));
        Ok(Arc::new(Self { inner, runtime, monitor, registry_logins: config.registry_logins, data_engines }))
    }

    /// The runtime (hosts, placements).
    pub fn runtime(&self) -> &Arc<DockerRuntime> {
        &self.runtime
    }
}

/// Pings every engine; marks the silent ones down and, after `grace`, moves their slots.
async fn watch_health(runtime: Arc<DockerRuntime>, placement: PlacementStore, every: Duration, grace: Duration) {
    let mut down_since: std::collections::HashMap<String, tokio::time::Instant> = Default::default();
    loop {
        tokio::time::sleep(every).await;
        for host in runtime.hosts() {
            let answers = tokio::time::timeout(every, host.docker.ping()).await.is_ok_and(|r| r.is_ok());
            let name = &host.name;
            if answers {
                if down_since.remove(name).is_some() {
                    tracing::info!(node = %name, "docker scheduler: node answers again");
                    let _ = placement.set_health(name, Health::Up).await;
                }
                continue;
            }
            let since = *down_since.entry(name.clone()).or_insert_with(|| {
                tracing::warn!(node = %name, "docker scheduler: node does not answer; marked down");
                tokio::time::Instant::now()
            });
            let _ = placement.set_health(name, Health::Down { since: Timestamp::now() }).await;
            if since.elapsed() >= grace {
                match placement.replace_lost(name).await {
                    Ok(plan) if !plan.is_empty() => {
                        tracing::warn!(node = %name, moved = plan.placed.len(), left = plan.unplaced.len(),
                            "docker scheduler: units of a lost node placed elsewhere");
                        if let Err(e) = runtime.refresh(None).await {
                            tracing::error!(error = %e, "docker scheduler: cannot reload placements");
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::error!(node = %name, error = %e, "docker scheduler: cannot re-place units"),
                }
            }
        }
    }
}

#[async_trait]
impl Scheduler for DockerScheduler {
    /// Pulls an image build onto every data-plane engine that answers first (see the
    /// module docs): an image that cannot be pulled refuses the spec, nothing changed.
    async fn apply(&self, spec: AppSpec) -> Result<()> {
        pull::ensure_image(&self.data_engines, &spec, &self.registry_logins).await?;
        self.inner.apply(spec).await
    }

    async fn remove(&self, app: &AppName) -> Result<()> {
        self.inner.remove(app).await
    }

    async fn units(&self, app: &AppName) -> Result<Vec<Unit>> {
        self.inner.units(app).await
    }

    async fn restart(&self, app: &AppName, filter: RestartFilter) -> Result<Vec<Unit>> {
        self.inner.restart(app, filter).await
    }

    async fn nodes(&self) -> Result<Vec<NodeStatus>> {
        self.inner.nodes().await
    }

    fn subscribe(&self) -> broadcast::Receiver<UnitEvent> {
        self.inner.subscribe()
    }

    /// Stops supervising; the unit containers keep running, for the next start to
    /// adopt (see the module docs).
    async fn shutdown(&self) {
        self.monitor.abort();
        self.runtime.detach();
        self.inner.detach().await;
    }
}

impl Drop for DockerScheduler {
    fn drop(&mut self) {
        self.monitor.abort();
    }
}
