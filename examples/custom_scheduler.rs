//! A `Scheduler` of your own: here a decorator that audits every call before handing
//! it to the embedded `LocalScheduler`. Any implementation proves itself the same way:
//! by passing `deis_core::testing::scheduler_suite`, as this example does when run.
//!
//! `cargo run -p deis-examples --example custom_scheduler`

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use deis_sdk::deis_core::Unit;
use deis_sdk::deis_core::model::limits::Resources;
use deis_sdk::deis_core::scheduler::{
    AppSpec, Artifact, LocalScheduler, LocalSchedulerConfig, NodeStatus, ProcessSpec, RestartFilter, Result, Scheduler,
    UnitEvent,
};
use deis_sdk::deis_core::testing::{SchedulerHarness, scheduler_suite};
use tokio::sync::broadcast;

/// Counts and prints every change request, then delegates.
#[derive(Debug)]
struct AuditingScheduler {
    inner: Arc<dyn Scheduler>,
    changes: AtomicU64,
}

#[async_trait]
impl Scheduler for AuditingScheduler {
    async fn apply(&self, spec: AppSpec) -> Result<()> {
        self.changes.fetch_add(1, Ordering::Relaxed);
        let formation: Vec<String> = spec.processes.iter().map(|(t, p)| format!("{t}={}", p.count)).collect();
        println!("audit: apply {} v{} {}", spec.app, spec.release, formation.join(" "));
        self.inner.apply(spec).await
    }
    async fn remove(&self, app: &str) -> Result<()> {
        self.changes.fetch_add(1, Ordering::Relaxed);
        println!("audit: remove {app}");
        self.inner.remove(app).await
    }
    async fn units(&self, app: &str) -> Result<Vec<Unit>> {
        self.inner.units(app).await
    }
    async fn restart(&self, app: &str, filter: RestartFilter) -> Result<Vec<Unit>> {
        self.changes.fetch_add(1, Ordering::Relaxed);
        println!("audit: restart {app} {filter:?}");
        self.inner.restart(app, filter).await
    }
    async fn nodes(&self) -> Result<Vec<NodeStatus>> {
        self.inner.nodes().await
    }
    fn subscribe(&self) -> broadcast::Receiver<UnitEvent> {
        self.inner.subscribe()
    }
}

/// Specs the suite runs: a Python web process that names its unit, and a sleeper.
struct Harness {
    dir: PathBuf,
}

impl SchedulerHarness for Harness {
    fn sample_app(&self, app: &str, release: u64) -> AppSpec {
        let proc = |command: &str| ProcessSpec {
            command: command.into(),
            count: 1,
            resources: Resources { cpu_millis: 10, memory_bytes: 16 << 20 },
            healthcheck: None,
        };
        AppSpec {
            app: app.into(),
            release,
            artifact: Artifact::Source { dir: self.dir.clone() },
            env: BTreeMap::new(),
            processes: BTreeMap::from([
                ("web".to_string(), proc("exec python3 web.py")),
                ("worker".to_string(), proc("exec sleep 3600")),
            ]),
        }
    }
}

#[tokio::main]
async fn main() {
    let state = std::env::temp_dir().join(format!("deis-custom-scheduler-{}", std::process::id()));
    let local = LocalScheduler::new(LocalSchedulerConfig::new(&state)).await.expect("local scheduler");
    let audited = AuditingScheduler { inner: local.clone(), changes: AtomicU64::new(0) };
    let harness = Harness { dir: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("apps/hello") };
    scheduler_suite(&audited, &harness).await;
    println!("conformance suite passed; {} change requests audited", audited.changes.load(Ordering::Relaxed));
    local.shutdown().await;
    std::fs::remove_dir_all(&state).ok();
}
