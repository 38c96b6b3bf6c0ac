//! The supervisor's rules on a fake process runtime, with paused time: fast and exact.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{broadcast, oneshot};
use tokio::time::Instant;

use super::super::probe::ProbeTarget;
use super::super::process::{Ended, ExitInfo, GroupSignal, Launch, ProcessRuntime, Spawned};
use super::super::*;
use crate::model::limits::Resources;
use crate::model::{ProbeAction, UnitState};
use crate::scheduler::ProcessSpec;
use crate::testing::{app_name, process_type};

/// Processes that exist only in memory. Commands containing `never-ready` never pass a
/// probe; `ignore-term` ignore SIGTERM; `unstartable` fail to spawn; `oom` end as the
/// OOM killer's victims.
#[derive(Debug, Default)]
struct Fake {
    procs: Mutex<BTreeMap<u32, FakeProc>>,
    /// Processes that keep running but fail every probe from now on.
    sick: Mutex<std::collections::BTreeSet<u32>>,
}

#[derive(Debug)]
struct FakeProc {
    launch_pid: u32,
    launch: Launch,
    exit: Option<oneshot::Sender<ExitInfo>>,
    signals: Vec<GroupSignal>,
}

impl Fake {
    fn end(&self, pid: u32, info: ExitInfo) {
        if let Some(tx) = self.procs.lock().unwrap().get_mut(&pid).and_then(|p| p.exit.take()) {
            let _ = tx.send(info);
        }
    }
    fn alive(&self) -> Vec<(u32, String)> {
        let procs = self.procs.lock().unwrap();
        procs.iter().filter(|(_, p)| p.exit.is_some()).map(|(pid, p)| (*pid, p.launch.unit.clone())).collect()
    }
    fn spawned_with(&self, needle: &str) -> usize {
        self.procs.lock().unwrap().values().filter(|p| p.launch.command.contains(needle)).count()
    }
    fn signals(&self, pid: u32) -> Vec<GroupSignal> {
        self.procs.lock().unwrap()[&pid].signals.clone()
    }
}

#[async_trait]
impl ProcessRuntime for Fake {
    fn spawn(&self, launch: &Launch) -> io::Result<Spawned> {
        if launch.command.contains("unstartable") {
            return Err(io::Error::other("cannot start"));
        }
        let mut procs = self.procs.lock().unwrap();
        let pid = 1000 + procs.len() as u32;
        let (tx, exited) = oneshot::channel();
        procs.insert(pid, FakeProc { launch_pid: pid, launch: launch.clone(), exit: Some(tx), signals: vec![] });
        Ok(Spawned { pid, process_id: Some(pid), node: None, ip: None, port: None, stdout: None, stderr: None, exited })
    }
    fn signal_group(&self, pgid: u32, signal: GroupSignal) {
        let mut procs = self.procs.lock().unwrap();
        let p = procs.get_mut(&pgid).unwrap();
        p.signals.push(signal);
        if signal == GroupSignal::Kill || !p.launch.command.contains("ignore-term") {
            let sig = if signal == GroupSignal::Kill { 9 } else { 15 };
            if let Some(tx) = p.exit.take() {
                let _ = tx.send(ExitInfo { code: None, signal: Some(sig) });
            }
        }
    }
    fn group_alive(&self, pgid: u32) -> bool {
        self.procs.lock().unwrap().get(&pgid).is_some_and(|p| p.exit.is_some())
    }
    async fn released(&self, pgid: u32) -> Ended {
        let procs = self.procs.lock().unwrap();
        Ended { out_of_memory: procs.get(&pgid).is_some_and(|p| p.launch.command.contains("oom")) }
    }
    async fn probe(&self, target: &ProbeTarget, _action: &ProbeAction, _timeout: Duration) -> bool {
        let procs = self.procs.lock().unwrap();
        let port = target.port.to_string();
        let p =
            procs.values().find(|p| p.exit.is_some() && p.launch.env.iter().any(|(k, v)| k == "PORT" && *v == port));
        let sick = self.sick.lock().unwrap();
        p.is_some_and(|p| !p.launch.command.contains("never-ready") && !sick.contains(&p.launch_pid))
    }
}

fn setup() -> (Arc<LocalScheduler>, Arc<Fake>, broadcast::Receiver<UnitEvent>) {
    let mut cfg = LocalSchedulerConfig::new(std::env::temp_dir());
    cfg.drain_delay = Duration::from_secs(1);
    cfg.stop_timeout = Duration::from_secs(10);
    cfg.ready_timeout = Duration::from_secs(60);
    let fake = Arc::new(Fake::default());
    let s = LocalScheduler::on_runtime(cfg, fake.clone());
    let rx = s.subscribe();
    (s, fake, rx)
}

fn spec(release: u64, command: &str, web: u32) -> AppSpec {
    typed_spec("web", release, command, web)
}

fn liveness_check(failure_threshold: u32) -> crate::model::Healthcheck {
    crate::model::Healthcheck {
        initial_delay_seconds: 5,
        timeout_seconds: 1,
        period_seconds: 10,
        success_threshold: 1,
        failure_threshold,
        action: ProbeAction::TcpSocket(crate::model::TcpSocketProbe { port: 0 }),
    }
}

fn typed_spec(proc_type: &str, release: u64, command: &str, count: u32) -> AppSpec {
    AppSpec {
        app: app_name("f"),
        release,
        artifact: Artifact::Source { dir: std::env::temp_dir() },
        env: BTreeMap::new(),
        selector: BTreeMap::new(),
        pull_credentials: None,
        processes: BTreeMap::from([(
            process_type(proc_type),
            ProcessSpec {
                command: command.into(),
                count,
                resources: Resources::default(),
                limits: Resources { cpu_millis: 0, memory_bytes: 64 << 20 },
                healthcheck: None,
                liveness: None,
            },
        )]),
        identity: None,
    }
}

async fn settle(s: &LocalScheduler, ok: impl Fn(&[Unit]) -> bool) -> Vec<Unit> {
    for _ in 0..10_000 {
        let units = s.units(&app_name("f")).await.unwrap();
        if ok(&units) {
            return units;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never settled: {:#?}", s.units(&app_name("f")).await.unwrap());
}

fn up_at(release: u64, n: usize) -> impl Fn(&[Unit]) -> bool {
    move |u: &[Unit]| u.len() == n && u.iter().all(|u| u.state == UnitState::Up && u.release == release)
}

fn drain(rx: &mut broadcast::Receiver<UnitEvent>) -> Vec<(Instant, Unit)> {
    std::iter::from_fn(|| rx.try_recv().ok()).map(|e| (Instant::now(), e.unit)).collect()
}

#[tokio::test(start_paused = true)]
async fn rollout_replaces_one_at_a_time_and_drains() {
    let (s, fake, _) = setup();
    s.apply(spec(1, "serve v1", 3)).await.unwrap();
    let v1 = settle(&s, up_at(1, 3)).await;
    let mut rx = s.subscribe();
    s.apply(spec(2, "serve v2", 3)).await.unwrap();
    // Record events as they happen, with their times.
    let mut events = vec![];
    let mut max_alive = 0;
    let t0 = Instant::now();
    while !up_at(2, 3)(&s.units(&app_name("f")).await.unwrap()) || fake.alive().len() > 3 {
        max_alive = max_alive.max(fake.alive().len());
        events.extend(drain(&mut rx));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    events.extend(drain(&mut rx));
    assert_eq!(max_alive, 4, "exactly one extra unit during the rollout");
    // Each slot: new up, then old down, then after the drain delay old destroyed, and
    // only then the next slot's candidate starts.
    let at = |inst: u64, st: UnitState| events.iter().find(|(_, u)| u.instance == inst && u.state == st).unwrap().0;
    let mut prev_gone = t0;
    for old in &v1 {
        let new = events.iter().find(|(_, u)| u.name == old.name && u.release == 2).unwrap().1.instance;
        assert!(at(new, UnitState::Created) >= prev_gone, "{} started before the previous slot was done", old.name);
        assert!(at(new, UnitState::Up) <= at(old.instance, UnitState::Down));
        assert!(at(old.instance, UnitState::Destroyed) - at(old.instance, UnitState::Down) >= Duration::from_secs(1));
        prev_gone = at(old.instance, UnitState::Destroyed);
    }
    assert_eq!(fake.alive().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_replacement_that_never_gets_ready_keeps_the_old_units() {
    let (s, fake, _) = setup();
    s.apply(spec(1, "serve v1", 2)).await.unwrap();
    let v1 = settle(&s, up_at(1, 2)).await;
    let t = Instant::now();
    s.apply(spec(2, "serve v2 never-ready", 2)).await.unwrap();
    // The candidate is given up after ready_timeout; no second one is tried.
    settle(&s, |u| u.len() == 2 && Instant::now() - t > Duration::from_secs(61)).await;
    tokio::time::sleep(Duration::from_secs(120)).await;
    let units = s.units(&app_name("f")).await.unwrap();
    assert_eq!(units, v1, "the old units must be untouched");
    assert_eq!(fake.spawned_with("never-ready"), 1);
    assert_eq!(fake.alive().len(), 2);
    // Restart reports the failure too.
    let err = s.restart(&app_name("f"), RestartFilter::default()).await.unwrap_err();
    assert!(err.to_string().contains("did not become ready within 60s"), "{err}");
    // The next apply retries.
    s.apply(spec(3, "serve v3", 2)).await.unwrap();
    settle(&s, up_at(3, 2)).await;
}

#[tokio::test(start_paused = true)]
async fn crashes_restart_with_exponential_backoff() {
    let (s, fake, mut rx) = setup();
    s.apply(spec(1, "serve", 1)).await.unwrap();
    settle(&s, up_at(1, 1)).await;
    let mut delays = vec![];
    for restarts in 1..=4 {
        let pid = s.units(&app_name("f")).await.unwrap()[0].pid.unwrap();
        drain(&mut rx);
        fake.end(pid, ExitInfo { code: Some(1), signal: None });
        let crashed_at = loop {
            let ev = rx.recv().await.unwrap();
            if ev.unit.state == UnitState::Crashed {
                break Instant::now();
            }
        };
        let units = settle(&s, up_at(1, 1)).await;
        assert_eq!(units[0].restarts, restarts);
        let started = drain(&mut rx).into_iter().find(|(_, u)| u.state == UnitState::Created).unwrap().0;
        delays.push((started - crashed_at).as_millis());
    }
    // (Times are observed by polling every 10 ms.)
    for (got, want) in delays.iter().zip([500, 1000, 2000, 4000]) {
        assert!((want..want + 50).contains(got), "{delays:?}");
    }
    // After 30 s up, the backoff starts over.
    tokio::time::sleep(BACKOFF_RESET).await;
    let pid = s.units(&app_name("f")).await.unwrap()[0].pid.unwrap();
    let t = Instant::now();
    fake.end(pid, ExitInfo { code: Some(1), signal: None });
    settle(&s, |u| u[0].restarts == 5 && u[0].state == UnitState::Up).await;
    assert!(Instant::now() - t < Duration::from_millis(600));
}

#[tokio::test(start_paused = true)]
async fn a_unit_failing_its_liveness_probe_is_restarted_and_a_healthy_one_is_not() {
    let (s, fake, mut rx) = setup();
    let mut with_liveness = spec(1, "serve", 2);
    with_liveness.processes.get_mut("web").unwrap().liveness = Some(liveness_check(3));
    s.apply(with_liveness).await.unwrap();
    let units = settle(&s, up_at(1, 2)).await;
    // Healthy units are left alone however long they run.
    tokio::time::sleep(Duration::from_secs(300)).await;
    let still = s.units(&app_name("f")).await.unwrap();
    assert_eq!(
        still.iter().map(|u| (u.pid, u.restarts)).collect::<Vec<_>>(),
        units.iter().map(|u| (u.pid, 0)).collect::<Vec<_>>()
    );

    let (sick, healthy) = (units[0].pid.unwrap(), units[1].pid.unwrap());
    drain(&mut rx);
    fake.sick.lock().unwrap().insert(sick);
    let t = Instant::now();
    let reason = loop {
        let ev = rx.recv().await.unwrap();
        if ev.unit.state == UnitState::Crashed {
            break ev.reason.unwrap_or_default();
        }
    };
    // Three failed probes, 10 s apart: 20 to 30 s after the unit fell sick.
    let took = Instant::now() - t;
    assert!((Duration::from_secs(20)..=Duration::from_secs(31)).contains(&took), "{took:?}");
    assert!(reason.contains("liveness probe failed 3 times in a row"), "{reason}");
    assert_eq!(fake.signals(sick), [GroupSignal::Term], "stopped like any unit");
    let after = settle(&s, |u| u.len() == 2 && u.iter().all(|u| u.state == UnitState::Up) && u[0].restarts == 1).await;
    assert_ne!(after[0].pid, Some(sick), "a new process");
    assert_eq!((after[1].pid, after[1].restarts), (Some(healthy), 0), "the healthy unit is untouched");
}

#[tokio::test(start_paused = true)]
async fn stop_escalates_after_stop_timeout() {
    let (s, fake, _) = setup();
    s.apply(spec(1, "serve ignore-term", 1)).await.unwrap();
    let pid = settle(&s, up_at(1, 1)).await[0].pid.unwrap();
    let t = Instant::now();
    s.remove(&app_name("f")).await.unwrap();
    assert!(Instant::now() - t >= Duration::from_secs(10));
    assert_eq!(fake.signals(pid), [GroupSignal::Term, GroupSignal::Kill]);
    assert!(fake.alive().is_empty());
}

#[tokio::test(start_paused = true)]
async fn scale_down_removes_the_highest_numbers() {
    let (s, _fake, _) = setup();
    s.apply(spec(1, "serve", 4)).await.unwrap();
    let four = settle(&s, up_at(1, 4)).await;
    s.apply(spec(1, "serve", 2)).await.unwrap();
    let two = settle(&s, up_at(1, 2)).await;
    assert_eq!(two, four[..2]);
}

#[tokio::test(start_paused = true)]
async fn unstartable_units_are_in_error_and_retried() {
    let (s, fake, _) = setup();
    s.apply(spec(1, "unstartable", 1)).await.unwrap();
    let units = settle(&s, |u| u.len() == 1 && u[0].state == UnitState::Error).await;
    assert_eq!(units[0].pid, None);
    // A fixed spec replaces it at once.
    s.apply(spec(2, "serve", 1)).await.unwrap();
    settle(&s, up_at(2, 1)).await;
    assert_eq!(fake.alive().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_scheduler_stops_the_units() {
    let (s, fake, _) = setup();
    s.apply(spec(1, "serve", 2)).await.unwrap();
    settle(&s, up_at(1, 2)).await;
    drop(s);
    for _ in 0..100 {
        if fake.alive().is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("units still running: {:?}", fake.alive());
}

#[tokio::test(start_paused = true)]
async fn an_old_unit_crashing_mid_replacement_does_not_stall_the_rollout() {
    let (s, fake, _) = setup();
    s.apply(typed_spec("worker", 1, "work v1", 2)).await.unwrap();
    let v1 = settle(&s, up_at(1, 2)).await;
    s.apply(typed_spec("worker", 2, "work v2", 2)).await.unwrap();
    // The candidate for worker.1 needs STAY_UP to be ready; crash the old one meanwhile.
    settle(&s, |u| u.len() == 3).await;
    fake.end(v1[0].pid.unwrap(), ExitInfo { code: Some(1), signal: None });
    let v2 = settle(&s, up_at(2, 2)).await;
    assert!(v2.iter().all(|u| u.restarts == 0));
    tokio::time::sleep(Duration::from_secs(2)).await; // the drain of the old worker.2
    assert_eq!(fake.alive().len(), 2);
}
