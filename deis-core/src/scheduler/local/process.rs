//! The seam at the operating system: starting a unit's process, signalling its process
//! group, probing it. [`OsRuntime`] is the real Linux implementation; the supervisor's
//! tests use a fake.

use std::fmt::Debug;
use std::io;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::pin::Pin;
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::AsyncRead;
use tokio::sync::oneshot;

use super::groups::{self, GroupRegistry};
use super::probe::{self, ProbeTarget};
use super::watchdog::GroupWatchdog;
use crate::model::ProbeAction;

/// Stack of the thread that waits for a unit (it only calls `waitpid`).
const REAPER_STACK: usize = 128 * 1024;

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

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ExitInfo {
    /// Exit code, if it exited.
    pub code: Option<i32>,
    /// Signal, if it was killed by one.
    pub signal: Option<i32>,
}

impl std::fmt::Display for ExitInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.code, self.signal) {
            (Some(c), _) => write!(f, "exit status {c}"),
            (None, Some(s)) => write!(f, "killed by signal {s}"),
            (None, None) => f.write_str("unknown exit status"),
        }
    }
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
/// Every unit is `/bin/sh -c <command>` started in its own session (`setsid`, so its
/// pid is its process group id) with `PR_SET_PDEATHSIG(SIGKILL)`, so it dies with the
/// scheduler's thread that forked it (tokio worker threads live as long as the
/// runtime); a [`GroupWatchdog`] per unit kills the rest of its group at once if this
/// process dies. A thread per unit waits for it, so every child is reaped.
#[derive(Debug)]
pub(crate) struct OsRuntime {
    groups: GroupRegistry,
    /// Per live group: kills it at once if this process dies (see [`GroupWatchdog`]).
    watchdogs: std::sync::Mutex<std::collections::HashMap<u32, GroupWatchdog>>,
}

impl OsRuntime {
    pub(crate) fn new(groups: GroupRegistry) -> Self {
        Self { groups, watchdogs: Default::default() }
    }
}

#[async_trait]
impl ProcessRuntime for OsRuntime {
    fn spawn(&self, launch: &Launch) -> io::Result<Spawned> {
        let mut cmd = std::process::Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(&launch.command)
            .current_dir(&launch.dir)
            .env_clear()
            .envs(launch.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: getpid can't fail.
        let parent = unsafe { libc::getpid() };
        // SAFETY: the closure runs between fork and exec and only makes
        // async-signal-safe calls (setsid, prctl, getppid) without allocating.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setsid() < 0 {
                    return Err(io::Error::last_os_error());
                }
                super::groups::die_with_parent(parent)
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot run `sh -c` in {}: {e}", launch.dir.display())))?;
        let pid = child.id();
        self.groups.add(pid, &launch.unit);
        let stdout = child.stdout.take().map(tokio::process::ChildStdout::from_std).transpose();
        let stderr = child.stderr.take().map(tokio::process::ChildStderr::from_std).transpose();
        let (tx, exited) = oneshot::channel();
        let reaper =
            std::thread::Builder::new().name(format!("deis-reap-{pid}")).stack_size(REAPER_STACK).spawn(move || {
                let info = match child.wait() {
                    Ok(st) => ExitInfo { code: st.code(), signal: st.signal() },
                    Err(_) => ExitInfo { code: None, signal: None },
                };
                let _ = tx.send(info);
            });
        if let Err(e) = reaper {
            // The child moved into the failed closure and was dropped unreaped: kill
            // the group; reaping is impossible now, so report the failure.
            groups::signal_group(pid, libc::SIGKILL);
            self.groups.remove(pid);
            return Err(io::Error::new(e.kind(), format!("cannot start a reaper thread: {e}")));
        }
        let (stdout, stderr) = match (stdout, stderr) {
            (Ok(o), Ok(e)) => (o, e),
            (Err(e), _) | (_, Err(e)) => {
                // The reaper thread reaps the leader; the group is not ours to track.
                groups::signal_group(pid, libc::SIGKILL);
                self.groups.remove(pid);
                return Err(e);
            }
        };
        match GroupWatchdog::arm(pid) {
            Ok(w) => {
                self.watchdogs.lock().unwrap_or_else(|e| e.into_inner()).insert(pid, w);
            }
            Err(e) => tracing::warn!(unit = %launch.unit, error = %e, "cannot start the unit's watchdog"),
        }
        Ok(Spawned {
            pid,
            stdout: stdout.map(|s| Box::pin(s) as OutputReader),
            stderr: stderr.map(|s| Box::pin(s) as OutputReader),
            exited,
        })
    }

    fn signal_group(&self, pgid: u32, signal: GroupSignal) {
        let sig = match signal {
            GroupSignal::Term => libc::SIGTERM,
            GroupSignal::Kill => libc::SIGKILL,
        };
        groups::signal_group(pgid, sig);
    }

    fn group_alive(&self, pgid: u32) -> bool {
        groups::group_alive(pgid)
    }

    async fn released(&self, pgid: u32) {
        self.groups.remove(pgid);
        let watchdog = self.watchdogs.lock().unwrap_or_else(|e| e.into_inner()).remove(&pgid);
        if let Some(w) = watchdog {
            w.disarm().await;
        }
    }

    async fn probe(&self, target: &ProbeTarget, action: &ProbeAction, timeout: Duration) -> bool {
        probe::os_probe(target, action, timeout).await
    }
}
