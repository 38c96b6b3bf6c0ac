//! A `Scheduler` of your own: here a decorator that counts and prints every change
//! request before handing it to another scheduler (the embedded `LocalScheduler` in
//! the examples). Any implementation proves itself the same way: by passing
//! `deis_core::testing::scheduler_suite` (the `custom_scheduler` example runs it).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use deis_sdk::scheduler::{AppSpec, NodeStatus, RestartFilter, Result, Scheduler, UnitEvent};
use deis_sdk::{AppName, Unit};
use tokio::sync::broadcast;

/// Counts and prints every change request, then delegates.
#[derive(Debug)]
pub struct AuditingScheduler {
    inner: Arc<dyn Scheduler>,
    changes: AtomicU64,
}

impl AuditingScheduler {
    /// Audits `inner`.
    pub fn new(inner: Arc<dyn Scheduler>) -> Self {
        Self { inner, changes: AtomicU64::new(0) }
    }

    /// Change requests (apply, remove, restart) seen so far.
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Relaxed)
    }

    fn audit(&self, what: std::fmt::Arguments<'_>) {
        self.changes.fetch_add(1, Ordering::Relaxed);
        println!("audit: {what}");
    }
}

#[async_trait]
impl Scheduler for AuditingScheduler {
    async fn apply(&self, spec: AppSpec) -> Result<()> {
        let formation: Vec<String> = spec.processes.iter().map(|(t, p)| format!("{t}={}", p.count)).collect();
        self.audit(format_args!("apply {} v{} {}", spec.app, spec.release, formation.join(" ")));
        self.inner.apply(spec).await
    }

    async fn remove(&self, app: &AppName) -> Result<()> {
        self.audit(format_args!("remove {app}"));
        self.inner.remove(app).await
    }

    async fn units(&self, app: &AppName) -> Result<Vec<Unit>> {
        self.inner.units(app).await
    }

    async fn restart(&self, app: &AppName, filter: RestartFilter) -> Result<Vec<Unit>> {
        self.audit(format_args!("restart {app} {filter:?}"));
        self.inner.restart(app, filter).await
    }

    async fn nodes(&self) -> Result<Vec<NodeStatus>> {
        self.inner.nodes().await
    }

    fn subscribe(&self) -> broadcast::Receiver<UnitEvent> {
        self.inner.subscribe()
    }

    async fn shutdown(&self) {
        self.inner.shutdown().await;
    }
}
