//! A watchdog per process group that outlives this process: if this process dies
//! (`kill -9`, a crash) while the group runs, the watchdog kills the whole group at
//! once, instead of leaving its background children running until a successor reads
//! the state file.
//!
//! The watchdog is a `sh` in a session of its own, blocked reading a pipe whose other
//! end only this process holds (close-on-exec, so no child inherits it). A normal end
//! writes a line first ([`GroupWatchdog::disarm`]): the watchdog exits quietly. An end
//! of file without that line means this process is gone, or dropped the watchdog
//! armed: the watchdog sends `SIGKILL` to the group. The kernel does not reuse a pid
//! that is still some live group's id, and the group has members for as long as
//! anything it started runs, so the signal reaches the right processes.

use std::io;
use std::process::Stdio;

use tokio::io::AsyncWriteExt;

/// `$1`: the process group to kill.
const SCRIPT: &str = r#"read -r _ || kill -s KILL -- "-$1" 2>/dev/null"#;

/// A running watchdog for one process group (see the module docs).
#[derive(Debug)]
pub(crate) struct GroupWatchdog {
    child: tokio::process::Child,
}

impl GroupWatchdog {
    /// Starts a watchdog for process group `pgid`. Needs a tokio runtime.
    pub(crate) fn arm(pgid: u32) -> io::Result<Self> {
        let mut cmd = tokio::process::Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(SCRIPT)
            .arg("deis-watchdog")
            .arg(pgid.to_string())
            .env_clear()
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: setsid is async-signal-safe. Its own session keeps the watchdog out of
        // this process's group, so signals to that group (Ctrl-C) don't reach it.
        unsafe {
            cmd.pre_exec(|| if libc::setsid() < 0 { Err(io::Error::last_os_error()) } else { Ok(()) });
        }
        Ok(Self { child: cmd.spawn()? })
    }

    /// The group ended normally: stops the watchdog without it signalling anything,
    /// and reaps it.
    pub(crate) async fn disarm(mut self) {
        if let Some(mut stdin) = self.child.stdin.take() {
            let _ = stdin.write_all(b"disarm\n").await;
        }
        let _ = self.child.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

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
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| s.rsplit(')').next().and_then(|r| r.trim().chars().next()) != Some('Z'))
    }

    async fn until_gone(pid: u32) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while alive(pid) {
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    #[tokio::test]
    async fn an_armed_watchdog_kills_the_group_when_its_owner_lets_go() {
        let (pgid, sleeper) = orphaned_group();
        assert!(alive(sleeper));
        // Dropping it armed is what the owner's death looks like to the watchdog.
        drop(GroupWatchdog::arm(pgid).unwrap());
        assert!(until_gone(sleeper).await, "the group's sleep survived its watchdog");
    }

    #[tokio::test]
    async fn a_disarmed_watchdog_leaves_the_group_alone() {
        let (pgid, sleeper) = orphaned_group();
        GroupWatchdog::arm(pgid).unwrap().disarm().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(alive(sleeper), "a disarmed watchdog killed the group");
        crate::scheduler::local::groups::signal_group(pgid, libc::SIGKILL);
        assert!(until_gone(sleeper).await);
    }
}
