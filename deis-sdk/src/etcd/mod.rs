//! [`EtcdStore`]: the [`Store`] on an etcd v3 cluster (feature `etcd`).
//!
//! The `Store` model is etcd v3's, so this is a thin mapping: a key is an etcd key
//! (under an optional namespace [`EtcdConfig::prefix`], which the store adds and strips),
//! a transaction is one etcd `Txn` whose compares are `mod_revision` (or `version == 0`
//! for "absent"), a lease is an etcd lease, and revisions are etcd's own. Locks and
//! leader election ([`deis_core::store::lock`]) run on it unchanged: a key created
//! under a lease by a compare-and-put transaction, waiters watching for its deletion, as
//! in etcd's own `concurrency` package.
//!
//! Watches survive the loss of their connection: a background task
//! re-creates the etcd watch on any reachable member from the next revision not yet
//! delivered, so a reconnect, a member restart or a leader change loses and repeats no
//! event. History the cluster compacted meanwhile is answered with
//! [`StoreError::Compacted`] (list again and re-watch), never with silence.
//!
//! Failures to reach the cluster are [`StoreError::Unavailable`], which the controller
//! API answers with 503.
//!
//! One difference with the embedded store: etcd refuses a transaction that touches a
//! key twice (a put of a key that a delete or prefix delete of the same transaction
//! also covers); that is [`StoreError::Invalid`] here.
//!
//! Values may be as large as [`MAX_VALUE_BYTES`](deis_core::store::MAX_VALUE_BYTES)
//! (4 MiB); etcd's default request limit is 1.5 MiB, so run etcd with
//! `--max-request-bytes 8388608` (the tests do) or keep values smaller.
//!
//! ```no_run
//! # async fn f() -> Result<(), deis_core::StoreError> {
//! use deis_sdk::etcd::{EtcdConfig, EtcdStore};
//! let config = EtcdConfig::new(["http://10.0.0.1:2379", "http://10.0.0.2:2379"]);
//! let store = EtcdStore::connect(config).await?;
//! # Ok(()) }
//! ```

mod config;
mod watch;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deis_core::store::{
    Compare, KeyValue, LeaseId, Listing, Op, Result, Revision, Store, StoreError, Txn, TxnResult, Watch,
    check_key_value,
};
use etcd_client::{
    Client, Compare as EtcdCompare, CompareOp, DeleteOptions, GetOptions, PutOptions, Txn as EtcdTxn, TxnOp,
    TxnOpResponse,
};

pub use config::{EtcdConfig, EtcdTls};

/// The largest gRPC message the client accepts: a 4 MiB value plus its key and framing.
const MAX_MESSAGE_BYTES: usize = 64 << 20;
/// Most compares, and separately most ops, etcd takes in one transaction by default
/// (its `--max-txn-ops`): [`Store::max_txn_ops`] of an [`EtcdStore`].
pub const MAX_TXN_OPS: usize = 128;

/// The [`Store`] on an etcd v3 cluster. Cheap to clone (one shared connection pool).
#[derive(Clone)]
pub struct EtcdStore {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    prefix: String,
    endpoints: Vec<String>,
    /// How long a request that found no member is tried again on the others.
    retry_for: Duration,
}

impl fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.inner.endpoints)
            .field("prefix", &self.inner.prefix)
            .finish_non_exhaustive()
    }
}

impl EtcdStore {
    /// Connects to the cluster. Fails with [`StoreError::Unavailable`] when no endpoint
    /// answers, or [`StoreError::Invalid`] for a bad setting (TLS files, endpoints).
    pub async fn connect(config: EtcdConfig) -> Result<Arc<EtcdStore>> {
        let options = config.connect_options().await?;
        let client = Client::connect(&config.endpoints, Some(options))
            .await
            .map_err(|e| unavailable_or_invalid(&config.endpoints, e, "connecting"))?;
        let store = Arc::new(EtcdStore {
            inner: Arc::new(Inner {
                client,
                prefix: config.prefix,
                endpoints: config.endpoints,
                retry_for: config.connect_timeout,
            }),
        });
        // The connection is lazy: one read proves the cluster answers (and auth works).
        store.status().await?;
        Ok(store)
    }

    /// The store's current revision: proves a quorum answers (the API's health check).
    pub async fn status(&self) -> Result<Revision> {
        let resp = self
            .call(true, || async move {
                self.kv().get(self.full(""), Some(GetOptions::new().with_prefix().with_count_only())).await
            })
            .await
            .map_err(|e| self.error(e, "reading"))?;
        Ok(header_revision(resp.header()))
    }

    /// The same cluster, with keys under `prefix` added to this store's own (tests give
    /// each case a fresh prefix of one server).
    pub fn scoped(&self, prefix: &str) -> Arc<EtcdStore> {
        Arc::new(EtcdStore {
            inner: Arc::new(Inner {
                client: self.inner.client.clone(),
                prefix: format!("{}{prefix}", self.inner.prefix),
                endpoints: self.inner.endpoints.clone(),
                retry_for: self.inner.retry_for,
            }),
        })
    }

    /// The endpoints it was given.
    pub fn endpoints(&self) -> &[String] {
        &self.inner.endpoints
    }

    /// Runs `request`, sending it again (to whichever member answers) while it fails
    /// without having reached one, or, when `idempotent`, while the cluster is
    /// unavailable; for up to the connect timeout. A member that was killed and
    /// restarted is tried again only after its connection is re-established, so a
    /// request can fail on it once while the others answer.
    async fn call<T, F, Fut>(&self, idempotent: bool, mut request: F) -> std::result::Result<T, etcd_client::Error>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let deadline = tokio::time::Instant::now() + self.inner.retry_for;
        let mut pause = Duration::from_millis(10);
        loop {
            match request().await {
                Err(e)
                    if (never_sent(&e) || (idempotent && is_unavailable(&e)))
                        && tokio::time::Instant::now() + pause < deadline =>
                {
                    tracing::debug!(error = %e, "etcd request failed; trying again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(200));
                }
                result => return result,
            }
        }
    }

    fn kv(&self) -> etcd_client::KvClient {
        self.inner.client.kv_client().max_decoding_message_size(MAX_MESSAGE_BYTES)
    }

    fn full(&self, key: &str) -> String {
        format!("{}{key}", self.inner.prefix)
    }

    fn error(&self, e: etcd_client::Error, doing: &str) -> StoreError {
        unavailable_or_invalid(&self.inner.endpoints, e, doing)
    }

    /// Maps an etcd key value back to ours (the namespace stripped).
    fn key_value(&self, kv: &etcd_client::KeyValue) -> Result<KeyValue> {
        convert(&self.inner.prefix, kv)
    }

    /// Which of the leases a failed transaction used no longer exists.
    async fn missing_lease(&self, leases: &[LeaseId]) -> Option<LeaseId> {
        let mut client = self.inner.client.lease_client();
        for &id in leases {
            match client.time_to_live(id as i64, None).await {
                Ok(r) if r.ttl() < 0 => return Some(id),
                Err(e) if is_lease_not_found(&e) => return Some(id),
                _ => {}
            }
        }
        leases.first().copied()
    }
}

/// Converts an etcd key value, stripping `prefix` from its key.
fn convert(prefix: &str, kv: &etcd_client::KeyValue) -> Result<KeyValue> {
    let raw = kv.key();
    let key = raw.strip_prefix(prefix.as_bytes()).unwrap_or(raw);
    let key = String::from_utf8(key.to_vec()).map_err(|e| StoreError::Corrupt {
        key: String::from_utf8_lossy(raw).into_owned(),
        message: format!("key is not UTF-8: {e}"),
    })?;
    Ok(KeyValue {
        key,
        value: kv.value().to_vec(),
        create_revision: kv.create_revision() as u64,
        mod_revision: kv.mod_revision() as u64,
        version: kv.version() as u64,
        lease: (kv.lease() != 0).then_some(kv.lease() as u64),
    })
}

fn header_revision(h: Option<&etcd_client::ResponseHeader>) -> Revision {
    h.map_or(0, |h| h.revision() as u64)
}

fn is_lease_not_found(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(s) => s.message().contains("requested lease not found"),
        // etcd-client's keep-alive stream says so itself for a lease the server dropped.
        etcd_client::Error::LeaseKeepAliveError(m) => m.contains("lease not found"),
        _ => false,
    }
}

/// Whether the request failed before any member got it (so sending it again can't
/// apply it twice).
fn never_sent(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(s) => s.message().contains("connect error"),
        etcd_client::Error::TransportError(_) => true,
        _ => false,
    }
}

/// Whether `e` means "the cluster can't be reached or has no leader now".
fn is_unavailable(e: &etcd_client::Error) -> bool {
    use tonic::Code;
    match e {
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        etcd_client::Error::GRpcStatus(s) => {
            matches!(s.code(), Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Aborted)
                // A connection that broke under the request (a member killed).
                || (s.code() == Code::Unknown && s.message().contains("transport error"))
                || s.message().contains("no leader")
                || s.message().contains("leader changed")
        }
        etcd_client::Error::WatchError(_) | etcd_client::Error::LeaseKeepAliveError(_) => true,
        _ => false,
    }
}

fn unavailable_or_invalid(endpoints: &[String], e: etcd_client::Error, doing: &str) -> StoreError {
    if is_unavailable(&e) {
        StoreError::Unavailable(format!("etcd at {} did not answer {doing}: {e}", endpoints.join(",")))
    } else if let etcd_client::Error::InvalidArgs(m) | etcd_client::Error::EndpointError(m) = &e {
        StoreError::Invalid(format!("etcd: {m}"))
    } else {
        StoreError::backend(e)
    }
}

#[async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        check_key_value(key, None)?;
        let resp = self
            .call(true, || async move { self.kv().get(self.full(key), None).await })
            .await
            .map_err(|e| self.error(e, "a read"))?;
        resp.kvs().first().map(|kv| self.key_value(kv)).transpose()
    }

    async fn list(&self, prefix: &str) -> Result<Listing> {
        check_prefix(prefix)?;
        let full = self.full(prefix);
        let options = if full.is_empty() { GetOptions::new().with_all_keys() } else { GetOptions::new().with_prefix() };
        let resp = self
            .call(true, || {
                let (full, options) = (&full, &options);
                async move { self.kv().get(full.clone(), Some(options.clone())).await }
            })
            .await
            .map_err(|e| self.error(e, "a listing"))?;
        let kvs = resp.kvs().iter().map(|kv| self.key_value(kv)).collect::<Result<Vec<_>>>()?;
        Ok(Listing { kvs, revision: header_revision(resp.header()) })
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResult> {
        let mut compares = Vec::with_capacity(txn.compares.len());
        for Compare::ModRevision(key, rev) in &txn.compares {
            check_key_value(key, None)?;
            compares.push(match rev {
                // "Absent": a key that exists has version >= 1.
                0 => EtcdCompare::version(self.full(key), CompareOp::Equal, 0),
                rev => EtcdCompare::mod_revision(self.full(key), CompareOp::Equal, *rev as i64),
            });
        }
        let mut ops = Vec::with_capacity(txn.ops.len());
        let mut leases = Vec::new();
        for op in &txn.ops {
            ops.push(match op {
                Op::Put { key, value, lease } => {
                    check_key_value(key, Some(value))?;
                    let options = lease.map(|l| {
                        leases.push(l);
                        PutOptions::new().with_lease(l as i64)
                    });
                    TxnOp::put(self.full(key), value.clone(), options)
                }
                Op::Delete(key) => {
                    check_key_value(key, None)?;
                    TxnOp::delete(self.full(key), None)
                }
                Op::DeletePrefix(prefix) => {
                    check_prefix(prefix)?;
                    let full = self.full(prefix);
                    let options = if full.is_empty() {
                        DeleteOptions::new().with_all_keys()
                    } else {
                        DeleteOptions::new().with_prefix()
                    };
                    TxnOp::delete(full, Some(options))
                }
            });
        }
        let txn = EtcdTxn::new().when(compares).and_then(ops);
        let txn = &txn;
        let resp = match self.call(false, || async move { self.kv().txn(txn.clone()).await }).await {
            Ok(resp) => resp,
            Err(e) if is_lease_not_found(&e) => {
                let id = self.missing_lease(&leases).await.unwrap_or_default();
                return Err(StoreError::LeaseNotFound(id));
            }
            Err(etcd_client::Error::GRpcStatus(s)) if s.message().contains("duplicate key") => {
                return Err(StoreError::Invalid(
                    "etcd refuses a transaction that writes one key twice (a put into a range it also deletes); split it".into(),
                ));
            }
            Err(e) => return Err(self.error(e, "a transaction")),
        };
        let deleted = resp
            .op_responses()
            .iter()
            .map(|r| match r {
                TxnOpResponse::Delete(d) => d.deleted() as u64,
                _ => 0,
            })
            .sum();
        Ok(TxnResult { succeeded: resp.succeeded(), revision: header_revision(resp.header()), deleted })
    }

    async fn watch(&self, prefix: &str, start_revision: Revision) -> Result<Watch> {
        check_prefix(prefix)?;
        watch::start(self.clone(), prefix, start_revision).await
    }

    /// etcd's default `--max-txn-ops` (a cluster started with more still gets this many).
    fn max_txn_ops(&self) -> Option<usize> {
        Some(MAX_TXN_OPS)
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId> {
        // etcd counts in whole seconds (and raises short TTLs to its minimum).
        let secs = ttl.as_millis().div_ceil(1000).max(1) as i64;
        // Sent again only when unavailable: a lease granted twice expires unused.
        let resp = self
            .call(true, || async { self.inner.client.lease_client().grant(secs, None).await })
            .await
            .map_err(|e| self.error(e, "a lease grant"))?;
        Ok(resp.id() as u64)
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<()> {
        let mut client = self.inner.client.lease_client();
        let failed = |e: etcd_client::Error| {
            if is_lease_not_found(&e) { StoreError::LeaseNotFound(lease) } else { self.error(e, "a lease keep-alive") }
        };
        let (mut keeper, mut stream) = client.keep_alive(lease as i64).await.map_err(failed)?;
        keeper.keep_alive().await.map_err(failed)?;
        match stream.message().await.map_err(failed)? {
            // etcd answers an expired or unknown lease with TTL 0.
            Some(r) if r.ttl() > 0 => Ok(()),
            Some(_) => Err(StoreError::LeaseNotFound(lease)),
            None => Err(StoreError::Unavailable(format!(
                "etcd at {} closed the keep-alive stream",
                self.inner.endpoints.join(",")
            ))),
        }
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<()> {
        match self.call(true, || async { self.inner.client.lease_client().revoke(lease as i64).await }).await {
            Ok(_) => Ok(()),
            Err(e) if is_lease_not_found(&e) => Ok(()),
            Err(e) => Err(self.error(e, "a lease revocation")),
        }
    }
}

fn check_prefix(prefix: &str) -> Result<()> {
    if prefix.len() > deis_core::store::MAX_KEY_BYTES {
        return Err(StoreError::Invalid(format!(
            "prefixes are at most {} bytes, got {}",
            deis_core::store::MAX_KEY_BYTES,
            prefix.len()
        )));
    }
    Ok(())
}
