//! A `Scheduler` of your own, proven by the conformance suite: the
//! [`AuditingScheduler`] decorator over the embedded `LocalScheduler` runs
//! `deis_core::testing::scheduler_suite`, as any implementation must.
//!
//! `cargo run -p deis-examples --example custom_scheduler`

use std::collections::BTreeMap;
use std::path::PathBuf;

use deis_examples::AuditingScheduler;
use deis_sdk::model::limits::Resources;
use deis_sdk::scheduler::{AppSpec, Artifact, LocalScheduler, LocalSchedulerConfig, ProcessSpec};
use deis_sdk::testing::{SchedulerHarness, scheduler_suite};

/// Specs the suite runs: the hello app's Python web process and a sleeper.
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
    let state = tempfile::tempdir().expect("a temporary directory");
    let local = LocalScheduler::new(LocalSchedulerConfig::new(state.path())).await.expect("local scheduler");
    let audited = AuditingScheduler::new(local.clone());
    let harness = Harness { dir: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("apps/hello") };
    scheduler_suite(&audited, &harness).await;
    println!("conformance suite passed; {} change requests audited", audited.changes());
    local.shutdown().await;
}
