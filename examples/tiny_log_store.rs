//! A `LogStore` of your own: the smallest one that keeps the trait's promises.
//!
//! Per app, the last [`TinyLogStore::LINES`] lines in a `VecDeque` and a broadcast
//! channel for followers. What it shows an adapter author: sequence numbers per app,
//! a follow that replays then goes live without a gap or a duplicate, a follower that
//! falls behind told how many lines it missed (`FollowItem::Missed`) instead of slowing
//! appends. It passes `deis_core::testing::logstore_suite` (see `tests/suites.rs`).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use async_trait::async_trait;
use deis_sdk::logs::{Cursor, FollowItem, LogEntry, LogError, LogFilter, LogFollow, LogLine, LogStore};
use tokio::sync::{broadcast, mpsc};

/// Lines in memory, per app. See the module docs.
#[derive(Debug, Default)]
pub struct TinyLogStore {
    apps: Mutex<HashMap<String, AppLog>>,
}

#[derive(Debug)]
struct AppLog {
    lines: VecDeque<LogEntry>,
    next_seq: u64,
    live: broadcast::Sender<LogEntry>,
}

impl AppLog {
    fn new() -> Self {
        Self { lines: VecDeque::new(), next_seq: 1, live: broadcast::channel(TinyLogStore::LIVE_BUFFER).0 }
    }
}

impl TinyLogStore {
    /// Lines kept per app.
    pub const LINES: usize = 1000;
    /// Lines a follower may fall behind before it is told it missed some.
    const LIVE_BUFFER: usize = 1024;

    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl LogStore for TinyLogStore {
    async fn append(&self, lines: Vec<LogLine>) -> Result<Vec<u64>, LogError> {
        if lines.iter().any(|l| l.app.is_empty()) {
            return Err(LogError::Invalid("a line without an app name".into()));
        }
        let mut apps = self.apps.lock().expect("tiny log store");
        let mut seqs = Vec::with_capacity(lines.len());
        for line in lines {
            let app = apps.entry(line.app.clone()).or_insert_with(AppLog::new);
            let entry = LogEntry { seq: app.next_seq, line };
            app.next_seq += 1;
            seqs.push(entry.seq);
            if app.lines.len() == Self::LINES {
                app.lines.pop_front();
            }
            app.lines.push_back(entry.clone());
            // No receiver is fine; a slow one lags (and is told) instead of blocking us.
            let _ = app.live.send(entry);
        }
        Ok(seqs)
    }

    async fn tail(&self, app: &str, n: usize, filter: &LogFilter) -> Result<Vec<LogEntry>, LogError> {
        let apps = self.apps.lock().expect("tiny log store");
        let Some(log) = apps.get(app) else { return Ok(Vec::new()) };
        let mut last: Vec<LogEntry> =
            log.lines.iter().rev().filter(|e| filter.matches(&e.line)).take(n).cloned().collect();
        last.reverse();
        Ok(last)
    }

    async fn follow(&self, app: &str, cursor: Cursor, filter: LogFilter) -> Result<LogFollow, LogError> {
        // Take the replay and subscribe under one lock: nothing slips in between.
        let (replay, missed_before, mut live, mut expected) = {
            let mut apps = self.apps.lock().expect("tiny log store");
            let log = apps.entry(app.to_string()).or_insert_with(AppLog::new);
            let first_kept = log.lines.front().map_or(log.next_seq, |e| e.seq);
            let (replay, missed_before) = match cursor {
                Cursor::Now => (Vec::new(), 0),
                Cursor::Last(n) => {
                    let mut last: Vec<LogEntry> =
                        log.lines.iter().rev().filter(|e| filter.matches(&e.line)).take(n).cloned().collect();
                    last.reverse();
                    (last, 0)
                }
                // Lines after `seq` that already left the window are missed.
                Cursor::After(seq) => {
                    let replay = log.lines.iter().filter(|e| e.seq > seq && filter.matches(&e.line)).cloned();
                    (replay.collect(), first_kept.saturating_sub(seq + 1))
                }
            };
            (replay, missed_before, log.live.subscribe(), log.next_seq)
        };
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            let replayed = replay.into_iter().map(FollowItem::Line);
            for item in (missed_before > 0).then_some(FollowItem::Missed(missed_before)).into_iter().chain(replayed) {
                if tx.send(Ok(item)).await.is_err() {
                    return;
                }
            }
            loop {
                let entry = match live.recv().await {
                    Ok(entry) => entry,
                    // The skipped lines are counted when the next one arrives.
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return, // forgotten
                };
                let missed = entry.seq.saturating_sub(expected);
                expected = entry.seq + 1;
                if missed > 0 && tx.send(Ok(FollowItem::Missed(missed))).await.is_err() {
                    return;
                }
                if filter.matches(&entry.line) && tx.send(Ok(FollowItem::Line(entry))).await.is_err() {
                    return;
                }
            }
        });
        Ok(LogFollow::new(rx))
    }

    async fn forget(&self, app: &str) -> Result<(), LogError> {
        // Dropping the app's broadcast sender ends its followers.
        self.apps.lock().expect("tiny log store").remove(app);
        Ok(())
    }
}
