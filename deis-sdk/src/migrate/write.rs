//! Carries out a [`Plan`]: changes packed into transactions within etcd's limits, several
//! in flight; registrations under one lease per remaining TTL.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::StreamExt;

use super::plan::{Change, Plan};
use super::report::{Outcome, Status};
use crate::deis_core::store::{LeaseId, Store, StoreError, Txn};

/// Most operations (and, separately, conditions) in one transaction: etcd's default
/// `--max-txn-ops`.
pub const MAX_TXN_OPS: usize = 128;
/// Most bytes of keys and values in one transaction, under etcd's default 1.5 MiB
/// request limit.
pub const MAX_TXN_BYTES: usize = 1 << 20;
/// Transactions in flight at once: etcd commits concurrent ones with one disk sync.
const IN_FLIGHT: usize = 8;

/// Packs changes into batches that fit one transaction each (a change larger than
/// that goes alone).
fn batches(changes: Vec<Change>) -> Vec<Vec<Change>> {
    let mut out: Vec<Vec<Change>> = vec![];
    let (mut ops, mut compares, mut bytes) = (0, 0, 0);
    for c in changes {
        let size: usize = c.puts.iter().map(|p| p.key.len() + p.value.len()).sum();
        let fits = ops + c.puts.len() <= MAX_TXN_OPS
            && compares + c.compares.len() <= MAX_TXN_OPS
            && bytes + size <= MAX_TXN_BYTES;
        if out.is_empty() || !fits {
            out.push(vec![]);
            (ops, compares, bytes) = (0, 0, 0);
        }
        (ops, compares, bytes) = (ops + c.puts.len(), compares + c.compares.len(), bytes + size);
        out.last_mut().expect("a batch").push(c);
    }
    out
}

fn txn(changes: &[Change], leases: &BTreeMap<u64, LeaseId>) -> Txn {
    let mut txn = Txn::new();
    for c in changes {
        for (key, rev) in &c.compares {
            txn = txn.when(key, *rev);
        }
        for p in &c.puts {
            txn = match p.ttl {
                Some(ttl) => txn.put_leased(&p.key, p.value.clone(), leases[&lease_secs(ttl)]),
                None => txn.put(&p.key, p.value.clone()),
            };
        }
    }
    txn
}

/// Whole seconds of a lease for `ttl` (at least 1).
fn lease_secs(ttl: Duration) -> u64 {
    ttl.as_secs().max(1)
}

fn migrated(changes: &[Change]) -> impl Iterator<Item = Outcome> + '_ {
    changes.iter().flat_map(|c| {
        c.sources.iter().map(|s| Outcome { key: s.clone(), status: Status::Migrated, detail: c.target.clone() })
    })
}

/// Writes one batch; when its conditions fail, each change alone, so that only those
/// whose records changed meanwhile fail.
async fn write_batch(
    store: &dyn Store,
    batch: Vec<Change>,
    leases: &BTreeMap<u64, LeaseId>,
) -> Result<Vec<Outcome>, StoreError> {
    if store.txn(txn(&batch, leases)).await?.succeeded {
        return Ok(migrated(&batch).collect());
    }
    let mut out = vec![];
    for change in batch {
        let one = std::slice::from_ref(&change);
        if store.txn(txn(one, leases)).await?.succeeded {
            out.extend(migrated(one));
        } else {
            out.extend(change.sources.iter().map(|s| Outcome {
                key: s.clone(),
                status: Status::Failed,
                detail: format!("{} changed on the target during the migration; run deis-migrate again", change.target),
            }));
        }
    }
    Ok(out)
}

/// Carries out `plan` (or, with `dry_run`, reports what it would write).
pub async fn execute(store: &dyn Store, plan: Plan, dry_run: bool) -> Result<Vec<Outcome>, StoreError> {
    let mut outcomes = plan.decided;
    if dry_run {
        outcomes.extend(migrated(&plan.changes));
        return Ok(outcomes);
    }
    let mut leases = BTreeMap::new();
    for put in plan.changes.iter().flat_map(|c| &c.puts) {
        if let Some(ttl) = put.ttl
            && !leases.contains_key(&lease_secs(ttl))
        {
            let secs = lease_secs(ttl);
            leases.insert(secs, store.grant_lease(Duration::from_secs(secs)).await?);
        }
    }
    let leases = &leases;
    let mut writes = futures_util::stream::iter(batches(plan.changes))
        .map(|b| write_batch(store, b, leases))
        .buffer_unordered(IN_FLIGHT);
    while let Some(done) = writes.next().await {
        outcomes.extend(done?);
    }
    Ok(outcomes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migrate::plan::Put;

    fn change(puts: usize, bytes: usize) -> Change {
        let put = Put { key: "k".into(), value: vec![0; bytes], ttl: None };
        Change { puts: vec![put; puts], compares: vec![("k".into(), 0); puts], ..Change::default() }
    }

    #[test]
    fn batches_stay_within_etcds_limits() {
        let sizes: Vec<usize> =
            batches(vec![change(100, 1), change(28, 1), change(1, 1)]).iter().map(Vec::len).collect();
        assert_eq!(sizes, [2, 1], "128 ops fill a transaction");
        let sizes: Vec<usize> =
            batches(vec![change(1, 600 << 10), change(1, 600 << 10), change(200, 1)]).iter().map(Vec::len).collect();
        assert_eq!(sizes, [1, 1, 1], "bytes split too; an oversized change goes alone");
    }
}
