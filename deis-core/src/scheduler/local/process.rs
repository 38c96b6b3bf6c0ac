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
use crate::model::{AppName, ProbeAction, ProcessType};
use crate::scheduler::{AppSpec, Artifact, NodeStatus, SchedulerError};
pub use crate::sys::ExitInfo;
use crate::sys::{AsyncFdIo, GroupRegistry, Signal, SpawnSpec, Stdio, TrackedGroup, group};

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
    /// Group `pgid` is gone for good; stop tracking it.
    async fn released(&self, pgid: u32);
    /// One probe attempt against a unit; true when healthy within `timeout`.
    async fn probe(&self, target: &ProbeTarget, action: &ProbeAction, timeout: Duration) -> bool;
}

/// Real processes on this machine.
///
/// Every unit is `/bin/sh -c <command>` started by [`crate::sys::spawn`]: in its own
/// session (so its pid is its process group id), dying with the scheduler's thread that
/// forked it (tokio worker threads live as long as the runtime), reaped by a thread of
/// its own. A [`TrackedGroup`] per unit lists it in the state file and kills the rest of
/// its group at once if this process dies.
#[derive(Debug)]
pub(crate) struct OsRuntime {
    registry: Arc<GroupRegistry>,
    /// Per live group: its registry entry and watchdog.
    tracked: std::sync::Mutex<std::collections::HashMap<u32, TrackedGroup>>,
}

impl OsRuntime {
    pub(crate) fn new(registry: GroupRegistry) -> Self {
        Self { registry: Arc::new(registry), tracked: Default::default() }
    }
}

fn output_reader(fd: Option<std::os::fd::OwnedFd>) -> io::Result<Option<OutputReader>> {
    fd.map(|fd| Ok(Box::pin(AsyncFdIo::with_interest(fd, Interest::READABLE)?) as OutputReader)).transpose()
}

#[async_trait]
impl ProcessRuntime for OsRuntime {
    fn spawn(&self, launch: &Launch) -> io::Result<Spawned> {
        let spec = SpawnSpec::shell(&launch.command)
            .dir(&launch.dir)
            .env(launch.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::Piped)
            .stderr(Stdio::Piped);
        let child = crate::sys::spawn(spec)?;
        let pid = child.pid;
        let tracked = TrackedGroup::start(pid, &launch.unit, Some(self.registry.clone()));
        let (stdout, stderr) = match (output_reader(child.stdout), output_reader(child.stderr)) {
            (Ok(o), Ok(e)) => (o, e),
            (Err(e), _) | (_, Err(e)) => {
                // The reaper reaps the leader; the group is not ours to track.
                group::signal_group(pid, Signal::KILL);
                tokio::spawn(tracked.release());
                return Err(e);
            }
        };
        self.tracked.lock().unwrap_or_else(|e| e.into_inner()).insert(pid, tracked);
        Ok(Spawned { pid, process_id: Some(pid), node: None, ip: None, stdout, stderr, exited: child.exited })
    }

    fn signal_group(&self, pgid: u32, signal: GroupSignal) {
        let signal = match signal {
            GroupSignal::Term => Signal::TERM,
            GroupSignal::Kill => Signal::KILL,
        };
        group::signal_group(pgid, signal);
    }

    fn group_alive(&self, pgid: u32) -> bool {
        group::group_alive(pgid)
    }

    async fn released(&self, pgid: u32) {
        let tracked = self.tracked.lock().unwrap_or_else(|e| e.into_inner()).remove(&pgid);
        if let Some(t) = tracked {
            t.release().await;
        }
    }

    async fn probe(&self, target: &ProbeTarget, action: &ProbeAction, timeout: Duration) -> bool {
        probe::os_probe(target, action, timeout).await
    }
}
