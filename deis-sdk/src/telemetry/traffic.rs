//! The router's per-app traffic counters: requests by status class, response bytes and
//! latency. The request path touches only atomics: the per-app counters are found once
//! per route (and kept on it), never under a lock.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;

use super::family::{AtomicHistogram, HistogramValue, Kind, MetricFamily};

/// Status classes, by first digit: `1xx` to `5xx`.
pub const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// One app's traffic through the router.
#[derive(Debug, Default)]
pub struct AppTrafficCounters {
    by_class: [AtomicU64; 5],
    bytes_out: AtomicU64,
    latency: AtomicHistogram,
}

impl AppTrafficCounters {
    /// Counts a response of `status` whose head came `elapsed` after the request.
    pub fn record(&self, status: u16, elapsed: Duration) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.by_class[class].fetch_add(1, Ordering::Relaxed);
        self.latency.observe(elapsed);
    }

    /// Counts response body bytes sent to the client.
    pub fn add_bytes(&self, n: u64) {
        self.bytes_out.fetch_add(n, Ordering::Relaxed);
    }

    /// A copy of the counters.
    pub fn snapshot(&self) -> AppTraffic {
        AppTraffic {
            by_class: std::array::from_fn(|i| self.by_class[i].load(Ordering::Relaxed)),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
            latency: self.latency.value(),
        }
    }
}

/// A copy of an app's [`AppTrafficCounters`].
#[derive(Debug, Clone, PartialEq)]
pub struct AppTraffic {
    /// Responses per status class (`1xx` first).
    pub by_class: [u64; 5],
    /// Response body bytes.
    pub bytes_out: u64,
    /// Time to the response head.
    pub latency: HistogramValue,
}

impl AppTraffic {
    /// All responses.
    pub fn requests(&self) -> u64 {
        self.by_class.iter().sum()
    }

    /// Responses with a 5xx status.
    pub fn errors(&self) -> u64 {
        self.by_class[4]
    }
}

/// Traffic counters of every app seen by a router. Give it to the router with
/// [`RouterConfig::metrics`](crate::router::RouterConfig::metrics).
#[derive(Debug, Default)]
pub struct RouterMetrics {
    apps: ArcSwap<HashMap<Box<str>, Arc<AppTrafficCounters>>>,
}

impl RouterMetrics {
    /// The counters of `app`, made at its first request.
    pub fn app(&self, app: &str) -> Arc<AppTrafficCounters> {
        if let Some(c) = self.apps.load().get(app) {
            return c.clone();
        }
        // Rare (once per app): copy the map with the new entry.
        let made = Arc::new(AppTrafficCounters::default());
        let mut result = made.clone();
        self.apps.rcu(|apps| {
            let mut apps = HashMap::clone(apps);
            result = apps.entry(app.into()).or_insert_with(|| made.clone()).clone();
            apps
        });
        result
    }

    /// A copy of `app`'s counters, if it had traffic.
    pub fn traffic(&self, app: &str) -> Option<AppTraffic> {
        self.apps.load().get(app).map(|c| c.snapshot())
    }

    /// Every app's counters, by app.
    pub fn all(&self) -> Vec<(String, AppTraffic)> {
        let mut out: Vec<_> = self.apps.load().iter().map(|(a, c)| (a.to_string(), c.snapshot())).collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// The counters as metric families.
    pub fn families(&self) -> Vec<MetricFamily> {
        let mut requests = MetricFamily::new(
            "deis_router_requests",
            "Requests the router forwarded to an app, by app and response status class.",
            Kind::Counter,
        );
        let mut bytes = MetricFamily::new(
            "deis_router_response_bytes",
            "Response body bytes sent to clients, by app.",
            Kind::Counter,
        );
        let mut latency = MetricFamily::new(
            "deis_router_request_duration_seconds",
            "Time from a request to its response head, by app.",
            Kind::Histogram,
        );
        for (app, t) in self.all() {
            for (class, n) in STATUS_CLASSES.iter().zip(t.by_class) {
                requests.push(&[("app", &app), ("class", class)], n as f64);
            }
            bytes.push(&[("app", &app)], t.bytes_out as f64);
            latency.push_histogram(&[("app", &app)], t.latency);
        }
        vec![requests, bytes, latency]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_app_and_class() {
        let m = RouterMetrics::default();
        let a = m.app("hello");
        assert!(Arc::ptr_eq(&a, &m.app("hello")), "one set of counters per app");
        a.record(200, Duration::from_millis(2));
        a.record(204, Duration::from_millis(2));
        a.record(503, Duration::from_millis(40));
        a.record(999, Duration::ZERO);
        a.add_bytes(10);
        m.app("other").record(404, Duration::ZERO);
        let t = m.traffic("hello").unwrap();
        assert_eq!(t.by_class, [0, 2, 0, 0, 2]);
        assert_eq!((t.requests(), t.errors(), t.bytes_out, t.latency.count), (4, 2, 10, 4));
        assert!(m.traffic("nobody").is_none());
        let fams = m.families();
        let requests = &fams[0];
        assert_eq!(requests.samples.len(), 10, "5 classes x 2 apps");
    }
}
