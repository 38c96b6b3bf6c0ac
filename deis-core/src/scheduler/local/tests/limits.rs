//! Limits that hold, on this machine's cgroups (as root): memory past the limit kills
//! the unit with an "out of memory" crash line and it restarts; a fork bomb stays in
//! its unit; a cpu quota holds.

use std::time::{Duration, Instant};

use super::{Harness, WEB, all_up, config, wait_units};
use crate::model::UnitState;
use crate::model::limits::Resources;
use crate::scheduler::local::LocalScheduler;
use crate::scheduler::{Scheduler, UnitEvent};
use crate::sys::cgroup::cgroups_of;
use crate::testing::app_name;
use deis_test_support::http;

/// Cgroups need root here (no delegation): say so rather than pass silently elsewhere.
fn root() -> bool {
    let root = crate::sys::isolation::running_as_root();
    if !root {
        eprintln!("skipped: limits are enforced through cgroups, which need root on this machine");
    }
    root
}

/// The directory of the unit process `pid` in the hierarchy holding `controller`.
fn cgroup_dir(pid: u32, controller: &str) -> std::path::PathBuf {
    let dirs = cgroups_of(pid).unwrap();
    dirs.iter()
        .find(|(c, _)| c.iter().any(|c| c == controller) || c.is_empty() && controller == "unified")
        .map(|(_, d)| d.clone())
        .unwrap_or_else(|| panic!("{pid} has no {controller} cgroup: {dirs:?}"))
}

fn read(path: std::path::PathBuf) -> String {
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_past_its_memory_limit_is_killed_as_out_of_memory_and_restarts() {
    if !root() {
        return;
    }
    let state = tempfile::tempdir().unwrap();
    let s = LocalScheduler::new(config(state.path())).await.unwrap();
    let mut events = s.subscribe();
    let h = Harness::new();
    let hog = "python3 -c 'import time; b = bytearray(256 << 20); time.sleep(600)'";
    let mut spec = h.spec(&app_name("hog"), 1, &[("worker", hog, 1)]);
    spec.processes.get_mut("worker").unwrap().limits = Resources { cpu_millis: 0, memory_bytes: 48 << 20 };
    s.apply(spec).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let crash: UnitEvent = loop {
        let ev = tokio::time::timeout_at(deadline, events.recv()).await.expect("the hog crashes").unwrap();
        if ev.unit.state == UnitState::Crashed {
            break ev;
        }
    };
    let reason = crash.reason.unwrap_or_default();
    assert!(reason.contains("out of memory (limit 48M)"), "crash line: {reason:?}");
    // It comes back (and is killed again): restarts with backoff.
    wait_units(&s, "hog", |u| u.iter().any(|u| u.restarts >= 1)).await;
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_bomb_stays_inside_its_unit() {
    if !root() {
        return;
    }
    let state = tempfile::tempdir().unwrap();
    let mut cfg = config(state.path());
    cfg.isolation.pids_max = Some(64);
    let s = LocalScheduler::new(cfg).await.unwrap();
    let h = Harness::new();
    s.apply(h.spec(&app_name("calm"), 1, &[("web", WEB, 1)])).await.unwrap();
    let calm = wait_units(&s, "calm", all_up(1)).await;
    // Kind to a shared machine: the bomb gets a fifth of a core.
    let bomb = "f() { f | f & }; f; exec sleep 600";
    let mut spec = h.spec(&app_name("bomb"), 1, &[("worker", bomb, 1)]);
    spec.processes.get_mut("worker").unwrap().limits = Resources { cpu_millis: 200, memory_bytes: 256 << 20 };
    s.apply(spec).await.unwrap();
    let bombed = wait_units(&s, "bomb", |u| u.len() == 1 && u[0].pid.is_some()).await;
    let pids_dir = cgroup_dir(bombed[0].pid.unwrap(), "pids");
    assert_eq!(read(pids_dir.join("pids.max")), "64");
    // It reaches its ceiling and stays under it...
    let deadline = Instant::now() + Duration::from_secs(20);
    while read(pids_dir.join("pids.current")).parse::<u64>().unwrap() < 32 {
        assert!(Instant::now() < deadline, "the bomb never grew: {}", read(pids_dir.join("pids.current")));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..20 {
        assert!(read(pids_dir.join("pids.current")).parse::<u64>().unwrap() <= 64);
        // ... while the other app still answers, and the scheduler too.
        let reply = http::get_async(calm[0].address.unwrap(), "/").await.expect("the calm app answers");
        assert_eq!(reply.body, "calm.web.1 hello from v1\n");
        s.units(&app_name("calm")).await.unwrap();
    }
    s.remove(&app_name("bomb")).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while pids_dir.exists() && read(pids_dir.join("cgroup.procs")).lines().count() > 0 {
        assert!(Instant::now() < deadline, "the bomb outlived its unit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_loop_limited_to_half_a_cpu_uses_about_half_a_core() {
    if !root() {
        return;
    }
    let state = tempfile::tempdir().unwrap();
    let s = LocalScheduler::new(config(state.path())).await.unwrap();
    let h = Harness::new();
    let mut spec = h.spec(&app_name("busy"), 1, &[("worker", "while :; do :; done", 1)]);
    spec.processes.get_mut("worker").unwrap().limits = Resources { cpu_millis: 500, memory_bytes: 0 };
    s.apply(spec).await.unwrap();
    let units = wait_units(&s, "busy", |u| u.len() == 1 && u[0].pid.is_some()).await;
    let pid = units[0].pid.unwrap();
    let usage = || -> Duration {
        match cgroups_of(pid).unwrap().iter().find(|(c, _)| c.iter().any(|c| c == "cpuacct")) {
            Some((_, dir)) => Duration::from_nanos(read(dir.join("cpuacct.usage")).parse().unwrap()),
            None => {
                let stat = read(cgroup_dir(pid, "unified").join("cpu.stat"));
                let usec = stat.lines().find_map(|l| l.strip_prefix("usage_usec ")).unwrap();
                Duration::from_micros(usec.parse().unwrap())
            }
        }
    };
    // An unlimited busy loop next to it tells how much cpu one process could get in
    // the same window (the machine may be busy with other work).
    let mut reference = std::process::Command::new("sh").args(["-c", "while :; do :; done"]).spawn().unwrap();
    let ticks = |pid: u32| -> Duration {
        let stat = read(format!("/proc/{pid}/stat").into());
        let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
        let (utime, stime): (u64, u64) = (fields[11].parse().unwrap(), fields[12].parse().unwrap());
        Duration::from_millis((utime + stime) * 10) // USER_HZ is 100 on Linux
    };
    // A measurement window (not a wait for a condition): cpu time over wall time.
    let (t0, u0, r0) = (Instant::now(), usage(), ticks(reference.id()));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let wall = t0.elapsed().as_secs_f64();
    let share = (usage() - u0).as_secs_f64() / wall;
    let free = (ticks(reference.id()) - r0).as_secs_f64() / wall;
    reference.kill().unwrap();
    reference.wait().unwrap();
    assert!(share <= 0.6, "a 500m unit used {share:.2} of a core");
    // Where a process could get most of a core, the limited one gets about half.
    if free >= 0.8 {
        assert!(share >= 0.3, "a 500m unit used only {share:.2} of a core while one could use {free:.2}");
    }
    s.shutdown().await;
}
