//! [`DockerRuntime`]: the supervisor's units as containers on the engines of the
//! hosts, each unit on the node the placement engine gave its slot.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker;
use bollard::container::LogOutput;
use bollard::exec::{StartExecOptions, StartExecResults};
use bollard::models::ContainerSummaryStateEnum;
use bollard::models::{
    ContainerCreateBody, ExecConfig, HostConfig, HostConfigLogConfig, PortBinding, RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptions, KillContainerOptions, ListContainersOptions, LogsOptions, RemoveContainerOptions,
    UploadToContainerOptions, WaitContainerOptions,
};
use deis_core::model::{AppName, ProbeAction};
use deis_core::scheduler::local::{
    Ended, ExitInfo, GroupSignal, INHERITED_ENV, Launch, ProbeTarget, ProcessRuntime, Spawned, os_probe,
};
use deis_core::scheduler::placement::{PlacementError, PlacementStore, PlacementStoreError, Slot, UnitRequest};
use deis_core::scheduler::{AppSpec, Artifact, NodeStatus, SchedulerError};
use futures_util::StreamExt;
use tokio::io::{AsyncWriteExt, DuplexStream};
use tokio::sync::oneshot;

use super::Networking;
use crate::logger::IngestTokens;
use crate::tty::docker::{LABEL_APP, LABEL_TYPE};

/// Label holding a unit container's unit name (`<app>.<type>.<n>`).
pub const LABEL_UNIT: &str = "deis.unit";
/// Label holding the release a unit container runs (`v<N>`).
pub const LABEL_RELEASE: &str = "deis.release";
/// Label holding a digest of what a unit container runs (artifact, command,
/// environment without `PORT`, resources, networking): a restarted scheduler adopts a
/// running container whose digest matches the unit it starts.
pub const LABEL_CONFIG: &str = "deis.config";
/// Label holding the port a unit container listens on.
pub const LABEL_PORT: &str = "deis.port";
/// Where a source build is copied in a stack container, and its working directory.
pub const APP_DIR: &str = "/app";
/// Buffer of a unit's output stream between the engine and the supervisor.
const OUTPUT_BUFFER: usize = 64 << 10;
/// How long a killed unit may take to stop before it is removed by force anyway.
const REMOVE_TIMEOUT: Duration = Duration::from_secs(30);

/// One engine and the node it is.
#[derive(Debug, Clone)]
pub(super) struct Host {
    pub name: String,
    pub docker: Docker,
    pub ip: IpAddr,
    pub networking: Networking,
}

/// What the runtime knows of one unit container.
#[derive(Debug)]
struct Container {
    host: usize,
    /// Its id once created.
    id: Option<String>,
    /// Until it has exited (or could not be created).
    alive: bool,
    /// A signal asked for before the container existed.
    pending: Option<GroupSignal>,
}

/// The settings a unit's container is made from.
#[derive(Debug, Clone)]
pub(super) struct ContainerSettings {
    pub stack_image: String,
    pub syslog_address: Option<String>,
    /// The apps' ingest tokens, put in the syslog tag.
    pub ingest_tokens: Option<Arc<IngestTokens>>,
    /// Most processes in one container.
    pub pids_limit: i64,
    /// Containers get a read-only root filesystem (and a writable `/tmp`).
    pub read_only_root: bool,
}

/// See the module docs.
#[derive(Debug)]
pub struct DockerRuntime {
    hosts: Vec<Host>,
    placement: PlacementStore,
    settings: ContainerSettings,
    /// The node of every slot this runtime placed, from the last committed plan.
    slots: std::sync::Mutex<HashMap<Slot, String>>,
    containers: Arc<std::sync::Mutex<HashMap<u32, Container>>>,
    next_handle: AtomicU32,
    /// Unit containers found running at start, by unit name, until adopted or removed.
    orphans: std::sync::Mutex<HashMap<String, Orphan>>,
    /// Set at shutdown: units outlive the scheduler, so stop signals are ignored.
    detached: std::sync::atomic::AtomicBool,
}

/// A unit container a previous scheduler left running.
#[derive(Debug, Clone)]
struct Orphan {
    host: usize,
    id: String,
    config: String,
    port: u16,
}

fn backend(what: &str, e: impl std::fmt::Display) -> SchedulerError {
    SchedulerError::Backend(format!("docker scheduler: {what}: {e}").into())
}

impl DockerRuntime {
    pub(super) fn new(hosts: Vec<Host>, placement: PlacementStore, settings: ContainerSettings) -> Self {
        Self {
            hosts,
            placement,
            settings,
            slots: Default::default(),
            containers: Default::default(),
            next_handle: AtomicU32::new(1),
            orphans: Default::default(),
            detached: Default::default(),
        }
    }

    /// Finds the unit containers a previous scheduler left: running ones wait to be
    /// adopted by the unit of their name ([`DockerRuntime::spawn`]), the others are
    /// removed. Returns how many wait.
    pub(super) async fn find_orphans(&self) -> Result<usize, SchedulerError> {
        let mut found = HashMap::new();
        for (i, h) in self.hosts.iter().enumerate() {
            let opts = ListContainersOptions {
                all: true,
                filters: Some(HashMap::from([("label".to_string(), vec![LABEL_UNIT.to_string()])])),
                ..Default::default()
            };
            let list = h.docker.list_containers(Some(opts)).await.map_err(|e| backend("listing containers", e))?;
            for c in list {
                let (Some(id), Some(labels)) = (c.id, c.labels) else { continue };
                let running = c.state == Some(ContainerSummaryStateEnum::RUNNING);
                let orphan = labels.get(LABEL_UNIT).zip(labels.get(LABEL_CONFIG)).zip(labels.get(LABEL_PORT));
                match orphan.and_then(|((u, cfg), p)| Some((u, cfg, p.parse::<u16>().ok()?))) {
                    // Two engines may be one (two nodes on one engine): keep the first.
                    Some((unit, config, port)) if running && !found.contains_key(unit) => {
                        found.insert(unit.clone(), Orphan { host: i, id, config: config.clone(), port });
                    }
                    _ if running && found.values().any(|o: &Orphan| o.id == id) => {}
                    _ => remove_container(&h.docker, &id).await,
                }
            }
        }
        let n = found.len();
        *self.orphans.lock().unwrap_or_else(|e| e.into_inner()) = found;
        Ok(n)
    }

    /// Removes the orphans no unit adopted (their apps are gone, scaled down or
    /// changed).
    pub(super) async fn remove_orphans(&self, app: Option<&AppName>) {
        let prefix = app.map(|a| format!("{a}."));
        let gone: Vec<Orphan> = {
            let mut orphans = self.orphans.lock().unwrap_or_else(|e| e.into_inner());
            let keys: Vec<String> =
                orphans.keys().filter(|u| prefix.as_ref().is_none_or(|p| u.starts_with(p.as_str()))).cloned().collect();
            keys.into_iter().filter_map(|k| orphans.remove(&k)).collect()
        };
        for o in gone {
            tracing::info!(container = %o.id, "docker scheduler: removing a unit container no unit adopted");
            remove_container(&self.hosts[o.host].docker, &o.id).await;
        }
    }

    /// The orphan `launch` adopts: the running container of its unit on its node, with
    /// the same config digest. An orphan of the unit that differs is removed (the unit
    /// starts anew).
    fn adoptable(&self, launch: &Launch, host: usize) -> Option<Orphan> {
        let orphan = self.orphans.lock().unwrap_or_else(|e| e.into_inner()).remove(&launch.unit)?;
        let h = &self.hosts[host];
        if orphan.host == host && orphan.config == config_digest(launch, h.networking) {
            return Some(orphan);
        }
        let docker = self.hosts[orphan.host].docker.clone();
        tokio::spawn(async move { remove_container(&docker, &orphan.id).await });
        None
    }

    /// Units outlive the scheduler from now on: stop signals are ignored.
    pub(super) fn detach(&self) {
        self.detached.store(true, Ordering::SeqCst);
    }

    /// The hosts, by name.
    pub(super) fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// Reloads where every slot of `app` is placed from the store.
    pub(super) async fn refresh(&self, app: Option<&AppName>) -> Result<(), SchedulerError> {
        let snapshot = self.placement.snapshot().await.map_err(|e| backend("reading placements", e))?;
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        match app {
            Some(app) => {
                slots.retain(|s, _| s.app != *app);
                slots.extend(snapshot.state().slots_of(app).map(|(r, n)| (r.slot.clone(), n.to_string())));
            }
            None => {
                slots.clear();
                slots.extend(snapshot.state().held().map(|(r, n)| (r.slot.clone(), n.to_string())));
            }
        }
        Ok(())
    }

    fn container_of(&self, handle: u32) -> Option<(Docker, Option<String>)> {
        let containers = self.containers.lock().unwrap_or_else(|e| e.into_inner());
        containers.get(&handle).map(|c| (self.hosts[c.host].docker.clone(), c.id.clone()))
    }

    /// The syslog tag of `launch`'s container: the unit, and the app's ingest token as
    /// its last `/` part (read when the container is made, so a restarted unit carries
    /// a rotated token).
    fn syslog_tag(&self, launch: &Launch) -> String {
        match self.settings.ingest_tokens.as_ref().and_then(|t| t.get(&launch.app)) {
            Some(token) => format!("{}/{token}", launch.unit),
            None => launch.unit.clone(),
        }
    }

    /// The container of `launch`.
    fn body(&self, launch: &Launch, host: &Host) -> ContainerCreateBody {
        let (image, workdir) = match &launch.artifact {
            Artifact::Image { reference } => (reference.clone(), None),
            Artifact::Source { .. } => (self.settings.stack_image.clone(), Some(APP_DIR.to_string())),
        };
        let (entrypoint, cmd) = if launch.command.trim().is_empty() {
            (None, None)
        } else {
            (Some(vec!["/bin/sh".to_string(), "-c".to_string()]), Some(vec![launch.command.clone()]))
        };
        let labels = HashMap::from([
            (LABEL_APP.to_string(), launch.app.to_string()),
            (LABEL_TYPE.to_string(), launch.proc_type.to_string()),
            (LABEL_UNIT.to_string(), launch.unit.clone()),
            (LABEL_RELEASE.to_string(), format!("v{}", launch.release)),
            (LABEL_CONFIG.to_string(), config_digest(launch, host.networking)),
            (LABEL_PORT.to_string(), launch.port.to_string()),
        ]);
        let port = format!("{}/tcp", launch.port);
        let (network_mode, port_bindings, exposed_ports) = match host.networking {
            Networking::Host => ("host", None, None),
            Networking::Bridge => (
                "bridge",
                Some(HashMap::from([(
                    port.clone(),
                    Some(vec![PortBinding { host_ip: None, host_port: Some(launch.port.to_string()) }]),
                )])),
                Some(vec![port]),
            ),
        };
        let log_config = self.settings.syslog_address.as_ref().map(|addr| HostConfigLogConfig {
            typ: Some("syslog".into()),
            config: Some(HashMap::from([
                ("syslog-address".to_string(), addr.clone()),
                ("syslog-format".to_string(), "rfc5424micro".to_string()),
                ("tag".to_string(), self.syslog_tag(launch)),
            ])),
        });
        // The ceiling is the limit where one is set, else the request (so a unit never
        // takes more than placement counted); the request is also the reservation.
        let (req, lim) = (launch.resources, launch.limits);
        let cpu = if lim.cpu_millis > 0 { lim.cpu_millis } else { req.cpu_millis };
        let memory = if lim.memory_bytes > 0 { lim.memory_bytes } else { req.memory_bytes };
        let read_only = self.settings.read_only_root;
        ContainerCreateBody {
            image: Some(image),
            entrypoint,
            cmd,
            env: Some(container_env(&launch.env)),
            working_dir: workdir,
            labels: Some(labels),
            exposed_ports,
            host_config: Some(HostConfig {
                network_mode: Some(network_mode.into()),
                port_bindings,
                // An init as PID 1 passes SIGTERM on to the unit's process.
                init: Some(true),
                nano_cpus: (cpu > 0).then(|| i64::try_from(cpu * 1_000_000).unwrap_or(i64::MAX)),
                memory: (memory > 0).then(|| i64::try_from(memory).unwrap_or(i64::MAX)),
                memory_reservation: (req.memory_bytes > 0 && req.memory_bytes < memory)
                    .then(|| i64::try_from(req.memory_bytes).unwrap_or(i64::MAX)),
                pids_limit: Some(self.settings.pids_limit),
                // No privileges: no capabilities, none to gain through set-id binaries.
                cap_drop: Some(vec!["ALL".into()]),
                security_opt: Some(vec!["no-new-privileges".into()]),
                readonly_rootfs: Some(read_only),
                tmpfs: read_only.then(|| HashMap::from([("/tmp".to_string(), "rw,nosuid,nodev,size=64m".to_string())])),
                // The supervisor restarts crashed units itself (with backoff, and on
                // another node when theirs is lost); the engine must not race it.
                restart_policy: Some(RestartPolicy {
                    name: Some(RestartPolicyNameEnum::NO),
                    maximum_retry_count: None,
                }),
                log_config,
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

/// The unit's environment for its container: what the supervisor gives, minus the
/// variables it inherited from this process (`PATH` and the like belong to the image).
fn container_env(env: &[(String, String)]) -> Vec<String> {
    env.iter()
        .filter(|(k, v)| !(INHERITED_ENV.contains(&k.as_str()) && std::env::var(k).is_ok_and(|ours| ours == *v)))
        .map(|(k, v)| format!("{k}={v}"))
        .collect()
}

/// The digest of what `launch` runs, but its port (see [`LABEL_CONFIG`]).
fn config_digest(launch: &Launch, networking: Networking) -> String {
    use sha2::Digest;
    let env: Vec<&(String, String)> = launch.env.iter().filter(|(k, _)| k != "PORT").collect();
    let inputs = serde_json::json!({
        "artifact": launch.artifact,
        "release": launch.release,
        "command": launch.command,
        "env": env,
        "cpu": launch.resources.cpu_millis,
        "memory": launch.resources.memory_bytes,
        "bridge": networking == Networking::Bridge,
    });
    hex::encode(&sha2::Sha256::digest(inputs.to_string().as_bytes())[..16])
}

/// Removes a container, stopping it first if need be.
async fn remove_container(docker: &Docker, id: &str) {
    let opts = RemoveContainerOptions { force: true, ..Default::default() };
    match tokio::time::timeout(REMOVE_TIMEOUT, docker.remove_container(id, Some(opts))).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(container = %id, error = %e, "docker scheduler: cannot remove a unit container"),
        Err(_) => tracing::warn!(container = %id, "docker scheduler: removing a unit container timed out"),
    }
}

/// A source build's directory as a tar of `app/...`.
pub(crate) fn tar_of(dir: &std::path::Path) -> std::io::Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    tar.follow_symlinks(false);
    tar.append_dir_all(APP_DIR.trim_start_matches('/'), dir)?;
    tar.into_inner()
}

/// Everything one unit's task needs.
struct Run {
    docker: Docker,
    name: String,
    body: ContainerCreateBody,
    source: Option<std::path::PathBuf>,
    /// The app's `uid:gid`, used unless the image names a non-root user of its own.
    run_as: Option<String>,
    handle: u32,
    containers: Arc<std::sync::Mutex<HashMap<u32, Container>>>,
    output: Option<(DuplexStream, DuplexStream)>,
    /// A running container to adopt instead of creating one.
    adopt: Option<String>,
}

impl Run {
    /// Creates, fills and starts the container (or adopts a running one) and waits for
    /// its end.
    async fn run(mut self) -> Result<ExitInfo, String> {
        let adopted = self.adopt.is_some();
        let id = match self.adopt.take() {
            Some(id) => id,
            None => match self.create_and_start().await? {
                Some(id) => id,
                // Stopped before it started.
                None => return Ok(ExitInfo { code: None, signal: Some(15) }),
            },
        };
        if let Some((out, err)) = self.output.take() {
            // An adopted container's earlier output was shown by the previous scheduler.
            let since = if adopted { deis_core::time::Timestamp::now().unix_seconds() as i64 } else { 0 };
            tokio::spawn(pump_logs(self.docker.clone(), id.clone(), out, err, since));
        }
        let mut wait = self.docker.wait_container(&id, None::<WaitContainerOptions>);
        let code = match wait.next().await {
            Some(Ok(r)) => r.status_code,
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => code,
            Some(Err(e)) => return Err(format!("wait: {e}")),
            None => return Err("wait: no status".into()),
        };
        Ok(ExitInfo { code: Some(i32::try_from(code).unwrap_or(-1)), signal: None })
    }

    /// Creates, fills and starts the container; its id, or None when the unit was
    /// stopped before it started.
    async fn create_and_start(&mut self) -> Result<Option<String>, String> {
        if let Some(user) = self.run_as.take() {
            let image = self.body.image.clone().unwrap_or_default();
            let own = match self.docker.inspect_image(&image).await {
                Ok(i) => i.config.and_then(|c| c.user).unwrap_or_default(),
                Err(e) => return Err(format!("inspecting image {image}: {e}")),
            };
            if own.is_empty() || own == "root" || own == "0" || own.starts_with("0:") || own.starts_with("root:") {
                self.body.user = Some(user);
            }
        }
        let opts = CreateContainerOptions { name: Some(self.name.clone()), ..Default::default() };
        let created =
            self.docker.create_container(Some(opts), self.body.clone()).await.map_err(|e| format!("create: {e}"))?;
        let id = created.id;
        let pending = {
            let mut containers = self.containers.lock().unwrap_or_else(|e| e.into_inner());
            let c = containers.get_mut(&self.handle).ok_or("the unit was released")?;
            c.id = Some(id.clone());
            c.pending
        };
        if pending.is_some() {
            return Ok(None);
        }
        if let Some(dir) = self.source.take() {
            let tar = tokio::task::spawn_blocking(move || tar_of(&dir))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("packing the build: {e}"))?;
            let opts = UploadToContainerOptions { path: "/".into(), ..Default::default() };
            self.docker
                .upload_to_container(&id, Some(opts), bollard::body_full(tar.into()))
                .await
                .map_err(|e| format!("copying the build in: {e}"))?;
        }
        self.docker.start_container(&id, None).await.map_err(|e| format!("start: {e}"))?;
        Ok(Some(id))
    }
}

/// Copies the container's output to the supervisor's line pumps.
async fn pump_logs(docker: Docker, id: String, mut out: DuplexStream, mut err: DuplexStream, since: i64) {
    let since = i32::try_from(since).unwrap_or(i32::MAX);
    let opts = LogsOptions { follow: true, stdout: true, stderr: true, since, ..Default::default() };
    let mut logs = docker.logs(&id, Some(opts));
    while let Some(Ok(chunk)) = logs.next().await {
        let ok = match chunk {
            LogOutput::StdOut { message } | LogOutput::Console { message } => out.write_all(&message).await,
            LogOutput::StdErr { message } => err.write_all(&message).await,
            LogOutput::StdIn { .. } => Ok(()),
        };
        if ok.is_err() {
            break;
        }
    }
}

/// The placement refusal as the scheduler error `apply` returns.
pub(super) fn refusal(e: PlacementStoreError) -> SchedulerError {
    match e {
        PlacementStoreError::Placement(p @ PlacementError::Capacity { .. }) => SchedulerError::Capacity(p.to_string()),
        PlacementStoreError::Placement(p) => SchedulerError::Invalid(p.to_string()),
        other => SchedulerError::backend(other),
    }
}

#[async_trait]
impl ProcessRuntime for DockerRuntime {
    /// Images run as they are; source builds run on the stack image with the build in
    /// [`APP_DIR`].
    fn check_artifact(&self, _spec: &AppSpec) -> Result<(), SchedulerError> {
        Ok(())
    }

    /// Places every slot of the spec with the placement engine, committed in the store.
    async fn admit(&self, spec: &AppSpec) -> Result<bool, SchedulerError> {
        let mut want = Vec::new();
        for (proc_type, p) in &spec.processes {
            for n in 1..=p.count {
                let slot = Slot::new(spec.app.clone(), proc_type.clone(), n);
                want.push(UnitRequest::new(slot, p.resources).selector(spec.selector.clone()));
            }
        }
        self.placement.place_app(&spec.app, &want).await.map_err(refusal)?;
        self.refresh(Some(&spec.app)).await?;
        // Orphans of slots the spec no longer has: nothing will adopt them.
        let slots: Vec<String> = want.iter().map(|w| w.slot.to_string()).collect();
        let stale: Vec<Orphan> = {
            let mut orphans = self.orphans.lock().unwrap_or_else(|e| e.into_inner());
            let prefix = format!("{}.", spec.app);
            let keys: Vec<String> =
                orphans.keys().filter(|u| u.starts_with(&prefix) && !slots.contains(u)).cloned().collect();
            keys.into_iter().filter_map(|k| orphans.remove(&k)).collect()
        };
        for o in stale {
            remove_container(&self.hosts[o.host].docker, &o.id).await;
        }
        Ok(true)
    }

    async fn forget(&self, app: &AppName) {
        if let Err(e) = self.placement.release_app(app).await {
            tracing::error!(%app, error = %e, "docker scheduler: cannot release the app's placements");
        }
        self.slots.lock().unwrap_or_else(|e| e.into_inner()).retain(|s, _| s.app != *app);
    }

    async fn nodes(&self) -> Option<Result<Vec<NodeStatus>, SchedulerError>> {
        let snapshot = match self.placement.snapshot().await {
            Ok(s) => s,
            Err(e) => return Some(Err(backend("reading placements", e))),
        };
        let ours: Vec<&str> = self.hosts.iter().map(|h| h.name.as_str()).collect();
        let nodes = snapshot
            .state()
            .nodes()
            .filter(|(info, _, _)| ours.contains(&info.name.as_str()))
            .map(|(info, health, allocated)| NodeStatus {
                name: info.name.clone(),
                capacity: info.capacity,
                allocated,
                labels: info.labels.clone(),
                planes: info.planes,
                health,
            })
            .collect();
        Some(Ok(nodes))
    }

    fn spawn(&self, launch: &Launch) -> std::io::Result<Spawned> {
        let slot = Slot::new(launch.app.clone(), launch.proc_type.clone(), launch.number);
        let node = self.slots.lock().unwrap_or_else(|e| e.into_inner()).get(&slot).cloned();
        let Some(host) = node.and_then(|n| self.hosts.iter().position(|h| h.name == n)) else {
            return Err(std::io::Error::other(format!("{slot} is not placed on any node of this scheduler")));
        };
        let h = &self.hosts[host];
        let adopt = self.adoptable(launch, host);
        let handle = self.next_handle.fetch_add(1, Ordering::Relaxed);
        self.containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(handle, Container { host, id: adopt.as_ref().map(|o| o.id.clone()), alive: true, pending: None });
        let (exited_tx, exited) = oneshot::channel();
        let streams = self.settings.syslog_address.is_none().then(|| {
            let (out_w, out_r) = tokio::io::duplex(OUTPUT_BUFFER);
            let (err_w, err_r) = tokio::io::duplex(OUTPUT_BUFFER);
            ((out_w, err_w), (out_r, err_r))
        });
        let (writers, readers) = streams.map_or((None, None), |(w, r)| (Some(w), Some(r)));
        let source = match &launch.artifact {
            Artifact::Source { dir } => Some(dir.clone()),
            Artifact::Image { .. } => None,
        };
        let run = Run {
            docker: h.docker.clone(),
            name: format!("{}-{}", launch.unit, deis_core::auth::random_hex(4)),
            body: self.body(launch, h),
            source,
            run_as: launch.identity.map(|id| format!("{}:{}", id.uid, id.gid)),
            handle,
            containers: self.containers.clone(),
            output: writers,
            adopt: adopt.as_ref().map(|o| o.id.clone()),
        };
        if let Some(o) = &adopt {
            tracing::info!(unit = %launch.unit, container = %o.id, port = o.port, "docker scheduler: adopted a running unit");
        }
        let containers = self.containers.clone();
        let unit = launch.unit.clone();
        tokio::spawn(async move {
            let info = run.run().await.unwrap_or_else(|e| {
                tracing::error!(%unit, error = %e, "docker scheduler: the unit's container failed");
                ExitInfo::UNKNOWN
            });
            if let Some(c) = containers.lock().unwrap_or_else(|e| e.into_inner()).get_mut(&handle) {
                c.alive = false;
            }
            let _ = exited_tx.send(info);
        });
        let (stdout, stderr) = match readers {
            Some((o, e)) => (Some(Box::pin(o) as _), Some(Box::pin(e) as _)),
            None => (None, None),
        };
        Ok(Spawned {
            pid: handle,
            process_id: None,
            node: Some(h.name.clone()),
            ip: Some(h.ip),
            port: adopt.map(|o| o.port),
            stdout,
            stderr,
            exited,
        })
    }

    fn signal_group(&self, handle: u32, signal: GroupSignal) {
        if self.detached.load(Ordering::SeqCst) {
            return;
        }
        let mut containers = self.containers.lock().unwrap_or_else(|e| e.into_inner());
        let Some(c) = containers.get_mut(&handle) else { return };
        let Some(id) = c.id.clone() else {
            c.pending = Some(signal);
            return;
        };
        let docker = self.hosts[c.host].docker.clone();
        let signal = match signal {
            GroupSignal::Term => "SIGTERM",
            GroupSignal::Kill => "SIGKILL",
        };
        tokio::spawn(async move {
            let opts = KillContainerOptions { signal: signal.into() };
            if let Err(e) = docker.kill_container(&id, Some(opts)).await {
                tracing::debug!(container = %id, error = %e, "docker scheduler: kill");
            }
        });
    }

    fn group_alive(&self, handle: u32) -> bool {
        self.containers.lock().unwrap_or_else(|e| e.into_inner()).get(&handle).is_some_and(|c| c.alive)
    }

    async fn released(&self, handle: u32) -> Ended {
        if self.detached.load(Ordering::SeqCst) {
            return Ended::default();
        }
        let Some((docker, id)) = self.container_of(handle) else { return Ended::default() };
        self.containers.lock().unwrap_or_else(|e| e.into_inner()).remove(&handle);
        let mut ended = Ended::default();
        if let Some(id) = id {
            if let Ok(c) = docker.inspect_container(&id, None).await {
                ended.out_of_memory = c.state.and_then(|s| s.oom_killed).unwrap_or(false);
            }
            remove_container(&docker, &id).await;
        }
        ended
    }

    /// `exec` probes run in the unit's container; the others from here against the
    /// unit's address.
    async fn probe(&self, target: &ProbeTarget, action: &ProbeAction, timeout: Duration) -> bool {
        let ProbeAction::Exec(e) = action else { return os_probe(target, action, timeout).await };
        let Some((docker, Some(id))) = self.container_of(target.handle) else { return false };
        let cmd = if e.command.len() == 1 {
            vec!["/bin/sh".to_string(), "-c".to_string(), e.command[0].clone()]
        } else {
            e.command.clone()
        };
        let attempt = async {
            let config = ExecConfig {
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                cmd: Some(cmd),
                ..Default::default()
            };
            let exec = docker.create_exec(&id, config).await.ok()?;
            let start = StartExecOptions { detach: false, tty: false, output_capacity: None };
            if let StartExecResults::Attached { mut output, .. } =
                docker.start_exec(&exec.id, Some(start)).await.ok()?
            {
                while output.next().await.is_some() {}
            }
            docker.inspect_exec(&exec.id).await.ok()?.exit_code
        };
        tokio::time::timeout(timeout, attempt).await.ok().flatten() == Some(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inherited_variables_stay_out_of_containers_but_the_config_gets_in() {
        let path = std::env::var("PATH").unwrap_or_default();
        let env = vec![
            ("PATH".to_string(), path),
            ("HOME".to_string(), "/app-home".to_string()),
            ("PORT".to_string(), "5000".to_string()),
        ];
        let got = container_env(&env);
        assert!(!got.iter().any(|v| v.starts_with("PATH=")), "{got:?}");
        // A value the release's config set differs from ours: it stays.
        assert!(got.contains(&"HOME=/app-home".to_string()) || std::env::var("HOME").as_deref() == Ok("/app-home"));
        assert!(got.contains(&"PORT=5000".to_string()));
    }
}
