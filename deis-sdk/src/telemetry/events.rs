//! Controller events (app created or destroyed, build, release, scale, crash, failed
//! deploy) as counters and as a stream, and the scheduler's placements and convergence
//! time. They are seen in the store (every replica sees every change, whoever made it)
//! and in the scheduler's unit events, so no controller code path has to report them.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use deis_core::store::{EventKind, Store};
use deis_core::time::Timestamp;
use deis_core::{App, AppName, Release, Scheduler, UnitState};
use serde::Serialize;
use tokio::sync::broadcast;

use super::family::{AtomicHistogram, Kind, MetricFamily};

/// Kinds of [`PlatformEvent`], in counter order.
pub const EVENT_KINDS: [&str; 7] =
    ["app_created", "app_destroyed", "build", "release", "scaled", "crashed", "deploy_failed"];

/// One thing that happened to an app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlatformEvent {
    /// One of [`EVENT_KINDS`].
    pub kind: &'static str,
    /// The app.
    pub app: String,
    /// What, in a few words (`v3`, `web=2`, `hello.web.1`).
    pub detail: String,
    /// When it was seen.
    pub at: Timestamp,
}

/// Event counters, the event stream, and scheduler figures.
#[derive(Debug)]
pub struct EventMetrics {
    counts: [AtomicU64; EVENT_KINDS.len()],
    units_started: AtomicU64,
    convergence: Arc<AtomicHistogram>,
    stream: broadcast::Sender<PlatformEvent>,
    recent: std::sync::Mutex<std::collections::VecDeque<PlatformEvent>>,
}

/// Events kept for [`EventMetrics::recent`].
const RECENT_EVENTS: usize = 100;

impl Default for EventMetrics {
    fn default() -> Self {
        Self {
            counts: Default::default(),
            units_started: AtomicU64::new(0),
            convergence: Arc::default(),
            stream: broadcast::channel(256).0,
            recent: Default::default(),
        }
    }
}

impl EventMetrics {
    /// Events from now on (a slow receiver misses some: it is told how many).
    pub fn subscribe(&self) -> broadcast::Receiver<PlatformEvent> {
        self.stream.subscribe()
    }

    /// The last events, oldest first.
    pub fn recent(&self) -> Vec<PlatformEvent> {
        self.recent.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect()
    }

    /// How many events of `kind` were seen.
    pub fn count(&self, kind: &str) -> u64 {
        EVENT_KINDS.iter().position(|k| *k == kind).map_or(0, |i| self.counts[i].load(Ordering::Relaxed))
    }

    fn emit(&self, kind: &'static str, app: &str, detail: String) {
        if let Some(i) = EVENT_KINDS.iter().position(|k| *k == kind) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        let event = PlatformEvent { kind, app: app.to_string(), detail, at: Timestamp::now() };
        {
            let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
            if recent.len() == RECENT_EVENTS {
                recent.pop_front();
            }
            recent.push_back(event.clone());
        }
        let _ = self.stream.send(event);
    }

    /// The figures as metric families.
    pub fn families(&self) -> Vec<MetricFamily> {
        let mut events = MetricFamily::new(
            "deis_controller_events",
            "Controller events, by kind (app_created, release, ...).",
            Kind::Counter,
        );
        for (kind, n) in EVENT_KINDS.iter().zip(&self.counts) {
            events.push(&[("kind", kind)], n.load(Ordering::Relaxed) as f64);
        }
        let mut convergence = MetricFamily::new(
            "deis_scheduler_convergence_seconds",
            "Time from a change of an app's desired state to all its units up.",
            Kind::Histogram,
        );
        convergence.push_histogram(&[], self.convergence.value());
        vec![
            events,
            MetricFamily::single(
                "deis_scheduler_units_started",
                "Units the scheduler placed and started.",
                Kind::Counter,
                self.units_started.load(Ordering::Relaxed) as f64,
            ),
            convergence,
        ]
    }

    /// Follows the store and the scheduler until `stop` resolves, counting events.
    pub async fn run(
        self: Arc<Self>,
        store: Arc<dyn Store>,
        scheduler: Arc<dyn Scheduler>,
        stop: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(stop);
        let mut units = scheduler.subscribe();
        let mut backoff = Duration::from_millis(200);
        loop {
            let follow = self.follow_store(&store, &scheduler);
            tokio::pin!(follow);
            loop {
                tokio::select! {
                    () = &mut stop => return,
                    r = &mut follow => {
                        if let Err(e) = r {
                            tracing::debug!(error = %e, "telemetry: store watch ended; again");
                        }
                        break;
                    }
                    e = units.recv() => match e {
                        Ok(e) => {
                            match e.unit.state {
                                UnitState::Up => { self.units_started.fetch_add(1, Ordering::Relaxed); }
                                UnitState::Crashed => self.emit("crashed", e.unit.app.as_str(), e.unit.name.clone()),
                                _ => {}
                            }
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => units = scheduler.subscribe(),
                    },
                }
            }
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(backoff) => backoff = (backoff * 2).min(Duration::from_secs(10)),
            }
        }
    }

    /// Watches `apps/`, `builds/` and `releases/` from now on.
    async fn follow_store(
        &self,
        store: &Arc<dyn Store>,
        scheduler: &Arc<dyn Scheduler>,
    ) -> deis_core::store::Result<()> {
        let listing = store.list("apps/").await?;
        let mut structures: HashMap<String, App> = listing
            .kvs
            .iter()
            .filter_map(|kv| serde_json::from_slice::<App>(&kv.value).ok())
            .map(|a| (a.id.to_string(), a))
            .collect();
        // One watch of everything from the listing on; endpoint and token churn is skipped.
        let mut watch = store.watch("", listing.revision + 1).await?;
        while let Some(event) = watch.next().await {
            let event = event?;
            let key = event.kv.key.as_str();
            let Some((prefix, rest)) = key.split_once('/') else { continue };
            let app = rest.split('/').next().unwrap_or_default().to_string();
            match (prefix, event.kind) {
                ("apps", EventKind::Put) => {
                    let Ok(new) = serde_json::from_slice::<App>(&event.kv.value) else { continue };
                    match structures.get(&app) {
                        None => self.emit("app_created", &app, String::new()),
                        Some(old) if old.structure != new.structure => {
                            let detail: Vec<String> = new.structure.iter().map(|(t, n)| format!("{t}={n}")).collect();
                            self.emit("scaled", &app, detail.join(" "));
                            self.time_convergence(scheduler.clone(), new.id.clone());
                        }
                        Some(_) => {}
                    }
                    structures.insert(app, new);
                }
                ("apps", EventKind::Delete) => {
                    structures.remove(&app);
                    self.emit("app_destroyed", &app, String::new());
                }
                ("builds", EventKind::Put) if event.kv.create_revision == event.kv.mod_revision => {
                    self.emit("build", &app, String::new());
                }
                ("releases", EventKind::Put) => {
                    let Ok(release) = serde_json::from_slice::<Release>(&event.kv.value) else { continue };
                    if release.failed {
                        self.emit("deploy_failed", &app, format!("v{}", release.version));
                    } else if event.kv.create_revision == event.kv.mod_revision {
                        self.emit("release", &app, format!("v{}", release.version));
                        self.time_convergence(scheduler.clone(), release.app.clone());
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Measures, in the background, how long `app` takes to have all its units up
    /// (given up after 10 minutes).
    fn time_convergence(&self, scheduler: Arc<dyn Scheduler>, app: AppName) {
        let started = Instant::now();
        let histogram = self.convergence.clone();
        tokio::spawn(async move {
            // Give the controller time to apply the new state.
            tokio::time::sleep(Duration::from_millis(100)).await;
            while started.elapsed() < Duration::from_secs(600) {
                if let Ok(units) = scheduler.units(&app).await {
                    let release = units.iter().map(|u| u.release).max().unwrap_or(0);
                    if units.iter().all(|u| u.state == UnitState::Up && u.release == release) {
                        histogram.observe(started.elapsed());
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
    }
}
