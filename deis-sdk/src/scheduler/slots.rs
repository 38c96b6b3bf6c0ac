//! What the engine-driving backends (Kubernetes, Marathon) share: each unit slot
//! `<app>.<type>.<n>` is one object of the engine (a Deployment, a Marathon app) running
//! one instance, which the engine rolls on its own (new before old); this module decides
//! which slots change and rolls them one at a time, admits specs with the placement
//! engine, and turns polled unit states into [`UnitEvent`]s.
//!
//! Why one engine object per slot rather than one per process type: a Deis unit has a
//! stable name in its environment (`DEIS_UNIT`) and a number (scaling down removes the
//! highest), which the interchangeable replicas of one Deployment or Marathon app
//! cannot carry.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deis_core::model::limits::Resources;
use deis_core::model::{AppName, ProcessType, Unit, UnitState};
use deis_core::scheduler::placement::{ClusterState, NodeInfo, Policy, Slot, Snapshot, UnitRequest};
use deis_core::scheduler::{AppSpec, NodeStatus, RestartFilter, Result, SchedulerError, UnitEvent};
use sha2::Digest;
use tokio::sync::{Mutex, broadcast};
use tokio::time::Instant;

/// One slot of an app: process type and number.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct SlotKey {
    /// Process type.
    pub proc_type: ProcessType,
    /// Number, from 1.
    pub number: u32,
}

/// What identifies the unit a slot's engine object runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SlotRecord {
    /// Hash of everything the unit runs with ([`spec_hash`]).
    pub hash: String,
    /// The unit's instance: new whenever the slot is rolled.
    pub instance: u64,
}

/// A unit as the engine shows it, with why it last stopped where known.
#[derive(Debug, Clone)]
pub(crate) struct Observed {
    /// The unit.
    pub unit: Unit,
    /// Why its process last ended (`exit status 3`).
    pub reason: Option<String>,
}

/// An engine's objects, seen slot by slot.
#[async_trait]
pub(crate) trait SlotBackend: Send + Sync + Debug + 'static {
    /// Creates what the app's slots live in (a namespace, services); idempotent.
    async fn prepare(&self, spec: &AppSpec) -> Result<()>;
    /// The app's slots as the engine has them.
    async fn slots(&self, app: &AppName) -> Result<BTreeMap<SlotKey, SlotRecord>>;
    /// Creates or replaces the object of slot `key` to run `record.instance` of `spec`;
    /// the engine replaces the running instance new before old.
    async fn put(&self, spec: &AppSpec, key: &SlotKey, record: &SlotRecord) -> Result<()>;
    /// Deletes the object of slot `key` (its unit stops).
    async fn delete(&self, app: &AppName, key: &SlotKey) -> Result<()>;
    /// Every unit of the app, including those being replaced or stopped.
    async fn units(&self, app: &AppName) -> Result<Vec<Observed>>;
    /// Deletes everything of the app; returns once no unit of it runs.
    async fn remove(&self, app: &AppName) -> Result<()>;
    /// The nodes, their capacity and what units hold there.
    async fn nodes(&self) -> Result<Vec<NodeStatus>>;
    /// Whether node labels are known, so that admission checks the app's tags against
    /// them (otherwise the engine applies them).
    fn checks_labels(&self) -> bool {
        true
    }
}

/// How often unit states are polled for events.
const POLL: Duration = Duration::from_millis(100);
/// Pause between two looks at a rolling slot.
const ROLL_POLL: Duration = Duration::from_millis(50);

/// Hash of what a unit of type `proc_type` runs with: a change rolls its slots.
pub(crate) fn spec_hash(spec: &AppSpec, proc_type: &ProcessType) -> String {
    let process = spec.processes.get(proc_type);
    let what = (
        spec.release,
        &spec.artifact,
        &spec.env,
        process.map(|p| (&p.command, p.resources, &p.healthcheck, &p.liveness)),
        &spec.selector,
    );
    let json = serde_json::to_vec(&what).unwrap_or_default();
    hex::encode(&sha2::Sha256::digest(&json)[..8])
}

/// A new instance number.
fn fresh_instance() -> u64 {
    // 53 bits, so it survives a JSON number in any client.
    uuid::Uuid::new_v4().as_u64_pair().0 >> 11
}

#[derive(Debug)]
struct AppState {
    spec: AppSpec,
    /// Slots a restart gave a new instance, until rolled.
    forced: BTreeMap<SlotKey, u64>,
    rollout: Option<tokio::task::JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct State {
    apps: HashMap<AppName, AppState>,
}

/// A `Scheduler` over a [`SlotBackend`]; the backends wrap it.
#[derive(Debug)]
pub(crate) struct SlotScheduler<B: SlotBackend> {
    backend: Arc<B>,
    policy: Policy,
    state: Arc<Mutex<State>>,
    events: broadcast::Sender<UnitEvent>,
    observer: Arc<Observer>,
    poller: tokio::task::JoinHandle<()>,
    /// How long one slot may take to roll before the next one goes anyway.
    settle_timeout: Duration,
}

impl<B: SlotBackend> Drop for SlotScheduler<B> {
    fn drop(&mut self) {
        self.poller.abort();
    }
}

impl<B: SlotBackend> SlotScheduler<B> {
    /// A scheduler over `backend`, placing with `policy` for admission.
    pub fn new(backend: B, policy: Policy, settle_timeout: Duration) -> Self {
        let backend = Arc::new(backend);
        let state: Arc<Mutex<State>> = Arc::default();
        let (events, _) = broadcast::channel(1024);
        let observer = Arc::new(Observer { last: Mutex::default(), events: events.clone() });
        let poller = tokio::spawn(poll_events(backend.clone(), state.clone(), observer.clone()));
        Self { backend, policy, state, events, observer, poller, settle_timeout }
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<B> {
        &self.backend
    }

    /// Refuses specs that do not fit on the nodes, with what the other apps hold.
    async fn admit(&self, spec: &AppSpec) -> Result<()> {
        let nodes = self.backend.nodes().await?;
        let units = self.backend.units(&spec.app).await?;
        let current = self.state.lock().await.apps.get(&spec.app).map(|a| a.spec.clone());
        // What this app holds now per node (by its current spec), so that it is not
        // counted twice.
        let mut own: HashMap<&str, Resources> = HashMap::new();
        let single = (nodes.len() == 1).then(|| nodes[0].name.as_str());
        for o in &units {
            // An engine that shows the cluster as one node names agents in units.
            let node = match single {
                Some(only) if !nodes.iter().any(|n| n.name == o.unit.node) => only,
                _ => o.unit.node.as_str(),
            };
            let r = current.as_ref().and_then(|s| s.processes.get(&o.unit.proc_type)).map(|p| p.resources);
            let e = own.entry(node).or_default();
            let r = r.unwrap_or_default();
            e.cpu_millis += r.cpu_millis;
            e.memory_bytes += r.memory_bytes;
        }
        let infos = nodes.iter().map(|n| {
            let mut info = NodeInfo::new(n.name.clone(), n.capacity).planes(n.planes);
            info.labels = n.labels.clone();
            (info, n.health)
        });
        let mut cluster = ClusterState::new(0, infos);
        let others = AppName::new("deis-others").map_err(|e| SchedulerError::Invalid(e.to_string()))?;
        let held = ProcessType::new("held").map_err(|e| SchedulerError::Invalid(e.to_string()))?;
        for (i, n) in nodes.iter().enumerate() {
            let mine = own.get(n.name.as_str()).copied().unwrap_or_default();
            let r = Resources {
                cpu_millis: n.allocated.cpu_millis.saturating_sub(mine.cpu_millis),
                memory_bytes: n.allocated.memory_bytes.saturating_sub(mine.memory_bytes),
            };
            let slot = Slot::new(others.clone(), held.clone(), i as u32 + 1);
            cluster.hold(UnitRequest::new(slot, r), &n.name);
        }
        let want: Vec<UnitRequest> = spec
            .processes
            .iter()
            .flat_map(|(t, p)| {
                (1..=p.count).map(move |n| {
                    let request = UnitRequest::new(Slot::new(spec.app.clone(), t.clone(), n), p.resources);
                    if self.backend.checks_labels() { request.selector(spec.selector.clone()) } else { request }
                })
            })
            .collect();
        match Snapshot::new(cluster).plan_app(self.policy, &spec.app, &want) {
            Ok(_) => Ok(()),
            Err(e @ deis_core::scheduler::placement::PlacementError::UnknownLabel { .. }) => {
                Err(SchedulerError::Invalid(e.to_string()))
            }
            Err(e) => Err(SchedulerError::Capacity(e.to_string())),
        }
    }

    /// Sets the app's desired state and starts rolling the slots that change.
    pub async fn apply(&self, spec: AppSpec) -> Result<()> {
        for (t, p) in &spec.processes {
            if p.count > 0
                && p.command.trim().is_empty()
                && matches!(spec.artifact, deis_core::scheduler::Artifact::Source { .. })
            {
                return Err(SchedulerError::Invalid(format!("process type {t} has no command")));
            }
        }
        self.admit(&spec).await?;
        let mut state = self.state.lock().await;
        let app = spec.app.clone();
        let entry = state.apps.entry(app.clone()).or_insert_with(|| AppState {
            spec: spec.clone(),
            forced: BTreeMap::new(),
            rollout: None,
        });
        entry.spec = spec;
        self.reconcile(entry).await
    }

    /// Brings the engine's slots of `app` towards its spec: creates and deletes slots
    /// at once, and rolls changed ones one at a time in the background.
    async fn reconcile(&self, app: &mut AppState) -> Result<()> {
        let spec = app.spec.clone();
        self.backend.prepare(&spec).await?;
        let current = self.backend.slots(&spec.app).await?;
        for key in current.keys() {
            let wanted = spec.processes.get(&key.proc_type).is_some_and(|p| key.number <= p.count);
            if !wanted {
                self.backend.delete(&spec.app, key).await?;
            }
        }
        let mut changed = vec![];
        for (t, p) in &spec.processes {
            let hash = spec_hash(&spec, t);
            for number in 1..=p.count {
                let key = SlotKey { proc_type: t.clone(), number };
                let now = current.get(&key);
                let instance = match (app.forced.get(&key), now) {
                    (Some(i), _) => *i,
                    (None, Some(r)) if r.hash == hash => r.instance,
                    _ => fresh_instance(),
                };
                let record = SlotRecord { hash: hash.clone(), instance };
                match now {
                    None => self.backend.put(&spec, &key, &record).await?,
                    Some(r) if *r == record => {}
                    Some(_) => changed.push((key, record)),
                }
            }
        }
        if let Some(task) = app.rollout.take() {
            task.abort();
        }
        if !changed.is_empty() {
            let (backend, timeout, state) = (self.backend.clone(), self.settle_timeout, self.state.clone());
            app.rollout = Some(tokio::spawn(roll(backend, state, spec, changed, timeout)));
        }
        Ok(())
    }

    /// See [`Scheduler::remove`](deis_core::Scheduler::remove).
    pub async fn remove(&self, app: &AppName) -> Result<()> {
        if let Some(mut a) = self.state.lock().await.apps.remove(app)
            && let Some(task) = a.rollout.take()
        {
            task.abort();
        }
        self.backend.remove(app).await
    }

    /// Units of `app`, sorted by name.
    pub async fn units(&self, app: &AppName) -> Result<Vec<Unit>> {
        // What callers see has been announced: an event never lags a listing.
        let mut units: Vec<Unit> =
            self.observer.observe(&*self.backend, app).await?.into_iter().map(|o| o.unit).collect();
        units.sort_by(|a, b| (&a.name, a.instance).cmp(&(&b.name, b.instance)));
        Ok(units)
    }

    /// Rolls the matching slots, one at a time, and returns their new units.
    pub async fn restart(&self, app: &AppName, filter: RestartFilter) -> Result<Vec<Unit>> {
        let mut state = self.state.lock().await;
        let Some(entry) = state.apps.get_mut(app) else {
            return Err(SchedulerError::NotFound(format!("app {app} (apply it first)")));
        };
        let current = self.backend.slots(app).await?;
        let matching: Vec<SlotKey> = current
            .keys()
            .filter(|k| filter.proc_type.as_ref().is_none_or(|t| *t == k.proc_type))
            .filter(|k| filter.unit.as_ref().is_none_or(|u| *u == Unit::name_for(app, &k.proc_type, k.number)))
            .cloned()
            .collect();
        if let (Some(unit), true) = (&filter.unit, matching.is_empty()) {
            return Err(SchedulerError::NotFound(format!("unit {unit}")));
        }
        let mut instances = BTreeMap::new();
        for key in &matching {
            let i = fresh_instance();
            entry.forced.insert(key.clone(), i);
            instances.insert(key.clone(), i);
        }
        self.reconcile(entry).await?;
        let rollout = entry.rollout.take();
        drop(state);
        if let Some(task) = rollout {
            // Waited for here, like the local scheduler: the units returned are up.
            let _ = task.await;
        }
        let units = self.units(app).await?;
        Ok(units
            .into_iter()
            .filter(|u| {
                let key = SlotKey { proc_type: u.proc_type.clone(), number: u.number };
                instances.get(&key) == Some(&u.instance)
            })
            .collect())
    }

    /// Unit state changes.
    pub fn subscribe(&self) -> broadcast::Receiver<UnitEvent> {
        self.events.subscribe()
    }

    /// Stops the background work; the engine keeps running the units.
    pub async fn shutdown(&self) {
        self.poller.abort();
        for app in self.state.lock().await.apps.values_mut() {
            if let Some(task) = app.rollout.take() {
                task.abort();
            }
        }
    }
}

/// Whether slot `key` runs exactly one unit, up, of `instance` (any instance if None).
fn settled(units: &[Observed], key: &SlotKey, instance: Option<u64>) -> bool {
    let mut of_slot = units.iter().filter(|o| o.unit.proc_type == key.proc_type && o.unit.number == key.number);
    match (of_slot.next(), of_slot.next()) {
        (Some(o), None) => o.unit.state == UnitState::Up && instance.is_none_or(|i| o.unit.instance == i),
        _ => false,
    }
}

/// Polls the units of `app` until `ok` holds (true) or `timeout` passed (false).
async fn wait_for<B: SlotBackend>(
    backend: &B,
    app: &AppName,
    timeout: Duration,
    ok: impl Fn(&[Observed]) -> bool,
) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        match backend.units(app).await {
            Ok(units) if ok(&units) => return true,
            Ok(_) => {}
            Err(e) => tracing::warn!(%app, error = %e, "scheduler: listing units while rolling"),
        }
        tokio::time::sleep(ROLL_POLL).await;
    }
    false
}

/// Rolls `changed` slots of `spec` one at a time: a slot goes once every slot of its
/// type is settled, and the next once it runs its new instance alone.
async fn roll<B: SlotBackend>(
    backend: Arc<B>,
    state: Arc<Mutex<State>>,
    spec: AppSpec,
    changed: Vec<(SlotKey, SlotRecord)>,
    timeout: Duration,
) {
    let app = &spec.app;
    let count = |t: &ProcessType| spec.processes.get(t).map_or(0, |p| p.count);
    for (key, record) in changed {
        let n = count(&key.proc_type);
        let type_settled = |units: &[Observed]| {
            (1..=n).all(|number| settled(units, &SlotKey { proc_type: key.proc_type.clone(), number }, None))
        };
        if !wait_for(&*backend, app, timeout, type_settled).await {
            tracing::warn!(%app, slot = %key.number, "scheduler: units of the type not settled; rolling anyway");
        }
        if let Err(e) = backend.put(&spec, &key, &record).await {
            tracing::error!(%app, proc_type = %key.proc_type, slot = key.number, error = %e, "scheduler: rolling a unit");
            continue;
        }
        if !wait_for(&*backend, app, timeout, |units: &[Observed]| settled(units, &key, Some(record.instance))).await {
            tracing::warn!(%app, proc_type = %key.proc_type, slot = key.number, "scheduler: the new unit is not up in time");
        }
        if let Some(a) = state.lock().await.apps.get_mut(app)
            && a.forced.get(&key) == Some(&record.instance)
        {
            a.forced.remove(&key);
        }
    }
}

/// Units by name and instance.
type Listing = HashMap<(String, u64), Unit>;

/// Turns listings of units into events: new units, state changes, and crashes (a
/// restart count that went up is announced as `crashed` first, should the listing have
/// missed the crashed state).
#[derive(Debug)]
struct Observer {
    /// The last listing of each app; held across a listing so that listings are
    /// compared in the order they were taken.
    last: Mutex<HashMap<AppName, Listing>>,
    events: broadcast::Sender<UnitEvent>,
}

impl Observer {
    async fn observe<B: SlotBackend>(&self, backend: &B, app: &AppName) -> Result<Vec<Observed>> {
        let mut last = self.last.lock().await;
        let units = backend.units(app).await?;
        let seen = last.entry(app.clone()).or_default();
        let mut now = HashMap::new();
        for Observed { unit, reason } in &units {
            let id = (unit.name.clone(), unit.instance);
            match seen.remove(&id) {
                Some(before) if before == *unit => {}
                before => {
                    let crashed = before.as_ref().is_some_and(|b| unit.restarts > b.restarts);
                    if crashed && unit.state != UnitState::Crashed {
                        let mut c = unit.clone();
                        c.state = UnitState::Crashed;
                        let _ = self.events.send(UnitEvent { unit: c, reason: reason.clone() });
                    }
                    let why = (unit.state == UnitState::Crashed).then(|| reason.clone()).flatten();
                    let _ = self.events.send(UnitEvent { unit: unit.clone(), reason: why });
                }
            }
            now.insert(id, unit.clone());
        }
        for (_, mut gone) in seen.drain() {
            gone.state = UnitState::Destroyed;
            let _ = self.events.send(UnitEvent::new(gone));
        }
        *seen = now;
        Ok(units)
    }

    async fn forget(&self, keep: &[AppName]) {
        self.last.lock().await.retain(|a, _| keep.contains(a));
    }
}

/// Polls the units of every applied app, for events of changes nobody listed.
async fn poll_events<B: SlotBackend>(backend: Arc<B>, state: Arc<Mutex<State>>, observer: Arc<Observer>) {
    loop {
        tokio::time::sleep(POLL).await;
        let apps: Vec<AppName> = state.lock().await.apps.keys().cloned().collect();
        observer.forget(&apps).await;
        for app in apps {
            if let Err(e) = observer.observe(&*backend, &app).await {
                tracing::debug!(%app, error = %e, "scheduler: polling units");
            }
        }
    }
}

/// Implements `Scheduler` for a type holding a [`SlotScheduler`] in field `inner`.
macro_rules! slot_scheduler {
    ($ty:ty) => {
        #[async_trait::async_trait]
        impl deis_core::Scheduler for $ty {
            async fn apply(&self, spec: deis_core::scheduler::AppSpec) -> deis_core::scheduler::Result<()> {
                self.inner.apply(spec).await
            }

            async fn remove(&self, app: &deis_core::model::AppName) -> deis_core::scheduler::Result<()> {
                self.inner.remove(app).await
            }

            async fn units(
                &self,
                app: &deis_core::model::AppName,
            ) -> deis_core::scheduler::Result<Vec<deis_core::model::Unit>> {
                self.inner.units(app).await
            }

            async fn restart(
                &self,
                app: &deis_core::model::AppName,
                filter: deis_core::scheduler::RestartFilter,
            ) -> deis_core::scheduler::Result<Vec<deis_core::model::Unit>> {
                self.inner.restart(app, filter).await
            }

            async fn nodes(&self) -> deis_core::scheduler::Result<Vec<deis_core::scheduler::NodeStatus>> {
                self.inner.backend().nodes().await
            }

            fn subscribe(&self) -> tokio::sync::broadcast::Receiver<deis_core::scheduler::UnitEvent> {
                self.inner.subscribe()
            }

            async fn shutdown(&self) {
                self.inner.shutdown().await
            }
        }
    };
}
pub(crate) use slot_scheduler;

/// Reads at most `limit` bytes of a response body; more is an error naming `what`.
pub(crate) async fn read_limited<B>(body: B, limit: usize, what: &str) -> Result<bytes::Bytes>
where
    B: hyper::body::Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    use http_body_util::BodyExt;
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) => Err(SchedulerError::Backend(format!("{what}: reading the answer: {e} (limit {limit} bytes)").into())),
    }
}
