//! The seam at the operating system: starting a unit's process, signalling its process
//! group, probing it. [`OsRuntime`] is the real Linux implementation; the supervisor's
//! tests use a fake.

use std::fmt::Debug;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncRead, Interest};
use tokio::sync::oneshot;

use super::probe::{self, ProbeTarget};
use crate::model::ProbeAction;
pub(crate) use crate::sys::ExitInfo;
use crate::sys::{AsyncFdIo, GroupRegistry, Signal, SpawnSpec, Stdio, TrackedGroup, group};

/// What to start for a unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Launch {
    /// Unit name (for the state file and messages).
    pub unit: String,
    /// Shell command, run as `sh -c <command>`.
    pub command: String,
    /// Working directory.
    pub dir: PathBuf,
    /// The whole environment of the process.
    pub env: Vec<(String, String)>,
}

/// An output stream of a started process.
pub(crate) type OutputReader = Pin<Box<dyn AsyncRead + Send>>;

/// A started process. Its pid is also its process group id.
pub(crate) struct Spawned {
    /// Pid of the group leader (= the pgid).
    pub pid: u32,
    /// Its standard output.
    pub stdout: Option<OutputReader>,
    /// Its standard error.
    pub stderr: Option<OutputReader>,
    /// Fires once the leader has exited and been reaped.
    pub exited: oneshot::Receiver<ExitInfo>,
}

/// Signals the supervisor sends to a unit's process group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GroupSignal {
    /// `SIGTERM`: please stop.
    Term,
    /// `SIGKILL`.
    Kill,
}

/// Process operations the supervisor needs.
#[async_trait]
pub(crate) trait ProcessRuntime: Send + Sync + Debug {
    /// Starts `launch` as the leader of a new session and process group; the
    /// implementation reaps it and reports its end on [`Spawned::exited`].
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
        Ok(Spawned { pid, stdout, stderr, exited: child.exited })
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
