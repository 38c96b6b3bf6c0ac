//! The Docker unit collector against a real engine: a busy container's cpu time grows
//! between readings and its memory is read, from the engine's stats API; containers
//! the collector was not asked about are left alone.
#![cfg(feature = "docker")]

use std::time::Duration;

use deis_sdk::deis_core::model::{Unit, UnitState};
use deis_sdk::deis_core::testing::{app_name, process_type};
use deis_sdk::scheduler::docker::LABEL_UNIT;
use deis_sdk::telemetry::UnitStatsSource;
use deis_sdk::telemetry::docker_units::DockerUnitStats;
use deis_test_support::docker::DockerEngine;
use deis_test_support::{Service, eventually};

fn unit(name: &str) -> Unit {
    let mut parts = name.splitn(3, '.');
    let (app, ty, n) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
    Unit {
        name: name.into(),
        instance: 0,
        app: app_name(app),
        proc_type: process_type(ty),
        number: n.parse().unwrap(),
        release: 1,
        state: UnitState::Up,
        address: None,
        node: String::new(),
        started: None,
        restarts: 0,
        pid: None,
    }
}

/// A running container labelled as unit `name`, removed on drop.
struct Container<'a>(&'a DockerEngine, String);

impl<'a> Container<'a> {
    fn run(engine: &'a DockerEngine, name: &str, script: &str) -> Self {
        let image = engine.busybox_image();
        let out = engine
            .docker()
            .args(["run", "-d", "--network", "none", "--label", &format!("{LABEL_UNIT}={name}"), &image])
            .args(["sh", "-c", script])
            .output()
            .unwrap();
        assert!(out.status.success(), "docker run: {}", String::from_utf8_lossy(&out.stderr));
        Self(engine, String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        let _ = self.0.docker().args(["rm", "-f", &self.1]).output();
    }
}

#[tokio::test]
async fn reads_cpu_and_memory_of_unit_containers_from_the_engine() {
    let Some(engine) = DockerEngine::shared() else { return };
    let endpoint = format!("unix://{}", engine.socket_path());
    let busy = format!("burn{}", std::process::id());
    let (busy_unit, idle_unit) = (format!("{busy}.web.1"), format!("{busy}.worker.1"));
    // Keeps 8 MiB in a shell variable and one core busy.
    let _busy = Container::run(engine, &busy_unit, "x=$(yes | head -c 8388608); while :; do :; done");
    let _idle = Container::run(engine, &idle_unit, "exec sleep 3600");
    let stats = DockerUnitStats::connect(&[endpoint]).unwrap();
    let wanted = [unit(&busy_unit)];

    let first = eventually(Duration::from_secs(30), "a reading of the busy unit", || async {
        stats.usage(&wanted).await.remove(&busy_unit).filter(|u| u.memory_bytes > 8 << 20)
    })
    .await;
    let later = eventually(Duration::from_secs(30), "the busy unit's cpu time to grow", || async {
        stats.usage(&wanted).await.remove(&busy_unit).filter(|u| u.cpu_seconds > first.cpu_seconds + 0.2)
    })
    .await;
    assert!(later.memory_bytes < 512 << 20, "{later:?}");

    let both = stats.usage(&[unit(&busy_unit), unit(&idle_unit), unit("nobody.web.1")]).await;
    assert!(both[&idle_unit].cpu_seconds < later.cpu_seconds, "{both:?}");
    assert!(!both.contains_key("nobody.web.1"), "a unit with no container has no reading");
    assert_eq!(stats.usage(&[]).await.len(), 0, "only the units asked about are read");
}
