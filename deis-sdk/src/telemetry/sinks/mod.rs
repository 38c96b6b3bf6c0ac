//! Where snapshots are pushed: one [`Sink`] trait; [`spawn`] puts each sink behind a
//! bounded queue and a task of its own that retries with backoff. Offering a snapshot
//! never waits: when the queue is full (the sink is slow or down) the snapshot is
//! dropped and counted.

mod http_post;
pub mod influx;
pub mod statsd;
pub mod webhook;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;

use super::family::{Kind, MetricFamily};

/// A snapshot as sinks get it.
pub type Snapshot = Arc<Vec<MetricFamily>>;

/// A destination of snapshots.
#[async_trait::async_trait]
pub trait Sink: Send + Sync + std::fmt::Debug {
    /// A short name for logs and the sink's own counters (`statsd://127.0.0.1:8125`).
    fn name(&self) -> String;
    /// Delivers one snapshot; an error is retried with backoff.
    async fn send(&self, snapshot: &[MetricFamily]) -> Result<(), String>;
}

/// How a sink fared.
#[derive(Debug, Default)]
pub struct SinkCounters {
    /// Snapshots delivered.
    pub sent: AtomicU64,
    /// Snapshots dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Snapshots given up on after the retries.
    pub failed: AtomicU64,
    /// Attempts that failed and were retried.
    pub retries: AtomicU64,
}

/// Settings of a sink's queue and retries.
#[derive(Debug, Clone, Copy)]
pub struct SinkSettings {
    /// Snapshots waiting at most (then new ones are dropped).
    pub queue: usize,
    /// Attempts per snapshot.
    pub attempts: u32,
    /// First retry delay; doubled each time, up to 5 s.
    pub backoff: Duration,
    /// Limit of one attempt.
    pub timeout: Duration,
}

impl Default for SinkSettings {
    fn default() -> Self {
        Self { queue: 8, attempts: 4, backoff: Duration::from_millis(200), timeout: Duration::from_secs(5) }
    }
}

/// The sending end of a sink's queue. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SinkHandle {
    name: String,
    tx: mpsc::Sender<Snapshot>,
    counters: Arc<SinkCounters>,
}

impl SinkHandle {
    /// Queues a snapshot, or drops and counts it if the queue is full. Never waits.
    pub fn offer(&self, snapshot: Snapshot) {
        if self.tx.try_send(snapshot).is_err() {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The sink's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How it fared.
    pub fn counters(&self) -> &Arc<SinkCounters> {
        &self.counters
    }
}

/// Starts `sink`'s task; it ends when every handle is dropped.
pub fn spawn(sink: Arc<dyn Sink>, settings: SinkSettings) -> SinkHandle {
    let (tx, mut rx) = mpsc::channel::<Snapshot>(settings.queue.max(1));
    let counters = Arc::new(SinkCounters::default());
    let handle = SinkHandle { name: sink.name(), tx, counters: counters.clone() };
    tokio::spawn(async move {
        while let Some(snapshot) = rx.recv().await {
            let mut delay = settings.backoff;
            for attempt in 1..=settings.attempts.max(1) {
                let result = match tokio::time::timeout(settings.timeout, sink.send(&snapshot)).await {
                    Ok(r) => r,
                    Err(_) => Err(format!("no answer within {:?}", settings.timeout)),
                };
                match result {
                    Ok(()) => {
                        counters.sent.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    Err(e) if attempt == settings.attempts.max(1) => {
                        counters.failed.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(sink = %sink.name(), error = %e, "telemetry sink: snapshot given up after {attempt} attempts");
                    }
                    Err(e) => {
                        counters.retries.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(sink = %sink.name(), error = %e, "telemetry sink: retrying");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(5));
                    }
                }
            }
        }
    });
    handle
}

/// The sinks' own counters as a family.
pub fn families(sinks: &[SinkHandle]) -> MetricFamily {
    let mut f = MetricFamily::new(
        "deis_telemetry_sink_snapshots",
        "Snapshots offered to each sink, by outcome (sent, dropped when the queue was full, failed after retries).",
        Kind::Counter,
    );
    for s in sinks {
        let c = &s.counters;
        for (outcome, n) in [("sent", &c.sent), ("dropped", &c.dropped), ("failed", &c.failed)] {
            f.push(&[("sink", &s.name), ("outcome", outcome)], n.load(Ordering::Relaxed) as f64);
        }
    }
    f
}

/// Series names for flat formats: the family name, then each label value, joined by
/// dots, with anything but `[A-Za-z0-9_-]` in values made `_`.
pub(crate) fn flat_name(family: &str, labels: &[(String, String)]) -> String {
    let mut name = family.to_string();
    for (_, v) in labels {
        name.push('.');
        name.extend(v.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' }));
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Stuck(tokio::sync::Notify);

    #[async_trait::async_trait]
    impl Sink for Stuck {
        fn name(&self) -> String {
            "stuck".into()
        }
        async fn send(&self, _: &[MetricFamily]) -> Result<(), String> {
            self.0.notified().await;
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_stuck_sink_drops_and_counts_without_blocking_the_offer() {
        let settings = SinkSettings { queue: 2, timeout: Duration::from_secs(600), ..SinkSettings::default() };
        let h = spawn(Arc::new(Stuck(tokio::sync::Notify::new())), settings);
        let snap: Snapshot = Arc::new(Vec::new());
        let started = std::time::Instant::now();
        for _ in 0..100 {
            h.offer(snap.clone());
        }
        assert!(started.elapsed() < Duration::from_millis(100), "offers never wait");
        let dropped = h.counters().dropped.load(Ordering::Relaxed);
        assert!((97..=98).contains(&dropped), "{dropped}: the queue holds 2, the task one more");
    }

    #[test]
    fn flat_names_are_safe() {
        let labels = vec![("app".to_string(), "he.llo".to_string()), ("class".into(), "2xx".into())];
        assert_eq!(flat_name("deis_router_requests", &labels), "deis_router_requests.he_llo.2xx");
    }
}
