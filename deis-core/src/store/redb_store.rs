//! [`RedbStore`]: the embedded default [`Store`](super::Store) on a redb file.
//!
//! Layout (one redb database):
//!
//! | table | key | value |
//! |---|---|---|
//! | `kv` | key | 32-byte header (create revision, mod revision, version, lease; u64 LE) + value |
//! | `leases` | lease id | (ttl millis, deadline as unix millis) |
//! | `lease_keys` | (lease id, key) | () — index of the keys attached to a lease |
//! | `meta` | `revision` / `next_lease` | u64 |
//!
//! Every redb call runs on a blocking thread (`spawn_blocking`); writers are serialised by
//! one mutex, which they hold across the commit and the publication of its events, so
//! watchers see transactions in commit order. Every committed write transaction is
//! durable (redb's default `Durability::Immediate`), so the data survives `kill -9`.
//!
//! Watch history is in memory only: the last [`RedbStore::HISTORY_EVENTS`] events (at most
//! [`RedbStore::HISTORY_BYTES`] of keys and values). After a restart it starts empty, so a watch
//! can resume from `current revision + 1` but not from earlier.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use redb::{Database, ReadableTable, TableDefinition};
use tokio::sync::mpsc;

use super::{
    EventKind, KeyValue, LeaseId, Listing, MAX_KEY_BYTES, Op, Result, Revision, Store, StoreError, Txn, TxnResult,
    Watch, WatchEvent, check_key_value,
};
use crate::store::Compare;

const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
const LEASES: TableDefinition<u64, (u64, u64)> = TableDefinition::new("leases");
const LEASE_KEYS: TableDefinition<(u64, &str), ()> = TableDefinition::new("lease_keys");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const META_REVISION: &str = "revision";
const META_NEXT_LEASE: &str = "next_lease";

/// Most watch events kept in memory for replay.
const HISTORY_EVENTS: usize = 10_000;
/// Most bytes (keys + values) of watch events kept in memory for replay.
const HISTORY_BYTES: usize = 64 << 20;
/// Live events a watcher may have unread before it is cut off with
/// [`StoreError::Compacted`].
const WATCH_BUFFER: usize = 1024;
/// How often the expiry task looks for expired leases.
const EXPIRY_INTERVAL: Duration = Duration::from_millis(100);
/// How long [`RedbStore::open`] waits for a previous handle on the same file (e.g. one
/// dropped a moment ago whose last background job is finishing) to let go of it.
const OPEN_RETRY: Duration = Duration::from_secs(2);
/// How often [`RedbStore::open`] tries again meanwhile.
const OPEN_RETRY_POLL: Duration = Duration::from_millis(20);

const HEADER_LEN: usize = 32;

/// The embedded store: one redb file (or memory, for tests).
///
/// Create it with [`RedbStore::open`] or [`RedbStore::in_memory`]; both must be called
/// inside a tokio runtime, on which they spawn the lease-expiry task. The task ends
/// when the store is dropped.
pub struct RedbStore {
    inner: Arc<Inner>,
}

impl fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedbStore").field("path", &self.inner.path).finish_non_exhaustive()
    }
}

struct Inner {
    db: Database,
    path: Option<PathBuf>,
    /// Held by every writer for the whole write transaction and its publication.
    write: Mutex<WriteState>,
    /// Watch history and watchers; held only briefly.
    hub: Mutex<Hub>,
}

struct WriteState {
    revision: Revision,
    next_lease: LeaseId,
    /// Mirror of the `leases` table: id -> (ttl ms, deadline unix ms).
    leases: HashMap<LeaseId, (u64, u64)>,
}

struct Hub {
    revision: Revision,
    /// Every event with revision >= this is in `history`.
    oldest_available: Revision,
    history: VecDeque<WatchEvent>,
    history_bytes: usize,
    watchers: Vec<Watcher>,
}

struct Watcher {
    prefix: String,
    /// Events before this revision are not wanted.
    from: Revision,
    tx: mpsc::Sender<Result<WatchEvent>>,
}

fn be(e: impl Into<redb::Error>) -> StoreError {
    StoreError::backend(e.into())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves consistent state behind (redb rolled the
    // transaction back), so poisoning is not a reason to fail forever.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn encode(kv: &KeyValue) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + kv.value.len());
    out.extend_from_slice(&kv.create_revision.to_le_bytes());
    out.extend_from_slice(&kv.mod_revision.to_le_bytes());
    out.extend_from_slice(&kv.version.to_le_bytes());
    out.extend_from_slice(&kv.lease.unwrap_or(0).to_le_bytes());
    out.extend_from_slice(&kv.value);
    out
}

fn decode(key: &str, bytes: &[u8]) -> Result<KeyValue> {
    if bytes.len() < HEADER_LEN {
        return Err(StoreError::Corrupt {
            key: key.to_string(),
            message: format!("record is {} bytes, shorter than its {HEADER_LEN}-byte header", bytes.len()),
        });
    }
    let word = |i: usize| u64::from_le_bytes(bytes[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
    let lease = word(3);
    Ok(KeyValue {
        key: key.to_string(),
        value: bytes[HEADER_LEN..].to_vec(),
        create_revision: word(0),
        mod_revision: word(1),
        version: word(2),
        lease: (lease != 0).then_some(lease),
    })
}

fn check_prefix(prefix: &str) -> Result<()> {
    if prefix.len() > MAX_KEY_BYTES {
        return Err(StoreError::Invalid(format!("prefixes are at most {MAX_KEY_BYTES} bytes, got {}", prefix.len())));
    }
    Ok(())
}

impl RedbStore {
    /// Most watch events kept in memory for replay.
    pub const HISTORY_EVENTS: usize = HISTORY_EVENTS;
    /// Most bytes (keys + values) of watch events kept in memory for replay.
    pub const HISTORY_BYTES: usize = HISTORY_BYTES;
    /// Live events a watcher may leave unread before it is cut off with
    /// [`StoreError::Compacted`].
    pub const WATCH_BUFFER: usize = WATCH_BUFFER;
    /// How often the lease-expiry task looks for expired leases.
    pub const EXPIRY_INTERVAL: Duration = EXPIRY_INTERVAL;

    /// Opens (or creates) the store in the file at `path`.
    ///
    /// Must be called inside a tokio runtime: it spawns the lease-expiry task there, and
    /// does its file work on the runtime's blocking threads. Leases whose deadline
    /// passed while the store was closed expire on the task's first tick, right after
    /// opening. If another handle still has the file open (e.g. a store dropped a moment
    /// ago), waits up to two seconds for it to close.
    pub async fn open(path: &Path) -> Result<Arc<RedbStore>> {
        let runtime = current_runtime()?;
        let deadline = tokio::time::Instant::now() + OPEN_RETRY;
        let db = loop {
            let file = path.to_path_buf();
            match unblock(move || Ok(Database::create(file))).await? {
                Ok(db) => break db,
                Err(redb::DatabaseError::DatabaseAlreadyOpen) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(OPEN_RETRY_POLL).await;
                }
                Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                    return Err(StoreError::Backend(
                        format!("store file {} is in use by another process; stop it first", path.display()).into(),
                    ));
                }
                Err(e) => return Err(be(e)),
            }
        };
        let (db, state) = unblock(move || {
            let state = load(&db)?;
            Ok((db, state))
        })
        .await?;
        Ok(Self::start(&runtime, db, state, Some(path.to_path_buf())))
    }

    /// A store in memory, for tests. Must be called inside a tokio runtime (see
    /// [`RedbStore::open`]).
    pub fn in_memory() -> Arc<RedbStore> {
        let opened = current_runtime().and_then(|runtime| {
            let db = Database::builder()
                .create_with_backend(redb::backends::InMemoryBackend::new())
                .map_err(|e| StoreError::backend(redb::Error::from(e)))?;
            // Memory only: nothing here blocks on a disk.
            let state = load(&db)?;
            Ok(Self::start(&runtime, db, state, None))
        });
        match opened {
            Ok(store) => store,
            Err(e) => panic!("RedbStore::in_memory: {e}"),
        }
    }

    fn start(runtime: &tokio::runtime::Handle, db: Database, state: Loaded, path: Option<PathBuf>) -> Arc<RedbStore> {
        let Loaded { revision, next_lease, leases } = state;
        let inner = Arc::new(Inner {
            db,
            path,
            write: Mutex::new(WriteState { revision, next_lease, leases }),
            hub: Mutex::new(Hub {
                revision,
                oldest_available: revision + 1,
                history: VecDeque::new(),
                history_bytes: 0,
                watchers: Vec::new(),
            }),
        });
        runtime.spawn(expiry_task(Arc::downgrade(&inner)));
        Arc::new(RedbStore { inner })
    }

    async fn blocking<T: Send + 'static>(&self, f: impl FnOnce(&Inner) -> Result<T> + Send + 'static) -> Result<T> {
        let inner = self.inner.clone();
        unblock(move || f(&inner)).await
    }
}

/// The runtime the store lives on, or why there is none.
fn current_runtime() -> Result<tokio::runtime::Handle> {
    tokio::runtime::Handle::try_current().map_err(|_| {
        StoreError::Invalid("RedbStore must be opened inside a tokio runtime (it spawns its lease-expiry task)".into())
    })
}

/// Runs the blocking `f` on the runtime's blocking threads.
async fn unblock<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(StoreError::Closed),
    }
}

/// What a store starts from, read from its database.
struct Loaded {
    revision: Revision,
    next_lease: LeaseId,
    /// id -> (ttl ms, deadline unix ms).
    leases: HashMap<LeaseId, (u64, u64)>,
}

/// Creates the tables if missing and reads the revision, the next lease id and the
/// leases (a write transaction: blocking, durable).
fn load(db: &Database) -> Result<Loaded> {
    let w = db.begin_write().map_err(be)?;
    let loaded;
    {
        let meta = w.open_table(META).map_err(be)?;
        let revision = meta.get(META_REVISION).map_err(be)?.map(|g| g.value()).unwrap_or(0);
        let next_lease = meta.get(META_NEXT_LEASE).map_err(be)?.map(|g| g.value()).unwrap_or(1);
        let table = w.open_table(LEASES).map_err(be)?;
        let mut leases = HashMap::new();
        for item in table.iter().map_err(be)? {
            let (id, v) = item.map_err(be)?;
            leases.insert(id.value(), v.value());
        }
        w.open_table(KV).map_err(be)?;
        w.open_table(LEASE_KEYS).map_err(be)?;
        loaded = Loaded { revision, next_lease, leases };
    }
    w.commit().map_err(be)?;
    Ok(loaded)
}

async fn expiry_task(inner: Weak<Inner>) {
    let mut tick = tokio::time::interval(EXPIRY_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(strong) = inner.upgrade() else { return };
        let result = tokio::task::spawn_blocking(move || strong.expire_due()).await;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "expiring leases failed; retrying on the next tick"),
            Err(_) => return, // runtime shutting down
        }
    }
}

/// The events of one write transaction, applied to a redb write transaction.
struct Applier<'a> {
    w: &'a redb::WriteTransaction,
    revision: Revision,
    events: Vec<WatchEvent>,
    deleted: u64,
}

impl Applier<'_> {
    fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let table = self.w.open_table(KV).map_err(be)?;
        let found = table.get(key).map_err(be)?;
        found.map(|g| decode(key, g.value())).transpose()
    }

    fn put(&mut self, key: &str, value: &[u8], lease: Option<LeaseId>) -> Result<()> {
        let old = self.get(key)?;
        let kv = KeyValue {
            key: key.to_string(),
            value: value.to_vec(),
            create_revision: old.as_ref().map_or(self.revision, |o| o.create_revision),
            mod_revision: self.revision,
            version: old.as_ref().map_or(1, |o| o.version + 1),
            lease,
        };
        let mut lease_keys = self.w.open_table(LEASE_KEYS).map_err(be)?;
        if let Some(old_lease) = old.as_ref().and_then(|o| o.lease) {
            lease_keys.remove((old_lease, key)).map_err(be)?;
        }
        if let Some(l) = lease {
            lease_keys.insert((l, key), ()).map_err(be)?;
        }
        self.w.open_table(KV).map_err(be)?.insert(key, encode(&kv).as_slice()).map_err(be)?;
        self.events.push(WatchEvent { kind: EventKind::Put, kv });
        Ok(())
    }

    fn delete(&mut self, key: &str) -> Result<()> {
        let Some(old) = self.get(key)? else { return Ok(()) };
        self.w.open_table(KV).map_err(be)?.remove(key).map_err(be)?;
        if let Some(l) = old.lease {
            self.w.open_table(LEASE_KEYS).map_err(be)?.remove((l, key)).map_err(be)?;
        }
        self.deleted += 1;
        self.events.push(WatchEvent {
            kind: EventKind::Delete,
            kv: KeyValue { value: Vec::new(), mod_revision: self.revision, ..old },
        });
        Ok(())
    }

    fn delete_prefix(&mut self, prefix: &str) -> Result<()> {
        let keys = {
            let table = self.w.open_table(KV).map_err(be)?;
            let mut keys = Vec::new();
            for item in table.range(prefix..).map_err(be)? {
                let (k, _) = item.map_err(be)?;
                if !k.value().starts_with(prefix) {
                    break;
                }
                keys.push(k.value().to_string());
            }
            keys
        };
        for k in keys {
            self.delete(&k)?;
        }
        Ok(())
    }

    /// Deletes a lease's record and every key attached to it.
    fn revoke(&mut self, lease: LeaseId) -> Result<()> {
        let keys = {
            let table = self.w.open_table(LEASE_KEYS).map_err(be)?;
            let mut keys = Vec::new();
            for item in table.range((lease, "")..(lease + 1, "")).map_err(be)? {
                let (k, _) = item.map_err(be)?;
                keys.push(k.value().1.to_string());
            }
            keys
        };
        for k in keys {
            self.delete(&k)?;
        }
        self.w.open_table(LEASES).map_err(be)?.remove(lease).map_err(be)?;
        Ok(())
    }
}

fn set_meta(w: &redb::WriteTransaction, name: &str, value: u64) -> Result<()> {
    w.open_table(META).map_err(be)?.insert(name, value).map_err(be)?;
    Ok(())
}

impl Inner {
    /// Runs `f` in a write transaction at revision `state.revision + 1`; commits and
    /// publishes if `f` succeeds, bumping the revision if it produced events.
    fn write<T>(
        &self,
        state: &mut WriteState,
        f: impl FnOnce(&mut Applier<'_>, &mut WriteState) -> Result<T>,
    ) -> Result<(T, Revision)> {
        let w = self.db.begin_write().map_err(be)?;
        let mut applier = Applier { w: &w, revision: state.revision + 1, events: Vec::new(), deleted: 0 };
        let out = match f(&mut applier, state) {
            Ok(out) => out,
            Err(e) => {
                drop(applier);
                w.abort().map_err(be)?;
                return Err(e);
            }
        };
        let Applier { events, revision, .. } = applier;
        if !events.is_empty() {
            set_meta(&w, META_REVISION, revision)?;
        }
        w.commit().map_err(be)?;
        if !events.is_empty() {
            state.revision = revision;
            lock(&self.hub).publish(revision, events);
        }
        Ok((out, state.revision))
    }

    fn txn(&self, txn: Txn) -> Result<TxnResult> {
        for op in &txn.ops {
            match op {
                Op::Put { key, value, .. } => check_key_value(key, Some(value))?,
                Op::Delete(key) => check_key_value(key, None)?,
                Op::DeletePrefix(prefix) => check_prefix(prefix)?,
            }
        }
        for Compare::ModRevision(key, _) in &txn.compares {
            check_key_value(key, None)?;
        }
        let mut state = lock(&self.write);
        let ((succeeded, deleted), revision) = self.write(&mut state, |a, state| {
            for Compare::ModRevision(key, rev) in &txn.compares {
                if a.get(key)?.map_or(0, |kv| kv.mod_revision) != *rev {
                    return Ok((false, 0));
                }
            }
            let now = now_ms();
            for op in &txn.ops {
                if let Op::Put { lease: Some(l), .. } = op {
                    match state.leases.get(l) {
                        Some(&(_, deadline)) if deadline > now => {}
                        _ => return Err(StoreError::LeaseNotFound(*l)),
                    }
                }
            }
            for op in txn.ops {
                match op {
                    Op::Put { key, value, lease } => a.put(&key, &value, lease)?,
                    Op::Delete(key) => a.delete(&key)?,
                    Op::DeletePrefix(prefix) => a.delete_prefix(&prefix)?,
                }
            }
            Ok((true, a.deleted))
        })?;
        Ok(TxnResult { succeeded, revision, deleted })
    }

    fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let r = self.db.begin_read().map_err(be)?;
        let table = r.open_table(KV).map_err(be)?;
        let found = table.get(key).map_err(be)?;
        found.map(|g| decode(key, g.value())).transpose()
    }

    fn list(&self, prefix: &str) -> Result<Listing> {
        let r = self.db.begin_read().map_err(be)?;
        let revision = r.open_table(META).map_err(be)?.get(META_REVISION).map_err(be)?.map_or(0, |g| g.value());
        let table = r.open_table(KV).map_err(be)?;
        let mut kvs = Vec::new();
        for item in table.range(prefix..).map_err(be)? {
            let (k, v) = item.map_err(be)?;
            let key = k.value();
            if !key.starts_with(prefix) {
                break;
            }
            kvs.push(decode(key, v.value())?);
        }
        Ok(Listing { kvs, revision })
    }

    fn grant(&self, ttl: Duration) -> Result<LeaseId> {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        if ttl_ms == 0 {
            return Err(StoreError::Invalid("a lease TTL must be at least 1 millisecond".into()));
        }
        let mut state = lock(&self.write);
        let id = state.next_lease;
        let deadline = now_ms().saturating_add(ttl_ms);
        self.write(&mut state, |a, _| {
            set_meta(a.w, META_NEXT_LEASE, id + 1)?;
            a.w.open_table(LEASES).map_err(be)?.insert(id, (ttl_ms, deadline)).map_err(be)?;
            Ok(())
        })?;
        state.next_lease = id + 1;
        state.leases.insert(id, (ttl_ms, deadline));
        Ok(id)
    }

    fn keep_alive(&self, lease: LeaseId) -> Result<()> {
        let mut state = lock(&self.write);
        let now = now_ms();
        let ttl = match state.leases.get(&lease) {
            Some(&(ttl, deadline)) if deadline > now => ttl,
            _ => return Err(StoreError::LeaseNotFound(lease)),
        };
        let deadline = now.saturating_add(ttl);
        self.write(&mut state, |a, _| {
            a.w.open_table(LEASES).map_err(be)?.insert(lease, (ttl, deadline)).map_err(be)?;
            Ok(())
        })?;
        state.leases.insert(lease, (ttl, deadline));
        Ok(())
    }

    fn revoke(&self, leases: &[LeaseId]) -> Result<()> {
        let mut state = lock(&self.write);
        self.revoke_locked(&mut state, leases)
    }

    /// Deletes the leases (those that exist) and their keys in one transaction.
    fn revoke_locked(&self, state: &mut WriteState, leases: &[LeaseId]) -> Result<()> {
        let known: Vec<LeaseId> = leases.iter().copied().filter(|l| state.leases.contains_key(l)).collect();
        if known.is_empty() {
            return Ok(());
        }
        self.write(state, |a, _| {
            for &l in &known {
                a.revoke(l)?;
            }
            Ok(())
        })?;
        for l in known {
            state.leases.remove(&l);
        }
        Ok(())
    }

    /// Revokes every lease whose deadline has passed.
    fn expire_due(&self) -> Result<()> {
        let now = now_ms();
        let mut state = lock(&self.write);
        let due: Vec<LeaseId> =
            state.leases.iter().filter(|(_, (_, deadline))| *deadline <= now).map(|(id, _)| *id).collect();
        if due.is_empty() {
            return Ok(());
        }
        tracing::debug!(leases = ?due, "expiring leases");
        self.revoke_locked(&mut state, &due)
    }

    fn watch(&self, prefix: &str, start: Revision) -> Result<Watch> {
        check_prefix(prefix)?;
        let mut hub = lock(&self.hub);
        if start != 0 && start < hub.oldest_available {
            return Err(StoreError::Compacted { requested: start, oldest: hub.oldest_available });
        }
        let from = if start == 0 { hub.revision + 1 } else { start };
        let first = hub.history.partition_point(|e| e.kv.mod_revision < from);
        let replay: Vec<WatchEvent> =
            hub.history.range(first..).filter(|e| e.kv.key.starts_with(prefix)).cloned().collect();
        let (tx, rx) = mpsc::channel(replay.len() + WATCH_BUFFER + 1);
        for e in replay {
            tx.try_send(Ok(e)).expect("the channel has room for the replay");
        }
        hub.watchers.push(Watcher { prefix: prefix.to_string(), from, tx });
        Ok(Watch::new(rx))
    }
}

impl Hub {
    fn publish(&mut self, revision: Revision, events: Vec<WatchEvent>) {
        self.revision = revision;
        for e in &events {
            self.history_bytes += e.kv.key.len() + e.kv.value.len();
            self.history.push_back(e.clone());
        }
        while self.history.len() > HISTORY_EVENTS || self.history_bytes > HISTORY_BYTES {
            let Some(old) = self.history.pop_front() else { break };
            self.history_bytes -= old.kv.key.len() + old.kv.value.len();
            self.oldest_available = old.kv.mod_revision + 1;
        }
        let oldest = self.oldest_available;
        self.watchers.retain(|w| {
            for e in &events {
                if e.kv.mod_revision < w.from || !e.kv.key.starts_with(&w.prefix) {
                    continue;
                }
                if w.tx.is_closed() {
                    return false;
                }
                // Keep the last slot for the error that tells the watcher it fell behind.
                if w.tx.capacity() <= 1 {
                    let _ = w.tx.try_send(Err(StoreError::Compacted { requested: e.kv.mod_revision, oldest }));
                    tracing::debug!(prefix = %w.prefix, "watcher fell behind; closing it");
                    return false;
                }
                if w.tx.try_send(Ok(e.clone())).is_err() {
                    return false;
                }
            }
            !w.tx.is_closed()
        });
    }
}

#[async_trait]
impl Store for RedbStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        check_key_value(key, None)?;
        let key = key.to_string();
        self.blocking(move |i| i.get(&key)).await
    }

    async fn list(&self, prefix: &str) -> Result<Listing> {
        check_prefix(prefix)?;
        let prefix = prefix.to_string();
        self.blocking(move |i| i.list(&prefix)).await
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResult> {
        self.blocking(move |i| i.txn(txn)).await
    }

    async fn watch(&self, prefix: &str, start_revision: Revision) -> Result<Watch> {
        self.inner.watch(prefix, start_revision)
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId> {
        self.blocking(move |i| i.grant(ttl)).await
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<()> {
        self.blocking(move |i| i.keep_alive(lease)).await
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<()> {
        self.blocking(move |i| i.revoke(&[lease])).await
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::testing::{lock_suite, store_suite};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn suite_in_memory() {
        store_suite(|| async { RedbStore::in_memory() as Arc<dyn Store> }).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn suite_on_file() {
        let dir = tempfile::tempdir().unwrap();
        let n = AtomicUsize::new(0);
        store_suite(|| async {
            let path = dir.path().join(format!("store-{}.redb", n.fetch_add(1, Ordering::Relaxed)));
            RedbStore::open(&path).await.unwrap() as Arc<dyn Store>
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lock_suite_in_memory() {
        lock_suite(|| async { RedbStore::in_memory() as Arc<dyn Store> }).await;
    }

    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn trait_object_futures_are_send() {
        fn assert_send<T: Send>(_: &T) {}
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let _guard = rt.enter();
        let s: Arc<dyn Store> = RedbStore::in_memory();
        assert_send(&s.get("k"));
        assert_send(&s.list("k"));
        assert_send(&s.txn(Txn::new()));
        assert_send(&s.watch("k", 0));
        assert_send(&s.grant_lease(Duration::from_secs(1)));
        assert_send(&s.keep_alive(1));
        assert_send(&s.revoke_lease(1));
        assert_send(&s.put("k", Vec::new()));
        assert_send(&s.create("k", Vec::new()));
        assert_send(&s.compare_and_swap("k", 0, Vec::new()));
        assert_send(&s.delete("k"));
        assert_send(&crate::store::lock::Lock::acquire(s.clone(), "l", Duration::from_secs(1)));
        assert_send(&crate::store::lock::elect(s.clone(), "l", "me", Duration::from_secs(1)));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn survives_reopen_and_expires_leases_that_ran_out_while_closed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        let (revision, long_lease, short_lease) = {
            let s = RedbStore::open(&path).await.unwrap();
            s.put("apps/a", b"1".to_vec()).await.unwrap();
            s.put("apps/a", b"2".to_vec()).await.unwrap();
            s.put("apps/b", b"3".to_vec()).await.unwrap();
            let long = s.grant_lease(Duration::from_secs(600)).await.unwrap();
            let short = s.grant_lease(Duration::from_millis(300)).await.unwrap();
            s.txn(Txn::new().put_leased("endpoints/long", b"l".to_vec(), long)).await.unwrap();
            let r = s.txn(Txn::new().put_leased("endpoints/short", b"s".to_vec(), short)).await.unwrap().revision;
            (r, long, short)
        };
        // Closed for longer than the short lease's TTL.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let s = RedbStore::open(&path).await.unwrap();
        let a = s.get("apps/a").await.unwrap().unwrap();
        assert_eq!((a.value.as_slice(), a.version, a.create_revision, a.mod_revision), (&b"2"[..], 2, 1, 2));
        let listing = s.list("apps/").await.unwrap();
        assert_eq!(listing.kvs.len(), 2);

        // History starts empty after a restart.
        let err = s.watch("", revision).await.unwrap_err();
        assert!(
            matches!(err, StoreError::Compacted { requested, oldest } if requested == revision && oldest == revision + 1)
        );
        let mut w = s.watch("endpoints/", revision + 1).await.unwrap();
        let e = tokio::time::timeout(Duration::from_secs(2), w.next()).await.expect("expired on the first tick");
        let e = e.unwrap().unwrap();
        assert_eq!(
            (e.kind, e.kv.key.as_str(), e.kv.mod_revision),
            (EventKind::Delete, "endpoints/short", revision + 1)
        );
        assert!(matches!(s.keep_alive(short_lease).await, Err(StoreError::LeaseNotFound(_))));
        s.keep_alive(long_lease).await.expect("the long lease survived the restart");
        assert_eq!(s.get("endpoints/long").await.unwrap().unwrap().lease, Some(long_lease));
        let fresh = s.grant_lease(Duration::from_secs(1)).await.unwrap();
        assert!(fresh > short_lease, "lease ids are not reused after a restart");
        assert_eq!(s.put("apps/c", b"4".to_vec()).await.unwrap(), revision + 2, "revisions continue");
        drop(s);

        // And once more, reopening right after dropping.
        let s = RedbStore::open(&path).await.unwrap();
        assert_eq!(s.list("").await.unwrap().revision, revision + 2);
        assert_eq!(s.get("endpoints/short").await.unwrap(), None);
    }

    /// On a current-thread runtime: a thread that slept while waiting for the file would
    /// stall every other task.
    #[tokio::test]
    async fn open_waits_for_a_busy_file_without_blocking_the_runtime() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        let first = RedbStore::open(&path).await.unwrap();
        first.put("k", b"v".to_vec()).await.unwrap();
        let second = tokio::spawn({
            let path = path.clone();
            async move { RedbStore::open(&path).await }
        });
        // While `second` waits for the file, this task keeps running beside it.
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(!second.is_finished(), "opened a file that is still in use, or gave up early");
        drop(first);
        let second = tokio::time::timeout(Duration::from_secs(5), second).await.expect("opened once free");
        let s = second.unwrap().unwrap();
        assert_eq!(s.get("k").await.unwrap().unwrap().value, b"v");
    }

    /// Run by [`committed_writes_survive_kill_9`] in a child process, which it kills.
    #[test]
    #[ignore = "helper of committed_writes_survive_kill_9; run in a child process"]
    fn kill9_child() {
        let Some(path) = std::env::var_os("DEIS_KILL9_STORE") else { return };
        let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let s = RedbStore::open(Path::new(&path)).await.unwrap();
            for i in 0..100_000u32 {
                s.put(&format!("k/{i:06}"), i.to_string().into_bytes()).await.unwrap();
                println!("committed {i}");
            }
        });
    }

    #[test]
    fn committed_writes_survive_kill_9() {
        use std::io::BufRead;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "store::redb_store::tests::kill9_child", "--ignored", "--nocapture"])
            .env("DEIS_KILL9_STORE", &path)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut last = None;
        for line in std::io::BufReader::new(child.stdout.take().unwrap()).lines() {
            if let Some(n) = line.unwrap().strip_prefix("committed ") {
                let n: u32 = n.parse().unwrap();
                last = Some(n);
                if n >= 30 {
                    break;
                }
            }
        }
        child.kill().unwrap(); // SIGKILL, mid-write
        child.wait().unwrap();
        let last = last.expect("the child committed writes");

        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let s = RedbStore::open(&path).await.unwrap();
            let listing = s.list("k/").await.unwrap();
            assert!(listing.kvs.len() as u32 > last, "every acknowledged write survived");
            for (i, kv) in listing.kvs.iter().enumerate() {
                assert_eq!(kv.key, format!("k/{i:06}"));
                assert_eq!(kv.mod_revision, i as u64 + 1);
            }
            assert_eq!(listing.revision, listing.kvs.len() as u64);
            s.put("after", b"x".to_vec()).await.expect("the store is writable after the crash");
        });
    }

    #[tokio::test]
    async fn slow_watcher_gets_an_error_not_a_gap() {
        let s = RedbStore::in_memory();
        let mut slow = s.watch("k", 0).await.unwrap();
        let mut other = s.watch("other", 0).await.unwrap();
        for i in 0..WATCH_BUFFER + 10 {
            s.inner.txn(Txn::new().put("k", i.to_string().into_bytes())).unwrap();
        }
        for i in 0..WATCH_BUFFER {
            let e = slow.next().await.unwrap().unwrap();
            assert_eq!(e.kv.value, i.to_string().into_bytes());
        }
        let err = slow.next().await.unwrap().unwrap_err();
        assert!(matches!(err, StoreError::Compacted { requested, .. } if requested == WATCH_BUFFER as u64 + 1));
        assert!(slow.next().await.is_none(), "the lagging watcher is closed");
        // Watchers of other prefixes are unaffected.
        s.put("other", b"x".to_vec()).await.unwrap();
        assert_eq!(other.next().await.unwrap().unwrap().kv.key, "other");
    }

    #[tokio::test]
    async fn history_is_bounded() {
        let s = RedbStore::in_memory();
        for i in 0..HISTORY_EVENTS + 5 {
            s.inner.txn(Txn::new().put("k", i.to_string().into_bytes())).unwrap();
        }
        let err = s.watch("", 5).await.unwrap_err();
        assert!(matches!(err, StoreError::Compacted { requested: 5, oldest: 6 }), "{err:?}");
        let mut w = s.watch("", 6).await.unwrap();
        assert_eq!(w.next().await.unwrap().unwrap().kv.mod_revision, 6);
        assert_eq!(lock(&s.inner.hub).history.len(), HISTORY_EVENTS);
    }

    #[tokio::test]
    async fn dropping_the_store_stops_the_expiry_task_and_closes_watches() {
        let s = RedbStore::in_memory();
        let weak = Arc::downgrade(&s.inner);
        let mut w = s.watch("", 0).await.unwrap();
        drop(s);
        tokio::time::timeout(Duration::from_secs(2), async {
            while weak.strong_count() > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("nothing keeps the store alive");
        assert!(w.next().await.is_none());
    }

    // ---- model-based test ----

    const KEYS: &[&str] = &["a", "a/b", "a/c", "ab", "b"];
    const PREFIXES: &[&str] = &["", "a", "a/", "b"];

    #[derive(Debug, Clone)]
    enum Cmp {
        Current,
        Absent,
        Stale,
    }

    #[derive(Debug, Clone)]
    enum MOp {
        Put(usize, u8),
        Delete(usize),
        DeletePrefix(usize),
    }

    #[derive(Debug, Clone)]
    enum Step {
        Put(usize, u8),
        Delete(usize),
        Create(usize, u8),
        Txn(Vec<(usize, Cmp)>, Vec<MOp>),
    }

    fn step() -> impl Strategy<Value = Step> {
        let key = 0..KEYS.len();
        let op = prop_oneof![
            (0..KEYS.len(), any::<u8>()).prop_map(|(k, v)| MOp::Put(k, v)),
            (0..KEYS.len()).prop_map(MOp::Delete),
            (0..PREFIXES.len()).prop_map(MOp::DeletePrefix),
        ];
        let cmp = prop_oneof![Just(Cmp::Current), Just(Cmp::Absent), Just(Cmp::Stale)];
        prop_oneof![
            (key.clone(), any::<u8>()).prop_map(|(k, v)| Step::Put(k, v)),
            key.clone().prop_map(Step::Delete),
            (key.clone(), any::<u8>()).prop_map(|(k, v)| Step::Create(k, v)),
            (proptest::collection::vec((key, cmp), 0..3), proptest::collection::vec(op, 0..4))
                .prop_map(|(c, o)| Step::Txn(c, o)),
        ]
    }

    /// The obvious model: a map and a counter.
    #[derive(Default)]
    struct Model {
        kvs: BTreeMap<String, KeyValue>,
        revision: Revision,
        events: Vec<WatchEvent>,
    }

    impl Model {
        fn mod_rev(&self, key: &str) -> Revision {
            self.kvs.get(key).map_or(0, |kv| kv.mod_revision)
        }

        fn txn(&mut self, txn: &Txn) -> TxnResult {
            if !txn.compares.iter().all(|Compare::ModRevision(k, r)| self.mod_rev(k) == *r) {
                return TxnResult { succeeded: false, revision: self.revision, deleted: 0 };
            }
            let rev = self.revision + 1;
            let mut changed = false;
            let mut deleted = 0;
            for op in &txn.ops {
                let doomed: Vec<String> = match op {
                    Op::Put { key, value, .. } => {
                        let old = self.kvs.get(key);
                        let kv = KeyValue {
                            key: key.clone(),
                            value: value.clone(),
                            create_revision: old.map_or(rev, |o| o.create_revision),
                            mod_revision: rev,
                            version: old.map_or(1, |o| o.version + 1),
                            lease: None,
                        };
                        self.events.push(WatchEvent { kind: EventKind::Put, kv: kv.clone() });
                        self.kvs.insert(key.clone(), kv);
                        changed = true;
                        vec![]
                    }
                    Op::Delete(key) => self.kvs.contains_key(key).then(|| key.clone()).into_iter().collect(),
                    Op::DeletePrefix(p) => self.kvs.keys().filter(|k| k.starts_with(p.as_str())).cloned().collect(),
                };
                for k in doomed {
                    let old = self.kvs.remove(&k).unwrap();
                    self.events.push(WatchEvent {
                        kind: EventKind::Delete,
                        kv: KeyValue { value: vec![], mod_revision: rev, ..old },
                    });
                    deleted += 1;
                    changed = true;
                }
            }
            if changed {
                self.revision = rev;
            }
            TxnResult { succeeded: true, revision: self.revision, deleted }
        }
    }

    fn to_txn(step: &Step, model: &Model) -> Txn {
        let v = |b: &u8| vec![*b; (*b % 4) as usize];
        match step {
            Step::Put(k, b) => Txn::new().put(KEYS[*k], v(b)),
            Step::Delete(k) => Txn::new().delete(KEYS[*k]),
            Step::Create(k, b) => Txn::new().when(KEYS[*k], 0).put(KEYS[*k], v(b)),
            Step::Txn(cmps, ops) => {
                let mut t = Txn::new();
                for (k, c) in cmps {
                    let rev = match c {
                        Cmp::Current => model.mod_rev(KEYS[*k]),
                        Cmp::Absent => 0,
                        Cmp::Stale => model.mod_rev(KEYS[*k]) + 1,
                    };
                    t = t.when(KEYS[*k], rev);
                }
                for op in ops {
                    t = match op {
                        MOp::Put(k, b) => t.put(KEYS[*k], v(b)),
                        MOp::Delete(k) => t.delete(KEYS[*k]),
                        MOp::DeletePrefix(p) => t.delete_prefix(PREFIXES[*p]),
                    };
                }
                t
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
        #[test]
        fn matches_the_model(steps in proptest::collection::vec(step(), 1..40)) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let s = RedbStore::in_memory();
                let mut w = s.watch("", 1).await.unwrap();
                let mut model = Model::default();
                for step in &steps {
                    let txn = to_txn(step, &model);
                    let expected = model.txn(&txn);
                    let got = s.txn(txn).await.unwrap();
                    prop_assert_eq!(got, expected, "after {:?}", step);
                    let listing = s.list("").await.unwrap();
                    prop_assert_eq!(listing.revision, model.revision);
                    prop_assert_eq!(listing.kvs, model.kvs.values().cloned().collect::<Vec<_>>());
                    for p in PREFIXES {
                        let keys: Vec<_> = s.list(p).await.unwrap().kvs.into_iter().map(|kv| kv.key).collect();
                        let want: Vec<_> = model.kvs.keys().filter(|k| k.starts_with(p)).cloned().collect();
                        prop_assert_eq!(keys, want);
                    }
                }
                for want in &model.events {
                    let got = w.next().await.unwrap().unwrap();
                    prop_assert_eq!(&got, want);
                }
                let mut replay = s.watch("a/", 1).await.unwrap();
                for want in model.events.iter().filter(|e| e.kv.key.starts_with("a/")) {
                    prop_assert_eq!(&replay.next().await.unwrap().unwrap(), want);
                }
                Ok(())
            })?;
        }
    }
}
