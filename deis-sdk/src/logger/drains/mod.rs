//! Log drains: an app's lines forwarded as RFC 5424 syslog to URLs its owner chose.
//!
//! Each drain has a bounded queue and its own task. [`DrainSet::forward`] only pushes
//! into queues (dropping the oldest line, counted, when one is full) and never waits,
//! so a dead or slow drain never slows ingest. The task connects, sends, and on any
//! failure reconnects with exponential backoff, putting the unsent lines back first.

mod url;

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use deis_core::logs::syslog::format_rfc5424;
use deis_core::logs::{Cursor, LogEntry, LogError, LogFilter, LogFollow, LogLine, LogStore};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::Notify;

pub use url::{DrainError, DrainScheme, DrainUrl};

use super::tls::{client_config_with_roots, system_roots};
use crate::telemetry::{Kind, MetricFamily};

/// Lines a drain task sends per write.
const SEND_BATCH: usize = 256;

/// Settings of a [`DrainSet`].
#[derive(Debug, Clone)]
pub struct DrainSetConfig {
    /// Lines queued per drain before the oldest are dropped (default 10 000).
    pub queue_lines: usize,
    /// Trust anchors for `syslog+tls://` drains (default: the system's CA bundle).
    pub tls_roots: Option<RootCertStore>,
    /// Time allowed to connect (and handshake) to a drain (default 5 s).
    pub connect_timeout: Duration,
    /// First reconnect delay; doubles on each failure (default 100 ms).
    pub min_backoff: Duration,
    /// Longest reconnect delay (default 30 s).
    pub max_backoff: Duration,
    /// HOSTNAME field of the RFC 5424 lines sent (default `deis`).
    pub hostname: String,
    /// This platform's id, sent as `origin` in every line's `[deis@32473 ...]` element
    /// (default: random). Give the syslog listener the same id
    /// ([`SyslogConfig::own_origin`](super::SyslogConfig::own_origin)) so that lines a
    /// drain sends back to it are dropped rather than looping.
    pub origin: String,
}

impl Default for DrainSetConfig {
    fn default() -> Self {
        Self {
            queue_lines: 10_000,
            tls_roots: None,
            connect_timeout: Duration::from_secs(5),
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(30),
            hostname: "deis".into(),
            origin: uuid::Uuid::new_v4().simple().to_string(),
        }
    }
}

/// Figures of one drain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrainStats {
    /// The app.
    pub app: String,
    /// The drain.
    pub url: DrainUrl,
    /// Lines waiting in the queue.
    pub queued: usize,
    /// Lines written to the drain's socket.
    pub sent: u64,
    /// Lines dropped because the queue was full.
    pub dropped: u64,
    /// Whether the drain is connected now.
    pub connected: bool,
    /// The last connect or send error, if any since the last successful connect.
    pub last_error: Option<String>,
}

/// The drains of every app. Cheap to share (`Arc`); needs a tokio runtime when drains
/// are set.
#[derive(Debug)]
pub struct DrainSet {
    config: DrainSetConfig,
    tls: Option<Arc<ClientConfig>>,
    /// app -> its drains. Read on every forwarded line, so lock-free.
    apps: ArcSwap<HashMap<String, Vec<Arc<Drain>>>>,
    /// Serialises `set_drains` calls (readers never take it).
    write_lock: Mutex<()>,
}

#[derive(Debug)]
struct Drain {
    app: String,
    url: DrainUrl,
    queue: Mutex<VecDeque<LogLine>>,
    capacity: usize,
    /// Wakes the task when lines are queued (or on stop).
    notify: Notify,
    /// Wakes the task out of a backoff sleep on stop.
    stop_notify: Notify,
    stopped: AtomicBool,
    sent: AtomicU64,
    dropped: AtomicU64,
    connected: AtomicBool,
    last_error: Mutex<Option<String>>,
}

impl Drain {
    fn push(&self, line: LogLine) {
        let mut q = self.queue.lock().unwrap();
        if q.len() >= self.capacity {
            q.pop_front();
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        q.push_back(line);
        drop(q);
        self.notify.notify_one();
    }

    /// Puts unsent lines back at the front, keeping the newest if that overflows.
    fn requeue(&self, lines: Vec<LogLine>) {
        let mut q = self.queue.lock().unwrap();
        for line in lines.into_iter().rev() {
            if q.len() >= self.capacity {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            q.push_front(line);
        }
    }

    fn take_batch(&self) -> Vec<LogLine> {
        let mut q = self.queue.lock().unwrap();
        let n = q.len().min(SEND_BATCH);
        q.drain(..n).collect()
    }

    fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        self.notify.notify_one();
        self.stop_notify.notify_one();
    }

    fn set_error(&self, e: Option<String>) {
        *self.last_error.lock().unwrap() = e;
    }
}

impl DrainSet {
    /// An empty set.
    pub fn new(config: DrainSetConfig) -> Self {
        let tls = config.tls_roots.clone().or_else(system_roots).map(client_config_with_roots);
        Self { config, tls, apps: ArcSwap::from_pointee(HashMap::new()), write_lock: Mutex::new(()) }
    }

    /// Replaces the drains of `app`. Drains whose URL stays keep their queue and
    /// connection; removed ones stop (their queued lines are discarded); new ones start
    /// connecting. An empty list removes every drain of the app. Must be called inside
    /// a tokio runtime.
    pub fn set_drains(&self, app: &str, urls: Vec<DrainUrl>) {
        let _guard = self.write_lock.lock().unwrap();
        let current = self.apps.load_full();
        let old = current.get(app).cloned().unwrap_or_default();
        let mut urls = urls;
        urls.sort();
        urls.dedup();
        let mut kept = Vec::with_capacity(urls.len());
        for url in urls {
            if let Some(d) = old.iter().find(|d| d.url == url) {
                kept.push(d.clone());
            } else {
                let drain = Arc::new(Drain {
                    app: app.to_string(),
                    url,
                    queue: Mutex::new(VecDeque::new()),
                    capacity: self.config.queue_lines.max(1),
                    notify: Notify::new(),
                    stop_notify: Notify::new(),
                    stopped: AtomicBool::new(false),
                    sent: AtomicU64::new(0),
                    dropped: AtomicU64::new(0),
                    connected: AtomicBool::new(false),
                    last_error: Mutex::new(None),
                });
                tokio::spawn(run_drain(drain.clone(), self.config.clone(), self.tls.clone()));
                kept.push(drain);
            }
        }
        for d in &old {
            if !kept.iter().any(|k| Arc::ptr_eq(k, d)) {
                d.stop();
            }
        }
        let mut next = (*current).clone();
        if kept.is_empty() {
            next.remove(app);
        } else {
            next.insert(app.to_string(), kept);
        }
        self.apps.store(Arc::new(next));
    }

    /// The drains of `app`, sorted.
    pub fn drains(&self, app: &str) -> Vec<DrainUrl> {
        self.apps.load().get(app).map(|ds| ds.iter().map(|d| d.url.clone()).collect()).unwrap_or_default()
    }

    /// Whether `app` has any drain (a lock-free check).
    pub fn has_drains(&self, app: &str) -> bool {
        self.apps.load().contains_key(app)
    }

    /// Queues `line` on every drain of its app. Never waits.
    pub fn forward(&self, line: &LogLine) {
        let apps = self.apps.load();
        if let Some(drains) = apps.get(&line.app) {
            for d in drains {
                d.push(line.clone());
            }
        }
    }

    /// Figures of every drain, by app then URL.
    pub fn stats(&self) -> Vec<DrainStats> {
        let apps = self.apps.load();
        let mut out: Vec<DrainStats> = apps
            .values()
            .flatten()
            .map(|d| DrainStats {
                app: d.app.clone(),
                url: d.url.clone(),
                queued: d.queue.lock().unwrap().len(),
                sent: d.sent.load(Ordering::Relaxed),
                dropped: d.dropped.load(Ordering::Relaxed),
                connected: d.connected.load(Ordering::Relaxed),
                last_error: d.last_error.lock().unwrap().clone(),
            })
            .collect();
        out.sort_by(|a, b| (&a.app, &a.url).cmp(&(&b.app, &b.url)));
        out
    }

    /// Per-drain figures as metric families, labelled by app and drain URL.
    pub fn families(&self) -> Vec<MetricFamily> {
        let stats = self.stats();
        let families: [Family; 4] = [
            ("deis_logger_drain_sent", Kind::Counter, "Lines written to a log drain.", |s| s.sent),
            ("deis_logger_drain_dropped", Kind::Counter, "Lines dropped because a drain's queue was full.", |s| {
                s.dropped
            }),
            ("deis_logger_drain_queued", Kind::Gauge, "Lines waiting in a drain's queue.", |s| s.queued as u64),
            ("deis_logger_drain_connected", Kind::Gauge, "1 if the drain is connected.", |s| u64::from(s.connected)),
        ];
        families
            .into_iter()
            .map(|(name, kind, help, value)| {
                let mut f = MetricFamily::new(name, help, kind);
                for s in &stats {
                    f.push(&[("app", &s.app), ("drain", &s.url.to_string())], value(s) as f64);
                }
                f
            })
            .collect()
    }

    /// Stops every drain (queued lines are discarded).
    pub fn shutdown(&self) {
        let _guard = self.write_lock.lock().unwrap();
        for d in self.apps.load().values().flatten() {
            d.stop();
        }
        self.apps.store(Arc::new(HashMap::new()));
    }
}

/// A metric family: name, type, help, value of a drain.
type Family = (&'static str, Kind, &'static str, fn(&DrainStats) -> u64);

impl Drop for DrainSet {
    fn drop(&mut self) {
        for d in self.apps.load().values().flatten() {
            d.stop();
        }
    }
}

/// A connected drain socket.
enum Conn {
    Stream(Box<dyn AsyncWrite + Send + Unpin>),
    Datagram(UdpSocket),
}

async fn connect(url: &DrainUrl, config: &DrainSetConfig, tls: Option<&Arc<ClientConfig>>) -> Result<Conn, String> {
    let authority = url.authority();
    let attempt = async {
        match url.scheme() {
            DrainScheme::Udp => {
                let target = tokio::net::lookup_host(&authority)
                    .await
                    .map_err(|e| format!("resolving {authority}: {e}"))?
                    .next()
                    .ok_or_else(|| format!("{authority} resolves to no address"))?;
                let bind: std::net::SocketAddr =
                    if target.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
                let sock = UdpSocket::bind(bind).await.map_err(|e| format!("binding a UDP socket: {e}"))?;
                sock.connect(target).await.map_err(|e| format!("connecting to {authority}: {e}"))?;
                Ok(Conn::Datagram(sock))
            }
            DrainScheme::Tcp => {
                let s = TcpStream::connect(&authority).await.map_err(|e| format!("connecting to {authority}: {e}"))?;
                s.set_nodelay(true).ok();
                Ok(Conn::Stream(Box::new(s)))
            }
            DrainScheme::Tls => {
                let tls = tls.ok_or("no CA certificates to verify TLS drains (set SSL_CERT_FILE)")?;
                let name = ServerName::try_from(url.host().to_string())
                    .map_err(|e| format!("{} is not a valid TLS server name: {e}", url.host()))?;
                let s = TcpStream::connect(&authority).await.map_err(|e| format!("connecting to {authority}: {e}"))?;
                s.set_nodelay(true).ok();
                let s = tokio_rustls::TlsConnector::from(tls.clone())
                    .connect(name, s)
                    .await
                    .map_err(|e| format!("TLS handshake with {authority}: {e}"))?;
                Ok(Conn::Stream(Box::new(s)))
            }
        }
    };
    tokio::time::timeout(config.connect_timeout, attempt)
        .await
        .unwrap_or_else(|_| Err(format!("connecting to {authority}: timed out after {:?}", config.connect_timeout)))
}

async fn send(conn: &mut Conn, lines: &[LogLine], config: &DrainSetConfig, buf: &mut Vec<u8>) -> std::io::Result<()> {
    let (hostname, origin) = (config.hostname.as_str(), config.origin.as_str());
    match conn {
        Conn::Stream(s) => {
            buf.clear();
            for line in lines {
                let msg = format_rfc5424(line, hostname, origin);
                let _ = write!(DisplayBuf(buf), "{} ", msg.len());
                buf.extend_from_slice(&msg);
            }
            s.write_all(buf).await?;
            s.flush().await
        }
        Conn::Datagram(sock) => {
            for line in lines {
                let msg = format_rfc5424(line, hostname, origin);
                sock.send(&msg).await?;
            }
            Ok(())
        }
    }
}

/// `fmt::Write` over a byte buffer.
struct DisplayBuf<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for DisplayBuf<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

async fn run_drain(drain: Arc<Drain>, config: DrainSetConfig, tls: Option<Arc<ClientConfig>>) {
    let mut backoff = config.min_backoff;
    let mut buf = Vec::new();
    while !drain.stopped.load(Ordering::Acquire) {
        let mut conn = match connect(&drain.url, &config, tls.as_ref()).await {
            Ok(c) => {
                drain.connected.store(true, Ordering::Relaxed);
                drain.set_error(None);
                backoff = config.min_backoff;
                c
            }
            Err(e) => {
                tracing::debug!(app = %drain.app, drain = %drain.url, "log drain: {e}");
                drain.set_error(Some(e));
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = drain.stop_notify.notified() => {}
                }
                backoff = (backoff * 2).min(config.max_backoff);
                continue;
            }
        };
        loop {
            if drain.stopped.load(Ordering::Acquire) {
                return;
            }
            let batch = drain.take_batch();
            if batch.is_empty() {
                drain.notify.notified().await;
                continue;
            }
            match send(&mut conn, &batch, &config, &mut buf).await {
                Ok(()) => {
                    drain.sent.fetch_add(batch.len() as u64, Ordering::Relaxed);
                }
                Err(e) => {
                    tracing::debug!(app = %drain.app, drain = %drain.url, "log drain send failed: {e}");
                    drain.set_error(Some(format!("sending to {}: {e}", drain.url.authority())));
                    drain.connected.store(false, Ordering::Relaxed);
                    drain.requeue(batch);
                    break;
                }
            }
        }
    }
}

/// A [`LogStore`] that appends to an inner store and forwards every appended line to
/// its app's drains, so whatever writes into the store feeds the drains.
#[derive(Debug, Clone)]
pub struct DrainingLogStore {
    inner: Arc<dyn LogStore>,
    drains: Arc<DrainSet>,
}

impl DrainingLogStore {
    /// Wraps `inner`, forwarding to `drains`.
    pub fn new(inner: Arc<dyn LogStore>, drains: Arc<DrainSet>) -> Self {
        Self { inner, drains }
    }
    /// The drains lines are forwarded to.
    pub fn drains(&self) -> &Arc<DrainSet> {
        &self.drains
    }
    /// The wrapped store.
    pub fn inner(&self) -> &Arc<dyn LogStore> {
        &self.inner
    }
}

#[async_trait]
impl LogStore for DrainingLogStore {
    /// Appends to the inner store, then queues the appended lines on their drains.
    async fn append(&self, lines: Vec<LogLine>) -> Result<Vec<u64>, LogError> {
        let drained: Vec<LogLine> = lines.iter().filter(|l| self.drains.has_drains(&l.app)).cloned().collect();
        let seqs = self.inner.append(lines).await?;
        for line in &drained {
            self.drains.forward(line);
        }
        Ok(seqs)
    }
    async fn tail(&self, app: &str, n: usize, filter: &LogFilter) -> Result<Vec<LogEntry>, LogError> {
        self.inner.tail(app, n, filter).await
    }
    async fn follow(&self, app: &str, cursor: Cursor, filter: LogFilter) -> Result<LogFollow, LogError> {
        self.inner.follow(app, cursor, filter).await
    }
    /// Forgets the app's lines in the inner store; its drains stay until
    /// [`DrainSet::set_drains`] removes them.
    async fn forget(&self, app: &str) -> Result<(), LogError> {
        self.inner.forget(app).await
    }
}
