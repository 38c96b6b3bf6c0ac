//! [`MarathonScheduler`] (preview, feature `marathon`): units as tasks of Marathon apps,
//! through Marathon's v2 REST API.
//!
//! - **A Marathon app per unit slot**, `/deis/<app>/<type>-<n>` with one instance (see
//!   [`crate::scheduler`] for why not one per type): `cpus` and `mem` from the unit's
//!   requests, the release's config plus `DEIS_APP`, `DEIS_RELEASE`, `DEIS_UNIT` as
//!   `env`, one port Marathon assigns (`PORT`, `PORT0`), the app's tags as `CLUSTER`
//!   constraints on agent attributes, a failed task launched again after
//!   `backoffSeconds` 1.
//! - **Health checks**: the process type's readiness check (`MESOS_HTTP`,
//!   `MESOS_TCP`, `COMMAND`; never kills), for `web` without one a TCP check of its
//!   port; a liveness check kills after `failureThreshold` failures in a row.
//! - **Upgrade strategy** `minimumHealthCapacity` 1, `maximumOverCapacity` 1: a new
//!   task is started and healthy before the old one is killed; deis changes one slot at
//!   a time.
//! - **Unit states from tasks**: running and healthy -> `up`, running -> `created`,
//!   staging -> `initialized`, killing -> `down`; the task's address and first port are
//!   the unit's address. A task failure (`lastTaskFailure`) of the slot's instance
//!   counts as a restart (counted while this deisd runs). Tasks are polled.
//! - **Capacity**: Marathon does not show its agents, so the cluster is one node of
//!   the [configured capacity](MarathonSchedulerConfig::capacity); admission checks
//!   specs against it, tags are left to Marathon's constraints.
//! - **Images** run in a Docker container (`container.docker.image`; a non-empty
//!   command as `cmd`); a **source build** runs its command in the build directory on
//!   the agent (`cd DIR && ...`): the directory must exist at the same path there (an
//!   agent on this machine, or shared storage).
//!
//! Every answer of Marathon is read up to [`api::MAX_RESPONSE_BYTES`].

pub mod api;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deis_core::model::limits::Resources;
use deis_core::model::{AppName, Healthcheck, ProbeAction, ProcessType, Unit, UnitState};
use deis_core::scheduler::placement::Policy;
use deis_core::scheduler::{AppSpec, Artifact, Capacity, NodeStatus, Result, SchedulerError};

use self::api::{
    App, CheckCommand, Container, DockerImage, HealthCheck, Marathon, PortDefinition, Task, UpgradeStrategy,
};
use crate::scheduler::slots::{Observed, SlotBackend, SlotKey, SlotRecord, SlotScheduler, slot_scheduler};

/// Label holding the app.
pub const LABEL_APP: &str = "DEIS_APP";
/// Label holding the process type.
pub const LABEL_TYPE: &str = "DEIS_TYPE";
/// Label holding the unit's number.
pub const LABEL_NUMBER: &str = "DEIS_NUMBER";
/// Label holding the release.
pub const LABEL_RELEASE: &str = "DEIS_RELEASE";
/// Label holding the unit's instance.
pub const LABEL_INSTANCE: &str = "DEIS_INSTANCE";
/// Label holding the hash of what the unit runs with.
pub const LABEL_HASH: &str = "DEIS_SPEC_HASH";
/// Group of every app deis makes.
pub const GROUP: &str = "/deis";
/// How long removing an app may take.
const REMOVE_TIMEOUT: Duration = Duration::from_secs(120);

/// Settings of the [`MarathonScheduler`].
#[derive(Debug, Clone)]
pub struct MarathonSchedulerConfig {
    /// Marathon's URL (`http://host:8080`).
    pub url: String,
    /// What the cluster offers to deis' units (admission).
    pub capacity: Capacity,
    /// The node name shown for the cluster (default `marathon`).
    pub node_name: String,
    /// How long one slot may take to roll before the next goes anyway (default 120 s).
    pub settle_timeout: Duration,
}

impl MarathonSchedulerConfig {
    /// Defaults, for the Marathon at `url` offering `capacity`.
    pub fn new(url: impl Into<String>, capacity: Capacity) -> Self {
        Self { url: url.into(), capacity, node_name: "marathon".into(), settle_timeout: Duration::from_secs(120) }
    }
}

/// Runs units as Marathon tasks (preview). See the module docs.
#[derive(Debug)]
pub struct MarathonScheduler {
    inner: SlotScheduler<MarathonBackend>,
}

impl MarathonScheduler {
    /// Checks that Marathon answers (`/v2/info`) and starts.
    pub async fn connect(config: MarathonSchedulerConfig) -> Result<Arc<Self>> {
        let client = Marathon::new(&config.url)?;
        client.info().await?;
        let backend = MarathonBackend { client, config: config.clone(), seen: Mutex::default() };
        Ok(Arc::new(Self { inner: SlotScheduler::new(backend, Policy::Binpack, config.settle_timeout) }))
    }
}

slot_scheduler!(MarathonScheduler);

/// The Marathon app id of a slot.
pub fn app_id(app: &AppName, proc_type: &ProcessType, number: u32) -> String {
    format!("{GROUP}/{app}/{proc_type}-{number}")
}

fn prefix(app: &AppName) -> String {
    format!("{GROUP}/{app}/")
}

/// What this deisd learnt about one Marathon app.
#[derive(Debug, Default)]
struct Seen {
    /// Version -> (release, instance), from the definitions of that version.
    versions: HashMap<String, (u64, u64)>,
    /// Last task failure counted, and failures counted per instance.
    last_failure: Option<String>,
    failures: HashMap<u64, u32>,
}

#[derive(Debug)]
struct MarathonBackend {
    client: Marathon,
    config: MarathonSchedulerConfig,
    seen: Mutex<HashMap<String, Seen>>,
}

fn label<T: std::str::FromStr>(app: &App, key: &str) -> Option<T> {
    app.labels.get(key)?.parse().ok()
}

fn health_check(check: &Healthcheck, kills: bool) -> HealthCheck {
    let mut h = HealthCheck {
        grace_period_seconds: check.initial_delay_seconds,
        interval_seconds: check.period_seconds.max(1),
        timeout_seconds: check.timeout_seconds.max(1),
        max_consecutive_failures: if kills { check.failure_threshold.max(1) } else { 0 },
        ..Default::default()
    };
    match &check.action {
        ProbeAction::HttpGet(g) => {
            h.protocol = "MESOS_HTTP".into();
            h.path = Some(g.path.clone());
            h.port_index = Some(0);
        }
        ProbeAction::TcpSocket(_) => {
            h.protocol = "MESOS_TCP".into();
            h.port_index = Some(0);
        }
        ProbeAction::Exec(e) => {
            h.protocol = "COMMAND".into();
            let quoted: Vec<String> = e.command.iter().map(|a| format!("'{}'", a.replace('\'', r"'\''"))).collect();
            h.command = Some(CheckCommand { value: quoted.join(" ") });
        }
    }
    h
}

/// The Marathon app of slot `key` running `record` of `spec`.
pub(crate) fn definition(spec: &AppSpec, key: &SlotKey, record: &SlotRecord) -> App {
    let p = spec.processes.get(&key.proc_type);
    let resources = p.map(|p| p.resources).unwrap_or_default();
    let mut env = spec.env.clone();
    env.insert("DEIS_APP".into(), spec.app.to_string());
    env.insert("DEIS_RELEASE".into(), spec.release.to_string());
    env.insert("DEIS_UNIT".into(), Unit::name_for(&spec.app, &key.proc_type, key.number));
    let labels = BTreeMap::from([
        (LABEL_APP.to_string(), spec.app.to_string()),
        (LABEL_TYPE.to_string(), key.proc_type.to_string()),
        (LABEL_NUMBER.to_string(), key.number.to_string()),
        (LABEL_RELEASE.to_string(), spec.release.to_string()),
        (LABEL_INSTANCE.to_string(), record.instance.to_string()),
        (LABEL_HASH.to_string(), record.hash.clone()),
    ]);
    let command = p.map(|p| p.command.trim().to_string()).filter(|c| !c.is_empty());
    let (cmd, container) = match &spec.artifact {
        Artifact::Image { reference } => {
            (command, Some(Container { kind: "DOCKER".into(), docker: DockerImage { image: reference.clone() } }))
        }
        Artifact::Source { dir } => {
            let dir = dir.display().to_string().replace('\'', r"'\''");
            (Some(format!("cd '{dir}' && {}", command.unwrap_or_default())), None)
        }
    };
    let mut checks = vec![];
    match p.and_then(|p| p.healthcheck.as_ref()) {
        Some(h) => checks.push(health_check(h, false)),
        None if key.proc_type.as_str() == "web" => checks.push(HealthCheck {
            protocol: "MESOS_TCP".into(),
            port_index: Some(0),
            grace_period_seconds: 30,
            interval_seconds: 1,
            timeout_seconds: 1,
            max_consecutive_failures: 0,
            ..Default::default()
        }),
        None => {}
    }
    if let Some(l) = p.and_then(|p| p.liveness.as_ref()) {
        checks.push(health_check(l, true));
    }
    App {
        id: app_id(&spec.app, &key.proc_type, key.number),
        cmd,
        cpus: resources.cpu_millis as f64 / 1000.0,
        mem: (resources.memory_bytes as f64 / f64::from(1 << 20)).ceil(),
        instances: 1,
        env,
        labels,
        port_definitions: vec![PortDefinition { port: 0, protocol: "tcp".into(), name: Some("http".into()) }],
        health_checks: checks,
        upgrade_strategy: Some(UpgradeStrategy { minimum_health_capacity: 1.0, maximum_over_capacity: 1.0 }),
        container,
        constraints: spec.selector.iter().map(|(k, v)| vec![k.clone(), "CLUSTER".into(), v.clone()]).collect(),
        backoff_seconds: Some(1.0),
        ..Default::default()
    }
}

/// The state of a unit whose task is in `state`.
fn unit_state(task: &Task, checked: bool) -> UnitState {
    match task.state.as_str() {
        "TASK_RUNNING"
            if !checked
                || task.health_check_results.iter().all(|r| r.alive) && !task.health_check_results.is_empty() =>
        {
            UnitState::Up
        }
        "TASK_RUNNING" => UnitState::Created,
        "TASK_STAGING" | "TASK_STARTING" => UnitState::Initialized,
        "TASK_KILLING" | "TASK_KILLED" | "TASK_FINISHED" => UnitState::Down,
        "TASK_FAILED" | "TASK_ERROR" | "TASK_LOST" | "TASK_GONE" => UnitState::Crashed,
        _ => UnitState::Initialized,
    }
}

fn address(task: &Task) -> Option<SocketAddr> {
    let port = *task.ports.first()?;
    let ip: IpAddr =
        task.ip_addresses.iter().find_map(|a| a.ip_address.parse().ok()).or_else(|| task.host.parse().ok())?;
    Some(SocketAddr::new(ip, port))
}

impl MarathonBackend {
    /// (release, instance) of `version` of `marathon_app`.
    async fn version_of(&self, marathon_app: &App, version: &str) -> Option<(u64, u64)> {
        if let Some(v) = self.seen.lock().ok()?.get(&marathon_app.id).and_then(|s| s.versions.get(version)) {
            return Some(*v);
        }
        let def = if marathon_app.version.as_deref() == Some(version) {
            marathon_app.clone()
        } else {
            self.client.app_version(&marathon_app.id, version).await.ok()??
        };
        let found = (label(&def, LABEL_RELEASE)?, label(&def, LABEL_INSTANCE)?);
        self.seen.lock().ok()?.entry(marathon_app.id.clone()).or_default().versions.insert(version.to_string(), found);
        Some(found)
    }
}

#[async_trait::async_trait]
impl SlotBackend for MarathonBackend {
    async fn prepare(&self, _spec: &AppSpec) -> Result<()> {
        Ok(())
    }

    fn checks_labels(&self) -> bool {
        false
    }

    async fn slots(&self, app: &AppName) -> Result<BTreeMap<SlotKey, SlotRecord>> {
        let apps = self.client.apps(&prefix(app)).await?;
        Ok(apps
            .iter()
            .filter_map(|a| {
                let key = SlotKey { proc_type: label::<ProcessType>(a, LABEL_TYPE)?, number: label(a, LABEL_NUMBER)? };
                Some((key, SlotRecord { hash: a.labels.get(LABEL_HASH)?.clone(), instance: label(a, LABEL_INSTANCE)? }))
            })
            .collect())
    }

    async fn put(&self, spec: &AppSpec, key: &SlotKey, record: &SlotRecord) -> Result<()> {
        let def = definition(spec, key, record);
        let change = self.client.put_app(&def).await?;
        if !change.version.is_empty()
            && let Ok(mut seen) = self.seen.lock()
        {
            seen.entry(def.id).or_default().versions.insert(change.version, (spec.release, record.instance));
        }
        Ok(())
    }

    async fn delete(&self, app: &AppName, key: &SlotKey) -> Result<()> {
        self.client.delete_app(&app_id(app, &key.proc_type, key.number)).await.map(drop)
    }

    async fn units(&self, app: &AppName) -> Result<Vec<Observed>> {
        let mut out = vec![];
        for a in self.client.apps(&prefix(app)).await? {
            let (Some(proc_type), Some(number)) =
                (label::<ProcessType>(&a, LABEL_TYPE), label::<u32>(&a, LABEL_NUMBER))
            else {
                continue;
            };
            let mut reason = None;
            let mut failed_current = false;
            if let Some(f) = &a.last_task_failure {
                let failed_instance = self.version_of(&a, &f.version).await.map(|v| v.1);
                if let Ok(mut seen) = self.seen.lock() {
                    let s = seen.entry(a.id.clone()).or_default();
                    if s.last_failure.as_deref() != Some(f.task_id.as_str()) {
                        // The first failure seen after a start may predate it: counted
                        // only for an instance it belongs to.
                        s.last_failure = Some(f.task_id.clone());
                        if let Some(i) = failed_instance {
                            *s.failures.entry(i).or_default() += 1;
                        }
                    }
                }
                failed_current = failed_instance.is_some() && failed_instance == label(&a, LABEL_INSTANCE);
                reason = Some(if f.message.is_empty() { f.state.clone() } else { f.message.clone() });
            }
            let checked = !a.health_checks.is_empty();
            let restarts_of = |instance: u64| {
                self.seen.lock().ok().and_then(|s| s.get(&a.id)?.failures.get(&instance).copied()).unwrap_or(0)
            };
            // The unit of this slot at `release`/`instance`, in `state`, without a task.
            let unit_of = |release: u64, instance: u64, state: UnitState| Unit {
                name: Unit::name_for(app, &proc_type, number),
                instance,
                app: app.clone(),
                proc_type: proc_type.clone(),
                number,
                release,
                state,
                address: None,
                node: String::new(),
                started: None,
                restarts: restarts_of(instance),
                pid: None,
            };
            for t in &a.tasks {
                let Some((release, instance)) = self.version_of(&a, &t.version).await else { continue };
                let unit = Unit {
                    address: address(t),
                    node: t.host.clone(),
                    started: t.started_at.as_deref().and_then(|s| s.parse().ok()),
                    ..unit_of(release, instance, unit_state(t, checked))
                };
                out.push(Observed { unit, reason: reason.clone() });
            }
            // A slot whose task failed and is not replaced yet: its unit crashed.
            if failed_current
                && (a.tasks.len() as u32) < a.instances
                && let (Some(release), Some(instance)) = (label(&a, LABEL_RELEASE), label::<u64>(&a, LABEL_INSTANCE))
            {
                out.push(Observed { unit: unit_of(release, instance, UnitState::Crashed), reason: reason.clone() });
            }
        }
        Ok(out)
    }

    async fn remove(&self, app: &AppName) -> Result<()> {
        let apps = self.client.apps(&prefix(app)).await?;
        let mut deployments = vec![];
        for a in &apps {
            deployments.extend(self.client.delete_app(&a.id).await?);
        }
        // Done when the deletions' deployments (killing the tasks) are.
        let deadline = tokio::time::Instant::now() + REMOVE_TIMEOUT;
        while tokio::time::Instant::now() < deadline {
            let running = self.client.deployments().await?;
            if !deployments.iter().any(|d| running.contains(d)) && self.client.apps(&prefix(app)).await?.is_empty() {
                if let Ok(mut seen) = self.seen.lock() {
                    seen.retain(|id, _| !id.starts_with(&prefix(app)));
                }
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(SchedulerError::Backend(format!("marathon: the apps of {app} still run after {REMOVE_TIMEOUT:?}").into()))
    }

    async fn nodes(&self) -> Result<Vec<NodeStatus>> {
        let mut allocated = Resources::default();
        for a in self.client.apps(&format!("{GROUP}/")).await? {
            let n = a.tasks.len() as u64;
            allocated.cpu_millis += (a.cpus * 1000.0).round() as u64 * n;
            allocated.memory_bytes += (a.mem * f64::from(1 << 20)).round() as u64 * n;
        }
        Ok(vec![NodeStatus::new(self.config.node_name.clone(), self.config.capacity, allocated)])
    }
}
