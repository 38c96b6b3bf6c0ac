//! Platform figures taken around existing parts: controller API requests (an axum
//! middleware) and store latency (a [`Store`] decorator).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use deis_core::store::{KeyValue, LeaseId, Listing, Revision, Store, Txn, TxnResult, Watch};

use super::family::{AtomicHistogram, Kind, MetricFamily};
use super::traffic::{RouterMetrics, STATUS_CLASSES};

/// Controller API requests by route, method and status class, with latency.
#[derive(Debug, Default)]
pub struct ApiMetrics {
    /// Keyed by `METHOD route`.
    by_route: RouterMetrics,
}

impl ApiMetrics {
    /// Counts one request.
    pub fn record(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        self.by_route.app(&format!("{method} {route}")).record(status, elapsed);
    }

    /// Requests answered so far, all routes.
    pub fn total(&self) -> u64 {
        self.by_route.all().iter().map(|(_, t)| t.requests()).sum()
    }

    /// The figures as metric families.
    pub fn families(&self) -> Vec<MetricFamily> {
        let mut requests = MetricFamily::new(
            "deis_api_requests",
            "API requests (controller, service broker), by route, method and response status class.",
            Kind::Counter,
        );
        let mut latency = MetricFamily::new(
            "deis_api_request_duration_seconds",
            "API request latency (controller, service broker), by route and method.",
            Kind::Histogram,
        );
        for (key, t) in self.by_route.all() {
            let (method, route) = key.split_once(' ').unwrap_or(("", &key));
            for (class, n) in STATUS_CLASSES.iter().zip(t.by_class) {
                if n > 0 {
                    requests.push(&[("route", route), ("method", method), ("status", class)], n as f64);
                }
            }
            latency.push_histogram(&[("route", route), ("method", method)], t.latency);
        }
        vec![requests, latency]
    }
}

/// The axum middleware counting requests into `metrics` (the route is the matched
/// pattern, `/v2/apps/{app}`, so apps don't each make a series; unmatched paths count
/// as `unmatched`).
pub async fn count_api_requests(metrics: Arc<ApiMetrics>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let route =
        req.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let response = next.run(req).await;
    metrics.record(method.as_str(), &route, response.status().as_u16(), started.elapsed());
    response
}

/// Store operation latency.
#[derive(Debug, Default)]
pub struct StoreMetrics {
    get: AtomicHistogram,
    list: AtomicHistogram,
    txn: AtomicHistogram,
}

impl StoreMetrics {
    /// The figures as metric families.
    pub fn families(&self) -> Vec<MetricFamily> {
        let mut f = MetricFamily::new(
            "deis_store_operation_duration_seconds",
            "Latency of store operations, by operation.",
            Kind::Histogram,
        );
        for (op, h) in [("get", &self.get), ("list", &self.list), ("txn", &self.txn)] {
            f.push_histogram(&[("operation", op)], h.value());
        }
        vec![f]
    }
}

/// A [`Store`] that times `get`, `list` and `txn` of the store it wraps.
#[derive(Debug)]
pub struct MeteredStore {
    inner: Arc<dyn Store>,
    metrics: Arc<StoreMetrics>,
}

impl MeteredStore {
    /// Wraps `inner`, recording into `metrics`.
    pub fn wrap(inner: Arc<dyn Store>, metrics: Arc<StoreMetrics>) -> Arc<dyn Store> {
        Arc::new(Self { inner, metrics })
    }
}

#[async_trait]
impl Store for MeteredStore {
    async fn get(&self, key: &str) -> deis_core::store::Result<Option<KeyValue>> {
        let t = Instant::now();
        let r = self.inner.get(key).await;
        self.metrics.get.observe(t.elapsed());
        r
    }
    async fn list(&self, prefix: &str) -> deis_core::store::Result<Listing> {
        let t = Instant::now();
        let r = self.inner.list(prefix).await;
        self.metrics.list.observe(t.elapsed());
        r
    }
    async fn txn(&self, txn: Txn) -> deis_core::store::Result<TxnResult> {
        let t = Instant::now();
        let r = self.inner.txn(txn).await;
        self.metrics.txn.observe(t.elapsed());
        r
    }
    async fn watch(&self, prefix: &str, start_revision: Revision) -> deis_core::store::Result<Watch> {
        self.inner.watch(prefix, start_revision).await
    }
    async fn grant_lease(&self, ttl: Duration) -> deis_core::store::Result<LeaseId> {
        self.inner.grant_lease(ttl).await
    }
    async fn keep_alive(&self, lease: LeaseId) -> deis_core::store::Result<()> {
        self.inner.keep_alive(lease).await
    }
    async fn revoke_lease(&self, lease: LeaseId) -> deis_core::store::Result<()> {
        self.inner.revoke_lease(lease).await
    }
    fn max_txn_ops(&self) -> Option<usize> {
        self.inner.max_txn_ops()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_metered_store_times_each_operation() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(StoreMetrics::default());
        let inner: Arc<dyn Store> = deis_core::store::RedbStore::open(&dir.path().join("s.redb")).await.unwrap();
        let store = MeteredStore::wrap(inner, metrics.clone());
        store.put("a/b", b"1".to_vec()).await.unwrap();
        assert_eq!(store.get("a/b").await.unwrap().unwrap().value, b"1");
        assert_eq!(store.list("a/").await.unwrap().kvs.len(), 1);
        let f = &metrics.families()[0];
        let count = |i: usize| match &f.samples[i].value {
            super::super::family::Value::Histogram(h) => h.count,
            _ => 0,
        };
        assert_eq!((count(0), count(1), count(2)), (1, 1, 1));
    }
}
