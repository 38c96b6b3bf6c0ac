//! Reaping children: a small thread per child waits for it (`waitpid`) and reports how
//! it ended. A thread rather than the tokio runtime's child handling, so a child is
//! reaped even while (or after) the runtime that started it shuts down.

use std::io;
use std::os::unix::process::ExitStatusExt;

use rustix::process::{Pid, WaitOptions};
use tokio::sync::oneshot;

use super::process::ExitInfo;

/// Stack of a reaper thread (it only calls `waitpid`).
const REAPER_STACK: usize = 128 * 1024;

/// Starts a thread that waits for `child` and sends how it ended. If no thread can be
/// started, kills the child's process group, reaps the child here and returns the
/// error.
pub fn reap(child: std::process::Child) -> io::Result<oneshot::Receiver<ExitInfo>> {
    let pid = child.id();
    let (tx, rx) = oneshot::channel();
    let started =
        std::thread::Builder::new().name(format!("deis-reap-{pid}")).stack_size(REAPER_STACK).spawn(move || {
            let mut child = child;
            let info = match child.wait() {
                Ok(st) => ExitInfo { code: st.code(), signal: st.signal() },
                Err(e) => {
                    tracing::warn!(pid, error = %e, "waiting for a child failed");
                    ExitInfo::UNKNOWN
                }
            };
            let _ = tx.send(info);
        });
    match started {
        Ok(_) => Ok(rx),
        Err(e) => {
            // The closure, and the child in it, were dropped: nobody waits for it.
            super::group::signal_group(pid, rustix::process::Signal::KILL);
            if let Some(p) = i32::try_from(pid).ok().and_then(Pid::from_raw) {
                let _ = rustix::process::waitpid(Some(p), WaitOptions::empty());
            }
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reports_exit_codes_and_signals() {
        let child = std::process::Command::new("sh").args(["-c", "exit 7"]).spawn().unwrap();
        assert_eq!(reap(child).unwrap().await.unwrap(), ExitInfo { code: Some(7), signal: None });

        let child = std::process::Command::new("sh").args(["-c", "kill -TERM $$"]).spawn().unwrap();
        let pid = child.id();
        let info = reap(child).unwrap().await.unwrap();
        assert_eq!(info, ExitInfo { code: None, signal: Some(15) });
        assert_eq!(info.to_string(), "killed by signal 15");
        // Reaped: no zombie left behind.
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    }
}
