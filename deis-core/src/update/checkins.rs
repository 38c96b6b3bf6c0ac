//! Check-ins buffered in memory: a check or event that changes neither a grant nor a
//! failed version and is not an error only moves an instance's last check, version,
//! group, status and event list, none of which drives the rollout. It is kept here and
//! written in batches ([`FLUSH_INTERVAL`], or sooner once [`FLUSH_RECORDS`] wait), a
//! batch in as few transactions as the store allows ([`Store::max_txn_ops`]: one on
//! the embedded store), instead of in one synced transaction per request.
//!
//! A buffered record remembers the store revision it was built on: a flush writes it
//! as it is on that condition, and when another writer got in between, merges the
//! check-in (its fields, and its events appended) into a fresh read instead, so events
//! and grants written meanwhile (by this server or another) are never overwritten and
//! no event is written twice. A write of the record that this server makes at once (a
//! grant, an error event) takes the buffered check-in along. Reads of this server
//! (checks, the instance list) see the buffered check-ins.
//!
//! A record a flush wrote as it was built is kept a while ([`KEEP_WRITTEN_FOR`], at most
//! [`KEEP_WRITTEN`] of them) with the revision of that write, so the next check of the
//! same instance builds on it without reading the store, exactly as on a buffered
//! check-in: another server's write in between makes the flush's condition fail and the
//! check-in is merged into a fresh read, and an offer is only ever decided on a fresh
//! read.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::{Instance, InstanceEvent, Result, UpdateError};
use crate::store::records::{encode, get_json};
use crate::store::{Revision, Store, Txn};

/// Longest a check-in waits in memory before it is written.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// Check-ins waiting that trigger a write before [`FLUSH_INTERVAL`].
pub const FLUSH_RECORDS: usize = 4096;
/// Most written records kept for the next checks of their instances.
pub const KEEP_WRITTEN: usize = 32_768;
/// Longest a written record is kept for the next check of its instance.
pub const KEEP_WRITTEN_FOR: Duration = Duration::from_secs(60);
/// Times a batch is read and tried again after another writer got in between.
const MAX_ATTEMPTS: usize = 32;

/// One buffered check-in: the instance's record as this server left it.
#[derive(Debug, Clone)]
pub(super) struct CheckIn {
    /// Tells this check-in from a later one of the same instance.
    seq: u64,
    /// Shared: reading a check-in copies no record.
    record: Arc<Instance>,
    /// The store revision of the record `record` was built on (0: none was stored).
    base: Revision,
    /// The base may be out of date (a write of this server changed the record since):
    /// read the store before deciding on `record`.
    stale: bool,
    /// A flush is writing it (or the check-in it was built on): a read of the store
    /// may already hold it until the flush is over.
    in_flight: bool,
    /// Events received since the last write, oldest first, each with its number.
    events: Vec<(u64, InstanceEvent)>,
}

impl CheckIn {
    /// Applies the check-in to `record` as read from the store: its last check, group
    /// and version, its status unless an event received since says more, and its
    /// events.
    pub(super) fn apply(&self, record: &mut Instance) {
        let at = self.record.last_check;
        // A later check-in (of another server) may be written already.
        if record.last_check <= at {
            record.group.clone_from(&self.record.group);
            record.version.clone_from(&self.record.version);
            record.last_check = at;
        }
        // Our events come after those stored (even within the same second); a check-in
        // alone says less than an event of the same second.
        let says_more = match self.events.last() {
            Some((_, ours)) => record.last_event().is_none_or(|e| e.at <= ours.at.max(at)),
            None => record.last_event().is_none_or(|e| e.at < at),
        };
        if record.last_check <= self.events.last().map_or(at, |(_, e)| e.at.max(at)) && says_more {
            record.status = self.record.status;
        }
        for (_, event) in &self.events {
            record.push_event(event.clone());
        }
        // It says it runs the version it was offered: that offer is done.
        if record.last_check <= at && record.grant.as_ref().is_some_and(|g| g.version == self.record.version) {
            record.grant = None;
        }
    }

    /// The record as this server knows it given the stored record `stored` (and its
    /// revision); `None` while a flush may have written this check-in into `stored`
    /// already (wait for the flush, then read again). `quiet`: no flush runs.
    pub(super) fn merged(&self, stored: Option<(Instance, Revision)>, quiet: bool) -> Option<Instance> {
        match stored {
            Some((record, rev)) if rev != self.base || self.stale => {
                if self.in_flight && !quiet {
                    return None;
                }
                let mut record = record;
                self.apply(&mut record);
                Some(record)
            }
            _ => Some(Instance::clone(&self.record)),
        }
    }

    /// The record as this server knows it.
    pub(super) fn record(&self) -> &Instance {
        &self.record
    }

    /// The store revision the record was built on, when it is known to be current as
    /// far as this server's writes go (`None`: read the store).
    pub(super) fn base(&self) -> Option<Revision> {
        (!self.stale).then_some(self.base)
    }
}

/// What [`CheckIns::buffer`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Buffered {
    /// Buffered: the next flush writes it.
    Yes,
    /// Another check-in of the instance was buffered since this one was read: read
    /// again and decide again.
    Raced,
}

/// The check-ins waiting, and records written lately.
#[derive(Debug, Default)]
struct Buffers {
    /// Check-ins to write, by key.
    pending: HashMap<String, CheckIn>,
    /// Records a flush wrote as built, by key: check-ins without events whose base is
    /// the revision of that write, and when they were written.
    written: HashMap<String, (CheckIn, Instant)>,
}

impl Buffers {
    /// What the next check-in of `key` builds on: the one waiting, else the record
    /// written lately.
    fn latest(&self, key: &str) -> Option<&CheckIn> {
        self.pending.get(key).or_else(|| self.written.get(key).map(|(c, _)| c))
    }

    /// Forgets written records past [`KEEP_WRITTEN_FOR`], and the oldest past
    /// [`KEEP_WRITTEN`].
    fn expire_written(&mut self) {
        let now = Instant::now();
        self.written.retain(|_, (_, at)| now.duration_since(*at) < KEEP_WRITTEN_FOR);
        let over = self.written.len().saturating_sub(KEEP_WRITTEN);
        if over > 0 {
            let mut ages: Vec<Instant> = self.written.values().map(|(_, at)| *at).collect();
            let (_, cut, _) = ages.select_nth_unstable(over - 1);
            let cut = *cut;
            let mut dropped = 0;
            self.written.retain(|_, (_, at)| {
                let keep = *at > cut || dropped == over;
                dropped += usize::from(!keep);
                keep
            });
        }
    }
}

/// The buffer, shared by the clones of a channel and its flusher task.
#[derive(Debug, Default)]
pub(super) struct CheckIns {
    buffers: Mutex<Buffers>,
    next_seq: AtomicU64,
    flusher_started: AtomicBool,
    /// One flush at a time (the flusher's and a shutdown's), so none writes an event twice.
    flushing: tokio::sync::Mutex<()>,
    /// Wakes the flusher early when [`FLUSH_RECORDS`] wait.
    wake: Arc<Notify>,
}

impl CheckIns {
    fn lock(&self) -> MutexGuard<'_, Buffers> {
        // Every change to the maps is one call: they are consistent even after a panic.
        self.buffers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The check-in waiting for `key`, else the record written lately (a check-in
    /// without events), if any.
    pub(super) fn get(&self, key: &str) -> Option<CheckIn> {
        self.lock().latest(key).cloned()
    }

    /// For a read of `key` from the store: the check-in waiting, if any; the record
    /// written lately is forgotten (the store's is as new or newer).
    pub(super) fn get_for_read(&self, key: &str) -> Option<CheckIn> {
        let mut buffers = self.lock();
        buffers.written.remove(key);
        buffers.pending.get(key).cloned()
    }

    /// The check-ins waiting whose keys start with `prefix`.
    pub(super) fn under(&self, prefix: &str) -> Vec<(String, CheckIn)> {
        let buffers = self.lock();
        buffers.pending.iter().filter(|(k, _)| k.starts_with(prefix)).map(|(k, c)| (k.clone(), c.clone())).collect()
    }

    /// After a write of `written` (the check-in a record written at `key` took along):
    /// forgets it (keeping the record when the write stored it as built), or, when a
    /// later check-in (built on it) came meanwhile, the events the write carried.
    /// `verbatim`: the revision of the write when it stored exactly `written`'s record
    /// (so the later check-in's base moves to it); otherwise the later one must read
    /// the store again.
    fn written(buffers: &mut Buffers, key: &str, written: &CheckIn, verbatim: Option<Revision>) {
        let Some(now) = buffers.pending.get_mut(key) else { return };
        if now.seq == written.seq {
            let written = buffers.pending.remove(key).expect("it is there");
            if let Some(base) = verbatim.filter(|_| !written.stale) {
                let kept = CheckIn { base, stale: false, in_flight: false, events: Vec::new(), ..written };
                buffers.written.insert(key.to_string(), (kept, Instant::now()));
            }
            return;
        }
        let carried = written.events.last().map_or(0, |(n, _)| *n);
        now.events.retain(|(n, _)| *n > carried);
        now.in_flight = false;
        match verbatim {
            Some(rev) if now.base == written.base && !now.stale && !written.stale => now.base = rev,
            _ => now.stale = true,
        }
    }

    /// Whether check-ins can be buffered here (inside a Tokio runtime, where the
    /// flusher runs); otherwise records are written at once.
    pub(super) fn can_buffer() -> bool {
        tokio::runtime::Handle::try_current().is_ok()
    }

    /// Waits until no flush is writing.
    pub(super) async fn quiet(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.flushing.lock().await
    }

    /// After a write made at once took the check-in `seen` along: see [`Self::written`].
    pub(super) fn settled(&self, key: &str, seen: Option<&CheckIn>) {
        let mut buffers = self.lock();
        buffers.written.remove(key);
        if let Some(seen) = seen {
            Self::written(&mut buffers, key, seen, None);
        }
    }

    /// Buffers `record` at `key`, built on the store revision `base` and the check-in
    /// `seen` (the one waiting when the record was read), with `event` received now.
    /// Only where [`Self::can_buffer`].
    pub(super) fn buffer(
        self: &Arc<Self>,
        store: &Arc<dyn Store>,
        key: &str,
        record: Instance,
        base: Revision,
        seen: Option<&CheckIn>,
        event: Option<InstanceEvent>,
    ) -> Buffered {
        if let Ok(runtime) = tokio::runtime::Handle::try_current()
            && !self.flusher_started.swap(true, Ordering::AcqRel)
        {
            runtime.spawn(flusher(Arc::downgrade(self), store.clone(), self.wake.clone()));
        }
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let waiting = {
            let mut buffers = self.lock();
            let now = buffers.latest(key);
            // (A written record keeps the seq of its check-in, with the write's base.)
            if now.map(|c| (c.seq, c.base)) != seen.map(|c| (c.seq, c.base)) {
                return Buffered::Raced;
            }
            let mut events = now.map(|c| c.events.clone()).unwrap_or_default();
            events.extend(event.map(|e| (seq, e)));
            let in_flight = now.is_some_and(|c| c.in_flight);
            let record = Arc::new(record);
            buffers.written.remove(key);
            buffers.pending.insert(key.to_string(), CheckIn { seq, record, base, stale: false, in_flight, events });
            buffers.pending.len()
        };
        if waiting >= FLUSH_RECORDS {
            self.wake.notify_one();
        }
        Buffered::Yes
    }

    /// Writes every buffered check-in to `store`. On an error, what was not written
    /// stays buffered for the next flush.
    pub(super) async fn flush(&self, store: &dyn Store) -> Result<()> {
        let _one = self.flushing.lock().await;
        let started = std::time::Instant::now();
        // Check-ins stay visible (and in the map) until written; those that arrive
        // meanwhile build on them.
        let batch: Vec<(String, CheckIn)> = {
            let mut buffers = self.lock();
            buffers.expire_written();
            buffers
                .pending
                .iter_mut()
                .map(|(k, c)| {
                    c.in_flight = true;
                    (k.clone(), c.clone())
                })
                .collect()
        };
        // A record is a compare and a put.
        let per_txn = store.max_txn_ops().unwrap_or(usize::MAX).max(1);
        for chunk in batch.chunks(per_txn) {
            match write_chunk(store, chunk).await {
                Ok((revision, verbatim)) => {
                    let mut buffers = self.lock();
                    for ((key, checkin), verbatim) in chunk.iter().zip(verbatim) {
                        Self::written(&mut buffers, key, checkin, verbatim.then_some(revision));
                    }
                }
                Err(e) => {
                    // Not written: they wait for the next flush.
                    self.lock().pending.values_mut().for_each(|c| c.in_flight = false);
                    return Err(e);
                }
            }
        }
        if !batch.is_empty() {
            tracing::debug!(records = batch.len(), took = ?started.elapsed(), "update check-ins written");
        }
        Ok(())
    }
}

/// Writes `chunk` in one transaction: each record as built on its base revision (no
/// read), except those whose base is out of date, which are merged into the record as
/// it is now; when another writer got in between, every check-in is merged into a
/// fresh read, and tried again while writers keep getting in between. The revision of
/// the write, and for each check-in whether its record was written as built.
async fn write_chunk(store: &dyn Store, chunk: &[(String, CheckIn)]) -> Result<(Revision, Vec<bool>)> {
    for attempt in 0..MAX_ATTEMPTS {
        let mut txn = Txn::new();
        let mut verbatim = Vec::with_capacity(chunk.len());
        for (key, checkin) in chunk {
            let (record, rev) = match checkin.base() {
                Some(base) if attempt == 0 => (encode(&*checkin.record), base),
                _ => match get_json::<Instance>(store, key).await? {
                    Some((mut record, rev)) => {
                        checkin.apply(&mut record);
                        (encode(&record), rev)
                    }
                    None => (encode(&*checkin.record), 0),
                },
            };
            verbatim.push(attempt == 0 && checkin.base().is_some());
            txn = txn.when(key.as_str(), rev).put(key.as_str(), record);
        }
        let result = store.txn(txn).await?;
        if result.succeeded {
            return Ok((result.revision, verbatim));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Timestamp;
    use crate::update::InstanceStatus;

    fn kept(seq: u64) -> CheckIn {
        let record = Instance {
            id: format!("m{seq}"),
            group: "stable".into(),
            version: "1.0.0".into(),
            status: InstanceStatus::Idle,
            last_check: Timestamp::from_unix_seconds(0),
            grant: None,
            failed_version: None,
            events: Vec::new(),
        };
        CheckIn { seq, record: Arc::new(record), base: 1, stale: false, in_flight: false, events: Vec::new() }
    }

    #[test]
    fn written_records_expire_by_age_and_the_oldest_go_past_the_cap() {
        let now = Instant::now();
        let mut b = Buffers::default();
        let old = now.checked_sub(KEEP_WRITTEN_FOR + Duration::from_secs(1)).expect("the clock is past that");
        b.written.insert("old".into(), (kept(0), old));
        for n in 0..KEEP_WRITTEN as u64 + 10 {
            // The first ten are the oldest.
            let at = now.checked_sub(Duration::from_millis(100_000 / (n + 1))).expect("the clock is past that");
            b.written.insert(format!("k{n}"), (kept(n + 1), at));
        }
        b.expire_written();
        assert_eq!(b.written.len(), KEEP_WRITTEN);
        assert!(!b.written.contains_key("old"), "past its time");
        assert!((0..10).all(|n| !b.written.contains_key(&format!("k{n}"))), "the oldest go first");
        assert!(b.written.contains_key("k10") && b.written.contains_key(&format!("k{}", KEEP_WRITTEN + 9)));
        assert_eq!(b.latest("k10").map(|c| c.seq), Some(11));
    }
}
