//! Units' stdout and stderr into a [`LogStore`]: [`UnitLogSink`].
//!
//! The [`LocalScheduler`](crate::scheduler::LocalScheduler) hands every output line of
//! every unit to a [`UnitOutput`]. `UnitLogSink` is that sink for the log pipeline: each
//! line becomes `LogLine::from_unit(app, type, n, Stdout|Stderr, line)`. A line is only
//! queued (a bounded channel, never waited on) so a slow store can never stall a unit's
//! reader; a background task appends the queue in batches. When the queue is full lines
//! are dropped and counted, and the app's log gets a `deis[logger]` line saying how
//! many were lost once there is room again.
//!
//! The sink is also a [`LogStore`] (it wraps the store it writes to), so the platform
//! can use it as its log store: [`LogStore::forget`] then also discards the lines of
//! that app still waiting in the queue, so the last words of a destroyed app's units
//! don't bring its log back.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};

use super::{Cursor, LogEntry, LogError, LogFilter, LogFollow, LogLine, LogStore, LogStream};
use crate::model::Unit;
use crate::scheduler::local::{OutputStream, UnitOutput};

/// Default number of lines the queue holds before lines are dropped.
pub const DEFAULT_QUEUE_LINES: usize = 16 * 1024;

/// Most lines appended in one call to the store.
const MAX_BATCH: usize = 1024;

/// How long a forgotten app's queued lines are remembered as forgotten.
const FORGET_MEMORY: Duration = Duration::from_secs(60);

/// Counters of a [`UnitLogSink`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnitLogStats {
    /// Lines appended to the store.
    pub appended: u64,
    /// Lines dropped because the queue was full.
    pub dropped_full: u64,
    /// Lines discarded because their app was forgotten while they were queued.
    pub discarded_forgotten: u64,
    /// Lines lost because the store refused an append.
    pub failed: u64,
}

enum Msg {
    Line(Instant, LogLine),
    Flush(oneshot::Sender<()>),
}

#[derive(Debug, Default)]
struct Shared {
    appended: AtomicU64,
    dropped_full: AtomicU64,
    discarded_forgotten: AtomicU64,
    failed: AtomicU64,
    /// Apps with lines dropped since the last report, and how many.
    pending_drops: Mutex<HashMap<String, u64>>,
    has_drops: AtomicBool,
    /// Apps forgotten, and when: queued lines of theirs older than that are discarded.
    forgotten: Mutex<HashMap<String, Instant>>,
}

/// The unit-output-to-log-store pipe. See the module docs.
#[derive(Debug)]
pub struct UnitLogSink {
    inner: Arc<dyn LogStore>,
    tx: mpsc::Sender<Msg>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Line(_, l) => f.debug_tuple("Line").field(l).finish(),
            Self::Flush(_) => f.write_str("Flush"),
        }
    }
}

impl UnitLogSink {
    /// Starts the sink writing into `inner` with a queue of `queue_lines` lines (at
    /// least 1). Must be called within a Tokio runtime; the background task ends when
    /// the sink is dropped, after appending what is queued.
    pub fn start(inner: Arc<dyn LogStore>, queue_lines: usize) -> Arc<Self> {
        let (tx, rx) = mpsc::channel(queue_lines.max(1));
        let shared = Arc::new(Shared::default());
        tokio::spawn(run(inner.clone(), rx, shared.clone()));
        Arc::new(Self { inner, tx, shared })
    }

    /// The store lines go to.
    pub fn inner(&self) -> &Arc<dyn LogStore> {
        &self.inner
    }

    /// The counters so far.
    pub fn stats(&self) -> UnitLogStats {
        UnitLogStats {
            appended: self.shared.appended.load(Ordering::Relaxed),
            dropped_full: self.shared.dropped_full.load(Ordering::Relaxed),
            discarded_forgotten: self.shared.discarded_forgotten.load(Ordering::Relaxed),
            failed: self.shared.failed.load(Ordering::Relaxed),
        }
    }

    /// Waits until every line queued before this call has been handed to the store.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Msg::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }

    /// Queues one line; never waits.
    fn enqueue(&self, line: LogLine) {
        let app = line.app.clone();
        if self.tx.try_send(Msg::Line(Instant::now(), line)).is_err() {
            self.shared.dropped_full.fetch_add(1, Ordering::Relaxed);
            *self.shared.pending_drops.lock().expect("drop table").entry(app).or_default() += 1;
            self.shared.has_drops.store(true, Ordering::Release);
        }
    }
}

impl UnitOutput for UnitLogSink {
    fn line(&self, unit: &Unit, stream: OutputStream, line: &str) {
        let stream = match stream {
            OutputStream::Stdout => LogStream::Stdout,
            OutputStream::Stderr => LogStream::Stderr,
        };
        self.enqueue(LogLine::from_unit(&unit.app, &unit.proc_type, unit.number, stream, line));
    }
}

#[async_trait]
impl LogStore for UnitLogSink {
    /// Appends straight to the inner store (not through the queue).
    async fn append(&self, lines: Vec<LogLine>) -> Result<Vec<u64>, LogError> {
        self.inner.append(lines).await
    }

    async fn tail(&self, app: &str, n: usize, filter: &LogFilter) -> Result<Vec<LogEntry>, LogError> {
        self.inner.tail(app, n, filter).await
    }

    async fn follow(&self, app: &str, cursor: Cursor, filter: LogFilter) -> Result<LogFollow, LogError> {
        self.inner.follow(app, cursor, filter).await
    }

    /// Forgets `app` in the inner store and discards its lines still queued.
    async fn forget(&self, app: &str) -> Result<(), LogError> {
        {
            let now = Instant::now();
            let mut forgotten = self.shared.forgotten.lock().expect("forgotten table");
            forgotten.retain(|_, at| now.duration_since(*at) < FORGET_MEMORY);
            forgotten.insert(app.to_string(), now);
        }
        self.shared.pending_drops.lock().expect("drop table").remove(app);
        self.inner.forget(app).await
    }
}

/// The background task: batches the queue into appends.
async fn run(inner: Arc<dyn LogStore>, mut rx: mpsc::Receiver<Msg>, shared: Arc<Shared>) {
    let mut batch: Vec<LogLine> = Vec::with_capacity(MAX_BATCH);
    let mut flushes: Vec<oneshot::Sender<()>> = vec![];
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Msg::Line(at, line) => {
                    if is_forgotten(&shared, &line.app, at) {
                        shared.discarded_forgotten.fetch_add(1, Ordering::Relaxed);
                    } else {
                        batch.push(line);
                    }
                }
                Msg::Flush(done) => flushes.push(done),
            }
            if batch.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        if shared.has_drops.swap(false, Ordering::AcqRel) {
            let drops = std::mem::take(&mut *shared.pending_drops.lock().expect("drop table"));
            for (app, n) in drops {
                let msg = format!("{n} lines of app output dropped (the log pipeline was full)");
                batch.push(LogLine::platform(&app, "logger", &msg));
            }
        }
        if !batch.is_empty() {
            let n = batch.len() as u64;
            match inner.append(std::mem::take(&mut batch)).await {
                Ok(_) => shared.appended.fetch_add(n, Ordering::Relaxed),
                Err(e) => {
                    tracing::warn!(error = %e, lines = n, "cannot append unit output to the log store; lines lost");
                    shared.failed.fetch_add(n, Ordering::Relaxed)
                }
            };
        }
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
    }
}

fn is_forgotten(shared: &Shared, app: &str, queued_at: Instant) -> bool {
    shared.forgotten.lock().expect("forgotten table").get(app).is_some_and(|at| queued_at <= *at)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex as StdMutex;

    use super::*;
    use crate::model::UnitState;

    /// A minimal in-memory store for these tests: records appends, can be paused.
    #[derive(Debug, Default)]
    struct Recorder {
        lines: StdMutex<Vec<LogLine>>,
        gate: tokio::sync::Mutex<()>,
        forgotten: StdMutex<Vec<String>>,
    }

    #[async_trait]
    impl LogStore for Recorder {
        async fn append(&self, lines: Vec<LogLine>) -> Result<Vec<u64>, LogError> {
            let _open = self.gate.lock().await;
            let mut all = self.lines.lock().unwrap();
            let start = all.len() as u64;
            let n = lines.len() as u64;
            all.extend(lines);
            Ok((start + 1..=start + n).collect())
        }
        async fn tail(&self, _: &str, _: usize, _: &LogFilter) -> Result<Vec<LogEntry>, LogError> {
            Ok(vec![])
        }
        async fn follow(&self, _: &str, _: Cursor, _: LogFilter) -> Result<LogFollow, LogError> {
            Err(LogError::Closed)
        }
        async fn forget(&self, app: &str) -> Result<(), LogError> {
            self.forgotten.lock().unwrap().push(app.into());
            self.lines.lock().unwrap().retain(|l| l.app != app);
            Ok(())
        }
    }

    fn unit(app: &str, ty: &str, n: u32) -> Unit {
        crate::testing::unit(app, ty, n, UnitState::Up)
    }

    #[tokio::test]
    async fn lines_become_unit_log_lines_with_their_stream() {
        let rec = Arc::new(Recorder::default());
        let sink = UnitLogSink::start(rec.clone(), 100);
        sink.line(&unit("hello", "web", 2), OutputStream::Stdout, "GET / 200");
        sink.line(&unit("hello", "worker", 1), OutputStream::Stderr, "oops");
        sink.flush().await;
        let lines = rec.lines.lock().unwrap().clone();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].app, "hello");
        assert_eq!(lines[0].source.label(&lines[0].app).to_string(), "hello[web.2]");
        assert_eq!((lines[0].stream, lines[0].message.as_str()), (LogStream::Stdout, "GET / 200"));
        assert_eq!(lines[1].source.label(&lines[1].app).to_string(), "hello[worker.1]");
        assert_eq!((lines[1].stream, lines[1].message.as_str()), (LogStream::Stderr, "oops"));
        assert_eq!(sink.stats().appended, 2);
    }

    #[tokio::test]
    async fn a_stuck_store_never_blocks_the_caller_and_drops_are_reported() {
        let rec = Arc::new(Recorder::default());
        let sink = UnitLogSink::start(rec.clone(), 4);
        let held = rec.gate.lock().await; // the store hangs
        let u = unit("busy", "web", 1);
        let started = Instant::now();
        for i in 0..1000 {
            sink.line(&u, OutputStream::Stdout, &format!("line {i}"));
        }
        assert!(started.elapsed() < Duration::from_secs(1), "line() must not wait for the store");
        let stats = sink.stats();
        // The test runtime is single-threaded: the task has not run, the queue took 4.
        assert_eq!(stats.dropped_full, 996, "{stats:?}");
        drop(held);
        sink.flush().await;
        sink.line(&u, OutputStream::Stdout, "after");
        sink.flush().await;
        let lines = rec.lines.lock().unwrap().clone();
        let kept = lines.iter().filter(|l| l.message.starts_with("line ")).count() as u64;
        assert_eq!(kept + sink.stats().dropped_full, 1000, "every line is kept or counted");
        let report =
            lines.iter().find(|l| l.source.label(&l.app).to_string() == "deis[logger]").expect("a drop report");
        assert_eq!(report.app, "busy");
        assert!(report.message.starts_with(&format!("{} lines of app output dropped", stats.dropped_full)));
        assert!(lines.iter().any(|l| l.message == "after"));
    }

    #[tokio::test]
    async fn forget_discards_queued_lines_of_that_app_only() {
        let rec = Arc::new(Recorder::default());
        let sink = UnitLogSink::start(rec.clone(), 100);
        let held = rec.gate.lock().await;
        sink.line(&unit("gone", "web", 1), OutputStream::Stdout, "last words");
        sink.line(&unit("stays", "web", 1), OutputStream::Stdout, "still here");
        // Let the task pick up a first batch (it blocks in append), then queue more.
        tokio::time::sleep(Duration::from_millis(20)).await;
        sink.line(&unit("gone", "web", 1), OutputStream::Stdout, "queued words");
        let forget = {
            let sink = sink.clone();
            tokio::spawn(async move { sink.forget("gone").await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(held);
        forget.await.unwrap().unwrap();
        sink.line(&unit("gone", "web", 1), OutputStream::Stdout, "new app");
        sink.flush().await;
        let lines = rec.lines.lock().unwrap().clone();
        let msgs: Vec<&str> = lines.iter().map(|l| l.message.as_str()).collect();
        assert!(!msgs.contains(&"queued words"), "{msgs:?}");
        assert!(msgs.contains(&"still here"), "{msgs:?}");
        assert!(msgs.contains(&"new app"), "lines after the forget are kept: {msgs:?}");
        assert_eq!(rec.forgotten.lock().unwrap().as_slice(), ["gone"]);
        assert_eq!(sink.stats().discarded_forgotten, 1);
    }
}
