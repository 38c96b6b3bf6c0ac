//! The unit collector: cpu, memory and restarts of each unit. Local units are read from
//! their cgroup (v2 `cpu.stat`/`memory.current`, v1 `cpuacct.usage`/
//! `memory.usage_in_bytes`) when the unit has one of its own, else from `/proc` (the
//! unit's process group: cpu times and resident memory of its members).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use deis_core::store::Store;
use deis_core::{AppName, Scheduler, Unit};
use serde::Serialize;

use super::family::{Kind, MetricFamily};
use super::host::{read_capped, seconds_per_tick};

/// Raw usage of one unit.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RawUsage {
    /// Cpu time used so far, in seconds.
    pub cpu_seconds: f64,
    /// Memory in use, in bytes.
    pub memory_bytes: u64,
}

/// Where a unit's usage comes from.
#[async_trait::async_trait]
pub trait UnitStatsSource: Send + Sync + std::fmt::Debug {
    /// Usage of those of `units` it can read, by unit name.
    async fn usage(&self, units: &[Unit]) -> HashMap<String, RawUsage>;
}

/// A unit's usage as shown by `deis ps`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UnitUsage {
    /// App.
    pub app: String,
    /// Process type.
    pub proc_type: String,
    /// Cpu time used, seconds.
    pub cpu_seconds: f64,
    /// Cpu use since the previous reading, in percent of one core (`None` at the first).
    pub cpu_percent: Option<f64>,
    /// Memory in use, bytes.
    pub memory_bytes: u64,
    /// Restarts after crashes.
    pub restarts: u32,
}

/// The cgroup path of `pid` from `/proc/<pid>/cgroup` text: `(v2 path, v1 cpuacct
/// path, v1 memory path)`.
pub fn parse_proc_cgroup(text: &str) -> (Option<String>, Option<String>, Option<String>) {
    let (mut v2, mut cpu, mut mem) = (None, None, None);
    for line in text.lines() {
        let mut f = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (f.next(), f.next(), f.next()) else { continue };
        if controllers.is_empty() {
            v2 = Some(path.to_string());
        }
        for c in controllers.split(',') {
            match c {
                "cpuacct" => cpu = Some(path.to_string()),
                "memory" => mem = Some(path.to_string()),
                _ => {}
            }
        }
    }
    (v2, cpu, mem)
}

/// `usage_usec` of a cgroup v2 `cpu.stat`, in seconds.
pub fn parse_cpu_stat(text: &str) -> Option<f64> {
    let usec: u64 = text.lines().find_map(|l| l.strip_prefix("usage_usec ")?.trim().parse().ok())?;
    Some(usec as f64 / 1e6)
}

/// `(utime + stime in ticks, resident pages)` of a `/proc/<pid>/stat` line. The
/// command may hold spaces and parentheses: fields are counted after the last `)`.
pub fn parse_pid_stat(text: &str) -> Option<(u64, u64)> {
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the command: state is field 3, utime 14, stime 15, rss 24 (1-based).
    let at = |n: usize| f.get(n - 3)?.parse::<u64>().ok();
    Some((at(14)?.checked_add(at(15)?)?, at(24)?))
}

/// The value of `DEIS_UNIT` in an `environ` file's bytes.
pub fn unit_from_environ(environ: &[u8]) -> Option<String> {
    environ
        .split(|&b| b == 0)
        .find_map(|kv| std::str::from_utf8(kv.strip_prefix(b"DEIS_UNIT=")?).ok().map(String::from))
}

/// Units running on this machine: process group leaders carrying `DEIS_UNIT=<app>.<type>.<n>`.
pub fn discover_units(proc_root: &Path) -> Vec<Unit> {
    use std::io::Read;
    let mut out = Vec::new();
    for entry in std::fs::read_dir(proc_root).into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        // Group leaders only: a unit's group is led by its first process.
        let leader = read_capped(&entry.path().join("stat"))
            .as_deref()
            .and_then(deis_core::sys::procfs::parse_stat)
            .is_some_and(|st| st.pgrp == pid && st.is_live());
        if !leader {
            continue;
        }
        let mut environ = Vec::new();
        let Ok(file) = std::fs::File::open(entry.path().join("environ")) else { continue };
        if file.take(256 * 1024).read_to_end(&mut environ).is_err() {
            continue;
        }
        let Some(name) = unit_from_environ(&environ) else { continue };
        let mut parts = name.rsplitn(3, '.');
        let (Some(n), Some(ty), Some(app)) = (parts.next(), parts.next(), parts.next()) else { continue };
        let (Ok(app), Ok(proc_type), Ok(number)) = (AppName::new(app), deis_core::ProcessType::new(ty), n.parse())
        else {
            continue;
        };
        out.push(Unit {
            name: name.clone(),
            instance: 0,
            app,
            proc_type,
            number,
            release: 0,
            state: deis_core::UnitState::Up,
            address: None,
            node: String::new(),
            started: None,
            restarts: 0,
            pid: Some(pid),
        });
    }
    out
}

/// Reads local units' usage from cgroups and `/proc`.
#[derive(Debug, Clone)]
pub struct LocalUnitStats {
    /// Usually `/proc`.
    pub proc_root: PathBuf,
    /// Usually `/sys/fs/cgroup`.
    pub cgroup_root: PathBuf,
}

impl Default for LocalUnitStats {
    fn default() -> Self {
        Self { proc_root: "/proc".into(), cgroup_root: "/sys/fs/cgroup".into() }
    }
}

/// Whether a cgroup path is the unit's own (named `<unit>` or `<unit>.<n>`), rather
/// than one it shares with us.
fn owned_by(path: &str, unit: &str) -> bool {
    let last = path.rsplit('/').next().unwrap_or_default();
    last == unit || last.strip_prefix(unit).is_some_and(|r| r.starts_with('.') || r.starts_with('-'))
}

impl LocalUnitStats {
    fn read_u64(&self, path: &Path) -> Option<u64> {
        read_capped(path)?.trim().parse().ok()
    }

    fn read_cgroup(&self, pid: u32, unit: &str) -> Option<RawUsage> {
        let text = read_capped(&self.proc_root.join(pid.to_string()).join("cgroup"))?;
        let (v2, cpu, mem) = parse_proc_cgroup(&text);
        if let (Some(cpu), Some(mem)) = (&cpu, &mem)
            && owned_by(cpu, unit)
            && owned_by(mem, unit)
        {
            let rel = |p: &str| p.trim_start_matches('/').to_string();
            let cpu_ns = ["cpuacct", "cpu,cpuacct"]
                .iter()
                .find_map(|d| self.read_u64(&self.cgroup_root.join(d).join(rel(cpu)).join("cpuacct.usage")))?;
            let memory =
                self.read_u64(&self.cgroup_root.join("memory").join(rel(mem)).join("memory.usage_in_bytes"))?;
            return Some(RawUsage { cpu_seconds: cpu_ns as f64 / 1e9, memory_bytes: memory });
        }
        let v2 = v2.filter(|p| owned_by(p, unit))?;
        let rel = v2.trim_start_matches('/');
        // Pure v2 mounts at the root; hybrid systems at `unified/`.
        let dir = [self.cgroup_root.join(rel), self.cgroup_root.join("unified").join(rel)]
            .into_iter()
            .find(|d| d.join("cpu.stat").exists())?;
        let cpu = parse_cpu_stat(&read_capped(&dir.join("cpu.stat"))?)?;
        Some(RawUsage { cpu_seconds: cpu, memory_bytes: self.read_u64(&dir.join("memory.current"))? })
    }

    fn read_proc_group(&self, pgid: u32) -> Option<RawUsage> {
        // SAFETY: sysconf reads a constant of the system and has no preconditions.
        let page = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let tick = seconds_per_tick();
        let mut members: Vec<u32> =
            deis_core::sys::procfs::group_members(pgid).into_iter().map(|(pid, _)| pid).collect();
        if members.is_empty() {
            members.push(pgid);
        }
        let mut usage = RawUsage::default();
        let mut any = false;
        for pid in members {
            if let Some((ticks, rss)) =
                read_capped(&self.proc_root.join(pid.to_string()).join("stat")).as_deref().and_then(parse_pid_stat)
            {
                any = true;
                usage.cpu_seconds += ticks as f64 * tick;
                usage.memory_bytes += rss * page;
            }
        }
        any.then_some(usage)
    }
}

#[async_trait::async_trait]
impl UnitStatsSource for LocalUnitStats {
    async fn usage(&self, units: &[Unit]) -> HashMap<String, RawUsage> {
        let this = self.clone();
        let wanted: Vec<(String, u32)> = units.iter().filter_map(|u| Some((u.name.clone(), u.pid?))).collect();
        let read = move || {
            wanted
                .into_iter()
                .filter_map(|(name, pid)| {
                    let usage = this.read_cgroup(pid, &name).or_else(|| this.read_proc_group(pid))?;
                    Some((name, usage))
                })
                .collect()
        };
        tokio::task::spawn_blocking(read).await.unwrap_or_default()
    }
}

/// Keeps the latest usage of every unit of every app, refreshed by
/// [`UnitCollector::refresh`] (the telemetry loop calls it each interval).
#[derive(Debug)]
pub struct UnitCollector {
    units: UnitList,
    source: Arc<dyn UnitStatsSource>,
    state: Mutex<UnitState>,
}

/// Where the units come from.
#[derive(Debug)]
enum UnitList {
    /// The apps of the store, the units the scheduler runs for them.
    Platform { store: Arc<dyn Store>, scheduler: Arc<dyn Scheduler> },
    /// The processes of this machine that carry `DEIS_UNIT` (group leaders): what the
    /// `deis-telemetry` agent sees on a host without deisd.
    LocalProcesses { proc_root: PathBuf },
}

#[derive(Debug, Default)]
struct UnitState {
    latest: HashMap<String, UnitUsage>,
    previous: HashMap<String, (f64, Instant)>,
}

impl UnitCollector {
    /// A collector of the units `scheduler` runs for the apps of `store`.
    pub fn new(store: Arc<dyn Store>, scheduler: Arc<dyn Scheduler>, source: Arc<dyn UnitStatsSource>) -> Self {
        Self { units: UnitList::Platform { store, scheduler }, source, state: Mutex::default() }
    }

    /// A collector of the units running on this machine, found in `/proc` by their
    /// `DEIS_UNIT` variable (for hosts that run units but no deisd).
    pub fn local_processes(proc_root: impl Into<PathBuf>) -> Self {
        Self {
            units: UnitList::LocalProcesses { proc_root: proc_root.into() },
            source: Arc::new(LocalUnitStats::default()),
            state: Mutex::default(),
        }
    }

    async fn apps(store: &Arc<dyn Store>) -> Vec<AppName> {
        let listing = match store.list("apps/").await {
            Ok(l) => l,
            Err(e) => {
                tracing::debug!(error = %e, "telemetry: listing apps failed");
                return Vec::new();
            }
        };
        listing.kvs.iter().filter_map(|kv| AppName::new(kv.key.rsplit('/').next()?).ok()).collect()
    }

    /// Reads every unit's usage now.
    pub async fn refresh(&self) {
        let units = match &self.units {
            UnitList::Platform { store, scheduler } => {
                let mut units = Vec::new();
                for app in Self::apps(store).await {
                    if let Ok(u) = scheduler.units(&app).await {
                        units.extend(u);
                    }
                }
                units
            }
            UnitList::LocalProcesses { proc_root } => {
                let root = proc_root.clone();
                tokio::task::spawn_blocking(move || discover_units(&root)).await.unwrap_or_default()
            }
        };
        let usage = self.source.usage(&units).await;
        let now = Instant::now();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut latest = HashMap::new();
        let mut previous = HashMap::new();
        for u in &units {
            let Some(raw) = usage.get(&u.name) else { continue };
            let cpu_percent = state.previous.get(&u.name).and_then(|(cpu, at)| {
                let secs = now.duration_since(*at).as_secs_f64();
                (secs > 0.0 && raw.cpu_seconds >= *cpu).then(|| (raw.cpu_seconds - cpu) / secs * 100.0)
            });
            previous.insert(u.name.clone(), (raw.cpu_seconds, now));
            latest.insert(
                u.name.clone(),
                UnitUsage {
                    app: u.app.to_string(),
                    proc_type: u.proc_type.to_string(),
                    cpu_seconds: raw.cpu_seconds,
                    cpu_percent,
                    memory_bytes: raw.memory_bytes,
                    restarts: u.restarts,
                },
            );
        }
        *state = UnitState { latest, previous };
    }

    /// The latest usage of a unit.
    pub fn usage(&self, unit: &str) -> Option<UnitUsage> {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).latest.get(unit).cloned()
    }

    /// The latest usage of every unit, by unit name.
    pub fn all(&self) -> HashMap<String, UnitUsage> {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).latest.clone()
    }

    /// The latest readings as metric families.
    pub fn families(&self) -> Vec<MetricFamily> {
        let mut cpu = MetricFamily::new("deis_unit_cpu_seconds", "Cpu time used by a unit.", Kind::Counter);
        let mut mem = MetricFamily::new("deis_unit_memory_bytes", "Memory in use by a unit.", Kind::Gauge);
        let mut restarts = MetricFamily::new("deis_unit_restarts", "Restarts of a unit after crashes.", Kind::Gauge);
        let mut all: Vec<_> = self.all().into_iter().collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        for (unit, u) in all {
            let labels = [("app", u.app.as_str()), ("type", u.proc_type.as_str()), ("unit", unit.as_str())];
            cpu.push(&labels, u.cpu_seconds);
            mem.push(&labels, u.memory_bytes as f64);
            restarts.push(&labels, f64::from(u.restarts));
        }
        vec![cpu, mem, restarts]
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn parses_cgroup_and_stat_files() {
        let v1 = "12:memory:/deis/hello.web.1.3\n4:cpu,cpuacct:/deis/hello.web.1.3\n1:name=systemd:/\n0::/\n";
        let (v2, cpu, mem) = parse_proc_cgroup(v1);
        assert_eq!(
            (v2.as_deref(), cpu.as_deref(), mem.as_deref()),
            (Some("/"), Some("/deis/hello.web.1.3"), Some("/deis/hello.web.1.3"))
        );
        assert!(owned_by("/deis/hello.web.1.3", "hello.web.1"));
        assert!(!owned_by("/deis/hello.web.10.3", "hello.web.1"));
        assert!(!owned_by("/", "hello.web.1"));
        assert_eq!(parse_cpu_stat("usage_usec 2500000\nuser_usec 1\n"), Some(2.5));
        let stat =
            "42 (my (odd) app) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 100 1000000 250 18446744073709551615";
        assert_eq!(parse_pid_stat(stat), Some((10, 250)));
        assert_eq!(parse_pid_stat("42 (x) S 1"), None);
    }

    #[tokio::test]
    async fn reads_a_live_process_group() {
        use std::os::unix::process::CommandExt as _;
        // A busy child of its own group: its cpu time shows.
        let mut child = std::process::Command::new("sh")
            .args(["-c", "i=0; while [ $i -lt 3000000 ]; do i=$((i+1)); done; sleep 30"])
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = child.id();
        let unit = Unit {
            name: "t.web.1".into(),
            instance: 1,
            app: AppName::new("t").unwrap(),
            proc_type: deis_core::ProcessType::new("web").unwrap(),
            number: 1,
            release: 1,
            state: deis_core::UnitState::Up,
            address: None,
            node: "n".into(),
            started: None,
            restarts: 0,
            pid: Some(pid),
        };
        let source = LocalUnitStats::default();
        let deadline = Instant::now() + std::time::Duration::from_secs(30);
        let usage = loop {
            let u = source.usage(std::slice::from_ref(&unit)).await;
            let u = u.get("t.web.1").copied().unwrap();
            if u.cpu_seconds > 0.05 || Instant::now() > deadline {
                break u;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        };
        let _ = child.kill();
        let _ = child.wait();
        assert!(usage.cpu_seconds > 0.05, "{usage:?}");
        assert!(usage.memory_bytes > 100_000, "{usage:?}");
    }

    proptest! {
        #[test]
        fn parsers_take_any_text(s in "\\PC{0,300}") {
            let _ = parse_proc_cgroup(&s);
            let _ = parse_cpu_stat(&s);
            let _ = parse_pid_stat(&s);
        }
    }
}
