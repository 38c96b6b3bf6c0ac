//! Process groups of units: inspected through `/proc`, signalled as a whole, and listed
//! in a state file so that a scheduler started after a crash (`kill -9` of deisd) can
//! kill whatever the previous one left running.
//!
//! Each unit runs in its own session and process group whose id is the pid of the
//! unit's `sh`. The state file records that pgid with the leader's start time (field 22
//! of `/proc/<pid>/stat`, in clock ticks since boot). A leftover group is recognised by
//! members whose process group is the recorded id and which started no earlier than
//! the recorded leader: the kernel does not hand out a pid that is still some live
//! group's id, so such members belong to the recorded group even when its leader is
//! gone (which is the usual case: the `sh` dies of `PR_SET_PDEATHSIG`, its children
//! stay behind).

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Largest state file read back; anything bigger is not ours.
const MAX_STATE_BYTES: u64 = 16 << 20;

/// What `/proc/<pid>/stat` tells about a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcStat {
    /// State letter (`R`, `S`, `Z`, ...).
    pub state: char,
    /// Process group id.
    pub pgrp: i32,
    /// Start time in clock ticks since boot.
    pub start_time: u64,
}

/// Parses the content of `/proc/<pid>/stat`.
pub(crate) fn parse_stat(s: &str) -> Option<ProcStat> {
    // The command name (field 2) is in parentheses and may itself hold ") ".
    let rest = &s[s.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(ProcStat {
        state: fields.first()?.chars().next()?,
        pgrp: fields.get(2)?.parse().ok()?,
        start_time: fields.get(19)?.parse().ok()?,
    })
}

/// `/proc/<pid>/stat` of a process, if it exists.
pub(crate) fn proc_stat(pid: i32) -> Option<ProcStat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Live (not zombie) processes whose process group is `pgid`.
pub(crate) fn group_members(pgid: i32) -> Vec<(i32, ProcStat)> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return vec![] };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| Some((pid, proc_stat(pid)?)))
        .filter(|(_, st)| st.pgrp == pgid && !matches!(st.state, 'Z' | 'X'))
        .collect()
}

/// Whether any live process is left in group `pgid`.
pub(crate) fn group_alive(pgid: u32) -> bool {
    let Ok(pgid) = i32::try_from(pgid) else { return false };
    if pgid <= 1 {
        return false;
    }
    // SAFETY: signal 0 only checks for existence and permission.
    let rc = unsafe { libc::kill(-pgid, 0) };
    if rc != 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH) {
        return false;
    }
    // Zombies awaiting their reaper still count for kill(2); look closer.
    !group_members(pgid).is_empty()
}

/// Sends `signal` to every process of group `pgid` (a gone group is not an error).
pub(crate) fn signal_group(pgid: u32, signal: i32) {
    let Ok(pgid) = i32::try_from(pgid) else { return };
    if pgid <= 1 {
        return;
    }
    // SAFETY: plain kill(2) on a process group we created.
    let rc = unsafe { libc::kill(-pgid, signal) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ESRCH) {
            tracing::warn!(pgid, signal, error = %e, "signalling a unit's process group failed");
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    pgid: u32,
    start_time: u64,
    unit: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct StateFile {
    groups: Vec<Entry>,
}

/// The process groups of live units, mirrored to the state file on every change.
#[derive(Debug)]
pub(crate) struct GroupRegistry {
    path: PathBuf,
    live: Mutex<BTreeMap<u32, Entry>>,
}

impl GroupRegistry {
    /// An empty registry written to `path` (call [`kill_leftovers`] on it first).
    pub(crate) fn create(path: PathBuf) -> io::Result<Self> {
        let reg = Self { path, live: Mutex::new(BTreeMap::new()) };
        reg.persist(&BTreeMap::new())?;
        Ok(reg)
    }

    /// Records the new group `pgid` (its leader has just been started) of `unit`.
    pub(crate) fn add(&self, pgid: u32, unit: &str) {
        let start_time = i32::try_from(pgid).ok().and_then(proc_stat).map_or(0, |s| s.start_time);
        let mut live = self.live.lock().unwrap();
        live.insert(pgid, Entry { pgid, start_time, unit: unit.to_owned() });
        self.persist_logged(&live);
    }

    /// Forgets group `pgid` (all its processes are gone).
    pub(crate) fn remove(&self, pgid: u32) {
        let mut live = self.live.lock().unwrap();
        if live.remove(&pgid).is_some() {
            self.persist_logged(&live);
        }
    }

    fn persist_logged(&self, live: &BTreeMap<u32, Entry>) {
        if let Err(e) = self.persist(live) {
            tracing::warn!(path = %self.path.display(), error = %e,
                "writing the local scheduler's state file failed; after a crash, units may be left running");
        }
    }

    /// Writes the file atomically (temporary file + rename), so a crash mid-write
    /// leaves the previous version. No fsync: the file only matters while the machine
    /// stays up (a reboot ends the units anyway).
    fn persist(&self, live: &BTreeMap<u32, Entry>) -> io::Result<()> {
        let state = StateFile { groups: live.values().cloned().collect() };
        let tmp = self.path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&state).map_err(io::Error::other)?)?;
        std::fs::rename(&tmp, &self.path)
    }
}

/// Kills the process groups listed in the state file at `path` by a previous scheduler
/// that is gone, and waits (up to `wait`) until their processes have exited. Returns
/// the number of groups killed. A missing file means nothing to do; an unreadable one
/// is logged and ignored.
pub(crate) async fn kill_leftovers(path: &Path, wait: Duration) -> usize {
    let state = match read_state(path) {
        Ok(Some(s)) => s,
        Ok(None) => return 0,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e,
                "ignoring an unreadable local scheduler state file; units of a previous run may still be running");
            return 0;
        }
    };
    let mut killed = vec![];
    for entry in &state.groups {
        let Ok(pgid) = i32::try_from(entry.pgid) else { continue };
        let ours = group_members(pgid).iter().any(|(_, st)| st.start_time >= entry.start_time);
        if ours {
            tracing::info!(pgid, unit = %entry.unit, "killing a unit left running by a previous scheduler");
            signal_group(entry.pgid, libc::SIGKILL);
            killed.push(pgid);
        }
    }
    let deadline = tokio::time::Instant::now() + wait;
    while killed.iter().any(|&g| !group_members(g).is_empty()) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    killed.len()
}

fn read_state(path: &Path) -> io::Result<Option<StateFile>> {
    use std::io::Read;
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut bytes = vec![];
    file.take(MAX_STATE_BYTES).read_to_end(&mut bytes)?;
    serde_json::from_slice(&bytes).map(Some).map_err(io::Error::other)
}

/// In a freshly forked child, before exec: asks the kernel to SIGKILL this process when
/// its parent (`parent`, the daemon) dies, and fails if the parent is already gone.
///
/// # Safety
/// Call only between fork and exec (in `pre_exec`): it makes async-signal-safe calls
/// (prctl, getppid) and does not allocate.
pub(crate) unsafe fn die_with_parent(parent: libc::pid_t) -> std::io::Result<()> {
    // SAFETY: plain syscalls with valid arguments; the caller is in a forked child.
    unsafe {
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // The parent died before prctl took effect: nobody would kill us.
        if libc::getppid() != parent {
            return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_names() {
        let line = "4242 (we(ird) name) S 1 4240 4240 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        let st = parse_stat(line).unwrap();
        assert_eq!(st, ProcStat { state: 'S', pgrp: 4240, start_time: 987654 });
        assert!(parse_stat("garbage").is_none());
        assert!(parse_stat("1 (x) S 1").is_none());
    }

    #[test]
    fn reads_this_process() {
        // SAFETY: getpid/getpgrp can't fail.
        let (pid, pgrp) = unsafe { (libc::getpid(), libc::getpgrp()) };
        let st = proc_stat(pid).unwrap();
        assert_eq!(st.pgrp, pgrp);
        assert!(st.start_time > 0);
        assert!(group_alive(pgrp as u32));
        assert!(!group_alive(0));
    }

    #[test]
    fn registry_writes_the_file_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("units.json");
        let reg = GroupRegistry::create(path.clone()).unwrap();
        // SAFETY: getpid can't fail.
        let me = unsafe { libc::getpid() } as u32;
        reg.add(me, "a.web.1");
        let state = read_state(&path).unwrap().unwrap();
        assert_eq!(state.groups.len(), 1);
        assert_eq!(state.groups[0].unit, "a.web.1");
        assert!(state.groups[0].start_time > 0);
        reg.remove(me);
        assert!(read_state(&path).unwrap().unwrap().groups.is_empty());
        assert!(!path.with_extension("json.tmp").exists());
    }
}
