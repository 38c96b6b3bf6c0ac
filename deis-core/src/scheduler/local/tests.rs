//! Tests of the local scheduler on real processes (the conformance suite and the
//! behaviour only a process backend has); `fake` tests the supervisor's rules on a
//! fake process runtime with paused time.

mod fake;
mod limits;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;
use tokio::time::Instant;

use super::output::tests::Collect;
use super::*;
use crate::model::limits::Resources;
use crate::model::{ExecProbe, Healthcheck, ProbeAction, UnitState};
use crate::scheduler::Capacity;
use crate::testing::{
    SAMPLE_WEB as WEB, SAMPLE_WORKER as WORKER, SourceAppHarness as Harness, app_name, scheduler_suite,
};
use deis_test_support::http;

fn config(dir: &Path) -> LocalSchedulerConfig {
    let mut c = LocalSchedulerConfig::new(dir);
    c.drain_delay = Duration::from_millis(100);
    c.stop_timeout = Duration::from_secs(3);
    c.ready_timeout = Duration::from_secs(15);
    c
}

async fn wait_units(s: &LocalScheduler, app: &str, ok: impl Fn(&[Unit]) -> bool) -> Vec<Unit> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let units = s.units(&app_name(app)).await.unwrap();
        if ok(&units) {
            return units;
        }
        assert!(Instant::now() < deadline, "not converged: {units:#?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn all_up(n: usize) -> impl Fn(&[Unit]) -> bool {
    move |u: &[Unit]| u.len() == n && u.iter().all(|u| u.state == UnitState::Up)
}

/// The process is gone (or a zombie waiting for a reaper that is not us).
fn gone(pid: u32) -> bool {
    crate::sys::procfs::stat(pid).is_none_or(|s| !s.is_live())
}

/// Kills one process of a unit, as a crash would.
fn kill(pid: u32) {
    let pid = rustix::process::Pid::from_raw(pid as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
}

async fn wait_gone(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !gone(pid) {
        assert!(Instant::now() < deadline, "process {pid} is still running");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance() {
    let made = std::sync::Mutex::new(vec![]);
    let make = async || {
        let state = tempfile::tempdir().unwrap();
        let s = LocalScheduler::new(config(state.path())).await.unwrap();
        made.lock().unwrap().push((s.clone(), state));
        s as Arc<dyn crate::Scheduler>
    };
    scheduler_suite(make, &Harness::new()).await;
    for (s, state) in made.into_inner().unwrap() {
        s.shutdown().await;
        let file = std::fs::read_to_string(state.path().join(STATE_FILE)).unwrap();
        assert!(file.contains("\"groups\": []"), "groups left in the state file: {file}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_unit_is_restarted_and_counted() {
    let state = tempfile::tempdir().unwrap();
    let s = LocalScheduler::new(config(state.path())).await.unwrap();
    let h = Harness::new();
    let mut events = s.subscribe();
    s.apply(h.spec(&app_name("crashy"), 1, &[("worker", WORKER, 1)])).await.unwrap();
    let units = wait_units(&s, "crashy", all_up(1)).await;
    let pid = units[0].pid.unwrap();
    kill(pid);
    let crashed = next_state(&mut events, "crashy.worker.1", UnitState::Crashed).await;
    assert_eq!(crashed.pid, None);
    let up = next_state(&mut events, "crashy.worker.1", UnitState::Up).await;
    assert_eq!(up.restarts, 1);
    assert_eq!(up.instance, units[0].instance, "a restart keeps the unit");
    assert_eq!(up.address, units[0].address, "a restart keeps the port");
    assert_ne!(up.pid, Some(pid));
    assert!(gone(pid), "the killed process was not reaped");
    s.shutdown().await;
    assert!(gone(up.pid.unwrap()));
}

async fn next_state(rx: &mut broadcast::Receiver<UnitEvent>, name: &str, state: UnitState) -> Unit {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ev = tokio::time::timeout_at(deadline, rx.recv()).await.expect("no such event").unwrap();
        if ev.unit.name == name && ev.unit.state == state {
            return ev.unit;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_reaps_the_whole_group_and_escalates_to_sigkill() {
    let state = tempfile::tempdir().unwrap();
    let mut cfg = config(state.path());
    cfg.stop_timeout = Duration::from_millis(300);
    let s = LocalScheduler::new(cfg).await.unwrap();
    let h = Harness::new();
    // A background child in the group, and a leader that ignores SIGTERM.
    let cmd = "sleep 3600 & echo $! > \"child-$DEIS_UNIT\"; trap '' TERM; while :; do sleep 1; done";
    s.apply(h.spec(&app_name("stubborn"), 1, &[("worker", cmd, 1)])).await.unwrap();
    let units = wait_units(&s, "stubborn", all_up(1)).await;
    let leader = units[0].pid.unwrap();
    let child: u32 = std::fs::read_to_string(h.dir().join("child-stubborn.worker.1")).unwrap().trim().parse().unwrap();
    assert!(!gone(child));
    let t = Instant::now();
    s.remove(&app_name("stubborn")).await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(300), "SIGKILL came before stop_timeout");
    assert!(t.elapsed() < Duration::from_secs(3), "stop took {:?}", t.elapsed());
    assert!(gone(leader), "leader not reaped: no zombie may be left");
    wait_gone(child).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_release_brings_the_new_unit_up_before_the_old_goes_down() {
    let state = tempfile::tempdir().unwrap();
    let s = LocalScheduler::new(config(state.path())).await.unwrap();
    let h = Harness::new();
    s.apply(h.spec(&app_name("roll"), 1, &[("web", WEB, 2)])).await.unwrap();
    let v1 = wait_units(&s, "roll", all_up(2)).await;
    let mut events = s.subscribe();
    s.apply(h.spec(&app_name("roll"), 2, &[("web", WEB, 2)])).await.unwrap();
    let v2 = wait_units(&s, "roll", |u| all_up(2)(u) && u.iter().all(|u| u.release == 2)).await;
    assert_eq!(http::get_async(v2[0].address.unwrap(), "/").await.unwrap().body, "roll.web.1 hello from v2\n");

    for old in &v1 {
        wait_gone(old.pid.unwrap()).await;
    }

    // Replay the events: some unit is up at every moment, and only one slot is rolled
    // at a time.
    let mut up: BTreeMap<u64, String> = v1.iter().map(|u| (u.instance, u.name.clone())).collect();
    let mut seq = vec![];
    while let Ok(ev) = events.try_recv() {
        let u = ev.unit;
        seq.push(format!("{}#{} {}", u.name, u.instance, u.state));
        match u.state {
            UnitState::Up => {
                up.insert(u.instance, u.name.clone());
            }
            _ => {
                up.remove(&u.instance);
            }
        }
        assert!(up.len() >= 2, "fewer than 2 units up after {seq:?}");
        assert!(up.len() <= 3, "more than one replacement at a time: {seq:?}");
    }
    for old in &v1 {
        let down = seq.iter().position(|e| *e == format!("{}#{} down", old.name, old.instance)).unwrap();
        let new = v2.iter().find(|u| u.name == old.name).unwrap();
        let new_up = seq.iter().position(|e| *e == format!("{}#{} up", new.name, new.instance)).unwrap();
        assert!(new_up < down, "{} went down before its replacement was up: {seq:?}", old.name);
    }
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leftovers_of_a_crashed_scheduler_are_killed_on_new() {
    use crate::sys::{SpawnSpec, Stdio, spawn};
    let state = tempfile::tempdir().unwrap();
    // A unit whose group leader is alive, and one whose leader died leaving a child;
    // both outlive this test process, as units outlive a crashed scheduler.
    let path = [("PATH", "/usr/bin:/bin")];
    let leader = spawn(SpawnSpec::new("sleep").arg("3600").env(path).outlive_parent()).unwrap();
    let mut orphaning =
        spawn(SpawnSpec::shell("sleep 3600 >/dev/null & echo $!").env(path).stdout(Stdio::Piped).outlive_parent())
            .unwrap();
    let sh_pid = orphaning.pid;
    let mut out = String::new();
    std::io::Read::read_to_string(&mut std::fs::File::from(orphaning.stdout.take().unwrap()), &mut out).unwrap();
    assert_eq!(orphaning.exited.await.unwrap().code, Some(0));
    let orphan: u32 = out.trim().parse().unwrap();
    assert!(!gone(orphan));
    let start_time = |pid: u32| crate::sys::procfs::stat(pid).map_or(0, |s| s.start_time);
    let file = serde_json::json!({ "groups": [
        { "pgid": leader.pid, "start_time": start_time(leader.pid), "unit": "old.web.1" },
        { "pgid": sh_pid, "start_time": start_time(orphan), "unit": "old.worker.1" },
        // A stale entry of a group long gone must not hurt.
        { "pgid": 999_999_999u32, "start_time": 1, "unit": "old.gone.1" },
    ]});
    std::fs::write(state.path().join(STATE_FILE), file.to_string()).unwrap();

    let s = LocalScheduler::new(config(state.path())).await.unwrap();
    assert!(gone(leader.pid), "the leftover leader was killed before new returned");
    let status =
        tokio::time::timeout(Duration::from_secs(5), leader.exited).await.expect("the leftover leader is gone");
    assert_eq!(status.unwrap().signal, Some(9));
    wait_gone(orphan).await;
    let file = std::fs::read_to_string(state.path().join(STATE_FILE)).unwrap();
    assert!(!file.contains("old."), "{file}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_is_the_config_plus_port_and_deis_vars_only() {
    let state = tempfile::tempdir().unwrap();
    let s = LocalScheduler::new(config(state.path())).await.unwrap();
    let h = Harness::new();
    s.apply(h.spec(&app_name("envy"), 7, &[("worker", "env > env.out; exec sleep 3600", 1)])).await.unwrap();
    let units = wait_units(&s, "envy", all_up(1)).await;
    let env: BTreeMap<String, String> = std::fs::read_to_string(h.dir().join("env.out"))
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect();
    assert_eq!(env["PORT"], units[0].address.unwrap().port().to_string());
    assert_eq!(env["DEIS_APP"], "envy");
    assert_eq!(env["DEIS_RELEASE"], "v7");
    assert_eq!(env["DEIS_UNIT"], "envy.worker.1");
    assert_eq!(env["GREETING"], "hello from v7");
    assert_eq!(env.get("PATH").cloned(), std::env::var("PATH").ok());
    // Variables of this test process (cargo sets several) are not inherited.
    assert!(std::env::vars().any(|(k, _)| k.starts_with("CARGO")), "test needs an inherited variable to check");
    let allowed = ["PORT", "DEIS_APP", "DEIS_RELEASE", "DEIS_UNIT", "GREETING", "PWD", "SHLVL", "OLDPWD", "_"];
    for k in env.keys() {
        assert!(allowed.contains(&k.as_str()) || INHERITED_ENV.contains(&k.as_str()), "inherited {k}");
    }
    s.shutdown().await;
}

#[tokio::test]
async fn image_builds_are_refused_and_nothing_changes() {
    let state = tempfile::tempdir().unwrap();
    let s = LocalScheduler::new(config(state.path())).await.unwrap();
    let h = Harness::new();
    let mut spec = h.spec(&app_name("img"), 4, &[("web", "", 1)]);
    spec.artifact = Artifact::Image { reference: "nginx:1.27".into() };
    let err = s.apply(spec).await.unwrap_err();
    assert!(matches!(err, SchedulerError::Unsupported(_)), "{err:?}");
    let msg = err.to_string();
    for part in
        ["app img", "release v4 runs image nginx:1.27", "source builds only", "deis deploy", "container backend"]
    {
        assert!(msg.contains(part), "{msg:?} lacks {part:?}");
    }
    assert!(s.units(&app_name("img")).await.unwrap().is_empty());
    assert_eq!(s.nodes().await.unwrap()[0].allocated, Resources::default());
}

#[tokio::test]
async fn capacity_refusal_names_the_app_and_what_is_short() {
    let state = tempfile::tempdir().unwrap();
    let mut cfg = config(state.path());
    cfg.capacity = Capacity { cpu_millis: 1000, memory_bytes: 1 << 30 };
    cfg.node_name = "box".into();
    let s = LocalScheduler::new(cfg).await.unwrap();
    let h = Harness::new();
    let mut small = h.spec(&app_name("small"), 1, &[("worker", WORKER, 1)]);
    small.processes.get_mut("worker").unwrap().resources = Resources { cpu_millis: 600, memory_bytes: 512 << 20 };
    s.apply(small).await.unwrap();
    let mut big = h.spec(&app_name("big"), 1, &[("worker", WORKER, 2)]);
    big.processes.get_mut("worker").unwrap().resources = Resources { cpu_millis: 300, memory_bytes: 512 << 20 };
    let err = s.apply(big).await.unwrap_err();
    assert!(matches!(err, SchedulerError::Capacity(_)), "{err:?}");
    let msg = err.to_string();
    for part in
        ["app big", "node box", "cpu: 600m requested, 400m of 1000m free", "memory: 1G requested, 512M", "scale"]
    {
        assert!(msg.contains(part), "{msg:?} lacks {part:?}");
    }
    assert!(s.units(&app_name("big")).await.unwrap().is_empty());
    let node = &s.nodes().await.unwrap()[0];
    assert_eq!((node.name.as_str(), node.allocated.cpu_millis), ("box", 600));
    // The app's own current spec does not count against its new one.
    let mut grown = h.spec(&app_name("small"), 2, &[("worker", WORKER, 1)]);
    grown.processes.get_mut("worker").unwrap().resources = Resources { cpu_millis: 1000, memory_bytes: 1 << 30 };
    s.apply(grown).await.unwrap();
    s.shutdown().await;
    assert!(s.apply(h.spec(&app_name("late"), 1, &[])).await.is_err(), "apply after shutdown must be refused");
}

#[tokio::test]
async fn invalid_specs_are_refused() {
    let state = tempfile::tempdir().unwrap();
    let s = LocalScheduler::new(config(state.path())).await.unwrap();
    let h = Harness::new();
    let err = s.apply(h.spec(&app_name("nocmd"), 1, &[("web", " ", 1)])).await.unwrap_err();
    assert!(err.to_string().contains("process type web has no command"), "{err}");
    let mut spec = h.spec(&app_name("nodir"), 1, &[("web", WEB, 1)]);
    spec.artifact = Artifact::Source { dir: h.dir().join("missing") };
    let err = s.apply(spec).await.unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
    let err = s.apply(h.spec(&app_name("many"), 1, &[("web", WEB, 1001)])).await.unwrap_err();
    assert!(matches!(err, SchedulerError::Invalid(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_lines_reach_the_sink() {
    let state = tempfile::tempdir().unwrap();
    let sink = Arc::new(Collect::default());
    let mut cfg = config(state.path());
    cfg.output = sink.clone();
    let s = LocalScheduler::new(cfg).await.unwrap();
    let h = Harness::new();
    s.apply(h.spec(&app_name("talk"), 1, &[("worker", "echo hello; echo oops >&2; exec sleep 3600", 1)]))
        .await
        .unwrap();
    wait_units(&s, "talk", all_up(1)).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while sink.lines_of("talk.worker.1").len() < 2 {
        assert!(Instant::now() < deadline, "lines: {:?}", sink.0.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let lines = sink.0.lock().unwrap().clone();
    assert!(lines.contains(&("talk.worker.1".into(), OutputStream::Stdout, "hello".into())), "{lines:?}");
    assert!(lines.contains(&("talk.worker.1".into(), OutputStream::Stderr, "oops".into())), "{lines:?}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_decides_readiness() {
    let state = tempfile::tempdir().unwrap();
    let s = LocalScheduler::new(config(state.path())).await.unwrap();
    let h = Harness::new();
    let mut spec = h.spec(&app_name("checked"), 1, &[("worker", WORKER, 1)]);
    spec.processes.get_mut("worker").unwrap().healthcheck = Some(Healthcheck {
        initial_delay_seconds: 0,
        timeout_seconds: 1,
        period_seconds: 1,
        success_threshold: 1,
        failure_threshold: 3,
        action: ProbeAction::Exec(ExecProbe { command: vec!["test -f \"ready-$DEIS_UNIT\"".into()] }),
    });
    s.apply(spec).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let units = s.units(&app_name("checked")).await.unwrap();
    assert_eq!(units[0].state, UnitState::Created, "up before its healthcheck passed");
    std::fs::write(h.dir().join("ready-checked.worker.1"), "").unwrap();
    wait_units(&s, "checked", all_up(1)).await;
    s.shutdown().await;
}
