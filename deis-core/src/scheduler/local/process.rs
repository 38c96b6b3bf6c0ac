//! The seam where units run: starting a unit, signalling it, probing it.
//! [`OsRuntime`] runs processes on this machine (the local scheduler); container
//! backends (`deis_sdk`'s Docker scheduler) implement [`ProcessRuntime`] over an
//! engine and reuse the supervisor (rolling replacement, restarts with backoff,
//! readiness) through [`LocalScheduler::on_runtime`](super::LocalScheduler::on_runtime);
//! the supervisor's tests use a fake.

use std::fmt::Debug;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncRead, Interest};
use tokio::sync::oneshot;

use super::probe;
pub use super::probe::ProbeTarget;
use crate::model::limits::Resources;
use crate::model::{AppIdentity, AppName, ProbeAction, ProcessType};
use crate::scheduler::{AppSpec, Artifact, NodeStatus, SchedulerError};
pub use crate::sys::ExitInfo;
use crate::sys::cgroup::UnitCgroup;
use crate::sys::{AsyncFdIo, Confined, Confinement, GroupRegistry, Signal, SpawnSpec, Stdio, TrackedGroup, group};

/// What to start for a unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// Unit name (for the state file and messages).
    pub unit: String,
    /// The app.
    pub app: AppName,
    /// The unit's process type.
    pub proc_type: ProcessType,
    /// The `n` of the unit's name.
    pub number: u32,
    /// The release it runs.
    pub release: u64,
    /// What it runs.
    pub artifact: Artifact,
    /// Shell command, run as `sh -c <command>` (empty: an image's own command).
    pub command: String,
    /// Working directory (a source build's directory; empty for images).
    pub dir: PathBuf,
    /// The whole environment of the process.
    pub env: Vec<(String, String)>,
    /// Its `PORT`.
    pub port: u16,
    /// What it reserves (a container runtime sets limits from it).
    pub resources: Resources,
    /// The app's identity, if it has one.
    pub identity: Option<AppIdentity>,
    /// The unit's limits (zero: none).
    pub limits: Resources,
}

/// An output stream of a started process.
pub type OutputReader = Pin<Box<dyn AsyncRead + Send>>;

/// A started unit.
#[allow(missing_debug_implementations)] // Its output readers are opaque streams.
pub struct Spawned {
    /// The runtime's handle of the unit: for processes the pid of the group leader
    /// (= the pgid); the other methods of [`ProcessRuntime`] take it.
    pub pid: u32,
    /// The process id units report ([`Unit::pid`](crate::model::Unit::pid)); None where
    /// there is none to show (a container on another machine).
    pub process_id: Option<u32>,
    /// The node it runs on; None: the scheduler's own node name.
    pub node: Option<String>,
    /// The address its `PORT` is reached at; None: 127.0.0.1.
    pub ip: Option<std::net::IpAddr>,
    /// The port it listens on when the runtime found it running already (a container
    /// a previous scheduler left, adopted); None: the launch's `PORT`.
    pub port: Option<u16>,
    /// Its standard output.
    pub stdout: Option<OutputReader>,
    /// Its standard error.
    pub stderr: Option<OutputReader>,
    /// Fires once the leader has exited and been reaped.
    pub exited: oneshot::Receiver<ExitInfo>,
}

/// Signals the supervisor sends to a unit's process group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupSignal {
    /// `SIGTERM`: please stop.
    Term,
    /// `SIGKILL`.
    Kill,
}

/// What the supervisor needs from where units run. See the module docs.
#[async_trait]
pub trait ProcessRuntime: Send + Sync + Debug {
    /// Whether this runtime can run `spec`'s artifact; the error is what `apply`
    /// returns. The default runs source builds only.
    fn check_artifact(&self, spec: &AppSpec) -> Result<(), SchedulerError> {
        match &spec.artifact {
            Artifact::Image { reference } => Err(SchedulerError::Unsupported(format!(
                "app {}: release v{} runs image {reference}; the local scheduler runs source builds only \
                 (deis deploy DIR). Configure a container backend to run images.",
                spec.app, spec.release
            ))),
            Artifact::Source { .. } => Ok(()),
        }
    }

    /// Admits `spec` where the runtime places units itself (over several nodes):
    /// `Ok(true)` once it was placed, the refusal (nothing changed) when it does not
    /// fit. `Ok(false)` (the default): the scheduler checks its one node's capacity.
    async fn admit(&self, _spec: &AppSpec) -> Result<bool, SchedulerError> {
        Ok(false)
    }

    /// `app` is gone: give back what [`admit`](Self::admit) placed. Called once its
    /// units are stopped.
    async fn forget(&self, _app: &AppName) {}

    /// The nodes, where the runtime places units itself; None (the default): the
    /// scheduler's one node.
    async fn nodes(&self) -> Option<Result<Vec<NodeStatus>, SchedulerError>> {
        None
    }

    /// Starts `launch` (for processes: as the leader of a new session and process
    /// group); the implementation reports its end on [`Spawned::exited`].
    fn spawn(&self, launch: &Launch) -> io::Result<Spawned>;
    /// Signals every process of group `pgid`.
    fn signal_group(&self, pgid: u32, signal: GroupSignal);
    /// Whether any (non-zombie) process of group `pgid` is left.
    fn group_alive(&self, pgid: u32) -> bool;
    /// Group `pgid` is gone for good; stop tracking it. Returns what the runtime saw
    /// of the unit's end beyond its exit status.
    async fn released(&self, pgid: u32) -> Ended;
    /// One probe attempt against a unit; true when healthy within `timeout`.
    async fn probe(&self, target: &ProbeTarget, action: &ProbeAction, timeout: Duration) -> bool;
}

/// What the runtime saw of a unit's end besides its exit status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ended {
    /// The kernel's OOM killer killed a process of the unit (it went past its memory
    /// limit).
    pub out_of_memory: bool,
}

/// Real processes on this machine.
///
/// Every unit is `/bin/sh -c <command>` started by [`crate::sys::spawn`]: in its own
/// session (so its pid is its process group id), dying with the scheduler's thread that
/// forked it (tokio worker threads live as long as the runtime), reaped by a thread of
/// its own. A [`TrackedGroup`] per unit lists it in the state file and kills the rest of
/// its group at once if this process dies. Each unit is confined as the
/// [`Confinement`] allows: its own cgroup (named after the unit and a sequence number,
/// so a replacement never shares its predecessor's), the app's identity, a mount
/// namespace; signals and liveness cover the whole cgroup, so processes that left the
/// group (`setsid`) are still the unit's.
#[derive(Debug)]
pub(crate) struct OsRuntime {
    registry: Arc<GroupRegistry>,
    confinement: Arc<Confinement>,
    /// Per live group: its registry entry, watchdog and cgroup.
    tracked: std::sync::Mutex<std::collections::HashMap<u32, Tracked>>,
    next_cgroup: std::sync::atomic::AtomicU64,
}

#[derive(Debug)]
struct Tracked {
    group: TrackedGroup,
    cgroup: Option<Arc<UnitCgroup>>,
    identity: Option<AppIdentity>,
}

impl OsRuntime {
    pub(crate) fn new(registry: GroupRegistry, confinement: Arc<Confinement>) -> Self {
        Self { registry: Arc::new(registry), confinement, tracked: Default::default(), next_cgroup: Default::default() }
    }

    fn cgroup_of(&self, pgid: u32) -> Option<Arc<UnitCgroup>> {
        self.tracked.lock().unwrap_or_else(|e| e.into_inner()).get(&pgid).and_then(|t| t.cgroup.clone())
    }
}

/// How long the processes of a unit's cgroup get to die once killed.
const KILL_WAIT: Duration = Duration::from_secs(5);

fn output_reader(fd: Option<std::os::fd::OwnedFd>) -> io::Result<Option<OutputReader>> {
    fd.map(|fd| Ok(Box::pin(AsyncFdIo::with_interest(fd, Interest::READABLE)?) as OutputReader)).transpose()
}

#[async_trait]
impl ProcessRuntime for OsRuntime {
    fn spawn(&self, launch: &Launch) -> io::Result<Spawned> {
        let n = self.next_cgroup.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let cgroup = self.confinement.cgroup(&format!("{}.{n}", launch.unit), launch.limits)?.map(Arc::new);
        let spec = SpawnSpec::shell(&launch.command)
            .dir(&launch.dir)
            .env(launch.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::Piped)
            .stderr(Stdio::Piped);
        let spec = self
            .confinement
            .apply(spec, Confined { identity: launch.identity, dir: &launch.dir, cgroup: cgroup.as_deref() });
        let child = match crate::sys::spawn(spec) {
            Ok(c) => c,
            Err(e) => {
                if let Some(cg) = cgroup {
                    cg.remove();
                }
                return Err(e.into());
            }
        };
        let pid = child.pid;
        let group = TrackedGroup::start(pid, &launch.unit, Some(self.registry.clone()));
        let (stdout, stderr) = match (output_reader(child.stdout), output_reader(child.stderr)) {
            (Ok(o), Ok(e)) => (o, e),
            (Err(e), _) | (_, Err(e)) => {
                // The reaper reaps the leader; the group is not ours to track.
                group::signal_group(pid, Signal::KILL);
                if let Some(cg) = cgroup {
                    tokio::task::spawn_blocking(move || {
                        cg.kill_all(KILL_WAIT);
                        cg.remove();
                    });
                }
                tokio::spawn(group.release());
                return Err(e);
            }
        };
        let tracked = Tracked { group, cgroup, identity: launch.identity };
        self.tracked.lock().unwrap_or_else(|e| e.into_inner()).insert(pid, tracked);
        Ok(Spawned {
            pid,
            process_id: Some(pid),
            node: None,
            ip: None,
            port: None,
            stdout,
            stderr,
            exited: child.exited,
        })
    }

    fn signal_group(&self, pgid: u32, signal: GroupSignal) {
        let signal = match signal {
            GroupSignal::Term => Signal::TERM,
            GroupSignal::Kill => Signal::KILL,
        };
        group::signal_group(pgid, signal);
        if let Some(cg) = self.cgroup_of(pgid) {
            cg.signal_all(signal);
        }
    }

    fn group_alive(&self, pgid: u32) -> bool {
        group::group_alive(pgid) || self.cgroup_of(pgid).is_some_and(|cg| !cg.is_empty())
    }

    async fn released(&self, pgid: u32) -> Ended {
        let tracked = self.tracked.lock().unwrap_or_else(|e| e.into_inner()).remove(&pgid);
        let Some(t) = tracked else { return Ended::default() };
        t.group.release().await;
        let Some(cg) = t.cgroup else { return Ended::default() };
        let ended = Ended { out_of_memory: cg.oom_kills() > 0 };
        let _ = tokio::task::spawn_blocking(move || {
            cg.kill_all(KILL_WAIT);
            cg.remove();
        })
        .await;
        ended
    }

    async fn probe(&self, target: &ProbeTarget, action: &ProbeAction, timeout: Duration) -> bool {
        // An exec probe runs as the unit does: same identity, cgroup and view.
        let tracked = {
            let map = self.tracked.lock().unwrap_or_else(|e| e.into_inner());
            map.get(&target.handle).map(|t| (t.identity, t.cgroup.clone()))
        };
        let (identity, cgroup) = tracked.unwrap_or((None, None));
        let confine = |spec: SpawnSpec| {
            self.confinement.apply(spec, Confined { identity, dir: &target.dir, cgroup: cgroup.as_deref() })
        };
        probe::os_probe_confined(target, action, timeout, &confine).await
    }
}
