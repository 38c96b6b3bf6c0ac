//! A `Store` of your own: every record in memory, etcd's model in a few hundred lines.
//!
//! What it shows an adapter author: the revision rules (one new revision per effective
//! write transaction), watches that replay history and then go live without a gap,
//! leases that expire on a timer, and limits. It passes
//! `deis_core::testing::store_suite` and `lock_suite` (see `tests/suites.rs`).
//! What it is not: durable. Use it for tests and demos; `RedbStore` and etcd persist.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use deis_sdk::store::{
    Compare, EventKind, KeyValue, LeaseId, Listing, Op, Result, Revision, Store, StoreError, Txn, TxnResult, Watch,
    WatchEvent, check_key_value,
};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Changes kept for watches that start in the past; older ones are compacted.
const HISTORY: usize = 10_000;
/// Events buffered per watcher; a watcher further behind gets an error, not a gap.
const WATCH_BUFFER: usize = 1024;

/// An in-memory [`Store`]. Cheap to create; dropped with its last `Arc`.
#[derive(Debug)]
pub struct MemoryStore {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    revision: Revision,
    keys: BTreeMap<String, KeyValue>,
    /// The most recent changes, oldest first.
    history: VecDeque<WatchEvent>,
    watchers: Vec<Watcher>,
    leases: HashMap<LeaseId, Lease>,
    next_lease: LeaseId,
}

#[derive(Debug)]
struct Watcher {
    prefix: String,
    tx: mpsc::Sender<Result<WatchEvent>>,
}

#[derive(Debug)]
struct Lease {
    ttl: Duration,
    deadline: Instant,
}

impl MemoryStore {
    /// An empty store; a background task expires its leases.
    pub fn new() -> Arc<Self> {
        let store = Arc::new(Self { state: Mutex::new(State { next_lease: 1, ..State::default() }) });
        tokio::spawn(expire_leases(Arc::downgrade(&store)));
        store
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("memory store state")
    }
}

/// Deletes the keys of expired leases, one transaction per lease, until the store is gone.
async fn expire_leases(store: Weak<MemoryStore>) {
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let Some(store) = store.upgrade() else { return };
        let mut state = store.state();
        let now = Instant::now();
        let expired: Vec<LeaseId> = state.leases.iter().filter(|(_, l)| l.deadline <= now).map(|(id, _)| *id).collect();
        for id in expired {
            state.revoke(id);
        }
    }
}

impl State {
    /// Applies `ops` at one new revision (if any of them changes something) and tells
    /// the watchers. The ops are already checked.
    fn apply(&mut self, ops: Vec<Op>) -> TxnResult {
        let revision = self.revision + 1;
        let mut events = Vec::new();
        for op in ops {
            match op {
                Op::Put { key, value, lease } => {
                    let previous = self.keys.get(&key);
                    let kv = KeyValue {
                        create_revision: previous.map_or(revision, |p| p.create_revision),
                        version: previous.map_or(1, |p| p.version + 1),
                        key: key.clone(),
                        value,
                        mod_revision: revision,
                        lease,
                    };
                    self.keys.insert(key, kv.clone());
                    events.push(WatchEvent { kind: EventKind::Put, kv });
                }
                Op::Delete(key) => events.extend(self.delete(&key, revision)),
                Op::DeletePrefix(prefix) => {
                    let keys: Vec<String> = self.keys.range(prefix.clone()..).map(|(k, _)| k.clone()).collect();
                    for key in keys.iter().take_while(|k| k.starts_with(&prefix)) {
                        events.extend(self.delete(key, revision));
                    }
                }
            }
        }
        let deleted = events.iter().filter(|e| e.kind == EventKind::Delete).count() as u64;
        if !events.is_empty() {
            self.revision = revision;
            self.publish(events);
        }
        TxnResult { succeeded: true, revision: self.revision, deleted }
    }

    fn delete(&mut self, key: &str, revision: Revision) -> Option<WatchEvent> {
        let mut kv = self.keys.remove(key)?;
        kv.value.clear();
        kv.mod_revision = revision;
        Some(WatchEvent { kind: EventKind::Delete, kv })
    }

    /// Records `events` and sends them to matching watchers; drops watchers that fell
    /// behind after telling them so.
    fn publish(&mut self, events: Vec<WatchEvent>) {
        let oldest = self.oldest_revision();
        self.watchers.retain(|w| {
            for e in events.iter().filter(|e| e.kv.key.starts_with(&w.prefix)) {
                if w.tx.try_send(Ok(e.clone())).is_err() {
                    let behind = StoreError::Compacted { requested: e.kv.mod_revision, oldest };
                    let _ = w.tx.try_send(Err(behind));
                    return false;
                }
            }
            !w.tx.is_closed()
        });
        self.history.extend(events);
        while self.history.len() > HISTORY {
            self.history.pop_front();
        }
    }

    /// The oldest revision a watch may start from.
    fn oldest_revision(&self) -> Revision {
        self.history.front().map_or(self.revision + 1, |e| e.kv.mod_revision)
    }

    fn revoke(&mut self, id: LeaseId) {
        if self.leases.remove(&id).is_some() {
            let keys = self.keys.values().filter(|kv| kv.lease == Some(id)).map(|kv| Op::Delete(kv.key.clone()));
            let ops = keys.collect();
            self.apply(ops);
        }
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        Ok(self.state().keys.get(key).cloned())
    }

    async fn list(&self, prefix: &str) -> Result<Listing> {
        let state = self.state();
        let kvs = state.keys.range(prefix.to_string()..).take_while(|(k, _)| k.starts_with(prefix));
        Ok(Listing { kvs: kvs.map(|(_, kv)| kv.clone()).collect(), revision: state.revision })
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResult> {
        let mut state = self.state();
        // Check every op first: a transaction applies whole or not at all.
        for op in &txn.ops {
            match op {
                Op::Put { key, value, lease } => {
                    check_key_value(key, Some(value))?;
                    if let Some(id) = lease
                        && !state.leases.contains_key(id)
                    {
                        return Err(StoreError::LeaseNotFound(*id));
                    }
                }
                Op::Delete(key) => check_key_value(key, None)?,
                Op::DeletePrefix(_) => {}
            }
        }
        let holds = txn
            .compares
            .iter()
            .all(|Compare::ModRevision(key, rev)| state.keys.get(key).map_or(0, |kv| kv.mod_revision) == *rev);
        if !holds {
            return Ok(TxnResult { succeeded: false, revision: state.revision, deleted: 0 });
        }
        Ok(state.apply(txn.ops))
    }

    async fn watch(&self, prefix: &str, start_revision: Revision) -> Result<Watch> {
        let mut state = self.state();
        let replay: Vec<WatchEvent> = if start_revision == 0 {
            Vec::new()
        } else if start_revision < state.oldest_revision() && start_revision <= state.revision {
            return Err(StoreError::Compacted { requested: start_revision, oldest: state.oldest_revision() });
        } else {
            let past = state.history.iter().filter(|e| e.kv.mod_revision >= start_revision);
            past.filter(|e| e.kv.key.starts_with(prefix)).cloned().collect()
        };
        let (tx, rx) = mpsc::channel(WATCH_BUFFER + replay.len());
        for e in replay {
            tx.try_send(Ok(e)).expect("room for the replay");
        }
        state.watchers.push(Watcher { prefix: prefix.to_string(), tx });
        Ok(Watch::new(rx))
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId> {
        let mut state = self.state();
        let id = state.next_lease;
        state.next_lease += 1;
        state.leases.insert(id, Lease { ttl, deadline: Instant::now() + ttl });
        Ok(id)
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<()> {
        let mut state = self.state();
        let l = state.leases.get_mut(&lease).ok_or(StoreError::LeaseNotFound(lease))?;
        l.deadline = Instant::now() + l.ttl;
        Ok(())
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<()> {
        self.state().revoke(lease);
        Ok(())
    }
}
