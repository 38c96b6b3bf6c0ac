//! Check-ins buffered in memory: a check that changes neither a grant nor an event
//! only moves an instance's last check, version, group and status, so it is kept here
//! and written in batches ([`FLUSH_INTERVAL`], or sooner once [`FLUSH_RECORDS`]
//! wait) instead of in one synced transaction per check.
//!
//! Each buffered check-in is merged into a fresh read of the record when written, so
//! events and grants written meanwhile (by this server or another) are never
//! overwritten. A write of the record that this server makes at once (a grant, an
//! event) takes the buffered check-in along. Reads of this server (checks, the
//! instance list) see the buffered check-ins.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use tokio::sync::Notify;

use super::{Instance, Result, UpdateError};
use crate::store::records::{encode, get_json};
use crate::store::{Store, Txn};

/// Longest a check-in waits in memory before it is written.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// Check-ins waiting that trigger a write before [`FLUSH_INTERVAL`].
pub const FLUSH_RECORDS: usize = 4096;
/// Records per transaction: a compare and a put each, within etcd's default
/// `--max-txn-ops` of 128.
const RECORDS_PER_TXN: usize = 64;
/// Times a batch is read and tried again after another writer got in between.
const MAX_ATTEMPTS: usize = 32;

/// One buffered check-in: the instance's record as the check left it.
#[derive(Debug, Clone)]
pub(super) struct CheckIn {
    /// Tells this check-in from a later one of the same instance.
    seq: u64,
    record: Instance,
}

impl CheckIn {
    /// Applies the check-in to `record` as read from the store: its last check,
    /// group and version, and its status unless an event received since says more.
    pub(super) fn apply(&self, record: &mut Instance) {
        let at = self.record.last_check;
        if record.last_check > at {
            return; // a later check-in (of another server) is written already
        }
        record.group.clone_from(&self.record.group);
        record.version.clone_from(&self.record.version);
        record.last_check = at;
        if record.last_event().is_none_or(|e| e.at < at) {
            record.status = self.record.status;
        }
    }

    /// The record to create when the store has none.
    pub(super) fn record(&self) -> &Instance {
        &self.record
    }
}

/// The buffer, shared by the clones of a channel and its flusher task.
#[derive(Debug, Default)]
pub(super) struct CheckIns {
    pending: Mutex<HashMap<String, CheckIn>>,
    next_seq: AtomicU64,
    flusher_started: AtomicBool,
    /// Wakes the flusher early when [`FLUSH_RECORDS`] wait.
    wake: Arc<Notify>,
}

impl CheckIns {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, CheckIn>> {
        // Every change to the map is one call: it is consistent even after a panic.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The check-in waiting for `key`, if any.
    pub(super) fn get(&self, key: &str) -> Option<CheckIn> {
        self.lock().get(key).cloned()
    }

    /// The check-ins waiting whose keys start with `prefix`.
    pub(super) fn under(&self, prefix: &str) -> Vec<(String, CheckIn)> {
        self.lock().iter().filter(|(k, _)| k.starts_with(prefix)).map(|(k, c)| (k.clone(), c.clone())).collect()
    }

    /// Forgets the check-in `seen` of `key` once a write took it along (unless a later
    /// one came meanwhile).
    pub(super) fn settled(&self, key: &str, seen: Option<&CheckIn>) {
        let Some(seen) = seen else { return };
        let mut pending = self.lock();
        if pending.get(key).is_some_and(|c| c.seq == seen.seq) {
            pending.remove(key);
        }
    }

    /// Buffers `record` at `key` for `store`; false (nothing buffered: write it now)
    /// outside a Tokio runtime, where no flusher can run.
    pub(super) fn buffer(self: &Arc<Self>, store: &Arc<dyn Store>, key: String, record: Instance) -> bool {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return false };
        if !self.flusher_started.swap(true, Ordering::AcqRel) {
            runtime.spawn(flusher(Arc::downgrade(self), store.clone(), self.wake.clone()));
        }
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let waiting = {
            let mut pending = self.lock();
            pending.insert(key, CheckIn { seq, record });
            pending.len()
        };
        if waiting >= FLUSH_RECORDS {
            self.wake.notify_one();
        }
        true
    }

    /// Writes every buffered check-in to `store`. On an error, what was not written
    /// stays buffered for the next flush.
    pub(super) async fn flush(&self, store: &dyn Store) -> Result<()> {
        let batch: Vec<(String, CheckIn)> = std::mem::take(&mut *self.lock()).into_iter().collect();
        for (i, chunk) in batch.chunks(RECORDS_PER_TXN).enumerate() {
            if let Err(e) = write_chunk(store, chunk).await {
                let mut pending = self.lock();
                for (key, checkin) in &batch[i * RECORDS_PER_TXN..] {
                    // A later check-in of the same instance supersedes this one.
                    pending.entry(key.clone()).or_insert_with(|| checkin.clone());
                }
                return Err(e);
            }
        }
        Ok(())
    }
}

/// Writes `chunk` in one transaction, each check-in merged into the record as it is
/// now; reads again and retries when another writer got in between.
async fn write_chunk(store: &dyn Store, chunk: &[(String, CheckIn)]) -> Result<()> {
    for _ in 0..MAX_ATTEMPTS {
        let mut txn = Txn::new();
        for (key, checkin) in chunk {
            let (record, rev) = match get_json::<Instance>(store, key).await? {
                Some((mut record, rev)) => {
                    checkin.apply(&mut record);
                    (record, rev)
                }
                None => (checkin.record.clone(), 0),
            };
            txn = txn.when(key.as_str(), rev).put(key.as_str(), encode(&record));
        }
        if store.txn(txn).await?.succeeded {
            return Ok(());
        }
    }
    Err(UpdateError::Conflict(
        "instance records keep changing under concurrent writers; check-ins wait for the next flush".into(),
    ))
}

/// Flushes every [`FLUSH_INTERVAL`] (or when woken) until the buffer is dropped.
async fn flusher(checkins: Weak<CheckIns>, store: Arc<dyn Store>, wake: Arc<Notify>) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(FLUSH_INTERVAL) => {}
            () = wake.notified() => {}
        }
        let Some(checkins) = checkins.upgrade() else { return };
        if let Err(e) = checkins.flush(&*store).await {
            tracing::warn!(error = %e, "writing buffered update check-ins failed; retrying at the next flush");
        }
    }
}
