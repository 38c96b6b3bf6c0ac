//! Conformance suites for implementors of the traits (feature `test-util`).
//!
//! Every implementation, embedded default or adapter, runs the suite of its trait in its
//! own tests. Every suite has the same shape: a **factory**, an async closure giving a
//! fresh instance behind an `Arc<dyn Trait>` (called once per case, so cases never see
//! each other's state; an adapter to a shared server can hand out instances scoped to a
//! fresh key prefix, or the same instance each time), plus a **harness** where the suite
//! needs to know something only the backend knows (what it can run):
//!
//! | trait | suite | harness |
//! |---|---|---|
//! | [`Store`](crate::Store) | [`store_suite`], [`lock_suite`] | — |
//! | [`LogStore`](crate::LogStore) | [`logstore_suite`] | — |
//! | [`ServiceBroker`](crate::ServiceBroker) | [`broker_suite`] | [`BrokerHarness`] ([`PlanHarness`]) |
//! | [`Scheduler`](crate::Scheduler) | [`scheduler_suite`] | [`SchedulerHarness`] ([`SourceAppHarness`] for source builds) |
//! | [`TtyBroker`](crate::TtyBroker) | [`tty_suite`] | [`TtyHarness`] ([`SpecHarness`]) |
//! | [`UpdateChannel`](crate::UpdateChannel) | [`update_channel_suite`] | — |
//!
//! A suite panics (failing the calling test) with the case, the step and what it saw.
//!
//! ```no_run
//! use std::sync::Arc;
//! use deis_core::logs::{LogStore, RingLogStore};
//! use deis_core::scheduler::{LocalScheduler, LocalSchedulerConfig, Scheduler};
//! use deis_core::testing::{SourceAppHarness, logstore_suite, scheduler_suite};
//!
//! # async fn f() {
//! // A factory alone: a fresh store per case.
//! logstore_suite(async || Arc::new(RingLogStore::new()) as Arc<dyn LogStore>).await;
//!
//! // A factory and a harness: the suite's sample app as a source build.
//! let state = tempfile::tempdir().unwrap();
//! let make = async || {
//!     let config = LocalSchedulerConfig::new(tempfile::tempdir_in(state.path()).unwrap().keep());
//!     LocalScheduler::new(config).await.unwrap() as Arc<dyn Scheduler>
//! };
//! scheduler_suite(make, &SourceAppHarness::new()).await;
//! # }
//! ```
//!
//! The helpers the suites use to look at processes and to talk HTTP come from the
//! `deis-test-support` crate, which adapter authors may use for their own tests too.

mod broker;
mod logs;
mod scheduler;
mod store;
mod tty;
mod update;

pub use deis_test_support::proc::processes_with_env;

use crate::model::{AppName, ProcessType};

/// `name` as an [`AppName`], for tests and suites whose names are known to be valid;
/// panics (naming what is wrong) when it is not.
pub fn app_name(name: &str) -> AppName {
    AppName::new(name).unwrap_or_else(|e| panic!("app name {name:?}: {e}"))
}

/// `name` as a [`ProcessType`], for tests and suites whose types are known to be valid;
/// panics (naming what is wrong) when it is not.
pub fn process_type(name: &str) -> ProcessType {
    ProcessType::new(name).unwrap_or_else(|e| panic!("process type {name:?}: {e}"))
}

/// A spec of `app` at `release` from `artifact`, running `(type, command, count)`
/// processes that each request `requests`, with `GREETING=hello from v<release>` in its
/// environment: the sample app of the scheduler suites and the backends' own tests.
pub fn sample_spec(
    app: &AppName,
    release: u64,
    artifact: crate::scheduler::Artifact,
    requests: crate::model::limits::Resources,
    processes: &[(&str, &str, u32)],
) -> crate::scheduler::AppSpec {
    let process = |command: &str, count: u32| crate::scheduler::ProcessSpec {
        command: command.into(),
        count,
        resources: requests,
        limits: crate::model::limits::Resources::default(),
        healthcheck: None,
        liveness: None,
    };
    crate::scheduler::AppSpec {
        app: app.clone(),
        release,
        artifact,
        env: std::collections::BTreeMap::from([("GREETING".to_string(), format!("hello from v{release}"))]),
        processes: processes.iter().map(|(t, cmd, n)| (process_type(t), process(cmd, *n))).collect(),
        selector: std::collections::BTreeMap::new(),
        identity: None,
        pull_credentials: None,
    }
}

/// Unit `n` of `app`'s `proc_type` at release 1 on node `n`, in `state`: for tests of
/// what consumes units (log sinks, telemetry, views).
pub fn unit(app: &str, proc_type: &str, number: u32, state: crate::model::UnitState) -> crate::model::Unit {
    crate::model::Unit {
        name: crate::model::Unit::name_for(app, proc_type, number),
        instance: 1,
        app: app_name(app),
        proc_type: process_type(proc_type),
        number,
        release: 1,
        state,
        address: None,
        node: "n".into(),
        started: None,
        restarts: 0,
        pid: None,
    }
}

/// A controller on `store` (local scheduler and artifacts under `dir`, registration
/// open) with user `alice` (password `pw-alice-123`) owning app `app`: for tests and
/// benchmarks of a [`Store`](crate::Store) under the controller's load.
#[cfg(feature = "embedded")]
pub async fn controller_with_app(
    store: std::sync::Arc<dyn crate::Store>,
    dir: &std::path::Path,
    app: &str,
) -> (std::sync::Arc<crate::controller::Controller>, crate::User, AppName) {
    use crate::controller::{Controller, ControllerConfig, RegistrationMode};
    let config = crate::scheduler::LocalSchedulerConfig::new(dir.join("scheduler"));
    let scheduler = crate::scheduler::LocalScheduler::new(config).await.expect("a local scheduler");
    let controller = Controller::new(ControllerConfig {
        store,
        scheduler,
        artifacts: crate::artifact::ArtifactStore::new(dir.join("builds")),
        domain: "deis.test".into(),
        registration: RegistrationMode::Enabled,
        logs: None,
        policy: Default::default(),
    });
    let alice = controller.register(None, "alice", "pw-alice-123", "a@example.com").await.expect("registering alice");
    let app = controller.create_app(&alice, Some(app_name(app))).await.expect("creating the app").id;
    (controller, alice, app)
}

/// How long a suite waits for something that should happen now.
const PROMPT: std::time::Duration = std::time::Duration::from_secs(5);
pub use broker::*;
pub use logs::*;
pub use scheduler::*;
pub use store::*;
pub use tty::*;
pub use update::*;

/// Runs the cases of a suite one after another, logging each one's name:
/// `run_cases!("store", [a, b], |case| case(make().await).await)`, or with methods of a
/// type: `run_cases!("tty", Suite: [a, b], |case| case(&suite).await)`.
macro_rules! run_cases {
    ($suite:literal, $ty:ident: [$($case:ident),+ $(,)?], |$f:ident| $run:expr) => {
        $({
            tracing::info!(suite = $suite, case = stringify!($case), "conformance case");
            let $f = $ty::$case;
            $run;
        })+
    };
    ($suite:literal, [$($case:ident),+ $(,)?], |$f:ident| $run:expr) => {
        $({
            tracing::info!(suite = $suite, case = stringify!($case), "conformance case");
            let $f = $case;
            $run;
        })+
    };
}
use run_cases;
