//! [`GroupRegistry`]: the process groups we run, listed in a state file, so that a
//! successor started after a crash (`kill -9` of deisd) kills whatever we left running.
//!
//! Each entry is a group id with its leader's start time (field 22 of
//! `/proc/<pid>/stat`, in clock ticks since boot) and a label. A leftover group is
//! recognised by members whose process group is the recorded id and which started no
//! earlier than the recorded leader: the kernel does not hand out a pid that is still
//! some live group's id, so such members belong to the recorded group even when its
//! leader is gone (the usual case: the leader dies of its parent-death signal, its
//! children stay behind).
//!
//! Changes are made in memory and written by a writer task on the blocking pool, as a
//! temporary file renamed over the old one (a crash mid-write leaves the previous
//! version). A burst of changes while a write is under way becomes one more write of
//! the latest state. [`GroupRegistry::flush`] waits until everything recorded so far is
//! on disk; dropping the registry writes what is still pending, in place.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};

use super::{Signal, group, procfs};

/// Largest state file read back; anything bigger is not ours.
const MAX_STATE_BYTES: u64 = 16 << 20;
/// How often [`GroupRegistry::take_over`] looks whether killed leftovers are gone.
const LEFTOVER_POLL: Duration = Duration::from_millis(20);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    pgid: u32,
    start_time: u64,
    unit: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct StateFile {
    groups: Vec<Entry>,
}

/// The live groups and the number of changes made to them.
#[derive(Debug, Default)]
struct Live {
    groups: BTreeMap<u32, Entry>,
    version: u64,
}

/// The outcome of the last write: the version it wrote, or why it failed.
#[derive(Debug, Clone)]
enum Written {
    Version(u64),
    Failed { version: u64, error: Arc<io::Error> },
}

#[derive(Debug)]
struct Shared {
    path: PathBuf,
    live: Mutex<Live>,
    /// Wakes the writer; a wake-up while it writes is kept for after.
    dirty: Notify,
    written: watch::Sender<Written>,
    /// Writes done, for the tests of coalescing.
    writes: std::sync::atomic::AtomicU64,
}

impl Shared {
    fn live(&self) -> MutexGuard<'_, Live> {
        // The map is consistent after every statement, so a panic elsewhere leaves it usable.
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn snapshot(&self) -> (StateFile, u64) {
        let live = self.live();
        (StateFile { groups: live.groups.values().cloned().collect() }, live.version)
    }

    /// Writes the state atomically (temporary file + rename). No fsync: the file only
    /// matters while the machine stays up (a reboot ends the groups anyway).
    fn write(&self, state: &StateFile) -> io::Result<()> {
        self.writes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = self.path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(state).map_err(io::Error::other)?)?;
        std::fs::rename(&tmp, &self.path)
    }
}

/// The process groups we run, mirrored to a state file (see the module docs).
#[derive(Debug)]
pub struct GroupRegistry {
    shared: Arc<Shared>,
    writer: tokio::task::JoinHandle<()>,
}

impl GroupRegistry {
    /// Takes over the state file at `path`: kills the groups a previous owner that is
    /// gone left listed there, waits (up to `wait`) until their processes have exited,
    /// and starts an empty registry on the file. Returns it and the number of groups
    /// killed. A missing file means nothing to kill; an unreadable one is logged and
    /// ignored. Needs a tokio runtime (the writer task runs on it).
    pub async fn take_over(path: &Path, wait: Duration) -> io::Result<(GroupRegistry, usize)> {
        let killed = kill_leftovers(path, wait).await;
        let shared = Arc::new(Shared {
            path: path.to_path_buf(),
            live: Mutex::default(),
            dirty: Notify::new(),
            written: watch::Sender::new(Written::Version(0)),
            writes: Default::default(),
        });
        let first = shared.clone();
        tokio::task::spawn_blocking(move || first.write(&StateFile::default()))
            .await
            .map_err(io::Error::other)?
            .map_err(|e| io::Error::new(e.kind(), format!("cannot write the state file {}: {e}", path.display())))?;
        let writer = tokio::spawn(writer(shared.clone()));
        Ok((GroupRegistry { shared, writer }, killed))
    }

    /// Lists the group `pgid` (its leader has just been started) of `label`. The file
    /// follows in the background ([`flush`](Self::flush) waits for it).
    pub fn add(&self, pgid: u32, label: &str) {
        let start_time = procfs::stat(pgid).map_or(0, |s| s.start_time);
        let mut live = self.shared.live();
        live.groups.insert(pgid, Entry { pgid, start_time, unit: label.to_owned() });
        live.version += 1;
        drop(live);
        self.shared.dirty.notify_one();
    }

    /// Forgets group `pgid` (all its processes are gone). The file follows in the
    /// background.
    pub fn remove(&self, pgid: u32) {
        let mut live = self.shared.live();
        if live.groups.remove(&pgid).is_some() {
            live.version += 1;
            drop(live);
            self.shared.dirty.notify_one();
        }
    }

    /// Waits until the file holds every change made so far; the error of the last
    /// write if it failed (later changes retry it).
    pub async fn flush(&self) -> io::Result<()> {
        let wanted = self.shared.live().version;
        let mut written = self.shared.written.subscribe();
        let outcome = written
            .wait_for(|w| match w {
                Written::Version(v) | Written::Failed { version: v, .. } => *v >= wanted,
            })
            .await
            .map(|w| w.clone());
        match outcome {
            Ok(Written::Version(_)) => Ok(()),
            Ok(Written::Failed { error, .. }) => Err(io::Error::new(error.kind(), error.to_string())),
            Err(_) => Err(io::Error::other("the state file's writer has stopped (is the runtime shutting down?)")),
        }
    }

    #[cfg(test)]
    fn writes(&self) -> u64 {
        self.shared.writes.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for GroupRegistry {
    /// Stops the writer and writes what it has not yet, in place (a small file, once).
    fn drop(&mut self) {
        self.writer.abort();
        let (state, version) = self.shared.snapshot();
        let on_disk = match &*self.shared.written.borrow() {
            Written::Version(v) => *v,
            Written::Failed { .. } => 0,
        };
        if version > on_disk
            && let Err(e) = self.shared.write(&state)
        {
            tracing::warn!(path = %self.shared.path.display(), error = %e,
                "writing the process group state file failed; after a crash, processes may be left running");
        }
    }
}

/// Writes the latest state whenever it changed, one write at a time.
async fn writer(shared: Arc<Shared>) {
    let mut on_disk = 0;
    loop {
        shared.dirty.notified().await;
        let (state, version) = shared.snapshot();
        if version == on_disk {
            continue;
        }
        let job = shared.clone();
        let result = tokio::task::spawn_blocking(move || job.write(&state))
            .await
            .unwrap_or_else(|e| Err(io::Error::other(format!("the state file write did not finish: {e}"))));
        match result {
            Ok(()) => {
                on_disk = version;
                shared.written.send_replace(Written::Version(version));
            }
            Err(e) => {
                tracing::warn!(path = %shared.path.display(), error = %e,
                    "writing the process group state file failed; after a crash, processes may be left running");
                shared.written.send_replace(Written::Failed { version, error: Arc::new(e) });
            }
        }
    }
}

/// Kills the groups listed in the state file at `path` whose members are still there,
/// and waits (up to `wait`) until they have exited. Returns how many it killed.
async fn kill_leftovers(path: &Path, wait: Duration) -> usize {
    let owned = path.to_path_buf();
    let state = match tokio::task::spawn_blocking(move || read_state(&owned)).await {
        Ok(Ok(Some(s))) => s,
        Ok(Ok(None)) => return 0,
        Ok(Err(e)) => {
            tracing::warn!(path = %path.display(), error = %e,
                "ignoring an unreadable process group state file; processes of a previous run may still be running");
            return 0;
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "reading the process group state file failed");
            return 0;
        }
    };
    let mut killed = vec![];
    for entry in &state.groups {
        let ours = procfs::group_members(entry.pgid).iter().any(|(_, st)| st.start_time >= entry.start_time);
        if ours {
            tracing::info!(pgid = entry.pgid, label = %entry.unit, "killing a process group left running by a previous run");
            group::signal_group(entry.pgid, Signal::KILL);
            killed.push(entry.pgid);
        }
    }
    let deadline = tokio::time::Instant::now() + wait;
    while killed.iter().any(|&g| !procfs::group_members(g).is_empty()) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(LEFTOVER_POLL).await;
    }
    killed.len()
}

fn read_state(path: &Path) -> io::Result<Option<StateFile>> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut bytes = vec![];
    file.take(MAX_STATE_BYTES).read_to_end(&mut bytes)?;
    serde_json::from_slice(&bytes).map(Some).map_err(io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on_disk(path: &Path) -> Vec<(u32, String)> {
        read_state(path).unwrap().unwrap().groups.into_iter().map(|e| (e.pgid, e.unit)).collect()
    }

    #[tokio::test]
    async fn changes_reach_the_file_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("units.json");
        let (reg, killed) = GroupRegistry::take_over(&path, Duration::from_secs(1)).await.unwrap();
        assert_eq!(killed, 0);
        assert!(on_disk(&path).is_empty(), "an empty file from the start");
        let me = std::process::id();
        reg.add(me, "a.web.1");
        reg.flush().await.unwrap();
        let state = read_state(&path).unwrap().unwrap();
        assert_eq!(state.groups.len(), 1);
        assert_eq!(state.groups[0].unit, "a.web.1");
        assert!(state.groups[0].start_time > 0);
        reg.remove(me);
        reg.flush().await.unwrap();
        assert!(on_disk(&path).is_empty());
        assert!(!path.with_extension("json.tmp").exists());
    }

    #[tokio::test]
    async fn a_burst_of_changes_is_coalesced_and_the_latest_state_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("units.json");
        let (reg, _) = GroupRegistry::take_over(&path, Duration::from_secs(1)).await.unwrap();
        let before = reg.writes();
        // On a current-thread runtime the writer runs only once the burst is over.
        for pgid in 100..1100 {
            reg.add(pgid, &format!("u{pgid}"));
        }
        for pgid in (100..1100).step_by(2) {
            reg.remove(pgid);
        }
        reg.flush().await.unwrap();
        let groups = on_disk(&path);
        assert_eq!(groups.len(), 500);
        assert!(groups.iter().all(|(pgid, unit)| pgid % 2 == 1 && *unit == format!("u{pgid}")));
        let writes = reg.writes() - before;
        assert_eq!(writes, 1, "1500 changes in a burst are one write");
    }

    #[tokio::test]
    async fn dropping_writes_what_is_pending() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("units.json");
        let (reg, _) = GroupRegistry::take_over(&path, Duration::from_secs(1)).await.unwrap();
        // On a current-thread runtime the writer can't run before the drop.
        reg.add(4242, "pending");
        drop(reg);
        assert_eq!(on_disk(&path), vec![(4242, "pending".to_string())]);
    }

    #[tokio::test]
    async fn a_failed_write_is_reported_by_flush_and_retried_by_the_next_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("units.json");
        let (reg, _) = GroupRegistry::take_over(&path, Duration::from_secs(1)).await.unwrap();
        // A directory where the temporary file goes makes the write fail.
        std::fs::create_dir(path.with_extension("json.tmp")).unwrap();
        reg.add(7, "x");
        assert!(reg.flush().await.is_err());
        std::fs::remove_dir(path.with_extension("json.tmp")).unwrap();
        reg.add(8, "y");
        reg.flush().await.unwrap();
        assert_eq!(on_disk(&path), vec![(7, "x".to_string()), (8, "y".to_string())]);
    }
}
