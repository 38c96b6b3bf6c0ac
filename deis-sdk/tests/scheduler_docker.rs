//! [`DockerScheduler`] against real Docker engines (one that answers, or private
//! dockerds) with a busybox image built offline: the `scheduler_suite` conformance
//! suite, and placement over two engines standing in for two hosts.
#![cfg(feature = "docker")]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deis_sdk::deis_core::model::limits::Resources;
use deis_sdk::deis_core::model::{AppName, Unit};
use deis_sdk::deis_core::scheduler::{AppSpec, Artifact, ProcessSpec, Scheduler};
use deis_sdk::deis_core::store::RedbStore;
use deis_sdk::deis_core::testing::{SchedulerHarness, process_type, scheduler_suite};
use deis_sdk::scheduler::docker::{DockerHost, DockerScheduler, DockerSchedulerConfig, LABEL_UNIT};
use deis_test_support::Service;
use deis_test_support::docker::DockerEngine;

/// The suite's sample app on busybox: `web` serves `<DEIS_UNIT> <GREETING>` with
/// busybox httpd on its `PORT`; `worker` sleeps. A crash is a `SIGKILL` through the
/// engine.
struct BusyboxHarness {
    image: String,
    engines: Vec<&'static DockerEngine>,
}

const WEB: &str = "mkdir -p /tmp/www && echo \"$DEIS_UNIT $GREETING\" > /tmp/www/index.html \
    && exec httpd -f -p 127.0.0.1:$PORT -h /tmp/www";

#[async_trait]
impl SchedulerHarness for BusyboxHarness {
    fn sample_app(&self, app: &AppName, release: u64) -> AppSpec {
        let process = |command: &str| ProcessSpec {
            command: command.into(),
            count: 1,
            resources: Resources { cpu_millis: 100, memory_bytes: 32 << 20 },
            healthcheck: None,
        };
        AppSpec {
            app: app.clone(),
            release,
            artifact: Artifact::Image { reference: self.image.clone() },
            env: BTreeMap::from([("GREETING".to_string(), format!("hello from v{release}"))]),
            processes: BTreeMap::from([
                (process_type("web"), process(WEB)),
                (process_type("worker"), process("exec sleep 3600")),
            ]),
            selector: BTreeMap::new(),
        }
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
