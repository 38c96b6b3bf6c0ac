//! A distributed mutex and leader election on top of any [`Store`].
//!
//! A lock named `n` is the key `locks/n`, created only if absent and attached to a lease
//! that the holder keeps alive in a background task. Waiters watch the key and try
//! again when it is deleted, which happens when the holder releases (or drops) its
//! guard, or when the holder's lease expires because it died. An election is the same
//! thing at `elections/<name>`, with the candidate's id as the value, so anyone can read
//! who leads.
//!
//! Like every lease-based lock, a holder that stalls for longer than the TTL loses the
//! lock without noticing right away: check [`LockGuard::is_held`] (or await
//! [`LockGuard::lost`]) before acting, and pass [`LockGuard::fencing_token`] to
//! anything that can reject stale holders.
//!
//! ```no_run
//! # async fn f(store: std::sync::Arc<dyn deis_core::Store>) -> deis_core::store::Result<()> {
//! use std::time::Duration;
//! use deis_core::store::lock::Lock;
//! let guard = Lock::acquire(store, "migrations", Duration::from_secs(10)).await?;
//! // ... only one process at a time gets here ...
//! guard.release().await?;
//! # Ok(()) }
//! ```

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{EventKind, LeaseId, Result, Revision, Store, StoreError, Txn, check_key_value};

/// Prefix of lock keys.
pub const LOCKS_PREFIX: &str = "locks/";
/// Prefix of election keys.
pub const ELECTIONS_PREFIX: &str = "elections/";
/// Shortest TTL accepted for a lock's lease.
pub const MIN_TTL: Duration = Duration::from_millis(100);

/// Key of the lock named `name`.
pub fn lock_key(name: &str) -> String {
    format!("{LOCKS_PREFIX}{name}")
}

/// Key of the election named `name`.
pub fn election_key(name: &str) -> String {
    format!("{ELECTIONS_PREFIX}{name}")
}

/// Entry points of the distributed mutex.
#[derive(Debug, Clone, Copy)]
pub struct Lock;

impl Lock {
    /// Waits until the lock `name` is free, then takes it. The lock stays held while
    /// the returned guard lives (its lease is renewed every `ttl / 3`) and is freed by
    /// [`LockGuard::release`], by dropping the guard, or `ttl` after the holder stops
    /// renewing (e.g. it crashed). Cancelling the returned future gives up cleanly.
    pub async fn acquire(store: Arc<dyn Store>, name: &str, ttl: Duration) -> Result<LockGuard> {
        let key = lock_key(name);
        let value = name.as_bytes().to_vec();
        Ok(take(store, key, value, ttl, true).await?.expect("waiting acquisition returns a guard"))
    }

    /// Takes the lock `name` if it is free right now; `None` if someone holds it.
    pub async fn try_acquire(store: Arc<dyn Store>, name: &str, ttl: Duration) -> Result<Option<LockGuard>> {
        take(store, lock_key(name), name.as_bytes().to_vec(), ttl, false).await
    }
}

/// A held lock. Dropping it releases the lock in the background (inside a tokio
/// runtime); [`LockGuard::release`] does so and waits.
#[derive(Debug)]
pub struct LockGuard {
    key: String,
    revision: Revision,
    lease: Lease,
}

impl LockGuard {
    /// The lock's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The lease the lock's key is attached to.
    pub fn lease(&self) -> LeaseId {
        self.lease.id
    }

    /// The revision at which this holder took the lock: strictly greater than every
    /// earlier holder's, so a resource can reject writes carrying an older token.
    pub fn fencing_token(&self) -> Revision {
        self.revision
    }

    /// Whether the lease is still known to be alive (false once a renewal found it
    /// expired, or none succeeded for a whole TTL).
    pub fn is_held(&self) -> bool {
        *self.lease.alive.borrow()
    }

    /// Resolves when the lock is lost (see [`LockGuard::is_held`]).
    pub async fn lost(&self) {
        until_lost(&mut self.lease.alive.clone()).await
    }

    /// Releases the lock now (revokes its lease, deleting the key).
    pub async fn release(mut self) -> Result<()> {
        self.lease.revoke().await
    }
}

/// Leadership won by [`elect`]; dropping it (or [`Leadership::resign`]) steps down.
#[derive(Debug)]
pub struct Leadership {
    candidate: String,
    guard: LockGuard,
}

impl Leadership {
    /// Whether this candidate still leads (see [`LockGuard::is_held`]).
    pub fn is_leader(&self) -> bool {
        self.guard.is_held()
    }

    /// Resolves when leadership is lost.
    pub async fn lost(&self) {
        self.guard.lost().await
    }

    /// This candidate's id.
    pub fn candidate(&self) -> &str {
        &self.candidate
    }

    /// The term's fencing token (see [`LockGuard::fencing_token`]).
    pub fn term(&self) -> Revision {
        self.guard.fencing_token()
    }

    /// The lease the leadership key is attached to: keys written under it vanish when
    /// leadership ends (the leader's unit records, its answers).
    pub fn lease(&self) -> LeaseId {
        self.guard.lease()
    }

    /// Steps down now, letting another candidate take over.
    pub async fn resign(self) -> Result<()> {
        self.guard.release().await
    }
}

/// Campaigns in the election `name` as `candidate_id`: waits until no one leads, then
/// leads until the returned [`Leadership`] is dropped, resigned or lost (its lease,
/// renewed every `ttl / 3`, expires).
pub async fn elect(store: Arc<dyn Store>, name: &str, candidate_id: &str, ttl: Duration) -> Result<Leadership> {
    let guard = take(store, election_key(name), candidate_id.as_bytes().to_vec(), ttl, true)
        .await?
        .expect("waiting acquisition returns a guard");
    Ok(Leadership { candidate: candidate_id.to_string(), guard })
}

/// The id of the current leader of election `name`, if any.
pub async fn leader(store: &dyn Store, name: &str) -> Result<Option<String>> {
    let key = election_key(name);
    match store.get(&key).await? {
        None => Ok(None),
        Some(kv) => String::from_utf8(kv.value)
            .map(Some)
            .map_err(|e| StoreError::Corrupt { key, message: format!("leader id is not UTF-8: {e}") }),
    }
}

/// Follows who leads election `name`: the receiver holds the current leader's id
/// (`None` while nobody leads) and changes with every campaign won, resignation or
/// lost lease. A background task lists and watches the election key; it lists again
/// after a watch error (e.g. compaction), and ends when the receiver is dropped.
pub async fn observe(store: Arc<dyn Store>, name: &str) -> Result<watch::Receiver<Option<String>>> {
    let key = election_key(name);
    let (tx, rx) = watch::channel(None);
    let (first, start) = current_leader(&*store, &key).await?;
    tx.send_replace(first);
    tokio::spawn(async move {
        let mut from = start;
        loop {
            let mut w = match store.watch(&key, from).await {
                Ok(w) => w,
                Err(e) => {
                    tracing::debug!(%key, error = %e, "observing an election: watch failed; listing again");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    match current_leader(&*store, &key).await {
                        Ok((leader, next)) => {
                            tx.send_replace(leader);
                            from = next;
                        }
                        Err(_) if tx.is_closed() => return,
                        Err(_) => {}
                    }
                    continue;
                }
            };
            loop {
                let event = tokio::select! {
                    e = w.next() => e,
                    () = tx.closed() => return,
                };
                match event {
                    Some(Ok(e)) if e.kv.key == key => {
                        from = e.kv.mod_revision + 1;
                        let leader = match e.kind {
                            EventKind::Put => Some(String::from_utf8_lossy(&e.kv.value).into_owned()),
                            EventKind::Delete => None,
                        };
                        tx.send_replace(leader);
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => break,
                }
            }
        }
    });
    Ok(rx)
}

/// The leader stored at `key` and the revision to watch from.
async fn current_leader(store: &dyn Store, key: &str) -> Result<(Option<String>, Revision)> {
    let listing = store.list(key).await?;
    let leader = listing.kvs.iter().find(|kv| kv.key == key).map(|kv| String::from_utf8_lossy(&kv.value).into_owned());
    Ok((leader, listing.revision + 1))
}

/// Creates `key` attached to a fresh lease, waiting for it to be deleted if `wait`.
async fn take(
    store: Arc<dyn Store>,
    key: String,
    value: Vec<u8>,
    ttl: Duration,
    wait: bool,
) -> Result<Option<LockGuard>> {
    check_key_value(&key, Some(&value))?;
    if ttl < MIN_TTL {
        return Err(StoreError::Invalid(format!("lock TTLs are at least {MIN_TTL:?}, got {ttl:?}")));
    }
    let lease = Lease::grant(store.clone(), ttl).await?;
    loop {
        if !*lease.alive.borrow() {
            return Err(StoreError::LeaseNotFound(lease.id));
        }
        let res = store.txn(Txn::new().when(&key, 0).put_leased(&key, value.clone(), lease.id)).await?;
        if res.succeeded {
            return Ok(Some(LockGuard { key, revision: res.revision, lease }));
        }
        if !wait {
            return Ok(None);
        }
        // Held: wait for the key's deletion, watching from the listing's revision so a
        // deletion right after the read is not missed.
        let listing = store.list(&key).await?;
        if !listing.kvs.iter().any(|kv| kv.key == key) {
            continue;
        }
        let mut watch = match store.watch(&key, listing.revision + 1).await {
            Ok(w) => w,
            Err(StoreError::Compacted { .. }) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        let mut alive = lease.alive.clone();
        loop {
            tokio::select! {
                event = watch.next() => match event {
                    Some(Ok(e)) if e.kind == EventKind::Delete && e.kv.key == key => break,
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        tracing::debug!(%key, error = %e, "lock watch failed; checking again");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        break;
                    }
                    None => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        break;
                    }
                },
                _ = until_lost(&mut alive) => return Err(StoreError::LeaseNotFound(lease.id)),
            }
        }
    }
}

/// Resolves when the lease is known lost (or its keeper is gone).
async fn until_lost(alive: &mut watch::Receiver<bool>) {
    let _ = alive.wait_for(|a| !*a).await;
}

/// A lease renewed by a background task until dropped (which revokes it).
#[derive(Debug)]
struct Lease {
    store: Arc<dyn Store>,
    id: LeaseId,
    alive: watch::Receiver<bool>,
    keeper: JoinHandle<()>,
    revoked: bool,
}

impl Lease {
    async fn grant(store: Arc<dyn Store>, ttl: Duration) -> Result<Lease> {
        let id = store.grant_lease(ttl).await?;
        let (tx, alive) = watch::channel(true);
        let keeper = tokio::spawn(keep_alive(store.clone(), id, ttl, tx));
        Ok(Lease { store, id, alive, keeper, revoked: false })
    }

    async fn revoke(&mut self) -> Result<()> {
        self.keeper.abort();
        self.revoked = true;
        self.store.revoke_lease(self.id).await
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.keeper.abort();
        if self.revoked {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let (store, id) = (self.store.clone(), self.id);
            rt.spawn(async move {
                if let Err(e) = store.revoke_lease(id).await {
                    tracing::warn!(lease = id, error = %e, "revoking a dropped lock's lease failed; it expires after its TTL");
                }
            });
        }
    }
}

async fn keep_alive(store: Arc<dyn Store>, id: LeaseId, ttl: Duration, alive: watch::Sender<bool>) {
    let period = ttl / 3;
    let mut last_ok = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(period).await;
        match store.keep_alive(id).await {
            Ok(()) => last_ok = tokio::time::Instant::now(),
            Err(StoreError::LeaseNotFound(_)) => {
                alive.send_replace(false);
                return;
            }
            Err(e) => {
                tracing::warn!(lease = id, error = %e, "renewing a lock's lease failed; retrying");
                if last_ok.elapsed() >= ttl {
                    alive.send_replace(false);
                    return;
                }
            }
        }
    }
}
