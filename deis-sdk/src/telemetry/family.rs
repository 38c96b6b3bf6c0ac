//! What collectors produce and sinks consume: metric families of samples, independent
//! of any exposition format.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

/// How a family's values behave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Only goes up (resets at restart).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Observations in buckets, with their count and sum.
    Histogram,
}

/// A histogram's state: bucket counts (not cumulative) by upper bound, the last bound
/// being `f64::INFINITY`, plus the count and sum of observations.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistogramValue {
    /// `(upper bound, observations in this bucket alone)`.
    pub buckets: Vec<(f64, u64)>,
    /// Observations.
    pub count: u64,
    /// Sum of the observed values.
    pub sum: f64,
}

impl HistogramValue {
    /// The value under which `q` (0..=1) of the observations fall, interpolated
    /// linearly within its bucket (as PromQL's `histogram_quantile` does); `None`
    /// without observations.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * self.count as f64;
        let (mut seen, mut lower) = (0u64, 0.0);
        for &(upper, n) in &self.buckets {
            if n > 0 && (seen + n) as f64 >= rank {
                if upper.is_infinite() {
                    return Some(lower);
                }
                let within = (rank - seen as f64) / n as f64;
                return Some(lower + (upper - lower) * within);
            }
            seen += n;
            lower = upper;
        }
        Some(lower)
    }

    /// The observations made between `earlier` and `self` (same buckets).
    pub fn since(&self, earlier: &HistogramValue) -> HistogramValue {
        let buckets = self
            .buckets
            .iter()
            .zip(earlier.buckets.iter().chain(std::iter::repeat(&(0.0, 0))))
            .map(|(&(b, n), &(_, m))| (b, n.saturating_sub(m)))
            .collect();
        HistogramValue {
            buckets,
            count: self.count.saturating_sub(earlier.count),
            sum: (self.sum - earlier.sum).max(0.0),
        }
    }
}

/// One value of a family.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Value {
    /// A counter or gauge.
    Number(f64),
    /// A histogram.
    Histogram(HistogramValue),
}

/// One labelled value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    /// Label names and values, in a fixed order per family.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: Value,
}

/// A named set of samples of one kind. Counter names carry no `_total` suffix: each
/// format adds what it wants (`_total` in Prometheus exposition).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricFamily {
    /// `deis_router_requests`, `deis_host_memory_used_bytes`, ...
    pub name: String,
    /// One line saying what it counts.
    pub help: String,
    /// Counter, gauge or histogram.
    pub kind: Kind,
    /// The values.
    pub samples: Vec<Sample>,
}

impl MetricFamily {
    /// An empty family.
    pub fn new(name: &str, help: &str, kind: Kind) -> Self {
        Self { name: name.into(), help: help.into(), kind, samples: Vec::new() }
    }

    /// Adds a number sample.
    pub fn push(&mut self, labels: &[(&str, &str)], value: f64) {
        self.samples.push(Sample { labels: own(labels), value: Value::Number(value) });
    }

    /// Adds a histogram sample.
    pub fn push_histogram(&mut self, labels: &[(&str, &str)], value: HistogramValue) {
        self.samples.push(Sample { labels: own(labels), value: Value::Histogram(value) });
    }

    /// The family with one sample and no labels.
    pub fn single(name: &str, help: &str, kind: Kind, value: f64) -> Self {
        let mut f = Self::new(name, help, kind);
        f.push(&[], value);
        f
    }
}

fn own(labels: &[(&str, &str)]) -> Vec<(String, String)> {
    labels.iter().map(|(k, v)| ((*k).to_string(), (*v).to_string())).collect()
}

/// Upper bounds (seconds) of latency histograms: 1 ms to 10 s.
pub const LATENCY_BUCKETS: [f64; 13] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// A latency histogram of atomics: recording is a few relaxed atomic adds, no lock.
#[derive(Debug, Default)]
pub struct AtomicHistogram {
    /// One more than [`LATENCY_BUCKETS`]: the last is `+Inf`.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl AtomicHistogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = LATENCY_BUCKETS.iter().position(|&b| secs <= b).unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(u64::try_from(d.as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// The current state.
    pub fn value(&self) -> HistogramValue {
        let bounds = LATENCY_BUCKETS.iter().copied().chain([f64::INFINITY]);
        HistogramValue {
            buckets: bounds.zip(&self.buckets).map(|(b, n)| (b, n.load(Ordering::Relaxed))).collect(),
            count: self.count.load(Ordering::Relaxed),
            sum: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_within_buckets() {
        let h = AtomicHistogram::default();
        for _ in 0..50 {
            h.observe(Duration::from_micros(800)); // bucket <= 1 ms
        }
        for _ in 0..49 {
            h.observe(Duration::from_millis(20)); // bucket (10 ms, 25 ms]
        }
        h.observe(Duration::from_secs(30)); // +Inf
        let v = h.value();
        assert_eq!(v.count, 100);
        assert!((v.sum - (0.04 + 0.98 + 30.0)).abs() < 1e-6, "{}", v.sum);
        assert!(v.quantile(0.5).unwrap() <= 0.001);
        let p99 = v.quantile(0.99).unwrap();
        assert!(p99 > 0.01 && p99 <= 0.025, "{p99}");
        assert_eq!(v.quantile(1.0), Some(10.0), "the +Inf bucket answers its lower bound");
        assert_eq!(HistogramValue { buckets: vec![], count: 0, sum: 0.0 }.quantile(0.5), None);
        let later = {
            h.observe(Duration::from_millis(3));
            h.value()
        };
        let d = later.since(&v);
        assert_eq!((d.count, d.quantile(0.5).map(|q| q > 0.0025 && q <= 0.005)), (1, Some(true)));
    }
}
