//! Reading `/proc`: what a process is (state, parent, group, session, start time), who
//! belongs to a process group or session, and who carries an environment variable.
//!
//! The reads are of kernel memory, not of a disk, so they are done in place even on
//! async paths. Every file read is bounded.

use std::io::Read;

/// Most bytes read of a `/proc/<pid>/stat` (a line of ~52 numbers and a 16-byte name).
const MAX_STAT_BYTES: u64 = 4096;
/// Most bytes read of a `/proc/<pid>/environ` (the kernel's limit on the whole of argv
/// and environment of one exec is a quarter of the stack limit; 1 MiB covers the usual
/// 8 MiB stack limit's 2 MiB only partly, and a marker lies at the start anyway when
/// the process was started with it).
const MAX_ENVIRON_BYTES: u64 = 1 << 20;

/// What `/proc/<pid>/stat` tells about a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// State letter (`R`, `S`, `Z` for a zombie, ...).
    pub state: char,
    /// Parent pid.
    pub ppid: u32,
    /// Process group id.
    pub pgrp: u32,
    /// Session id.
    pub session: u32,
    /// Start time in clock ticks since boot.
    pub start_time: u64,
}

impl ProcStat {
    /// Whether it still runs (is not a zombie or dead).
    pub fn is_live(&self) -> bool {
        !matches!(self.state, 'Z' | 'X')
    }
}

/// Parses the content of `/proc/<pid>/stat`; `None` if it is not one.
pub fn parse_stat(s: &str) -> Option<ProcStat> {
    // The command name (field 2) is in parentheses and may itself hold ") ".
    let rest = &s[s.rfind(')')? + 1..];
    // Fields from 3 on: state ppid pgrp session tty_nr ... starttime is field 22.
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?;
    let mut state_chars = state.chars();
    let state = state_chars.next().filter(|_| state_chars.next().is_none())?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    let session = fields.next()?.parse().ok()?;
    let start_time = fields.nth(22 - 7)?.parse().ok()?;
    Some(ProcStat { state, ppid, pgrp, session, start_time })
}

/// Reads at most `limit` bytes of `path`.
fn read_bounded(path: &str, limit: u64) -> Option<Vec<u8>> {
    let mut bytes = vec![];
    std::fs::File::open(path).ok()?.take(limit).read_to_end(&mut bytes).ok()?;
    Some(bytes)
}

/// `/proc/<pid>/stat` of a process, if it exists.
pub fn stat(pid: u32) -> Option<ProcStat> {
    let bytes = read_bounded(&format!("/proc/{pid}/stat"), MAX_STAT_BYTES)?;
    parse_stat(std::str::from_utf8(&bytes).ok()?)
}

/// Pids of every process (the numeric entries of `/proc`).
pub fn pids() -> impl Iterator<Item = u32> {
    std::fs::read_dir("/proc").into_iter().flatten().filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
}

/// Live processes whose stat passes `keep`.
fn live_where(keep: impl Fn(&ProcStat) -> bool) -> Vec<(u32, ProcStat)> {
    pids().filter_map(|pid| Some((pid, stat(pid)?))).filter(|(_, st)| st.is_live() && keep(st)).collect()
}

/// Live processes of process group `pgid`.
pub fn group_members(pgid: u32) -> Vec<(u32, ProcStat)> {
    live_where(|st| st.pgrp == pgid)
}

/// Live processes of session `sid` or of process group `sid`: what a session leader
/// started, including the groups a shell with job control made, and including
/// processes that joined the leader's group from elsewhere.
pub fn session_members(sid: u32) -> Vec<u32> {
    live_where(|st| st.session == sid || st.pgrp == sid).into_iter().map(|(pid, _)| pid).collect()
}

/// Whether the (initial) environment of process `pid` holds `var=value`; false if it
/// can't be read (gone, or not ours to read).
pub fn has_env(pid: u32, var: &str, value: &str) -> bool {
    let Some(environ) = read_bounded(&format!("/proc/{pid}/environ"), MAX_ENVIRON_BYTES) else { return false };
    environ.split(|&b| b == 0).any(|kv| {
        kv.strip_prefix(var.as_bytes()).and_then(|rest| rest.strip_prefix(b"=")).is_some_and(|v| v == value.as_bytes())
    })
}

/// Pids of the processes whose (initial) environment holds `var=value`.
pub fn processes_with_env(var: &str, value: &str) -> Vec<u32> {
    pids().filter(|&pid| has_env(pid, var, value)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::process::{SpawnSpec, Stdio, spawn};
    use deis_test_support::wait_for;
    use proptest::prelude::*;

    #[test]
    fn parses_stat_with_odd_names() {
        let line = "4242 (we(ird) name) S 1 4240 4239 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        let st = parse_stat(line).unwrap();
        assert_eq!(st, ProcStat { state: 'S', ppid: 1, pgrp: 4240, session: 4239, start_time: 987654 });
        assert!(st.is_live());
        assert!(!parse_stat(&line.replace(") S", ") Z")).unwrap().is_live());
        assert!(parse_stat("garbage").is_none());
        assert!(parse_stat("1 (x) S 1").is_none());
        assert!(parse_stat(&line.replace(") S", ") SS")).is_none());
    }

    proptest! {
        #[test]
        fn parse_stat_never_panics(s in "\\PC{0,200}") {
            let _ = parse_stat(&s);
        }

        #[test]
        fn any_command_name_parses(name in "\\PC{0,16}", pgrp in 1u32..4_000_000, start in any::<u64>()) {
            let line = format!("77 ({name}) R 1 {pgrp} {pgrp} 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 {start} 0 0");
            let st = parse_stat(&line).unwrap();
            prop_assert_eq!((st.pgrp, st.session, st.start_time), (pgrp, pgrp, start));
        }
    }

    const T: std::time::Duration = std::time::Duration::from_secs(10);

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        let st = stat(me).unwrap();
        assert_eq!(st.pgrp, rustix::process::getpgrp().as_raw_nonzero().get() as u32);
        assert!(st.start_time > 0);
        assert!(stat(0).is_none());
    }

    #[tokio::test]
    async fn sees_a_real_childs_session_and_environment() {
        let marker = crate::auth::random_hex(8);
        // A leader with a background child in a group of its own (as job control makes).
        let spec = SpawnSpec::shell(
            "python3 -c 'import os; os.setpgid(0, 0); os.execvp(\"sleep\", [\"sleep\", \"600\"])' & \
             echo $!; exec sleep 600",
        )
        .env([("PATH", "/usr/bin:/bin"), ("PROCFS_TEST", marker.as_str())])
        .stdout(Stdio::Piped);
        let mut child = spawn(spec).unwrap();
        let mut out = String::new();
        // One line: the background child keeps the pipe open.
        let stdout = std::fs::File::from(child.stdout.take().unwrap());
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut out).unwrap();
        let leader = stat(child.pid).unwrap();
        assert_eq!((leader.session, leader.pgrp), (child.pid, child.pid), "a session leader");
        let background: u32 = out.trim().parse().unwrap();
        wait_for(T, "the background child's own group", || stat(background).filter(|s| s.pgrp == background));
        let bg = stat(background).unwrap();
        assert_eq!(bg.session, child.pid);
        assert_eq!(bg.pgrp, background, "it made a group of its own");
        assert_eq!(group_members(child.pid).iter().map(|(p, _)| *p).collect::<Vec<_>>(), vec![child.pid]);
        let mut members = session_members(child.pid);
        members.sort();
        let mut want = vec![child.pid, background];
        want.sort();
        assert_eq!(members, want);
        let mut marked = processes_with_env("PROCFS_TEST", &marker);
        marked.sort();
        assert_eq!(marked, want);
        assert!(!has_env(child.pid, "PROCFS_TEST", &marker[1..]), "the whole value must match");
        assert!(!has_env(child.pid, "PROCFS_TES", &marker), "the whole name must match");

        crate::sys::group::signal_session(child.pid, crate::sys::Signal::KILL);
        child.exited.await.unwrap();
        // SIGKILL takes effect when each process next runs.
        wait_for(T, "the session to be gone", || Some(()).filter(|()| session_members(child.pid).is_empty()));
    }
}
