//! [`DockerScheduler`] against real Docker engines (one that answers, or private
//! dockerds) with a busybox image built offline: the `scheduler_suite` conformance
//! suite, placement over two engines standing in for two hosts, and liveness probes
//! run inside the containers.
#![cfg(feature = "docker")]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deis_sdk::deis_core::logs::{LogFilter, LogSource, LogStore, RingLogStore};
use deis_sdk::deis_core::model::limits::Resources;
use deis_sdk::deis_core::model::{AppName, ExecProbe, Healthcheck, ProbeAction, Unit, UnitState};
use deis_sdk::deis_core::scheduler::{AppSpec, Artifact, RestartFilter, Scheduler, SchedulerError};
use deis_sdk::deis_core::store::RedbStore;
use deis_sdk::deis_core::testing::{SchedulerHarness, scheduler_suite};
use deis_sdk::logger::{IngestTokens, SyslogConfig, SyslogServer};
use deis_sdk::scheduler::docker::{DockerHost, DockerScheduler, DockerSchedulerConfig, LABEL_UNIT};
use deis_test_support::Service;

use crate::busybox::{WEB, sample_app, up_units, web_only};
use deis_test_support::docker::DockerEngine;
use deis_test_support::eventually;

/// The suite's sample app on busybox: `web` serves `<DEIS_UNIT> <GREETING>` with
/// busybox httpd on its `PORT`; `worker` sleeps. A crash is a `SIGKILL` through the
/// engine.
struct BusyboxHarness {
    image: String,
    engines: Vec<&'static DockerEngine>,
}

#[async_trait]
impl SchedulerHarness for BusyboxHarness {
    fn sample_app(&self, app: &AppName, release: u64) -> AppSpec {
        sample_app(&self.image, app, release)
    }

    async fn crash(&self, unit: &Unit) {
        for engine in &self.engines {
            let out = engine
                .docker()
                .args(["ps", "-q", "--filter", &format!("label={LABEL_UNIT}={}", unit.name)])
                .output()
                .unwrap();
            for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let status = engine.docker().args(["kill", "-s", "KILL", id]).output().unwrap().status;
                assert!(status.success(), "docker kill {id}");
            }
        }
    }
}

fn endpoint(engine: &DockerEngine) -> String {
    format!("unix://{}", engine.socket_path())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_engine_passes_the_scheduler_suite() {
    let Some(engine) = DockerEngine::shared() else { return };
    let harness = BusyboxHarness { image: engine.busybox_image(), engines: vec![engine] };
    let mut config = DockerSchedulerConfig::new(vec![DockerHost::new(endpoint(engine))]);
    config.supervision.stop_timeout = Duration::from_secs(5);
    config.supervision.drain_delay = Duration::from_millis(200);
    let scheduler = DockerScheduler::connect(config, RedbStore::in_memory()).await.expect("connect to the engine");
    let s: Arc<dyn Scheduler> = scheduler.clone();
    scheduler_suite(async || s.clone(), &harness).await;
    scheduler.shutdown().await;
}

fn process_app(app: &str) -> AppName {
    deis_sdk::deis_core::testing::app_name(app)
}

/// Two engines stand in for two hosts (each its own socket, data root, exec root and
/// pidfile), plus a control-plane node: web units spread over the two data nodes and
/// never reach the control plane; scaling beyond capacity is refused and changes
/// nothing; tags select nodes and an unknown tag is refused; one engine stopped, its
/// units come back on the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_engines_placement_tags_capacity_and_a_lost_engine() {
    let Some(e1) = DockerEngine::start_private() else { return };
    let Some(e2) = DockerEngine::start_private() else { return };
    let image = e1.busybox_image();
    assert_eq!(e2.busybox_image(), image);
    let host = |e: &DockerEngine, opts: &str| format!("{}{opts}", endpoint(e)).parse::<DockerHost>().unwrap();
    let hosts = vec![
        host(&e1, ";name=n1;label=zone=a;cpu=1000m;memory=1G"),
        host(&e2, ";name=n2;label=zone=b;cpu=1000m;memory=1G"),
        // The first engine once more, as a big control-plane node: it must get nothing.
        host(&e1, ";name=ctl;cpu=64;memory=64G;planes=control"),
    ];
    let mut config = DockerSchedulerConfig::new(hosts);
    config.supervision.stop_timeout = Duration::from_secs(5);
    config.supervision.drain_delay = Duration::ZERO;
    config.health_interval = Duration::from_millis(200);
    config.down_grace = Duration::from_secs(1);
    let s = DockerScheduler::connect(config, RedbStore::in_memory()).await.expect("connect to both engines");
    let harness = BusyboxHarness { image, engines: vec![] };
    let spec = |web: u32, cpu: u64, tags: &[(&str, &str)]| web_only(&harness.image, "two", web, cpu, tags);

    // Spread over the data nodes, one each; nothing on the control plane.
    s.apply(spec(2, 300, &[])).await.unwrap();
    let units = up_units(&*s, "two", 2).await;
    let nodes: BTreeSet<&str> = units.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(nodes, BTreeSet::from(["n1", "n2"]), "{units:?}");

    // Beyond capacity (2000m of data plane): refused, nothing changes.
    let before = s.units(&process_app("two")).await.unwrap();
    match s.apply(spec(7, 300, &[])).await {
        Err(SchedulerError::Capacity(msg)) => {
            assert!(msg.contains("needs 300m cpu") && msg.contains("Scale down (deis ps:scale)"), "{msg}")
        }
        other => panic!("expected a capacity refusal, got {other:?}"),
    }
    assert_eq!(s.units(&process_app("two")).await.unwrap(), before);
    let allocated: u64 = s.nodes().await.unwrap().iter().map(|n| n.allocated.cpu_millis).sum();
    assert_eq!(allocated, 600);

    // A tag no node carries is refused clearly; a carried one moves the units there.
    match s.apply(spec(2, 300, &[("zone", "mars")])).await {
        Err(SchedulerError::Invalid(msg)) => {
            assert!(msg.contains("no node carries the label zone=mars") && msg.contains("zone=a, zone=b"), "{msg}")
        }
        other => panic!("expected an unknown-tag refusal, got {other:?}"),
    }
    s.apply(spec(2, 300, &[("zone", "a")])).await.unwrap();
    let units = eventually(Duration::from_secs(60), "both units on n1", || async {
        let units = up_units(&*s, "two", 2).await;
        units.iter().all(|(_, n)| n == "n1").then_some(units.clone()).ok_or(units)
    })
    .await;
    assert_eq!(units.len(), 2);

    // Back to no tags, then n1's engine stops: its units come back on n2.
    s.apply(spec(2, 300, &[])).await.unwrap();
    drop(e1);
    let units = eventually(Duration::from_secs(90), "every unit on n2", || async {
        let units = up_units(&*s, "two", 2).await;
        units.iter().all(|(_, n)| n == "n2").then_some(units.clone()).ok_or(units)
    })
    .await;
    assert_eq!(units.len(), 2);
    let nodes = s.nodes().await.unwrap();
    let ctl = nodes.iter().find(|n| n.name == "ctl").unwrap();
    assert_eq!(ctl.allocated, Resources::default(), "the control plane got units: {nodes:?}");
    s.remove(&process_app("two")).await.unwrap();
    s.shutdown().await;
}

/// A source build runs on the stack image (here busybox) with the build copied to
/// /app; with a syslog address, its output reaches the logger through Docker's syslog
/// driver, tagged with the unit's name and the app's ingest token, which the listener
/// checks; a unit restarted after the token is rotated carries the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_builds_on_the_stack_image_log_through_syslog() {
    let Some(engine) = DockerEngine::shared() else { return };
    let logs = RingLogStore::new();
    let tokens = IngestTokens::new();
    tokens.set("src", Some("first-token".into()));
    let syslog = SyslogConfig {
        tcp_addr: Some("127.0.0.1:0".parse().unwrap()),
        udp_addr: None,
        ingest_tokens: Some(tokens.clone()),
        ..SyslogConfig::default()
    };
    let server = SyslogServer::start(syslog, Arc::new(logs.clone())).await.unwrap();

    let build = tempfile::tempdir().unwrap();
    std::fs::write(build.path().join("web.sh"), format!("echo \"started in $(pwd)\"\n{WEB}\n")).unwrap();
    let mut config = DockerSchedulerConfig::new(vec![DockerHost::new(endpoint(engine))]);
    config.stack_image = engine.busybox_image();
    config.syslog_address = Some(format!("tcp://{}", server.tcp_addr().unwrap()));
    config.ingest_tokens = Some(tokens.clone());
    let s = DockerScheduler::connect(config, RedbStore::in_memory()).await.unwrap();
    let harness = BusyboxHarness { image: String::new(), engines: vec![] };
    let mut spec = harness.sample_app(&process_app("src"), 1);
    spec.processes.remove("worker");
    spec.processes.get_mut("web").unwrap().command = "exec sh web.sh".into();
    spec.artifact = Artifact::Source { dir: build.path().to_path_buf() };
    s.apply(spec).await.unwrap();
    let units = up_units(&*s, "src", 1).await;
    assert_eq!(units[0].0, "src.web.1");

    let lines = eventually(Duration::from_secs(20), "the unit's first line in the log", || async {
        let got = logs.tail("src", 10, &LogFilter::default()).await.unwrap();
        got.into_iter().find(|e| e.line.message.starts_with("started in")).ok_or(())
    })
    .await;
    assert_eq!(lines.line.message, "started in /app");
    assert_eq!(lines.line.source, LogSource::App { proc_type: "web".into(), number: 1 });
    assert_eq!(server.counters().snapshot().dropped_bad_token, 0);

    // Rotated: the restarted unit's container is tagged with the new token.
    tokens.set("src", Some("second-token".into()));
    s.restart(&process_app("src"), RestartFilter::default()).await.unwrap();
    eventually(Duration::from_secs(30), "the restarted unit's first line in the log", || async {
        let got = logs.tail("src", 10, &LogFilter::default()).await.unwrap();
        (got.iter().filter(|e| e.line.message.starts_with("started in")).count() >= 2).then_some(()).ok_or(())
    })
    .await;
    s.remove(&process_app("src")).await.unwrap();
    s.shutdown().await;
    server.shutdown().await;
}

/// A liveness probe (`exec`, run in the unit's container through the engine) that
/// starts failing gets the unit restarted in a fresh container, with the reason; the
/// healthy unit of the same app is left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_failing_its_liveness_probe_is_restarted_in_a_new_container() {
    let Some(engine) = DockerEngine::shared() else { return };
    let mut config = DockerSchedulerConfig::new(vec![DockerHost::new(endpoint(engine))]);
    config.supervision.stop_timeout = Duration::from_secs(5);
    let s = DockerScheduler::connect(config, RedbStore::in_memory()).await.unwrap();
    let harness = BusyboxHarness { image: engine.busybox_image(), engines: vec![engine] };
    let app = process_app("alive");
    let mut spec = harness.sample_app(&app, 1);
    spec.processes.remove("worker");
    let web = spec.processes.get_mut("web").unwrap();
    web.count = 2;
    web.liveness = Some(Healthcheck {
        initial_delay_seconds: 0,
        timeout_seconds: 5,
        period_seconds: 1,
        success_threshold: 1,
        failure_threshold: 2,
        action: ProbeAction::Exec(ExecProbe { command: vec!["test ! -e /tmp/sick".into()] }),
    });
    let mut events = s.subscribe();
    s.apply(spec).await.unwrap();
    let units = up_units(&*s, "alive", 2).await;
    let container = |unit: &str| {
        let out =
            engine.docker().args(["ps", "-q", "--filter", &format!("label={LABEL_UNIT}={unit}")]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let (sick, healthy) = (units[0].0.clone(), units[1].0.clone());
    let (sick_container, healthy_container) = (container(&sick), container(&healthy));
    assert!(!sick_container.is_empty() && !healthy_container.is_empty());

    let touched = engine.docker().args(["exec", &sick_container, "touch", "/tmp/sick"]).status().unwrap();
    assert!(touched.success());
    let crashed = async {
        loop {
            match events.recv().await {
                Ok(ev) if ev.unit.name == sick && ev.unit.state == UnitState::Crashed => {
                    return ev.reason.unwrap_or_default();
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("scheduler events: {e}"),
            }
        }
    };
    let reason = tokio::time::timeout(Duration::from_secs(60), crashed).await.expect("the sick unit crashed in 60 s");
    assert!(reason.contains("liveness probe failed 2 times in a row"), "{reason}");
    let after = eventually(Duration::from_secs(60), "the sick unit restarted, the healthy one untouched", || async {
        let units = s.units(&app).await.map_err(|e| e.to_string())?;
        let by_name = |n: &str| units.iter().find(|u| u.name == n).cloned().ok_or(format!("no {n}: {units:?}"));
        let (restarted, kept) = (by_name(&sick)?, by_name(&healthy)?);
        if restarted.state != UnitState::Up || restarted.restarts != 1 {
            return Err(format!("{restarted:?}"));
        }
        Ok((restarted, kept))
    })
    .await;
    assert_eq!((after.1.restarts, after.1.state), (0, UnitState::Up), "the healthy unit is untouched");
    let new_container = container(&sick);
    assert!(!new_container.is_empty() && new_container != sick_container, "a fresh container");
    assert_eq!(container(&healthy), healthy_container);
    s.remove(&app).await.unwrap();
    s.shutdown().await;
}

/// The ids of the running unit containers of `app` on `engine`.
fn containers(engine: &DockerEngine, app: &str) -> BTreeSet<String> {
    let filter = format!("label=deis.app={app}");
    let out = engine.docker().args(["ps", "-q", "--no-trunc", "--filter", &filter]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).split_whitespace().map(String::from).collect()
}

/// A scheduler that shuts down leaves its unit containers running; the next one (same
/// store, as a restarted deisd) adopts them for the same spec (same containers, same
/// addresses, nothing duplicated), and replaces them for a changed one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_scheduler_adopts_its_running_containers() {
    let Some(engine) = DockerEngine::shared() else { return };
    let store = RedbStore::in_memory();
    let harness = BusyboxHarness { image: engine.busybox_image(), engines: vec![] };
    let connect = || async {
        let mut config = DockerSchedulerConfig::new(vec![DockerHost::new(endpoint(engine))]);
        config.supervision.stop_timeout = Duration::from_secs(5);
        DockerScheduler::connect(config, store.clone()).await.unwrap()
    };
    let mut spec = harness.sample_app(&process_app("adopt"), 1);
    spec.processes.remove("worker");
    spec.processes.get_mut("web").unwrap().count = 2;

    let first = connect().await;
    first.apply(spec.clone()).await.unwrap();
    up_units(&*first, "adopt", 2).await;
    let before = first.units(&process_app("adopt")).await.unwrap();
    let ids = containers(engine, "adopt");
    assert_eq!(ids.len(), 2, "{ids:?}");
    first.shutdown().await;
    drop(first);
    assert_eq!(containers(engine, "adopt"), ids, "shutdown must leave the unit containers running");

    let second = connect().await;
    second.apply(spec.clone()).await.unwrap();
    up_units(&*second, "adopt", 2).await;
    let after = second.units(&process_app("adopt")).await.unwrap();
    let addrs = |us: &[Unit]| us.iter().map(|u| (u.name.clone(), u.address)).collect::<Vec<_>>();
    assert_eq!(addrs(&after), addrs(&before), "adopted units keep their addresses");
    assert_eq!(containers(engine, "adopt"), ids, "the running containers were adopted, not duplicated");
    second.shutdown().await;
    drop(second);

    // A changed spec while no scheduler ran: the old containers are replaced.
    let third = connect().await;
    spec.release = 2;
    third.apply(spec.clone()).await.unwrap();
    up_units(&*third, "adopt", 2).await;
    let now = eventually(Duration::from_secs(30), "only the new containers left", || async {
        let now = containers(engine, "adopt");
        (now.len() == 2 && now.is_disjoint(&ids)).then_some(now.clone()).ok_or(now)
    })
    .await;
    assert_eq!(now.len(), 2);
    third.remove(&process_app("adopt")).await.unwrap();
    assert!(containers(engine, "adopt").is_empty());
    third.shutdown().await;
}
