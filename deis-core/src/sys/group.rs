//! Process groups and sessions as a whole: signalling them, seeing whether anything of
//! them is left, ending them; and [`TrackedGroup`], what keeps a running group from
//! outliving us.
//!
//! A group or session id is the pid of its leader, which [`spawn`](super::spawn)
//! makes. The kernel does not hand out a pid that is still some live group's id, so a
//! group keeps its id for as long as any member lives, even after its leader is gone.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use rustix::process::Signal;
use tokio::time::Instant;

use super::registry::GroupRegistry;
use super::watchdog::GroupWatchdog;
use super::{group_pid, procfs};

/// How often [`end_session`] looks whether a session's processes are gone.
const SESSION_POLL: Duration = Duration::from_millis(20);

/// Sends `signal` to every process of group `pgid`. A gone group is not an error; other
/// failures are logged. Ids 0 and 1 are ignored (they don't name one group).
pub fn signal_group(pgid: u32, signal: Signal) {
    let Some(pid) = group_pid(pgid) else { return };
    match rustix::process::kill_process_group(pid, signal) {
        Ok(()) | Err(rustix::io::Errno::SRCH) => {}
        Err(e) => tracing::warn!(pgid, ?signal, error = %io::Error::from(e), "signalling a process group failed"),
    }
}

/// Whether any live (not zombie) process is left in group `pgid`.
pub fn group_alive(pgid: u32) -> bool {
    let Some(pid) = group_pid(pgid) else { return false };
    if rustix::process::test_kill_process_group(pid) == Err(rustix::io::Errno::SRCH) {
        return false;
    }
    // Zombies awaiting their reaper still count for kill(2); look closer.
    !procfs::group_members(pgid).is_empty()
}

/// Sends `signal` to every process of session `sid`: its leader's group, and every
/// member of the session or that group (the groups a shell with job control made).
pub fn signal_session(sid: u32, signal: Signal) {
    signal_group(sid, signal);
    for pid in procfs::session_members(sid) {
        if let Some(p) = group_pid(pid) {
            // A member that is gone by now is fine.
            let _ = rustix::process::kill_process(p, signal);
        }
    }
}

/// Waits until session `sid` has no live process; false if it still has at `deadline`.
async fn session_gone(sid: u32, deadline: Instant) -> bool {
    loop {
        if procfs::session_members(sid).is_empty() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(SESSION_POLL).await;
    }
}

/// Ends every process of session `sid`: `SIGHUP`, `SIGTERM` and `SIGCONT` (so stopped
/// jobs see them), then `SIGKILL` after `grace`, then waits up to `kill_wait` for them
/// to disappear. Returns whether they are all gone.
pub async fn end_session(sid: u32, grace: Duration, kill_wait: Duration) -> bool {
    if procfs::session_members(sid).is_empty() {
        return true;
    }
    for signal in [Signal::HUP, Signal::TERM, Signal::CONT] {
        signal_session(sid, signal);
    }
    if session_gone(sid, Instant::now() + grace).await {
        return true;
    }
    signal_session(sid, Signal::KILL);
    session_gone(sid, Instant::now() + kill_wait).await
}

/// What keeps a running process group from outliving us: its entry in a
/// [`GroupRegistry`] (for a successor after a crash) and a [`GroupWatchdog`] (kills it
/// the moment we die).
///
/// Call [`release`](Self::release) once the group is gone. Dropping it unreleased kills
/// the group (the watchdog sees its pipe close) and leaves the registry entry for a
/// successor.
#[derive(Debug)]
pub struct TrackedGroup {
    pgid: u32,
    registry: Option<Arc<GroupRegistry>>,
    watchdog: Option<GroupWatchdog>,
}

impl TrackedGroup {
    /// Tracks the group `pgid` just started for `label` (e.g. the unit's name): lists it
    /// in `registry` (if any; written to its file in the background, see
    /// [`recorded`](Self::recorded)) and arms a watchdog for it (a failure to is
    /// logged: the group then depends on the registry and the parent-death signal).
    pub fn start(pgid: u32, label: &str, registry: Option<Arc<GroupRegistry>>) -> Self {
        if let Some(r) = &registry {
            r.add(pgid, label);
        }
        let watchdog = GroupWatchdog::arm(pgid)
            .inspect_err(|e| tracing::warn!(pgid, label, error = %e, "cannot start a process group's watchdog"))
            .ok();
        Self { pgid, registry, watchdog }
    }

    /// The group id.
    pub fn pgid(&self) -> u32 {
        self.pgid
    }

    /// Waits until the registry's file lists the group (at once without a registry).
    pub async fn recorded(&self) -> io::Result<()> {
        match &self.registry {
            Some(r) => r.flush().await,
            None => Ok(()),
        }
    }

    /// The group is gone: removes it from the registry (waiting until the file says so)
    /// and stops its watchdog without a signal.
    pub async fn release(mut self) {
        if let Some(r) = self.registry.take() {
            r.remove(self.pgid);
            if let Err(e) = r.flush().await {
                tracing::warn!(pgid = self.pgid, error = %e, "cannot update the process group state file");
            }
        }
        if let Some(w) = self.watchdog.take() {
            w.disarm().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::process::{SpawnSpec, spawn};
    use deis_test_support::wait_for;

    const T: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn a_group_is_alive_until_its_last_member_is_gone() {
        // The leader exits at once, leaving a background member behind.
        let spec = SpawnSpec::shell("sleep 600 & exit 0").env([("PATH", "/usr/bin:/bin")]);
        let child = spawn(spec).unwrap();
        let pgid = child.pid;
        assert_eq!(child.exited.await.unwrap().code, Some(0));
        assert!(group_alive(pgid), "the background sleep keeps the group alive");
        signal_group(pgid, Signal::KILL);
        wait_for(T, "the group to go after SIGKILL", || Some(()).filter(|()| !group_alive(pgid)));
        // Ids that name no single group are refused rather than signalled.
        assert!(!group_alive(0) && !group_alive(1));
        signal_group(1, Signal::CONT);
    }

    #[tokio::test]
    async fn ending_a_session_escalates_to_sigkill_after_the_grace() {
        // A leader that ignores the polite signals, with a child that does too.
        let spec = SpawnSpec::shell("trap '' HUP TERM; sh -c \"trap '' HUP TERM; sleep 600\" & sleep 600")
            .env([("PATH", "/usr/bin:/bin")]);
        let child = spawn(spec).unwrap();
        let sid = child.pid;
        wait_for(T, "the session to start", || Some(()).filter(|()| procfs::session_members(sid).len() >= 2));
        let started = std::time::Instant::now();
        assert!(end_session(sid, Duration::from_millis(300), Duration::from_secs(5)).await);
        assert!(started.elapsed() >= Duration::from_millis(300), "SIGKILL came before the grace was over");
        assert_eq!(child.exited.await.unwrap().signal, Some(9));
        assert!(end_session(sid, Duration::ZERO, Duration::ZERO).await, "nothing left to end");
    }
}
