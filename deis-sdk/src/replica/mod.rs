//! Several `deisd` replicas on one shared store (etcd): every replica serves the API
//! and routes, exactly one (elected) runs the units.
//!
//! # Design
//!
//! Each replica builds its [`Controller`] on a [`ReplicatedScheduler`] wrapped around
//! its own real scheduler (the local one, say). Replicas campaign in the election
//! `scheduler` ([`lock::elect`], a key under a lease, on etcd's lease and transaction
//! primitives). While a replica leads:
//!
//! - it converges every app on the store ([`Controller::reconcile_all`]) with its real
//!   scheduler, so a new leader starts the units of the one that died;
//! - it serves scheduler requests from the other replicas: a follower's
//!   [`Scheduler::apply`] (and `remove`, `restart`, `nodes`) writes the request to
//!   `scheduler/requests/<id>` and waits for `scheduler/answers/<id>`. The leader
//!   claims a request by deleting it in a transaction (so a request is run at most
//!   once, even if the follower gives up at the same moment), runs it on its real
//!   scheduler and writes the answer: admission or the refusal (e.g. the capacity
//!   error), which the follower's controller treats exactly like a local answer, so a
//!   refused change is never committed;
//! - it mirrors its units into `scheduler/units/<app>/<unit>#<instance>`, from which
//!   followers answer [`Scheduler::units`] (`deis ps`);
//! - its publisher writes the units' endpoints, which every replica's router follows.
//!
//! Answers and unit records live under the leadership's lease: when the leader dies,
//! they vanish with it. When a leader loses its lease while still running (a network
//! partition, a stall longer than the TTL), it stops its units before campaigning
//! again, so two replicas never run an app's units for longer than the keep-alive
//! slack.
//!
//! With the local scheduler, units are child processes: when the leading replica dies
//! they die with it (parent-death signal), and the next leader starts them again from
//! the store, within about the election TTL. The router drops the dead units when the
//! dead leader's endpoint lease expires (the same TTL) and routes to the new ones.
//! A leader stopped gracefully (SIGTERM, as the update agent does before replacing its
//! binary) resigns first and keeps its units serving until the next leader's units are
//! routed (`handoff`), so a rolling restart of the replicas drops no request.
//!
//! Source builds are unpacked from `<data dir>/builds`: every replica must see the same
//! directory there (shared storage), or use image builds.

mod handoff;
mod wire;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use deis_core::controller::Controller;
use deis_core::scheduler::{AppSpec, NodeStatus, RestartFilter, Result, Scheduler, SchedulerError, UnitEvent};
use deis_core::store::lock::{self, Leadership};
use deis_core::store::records::{self};
use deis_core::store::{EventKind, KeyValue, LeaseId, Store, StoreError, Txn};
use deis_core::{AppName, Unit};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use wire::{Answer, Reply, Request};

/// The election replicas campaign in.
pub const ELECTION: &str = "scheduler";
/// Prefix of requests from followers.
pub const REQUESTS_PREFIX: &str = "scheduler/requests/";
/// Prefix of the leader's answers.
pub const ANSWERS_PREFIX: &str = "scheduler/answers/";
/// Prefix of the leader's unit records.
pub const UNITS_PREFIX: &str = "scheduler/units/";

/// Settings of a replica.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ReplicaConfig {
    /// This replica's id (unique among the replicas): shown as the leader's name, and
    /// the node name of the endpoints it publishes.
    pub id: String,
    /// TTL of the leadership lease: how long the units go unattended when the leader
    /// dies.
    pub ttl: Duration,
    /// How long a follower waits for the leader to answer a request.
    pub answer_timeout: Duration,
    /// How long a leader stopping gracefully keeps its units running after resigning,
    /// waiting for the next leader to serve its apps (the hand-off).
    pub handoff_timeout: Duration,
}

impl ReplicaConfig {
    /// Defaults: 3 s leadership TTL, 30 s answer timeout, 30 s hand-off.
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            ttl: Duration::from_secs(3),
            answer_timeout: Duration::from_secs(30),
            handoff_timeout: Duration::from_secs(30),
        }
    }
}

/// The scheduler of a replica: the real one while this replica leads, the leader
/// (through the store) otherwise. See the [module docs](self).
#[derive(Debug)]
pub struct ReplicatedScheduler {
    store: Arc<dyn Store>,
    local: Arc<dyn Scheduler>,
    config: ReplicaConfig,
    /// The leadership lease while this replica leads.
    leading: watch::Sender<Option<LeaseId>>,
    /// Apps this replica's real scheduler was given, to stop when leadership is lost.
    local_apps: Mutex<BTreeSet<AppName>>,
}

impl ReplicatedScheduler {
    /// Wraps `local`, the scheduler this replica runs units with when it leads.
    pub fn new(store: Arc<dyn Store>, local: Arc<dyn Scheduler>, config: ReplicaConfig) -> Arc<Self> {
        Arc::new(Self {
            store,
            local,
            config,
            leading: watch::channel(None).0,
            local_apps: Mutex::new(BTreeSet::new()),
        })
    }

    /// Whether this replica leads now.
    pub fn is_leader(&self) -> bool {
        self.leading.borrow().is_some()
    }

    /// Changes of leadership (`Some(lease)` while leading).
    pub fn leadership(&self) -> watch::Receiver<Option<LeaseId>> {
        self.leading.subscribe()
    }

    /// The real scheduler (for the publisher: it publishes what runs here).
    pub fn local(&self) -> &Arc<dyn Scheduler> {
        &self.local
    }

    /// This replica's settings.
    pub fn config(&self) -> &ReplicaConfig {
        &self.config
    }

    async fn forward(&self, request: Request) -> Result<Reply> {
        let id = uuid::Uuid::new_v4();
        let (key, answer_key) = (format!("{REQUESTS_PREFIX}{id}"), format!("{ANSWERS_PREFIX}{id}"));
        let res = self.store.txn(Txn::new().when(&key, 0).put(&key, records::encode(&request))).await.map_err(store)?;
        // Watching from the request's own revision: the answer can't come earlier.
        let mut w = self.store.watch(&answer_key, res.revision).await.map_err(store)?;
        let wait = self.config.answer_timeout;
        let answer = match tokio::time::timeout(wait, next_answer(&mut w)).await {
            Ok(answer) => answer,
            Err(_) => {
                // Withdraw the request unless the leader claimed it meanwhile.
                let withdrawn =
                    self.store.txn(Txn::new().when(&key, res.revision).delete(&key)).await.map_err(store)?;
                if withdrawn.succeeded {
                    return Err(SchedulerError::Backend(
                        format!("no deisd replica leads the scheduler (none answered within {wait:?}); check that one runs and reaches the store").into(),
                    ));
                }
                tokio::time::timeout(wait, next_answer(&mut w)).await.map_err(|_| {
                    SchedulerError::Backend(
                        "the leading deisd replica took the request but did not answer (it may have died); check `deis ps` and try again".into(),
                    )
                })?
            }
        };
        let _ = self.store.delete(&answer_key).await;
        answer?.result.map_err(SchedulerError::from)
    }

    fn remember(&self, app: &AppName, running: bool) {
        let mut apps = self.local_apps.lock().expect("app set");
        if running {
            apps.insert(app.clone());
        } else {
            apps.remove(app);
        }
    }

    /// Stops every unit this replica runs (leadership lost).
    async fn stop_local_units(&self) {
        let apps = std::mem::take(&mut *self.local_apps.lock().expect("app set"));
        for app in apps {
            if let Err(e) = self.local.remove(&app).await {
                tracing::error!(%app, error = %e, "stopping the units of a lost leadership failed");
            }
        }
    }
}

fn store(e: StoreError) -> SchedulerError {
    SchedulerError::backend(e)
}

async fn next_answer(w: &mut deis_core::store::Watch) -> Result<Answer> {
    loop {
        match w.next().await {
            Some(Ok(e)) if e.kind == EventKind::Put => {
                return serde_json::from_slice(&e.kv.value)
                    .map_err(|e| SchedulerError::Backend(format!("unreadable answer of the leader: {e}").into()));
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(store(e)),
            None => return Err(SchedulerError::Backend("the store closed the watch of an answer".into())),
        }
    }
}

#[async_trait]
impl Scheduler for ReplicatedScheduler {
    async fn apply(&self, spec: AppSpec) -> Result<()> {
        if self.is_leader() {
            let app = spec.app.clone();
            self.local.apply(spec).await?;
            self.remember(&app, true);
            return Ok(());
        }
        self.forward(Request::Apply { spec }).await.map(drop)
    }

    async fn remove(&self, app: &AppName) -> Result<()> {
        if self.is_leader() {
            self.local.remove(app).await?;
            self.remember(app, false);
            return Ok(());
        }
        self.forward(Request::Remove { app: app.clone() }).await.map(drop)
    }

    async fn units(&self, app: &AppName) -> Result<Vec<Unit>> {
        if self.is_leader() {
            return self.local.units(app).await;
        }
        let mut units: Vec<Unit> =
            records::list_json(&*self.store, &format!("{UNITS_PREFIX}{app}/")).await.map_err(store)?;
        units.sort_by(|a, b| (&a.name, a.instance).cmp(&(&b.name, b.instance)));
        Ok(units)
    }

    async fn restart(&self, app: &AppName, filter: RestartFilter) -> Result<Vec<Unit>> {
        if self.is_leader() {
            return self.local.restart(app, filter).await;
        }
        match self.forward(Request::Restart { app: app.clone(), filter }).await? {
            Reply::Units(units) => Ok(units),
            other => Err(SchedulerError::Backend(format!("unexpected answer to a restart: {other:?}").into())),
        }
    }

    async fn nodes(&self) -> Result<Vec<NodeStatus>> {
        if self.is_leader() {
            return self.local.nodes().await;
        }
        match self.forward(Request::Nodes).await? {
            Reply::Nodes(nodes) => Ok(nodes),
            other => Err(SchedulerError::Backend(format!("unexpected answer to nodes: {other:?}").into())),
        }
    }

    fn subscribe(&self) -> broadcast::Receiver<UnitEvent> {
        self.local.subscribe()
    }

    async fn shutdown(&self) {
        self.local.shutdown().await;
    }
}

/// The replica's leadership loop: campaigns, and while leading converges the apps,
/// serves followers and mirrors units; steps down (stopping the units) when the lease
/// is lost, and campaigns again. Runs until `stop` resolves, then resigns.
pub fn run_replica(
    scheduler: Arc<ReplicatedScheduler>,
    controller: Arc<Controller>,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let s = scheduler.clone();
        loop {
            let campaign = lock::elect(s.store.clone(), ELECTION, &s.config.id, s.config.ttl);
            let leadership = tokio::select! {
                l = campaign => l,
                _ = stop.wait_for(|s| *s) => return,
            };
            let leadership = match leadership {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "campaigning for the scheduler failed; trying again");
                    tokio::select! {
                        () = tokio::time::sleep(s.config.ttl / 3) => continue,
                        _ = stop.wait_for(|s| *s) => return,
                    }
                }
            };
            tracing::info!(replica = %s.config.id, term = leadership.term(), "leading the scheduler");
            s.leading.send_replace(Some(leadership.lease()));
            let work = lead(s.clone(), controller.clone(), &leadership);
            let stopped = tokio::select! {
                () = work => false,
                () = leadership.lost() => false,
                _ = stop.wait_for(|s| *s) => true,
            };
            s.leading.send_replace(None);
            if stopped {
                // Resigning lets the next replica take over at once; this one's units
                // serve until the new leader's do, then the platform's shutdown
                // withdraws their endpoints and stops them.
                let _ = leadership.resign().await;
                handoff::hand_off(&s).await;
                return;
            }
            tracing::warn!(replica = %s.config.id, "lost the scheduler leadership; stopping this replica's units");
            drop(leadership);
            s.stop_local_units().await;
        }
    })
}

/// What a leader does until its leadership ends (never returns by itself).
async fn lead(s: Arc<ReplicatedScheduler>, controller: Arc<Controller>, leadership: &Leadership) {
    let lease = leadership.lease();
    let events = s.local.subscribe();
    controller.reconcile_all().await;
    // What reconcile applied belongs to this replica now.
    if let Ok(apps) = s.store.list("apps/").await {
        for kv in &apps.kvs {
            if let Ok(app) = AppName::new(kv.key.trim_start_matches("apps/")) {
                s.remember(&app, true);
            }
        }
    }
    tokio::join!(serve_requests(s.clone(), lease), mirror_units(s.clone(), lease, events));
}

/// Answers followers' requests until the leadership ends.
async fn serve_requests(s: Arc<ReplicatedScheduler>, lease: LeaseId) {
    loop {
        let listing = match s.store.list(REQUESTS_PREFIX).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "listing scheduler requests failed; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        for kv in listing.kvs {
            tokio::spawn(handle(s.clone(), lease, kv));
        }
        let Ok(mut w) = s.store.watch(REQUESTS_PREFIX, listing.revision + 1).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        while let Some(Ok(e)) = w.next().await {
            if e.kind == EventKind::Put {
                tokio::spawn(handle(s.clone(), lease, e.kv));
            }
        }
    }
}

/// Claims one request (deleting it), runs it, writes the answer under `lease`.
async fn handle(s: Arc<ReplicatedScheduler>, lease: LeaseId, kv: KeyValue) {
    let claimed = s.store.txn(Txn::new().when(&kv.key, kv.mod_revision).delete(&kv.key)).await;
    if !claimed.is_ok_and(|r| r.succeeded) {
        return; // withdrawn, or claimed by another term
    }
    let id = kv.key.trim_start_matches(REQUESTS_PREFIX);
    let result = match serde_json::from_slice::<Request>(&kv.value) {
        Err(e) => Err(SchedulerError::Invalid(format!("unreadable scheduler request: {e}"))),
        Ok(Request::Apply { spec }) => {
            let app = spec.app.clone();
            s.local.apply(spec).await.map(|()| {
                s.remember(&app, true);
                Reply::Done
            })
        }
        Ok(Request::Remove { app }) => s.local.remove(&app).await.map(|()| {
            s.remember(&app, false);
            Reply::Done
        }),
        Ok(Request::Restart { app, filter }) => s.local.restart(&app, filter).await.map(Reply::Units),
        Ok(Request::Nodes) => s.local.nodes().await.map(Reply::Nodes),
    };
    let answer = records::encode(&Answer::from(result));
    let key = format!("{ANSWERS_PREFIX}{id}");
    if let Err(e) = s.store.txn(Txn::new().put_leased(&key, answer, lease)).await {
        tracing::warn!(request = id, error = %e, "writing a scheduler answer failed");
    }
}

/// Keeps `scheduler/units/<app>/` equal to the real scheduler's units of each app
/// that changes, under `lease`.
async fn mirror_units(s: Arc<ReplicatedScheduler>, lease: LeaseId, mut events: broadcast::Receiver<UnitEvent>) {
    let apps: Vec<AppName> = s.local_apps.lock().expect("app set").iter().cloned().collect();
    for app in apps {
        mirror_app(&s, lease, &app).await;
    }
    loop {
        match events.recv().await {
            Ok(e) => mirror_app(&s, lease, &e.unit.app).await,
            Err(broadcast::error::RecvError::Lagged(_)) => {
                let apps: Vec<AppName> = s.local_apps.lock().expect("app set").iter().cloned().collect();
                for app in apps {
                    mirror_app(&s, lease, &app).await;
                }
            }
            Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
        }
    }
}

async fn mirror_app(s: &ReplicatedScheduler, lease: LeaseId, app: &AppName) {
    let units = match s.local.units(app).await {
        Ok(u) => u,
        Err(e) => {
            tracing::debug!(%app, error = %e, "reading units to mirror failed");
            return;
        }
    };
    let prefix = format!("{UNITS_PREFIX}{app}/");
    let wanted: Vec<(String, Vec<u8>)> =
        units.iter().map(|u| (format!("{prefix}{}#{}", u.name, u.instance), records::encode(u))).collect();
    // Records of units gone are deleted one by one: etcd refuses a transaction that
    // deletes a range and writes into it.
    let existing = match s.store.list(&prefix).await {
        Ok(l) => l.kvs,
        Err(e) => {
            tracing::warn!(%app, error = %e, "reading unit records failed");
            return;
        }
    };
    let mut txn = Txn::new();
    for kv in existing.iter().filter(|kv| !wanted.iter().any(|(k, _)| *k == kv.key)) {
        txn = txn.delete(&kv.key);
    }
    for (key, value) in wanted {
        txn = txn.put_leased(key, value, lease);
    }
    if let Err(e) = s.store.txn(txn).await {
        tracing::warn!(%app, error = %e, "mirroring units into the store failed");
    }
}
