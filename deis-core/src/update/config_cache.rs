//! The configuration records an update check reads (application, group, channel,
//! package), kept in memory for a short while so a check does not read them from the
//! store every time.
//!
//! Writes through this [`StoreUpdateChannel`](super::StoreUpdateChannel) clear the
//! cache at once; a change made by another server is seen within [`CONFIG_TTL`].
//! Staleness never costs exactness: a grant is written on the condition that the
//! group's revision is the one it was decided on, so a stale group makes the grant
//! fail, the cache is cleared and the check decides again on fresh records.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::StoreError;
use crate::store::{KeyValue, Store};

/// How long a cached record is used before it is read again (what a change on another
/// server can take to show).
pub const CONFIG_TTL: Duration = Duration::from_secs(1);

/// Cached store reads of configuration keys. A missing key is not cached: an app or
/// channel created on another replica must be found at once by the next request.
#[derive(Debug, Default)]
pub(super) struct ConfigCache {
    entries: Mutex<HashMap<String, (Instant, Option<KeyValue>)>>,
    /// Bumped by every invalidation, so a read that raced with a write is not cached.
    generation: AtomicU64,
}

impl ConfigCache {
    /// `key`, from the cache while fresh, else from `store`.
    pub(super) async fn get(&self, store: &dyn Store, key: &str) -> Result<Option<KeyValue>, StoreError> {
        if let Some((at, kv)) = self.lock().get(key)
            && at.elapsed() < CONFIG_TTL
        {
            return Ok(kv.clone());
        }
        let generation = self.generation.load(Ordering::Acquire);
        let kv = store.get(key).await?;
        let mut entries = self.lock();
        if kv.is_some() && self.generation.load(Ordering::Acquire) == generation {
            entries.insert(key.to_string(), (Instant::now(), kv.clone()));
        }
        Ok(kv)
    }

    /// Forgets everything (after a write, or a write that lost a race).
    pub(super) fn invalidate(&self) {
        let mut entries = self.lock();
        self.generation.fetch_add(1, Ordering::AcqRel);
        entries.clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, Option<KeyValue>)>> {
        // The map stays consistent even if a holder panicked: every change is one call.
        self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
