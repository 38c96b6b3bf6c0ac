//! A `Scheduler` of your own, proven by the conformance suite: the
//! [`AuditingScheduler`] decorator over the embedded `LocalScheduler` runs
//! `deis_core::testing::scheduler_suite`, as any implementation must.
//!
//! `cargo run -p deis-examples --example custom_scheduler`

use std::sync::Arc;

use deis_examples::AuditingScheduler;
use deis_sdk::scheduler::{LocalScheduler, LocalSchedulerConfig, Scheduler};
use deis_sdk::testing::{SourceAppHarness, scheduler_suite};

#[tokio::main]
async fn main() {
    let state = tempfile::tempdir().expect("a temporary directory");
    let local = LocalScheduler::new(LocalSchedulerConfig::new(state.path())).await.expect("local scheduler");
    let audited = Arc::new(AuditingScheduler::new(local.clone()));
    // Every case gets the same scheduler; the harness runs the suite's sample app.
    scheduler_suite(async || audited.clone() as Arc<dyn Scheduler>, &SourceAppHarness::new()).await;
    println!("conformance suite passed; {} change requests audited", audited.changes());
    local.shutdown().await;
}
