//! [`SwarmScheduler`]: units as the tasks of Docker Swarm services (feature `swarm`).
//!
//! - **Services**: one per app process type (`<app>_<type>`), replicated with the
//!   type's count, labelled `deis.app`, `deis.type`, `deis.release`; cpu and memory
//!   reservations from the unit's requests, limits from its limits; restart policy `any` (a crashed
//!   unit's task is replaced in its slot); rolling updates one task at a time,
//!   **start-first**, gated on the container healthcheck (the readiness probe, else the
//!   liveness probe, else for `web` an open `PORT`).
//! - **Units** are tasks: `<app>.<type>.<slot>`, their state from the task's (running →
//!   `up`; a slot whose last task failed → `crashed` until its next task runs; a task
//!   being replaced → `down`), their node the task's node. Changes are announced on
//!   [`Scheduler::subscribe`] from a poll of the tasks every
//!   [`poll_interval`](SwarmSchedulerConfig::poll_interval).
//! - **Networking**: host networking, as with the local and Docker backends: each unit
//!   listens on its `PORT` on its node, reached at the node's address. Swarm gives every
//!   task of a service the same environment, so `PORT` is templated: the service's
//!   *port block* (a hundred ports of [`ports`](SwarmSchedulerConfig::ports), a new one
//!   for every template change, so old and new units never share a port during a
//!   start-first update) followed by the two-digit slot: at most
//!   [`MAX_UNITS_PER_TYPE`] units per process type.
//! - **Placement**: swarm places the tasks; the constraints keep them on data-plane nodes
//!   (node label `deis.planes`, planes joined with `+`, e.g. `docker node update --label-add
//!   deis.planes=control NODE` keeps app units off a node) carrying the app's tags as
//!   node labels (`deis tags:set disk=ssd` → `node.labels.disk==ssd`). Before any change
//!   the placement engine checks that the spec fits the nodes' resources less what other
//!   tasks reserve: a spec that does not fit is refused ([`SchedulerError::Capacity`])
//!   and nothing changes (swarm itself would leave such tasks pending).
//! - **Source builds** run on the [stack image](SwarmSchedulerConfig::stack_image) with
//!   the build copied to [`APP_DIR`], committed as an image on the manager's engine
//!   (`deis-build/<app>:v<release>`) and, with a
//!   [`publisher`](SwarmSchedulerConfig::publisher) (deisd's platform registry), pushed
//!   there and run by digest so that every node can pull it.
//! - **Logs**: with a [`syslog_address`](SwarmSchedulerConfig::syslog_address), units'
//!   output goes from each node's engine to the logger through Docker's syslog log
//!   driver (RFC 5424, tag `<app>.<type>.<slot>/<the app's ingest token>`, as the
//!   Docker backend's).
//! - **`deis run`**: [`SwarmTtyBroker`](crate::tty::swarm::SwarmTtyBroker), on the
//!   manager's engine in the release's image ([`build_image`] for source builds).
//! - **Restarts**: a process type restarts by a new template generation (rolling); one
//!   unit restarts by stopping its container, when it runs on the manager's own engine.
//! - **Restarts of deisd**: the services outlive deisd; a new deisd finds them by their
//!   labels.

mod service;
mod view;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker;
use bollard::models::{ContainerConfig, ContainerCreateBody, Service, ServiceSpecMode, ServiceSpecModeReplicated};
use bollard::query_parameters::{
    CommitContainerOptions, CreateContainerOptions, KillContainerOptions, ListContainersOptions, ListServicesOptions,
    RemoveContainerOptions, UpdateServiceOptions, UploadToContainerOptions,
};
use deis_core::model::{AppName, Unit, UnitState};
use deis_core::scheduler::placement::Policy;
use deis_core::scheduler::{
    AppSpec, Artifact, NodeStatus, PullCredentials, RestartFilter, Result, Scheduler, SchedulerError, UnitEvent,
};
use sha2::Digest;
use tokio::sync::broadcast;

pub use self::service::{LABEL_GENERATION, LABEL_PLANES, LABEL_PORT_BLOCK, MAX_UNITS_PER_TYPE, service_name};
use self::service::{LABEL_SPEC, PortBlocks, Template, restore_as_sent, service_spec, spec_digest};
use self::view::{History, View};
use super::docker::{APP_DIR, DEFAULT_STACK_IMAGE, DockerHost};
use crate::tty::docker::{LABEL_APP, LABEL_TYPE};

/// How long connecting to the manager may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Unit events kept for slow subscribers.
const EVENT_BUFFER: usize = 1024;

/// Settings of the [`SwarmScheduler`]. [`SwarmSchedulerConfig::new`] gives the
/// defaults; adjust the public fields after.
#[derive(Debug, Clone)]
pub struct SwarmSchedulerConfig {
    /// A manager's engine API: `unix:///…` or `tcp://host:port`.
    pub manager: String,
    /// The address of nodes that report none (default: 127.0.0.1 for a unix socket,
    /// the host of a `tcp://` endpoint).
    pub address: Option<IpAddr>,
    /// How admission ranks nodes (swarm itself places the tasks).
    pub policy: Policy,
    /// The image source builds run on (default [`DEFAULT_STACK_IMAGE`]).
    pub stack_image: String,
    /// Send units' output through Docker's syslog log driver to this address
    /// (`tcp://127.0.0.1:5514`; the engine of every node connects to it).
    pub syslog_address: Option<String>,
    /// The apps' syslog ingest tokens: each unit's syslog tag ends in its app's token
    /// (`hello.web.1/TOKEN`), so a listener that checks tokens takes its lines (deisd
    /// passes its [`SchedulerContext::ingest_tokens`](crate::assembly::SchedulerContext::ingest_tokens)).
    /// The token is part of the service's task template: units get a rotated one with
    /// the next release or restart.
    pub ingest_tokens: Option<Arc<crate::logger::IngestTokens>>,
    /// The ports units are given, in blocks of a hundred (default 10000-32699, below
    /// Linux's ephemeral ports).
    pub ports: RangeInclusive<u16>,
    /// How long a unit may take to stop before it is killed (default 10 s).
    pub stop_timeout: Duration,
    /// How long a unit may take to pass its first healthcheck (default 60 s).
    pub ready_timeout: Duration,
    /// Pause before a crashed unit starts again (default 1 s).
    pub restart_delay: Duration,
    /// How often tasks are read for unit events (default 500 ms).
    pub poll_interval: Duration,
    /// Credentials for registries, by `host[:port]` (the platform registry's): sent
    /// with every service change, so nodes can pull images from there.
    pub registry_logins: BTreeMap<String, PullCredentials>,
    /// Where source builds' images are published so that every node can pull them (the
    /// platform registry); without one they exist on the manager's engine only, which
    /// serves a one-node swarm.
    pub publisher: Option<Arc<dyn BuildPublisher>>,
}

/// Publishes the image of a source build, committed on the manager's engine, where the
/// swarm's nodes pull from: deisd pushes it to the platform registry.
#[async_trait]
pub trait BuildPublisher: Send + Sync + std::fmt::Debug {
    /// Publishes `local` (an image on the manager's engine) as an image of `app`; the
    /// reference nodes pull, by digest.
    async fn publish(&self, app: &AppName, local: &str) -> std::result::Result<String, String>;
}

impl SwarmSchedulerConfig {
    /// Defaults, on the manager at `manager`.
    pub fn new(manager: impl Into<String>) -> Self {
        Self {
            manager: manager.into(),
            address: None,
            policy: Policy::Binpack,
            stack_image: DEFAULT_STACK_IMAGE.into(),
            syslog_address: None,
            ingest_tokens: None,
            ports: 10000..=32699,
            stop_timeout: Duration::from_secs(10),
            ready_timeout: Duration::from_secs(60),
            restart_delay: Duration::from_secs(1),
            poll_interval: Duration::from_millis(500),
            registry_logins: BTreeMap::new(),
            publisher: None,
        }
    }
}

/// Runs units as swarm tasks. See the module docs.
#[derive(Debug)]
pub struct SwarmScheduler {
    docker: Docker,
    config: SwarmSchedulerConfig,
    blocks: PortBlocks,
    /// The manager's own node (one unit restarts there by stopping its container).
    node_id: String,
    fallback_ip: IpAddr,
    history: Arc<Mutex<History>>,
    known: Mutex<Known>,
    /// Views read so far (a view's sequence number).
    reads: std::sync::atomic::AtomicU64,
    events: broadcast::Sender<UnitEvent>,
    /// Changes are made one at a time (port blocks are picked from what is in use).
    changes: tokio::sync::Mutex<()>,
    watcher: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Source builds' images already published, by local name.
    published: Mutex<BTreeMap<String, String>>,
}

fn backend(what: &str, e: impl std::fmt::Display) -> SchedulerError {
    SchedulerError::Backend(format!("swarm scheduler: {what}: {e}").into())
}

fn label<'a>(s: &'a Service, key: &str) -> Option<&'a str> {
    s.spec.as_ref()?.labels.as_ref()?.get(key).map(String::as_str)
}

fn filters(key: &str, values: Vec<String>) -> Option<HashMap<String, Vec<String>>> {
    Some(HashMap::from([(key.to_string(), values)]))
}

impl SwarmScheduler {
    /// Connects to the manager (it must be one: `docker swarm init`) and starts
    /// watching the tasks.
    pub async fn connect(config: SwarmSchedulerConfig) -> Result<Arc<Self>> {
        let endpoint = config.manager.clone();
        let blocks = PortBlocks::new(config.ports.clone())?;
        let docker = Docker::connect_with_host(&endpoint).map_err(|e| backend(&format!("manager {endpoint}"), e))?;
        let probe = async {
            let docker = docker.negotiate_version().await?;
            let info = docker.info().await?;
            Ok::<_, bollard::errors::Error>((docker, info))
        };
        let (docker, info) = tokio::time::timeout(CONNECT_TIMEOUT, probe)
            .await
            .map_err(|_| backend(&format!("manager {endpoint}"), "no answer within 10 s; is the engine running?"))?
            .map_err(|e| backend(&format!("manager {endpoint}"), e))?;
        let swarm = info.swarm.unwrap_or_default();
        if swarm.control_available != Some(true) {
            return Err(SchedulerError::Invalid(format!(
                "--docker-host {endpoint} is not a swarm manager: run `docker swarm init` there, \
                 or point --docker-host at a manager"
            )));
        }
        let fallback_ip = config
            .address
            .or_else(|| DockerHost::new(endpoint.clone()).default_address())
            .unwrap_or(IpAddr::from([127, 0, 0, 1]));
        let s = Arc::new(Self {
            docker,
            blocks,
            node_id: swarm.node_id.unwrap_or_default(),
            fallback_ip,
            history: Default::default(),
            known: Default::default(),
            reads: Default::default(),
            events: broadcast::channel(EVENT_BUFFER).0,
            changes: Default::default(),
            watcher: Mutex::new(None),
            published: Default::default(),
            config,
        });
        let watcher = tokio::spawn(watch(Arc::downgrade(&s), s.config.poll_interval));
        *s.watcher.lock().unwrap_or_else(|e| e.into_inner()) = Some(watcher);
        tracing::info!(manager = %endpoint, "swarm scheduler: connected");
        Ok(s)
    }

    /// Reads nodes, deis services and tasks.
    async fn view(&self) -> Result<View> {
        let seq = self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        let nodes = self.docker.list_nodes(None).await.map_err(|e| backend("listing nodes", e))?;
        let services = ListServicesOptions { filters: filters("label", vec![LABEL_APP.into()]), ..Default::default() };
        let services = self.docker.list_services(Some(services)).await.map_err(|e| backend("listing services", e))?;
        let tasks = self.docker.list_tasks(None).await.map_err(|e| backend("listing tasks", e))?;
        Ok(View { seq, nodes: View::nodes_of(nodes, self.fallback_ip), services, tasks })
    }

    fn units_of(&self, view: &View, app: &AppName) -> Vec<Unit> {
        let mut history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        view.units(app, &mut history)
    }

    /// Announces how the units of `apps` (and of apps that had units) changed since the
    /// last view observed, unless `view` is older than that one. Every read observes,
    /// so a state seen by `units` has been announced.
    fn observe(&self, view: &View, apps: BTreeSet<AppName>) -> BTreeMap<AppName, Vec<Unit>> {
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        let apps: BTreeSet<AppName> = apps.into_iter().chain(known.units.keys().map(|(a, _, _)| a.clone())).collect();
        let mut out = BTreeMap::new();
        for app in apps {
            let units = self.units_of(view, &app);
            let last = known.seen.get(&app).copied().unwrap_or(0);
            if view.seq >= last {
                known.seen.insert(app.clone(), view.seq);
                let now: BTreeMap<(AppName, String, u64), Unit> =
                    units.iter().map(|u| ((app.clone(), u.name.clone(), u.instance), u.clone())).collect();
                for (key, u) in &now {
                    if known.units.get(key) != Some(u) {
                        let reason = (u.state == UnitState::Crashed).then(|| view::crash_reason(view, u)).flatten();
                        let _ = self.events.send(UnitEvent { unit: u.clone(), reason });
                    }
                }
                let gone: Vec<_> =
                    known.units.keys().filter(|k| k.0 == app && !now.contains_key(*k)).cloned().collect();
                for key in gone {
                    if let Some(u) = known.units.remove(&key) {
                        let _ =
                            self.events.send(UnitEvent::new(Unit { state: UnitState::Destroyed, address: None, ..u }));
                    }
                }
                known.units.extend(now);
            }
            out.insert(app, units);
        }
        out
    }

    /// The credentials for the registry of the image `spec` runs, if deisd has some.
    fn credentials(&self, spec: &bollard::models::ServiceSpec) -> Option<bollard::auth::DockerCredentials> {
        let image = spec.task_template.as_ref()?.container_spec.as_ref()?.image.as_deref()?;
        let registry = super::docker::registry_of(image);
        let login = self.config.registry_logins.get(registry)?;
        Some(bollard::auth::DockerCredentials {
            username: Some(login.username.clone()),
            password: Some(login.password.clone()),
            serveraddress: Some(registry.to_string()),
            ..Default::default()
        })
    }

    /// The image a spec runs: its own, or for a source build the stack image with the
    /// build in [`APP_DIR`], committed on the manager's engine and, with a
    /// [`publisher`](SwarmSchedulerConfig::publisher), published for every node.
    async fn image_of(&self, spec: &AppSpec) -> Result<String> {
        let local = self.build_of(spec).await?;
        let Some(publisher) = &self.config.publisher else { return Ok(local) };
        if matches!(spec.artifact, Artifact::Image { .. }) {
            return Ok(local);
        }
        if let Some(published) = self.published.lock().unwrap_or_else(|e| e.into_inner()).get(&local) {
            return Ok(published.clone());
        }
        let published = publisher.publish(&spec.app, &local).await.map_err(|e| {
            SchedulerError::Backend(format!("publishing the source build {local} for the swarm's nodes: {e}").into())
        })?;
        self.published.lock().unwrap_or_else(|e| e.into_inner()).insert(local, published.clone());
        Ok(published)
    }

    /// The image a spec runs on the manager's engine (see [`Self::image_of`]).
    async fn build_of(&self, spec: &AppSpec) -> Result<String> {
        let dir = match &spec.artifact {
            Artifact::Image { reference } => return Ok(reference.clone()),
            Artifact::Source { dir } => dir.clone(),
        };
        let image = build_image(&spec.app, spec.release, &dir);
        let (repo, tag) = image.rsplit_once(':').map(|(r, t)| (r.to_string(), t.to_string())).unwrap_or_default();
        if self.docker.inspect_image(&image).await.is_ok() {
            return Ok(image);
        }
        let what = |step: &str| format!("building {image} on {}: {step}", self.config.stack_image);
        // Never started, but the engine wants a command, and a stack image imported from
        // a root file system (`docker import`) has none.
        let body = ContainerCreateBody {
            image: Some(self.config.stack_image.clone()),
            cmd: Some(vec!["/bin/sh".into()]),
            ..Default::default()
        };
        let created = self
            .docker
            .create_container(None::<CreateContainerOptions>, body)
            .await
            .map_err(|e| backend(&what("create (is the stack image on the manager?)"), e))?;
        let tar = tokio::task::spawn_blocking(move || super::docker::tar_of(&dir))
            .await
            .map_err(|e| backend(&what("pack"), e))?
            .map_err(|e| backend(&what("pack"), e))?;
        let upload = UploadToContainerOptions { path: "/".into(), ..Default::default() };
        let copied = self.docker.upload_to_container(&created.id, Some(upload), bollard::body_full(tar.into())).await;
        let committed = match copied {
            Ok(()) => {
                let opts = CommitContainerOptions {
                    container: Some(created.id.clone()),
                    repo: Some(repo),
                    tag: Some(tag),
                    pause: false,
                    ..Default::default()
                };
                let config = ContainerConfig { working_dir: Some(APP_DIR.into()), ..Default::default() };
                self.docker.commit_container(opts, config).await.map(|_| ())
            }
            Err(e) => Err(e),
        };
        let rm = RemoveContainerOptions { force: true, ..Default::default() };
        let _ = self.docker.remove_container(&created.id, Some(rm)).await;
        committed.map_err(|e| backend(&what("copy and commit"), e))?;
        Ok(image)
    }

    fn template(&self, app: &str, generation: u64, block: u16) -> Template {
        Template {
            generation,
            block,
            stop_timeout: self.config.stop_timeout,
            ready_timeout: self.config.ready_timeout,
            restart_delay: self.config.restart_delay,
            syslog_address: self.config.syslog_address.clone(),
            log_token: self.config.ingest_tokens.as_ref().and_then(|t| t.get(app)),
        }
    }

    async fn update(&self, s: &Service, spec: bollard::models::ServiceSpec) -> Result<()> {
        let id = s.id.as_deref().unwrap_or_default();
        let version = s.version.as_ref().and_then(|v| v.index).unwrap_or(0);
        let opts = UpdateServiceOptions { version: i32::try_from(version).unwrap_or(i32::MAX), ..Default::default() };
        let credentials = self.credentials(&spec);
        self.docker.update_service(id, spec, opts, credentials).await.map_err(|e| backend("updating a service", e))?;
        Ok(())
    }

    /// A new template generation of `s` (same spec, new port block): swarm replaces its
    /// units one at a time.
    async fn regenerate(&self, s: &Service, used: &mut Vec<u16>) -> Result<u64> {
        let mut spec = s.spec.clone().unwrap_or_default();
        restore_as_sent(&mut spec);
        let generation = label(s, LABEL_GENERATION).and_then(|g| g.parse::<u64>().ok()).unwrap_or(0) + 1;
        let block = self.blocks.next_free(label(s, LABEL_PORT_BLOCK).and_then(|b| b.parse().ok()), used)?;
        used.push(block);
        let (g, b) = (generation.to_string(), block.to_string());
        for labels in [
            spec.labels.as_mut(),
            spec.task_template.as_mut().and_then(|t| t.container_spec.as_mut()).and_then(|c| c.labels.as_mut()),
        ]
        .into_iter()
        .flatten()
        {
            labels.insert(LABEL_GENERATION.into(), g.clone());
            labels.insert(LABEL_PORT_BLOCK.into(), b.clone());
        }
        if let Some(env) =
            spec.task_template.as_mut().and_then(|t| t.container_spec.as_mut()).and_then(|c| c.env.as_mut())
        {
            let old = label(s, LABEL_PORT_BLOCK).unwrap_or_default().to_string();
            for v in env.iter_mut().filter(|v| v.starts_with("PORT=")) {
                *v = v.replacen(&format!("PORT={old}"), &format!("PORT={block}"), 1);
            }
        }
        // The units' log tag with the app's current ingest token (it may have rotated).
        if let (Some(app), Some(proc_type), Some(task)) =
            (label(s, LABEL_APP), label(s, LABEL_TYPE), spec.task_template.as_mut())
        {
            task.log_driver = service::log_driver(app, proc_type, &self.template(app, generation, block));
        }
        self.update(s, spec).await?;
        Ok(generation)
    }

    /// The manager's engine's containers of the services `ids` (stopping or not).
    async fn containers_of(&self, ids: &[String]) -> Result<usize> {
        let mut n = 0;
        for id in ids {
            let opts = ListContainersOptions {
                all: true,
                filters: filters("label", vec![format!("com.docker.swarm.service.id={id}")]),
                ..Default::default()
            };
            n += self.docker.list_containers(Some(opts)).await.map_err(|e| backend("listing containers", e))?.len();
        }
        Ok(n)
    }
}

/// The image the source build of `app`'s release `release` (unpacked in `dir`) runs
/// as: the stack image with the build in [`APP_DIR`], committed on the manager's engine
/// as `deis-build/<app>:v<release>-<digest of dir>` (the build directory is unique per
/// build: a recreated app's v1 is not the old v1).
pub fn build_image(app: &AppName, release: u64, dir: &std::path::Path) -> String {
    let digest = hex::encode(&sha2::Sha256::digest(dir.to_string_lossy().as_bytes())[..6]);
    format!("deis-build/{app}:v{release}-{digest}")
}

/// Polls the tasks and announces every unit change.
async fn watch(scheduler: std::sync::Weak<SwarmScheduler>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(s) = scheduler.upgrade() else { return };
        match s.view().await {
            Ok(view) => {
                let apps: BTreeSet<AppName> = view
                    .services
                    .iter()
                    .filter_map(|svc| label(svc, LABEL_APP).and_then(|a| AppName::new(a).ok()))
                    .collect();
                s.observe(&view, apps);
            }
            Err(e) => tracing::debug!(error = %e, "swarm scheduler: reading tasks"),
        }
    }
}

/// The units last announced, and the view they came from.
#[derive(Debug, Default)]
struct Known {
    units: BTreeMap<(AppName, String, u64), Unit>,
    /// Sequence number of the newest view observed per app: an older one is stale.
    seen: HashMap<AppName, u64>,
}

#[async_trait]
impl Scheduler for SwarmScheduler {
    async fn apply(&self, spec: AppSpec) -> Result<()> {
        if let Some((t, p)) = spec.processes.iter().find(|(_, p)| p.count > MAX_UNITS_PER_TYPE) {
            return Err(SchedulerError::Capacity(format!(
                "{} {t} units asked for; the swarm backend runs at most {MAX_UNITS_PER_TYPE} per process type",
                p.count
            )));
        }
        let _one_change = self.changes.lock().await;
        let view = self.view().await?;
        view.admit(&spec, self.config.policy)?;
        let image = self.image_of(&spec).await?;
        let existing: HashMap<String, &Service> =
            view.services_of(&spec.app).filter_map(|s| label(s, LABEL_TYPE).map(|t| (t.to_string(), s))).collect();
        let mut used = view.used_blocks();
        for (proc_type, p) in &spec.processes {
            let digest = spec_digest(&spec, p);
            let Some(s) = existing.get(proc_type.as_str()) else {
                let block = self.blocks.next_free(used.iter().max().copied(), &used)?;
                used.push(block);
                let new = service_spec(&spec, proc_type, &image, &digest, &self.template(spec.app.as_str(), 1, block));
                let credentials = self.credentials(&new);
                self.docker.create_service(new, credentials).await.map_err(|e| backend("creating a service", e))?;
                continue;
            };
            if label(s, LABEL_SPEC) == Some(digest.as_str()) {
                let current = s.spec.as_ref().and_then(|s| s.mode.as_ref()).and_then(|m| m.replicated.as_ref());
                if current.and_then(|r| r.replicas) != Some(i64::from(p.count)) {
                    // Only the count changed: the same template (as sent, see
                    // `restore_as_sent`), so swarm replaces no unit.
                    let mut scaled = s.spec.clone().unwrap_or_default();
                    restore_as_sent(&mut scaled);
                    scaled.mode = Some(ServiceSpecMode {
                        replicated: Some(ServiceSpecModeReplicated { replicas: Some(i64::from(p.count)) }),
                        ..Default::default()
                    });
                    self.update(s, scaled).await?;
                }
                continue;
            }
            let generation = label(s, LABEL_GENERATION).and_then(|g| g.parse::<u64>().ok()).unwrap_or(0) + 1;
            let block = self.blocks.next_free(label(s, LABEL_PORT_BLOCK).and_then(|b| b.parse().ok()), &used)?;
            used.push(block);
            let next =
                service_spec(&spec, proc_type, &image, &digest, &self.template(spec.app.as_str(), generation, block));
            self.update(s, next).await?;
        }
        for (t, s) in &existing {
            if !spec.processes.keys().any(|p| p.as_str() == t) {
                let id = s.id.as_deref().unwrap_or_default();
                self.docker.delete_service(id).await.map_err(|e| backend("removing a service", e))?;
            }
        }
        Ok(())
    }

    async fn remove(&self, app: &AppName) -> Result<()> {
        let _one_change = self.changes.lock().await;
        let view = self.view().await?;
        let ids: Vec<String> = view.services_of(app).filter_map(|s| s.id.clone()).collect();
        for id in &ids {
            match self.docker.delete_service(id).await {
                Ok(()) | Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => {}
                Err(e) => return Err(backend("removing a service", e)),
            }
        }
        // Returns once no unit container is left (on the manager's engine: the others
        // stop on their own).
        let deadline = tokio::time::Instant::now() + self.config.stop_timeout + Duration::from_secs(30);
        while self.containers_of(&ids).await? > 0 {
            if tokio::time::Instant::now() >= deadline {
                return Err(backend("removing an app", format!("the containers of {app} did not stop in time")));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    async fn units(&self, app: &AppName) -> Result<Vec<Unit>> {
        let view = self.view().await?;
        Ok(self.observe(&view, BTreeSet::from([app.clone()])).remove(app).unwrap_or_default())
    }

    async fn restart(&self, app: &AppName, filter: RestartFilter) -> Result<Vec<Unit>> {
        let _one_change = self.changes.lock().await;
        let view = self.view().await?;
        let services: Vec<&Service> = view
            .services_of(app)
            .filter(|s| filter.proc_type.as_ref().is_none_or(|t| label(s, LABEL_TYPE) == Some(t.as_str())))
            .collect();
        if view.services_of(app).next().is_none() {
            return Err(SchedulerError::NotFound(format!("app {app}")));
        }
        let units = self.units_of(&view, app);
        if let Some(name) = &filter.unit {
            let unit = units
                .iter()
                .find(|u| &u.name == name && u.state != UnitState::Down)
                .ok_or_else(|| SchedulerError::NotFound(format!("unit {name}")))?;
            return self.restart_one(&view, unit).await;
        }
        let mut used = view.used_blocks();
        let mut restarted = Vec::new();
        for s in services {
            let generation = self.regenerate(s, &mut used).await?;
            let name = s.spec.as_ref().and_then(|s| s.name.clone()).unwrap_or_default();
            for u in units
                .iter()
                .filter(|u| Some(u.proc_type.as_str()) == label(s, LABEL_TYPE) && u.state != UnitState::Down)
            {
                let epoch = self
                    .history
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .epochs
                    .get(&(name.clone(), u.number))
                    .copied()
                    .unwrap_or(0);
                restarted.push(Unit {
                    instance: view::instance(&name, generation, u.number, epoch),
                    state: UnitState::Initialized,
                    address: None,
                    started: None,
                    pid: None,
                    restarts: 0,
                    ..u.clone()
                });
            }
        }
        restarted.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(restarted)
    }

    async fn nodes(&self) -> Result<Vec<NodeStatus>> {
        Ok(self.view().await?.node_status())
    }

    fn subscribe(&self) -> broadcast::Receiver<UnitEvent> {
        self.events.subscribe()
    }

    /// Stops watching; the services keep running for the next start to find.
    async fn shutdown(&self) {
        if let Some(w) = self.watcher.lock().unwrap_or_else(|e| e.into_inner()).take() {
            w.abort();
        }
    }
}

impl SwarmScheduler {
    /// Restarts one unit by stopping its container (swarm starts the next task of its
    /// slot); it must run on the manager's own engine.
    async fn restart_one(&self, view: &View, unit: &Unit) -> Result<Vec<Unit>> {
        let task =
            view::running_task(view, unit).ok_or_else(|| SchedulerError::NotFound(format!("unit {}", unit.name)))?;
        if task.node_id.as_deref() != Some(self.node_id.as_str()) {
            return Err(SchedulerError::Unsupported(format!(
                "{} runs on another node than the manager deisd talks to: restart its process type instead \
                 (deis ps:restart {})",
                unit.name, unit.proc_type
            )));
        }
        let container =
            task.status.as_ref().and_then(|s| s.container_status.as_ref()).and_then(|c| c.container_id.clone());
        let Some(container) = container else {
            return Err(SchedulerError::NotFound(format!("the container of {}", unit.name)));
        };
        let service = view.services_of(&unit.app).find(|s| label(s, LABEL_TYPE) == Some(unit.proc_type.as_str()));
        let name = service.and_then(|s| s.spec.as_ref()?.name.clone()).unwrap_or_default();
        let epoch = {
            let mut h = self.history.lock().unwrap_or_else(|e| e.into_inner());
            h.restarted_tasks.insert(task.id.clone().unwrap_or_default());
            let e = h.epochs.entry((name.clone(), unit.number)).or_default();
            *e += 1;
            *e
        };
        let opts = KillContainerOptions { signal: "SIGTERM".into() };
        self.docker.kill_container(&container, Some(opts)).await.map_err(|e| backend("stopping a unit", e))?;
        let generation = view::task_generation(task);
        Ok(vec![Unit {
            instance: view::instance(&name, generation, unit.number, epoch),
            state: UnitState::Initialized,
            address: None,
            started: None,
            pid: None,
            restarts: 0,
            ..unit.clone()
        }])
    }
}

impl Drop for SwarmScheduler {
    fn drop(&mut self) {
        if let Some(w) = self.watcher.lock().unwrap_or_else(|e| e.into_inner()).take() {
            w.abort();
        }
    }
}
