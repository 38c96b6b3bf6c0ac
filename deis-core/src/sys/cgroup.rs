//! Control groups: one per unit (and per `deis run` session), with its memory, cpu and
//! pids limits, on cgroup v2 or, where the controllers are only mounted as v1
//! hierarchies, on v1.
//!
//! [`CgroupRoot::detect`] finds where this process sits in each hierarchy
//! (`/proc/self/mountinfo` and `/proc/self/cgroup`) and makes a directory of its own
//! below that, `deis-<tag>`, so that several daemons sharing a cgroup (tests, two data
//! directories) never touch each other's units. Every unit cgroup is a child of it:
//!
//! | limit | v2 | v1 |
//! |---|---|---|
//! | memory | `memory.max`, `memory.swap.max = 0` | `memory.limit_in_bytes`, `memory.memsw.limit_in_bytes` (when swap accounting is on) |
//! | cpu | `cpu.max = <quota> 100000` | `cpu.cfs_quota_us` over `cpu.cfs_period_us = 100000` |
//! | pids | `pids.max` | `pids.max` |
//! | cpu time used | `cpu.stat` `usage_usec` | `cpuacct.usage` (ns) |
//! | OOM kills | `memory.events` `oom_kill` | `memory.oom_control` `oom_kill` |
//!
//! A process joins its unit's cgroups between fork and exec by writing `0` to
//! `cgroup.procs` of each, through descriptors opened beforehand
//! ([`UnitCgroup::procs_fds`], used by [`SpawnSpec::cgroup`](super::SpawnSpec::cgroup)),
//! so even its first instruction runs limited, and whatever it forks stays inside:
//! [`UnitCgroup::kill_all`] ends every member, including processes that left the
//! unit's process group or session.
//!
//! On v2 the controllers must be enabled in the parent's `cgroup.subtree_control`,
//! which the kernel refuses while the parent holds processes itself ("no internal
//! processes"): run the daemon in a cgroup of its own with the controllers delegated
//! (systemd: `Delegate=yes`). Where nothing is writable (an unprivileged daemon without
//! delegation) [`CgroupRoot::detect`] says why and limits are not enforced.

use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::fs::{Mode, OFlags};

use super::Signal;

/// Most bytes read of `/proc/self/mountinfo` (a few hundred mounts).
const MAX_MOUNTINFO_BYTES: u64 = 1 << 20;
/// Most bytes read of `/proc/self/cgroup` and of one cgroup control file.
const MAX_CONTROL_BYTES: u64 = 64 << 10;
/// Scheduling period of the cpu quota (100 ms, the kernel's default).
pub const CPU_PERIOD_US: u64 = 100_000;
/// Smallest cpu quota the kernel accepts (1 ms per period).
const MIN_CPU_QUOTA_US: u64 = 1_000;
/// How often [`UnitCgroup::kill_all`] looks again for members.
const KILL_POLL: Duration = Duration::from_millis(10);

/// The controllers deis uses.
const CONTROLLERS: [&str; 4] = ["memory", "cpu", "cpuacct", "pids"];

/// Limits of one unit's cgroup; `None` means no limit of that kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupLimits {
    /// Memory (and, where the kernel accounts it, memory plus swap), in bytes.
    pub memory_bytes: Option<u64>,
    /// CPU in millicores (500 = half a core): the quota per [`CPU_PERIOD_US`].
    pub cpu_millis: Option<u64>,
    /// Most processes and threads at once.
    pub pids_max: Option<u64>,
}

/// Which cgroup hierarchies hold the units, and where in them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupLayout {
    /// The unified hierarchy: one directory for every controller.
    V2 {
        /// The daemon's own directory (`deis-<tag>`) in it.
        base: PathBuf,
    },
    /// One hierarchy per controller (each `None` where it is not mounted or not
    /// writable).
    V1 {
        /// `deis-<tag>` in the memory hierarchy.
        memory: Option<PathBuf>,
        /// ... in the cpu hierarchy.
        cpu: Option<PathBuf>,
        /// ... in the cpuacct hierarchy (often the same as cpu).
        cpuacct: Option<PathBuf>,
        /// ... in the pids hierarchy.
        pids: Option<PathBuf>,
    },
}

/// Where the units' cgroups are made. See the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupRoot {
    layout: CgroupLayout,
}

/// One line of `/proc/self/mountinfo` that mounts a cgroup file system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMount {
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// The cgroup the mount shows as its root (`/` unless mounted from inside a
    /// container's namespace).
    pub root: String,
    /// `None` for cgroup2; the v1 controllers of the hierarchy otherwise.
    pub controllers: Option<Vec<String>>,
}

/// Parses `/proc/self/mountinfo`: the cgroup and cgroup2 mounts. Lines that are not
/// mounts of those are skipped; octal escapes in paths (`\040`) are decoded.
pub fn parse_mountinfo(text: &str) -> Vec<CgroupMount> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let fields: Vec<&str> = left.split(' ').collect();
            let (root, mount_point) = (fields.get(3)?, fields.get(4)?);
            let mut right = right.split(' ');
            let fstype = right.next()?;
            let _source = right.next()?;
            let super_options = right.next().unwrap_or("");
            let controllers = match fstype {
                "cgroup2" => None,
                "cgroup" => Some(
                    super_options
                        .split(',')
                        .filter(|o| CONTROLLERS.contains(o))
                        .map(str::to_string)
                        .collect::<Vec<_>>(),
                ),
                _ => return None,
            };
            Some(CgroupMount { mount_point: PathBuf::from(unescape(mount_point)), root: unescape(root), controllers })
        })
        .collect()
}

/// Decodes mountinfo's `\ooo` octal escapes.
fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal =
            bytes.get(i + 1..i + 4).filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                out.push(d.iter().fold(0u8, |acc, c| acc.wrapping_mul(8).wrapping_add(c - b'0')));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One line of `/proc/self/cgroup`: `<id>:<controllers>:<path>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    /// The controllers of the hierarchy (empty for v2's `0::/path`; `name=systemd`
    /// entries are kept as given).
    pub controllers: Vec<String>,
    /// The cgroup path, from the hierarchy's root.
    pub path: String,
}

/// Parses `/proc/self/cgroup`; malformed lines are skipped.
pub fn parse_proc_cgroup(text: &str) -> Vec<Membership> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let _id = parts.next()?;
            let controllers = parts.next()?;
            let path = parts.next()?;
            if !path.starts_with('/') {
                return None;
            }
            let controllers = controllers.split(',').filter(|c| !c.is_empty()).map(str::to_string).collect();
            Some(Membership { controllers, path: path.to_string() })
        })
        .collect()
}

/// The directory of cgroup `path` in a hierarchy mounted as `mount`, or `None` when the
/// cgroup is not visible below that mount.
fn cgroup_dir(mount: &CgroupMount, path: &str) -> Option<PathBuf> {
    let root = mount.root.trim_end_matches('/');
    let rel = if root.is_empty() { path } else { path.strip_prefix(root)? };
    if !(rel.is_empty() || rel.starts_with('/')) {
        return None;
    }
    Some(mount.mount_point.join(rel.trim_start_matches('/')))
}

/// Reads at most `limit` bytes of `path` as text.
fn read_text(path: &Path, limit: u64) -> io::Result<String> {
    let mut text = String::new();
    fs::File::open(path)?.take(limit).read_to_string(&mut text)?;
    Ok(text)
}

fn write_file(path: &Path, value: &str) -> io::Result<()> {
    let mut f = fs::OpenOptions::new().write(true).open(path)?;
    f.write_all(value.as_bytes())
        .map_err(|e| io::Error::new(e.kind(), format!("writing {value:?} to {}: {e}", path.display())))
}

/// `key value` lines (`memory.events`, `memory.oom_control`, `cpu.stat`): the value of `key`.
fn keyed_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Makes `dir` if missing.
fn ensure_dir(dir: &Path) -> io::Result<()> {
    match fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io::Error::new(e.kind(), format!("cannot create the cgroup {}: {e}", dir.display()))),
    }
}

impl CgroupRoot {
    /// Finds this process's cgroups and makes `deis-<tag>` below them (see the module
    /// docs). `tag` names the daemon's instance (letters, digits, `-`). An `Err` says
    /// why no unit can be limited (no cgroup mounted, nothing writable, v2 controllers
    /// not delegated).
    pub fn detect(tag: &str) -> io::Result<Self> {
        let mountinfo = read_text(Path::new("/proc/self/mountinfo"), MAX_MOUNTINFO_BYTES)?;
        let own = read_text(Path::new("/proc/self/cgroup"), MAX_CONTROL_BYTES)?;
        Self::from_system(&parse_mountinfo(&mountinfo), &parse_proc_cgroup(&own), tag)
    }

    /// [`detect`](Self::detect) from parsed mounts and memberships.
    pub fn from_system(mounts: &[CgroupMount], own: &[Membership], tag: &str) -> io::Result<Self> {
        let name = format!("deis-{tag}");
        let v1_dir = |controller: &str| -> Option<PathBuf> {
            let mount =
                mounts.iter().find(|m| m.controllers.as_ref().is_some_and(|c| c.iter().any(|x| x == controller)))?;
            let member = own.iter().find(|m| m.controllers.iter().any(|c| c == controller))?;
            let dir = cgroup_dir(mount, &member.path)?.join(&name);
            ensure_dir(&dir)
                .inspect_err(|e| tracing::debug!(controller, error = %e, "cgroup v1 controller not usable"))
                .ok()?;
            Some(dir)
        };
        let v1 = CgroupLayout::V1 {
            memory: v1_dir("memory"),
            cpu: v1_dir("cpu"),
            cpuacct: v1_dir("cpuacct"),
            pids: v1_dir("pids"),
        };
        if let CgroupLayout::V1 { memory, cpu, pids, .. } = &v1
            && (memory.is_some() || cpu.is_some() || pids.is_some())
        {
            return Ok(Self { layout: v1 });
        }
        let Some(mount) = mounts.iter().find(|m| m.controllers.is_none()) else {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "no cgroup hierarchy with memory, cpu or pids is mounted",
            ));
        };
        let path = own.iter().find(|m| m.controllers.is_empty()).map_or("/", |m| m.path.as_str());
        let own_dir =
            cgroup_dir(mount, path).ok_or_else(|| io::Error::other("our cgroup is not below the cgroup2 mount"))?;
        let available = read_text(&own_dir.join("cgroup.controllers"), MAX_CONTROL_BYTES)?;
        let wanted: Vec<&str> =
            ["memory", "cpu", "pids"].into_iter().filter(|c| available.split_whitespace().any(|a| a == *c)).collect();
        if wanted.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "cgroup v2 at {} offers none of memory, cpu, pids (cgroup.controllers: {:?})",
                    own_dir.display(),
                    available.trim()
                ),
            ));
        }
        let base = own_dir.join(&name);
        ensure_dir(&base)?;
        // Controllers for our directory's children: from our own cgroup (which holds
        // processes, so the kernel may refuse unless it is the root), then for the
        // units below our directory.
        let enable: String = wanted.iter().map(|c| format!("+{c} ")).collect();
        write_file(&own_dir.join("cgroup.subtree_control"), enable.trim_end()).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("{e}; run deisd in a cgroup of its own with the controllers delegated (systemd: Delegate=yes)"),
            )
        })?;
        write_file(&base.join("cgroup.subtree_control"), enable.trim_end())?;
        Ok(Self { layout: CgroupLayout::V2 { base } })
    }

    /// A root over an explicit layout (tests, or integrators who manage cgroups).
    pub fn with_layout(layout: CgroupLayout) -> Self {
        Self { layout }
    }

    /// The layout.
    pub fn layout(&self) -> &CgroupLayout {
        &self.layout
    }

    /// `v2` or `v1`, for messages.
    pub fn version(&self) -> &'static str {
        match self.layout {
            CgroupLayout::V2 { .. } => "v2",
            CgroupLayout::V1 { .. } => "v1",
        }
    }

    /// The daemon's own directories, one per hierarchy.
    fn bases(&self) -> Vec<PathBuf> {
        match &self.layout {
            CgroupLayout::V2 { base } => vec![base.clone()],
            CgroupLayout::V1 { memory, cpu, cpuacct, pids } => {
                let mut dirs: Vec<PathBuf> = [memory, cpu, cpuacct, pids].into_iter().flatten().cloned().collect();
                dirs.dedup();
                dirs
            }
        }
    }

    /// Kills the processes of every unit cgroup left below our directories (by a
    /// predecessor that crashed) and removes those cgroups. Returns how many processes
    /// were killed.
    pub fn clear_leftovers(&self, wait: Duration) -> usize {
        let mut killed = 0;
        for base in self.bases() {
            let Ok(entries) = fs::read_dir(&base) else { continue };
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    let cg = UnitCgroup {
                        dirs: vec![entry.path()],
                        layout_v2: matches!(self.layout, CgroupLayout::V2 { .. }),
                    };
                    killed += cg.kill_all(wait);
                    cg.remove();
                }
            }
        }
        killed
    }

    /// Removes our own directories if no unit cgroup is left in them (at shutdown).
    pub fn remove_if_unused(&self) {
        for base in self.bases() {
            // Fails, as it should, while a unit's cgroup is still inside.
            let _ = fs::remove_dir(&base);
        }
    }

    /// Makes the cgroup `name` (one path component) for a unit, with `limits` written.
    /// A cgroup of that name left over is emptied and reused.
    pub fn create(&self, name: &str, limits: &CgroupLimits) -> io::Result<UnitCgroup> {
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{name:?} is not a cgroup name")));
        }
        match &self.layout {
            CgroupLayout::V2 { base } => {
                let dir = base.join(name);
                ensure_dir(&dir)?;
                let cg = UnitCgroup { dirs: vec![dir.clone()], layout_v2: true };
                let written = (|| {
                    if let Some(m) = limits.memory_bytes {
                        write_file(&dir.join("memory.max"), &m.to_string())?;
                        // No swap: the limit is the limit.
                        if dir.join("memory.swap.max").exists() {
                            write_file(&dir.join("memory.swap.max"), "0")?;
                        }
                    }
                    if let Some(c) = limits.cpu_millis {
                        write_file(&dir.join("cpu.max"), &format!("{} {CPU_PERIOD_US}", cpu_quota_us(c)))?;
                    }
                    if let Some(p) = limits.pids_max {
                        write_file(&dir.join("pids.max"), &p.to_string())?;
                    }
                    Ok(())
                })();
                written.map(|()| cg)
            }
            CgroupLayout::V1 { memory, cpu, cpuacct, pids } => {
                let mut dirs = vec![];
                let mut make = |base: &Option<PathBuf>| -> io::Result<Option<PathBuf>> {
                    let Some(base) = base else { return Ok(None) };
                    let dir = base.join(name);
                    if !dirs.contains(&dir) {
                        ensure_dir(&dir)?;
                        dirs.push(dir.clone());
                    }
                    Ok(Some(dir))
                };
                let (mem, cpu, _acct, pids) = (make(memory)?, make(cpu)?, make(cpuacct)?, make(pids)?);
                let cg = UnitCgroup { dirs, layout_v2: false };
                let written = (|| {
                    if let (Some(dir), Some(m)) = (&mem, limits.memory_bytes) {
                        write_file(&dir.join("memory.limit_in_bytes"), &m.to_string())?;
                        // With swap accounting, memory+swap gets the same limit: no
                        // swapping past it.
                        let memsw = dir.join("memory.memsw.limit_in_bytes");
                        if memsw.exists() {
                            write_file(&memsw, &m.to_string())?;
                        }
                    }
                    if let (Some(dir), Some(c)) = (&cpu, limits.cpu_millis) {
                        write_file(&dir.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
                        write_file(&dir.join("cpu.cfs_quota_us"), &cpu_quota_us(c).to_string())?;
                    }
                    if let (Some(dir), Some(p)) = (&pids, limits.pids_max) {
                        write_file(&dir.join("pids.max"), &p.to_string())?;
                    }
                    Ok(())
                })();
                written.map(|()| cg)
            }
        }
    }
}

/// The quota, in µs per [`CPU_PERIOD_US`], of `millis` millicores.
pub fn cpu_quota_us(millis: u64) -> u64 {
    millis.saturating_mul(CPU_PERIOD_US / 1000).max(MIN_CPU_QUOTA_US)
}

/// The cgroup of one unit (a directory per hierarchy). Made by [`CgroupRoot::create`].
///
/// Dropping it leaves the directories; call [`remove`](Self::remove) once its
/// processes are gone.
#[derive(Debug)]
pub struct UnitCgroup {
    dirs: Vec<PathBuf>,
    layout_v2: bool,
}

impl UnitCgroup {
    /// The cgroup's directories (one for v2, one per hierarchy for v1).
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// `cgroup.procs` of each directory, opened for writing (close-on-exec): what a
    /// child writes `0` to before exec, to join.
    pub fn procs_fds(&self) -> io::Result<Vec<OwnedFd>> {
        self.dirs
            .iter()
            .map(|d| {
                let path = d.join("cgroup.procs");
                rustix::fs::open(&path, OFlags::WRONLY | OFlags::CLOEXEC, Mode::empty()).map_err(|e| {
                    io::Error::new(io::Error::from(e).kind(), format!("cannot open {}: {e}", path.display()))
                })
            })
            .collect()
    }

    /// The file `name` in the first directory that has it.
    fn control(&self, name: &str) -> Option<PathBuf> {
        self.dirs.iter().map(|d| d.join(name)).find(|p| p.exists())
    }

    /// Pids of the processes in the cgroup (every hierarchy's, without duplicates).
    pub fn pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self
            .dirs
            .iter()
            .filter_map(|d| read_text(&d.join("cgroup.procs"), MAX_CONTROL_BYTES * 16).ok())
            .flat_map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect::<Vec<u32>>())
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Whether no process is left in it.
    pub fn is_empty(&self) -> bool {
        self.pids().is_empty()
    }

    /// Sends `signal` to every process in it.
    pub fn signal_all(&self, signal: Signal) {
        if self.layout_v2
            && signal == Signal::KILL
            && let Some(kill) = self.control("cgroup.kill")
            && write_file(&kill, "1").is_ok()
        {
            return;
        }
        for pid in self.pids() {
            if let Some(p) = super::group_pid(pid) {
                // Gone meanwhile is fine.
                let _ = rustix::process::kill_process(p, signal);
            }
        }
    }

    /// Kills every process in it, again and again while new ones appear (a fork bomb
    /// forks faster than one pass), until it is empty or `wait` is over. Returns how
    /// many kills were sent.
    pub fn kill_all(&self, wait: Duration) -> usize {
        let deadline = std::time::Instant::now() + wait;
        let mut sent = 0;
        loop {
            let pids = self.pids();
            if pids.is_empty() {
                return sent;
            }
            sent += pids.len();
            self.signal_all(Signal::KILL);
            if std::time::Instant::now() >= deadline {
                tracing::warn!(cgroup = ?self.dirs, left = pids.len(), "processes of a unit's cgroup survive SIGKILL");
                return sent;
            }
            std::thread::sleep(KILL_POLL);
        }
    }

    /// How often the kernel's OOM killer killed a process of it.
    pub fn oom_kills(&self) -> u64 {
        let (file, key) =
            if self.layout_v2 { ("memory.events", "oom_kill") } else { ("memory.oom_control", "oom_kill") };
        self.control(file)
            .and_then(|p| read_text(&p, MAX_CONTROL_BYTES).ok())
            .and_then(|t| keyed_value(&t, key))
            .unwrap_or(0)
    }

    /// CPU time used by its processes so far, if accounted.
    pub fn cpu_usage(&self) -> Option<Duration> {
        if self.layout_v2 {
            let text = read_text(&self.control("cpu.stat")?, MAX_CONTROL_BYTES).ok()?;
            return keyed_value(&text, "usage_usec").map(Duration::from_micros);
        }
        let text = read_text(&self.control("cpuacct.usage")?, MAX_CONTROL_BYTES).ok()?;
        text.trim().parse().ok().map(Duration::from_nanos)
    }

    /// Removes the directories (best effort: a cgroup with processes stays, and is
    /// logged).
    pub fn remove(&self) {
        for dir in &self.dirs {
            match fs::remove_dir(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(cgroup = %dir.display(), error = %e, "cannot remove a unit's cgroup"),
            }
        }
    }
}

/// The cgroup directories of process `pid`, one per hierarchy holding a controller deis
/// uses (or v2's), as `(controllers, directory)`: for tests and tools that look at a
/// unit from outside.
pub fn cgroups_of(pid: u32) -> io::Result<Vec<(Vec<String>, PathBuf)>> {
    let mounts = parse_mountinfo(&read_text(Path::new("/proc/self/mountinfo"), MAX_MOUNTINFO_BYTES)?);
    let own = parse_proc_cgroup(&read_text(Path::new(&format!("/proc/{pid}/cgroup")), MAX_CONTROL_BYTES)?);
    Ok(own
        .into_iter()
        .filter_map(|m| {
            let mount = mounts.iter().find(|mt| match &mt.controllers {
                None => m.controllers.is_empty(),
                Some(c) => !c.is_empty() && m.controllers.iter().any(|x| c.contains(x)),
            })?;
            Some((m.controllers.clone(), cgroup_dir(mount, &m.path)?))
        })
        .collect())
}

#[cfg(test)]
mod tests;
