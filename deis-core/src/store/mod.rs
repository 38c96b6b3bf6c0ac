//! The `Store` trait: the platform's coordination database.
//!
//! A store holds keys (UTF-8 paths such as `apps/hello`) with byte values. Every change
//! bumps one store-wide **revision**; each key remembers the revision that created it
//! and the one that last modified it, so writers can do compare-and-swap and readers
//! can resume a watch exactly where a listing left off. Keys may be attached to a
//! **lease** with a TTL; when the lease expires or is revoked, its keys are deleted (and
//! watchers see the deletions). The model is etcd v3's, so the etcd adapter is a thin
//! mapping, and the embedded default is [`RedbStore`].
//!
//! To be correct, an implementation must pass [`crate::testing::store_suite`].

pub mod lock;
pub mod records;
#[cfg(feature = "embedded")]
mod redb_store;

use std::fmt::Debug;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;

#[cfg(feature = "embedded")]
pub use redb_store::RedbStore;

/// A store-wide, strictly increasing version number; 0 means "never".
pub type Revision = u64;

/// Identifies a lease.
pub type LeaseId = u64;

/// Largest key accepted, in bytes.
pub const MAX_KEY_BYTES: usize = 4096;
/// Largest value accepted, in bytes.
pub const MAX_VALUE_BYTES: usize = 4 << 20;

/// Errors of a [`Store`].
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The key or value is empty or too large.
    #[error("invalid key or value: {0}")]
    Invalid(String),
    /// The lease does not exist (never granted, expired or revoked).
    #[error("lease {0} not found (expired or revoked)")]
    LeaseNotFound(LeaseId),
    /// A watch asked for history the store no longer keeps; list again and re-watch.
    #[error(
        "revision {requested} is compacted (oldest kept: {oldest}); list again and watch from the listing's revision"
    )]
    Compacted {
        /// The revision asked for.
        requested: Revision,
        /// The oldest revision still available.
        oldest: Revision,
    },
    /// A stored value could not be decoded.
    #[error("corrupt record at {key}: {message}")]
    Corrupt {
        /// Key of the record.
        key: String,
        /// What is wrong with it.
        message: String,
    },
    /// The backend failed (I/O, database, network).
    #[error("store backend: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The store is closed.
    #[error("store is closed")]
    Closed,
    /// The store can't be reached now (a networked store whose servers are down or
    /// have no quorum). A write that failed this way was not made, unless the failure
    /// came after the request was sent (a timeout): read before retrying. Retry once the
    /// store is back; the message says which store and why.
    #[error("the store is unavailable: {0}; retry when it is back")]
    Unavailable(String),
}

impl StoreError {
    /// Wraps any backend error.
    pub fn backend(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Backend(Box::new(e))
    }
}

/// Result of store operations.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A key with its value and revisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// The value (empty in delete events).
    pub value: Vec<u8>,
    /// Revision at which the key was created.
    pub create_revision: Revision,
    /// Revision of the last change (for deletes: the deletion's revision).
    pub mod_revision: Revision,
    /// Number of writes since creation (1 after creation).
    pub version: u64,
    /// The lease the key is attached to.
    pub lease: Option<LeaseId>,
}

/// A listing: the keys under a prefix at one revision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// Keys in ascending key order.
    pub kvs: Vec<KeyValue>,
    /// The store revision the listing reflects; watch from `revision + 1` to see
    /// every later change.
    pub revision: Revision,
}

/// A condition of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    /// The key's mod revision equals this; 0 means the key must not exist.
    ModRevision(String, Revision),
}

/// A write in a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Set `key` to `value`, attached to `lease` if given.
    Put {
        /// Key.
        key: String,
        /// Value.
        value: Vec<u8>,
        /// Lease to attach to.
        lease: Option<LeaseId>,
    },
    /// Remove `key` if present.
    Delete(String),
    /// Remove every key starting with this prefix.
    DeletePrefix(String),
}

/// An atomic transaction: if every compare holds, all ops apply at one revision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    /// Conditions; all must hold.
    pub compares: Vec<Compare>,
    /// Writes, applied in order when the conditions hold.
    pub ops: Vec<Op>,
}

impl Txn {
    /// An empty transaction.
    pub fn new() -> Self {
        Self::default()
    }
    /// Adds a condition: `key`'s mod revision must be `rev` (0 = absent).
    pub fn when(mut self, key: impl Into<String>, rev: Revision) -> Self {
        self.compares.push(Compare::ModRevision(key.into(), rev));
        self
    }
    /// Adds a put.
    pub fn put(mut self, key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.ops.push(Op::Put { key: key.into(), value: value.into(), lease: None });
        self
    }
    /// Adds a put attached to a lease.
    pub fn put_leased(mut self, key: impl Into<String>, value: impl Into<Vec<u8>>, lease: LeaseId) -> Self {
        self.ops.push(Op::Put { key: key.into(), value: value.into(), lease: Some(lease) });
        self
    }
    /// Adds a delete.
    pub fn delete(mut self, key: impl Into<String>) -> Self {
        self.ops.push(Op::Delete(key.into()));
        self
    }
    /// Adds a prefix delete.
    pub fn delete_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.ops.push(Op::DeletePrefix(prefix.into()));
        self
    }
}

/// What a transaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnResult {
    /// Whether the conditions held (and so the ops applied).
    pub succeeded: bool,
    /// The store revision after the transaction.
    pub revision: Revision,
    /// How many keys the ops deleted.
    pub deleted: u64,
}

/// Kind of a watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// The key was created or changed.
    Put,
    /// The key was deleted (explicitly or by lease expiry).
    Delete,
}

/// One change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    /// Put or delete.
    pub kind: EventKind,
    /// The key after the change; for a delete, `value` is empty and `mod_revision` is
    /// the deletion's revision.
    pub kv: KeyValue,
}

/// A stream of changes under a prefix, in revision order. Dropping it cancels the watch.
#[derive(Debug)]
pub struct Watch {
    rx: mpsc::Receiver<Result<WatchEvent>>,
}

impl Watch {
    /// Wraps a channel; implementations send events (or one terminal error) into it.
    pub fn new(rx: mpsc::Receiver<Result<WatchEvent>>) -> Self {
        Self { rx }
    }

    /// The next event; `None` when the store closed the watch.
    pub async fn next(&mut self) -> Option<Result<WatchEvent>> {
        self.rx.recv().await
    }
}

/// The coordination database. See the module docs for the model.
#[async_trait]
pub trait Store: Send + Sync + Debug {
    /// Reads one key.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;

    /// Lists every key starting with `prefix`, in key order, with the revision of the
    /// snapshot. To ensure correctness: the listing is one consistent snapshot.
    async fn list(&self, prefix: &str) -> Result<Listing>;

    /// Runs a transaction atomically. To ensure correctness: either all ops apply at
    /// one new revision (when every compare holds) or none does; a successful
    /// transaction with at least one effective write bumps the revision by exactly one;
    /// putting to a key with a lease that does not exist fails with
    /// [`StoreError::LeaseNotFound`] and changes nothing.
    async fn txn(&self, txn: Txn) -> Result<TxnResult>;

    /// Watches keys starting with `prefix`. `start_revision` 0 means "changes after
    /// now"; otherwise every change with revision >= `start_revision` is delivered
    /// first (or [`StoreError::Compacted`] if the store no longer has it). To ensure
    /// correctness: events arrive in revision order, none is skipped, and a watcher
    /// that falls too far behind gets an error rather than a gap.
    async fn watch(&self, prefix: &str, start_revision: Revision) -> Result<Watch>;

    /// Grants a lease that expires `ttl` after its last keep-alive.
    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId>;

    /// Renews a lease. Fails with [`StoreError::LeaseNotFound`] once it has expired.
    async fn keep_alive(&self, lease: LeaseId) -> Result<()>;

    /// Revokes a lease now, deleting its keys. Revoking an unknown lease is not an error.
    async fn revoke_lease(&self, lease: LeaseId) -> Result<()>;

    /// Most compares, and separately most ops, one transaction may hold (etcd's
    /// `--max-txn-ops`); `None` when the store has no such limit. Writers of many
    /// records pack them into as few transactions as this allows: one commit (one disk
    /// sync) instead of many.
    fn max_txn_ops(&self) -> Option<usize> {
        None
    }

    /// Sets a key unconditionally; returns the new revision.
    async fn put(&self, key: &str, value: Vec<u8>) -> Result<Revision> {
        Ok(self.txn(Txn::new().put(key, value)).await?.revision)
    }

    /// Creates a key only if it does not exist; returns whether it did.
    async fn create(&self, key: &str, value: Vec<u8>) -> Result<bool> {
        Ok(self.txn(Txn::new().when(key, 0).put(key, value)).await?.succeeded)
    }

    /// Sets a key only if its mod revision is still `expected` (0 = absent).
    async fn compare_and_swap(&self, key: &str, expected: Revision, value: Vec<u8>) -> Result<bool> {
        Ok(self.txn(Txn::new().when(key, expected).put(key, value)).await?.succeeded)
    }

    /// Deletes a key; returns whether it existed.
    async fn delete(&self, key: &str) -> Result<bool> {
        Ok(self.txn(Txn::new().delete(key)).await?.deleted > 0)
    }
}

/// Checks a key and value against the limits every store enforces.
pub fn check_key_value(key: &str, value: Option<&[u8]>) -> Result<()> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(StoreError::Invalid(format!("keys are 1 to {MAX_KEY_BYTES} bytes, got {}", key.len())));
    }
    if let Some(v) = value
        && v.len() > MAX_VALUE_BYTES
    {
        return Err(StoreError::Invalid(format!("values are at most {MAX_VALUE_BYTES} bytes, got {}", v.len())));
    }
    Ok(())
}
