//! [`RingLogStore`]: the embedded, in-memory [`LogStore`].
//!
//! Each app has a bounded ring (a `VecDeque`) capped in lines and in bytes; all apps
//! together are capped by a global byte budget. When the budget is exceeded, an
//! eviction pass trims the apps using the most bytes first (oldest lines first) down to
//! a common level (water filling), so an app at or below its fair share of the budget
//! never loses lines to a noisier neighbour. Apps left empty and unfollowed are dropped
//! entirely, so memory stays bounded for any number of app names.
//!
//! Concurrency: the app map is sharded (`RwLock` per shard, held only to look an app up
//! or insert it), each app has its own `Mutex` held only to push or copy out cheap
//! `Arc` handles. A follower is a small task that copies lines after its cursor out of
//! the ring and sends them into its bounded channel: a slow follower only blocks its
//! own task, never `append`; when it comes back, the lines that left the window
//! meanwhile are reported as one [`FollowItem::Missed`].

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use async_trait::async_trait;
use tokio::sync::{mpsc, watch};

use super::{Cursor, FollowItem, LogEntry, LogError, LogFilter, LogFollow, LogLine, LogSource, LogStore, LogStream};

/// Bytes an app entry accounts for in the global budget besides its lines.
pub const APP_OVERHEAD_BYTES: usize = 256;
/// Number of shards of the app map.
const SHARDS: usize = 32;
/// Most lines a follower task copies out of a ring per lock.
const FOLLOW_BATCH: usize = 256;

/// Limits of a [`RingLogStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingConfig {
    /// Most lines kept per app (oldest evicted first). Default 1000, as Deis v1 kept.
    pub lines_per_app: usize,
    /// Most bytes (by [`LogLine::cost`]) kept per app. Default 4 MiB.
    pub bytes_per_app: usize,
    /// Most bytes kept by all apps together, including [`APP_OVERHEAD_BYTES`] per app.
    /// Default 256 MiB.
    pub global_bytes: usize,
    /// Items buffered per follower before it counts as lagging. Default 1024.
    pub follower_buffer: usize,
}

impl Default for RingConfig {
    fn default() -> Self {
        Self { lines_per_app: 1000, bytes_per_app: 4 << 20, global_bytes: 256 << 20, follower_buffer: 1024 }
    }
}

/// Counters of a [`RingLogStore`], for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RingStats {
    /// Apps currently held.
    pub apps: usize,
    /// Lines currently held.
    pub lines: usize,
    /// Bytes accounted against the global budget (lines plus per-app overhead).
    pub bytes: usize,
    /// Lines evicted by the global budget (not by per-app caps) since start.
    pub evicted_by_budget: u64,
    /// Global eviction passes run since start.
    pub eviction_passes: u64,
}

/// The embedded in-memory [`LogStore`]. Cheap to clone (shared state).
#[derive(Debug, Clone)]
pub struct RingLogStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    cfg: RingConfig,
    hasher: RandomState,
    shards: Vec<RwLock<HashMap<Arc<str>, Arc<AppRing>>>>,
    /// Bytes accounted: line costs plus per-app overhead.
    bytes: AtomicUsize,
    /// Highest last sequence number of any app dropped by the budget: a re-created
    /// app starts after it, so its numbers never go back.
    dropped_seq_floor: AtomicU64,
    evicted_by_budget: AtomicU64,
    eviction_passes: AtomicU64,
    /// Held by the running eviction pass; holds the byte total the last pass left.
    evicting: Mutex<usize>,
}

/// One app's ring.
#[derive(Debug)]
struct AppRing {
    name: Arc<str>,
    state: Mutex<RingState>,
    /// Bumped on every append and on close; follower tasks wait on it.
    signal: watch::Sender<()>,
}

#[derive(Debug)]
pub(crate) struct RingState {
    pub(crate) lines: VecDeque<Stored>,
    /// Sum of the stored lines' costs.
    pub(crate) bytes: usize,
    /// Sequence number of the last line appended (0: none yet).
    pub(crate) last_seq: u64,
    /// The ring left the map (forgotten, dropped, store closed): writers retry, followers end.
    pub(crate) dead: bool,
    /// Followers must end (forget or store closed), as opposed to a budget drop.
    pub(crate) closed: bool,
}

/// A stored line: cheap to copy out under the lock (`Arc` handles).
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    pub(crate) seq: u64,
    time: SystemTime,
    source: Arc<LogSource>,
    stream: LogStream,
    message: Arc<str>,
    raw: bool,
    truncated: bool,
    cost: usize,
}

impl Stored {
    fn entry(&self, app: &str) -> LogEntry {
        LogEntry {
            seq: self.seq,
            line: LogLine {
                time: self.time,
                app: app.to_string(),
                source: (*self.source).clone(),
                stream: self.stream,
                message: self.message.to_string(),
                raw: self.raw,
                truncated: self.truncated,
                hops: 0,
            },
        }
    }
}

/// [`LogFilter::matches`] on the source alone (the filter only looks at the source).
fn filter_matches(filter: &LogFilter, source: &LogSource) -> bool {
    filter.proc_type.as_deref().is_none_or(|t| source.proc_type() == Some(t))
        && filter.source.as_deref().is_none_or(|s| source.kind() == s)
}

impl RingState {
    fn new(first_seq: u64) -> Self {
        Self { lines: VecDeque::new(), bytes: 0, last_seq: first_seq - 1, dead: false, closed: false }
    }

    /// Sequence number of the oldest line still held (`last_seq + 1` when empty).
    fn first_seq(&self) -> u64 {
        self.lines.front().map_or(self.last_seq + 1, |s| s.seq)
    }

    /// Pushes a line, evicting by the per-app caps; returns (seq, bytes added, bytes freed).
    fn push(&mut self, line: LogLine, cfg: &RingConfig) -> (u64, usize, usize) {
        let cost = line.cost();
        self.last_seq += 1;
        let seq = self.last_seq;
        // Consecutive lines of one unit share their source.
        let source = match self.lines.back() {
            Some(prev) if *prev.source == line.source => prev.source.clone(),
            _ => Arc::new(line.source),
        };
        self.lines.push_back(Stored {
            seq,
            time: line.time,
            source,
            stream: line.stream,
            message: Arc::from(line.message),
            raw: line.raw,
            truncated: line.truncated,
            cost,
        });
        self.bytes += cost;
        let mut freed = 0;
        while self.lines.len() > 1 && (self.lines.len() > cfg.lines_per_app || self.bytes > cfg.bytes_per_app) {
            freed += self.pop_front();
        }
        (seq, cost, freed)
    }

    fn pop_front(&mut self) -> usize {
        match self.lines.pop_front() {
            Some(s) => {
                self.bytes -= s.cost;
                s.cost
            }
            None => 0,
        }
    }

    /// Evicts oldest lines until at most `level` bytes remain; returns (bytes, lines) freed.
    fn trim_to(&mut self, level: usize) -> (usize, u64) {
        let (mut freed, mut n) = (0, 0);
        while self.bytes > level && !self.lines.is_empty() {
            freed += self.pop_front();
            n += 1;
        }
        if self.lines.capacity() > 2 * self.lines.len() + 16 {
            self.lines.shrink_to(self.lines.len() * 3 / 2 + 8);
        }
        (freed, n)
    }

    /// The last `n` matching lines, oldest first (cheap clones).
    fn tail(&self, n: usize, filter: &LogFilter) -> Vec<Stored> {
        let mut out: Vec<Stored> =
            self.lines.iter().rev().filter(|s| filter_matches(filter, &s.source)).take(n).cloned().collect();
        out.reverse();
        out
    }

    /// The follower step: lines after `cursor` (up to `max` matching ones). Returns the
    /// number of lines missed (they left the window before being read), the matching
    /// lines, and the new cursor (the last sequence number looked at, matching or not).
    pub(crate) fn read_after(&self, cursor: u64, filter: &LogFilter, max: usize) -> (u64, Vec<Stored>, u64) {
        let first = self.first_seq();
        let (missed, start) = if cursor + 1 < first { (first - cursor - 1, first) } else { (0, cursor + 1) };
        let mut out = Vec::new();
        let mut new_cursor = start - 1;
        if start <= self.last_seq {
            let skip = (start - first) as usize;
            for s in self.lines.iter().skip(skip) {
                if out.len() == max {
                    break;
                }
                new_cursor = s.seq;
                if filter_matches(filter, &s.source) {
                    out.push(s.clone());
                }
            }
        }
        (missed, out, new_cursor)
    }

    /// Where a follow starting at `cursor` begins (the last sequence number "already seen").
    fn resolve(&self, cursor: Cursor, filter: &LogFilter) -> u64 {
        match cursor {
            Cursor::Now => self.last_seq,
            Cursor::Last(0) => self.last_seq,
            Cursor::Last(n) => {
                let mut found = 0;
                let mut at = self.last_seq;
                for s in self.lines.iter().rev() {
                    if filter_matches(filter, &s.source) {
                        found += 1;
                        at = s.seq - 1;
                        if found == n {
                            break;
                        }
                    }
                }
                if found < n { self.first_seq() - 1 } else { at }
            }
            // A cursor from the future (another store's numbering) resumes from now.
            Cursor::After(s) => s.min(self.last_seq),
        }
    }
}

impl RingLogStore {
    /// A store with default limits ([`RingConfig::default`]).
    pub fn new() -> Self {
        Self::with_config(RingConfig::default())
    }

    /// A store with the given limits (each at least 1).
    pub fn with_config(cfg: RingConfig) -> Self {
        let cfg = RingConfig {
            lines_per_app: cfg.lines_per_app.max(1),
            bytes_per_app: cfg.bytes_per_app.max(1),
            global_bytes: cfg.global_bytes.max(1),
            follower_buffer: cfg.follower_buffer.max(1),
        };
        Self {
            inner: Arc::new(Inner {
                cfg,
                hasher: RandomState::new(),
                shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
                bytes: AtomicUsize::new(0),
                dropped_seq_floor: AtomicU64::new(0),
                evicted_by_budget: AtomicU64::new(0),
                eviction_passes: AtomicU64::new(0),
                evicting: Mutex::new(0),
            }),
        }
    }

    /// The limits in force.
    pub fn config(&self) -> RingConfig {
        self.inner.cfg
    }

    /// Current counters (walks every app: for metrics and tests, not hot paths).
    pub fn stats(&self) -> RingStats {
        let mut st = RingStats {
            bytes: self.inner.bytes.load(Ordering::Relaxed),
            evicted_by_budget: self.inner.evicted_by_budget.load(Ordering::Relaxed),
            eviction_passes: self.inner.eviction_passes.load(Ordering::Relaxed),
            ..RingStats::default()
        };
        for ring in self.inner.all_rings() {
            st.apps += 1;
            st.lines += ring.state.lock().unwrap().lines.len();
        }
        st
    }

    /// Appends lines synchronously (the body of [`LogStore::append`]; never blocks on
    /// followers, only on short critical sections).
    pub fn append_sync(&self, lines: Vec<LogLine>) -> Result<Vec<u64>, LogError> {
        if let Some(bad) = lines.iter().find(|l| l.app.is_empty()) {
            return Err(LogError::Invalid(format!("a log line has an empty app name (message {:?})", bad.message)));
        }
        let inner = &self.inner;
        let mut seqs = Vec::with_capacity(lines.len());
        let mut lines = lines.into_iter().peekable();
        while let Some(first) = lines.next() {
            // Lines of one app in a row are pushed under one lock.
            let ring = inner.ring(&first.app);
            let mut ring = ring;
            let mut st = ring.state.lock().unwrap();
            while st.dead {
                drop(st);
                ring = inner.ring(&first.app);
                st = ring.state.lock().unwrap();
            }
            let (mut added, mut freed) = (0usize, 0usize);
            let (seq, a, f) = st.push(first, &inner.cfg);
            seqs.push(seq);
            added += a;
            freed += f;
            while let Some(next) = lines.next_if(|l| *l.app == *ring.name) {
                let (seq, a, f) = st.push(next, &inner.cfg);
                seqs.push(seq);
                added += a;
                freed += f;
            }
            drop(st);
            inner.bytes.fetch_add(added, Ordering::Relaxed);
            inner.bytes.fetch_sub(freed, Ordering::Relaxed);
            if ring.signal.receiver_count() > 0 {
                ring.signal.send_replace(());
            }
            if inner.bytes.load(Ordering::Relaxed) > inner.cfg.global_bytes {
                inner.evict();
            }
        }
        Ok(seqs)
    }

    /// The last `n` matching lines of `app` (the body of [`LogStore::tail`]).
    pub fn tail_sync(&self, app: &str, n: usize, filter: &LogFilter) -> Vec<LogEntry> {
        let Some(ring) = self.inner.get(app) else { return Vec::new() };
        let stored = ring.state.lock().unwrap().tail(n, filter);
        stored.iter().map(|s| s.entry(app)).collect()
    }

    /// Forgets `app` (the body of [`LogStore::forget`]).
    pub fn forget_sync(&self, app: &str) {
        let inner = &self.inner;
        let removed = inner.shard(app).write().unwrap().remove(app);
        if let Some(ring) = removed {
            let mut st = ring.state.lock().unwrap();
            st.dead = true;
            st.closed = true;
            let freed = st.bytes + APP_OVERHEAD_BYTES;
            st.lines = VecDeque::new();
            st.bytes = 0;
            drop(st);
            inner.bytes.fetch_sub(freed, Ordering::Relaxed);
            ring.signal.send_replace(());
        }
    }
}

impl Default for RingLogStore {
    fn default() -> Self {
        Self::new()
    }
}

impl Inner {
    fn shard(&self, app: &str) -> &RwLock<HashMap<Arc<str>, Arc<AppRing>>> {
        &self.shards[(self.hasher.hash_one(app) as usize) % SHARDS]
    }

    fn get(&self, app: &str) -> Option<Arc<AppRing>> {
        self.shard(app).read().unwrap().get(app).cloned()
    }

    /// The ring of `app`, created if missing.
    fn ring(&self, app: &str) -> Arc<AppRing> {
        if let Some(r) = self.get(app) {
            return r;
        }
        let mut shard = self.shard(app).write().unwrap();
        shard
            .entry(Arc::from(app))
            .or_insert_with_key(|name| {
                self.bytes.fetch_add(APP_OVERHEAD_BYTES, Ordering::Relaxed);
                let first = self.dropped_seq_floor.load(Ordering::Relaxed) + 1;
                Arc::new(AppRing {
                    name: name.clone(),
                    state: Mutex::new(RingState::new(first)),
                    signal: watch::Sender::new(()),
                })
            })
            .clone()
    }

    fn all_rings(&self) -> Vec<Arc<AppRing>> {
        let mut all = Vec::new();
        for shard in &self.shards {
            all.extend(shard.read().unwrap().values().cloned());
        }
        all
    }

    /// The global eviction pass: brings the byte total under 90% of the budget by
    /// water filling (apps above a common level are trimmed to it, oldest lines
    /// first), then drops apps left empty and unfollowed. One pass at a time; callers
    /// that find a pass running return at once (ingest never waits for it).
    fn evict(&self) {
        let Ok(mut after_last_pass) = self.evicting.try_lock() else { return };
        let now = self.bytes.load(Ordering::Relaxed);
        // When a pass could not get under the budget (everything left is followed),
        // the next one waits for 1% more growth, so appends don't each pay a pass.
        if now <= self.cfg.global_bytes || now < after_last_pass.saturating_add(self.cfg.global_bytes / 100) {
            return;
        }
        self.eviction_passes.fetch_add(1, Ordering::Relaxed);
        let rings = self.all_rings();
        let mut sizes: Vec<(usize, Arc<AppRing>)> = rings
            .into_iter()
            .map(|r| {
                let b = r.state.lock().unwrap().bytes;
                (b, r)
            })
            .collect();
        let target = self.cfg.global_bytes - self.cfg.global_bytes / 10;
        let budget_for_lines = target.saturating_sub(sizes.len() * APP_OVERHEAD_BYTES);
        // Water level: the largest L with sum(min(size, L)) <= budget_for_lines.
        sizes.sort_unstable_by_key(|a| a.0);
        let mut remaining = budget_for_lines;
        let mut level = 0;
        let n = sizes.len();
        for (i, (size, _)) in sizes.iter().enumerate() {
            let left = n - i;
            if size.saturating_mul(left) <= remaining {
                remaining -= size;
                level = *size;
            } else {
                level = remaining / left;
                break;
            }
        }
        let (mut freed, mut evicted) = (0usize, 0u64);
        let mut empty = Vec::new();
        for (size, ring) in sizes.iter().rev() {
            if *size > level {
                let mut st = ring.state.lock().unwrap();
                let (f, e) = st.trim_to(level);
                freed += f;
                evicted += e;
                if st.lines.is_empty() {
                    empty.push(ring.clone());
                }
            } else if *size == 0 {
                empty.push(ring.clone());
            }
        }
        self.bytes.fetch_sub(freed, Ordering::Relaxed);
        self.evicted_by_budget.fetch_add(evicted, Ordering::Relaxed);
        // Drop empty, unfollowed apps only when app entries themselves are the problem.
        if self.bytes.load(Ordering::Relaxed) > target {
            for ring in empty {
                let mut shard = self.shard(&ring.name).write().unwrap();
                let mut st = ring.state.lock().unwrap();
                // Followers subscribe under the state lock, so this check is exact.
                if st.lines.is_empty() && !st.dead && ring.signal.receiver_count() == 0 {
                    st.dead = true;
                    shard.remove(&*ring.name);
                    self.dropped_seq_floor.fetch_max(st.last_seq, Ordering::Relaxed);
                    self.bytes.fetch_sub(APP_OVERHEAD_BYTES, Ordering::Relaxed);
                }
            }
        }
        *after_last_pass = self.bytes.load(Ordering::Relaxed);
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Followers of a dropped store end.
        for shard in &self.shards {
            for ring in shard.read().unwrap().values() {
                let mut st = ring.state.lock().unwrap();
                st.dead = true;
                st.closed = true;
                drop(st);
                ring.signal.send_replace(());
            }
        }
    }
}

type FollowTx = mpsc::Sender<Result<FollowItem, LogError>>;

/// A follower's task: copies lines after its cursor into its channel until the ring
/// closes or the follower is dropped.
async fn follow_task(
    ring: Arc<AppRing>,
    mut signal: watch::Receiver<()>,
    mut cursor: u64,
    filter: LogFilter,
    tx: FollowTx,
) {
    let app = ring.name.clone();
    loop {
        signal.borrow_and_update();
        let (missed, batch, next, closed) = {
            let st = ring.state.lock().unwrap();
            let (missed, batch, next) = st.read_after(cursor, &filter, FOLLOW_BATCH);
            (missed, batch, next, st.closed)
        };
        if closed {
            return;
        }
        cursor = next;
        let idle = missed == 0 && batch.is_empty();
        if missed > 0 && !send(&tx, &mut signal, &ring, FollowItem::Missed(missed)).await {
            return;
        }
        for s in batch {
            if !send(&tx, &mut signal, &ring, FollowItem::Line(s.entry(&app))).await {
                return;
            }
        }
        if idle {
            tokio::select! {
                r = signal.changed() => if r.is_err() { return },
                _ = tx.closed() => return,
            }
        }
    }
}

/// Sends one item, waiting for room; false when the follower is gone or the ring closed.
async fn send(tx: &FollowTx, signal: &mut watch::Receiver<()>, ring: &AppRing, item: FollowItem) -> bool {
    loop {
        tokio::select! {
            permit = tx.reserve() => match permit {
                Ok(p) => { p.send(Ok(item)); return true }
                Err(_) => return false,
            },
            r = signal.changed() => {
                if r.is_err() || ring.state.lock().unwrap().closed {
                    return false;
                }
            }
        }
    }
}

#[async_trait]
impl LogStore for RingLogStore {
    async fn append(&self, lines: Vec<LogLine>) -> Result<Vec<u64>, LogError> {
        self.append_sync(lines)
    }

    async fn tail(&self, app: &str, n: usize, filter: &LogFilter) -> Result<Vec<LogEntry>, LogError> {
        Ok(self.tail_sync(app, n, filter))
    }

    async fn follow(&self, app: &str, cursor: Cursor, filter: LogFilter) -> Result<LogFollow, LogError> {
        if app.is_empty() {
            return Err(LogError::Invalid("cannot follow the logs of an empty app name".into()));
        }
        let (ring, signal, start) = loop {
            let ring = self.inner.ring(app);
            let st = ring.state.lock().unwrap();
            if st.dead {
                continue;
            }
            let signal = ring.signal.subscribe();
            let start = st.resolve(cursor, &filter);
            drop(st);
            break (ring, signal, start);
        };
        let (tx, rx) = mpsc::channel(self.inner.cfg.follower_buffer);
        tokio::spawn(follow_task(ring, signal, start, filter, tx));
        Ok(LogFollow::new(rx))
    }

    async fn forget(&self, app: &str) -> Result<(), LogError> {
        self.forget_sync(app);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
