//! Conformance suite of the `Store` trait (and of the lock built on it).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::{PROMPT, run_cases};
use crate::store::lock::{self, Lock};
use crate::store::{
    EventKind, KeyValue, MAX_KEY_BYTES, MAX_VALUE_BYTES, Revision, Store, StoreError, Txn, Watch, WatchEvent,
};

/// How long the suite waits for a 1-second lease to expire.
const EXPIRY: Duration = Duration::from_secs(10);
/// The TTL of leases in the suite.
const TTL: Duration = Duration::from_secs(1);

/// Runs every conformance case of [`Store`] against fresh stores from `make` (see the
/// [module docs](super) for the shape).
///
/// An adapter to a shared server can hand out a store scoped to a fresh key prefix.
/// Cases never assume absolute revision numbers, only the relations the trait promises
/// (one new revision per effective write transaction, and so on). Lease cases use
/// 1-second TTLs and wait for expiry by watch with generous bounds, so a server that
/// rounds TTLs up (etcd) still passes; against the embedded store the suite takes a few
/// seconds.
///
/// Panics (failing the calling test) with the case's name and what went wrong.
pub async fn store_suite(make: impl AsyncFn() -> Arc<dyn Store>) {
    run_cases!(
        "store",
        [
            get_put_delete,
            revisions_and_versions,
            txn_failed_compare_changes_nothing,
            txn_applies_all_ops_at_one_revision,
            txn_without_effective_writes_keeps_revision,
            create_if_absent,
            compare_and_swap_conflict,
            delete_prefix,
            list_in_order_with_prefix_isolation,
            watch_from_now,
            watch_replays_from_revision,
            watch_sees_deletes,
            watch_in_revision_order,
            list_then_watch_misses_nothing,
            lease_put_unknown_lease_fails,
            lease_revoke_deletes_keys,
            lease_keep_alive_and_expiry,
            limits,
            concurrent_cas_increments,
        ],
        |case| case(make().await).await
    );
}

/// Runs the conformance cases of [`Lock`] and [`lock::elect`] against fresh stores
/// from `make`.
pub async fn lock_suite(make: impl AsyncFn() -> Arc<dyn Store>) {
    run_cases!(
        "lock",
        [
            lock_mutual_exclusion,
            lock_released_on_drop,
            lock_freed_on_lease_expiry,
            lock_names_are_independent,
            election_fails_over,
            election_can_be_observed,
        ],
        |case| case(make().await).await
    );
}

async fn next_event(w: &mut Watch) -> WatchEvent {
    match tokio::time::timeout(PROMPT, w.next()).await {
        Ok(Some(Ok(e))) => e,
        Ok(Some(Err(e))) => panic!("watch failed: {e}"),
        Ok(None) => panic!("watch ended unexpectedly"),
        Err(_) => panic!("no watch event within {PROMPT:?}"),
    }
}

async fn assert_quiet(w: &mut Watch) {
    if let Ok(e) = tokio::time::timeout(Duration::from_millis(100), w.next()).await {
        panic!("expected no watch event, got {e:?}");
    }
}

fn assert_put(e: &WatchEvent, key: &str, value: &[u8]) {
    assert_eq!((e.kind, e.kv.key.as_str(), e.kv.value.as_slice()), (EventKind::Put, key, value), "event {e:?}");
}

fn assert_delete(e: &WatchEvent, key: &str) {
    assert_eq!((e.kind, e.kv.key.as_str()), (EventKind::Delete, key), "event {e:?}");
    assert!(e.kv.value.is_empty(), "delete events carry no value: {e:?}");
}

async fn current_revision(s: &dyn Store) -> Revision {
    s.list("no-such-prefix/").await.unwrap().revision
}

async fn get_put_delete(s: Arc<dyn Store>) {
    assert_eq!(s.get("a/x").await.unwrap(), None);
    s.put("a/x", b"one".to_vec()).await.unwrap();
    assert_eq!(s.get("a/x").await.unwrap().unwrap().value, b"one");
    s.put("a/x", b"two".to_vec()).await.unwrap();
    assert_eq!(s.get("a/x").await.unwrap().unwrap().value, b"two");
    s.put("a/empty", Vec::new()).await.unwrap();
    assert_eq!(s.get("a/empty").await.unwrap().unwrap().value, b"", "empty values are values");
    assert!(s.delete("a/x").await.unwrap(), "delete of an existing key reports it");
    assert_eq!(s.get("a/x").await.unwrap(), None);
    assert!(!s.delete("a/x").await.unwrap(), "delete of a missing key reports nothing deleted");
    let unicode = "a/ünïcødé ✓";
    s.put(unicode, vec![0, 255, 1]).await.unwrap();
    assert_eq!(s.get(unicode).await.unwrap().unwrap().value, vec![0, 255, 1]);
}

async fn revisions_and_versions(s: Arc<dyn Store>) {
    let r0 = current_revision(&*s).await;
    let r1 = s.put("k", b"1".to_vec()).await.unwrap();
    assert_eq!(r1, r0 + 1, "a put bumps the revision by one");
    let kv = s.get("k").await.unwrap().unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version, kv.lease), (r1, r1, 1, None));

    let r2 = s.put("k", b"2".to_vec()).await.unwrap();
    assert_eq!(r2, r1 + 1);
    let kv = s.get("k").await.unwrap().unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (r1, r2, 2));

    let r3 = s.put("other", b"x".to_vec()).await.unwrap();
    assert_eq!(r3, r2 + 1);
    assert_eq!(s.get("k").await.unwrap().unwrap().mod_revision, r2, "other keys' writes leave k alone");

    let del = s.txn(Txn::new().delete("k")).await.unwrap();
    assert_eq!((del.succeeded, del.deleted, del.revision), (true, 1, r3 + 1));

    let r5 = s.put("k", b"again".to_vec()).await.unwrap();
    let kv = s.get("k").await.unwrap().unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (r5, r5, 1), "a re-created key starts over");
    assert_eq!(current_revision(&*s).await, r5);
}

async fn txn_failed_compare_changes_nothing(s: Arc<dyn Store>) {
    let r1 = s.put("t/a", b"a1".to_vec()).await.unwrap();
    s.put("t/b", b"b1".to_vec()).await.unwrap();
    let before = s.list("t/").await.unwrap();

    // One compare holds, one does not: nothing may apply.
    let res = s
        .txn(
            Txn::new().when("t/a", r1).when("t/b", 1_000_000).put("t/a", b"a2".to_vec()).delete("t/b").put("t/c", b"c"),
        )
        .await
        .unwrap();
    assert!(!res.succeeded);
    assert_eq!(res.deleted, 0);
    assert_eq!(res.revision, before.revision, "a failed compare does not bump the revision");
    assert_eq!(s.list("t/").await.unwrap(), before, "a failed compare changes nothing");

    // "Must not exist" on an existing key fails too.
    let res = s.txn(Txn::new().when("t/a", 0).put("t/z", b"z".to_vec())).await.unwrap();
    assert!(!res.succeeded);
    assert_eq!(s.get("t/z").await.unwrap(), None);
}

async fn txn_applies_all_ops_at_one_revision(s: Arc<dyn Store>) {
    let r1 = s.put("m/old", b"x".to_vec()).await.unwrap();
    s.put("m/gone1", b"x".to_vec()).await.unwrap();
    let r2 = s.put("m/gone2", b"x".to_vec()).await.unwrap();
    let mut w = s.watch("m/", r2 + 1).await.unwrap();

    let res = s
        .txn(
            Txn::new()
                .when("m/old", r1)
                .when("m/new", 0)
                .put("m/old", b"y".to_vec())
                .put("m/new", b"n".to_vec())
                .delete("m/gone1")
                .delete("m/never-existed")
                .delete_prefix("m/gone"),
        )
        .await
        .unwrap();
    assert!(res.succeeded);
    assert_eq!(res.revision, r2 + 1, "all ops of a transaction share one new revision");
    assert_eq!(res.deleted, 2);
    let listing = s.list("m/").await.unwrap();
    assert_eq!(listing.revision, r2 + 1);
    let keys: Vec<_> = listing.kvs.iter().map(|kv| (kv.key.as_str(), kv.mod_revision)).collect();
    assert_eq!(keys, [("m/new", r2 + 1), ("m/old", r2 + 1)]);

    let mut seen = Vec::new();
    for _ in 0..4 {
        let e = next_event(&mut w).await;
        assert_eq!(e.kv.mod_revision, r2 + 1, "every event of the transaction has its revision: {e:?}");
        seen.push((e.kind, e.kv.key));
    }
    seen.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(
        seen,
        [
            (EventKind::Delete, "m/gone1".to_string()),
            (EventKind::Delete, "m/gone2".to_string()),
            (EventKind::Put, "m/new".to_string()),
            (EventKind::Put, "m/old".to_string()),
        ]
    );
    assert_quiet(&mut w).await;
}

async fn txn_without_effective_writes_keeps_revision(s: Arc<dyn Store>) {
    let r = s.put("e/a", b"x".to_vec()).await.unwrap();
    let res = s.txn(Txn::new().delete("e/missing").delete_prefix("e/none/")).await.unwrap();
    assert!(res.succeeded);
    assert_eq!((res.revision, res.deleted), (r, 0), "deleting nothing is not a change");
    let res = s.txn(Txn::new().when("e/a", r)).await.unwrap();
    assert!(res.succeeded, "a compare-only transaction reports whether the compares held");
    assert_eq!(res.revision, r);
    assert_eq!(current_revision(&*s).await, r);
}

async fn create_if_absent(s: Arc<dyn Store>) {
    assert!(s.create("c/k", b"first".to_vec()).await.unwrap());
    assert!(!s.create("c/k", b"second".to_vec()).await.unwrap());
    assert_eq!(s.get("c/k").await.unwrap().unwrap().value, b"first");
    s.delete("c/k").await.unwrap();
    assert!(s.create("c/k", b"third".to_vec()).await.unwrap(), "a deleted key can be created again");
    assert_eq!(s.get("c/k").await.unwrap().unwrap().value, b"third");
}

async fn compare_and_swap_conflict(s: Arc<dyn Store>) {
    let r1 = s.put("cas", b"v1".to_vec()).await.unwrap();
    // Two writers read r1; the first wins, the second must fail.
    assert!(s.compare_and_swap("cas", r1, b"writer-a".to_vec()).await.unwrap());
    assert!(!s.compare_and_swap("cas", r1, b"writer-b".to_vec()).await.unwrap());
    let kv = s.get("cas").await.unwrap().unwrap();
    assert_eq!(kv.value, b"writer-a");
    assert!(s.compare_and_swap("cas", kv.mod_revision, b"writer-b".to_vec()).await.unwrap());
    assert!(!s.compare_and_swap("cas", 0, b"absent?".to_vec()).await.unwrap(), "0 means the key must be absent");
    assert!(s.compare_and_swap("cas-new", 0, b"created".to_vec()).await.unwrap());
}

async fn delete_prefix(s: Arc<dyn Store>) {
    for k in ["d/a", "d/a/1", "d/a/2", "d/ab", "d/b"] {
        s.put(k, b"x".to_vec()).await.unwrap();
    }
    let res = s.txn(Txn::new().delete_prefix("d/a/")).await.unwrap();
    assert_eq!(res.deleted, 2);
    let keys: Vec<_> = s.list("d/").await.unwrap().kvs.into_iter().map(|kv| kv.key).collect();
    assert_eq!(keys, ["d/a", "d/ab", "d/b"]);
}

async fn list_in_order_with_prefix_isolation(s: Arc<dyn Store>) {
    for k in ["apps/b", "apps/ab", "apps/a", "apps/a/x", "apps/", "appsx", "app", "b/apps/a"] {
        s.put(k, k.as_bytes().to_vec()).await.unwrap();
    }
    let keys = |l: crate::store::Listing| l.kvs.into_iter().map(|kv| kv.key).collect::<Vec<_>>();
    assert_eq!(keys(s.list("apps/").await.unwrap()), ["apps/", "apps/a", "apps/a/x", "apps/ab", "apps/b"]);
    assert_eq!(keys(s.list("apps/a/").await.unwrap()), ["apps/a/x"], "apps/a/ does not include apps/ab");
    assert_eq!(keys(s.list("apps/a").await.unwrap()), ["apps/a", "apps/a/x", "apps/ab"]);
    assert!(keys(s.list("zzz/").await.unwrap()).is_empty());
    let listing = s.list("apps/").await.unwrap();
    assert!(listing.kvs.iter().all(|kv| kv.value == kv.key.as_bytes()));
    let max = listing.kvs.iter().map(|kv| kv.mod_revision).max().unwrap();
    assert!(listing.revision >= max, "a listing's revision covers its keys");
    assert_eq!(listing.revision, current_revision(&*s).await);
}

async fn watch_from_now(s: Arc<dyn Store>) {
    s.put("w/before", b"old".to_vec()).await.unwrap();
    let mut w = s.watch("w/", 0).await.unwrap();
    assert_quiet(&mut w).await;
    let r = s.put("w/after", b"new".to_vec()).await.unwrap();
    s.put("x/elsewhere", b"no".to_vec()).await.unwrap();
    s.put("w", b"not under w/".to_vec()).await.unwrap();
    let e = next_event(&mut w).await;
    assert_put(&e, "w/after", b"new");
    assert_eq!((e.kv.create_revision, e.kv.mod_revision, e.kv.version), (r, r, 1));
    assert_quiet(&mut w).await;
}

async fn watch_replays_from_revision(s: Arc<dyn Store>) {
    let r1 = s.put("h/a", b"1".to_vec()).await.unwrap();
    let r2 = s.put("h/b", b"2".to_vec()).await.unwrap();
    s.put("other/c", b"3".to_vec()).await.unwrap();
    let r4 = s.put("h/a", b"4".to_vec()).await.unwrap();

    let mut w = s.watch("h/", r1).await.unwrap();
    let got: Vec<_> = [next_event(&mut w).await, next_event(&mut w).await, next_event(&mut w).await]
        .into_iter()
        .map(|e| (e.kv.key, e.kv.value, e.kv.mod_revision))
        .collect();
    assert_eq!(
        got,
        [("h/a".into(), b"1".to_vec(), r1), ("h/b".into(), b"2".to_vec(), r2), ("h/a".into(), b"4".to_vec(), r4)]
    );
    // Replay continues into live events without a gap.
    let r5 = s.put("h/b", b"5".to_vec()).await.unwrap();
    let e = next_event(&mut w).await;
    assert_eq!((e.kv.key.as_str(), e.kv.mod_revision, e.kv.version), ("h/b", r5, 2));

    let mut w = s.watch("h/", r4).await.unwrap();
    assert_eq!(next_event(&mut w).await.kv.mod_revision, r4, "start_revision is inclusive");
    assert_eq!(next_event(&mut w).await.kv.mod_revision, r5);
    assert_quiet(&mut w).await;

    // Watching from the next revision sees only what comes later.
    let mut w = s.watch("h/", r5 + 1).await.unwrap();
    assert_quiet(&mut w).await;
    s.put("h/c", b"6".to_vec()).await.unwrap();
    assert_put(&next_event(&mut w).await, "h/c", b"6");
}

async fn watch_sees_deletes(s: Arc<dyn Store>) {
    let created = s.put("del/a", b"x".to_vec()).await.unwrap();
    s.put("del/a", b"y".to_vec()).await.unwrap();
    s.put("del/b/1", b"x".to_vec()).await.unwrap();
    let mut w = s.watch("del/", 0).await.unwrap();
    let res = s.txn(Txn::new().delete("del/a")).await.unwrap();
    let e = next_event(&mut w).await;
    assert_delete(&e, "del/a");
    assert_eq!(e.kv.mod_revision, res.revision, "a delete event carries the deletion's revision");
    assert_eq!(e.kv.create_revision, created);
    let res = s.txn(Txn::new().delete_prefix("del/b/")).await.unwrap();
    let e = next_event(&mut w).await;
    assert_delete(&e, "del/b/1");
    assert_eq!(e.kv.mod_revision, res.revision);
    assert_quiet(&mut w).await;
}

async fn watch_in_revision_order(s: Arc<dyn Store>) {
    let start = current_revision(&*s).await + 1;
    let mut live = s.watch("o/", 0).await.unwrap();
    // Writers in several tasks; the watch must still see a strictly increasing sequence.
    let mut tasks = Vec::new();
    for t in 0..4 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..25 {
                s.put(&format!("o/{t}/{i}"), format!("{t}-{i}").into_bytes()).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut replay = s.watch("o/", start).await.unwrap();
    for w in [&mut live, &mut replay] {
        let mut last = 0;
        let mut per_task = [0u32; 4];
        for _ in 0..100 {
            let e = next_event(w).await;
            assert!(e.kv.mod_revision > last, "events out of order: {} after {last}", e.kv.mod_revision);
            last = e.kv.mod_revision;
            let (t, i) = e.kv.key["o/".len()..].split_once('/').unwrap();
            let (t, i): (usize, u32) = (t.parse().unwrap(), i.parse().unwrap());
            assert_eq!(i, per_task[t], "each writer's puts arrive in its order");
            per_task[t] += 1;
        }
        assert_quiet(w).await;
    }
}

async fn list_then_watch_misses_nothing(s: Arc<dyn Store>) {
    s.put("lw/a", b"1".to_vec()).await.unwrap();
    let listing = s.list("lw/").await.unwrap();
    // A change between the listing and the watch must not be lost.
    s.put("lw/b", b"2".to_vec()).await.unwrap();
    let mut w = s.watch("lw/", listing.revision + 1).await.unwrap();
    assert_put(&next_event(&mut w).await, "lw/b", b"2");
    assert_quiet(&mut w).await;
}

async fn lease_put_unknown_lease_fails(s: Arc<dyn Store>) {
    let r = s.put("l/plain", b"x".to_vec()).await.unwrap();
    let bogus = 0x7777_7777;
    let err = s.txn(Txn::new().put("l/other", b"y".to_vec()).put_leased("l/k", b"v".to_vec(), bogus)).await;
    assert!(matches!(err, Err(StoreError::LeaseNotFound(id)) if id == bogus), "got {err:?}");
    assert_eq!(s.get("l/other").await.unwrap(), None, "a failed lease check changes nothing");
    assert_eq!(current_revision(&*s).await, r);

    let lease = s.grant_lease(TTL * 30).await.unwrap();
    s.revoke_lease(lease).await.unwrap();
    let err = s.txn(Txn::new().put_leased("l/k", b"v".to_vec(), lease)).await;
    assert!(matches!(err, Err(StoreError::LeaseNotFound(id)) if id == lease), "revoked lease: got {err:?}");
    let err = s.keep_alive(lease).await;
    assert!(matches!(err, Err(StoreError::LeaseNotFound(_))), "keep-alive of a revoked lease: got {err:?}");
    s.revoke_lease(lease).await.expect("revoking an unknown lease is not an error");
}

async fn lease_revoke_deletes_keys(s: Arc<dyn Store>) {
    let lease = s.grant_lease(TTL * 30).await.unwrap();
    let other = s.grant_lease(TTL * 30).await.unwrap();
    assert_ne!(lease, other);
    s.txn(Txn::new().put_leased("rv/a", b"a".to_vec(), lease).put_leased("rv/b", b"b".to_vec(), lease)).await.unwrap();
    s.txn(Txn::new().put_leased("rv/c", b"c".to_vec(), other)).await.unwrap();
    // Re-putting a key without the lease detaches it.
    s.txn(Txn::new().put_leased("rv/d", b"d".to_vec(), lease)).await.unwrap();
    s.put("rv/d", b"d2".to_vec()).await.unwrap();
    assert_eq!(s.get("rv/a").await.unwrap().unwrap().lease, Some(lease));
    assert_eq!(s.get("rv/d").await.unwrap().unwrap().lease, None);

    let before = current_revision(&*s).await;
    let mut w = s.watch("rv/", 0).await.unwrap();
    s.revoke_lease(lease).await.unwrap();
    let (e1, e2) = (next_event(&mut w).await, next_event(&mut w).await);
    let mut keys = [e1.kv.key.clone(), e2.kv.key.clone()];
    keys.sort();
    assert_eq!(keys, ["rv/a", "rv/b"]);
    assert!(e1.kind == EventKind::Delete && e2.kind == EventKind::Delete);
    assert_eq!(e1.kv.mod_revision, e2.kv.mod_revision, "a revocation deletes its keys in one transaction");
    assert_eq!(e1.kv.mod_revision, before + 1);
    assert_quiet(&mut w).await;
    let keys: Vec<_> = s.list("rv/").await.unwrap().kvs.into_iter().map(|kv| kv.key).collect();
    assert_eq!(keys, ["rv/c", "rv/d"]);
}

async fn lease_keep_alive_and_expiry(s: Arc<dyn Store>) {
    let kept = s.grant_lease(TTL).await.unwrap();
    let dropped = s.grant_lease(TTL).await.unwrap();
    s.txn(Txn::new().put_leased("ex/kept", b"k".to_vec(), kept).put_leased("ex/dropped", b"d".to_vec(), dropped))
        .await
        .unwrap();
    let mut w = s.watch("ex/", 0).await.unwrap();
    // Keep one lease alive while the other one expires.
    let keeper = {
        let s = s.clone();
        tokio::spawn(async move {
            loop {
                s.keep_alive(kept).await.expect("keep-alive of a live lease");
                tokio::time::sleep(TTL / 4).await;
            }
        })
    };
    let started = tokio::time::Instant::now();
    let e = tokio::time::timeout(EXPIRY, w.next())
        .await
        .expect("an unrenewed lease expires")
        .expect("watch open")
        .expect("watch event");
    assert_delete(&e, "ex/dropped");
    assert!(started.elapsed() >= TTL / 2, "a lease must not expire long before its TTL");
    let err = s.keep_alive(dropped).await;
    assert!(matches!(err, Err(StoreError::LeaseNotFound(_))), "keep-alive after expiry: got {err:?}");
    let err = s.txn(Txn::new().put_leased("ex/again", b"x".to_vec(), dropped)).await;
    assert!(matches!(err, Err(StoreError::LeaseNotFound(_))), "put with an expired lease: got {err:?}");

    // The renewed lease outlives several TTLs.
    tokio::time::sleep(TTL * 2).await;
    assert_eq!(s.get("ex/kept").await.unwrap().unwrap().lease, Some(kept));
    keeper.abort();
    let e = tokio::time::timeout(EXPIRY, w.next()).await.expect("lease expires once not renewed").unwrap().unwrap();
    assert_delete(&e, "ex/kept");
    assert_eq!(s.get("ex/kept").await.unwrap(), None);
}

async fn limits(s: Arc<dyn Store>) {
    fn invalid<T>(r: Result<T, StoreError>) -> bool {
        matches!(r, Err(StoreError::Invalid(_)))
    }
    let long_key = "k".repeat(MAX_KEY_BYTES + 1);
    assert!(invalid(s.put(&long_key, b"x".to_vec()).await), "oversize key");
    assert!(invalid(s.put("", b"x".to_vec()).await), "empty key");
    assert!(invalid(s.put("big", vec![7; MAX_VALUE_BYTES + 1]).await), "oversize value");
    assert!(invalid(s.txn(Txn::new().put("ok", b"x".to_vec()).put("big", vec![0; MAX_VALUE_BYTES + 1])).await));
    assert_eq!(s.get("ok").await.unwrap(), None, "a transaction with an invalid op changes nothing");
    assert_eq!(s.get("big").await.unwrap(), None);

    let max_key = "k".repeat(MAX_KEY_BYTES);
    s.put(&max_key, b"x".to_vec()).await.expect("a key of exactly the limit");
    assert_eq!(s.get(&max_key).await.unwrap().unwrap().value, b"x");
    s.put("big", vec![7; MAX_VALUE_BYTES]).await.expect("a value of exactly the limit");
    assert_eq!(s.get("big").await.unwrap().unwrap().value.len(), MAX_VALUE_BYTES);
}

async fn concurrent_cas_increments(s: Arc<dyn Store>) {
    const TASKS: usize = 8;
    const EACH: usize = 20;
    let key = "counter";
    s.put(key, b"0".to_vec()).await.unwrap();
    let retries = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let (s, retries) = (s.clone(), retries.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..EACH {
                loop {
                    let kv: KeyValue = s.get(key).await.unwrap().unwrap();
                    let n: usize = std::str::from_utf8(&kv.value).unwrap().parse().unwrap();
                    if s.compare_and_swap(key, kv.mod_revision, (n + 1).to_string().into_bytes()).await.unwrap() {
                        break;
                    }
                    retries.fetch_add(1, Ordering::Relaxed);
                    tokio::task::yield_now().await;
                }
            }
        }));
    }
    tokio::time::timeout(Duration::from_secs(60), async {
        for t in tasks {
            t.await.unwrap();
        }
    })
    .await
    .expect("concurrent increments finish");
    let kv = s.get(key).await.unwrap().unwrap();
    assert_eq!(kv.value, (TASKS * EACH).to_string().into_bytes(), "no increment may be lost");
    assert_eq!(kv.version, (TASKS * EACH + 1) as u64, "exactly one write per successful CAS");
    tracing::debug!(retries = retries.load(Ordering::Relaxed), "CAS retries");
}

async fn lock_mutual_exclusion(s: Arc<dyn Store>) {
    let inside = Arc::new(AtomicUsize::new(0));
    let entered = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..5 {
        let (s, inside, entered) = (s.clone(), inside.clone(), entered.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..3 {
                let guard = Lock::acquire(s.clone(), "mutex", TTL * 10).await.unwrap();
                assert!(guard.is_held());
                assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "two holders at once");
                entered.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
                inside.fetch_sub(1, Ordering::SeqCst);
                guard.release().await.unwrap();
            }
        }));
    }
    tokio::time::timeout(Duration::from_secs(60), async {
        for t in tasks {
            t.await.unwrap();
        }
    })
    .await
    .expect("every task gets the lock in turn");
    assert_eq!(entered.load(Ordering::SeqCst), 15);
    assert!(s.list(lock::LOCKS_PREFIX).await.unwrap().kvs.is_empty(), "released locks leave no keys");
}

async fn lock_released_on_drop(s: Arc<dyn Store>) {
    let guard = Lock::acquire(s.clone(), "dropped", TTL * 10).await.unwrap();
    let waiter = tokio::spawn({
        let s = s.clone();
        async move { Lock::acquire(s, "dropped", TTL * 10).await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiter.is_finished(), "the lock is held");
    assert!(Lock::try_acquire(s.clone(), "dropped", TTL * 10).await.unwrap().is_none());
    drop(guard);
    let second = tokio::time::timeout(PROMPT, waiter).await.expect("dropping the guard frees the lock").unwrap();
    assert!(second.fencing_token() > 0);
    second.release().await.unwrap();
}

async fn lock_freed_on_lease_expiry(s: Arc<dyn Store>) {
    // A holder that died: its lease is never renewed.
    let lease = s.grant_lease(TTL).await.unwrap();
    let key = lock::lock_key("crashed");
    assert!(s.txn(Txn::new().when(&key, 0).put_leased(&key, b"dead holder".to_vec(), lease)).await.unwrap().succeeded);
    let started = tokio::time::Instant::now();
    let guard = tokio::time::timeout(EXPIRY, Lock::acquire(s.clone(), "crashed", TTL * 10))
        .await
        .expect("the lock is freed when the holder's lease expires")
        .unwrap();
    assert!(started.elapsed() >= TTL / 2);
    // The new holder keeps its own lease alive past its TTL.
    let short = Lock::acquire(s.clone(), "short", TTL).await.unwrap();
    tokio::time::sleep(TTL * 2).await;
    assert!(short.is_held(), "the guard keeps its lease alive");
    assert!(s.get(&lock::lock_key("short")).await.unwrap().is_some());
    short.release().await.unwrap();
    guard.release().await.unwrap();
}

async fn lock_names_are_independent(s: Arc<dyn Store>) {
    let a = Lock::acquire(s.clone(), "a", TTL * 10).await.unwrap();
    let ab = tokio::time::timeout(PROMPT, Lock::acquire(s.clone(), "ab", TTL * 10))
        .await
        .expect("lock ab is not lock a")
        .unwrap();
    assert!(Lock::try_acquire(s.clone(), "a", TTL * 10).await.unwrap().is_none());
    ab.release().await.unwrap();
    a.release().await.unwrap();
    assert!(Lock::try_acquire(s.clone(), "a", TTL * 10).await.unwrap().is_some());
}

async fn election_fails_over(s: Arc<dyn Store>) {
    let first = lock::elect(s.clone(), "controller", "node-1", TTL * 10).await.unwrap();
    assert!(first.is_leader());
    assert_eq!(lock::leader(&*s, "controller").await.unwrap().as_deref(), Some("node-1"));
    let second = tokio::spawn({
        let s = s.clone();
        async move { lock::elect(s, "controller", "node-2", TTL * 10).await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!second.is_finished(), "one leader at a time");
    first.resign().await.unwrap();
    let second = tokio::time::timeout(PROMPT, second).await.expect("a candidate takes over").unwrap();
    assert!(second.is_leader());
    assert_eq!(lock::leader(&*s, "controller").await.unwrap().as_deref(), Some("node-2"));
    drop(second);
    let none = tokio::time::timeout(PROMPT, async {
        loop {
            if lock::leader(&*s, "controller").await.unwrap().is_none() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(none.is_ok(), "a dropped leadership is given up");
}

async fn election_can_be_observed(s: Arc<dyn Store>) {
    let mut leader = lock::observe(s.clone(), "observed").await.unwrap();
    assert_eq!(*leader.borrow(), None, "nobody leads yet");
    let changed = async |rx: &mut tokio::sync::watch::Receiver<Option<String>>, want: Option<&str>| {
        tokio::time::timeout(PROMPT, rx.wait_for(|l| l.as_deref() == want))
            .await
            .unwrap_or_else(|_| panic!("observer did not see {want:?}"))
            .unwrap();
    };
    let first = lock::elect(s.clone(), "observed", "node-1", TTL * 10).await.unwrap();
    changed(&mut leader, Some("node-1")).await;
    let second = tokio::spawn({
        let s = s.clone();
        async move { lock::elect(s, "observed", "node-2", TTL * 10).await.unwrap() }
    });
    first.resign().await.unwrap();
    changed(&mut leader, Some("node-2")).await;
    let second = second.await.unwrap();
    // A late observer starts from the current leader.
    let late = lock::observe(s.clone(), "observed").await.unwrap();
    assert_eq!(late.borrow().as_deref(), Some("node-2"));
    second.resign().await.unwrap();
    changed(&mut leader, None).await;
}
