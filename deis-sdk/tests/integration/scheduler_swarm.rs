//! [`SwarmScheduler`] on a real one-node swarm (a private dockerd, `docker swarm init`
//! on loopback) with a busybox image built offline: the `scheduler_suite` conformance
//! suite, then placement constraints (node labels, planes), capacity and the unit stats
//! telemetry reads from the engine. One test, so the binary starts one swarm.
#![cfg(feature = "swarm")]

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deis_sdk::deis_core::model::{AppName, Unit, UnitState};
use deis_sdk::deis_core::scheduler::{AppSpec, Scheduler, SchedulerError};
use deis_sdk::deis_core::testing::{SchedulerHarness, app_name, scheduler_suite};
use deis_sdk::scheduler::swarm::{SwarmScheduler, SwarmSchedulerConfig, service_name};
use deis_sdk::telemetry::UnitStatsSource;
use deis_sdk::telemetry::docker_units::DockerUnitStats;
use deis_test_support::docker::DockerSwarm;
use deis_test_support::eventually;

use crate::busybox::{sample_app, up_units, web_only};

/// The suite's sample app on busybox: `web` serves `<DEIS_UNIT> <GREETING>` with busybox
/// httpd on its `PORT`; `worker` sleeps. A crash is a `SIGKILL` through the engine.
struct BusyboxHarness<'a> {
    image: String,
    swarm: &'a DockerSwarm,
}

#[async_trait]
impl SchedulerHarness for BusyboxHarness<'_> {
    fn sample_app(&self, app: &AppName, release: u64) -> AppSpec {
        sample_app(&self.image, app, release)
    }

    async fn crash(&self, unit: &Unit) {
        // Swarm names a task's container `<service>.<slot>.<task id>`.
        let prefix = format!("{}.{}.", service_name(&unit.app, &unit.proc_type), unit.number);
        let out = self.swarm.engine().docker().args(["ps", "--format", "{{.ID}} {{.Names}}"]).output().unwrap();
        let mut killed = 0;
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let (id, name) = line.split_once(' ').unwrap();
            if name.starts_with(&prefix) {
                let status = self.swarm.engine().docker().args(["kill", "-s", "KILL", id]).output().unwrap().status;
                assert!(status.success(), "docker kill {id}");
                killed += 1;
            }
        }
        assert_eq!(killed, 1, "one container of {} expected", unit.name);
    }

    fn converge_timeout(&self) -> Duration {
        Duration::from_secs(60)
    }
}

/// Ports of this process's units: apart from other test processes' swarms.
fn config(swarm: &DockerSwarm) -> SwarmSchedulerConfig {
    let mut config = SwarmSchedulerConfig::new(swarm.endpoint());
    let base = 10000 + (std::process::id() % 100) as u16 * 200;
    config.ports = base..=base + 1999;
    config.stop_timeout = Duration::from_secs(5);
    config.restart_delay = Duration::from_millis(200);
    config.poll_interval = Duration::from_millis(100);
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swarm_passes_the_scheduler_suite_and_keeps_to_labels_planes_and_capacity() {
    let Some(swarm) = DockerSwarm::start() else { return };
    let harness = BusyboxHarness { image: swarm.engine().busybox_image(), swarm: &swarm };
    let scheduler = SwarmScheduler::connect(config(&swarm)).await.expect("connect to the manager");
    let s: Arc<dyn Scheduler> = scheduler.clone();
    scheduler_suite(async || s.clone(), &harness).await;

    // Scaling replaces no unit, also after a restart: the template sent again is the
    // one the units run (a spec read back from the engine lacks the healthcheck, and
    // swarm would roll every unit onto the same ports, where they fail to bind).
    let keep = app_name("keep");
    let instances = |units: &[Unit]| units.iter().map(|u| (u.name.clone(), u.instance)).collect::<Vec<_>>();
    let scale = |web: u32| {
        let mut spec = harness.sample_app(&keep, 1);
        spec.processes.remove("worker");
        spec.processes.get_mut("web").unwrap().count = web;
        spec
    };
    scheduler.apply(scale(1)).await.unwrap();
    up_units(&*scheduler, "keep", 1).await;
    let one = scheduler.units(&keep).await.unwrap();
    scheduler.apply(scale(2)).await.unwrap();
    up_units(&*scheduler, "keep", 2).await;
    let two = scheduler.units(&keep).await.unwrap();
    assert_eq!(instances(&two[..1]), instances(&one), "scaling up replaced a unit: {two:?}");
    let restart = deis_sdk::deis_core::scheduler::RestartFilter::default();
    let restarted = scheduler.restart(&keep, restart).await.unwrap();
    let names: Vec<(String, u64)> = instances(&restarted);
    eventually(Duration::from_secs(60), "the restarted units up", || async {
        let units = scheduler.units(&keep).await.map_err(|e| e.to_string())?;
        let up = units.iter().all(|u| u.state == UnitState::Up);
        if instances(&units) == names && up { Ok(()) } else { Err(format!("{units:?}")) }
    })
    .await;
    scheduler.apply(scale(3)).await.unwrap();
    up_units(&*scheduler, "keep", 3).await;
    let three = scheduler.units(&keep).await.unwrap();
    assert_eq!(instances(&three[..2]), names, "scaling after a restart replaced a unit: {three:?}");
    assert!(three.iter().all(|u| u.restarts == 0), "a unit crashed: {three:?}");
    scheduler.remove(&keep).await.unwrap();

    // Telemetry reads a swarm task container's usage from the engine, by unit name: a
    // busy unit's cpu time grows and its memory is read; a unit without a task has none.
    let busy = app_name("busy");
    let mut spec = harness.sample_app(&busy, 1);
    spec.processes.remove("web");
    spec.processes.get_mut("worker").unwrap().command = "while :; do :; done".into();
    scheduler.apply(spec).await.unwrap();
    let stats = DockerUnitStats::connect(&[swarm.endpoint()]).unwrap();
    let (unit, first) = eventually(Duration::from_secs(60), "a reading of busy.worker.1", || async {
        let units = scheduler.units(&busy).await.map_err(|e| e.to_string())?;
        let mut usage = stats.usage(&units).await;
        let reading = usage.remove("busy.worker.1").filter(|u| u.memory_bytes > 0);
        reading.map(|r| (units[0].clone(), r)).ok_or_else(|| format!("{units:?} {usage:?}"))
    })
    .await;
    eventually(Duration::from_secs(30), "busy.worker.1's cpu time to grow", || async {
        let usage = stats.usage(std::slice::from_ref(&unit)).await;
        usage.get("busy.worker.1").filter(|u| u.cpu_seconds > first.cpu_seconds + 0.2).copied()
    })
    .await;
    let mut absent = unit.clone();
    absent.name = "busy.worker.2".into();
    assert!(stats.usage(&[absent]).await.is_empty(), "a unit without a task has no reading");
    scheduler.remove(&busy).await.unwrap();

    // Tags select nodes by label; one no node carries is refused, naming what exists.
    swarm.update_node(swarm.engine(), &["--label-add", "zone=a"]);
    let spec = |web: u32, cpu: u64, tags: &[(&str, &str)]| web_only(&harness.image, "tags", web, cpu, tags);
    match scheduler.apply(spec(1, 100, &[("zone", "mars")])).await {
        Err(SchedulerError::Invalid(msg)) => assert!(msg.contains("no node carries the label zone=mars"), "{msg}"),
        other => panic!("expected an unknown-tag refusal, got {other:?}"),
    }
    scheduler.apply(spec(2, 100, &[("zone", "a")])).await.unwrap();
    let units = up_units(&*scheduler, "tags", 2).await;
    assert_eq!(units.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["tags.web.1", "tags.web.2"]);

    // Beyond the node's capacity: refused, nothing changes.
    let before = scheduler.units(&app_name("tags")).await.unwrap();
    let cpus = scheduler.nodes().await.unwrap()[0].capacity.cpu_millis;
    match scheduler.apply(spec(3, cpus / 2, &[("zone", "a")])).await {
        Err(SchedulerError::Capacity(msg)) => assert!(msg.contains("cpu"), "{msg}"),
        other => panic!("expected a capacity refusal, got {other:?}"),
    }
    assert_eq!(scheduler.units(&app_name("tags")).await.unwrap(), before);

    // A control-plane node never receives app units: the only node made one, a new
    // app is refused and the running units are left where they are.
    swarm.update_node(swarm.engine(), &["--label-add", "deis.planes=control"]);
    match scheduler.apply(spec(1, 100, &[])).await {
        Err(e) => assert!(e.to_string().contains("data"), "{e}"),
        Ok(()) => panic!("units placed with no data-plane node"),
    }
    let mut other = spec(1, 100, &[]);
    other.app = app_name("ctl");
    assert!(scheduler.apply(other).await.is_err(), "a control-plane node got units");
    swarm.update_node(swarm.engine(), &["--label-rm", "deis.planes"]);
    scheduler.remove(&app_name("tags")).await.unwrap();
    assert!(scheduler.units(&app_name("tags")).await.unwrap().is_empty());
    scheduler.shutdown().await;
}
