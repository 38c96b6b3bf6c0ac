//! The configuration records an update check reads (application, group, channel,
//! package), kept in memory so a check does not read them from the store every time.
//!
//! The cache follows the store: it watches the configuration prefixes
//! ([`CONFIG_PREFIXES`]) and forgets a record as soon as the store reports a change of
//! it, whichever server made it, so every replica sees a change as soon as its watch
//! delivers it (no time-to-live). Writes through this
//! [`StoreUpdateChannel`](super::StoreUpdateChannel) also clear the cache at once.
//! Records are cached only while the watches run: when a watch fails (or before it
//! starts) every read goes to the store, and the cache starts empty again once the
//! watches are back. Staleness (the short time a watch takes) never costs exactness: a
//! grant is written on the condition that the group's revision is the one it was
//! decided on, so a stale group makes the grant fail, the cache is cleared and the
//! check decides again on fresh records.

use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde::de::DeserializeOwned;
use tokio::sync::Notify;

use crate::StoreError;
use crate::store::records::decode;
use crate::store::{Revision, Store, Watch};

/// The key prefixes of the records cached (and watched).
pub const CONFIG_PREFIXES: [&str; 4] = ["updates/apps/", "updates/channels/", "updates/groups/", "updates/packages/"];
/// Pause before the watches are opened again after one failed.
const REWATCH_PAUSE: Duration = Duration::from_millis(500);

/// A configuration record as decoded, with its mod revision.
#[derive(Debug)]
pub(super) struct Decoded<T> {
    pub(super) value: T,
    pub(super) revision: Revision,
}

/// A cached record: a `Decoded<T>` of the type it was read as.
type Entry = Arc<dyn Any + Send + Sync>;

/// Cached store reads of configuration keys, decoded once (a check shares them, no copy
/// and no parse per request), invalidated by store watches. A missing key is not
/// cached: an app or channel created on another replica must be found at once by the
/// next request.
#[derive(Default)]
pub(super) struct ConfigCache {
    entries: Mutex<HashMap<String, Entry>>,
    /// Bumped by every invalidation, so a read that raced with a change is not cached.
    generation: AtomicU64,
    /// The watches run: what is read may be cached.
    live: AtomicBool,
    watcher_started: AtomicBool,
    /// Tells the watcher the cache is gone.
    closed: Arc<Notify>,
}

impl std::fmt::Debug for ConfigCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigCache")
            .field("entries", &self.lock().len())
            .field("live", &self.live.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Drop for ConfigCache {
    fn drop(&mut self) {
        self.closed.notify_one();
    }
}

impl ConfigCache {
    /// The record at `key` decoded as `T`, from the cache, else from `store` (and cached
    /// while the watches run).
    pub(super) async fn get<T: DeserializeOwned + Send + Sync + 'static>(
        self: &Arc<Self>,
        store: &Arc<dyn Store>,
        key: &str,
    ) -> Result<Option<Arc<Decoded<T>>>, StoreError> {
        let entry = self.lock().get(key).cloned();
        if let Some(decoded) = entry.and_then(|e| e.downcast::<Decoded<T>>().ok()) {
            return Ok(Some(decoded));
        }
        self.start_watching(store);
        let generation = self.generation.load(Ordering::Acquire);
        let live = self.live.load(Ordering::Acquire);
        let Some(kv) = store.get(key).await? else { return Ok(None) };
        let decoded = Arc::new(Decoded { value: decode::<T>(&kv)?, revision: kv.mod_revision });
        if live {
            let mut entries = self.lock();
            // Only if no change was reported (nor a watch lost) since the read began.
            if self.generation.load(Ordering::Acquire) == generation {
                entries.insert(key.to_string(), decoded.clone());
            }
        }
        Ok(Some(decoded))
    }

    /// Forgets everything (after a write, or a write that lost a race).
    pub(super) fn invalidate(&self) {
        let mut entries = self.lock();
        self.generation.fetch_add(1, Ordering::AcqRel);
        entries.clear();
    }

    /// Forgets `key` (the store reported a change of it).
    fn forget(&self, key: &str) {
        let mut entries = self.lock();
        self.generation.fetch_add(1, Ordering::AcqRel);
        entries.remove(key);
    }

    /// Whether records are cached now (the watches run).
    #[cfg(test)]
    pub(super) fn is_live(&self) -> bool {
        self.live.load(Ordering::Acquire)
    }

    /// Whether `key` is cached.
    #[cfg(test)]
    pub(super) fn contains(&self, key: &str) -> bool {
        self.lock().contains_key(key)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // The map stays consistent even if a holder panicked: every change is one call.
        self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts the watcher task once, inside a Tokio runtime (outside one, nothing is
    /// ever cached).
    fn start_watching(self: &Arc<Self>, store: &Arc<dyn Store>) {
        if let Ok(runtime) = tokio::runtime::Handle::try_current()
            && !self.watcher_started.swap(true, Ordering::AcqRel)
        {
            runtime.spawn(watch_config(Arc::downgrade(self), store.clone(), self.closed.clone()));
        }
    }
}

/// Opens a watch per [`CONFIG_PREFIXES`] (changes from now on).
async fn open_watches(store: &dyn Store) -> Result<Vec<Watch>, StoreError> {
    let mut watches = Vec::with_capacity(CONFIG_PREFIXES.len());
    for prefix in CONFIG_PREFIXES {
        watches.push(store.watch(prefix, 0).await?);
    }
    Ok(watches)
}

/// The next event of any of `watches`: `None` when one ended, `Some(Err)` when one failed.
async fn next_change(watches: &mut [Watch]) -> Option<Result<String, StoreError>> {
    let [apps, channels, groups, packages] = watches else { return None };
    let event = tokio::select! {
        e = apps.next() => e,
        e = channels.next() => e,
        e = groups.next() => e,
        e = packages.next() => e,
    };
    event.map(|e| e.map(|e| e.kv.key))
}

/// Keeps the cache of `cache` in step with the store until the cache is dropped.
async fn watch_config(cache: Weak<ConfigCache>, store: Arc<dyn Store>, closed: Arc<Notify>) {
    loop {
        let opened = tokio::select! {
            () = closed.notified() => return,
            opened = open_watches(&*store) => opened,
        };
        let mut watches = match opened {
            Ok(watches) => watches,
            Err(e) => {
                tracing::warn!(error = %e, "watching the update configuration failed; reading it from the store meanwhile");
                tokio::select! {
                    () = closed.notified() => return,
                    () = tokio::time::sleep(REWATCH_PAUSE) => continue,
                }
            }
        };
        let Some(live) = cache.upgrade() else { return };
        // Whatever was read before the watches ran is forgotten: from here on every
        // change is seen.
        live.invalidate();
        live.live.store(true, Ordering::Release);
        drop(live);
        let failure = loop {
            let change = tokio::select! {
                () = closed.notified() => return,
                change = next_change(&mut watches) => change,
            };
            let Some(cache) = cache.upgrade() else { return };
            match change {
                Some(Ok(key)) => cache.forget(&key),
                Some(Err(e)) => break e.to_string(),
                None => break "the store closed the watch".to_string(),
            }
        };
        let Some(cache) = cache.upgrade() else { return };
        cache.live.store(false, Ordering::Release);
        cache.invalidate();
        drop(cache);
        tracing::warn!(error = %failure, "the update configuration watch ended; reading from the store until it is back");
        tokio::select! {
            () = closed.notified() => return,
            () = tokio::time::sleep(REWATCH_PAUSE) => {}
        }
    }
}
