//! Monitoring and telemetry: collectors of host, unit, platform and controller figures,
//! and the sinks they are shipped to.
//!
//! - Collectors: [`host`] (`/proc`, `/sys`), [`units`] (cgroups v1/v2 or `/proc` for
//!   local units; a [`UnitStatsSource`] for other backends), the router's per-app
//!   traffic ([`RouterMetrics`]: requests by status class, bytes, latency; atomics
//!   only), controller API requests and store latency ([`metered`]), controller events
//!   and scheduler convergence ([`events`]), the logger's ingest and drop counters, and
//!   component health.
//! - [`Telemetry`] holds them all; [`Telemetry::snapshot`] reads them into
//!   [`MetricFamily`]s, the one shape every sink takes.
//! - Exposition: Prometheus `GET /metrics` ([`exposition`], through
//!   `prometheus-client`: OpenMetrics or text 0.0.4 by `Accept`); pushed sinks
//!   ([`sinks`]: StatsD, InfluxDB line protocol, JSON webhook) behind one trait, each
//!   with a bounded queue: a slow or dead sink drops snapshots and counts them, it
//!   never holds up anything else.
//! - [`http`]: `/metrics`, `GET /v2/apps/<app>/metrics` (what `deis metrics` prints),
//!   `GET /v2/events` and the dashboard at `/dashboard/`.
//! - [`autoscale`]: scales process types between their bounds on the units' cpu.

pub mod autoscale;
pub mod config;
pub mod events;
pub mod exposition;
pub mod family;
pub mod host;
pub mod http;
pub mod metered;
pub mod sinks;
pub mod traffic;
pub mod units;

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub use events::{EventMetrics, PlatformEvent};
pub use family::{HistogramValue, Kind, MetricFamily, Sample, Value};
pub use host::HostCollector;
pub use metered::{ApiMetrics, MeteredStore, StoreMetrics};
pub use sinks::{Sink, SinkHandle};
pub use traffic::{AppTraffic, RouterMetrics};
pub use units::{LocalUnitStats, UnitCollector, UnitStatsSource, UnitUsage};

/// A source of extra families (the logger's counters, a daemon's own figures).
pub type FamilySource = Arc<dyn Fn() -> Vec<MetricFamily> + Send + Sync>;

/// How long per-app traffic history is kept for [`Telemetry::app_window`].
pub const HISTORY: Duration = Duration::from_secs(15 * 60);

/// Every app's router traffic at one time.
type TrafficSample = (Instant, Vec<(String, AppTraffic)>);

/// Every collector of one daemon, and its sinks.
pub struct Telemetry {
    /// Router traffic per app.
    pub router: Arc<RouterMetrics>,
    /// Controller API requests.
    pub api: Arc<ApiMetrics>,
    /// Store latency.
    pub store: Arc<StoreMetrics>,
    /// Controller events and scheduler figures.
    pub events: Arc<EventMetrics>,
    host: Option<HostCollector>,
    units: OnceLock<Arc<UnitCollector>>,
    sources: Mutex<Vec<FamilySource>>,
    health: Mutex<BTreeMap<String, bool>>,
    history: Mutex<VecDeque<TrafficSample>>,
    sinks: Mutex<Vec<SinkHandle>>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry").field("host", &self.host.is_some()).finish_non_exhaustive()
    }
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new(true)
    }
}

impl Telemetry {
    /// Empty collectors; with `host`, this machine's figures too.
    pub fn new(host: bool) -> Self {
        Self {
            router: Arc::default(),
            api: Arc::default(),
            store: Arc::default(),
            events: Arc::default(),
            host: host.then(HostCollector::default),
            units: OnceLock::new(),
            sources: Mutex::default(),
            health: Mutex::default(),
            history: Mutex::default(),
            sinks: Mutex::default(),
        }
    }

    /// Sets the unit collector (once).
    pub fn set_units(&self, units: Arc<UnitCollector>) {
        let _ = self.units.set(units);
    }

    /// The unit collector, if set.
    pub fn units(&self) -> Option<&Arc<UnitCollector>> {
        self.units.get()
    }

    /// Adds a source of families, read at every snapshot.
    pub fn add_source(&self, source: FamilySource) {
        self.sources.lock().unwrap_or_else(|e| e.into_inner()).push(source);
    }

    /// Records whether a component (`api`, `router`, `store`, `scheduler`, `logger`)
    /// is healthy.
    pub fn set_health(&self, component: &str, up: bool) {
        self.health.lock().unwrap_or_else(|e| e.into_inner()).insert(component.to_string(), up);
    }

    /// Adds a sink: every snapshot is offered to it.
    pub fn add_sink(&self, sink: SinkHandle) {
        self.sinks.lock().unwrap_or_else(|e| e.into_inner()).push(sink);
    }

    /// Reads every collector now.
    pub fn snapshot(&self) -> Vec<MetricFamily> {
        let mut out = Vec::new();
        if let Some(host) = &self.host {
            out.extend(host.collect());
        }
        if let Some(units) = self.units.get() {
            out.extend(units.families());
        }
        out.extend(self.router.families());
        out.extend(self.api.families());
        out.extend(self.store.families());
        out.extend(self.events.families());
        let sources = self.sources.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for source in sources {
            out.extend(source());
        }
        let mut health = MetricFamily::new(
            "deis_component_up",
            "Whether a platform component is healthy (1) or not (0).",
            Kind::Gauge,
        );
        for (component, up) in self.health.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            health.push(&[("component", component)], if *up { 1.0 } else { 0.0 });
        }
        if !health.samples.is_empty() {
            out.push(health);
        }
        let sinks = self.sinks.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if !sinks.is_empty() {
            out.push(sinks::families(&sinks));
        }
        out
    }

    /// Keeps a copy of the router's per-app counters for [`Telemetry::app_window`]
    /// (the telemetry loop calls it each interval).
    pub fn record_history(&self) {
        let now = Instant::now();
        let all = self.router.all();
        let mut h = self.history.lock().unwrap_or_else(|e| e.into_inner());
        h.push_back((now, all));
        while h.front().is_some_and(|(t, _)| now.duration_since(*t) > HISTORY) {
            h.pop_front();
        }
    }

    /// `app`'s traffic over about the last `window` (as far back as history goes):
    /// `(seconds covered, the traffic within)`.
    pub fn app_window(&self, app: &str, window: Duration) -> (f64, Option<AppTraffic>) {
        let now = Instant::now();
        let current = self.router.traffic(app);
        let h = self.history.lock().unwrap_or_else(|e| e.into_inner());
        let base = h.iter().find(|(t, _)| now.duration_since(*t) <= window);
        let Some((at, apps)) = base else { return (0.0, current) };
        let secs = now.duration_since(*at).as_secs_f64();
        let earlier = apps.iter().find(|(a, _)| a == app).map(|(_, t)| t.clone());
        let within = match (current, earlier) {
            (Some(c), Some(e)) => Some(AppTraffic {
                by_class: std::array::from_fn(|i| c.by_class[i].saturating_sub(e.by_class[i])),
                bytes_out: c.bytes_out.saturating_sub(e.bytes_out),
                latency: c.latency.since(&e.latency),
            }),
            (c, _) => c,
        };
        (secs, within)
    }

    /// Every `interval` until `stop`: refreshes unit usage, keeps history and offers
    /// a snapshot to each sink.
    pub async fn run(self: Arc<Self>, interval: Duration, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = &mut stop => return,
                _ = tick.tick() => {}
            }
            if let Some(units) = self.units.get() {
                units.refresh().await;
            }
            self.record_history();
            let sinks = self.sinks.lock().unwrap_or_else(|e| e.into_inner()).clone();
            if !sinks.is_empty() {
                let snapshot = Arc::new(self.snapshot());
                for sink in &sinks {
                    sink.offer(snapshot.clone());
                }
            }
        }
    }
}

/// What a [`Platform`](crate::Platform) does about telemetry
/// ([`PlatformBuilder::telemetry`](crate::PlatformBuilder::telemetry)).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TelemetrySettings {
    /// Interval and sinks.
    pub config: config::TelemetryConfig,
    /// Whether the router counts per-app traffic (default true; off only to measure
    /// what counting costs).
    pub router_metrics: bool,
    /// The autoscaler's settings (`None`: no autoscaling).
    pub autoscale: Option<autoscale::AutoscaleConfig>,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self {
            config: config::TelemetryConfig::default(),
            router_metrics: true,
            autoscale: Some(autoscale::AutoscaleConfig::default()),
        }
    }
}

/// The syslog listener's counters as families.
pub fn logger_families(counters: &crate::logger::IngestCounters) -> Vec<MetricFamily> {
    let s = counters.snapshot();
    let mut dropped =
        MetricFamily::new("deis_logger_messages_dropped", "Syslog messages dropped, by reason.", Kind::Counter);
    dropped.push(&[("reason", "oversized")], s.dropped_oversized as f64);
    dropped.push(&[("reason", "store_error")], s.dropped_store_error as f64);
    dropped.push(&[("reason", "loop")], s.dropped_loop as f64);
    dropped.push(&[("reason", "bad_token")], s.dropped_bad_token as f64);
    let mut conns = MetricFamily::new(
        "deis_logger_connections_dropped",
        "TCP/TLS connections refused or closed by the logger, by reason.",
        Kind::Counter,
    );
    conns.push(&[("reason", "too_many_connections")], s.dropped_too_many_connections as f64);
    conns.push(&[("reason", "framing_error")], s.dropped_framing_error as f64);
    conns.push(&[("reason", "tls_handshake")], s.dropped_tls_handshake as f64);
    let c = |name: &str, help: &str, v: u64| MetricFamily::single(name, help, Kind::Counter, v as f64);
    vec![
        c("deis_logger_messages_received", "Syslog messages received (datagrams and TCP/TLS frames).", s.received),
        c("deis_logger_messages_parsed", "Syslog messages parsed as RFC 5424 or RFC 3164.", s.parsed),
        c("deis_logger_messages_unparsed", "Syslog messages that could not be parsed and were kept raw.", s.unparsed),
        dropped,
        conns,
        c("deis_logger_connections_accepted", "TCP/TLS connections accepted.", s.connections_accepted),
        MetricFamily::single(
            "deis_logger_connections_open",
            "TCP/TLS connections open now.",
            Kind::Gauge,
            s.connections_open as f64,
        ),
        c("deis_logger_received_bytes", "Syslog payload bytes received.", s.bytes_received),
    ]
}

/// Starts a platform's telemetry tasks: the collection loop (units, history, sinks),
/// the event follower, health checks and, if set, the autoscaler. They end when
/// `stop` turns true.
pub fn start_platform_tasks(
    telemetry: &Arc<Telemetry>,
    settings: &TelemetrySettings,
    controller: &Arc<deis_core::controller::Controller>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let until = |rx: &tokio::sync::watch::Receiver<bool>| {
        let mut rx = rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let store = controller.store().clone();
    let scheduler = controller.scheduler().clone();
    let units = Arc::new(UnitCollector::new(store.clone(), scheduler.clone(), Arc::new(LocalUnitStats::default())));
    telemetry.set_units(units.clone());
    for sink in &settings.config.sinks {
        telemetry.add_sink(sinks::spawn(sink.open(), settings.config.sink_settings()));
    }
    let mut tasks = Vec::new();
    let t = telemetry.clone();
    tasks.push(tokio::spawn(t.run(settings.config.interval, until(&stop))));
    let events = telemetry.events.clone();
    tasks.push(tokio::spawn(events.run(store.clone(), scheduler.clone(), until(&stop))));
    // Store and scheduler health: whether they answer, each interval.
    let (t, interval, health_stop) = (telemetry.clone(), settings.config.interval, until(&stop));
    tasks.push(tokio::spawn(async move {
        tokio::pin!(health_stop);
        loop {
            let store_ok =
                tokio::time::timeout(Duration::from_secs(5), store.get("apps/")).await.is_ok_and(|r| r.is_ok());
            let sched_ok =
                tokio::time::timeout(Duration::from_secs(5), scheduler.nodes()).await.is_ok_and(|r| r.is_ok());
            t.set_health("store", store_ok);
            t.set_health("scheduler", sched_ok);
            tokio::select! {
                () = &mut health_stop => return,
                () = tokio::time::sleep(interval) => {}
            }
        }
    }));
    if let Some(config) = settings.autoscale {
        tasks.push(tokio::spawn(autoscale::run(controller.clone(), units, config, until(&stop))));
    }
    tasks
}
