//! A watchdog per process group that outlives us: if this process dies (`kill -9`, a
//! crash) while the group runs, the watchdog kills the whole group at once, instead of
//! leaving its background children running until a successor reads the state file.
//!
//! The watchdog is a `sh` in a session of its own, blocked reading a pipe whose other
//! end only this process holds (close-on-exec, so no other child inherits it). A normal
//! end writes a line first ([`GroupWatchdog::disarm`]): the watchdog exits quietly. An
//! end of file without that line means this process is gone, or dropped the watchdog
//! armed: the watchdog sends `SIGKILL` to the group. The kernel does not reuse a pid
//! that is still some live group's id, and the group has members for as long as
//! anything it started runs, so the signal reaches the right processes.

use std::io;
use std::os::fd::OwnedFd;

use tokio::sync::oneshot;

use super::process::{ExitInfo, SpawnSpec, Stdio, spawn};

/// `$1`: the process group to kill.
const SCRIPT: &str = r#"read -r _ || kill -s KILL -- "-$1" 2>/dev/null"#;

/// A running watchdog for one process group (see the module docs).
#[derive(Debug)]
pub struct GroupWatchdog {
    /// Our end of its stdin; closing it without the line fires the watchdog.
    pipe: Option<OwnedFd>,
    exited: oneshot::Receiver<ExitInfo>,
}

impl GroupWatchdog {
    /// Starts a watchdog for process group `pgid`.
    pub fn arm(pgid: u32) -> io::Result<Self> {
        let spec = SpawnSpec::shell(SCRIPT).arg("deis-watchdog").arg(pgid.to_string()).stdin(Stdio::Piped);
        // Its own session keeps it out of our process group (Ctrl-C) and away from our
        // terminal's hangup; no parent-death signal, or it would die with us unheard.
        let child = spawn(spec.outlive_parent())?;
        Ok(Self { pipe: child.stdin, exited: child.exited })
    }

    /// The group ended normally: stops the watchdog without it signalling anything,
    /// and waits until it has exited.
    pub async fn disarm(mut self) {
        if let Some(pipe) = self.pipe.take() {
            // A few bytes into an empty pipe never block; a watchdog already gone
            // (EPIPE) has nothing left to stop.
            let _ = rustix::io::write(&pipe, b"disarm\n");
        }
        let _ = (&mut self.exited).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deis_test_support::wait_for;
    use std::time::Duration;

    /// A `sleep` in a process group of its own (its `sh` leader exits at once), as a
    /// session's background child is: (pgid, pid of the sleep).
    fn orphaned_group() -> (u32, u32) {
        let out = std::process::Command::new("setsid")
            .args(["sh", "-c", "sleep 600 >/dev/null 2>&1 & echo $$ $!"])
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let mut ids = text.split_whitespace().map(|v| v.parse::<u32>().unwrap());
        (ids.next().unwrap(), ids.next().unwrap())
    }

    fn alive(pid: u32) -> bool {
        crate::sys::procfs::stat(pid).is_some_and(|s| s.is_live())
    }

    fn wait_gone(pid: u32, what: &str) {
        wait_for(Duration::from_secs(5), what, || Some(()).filter(|()| !alive(pid)));
    }

    #[tokio::test]
    async fn an_armed_watchdog_kills_the_group_when_its_owner_lets_go() {
        let (pgid, sleeper) = orphaned_group();
        assert!(alive(sleeper));
        // Dropping it armed is what the owner's death looks like to the watchdog.
        drop(GroupWatchdog::arm(pgid).unwrap());
        wait_gone(sleeper, "the watchdog to kill the group's sleep");
    }

    #[tokio::test]
    async fn a_disarmed_watchdog_leaves_the_group_alone() {
        let (pgid, sleeper) = orphaned_group();
        GroupWatchdog::arm(pgid).unwrap().disarm().await;
        // disarm returns once the watchdog has exited: it had its chance to kill.
        assert!(alive(sleeper), "a disarmed watchdog killed the group");
        crate::sys::group::signal_group(pgid, crate::sys::Signal::KILL);
        wait_gone(sleeper, "the group's sleep to go after SIGKILL");
    }
}
