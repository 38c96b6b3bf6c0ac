//! The endpoint publisher: turns the scheduler's unit states into `endpoints/` records
//! for the [router](crate::router).
//!
//! A unit that is `up` with an address gets `endpoints/<app>/<unit>#<instance>`
//! ([`Endpoint`]); it is deleted as soon as the unit leaves `up`. Every endpoint is
//! attached to one lease that the publisher keeps alive, so when the publisher (or its
//! whole process) dies, its endpoints expire within the lease TTL and the router stops
//! sending traffic to units nobody watches. Events can be missed (broadcast lag), so the
//! publisher also resyncs periodically from [`Scheduler::units`].
//!
//! ```no_run
//! # async fn run(store: std::sync::Arc<dyn deis_core::Store>, scheduler: std::sync::Arc<dyn deis_core::Scheduler>) {
//! use deis_sdk::publisher::{Publisher, PublisherConfig};
//! let publisher = Publisher::start(store, scheduler, PublisherConfig::new("local"));
//! // ... serve ...
//! publisher.shutdown().await; // revokes the lease: the router drops the units at once
//! # }
//! ```

use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use deis_core::scheduler::UnitEvent;
use deis_core::store::records::{self, ENDPOINTS_PREFIX, Endpoint};
use deis_core::store::{LeaseId, StoreError, Txn};
use deis_core::{AppName, Scheduler, Store, Unit, UnitState};
use tokio::sync::{broadcast, oneshot};
use tokio::task::JoinHandle;

/// Settings of a publisher.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PublisherConfig {
    /// Name of this publisher's node. Every endpoint it writes carries it (as
    /// [`Endpoint::node`]), so that on start it can delete what a previous run on the
    /// same node left behind.
    pub node: String,
    /// TTL of the endpoints' lease: how long endpoints outlive a dead publisher.
    pub lease_ttl: Duration,
    /// How often the lease is renewed (well under `lease_ttl`).
    pub keep_alive_interval: Duration,
    /// How often endpoints are reconciled with [`Scheduler::units`].
    pub resync_interval: Duration,
}

impl PublisherConfig {
    /// Defaults: 10 s lease renewed every 3 s, resync every 5 s.
    pub fn new(node: impl Into<String>) -> Self {
        Self {
            node: node.into(),
            lease_ttl: Duration::from_secs(10),
            keep_alive_interval: Duration::from_secs(3),
            resync_interval: Duration::from_secs(5),
        }
    }
}

/// A running publisher; [`Publisher::shutdown`] stops it and withdraws its endpoints.
#[derive(Debug)]
pub struct Publisher {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Publisher {
    /// Spawns [`run_publisher_with`] on the current runtime.
    ///
    /// It subscribes to unit events before returning, so no event announced after
    /// `start` is missed.
    pub fn start(store: Arc<dyn Store>, scheduler: Arc<dyn Scheduler>, config: PublisherConfig) -> Self {
        let (stop, stopped) = oneshot::channel::<()>();
        let events = scheduler.subscribe();
        let task = tokio::spawn(run(store, scheduler, config, events, async move {
            let _ = stopped.await;
        }));
        Self { stop: Some(stop), task }
    }

    /// Stops the publisher and revokes its lease, deleting its endpoints, so the
    /// router stops routing to these units at once. Returns when that is done.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Err(e) = (&mut self.task).await {
            tracing::warn!(error = %e, "publisher task failed");
        }
    }
}

/// Runs a publisher with default settings for `node` until `shutdown` resolves; see
/// [`run_publisher_with`].
pub async fn run_publisher(
    store: Arc<dyn Store>,
    scheduler: Arc<dyn Scheduler>,
    node: String,
    shutdown: impl Future<Output = ()> + Send,
) {
    run_publisher_with(store, scheduler, PublisherConfig::new(node), shutdown).await;
}

/// Publishes the scheduler's `up` units as endpoints until `shutdown` resolves, then
/// revokes the lease (deleting them).
///
/// On start it deletes every endpoint of `config.node` left by a previous run, then
/// publishes the units of every app in the store and follows unit events. Store errors
/// are logged and retried on the next event or resync; they never stop it.
pub async fn run_publisher_with(
    store: Arc<dyn Store>,
    scheduler: Arc<dyn Scheduler>,
    config: PublisherConfig,
    shutdown: impl Future<Output = ()> + Send,
) {
    // Subscribe first: events during the start-up are queued, not lost.
    let events = scheduler.subscribe();
    run(store, scheduler, config, events, shutdown).await;
}

async fn run(
    store: Arc<dyn Store>,
    scheduler: Arc<dyn Scheduler>,
    config: PublisherConfig,
    events: broadcast::Receiver<UnitEvent>,
    shutdown: impl Future<Output = ()> + Send,
) {
    let mut events = Some(events);
    let mut p = PublisherState {
        store,
        scheduler,
        config,
        lease: None,
        published: HashMap::new(),
        undeleted: HashSet::new(),
        apps: BTreeSet::new(),
    };
    tokio::pin!(shutdown);
    p.delete_stale().await;
    p.resync().await;
    let mut keep_alive = tokio::time::interval(p.config.keep_alive_interval);
    let mut resync = tokio::time::interval(p.config.resync_interval);
    keep_alive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    keep_alive.reset();
    resync.reset();
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            ev = recv(&mut events) => match ev {
                Ok(UnitEvent { unit, .. }) => p.on_unit(&unit).await,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::info!(missed = n, "publisher: missed unit events; resyncing");
                    p.resync().await;
                }
                Err(broadcast::error::RecvError::Closed) => {
                    tracing::info!("publisher: the scheduler closed its event stream");
                    events = None;
                }
            },
            _ = keep_alive.tick() => p.keep_alive().await,
            _ = resync.tick() => p.resync().await,
        }
    }
    if let Some(lease) = p.lease.take()
        && let Err(e) = p.store.revoke_lease(lease).await
    {
        tracing::warn!(error = %e, "publisher: could not revoke its lease; endpoints expire with its TTL");
    }
}

async fn recv(events: &mut Option<broadcast::Receiver<UnitEvent>>) -> Result<UnitEvent, broadcast::error::RecvError> {
    match events {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

struct PublisherState {
    store: Arc<dyn Store>,
    scheduler: Arc<dyn Scheduler>,
    config: PublisherConfig,
    lease: Option<LeaseId>,
    /// What is in the store, by key.
    published: HashMap<String, Endpoint>,
    /// Keys whose delete failed; retried on resync.
    undeleted: HashSet<String>,
    /// Apps whose units were seen.
    apps: BTreeSet<AppName>,
}

impl PublisherState {
    /// Deletes every endpoint of this node (a previous run's).
    async fn delete_stale(&mut self) {
        let listing = match self.store.list(ENDPOINTS_PREFIX).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "publisher: could not list endpoints to remove stale ones");
                return;
            }
        };
        let mut txn = Txn::new();
        for kv in &listing.kvs {
            match records::decode::<Endpoint>(kv) {
                Ok(ep) if ep.node == self.config.node => txn = txn.delete(kv.key.clone()),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "publisher: skipping an unreadable endpoint"),
            }
        }
        if txn.ops.is_empty() {
            return;
        }
        match self.store.txn(txn).await {
            Ok(r) => {
                tracing::info!(deleted = r.deleted, node = %self.config.node, "publisher: removed stale endpoints")
            }
            Err(e) => tracing::warn!(error = %e, "publisher: could not remove stale endpoints"),
        }
    }

    async fn on_unit(&mut self, unit: &Unit) {
        self.apps.insert(unit.app.clone());
        let key = records::endpoint_key(&unit.app, &unit.name, unit.instance);
        match self.endpoint_of(unit) {
            Some(ep) => self.put(key, ep).await,
            None => self.delete(key).await,
        }
    }

    fn endpoint_of(&self, unit: &Unit) -> Option<Endpoint> {
        match (unit.state, unit.address) {
            (UnitState::Up, Some(address)) => Some(Endpoint {
                app: unit.app.clone(),
                unit: unit.name.clone(),
                proc_type: unit.proc_type.clone(),
                release: unit.release,
                address,
                node: self.config.node.clone(),
            }),
            _ => None,
        }
    }

    async fn lease(&mut self) -> Result<LeaseId, StoreError> {
        if let Some(l) = self.lease {
            return Ok(l);
        }
        let l = self.store.grant_lease(self.config.lease_ttl).await?;
        self.lease = Some(l);
        Ok(l)
    }

    async fn put(&mut self, key: String, ep: Endpoint) {
        self.undeleted.remove(&key);
        if self.published.get(&key) == Some(&ep) {
            return;
        }
        let result = match self.lease().await {
            Ok(lease) => self.store.txn(Txn::new().put_leased(key.clone(), records::encode(&ep), lease)).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(_) => {
                self.published.insert(key, ep);
            }
            Err(StoreError::LeaseNotFound(_)) => {
                self.published.insert(key, ep);
                self.renew_lease().await;
            }
            Err(e) => tracing::warn!(key = %key, error = %e, "publisher: could not write an endpoint; will retry"),
        }
    }

    async fn delete(&mut self, key: String) {
        if self.published.remove(&key).is_none() && !self.undeleted.contains(&key) {
            return;
        }
        match self.store.delete(&key).await {
            Ok(_) => {
                self.undeleted.remove(&key);
            }
            Err(e) => {
                tracing::warn!(key = %key, error = %e, "publisher: could not delete an endpoint; will retry");
                self.undeleted.insert(key);
            }
        }
    }

    /// The lease expired (e.g. the process was suspended): grant a new one and write
    /// every endpoint again under it.
    async fn renew_lease(&mut self) {
        self.lease = None;
        let lease = match self.lease().await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "publisher: could not grant a lease; will retry");
                return;
            }
        };
        let mut txn = Txn::new();
        for (key, ep) in &self.published {
            txn = txn.put_leased(key.clone(), records::encode(ep), lease);
        }
        if txn.ops.is_empty() {
            return;
        }
        match self.store.txn(txn).await {
            Ok(_) => {
                tracing::info!(endpoints = self.published.len(), "publisher: lease renewed; endpoints re-published")
            }
            Err(e) => {
                tracing::warn!(error = %e, "publisher: could not re-publish endpoints; will retry");
                // Forget them so the next resync writes them again.
                self.published.clear();
            }
        }
    }

    async fn keep_alive(&mut self) {
        let Some(lease) = self.lease else { return };
        match self.store.keep_alive(lease).await {
            Ok(()) => {}
            Err(StoreError::LeaseNotFound(_)) => {
                tracing::warn!(lease, "publisher: lease expired; granting a new one");
                self.renew_lease().await;
            }
            Err(e) => tracing::warn!(error = %e, "publisher: lease keep-alive failed; will retry"),
        }
    }

    /// Makes the store match [`Scheduler::units`] for every app known.
    async fn resync(&mut self) {
        let mut apps = self.apps.clone();
        apps.extend(self.published.values().map(|ep| ep.app.clone()));
        match self.store.list("apps/").await {
            Ok(listing) => apps.extend(listing.kvs.iter().filter_map(|kv| kv.key.strip_prefix("apps/")?.parse().ok())),
            Err(e) => tracing::warn!(error = %e, "publisher: could not list apps for a resync"),
        }
        for key in self.undeleted.clone() {
            self.delete(key).await;
        }
        for app in apps {
            let units = match self.scheduler.units(&app).await {
                Ok(u) => u,
                Err(e) => {
                    tracing::warn!(app = %app, error = %e, "publisher: could not read units for a resync");
                    continue;
                }
            };
            let mut wanted = HashSet::new();
            for unit in &units {
                if let Some(ep) = self.endpoint_of(unit) {
                    let key = records::endpoint_key(&unit.app, &unit.name, unit.instance);
                    wanted.insert(key.clone());
                    self.put(key, ep).await;
                }
            }
            let gone: Vec<String> = self
                .published
                .iter()
                .filter(|(k, ep)| ep.app == app && !wanted.contains(*k))
                .map(|(k, _)| k.clone())
                .collect();
            for key in gone {
                self.delete(key).await;
            }
            if units.is_empty() {
                self.apps.remove(&app);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! Publisher logic against the real embedded store, driven by a scheduler that only
    //! reports the units a test sets.

    use std::net::SocketAddr;
    use std::sync::Mutex;
    use std::time::Instant;

    use deis_core::testing::{app_name, process_type};

    use async_trait::async_trait;
    use deis_core::scheduler::{AppSpec, NodeStatus, RestartFilter, SchedulerError};
    use deis_core::store::RedbStore;

    use super::*;

    /// Reports units set by the test and announces each change.
    #[derive(Debug)]
    struct EventScheduler {
        units: Mutex<Vec<Unit>>,
        events: broadcast::Sender<UnitEvent>,
    }

    impl EventScheduler {
        fn new() -> Arc<Self> {
            Arc::new(Self { units: Mutex::new(Vec::new()), events: broadcast::channel(64).0 })
        }

        /// Records the unit's new state; announces it unless `quietly`.
        fn set(&self, unit: Unit, quietly: bool) {
            let mut units = self.units.lock().unwrap();
            units.retain(|u| (&u.name, u.instance) != (&unit.name, unit.instance));
            units.push(unit.clone());
            drop(units);
            if !quietly {
                let _ = self.events.send(UnitEvent::new(unit));
            }
        }
    }

    #[async_trait]
    impl Scheduler for EventScheduler {
        async fn apply(&self, _: AppSpec) -> deis_core::scheduler::Result<()> {
            Err(SchedulerError::Unsupported("test scheduler".into()))
        }
        async fn remove(&self, app: &AppName) -> deis_core::scheduler::Result<()> {
            self.units.lock().unwrap().retain(|u| u.app != *app);
            Ok(())
        }
        async fn units(&self, app: &AppName) -> deis_core::scheduler::Result<Vec<Unit>> {
            Ok(self.units.lock().unwrap().iter().filter(|u| u.app == *app).cloned().collect())
        }
        async fn restart(&self, app: &AppName, _: RestartFilter) -> deis_core::scheduler::Result<Vec<Unit>> {
            Err(SchedulerError::NotFound(app.to_string()))
        }
        async fn nodes(&self) -> deis_core::scheduler::Result<Vec<NodeStatus>> {
            Ok(Vec::new())
        }
        fn subscribe(&self) -> broadcast::Receiver<UnitEvent> {
            self.events.subscribe()
        }
    }

    fn unit(app: &str, proc_type: &str, n: u32, state: UnitState, port: Option<u16>) -> Unit {
        Unit {
            name: Unit::name_for(app, proc_type, n),
            instance: 1,
            app: app_name(app),
            proc_type: process_type(proc_type),
            number: n,
            release: 3,
            state,
            address: port.map(|p| SocketAddr::from(([127, 0, 0, 1], p))),
            node: "local".into(),
            started: None,
            restarts: 0,
            pid: None,
        }
    }

    fn fast_config(node: &str) -> PublisherConfig {
        PublisherConfig {
            node: node.into(),
            lease_ttl: Duration::from_secs(10),
            keep_alive_interval: Duration::from_millis(50),
            resync_interval: Duration::from_millis(100),
        }
    }

    async fn endpoints(store: &RedbStore) -> Vec<(String, Endpoint)> {
        let listing = store.list(ENDPOINTS_PREFIX).await.unwrap();
        listing.kvs.iter().map(|kv| (kv.key.clone(), records::decode(kv).unwrap())).collect()
    }

    async fn keys(store: &RedbStore) -> Vec<String> {
        endpoints(store).await.into_iter().map(|(k, _)| k).collect()
    }

    async fn eventually<F: AsyncFnMut() -> bool>(what: &str, mut f: F) {
        let start = Instant::now();
        while !f().await {
            assert!(start.elapsed() < Duration::from_secs(3), "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn publishes_up_units_and_withdraws_them() {
        let store = RedbStore::in_memory();
        let sched = EventScheduler::new();
        let publisher = Publisher::start(store.clone(), sched.clone(), fast_config("node-a"));

        sched.set(unit("hello", "web", 1, UnitState::Created, Some(5001)), false);
        sched.set(unit("hello", "worker", 1, UnitState::Up, None), false);
        sched.set(unit("hello", "web", 1, UnitState::Up, Some(5001)), false);
        sched.set(unit("hello", "web", 2, UnitState::Up, Some(5002)), false);
        let web1 = records::endpoint_key("hello", "hello.web.1", 1);
        let web2 = records::endpoint_key("hello", "hello.web.2", 1);
        eventually("two endpoints", async || keys(&store).await == [web1.clone(), web2.clone()]).await;

        let eps = endpoints(&store).await;
        assert_eq!(
            eps[0].1,
            Endpoint {
                app: app_name("hello"),
                unit: "hello.web.1".into(),
                proc_type: process_type("web"),
                release: 3,
                address: "127.0.0.1:5001".parse().unwrap(),
                node: "node-a".into(),
            }
        );
        let kv = store.get(&web1).await.unwrap().unwrap();
        assert!(kv.lease.is_some(), "endpoints are leased");

        sched.set(unit("hello", "web", 1, UnitState::Crashed, Some(5001)), false);
        eventually("the crashed unit's endpoint to go", async || keys(&store).await == [web2.clone()]).await;

        publisher.shutdown().await;
        assert!(keys(&store).await.is_empty(), "shutdown revokes the lease and with it the endpoints");
    }

    #[tokio::test]
    async fn removes_stale_endpoints_of_its_node_on_start() {
        let store = RedbStore::in_memory();
        let stale = |node: &str, n: u32| Endpoint {
            app: app_name("hello"),
            unit: format!("hello.web.{n}"),
            proc_type: process_type("web"),
            release: 1,
            address: SocketAddr::from(([127, 0, 0, 1], 6000 + n as u16)),
            node: node.into(),
        };
        let mine = records::endpoint_key("hello", "hello.web.1", 7);
        let theirs = records::endpoint_key("hello", "hello.web.2", 7);
        store.put(&mine, records::encode(&stale("node-a", 1))).await.unwrap();
        store.put(&theirs, records::encode(&stale("node-b", 2))).await.unwrap();

        let sched = EventScheduler::new();
        let publisher = Publisher::start(store.clone(), sched.clone(), fast_config("node-a"));
        eventually("the stale endpoint to go", async || keys(&store).await == [theirs.clone()]).await;
        publisher.shutdown().await;
        assert_eq!(keys(&store).await, [theirs], "other nodes' endpoints are left alone");
    }

    #[tokio::test]
    async fn resync_repairs_missed_events() {
        let store = RedbStore::in_memory();
        store
            .put(&records::app_key("quiet"), records::encode(&deis_core::App::new("quiet".parse().unwrap(), "t")))
            .await
            .unwrap();
        let sched = EventScheduler::new();
        // Up before the publisher starts, and never announced.
        sched.set(unit("quiet", "web", 1, UnitState::Up, Some(5101)), true);
        let publisher = Publisher::start(store.clone(), sched.clone(), fast_config("node-a"));
        let key = records::endpoint_key("quiet", "quiet.web.1", 1);
        eventually("the unit found by listing apps", async || keys(&store).await == [key.clone()]).await;

        // Stops without an event: the periodic resync withdraws it.
        sched.set(unit("quiet", "web", 1, UnitState::Down, Some(5101)), true);
        eventually("the silently stopped unit's endpoint to go", async || keys(&store).await.is_empty()).await;
        publisher.shutdown().await;
    }

    #[tokio::test]
    async fn republishes_under_a_new_lease_when_the_lease_is_lost() {
        let store = RedbStore::in_memory();
        let sched = EventScheduler::new();
        let publisher = Publisher::start(store.clone(), sched.clone(), fast_config("node-a"));
        sched.set(unit("hello", "web", 1, UnitState::Up, Some(5201)), false);
        let key = records::endpoint_key("hello", "hello.web.1", 1);
        eventually("the endpoint", async || keys(&store).await == [key.clone()]).await;
        let lease = store.get(&key).await.unwrap().unwrap().lease.unwrap();

        // As if the lease expired while the publisher was stalled.
        store.revoke_lease(lease).await.unwrap();
        assert!(keys(&store).await.is_empty());
        eventually("the endpoint to come back", async || keys(&store).await == [key.clone()]).await;
        let new_lease = store.get(&key).await.unwrap().unwrap().lease.unwrap();
        assert_ne!(new_lease, lease);
        publisher.shutdown().await;
        assert!(keys(&store).await.is_empty());
    }

    #[tokio::test]
    async fn run_publisher_stops_on_its_shutdown_future() {
        let store = RedbStore::in_memory();
        store
            .put(&records::app_key("hello"), records::encode(&deis_core::App::new("hello".parse().unwrap(), "t")))
            .await
            .unwrap();
        let sched = EventScheduler::new();
        sched.set(unit("hello", "web", 1, UnitState::Up, Some(5301)), false);
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(run_publisher(store.clone(), sched.clone(), "node-a".into(), async move {
            let _ = rx.await;
        }));
        eventually("the endpoint", async || keys(&store).await.len() == 1).await;
        tx.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), task).await.unwrap().unwrap();
        assert!(keys(&store).await.is_empty());
    }
}
