//! Buffered check-ins and events, the cached configuration, several servers on one store.

use super::*;
use crate::store::RedbStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_the_update_channel_suite_on_redb() {
    crate::testing::update_channel_suite(|| async {
        Arc::new(StoreUpdateChannel::new(RedbStore::in_memory())) as Arc<dyn UpdateChannel>
    })
    .await;
}

const APP: &str = "e96281a6-d1af-4bde-9a0a-97b76e56dc57";
const NOON: u64 = 1_700_000_000 / 86_400 * 86_400 + 12 * 3600;

fn who(instance: &str, version: &str) -> InstanceRef {
    InstanceRef { app: APP.into(), group: String::new(), instance: instance.into(), version: version.into() }
}

/// Two servers on one store, the app published at 2.0.0 with `max` updates per period.
async fn two_servers(max: u32) -> (Arc<dyn Store>, StoreUpdateChannel, StoreUpdateChannel) {
    let store: Arc<dyn Store> = RedbStore::in_memory();
    let (a, b) = (StoreUpdateChannel::new(store.clone()), StoreUpdateChannel::new(store.clone()));
    a.create_app(APP, "deisd").await.unwrap();
    a.publish(APP, "stable", crate::testing::sample_package("2.0.0")).await.unwrap();
    let policy = RolloutPolicy { max_updates_per_period: max, ..RolloutPolicy::default() };
    a.put_group(APP, GroupSpec { name: "stable".into(), channel: "stable".into(), policy }).await.unwrap();
    (store, a, b)
}

#[tokio::test]
async fn buffered_check_ins_are_seen_at_once_here_and_elsewhere_after_a_flush() {
    let (store, a, b) = two_servers(5).await;
    assert_eq!(a.check(&who("m1", "2.0.0"), true, NOON).await.unwrap(), CheckOutcome::NoUpdate(NoUpdate::UpToDate));
    let here = a.instances(APP, None).await.unwrap();
    assert_eq!((here[0].id.as_str(), here[0].status), ("m1", InstanceStatus::Complete));
    assert!(store.get(&instance_key(APP, "m1")).await.unwrap().is_none(), "a check-in waits in memory");
    assert!(b.instances(APP, None).await.unwrap().is_empty());
    a.flush().await.unwrap();
    let elsewhere = b.instances(APP, None).await.unwrap();
    assert_eq!(elsewhere, here);
    // A later check-in moves the last check on.
    a.check(&who("m1", "2.0.0"), false, NOON + 30).await.unwrap();
    a.flush().await.unwrap();
    assert_eq!(b.instances(APP, None).await.unwrap()[0].last_check.unix_seconds(), NOON + 30);
}

#[tokio::test]
async fn a_flush_never_overwrites_an_event_recorded_meanwhile() {
    let (_store, a, b) = two_servers(5).await;
    a.check(&who("m1", "2.0.0"), true, NOON).await.unwrap();
    a.flush().await.unwrap();
    // `a` buffers a check-in; `b` records an error event of the same instance after it.
    a.check(&who("m1", "2.0.0"), true, NOON + 10).await.unwrap();
    let failed = InstanceEvent {
        event_type: super::super::event_type::UPDATE_COMPLETE,
        result: super::super::event_result::ERROR,
        error_code: Some(7),
        previous_version: None,
        at: Timestamp::from_unix_seconds(NOON + 20),
        repeats: 0,
    };
    b.record_event(&who("m1", "2.0.0"), failed.clone()).await.unwrap();
    a.flush().await.unwrap();
    let i = &b.instances(APP, None).await.unwrap()[0];
    assert_eq!((i.status, i.events.as_slice()), (InstanceStatus::Error, std::slice::from_ref(&failed)));
    assert_eq!(i.last_check.unix_seconds(), NOON + 10);
}

#[tokio::test]
async fn grants_stay_exact_across_servers_with_cached_groups() {
    let (_store, a, b) = two_servers(1).await;
    // `b` caches the group with its window empty, then `a` uses the one grant.
    assert_eq!(b.check(&who("m0", "2.0.0"), true, NOON).await.unwrap(), CheckOutcome::NoUpdate(NoUpdate::UpToDate));
    assert!(matches!(a.check(&who("m1", "1.0.0"), true, NOON).await.unwrap(), CheckOutcome::Update(_)));
    assert_eq!(b.check(&who("m2", "1.0.0"), true, NOON).await.unwrap(), CheckOutcome::NoUpdate(NoUpdate::PeriodLimit));
    // A pause through this server shows at once.
    b.set_paused(APP, "stable", true).await.unwrap();
    assert_eq!(b.check(&who("m1", "1.0.0"), true, NOON).await.unwrap(), CheckOutcome::NoUpdate(NoUpdate::Paused));
}

fn event(event_type: u32, result: u32, at: u64) -> InstanceEvent {
    InstanceEvent {
        event_type,
        result,
        error_code: (result == super::super::event_result::ERROR).then_some(7),
        previous_version: None,
        at: Timestamp::from_unix_seconds(at),
        repeats: 0,
    }
}

/// The store's revision now.
async fn revision(store: &Arc<dyn Store>) -> u64 {
    store.list("updates/").await.unwrap().revision
}

/// Waits (on the condition, up to 10 s) until `server`'s configuration cache runs on
/// its watches.
async fn cache_live(server: &StoreUpdateChannel) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !server.config.is_live() {
        assert!(tokio::time::Instant::now() < deadline, "the configuration watch never started");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn events_that_drive_no_rollout_wait_in_memory_and_a_failure_is_written_at_once() {
    use super::super::event_result::{ERROR, SUCCESS};
    use super::super::event_type::{DOWNLOAD_FINISHED, DOWNLOAD_STARTED};
    let (store, a, b) = two_servers(5).await;
    let before = revision(&store).await;
    a.record_event(&who("m1", "1.0.0"), event(DOWNLOAD_STARTED, SUCCESS, NOON)).await.unwrap();
    a.check(&who("m1", "1.0.0"), false, NOON + 1).await.unwrap();
    a.record_event(&who("m1", "1.0.0"), event(DOWNLOAD_FINISHED, SUCCESS, NOON + 2)).await.unwrap();
    assert_eq!(revision(&store).await, before, "nothing is written yet");
    let here = &a.instances(APP, None).await.unwrap()[0];
    assert_eq!((here.status, here.events.len()), (InstanceStatus::Downloaded, 2));
    assert!(b.instances(APP, None).await.unwrap().is_empty());
    // A failure takes the buffered events along, in order, each once.
    a.record_event(&who("m1", "1.0.0"), event(DOWNLOAD_FINISHED, ERROR, NOON + 3)).await.unwrap();
    // (A repeat would be folded: the count shows it.)
    let types = |i: &Instance| i.events.iter().map(|e| (e.event_type, e.result, e.repeats)).collect::<Vec<_>>();
    let expected = vec![(DOWNLOAD_STARTED, SUCCESS, 0), (DOWNLOAD_FINISHED, SUCCESS, 0), (DOWNLOAD_FINISHED, ERROR, 0)];
    let elsewhere = &b.instances(APP, None).await.unwrap()[0];
    assert_eq!((elsewhere.status, types(elsewhere)), (InstanceStatus::Error, expected.clone()));
    a.flush().await.unwrap();
    assert_eq!(types(&b.instances(APP, None).await.unwrap()[0]), expected, "no event written twice");
    assert_eq!(a.instances(APP, None).await.unwrap(), b.instances(APP, None).await.unwrap());
}

#[tokio::test]
async fn a_flush_is_one_transaction_on_the_embedded_store() {
    let (store, a, b) = two_servers(5).await;
    for m in 0..300 {
        a.check(&who(&format!("m{m}"), "2.0.0"), true, NOON).await.unwrap();
        a.record_event(&who(&format!("m{m}"), "2.0.0"), event(3, 2, NOON)).await.unwrap();
    }
    let before = revision(&store).await;
    a.flush().await.unwrap();
    assert_eq!(revision(&store).await, before + 1, "300 records, one commit");
    let all = b.instances(APP, None).await.unwrap();
    assert_eq!(all.len(), 300);
    assert!(all.iter().all(|i| i.status == InstanceStatus::Complete && i.events.len() == 1), "{:?}", all[0]);
}

/// A store that takes at most `limit` compares and ops per transaction (as etcd's
/// `--max-txn-ops`), on an embedded store, and counts reads of instance records.
#[derive(Debug)]
struct Limited(Arc<dyn Store>, usize, std::sync::atomic::AtomicUsize);

impl Limited {
    fn new(inner: Arc<dyn Store>, limit: usize) -> Self {
        Self(inner, limit, std::sync::atomic::AtomicUsize::new(0))
    }

    fn instance_reads(&self) -> usize {
        self.2.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[async_trait]
impl Store for Limited {
    async fn get(&self, key: &str) -> crate::store::Result<Option<crate::store::KeyValue>> {
        if key.starts_with("updates/instances/") {
            self.2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        self.0.get(key).await
    }
    async fn list(&self, prefix: &str) -> crate::store::Result<crate::store::Listing> {
        self.0.list(prefix).await
    }
    async fn txn(&self, txn: Txn) -> crate::store::Result<crate::store::TxnResult> {
        if txn.ops.len() > self.1 || txn.compares.len() > self.1 {
            return Err(crate::StoreError::Invalid("too many operations in one transaction".into()));
        }
        self.0.txn(txn).await
    }
    async fn watch(&self, prefix: &str, start: u64) -> crate::store::Result<crate::store::Watch> {
        self.0.watch(prefix, start).await
    }
    async fn grant_lease(&self, ttl: std::time::Duration) -> crate::store::Result<u64> {
        self.0.grant_lease(ttl).await
    }
    async fn keep_alive(&self, lease: u64) -> crate::store::Result<()> {
        self.0.keep_alive(lease).await
    }
    async fn revoke_lease(&self, lease: u64) -> crate::store::Result<()> {
        self.0.revoke_lease(lease).await
    }
    fn max_txn_ops(&self) -> Option<usize> {
        Some(self.1)
    }
}

#[tokio::test]
async fn a_written_record_serves_the_next_check_and_a_write_elsewhere_meanwhile_is_kept() {
    use super::super::event_result::SUCCESS;
    use super::super::event_type::{DOWNLOAD_FINISHED, DOWNLOAD_STARTED};
    let inner: Arc<dyn Store> = RedbStore::in_memory();
    let counting = Arc::new(Limited::new(inner.clone(), usize::MAX));
    let a = StoreUpdateChannel::new(counting.clone());
    let b = StoreUpdateChannel::new(inner);
    a.create_app(APP, "deisd").await.unwrap();
    a.check(&who("m1", "1.0.0"), false, NOON).await.unwrap();
    a.flush().await.unwrap();
    // The record `a` wrote serves its next check: no read.
    let reads = counting.instance_reads();
    a.check(&who("m1", "1.0.0"), false, NOON + 1).await.unwrap();
    a.flush().await.unwrap();
    assert_eq!(counting.instance_reads(), reads, "the next check builds on the record written");
    assert_eq!(b.instances(APP, None).await.unwrap()[0].last_check.unix_seconds(), NOON + 1);
    // `b` writes an event; `a`'s next event builds on its older record, and its flush
    // merges into the stored one: both events, each once, in order.
    b.record_event(&who("m1", "1.0.0"), event(DOWNLOAD_STARTED, SUCCESS, NOON + 2)).await.unwrap();
    b.flush().await.unwrap();
    a.record_event(&who("m1", "1.0.0"), event(DOWNLOAD_FINISHED, SUCCESS, NOON + 3)).await.unwrap();
    a.flush().await.unwrap();
    let i = &b.instances(APP, None).await.unwrap()[0];
    let events: Vec<_> = i.events.iter().map(|e| (e.event_type, e.result, e.repeats)).collect();
    assert_eq!(events, vec![(DOWNLOAD_STARTED, SUCCESS, 0), (DOWNLOAD_FINISHED, SUCCESS, 0)]);
    assert_eq!(i.status, InstanceStatus::Downloaded);
    assert_eq!(a.instances(APP, None).await.unwrap(), b.instances(APP, None).await.unwrap());
    // An offer is decided on a fresh read of the record, never on the one kept.
    a.publish(APP, "stable", crate::testing::sample_package("2.0.0")).await.unwrap();
    let reads = counting.instance_reads();
    assert!(matches!(a.check(&who("m1", "1.0.0"), true, NOON + 4).await.unwrap(), CheckOutcome::Update(_)));
    assert!(counting.instance_reads() > reads, "the offer read the record");
}

#[tokio::test]
async fn a_flush_keeps_within_the_stores_transaction_limit() {
    let inner: Arc<dyn Store> = RedbStore::in_memory();
    let store: Arc<dyn Store> = Arc::new(Limited::new(inner.clone(), 16));
    let a = StoreUpdateChannel::new(store.clone());
    a.create_app(APP, "deisd").await.unwrap();
    for m in 0..100 {
        a.check(&who(&format!("m{m}"), "1.0.0"), false, NOON).await.unwrap();
    }
    let before = revision(&store).await;
    a.flush().await.unwrap();
    assert_eq!(revision(&store).await, before + 7, "100 records in transactions of 16");
    assert_eq!(StoreUpdateChannel::new(inner).instances(APP, None).await.unwrap().len(), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_racing_with_flushes_are_each_written_once() {
    let (_store, a, b) = two_servers(5).await;
    let flusher = {
        let a = a.clone();
        tokio::spawn(async move {
            for _ in 0..200 {
                a.flush().await.unwrap();
                tokio::task::yield_now().await;
            }
        })
    };
    let mut tasks = Vec::new();
    for m in 0..8 {
        let a = a.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..10u64 {
                let me = who(&format!("m{m}"), "1.0.0");
                // Alternating types: no two in a row are the same (they would fold).
                a.record_event(&me, event(13 + (n % 2) as u32, 1, NOON + n)).await.unwrap();
                a.check(&me, n % 2 == 0, NOON + n).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    flusher.await.unwrap();
    a.flush().await.unwrap();
    let all = b.instances(APP, None).await.unwrap();
    assert_eq!(all.len(), 8);
    for i in &all {
        let at: Vec<u64> = i.events.iter().map(|e| e.at.unix_seconds() - NOON).collect();
        assert_eq!(at, (0..10).collect::<Vec<_>>(), "{}: every event once, in order", i.id);
        assert!(i.events.iter().all(|e| e.repeats == 0), "{}: no event written twice (folded)", i.id);
        assert_eq!(i.last_check.unix_seconds(), NOON + 9);
    }
    assert_eq!(a.instances(APP, None).await.unwrap(), all);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configuration_change_on_one_server_reaches_the_others_cache_at_once() {
    let (_store, a, b) = two_servers(5).await;
    // `b` caches the group (once its watches run, and changes reported before are in).
    b.check(&who("m0", "2.0.0"), true, NOON).await.unwrap();
    cache_live(&b).await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !b.config.contains(&group_key(APP, "stable")) {
        assert!(tokio::time::Instant::now() < deadline, "b never cached the group");
        b.check(&who("m0", "2.0.0"), true, NOON).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    // `a` pauses the group: `b` forgets its copy as soon as its watch sees the change
    // (there is no time-to-live; the wait is only for the watch to deliver it).
    a.set_paused(APP, "stable", true).await.unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while b.config.contains(&group_key(APP, "stable")) {
        assert!(tokio::time::Instant::now() < deadline, "b never forgot the paused group");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(b.check(&who("m2", "1.0.0"), true, NOON).await.unwrap(), CheckOutcome::NoUpdate(NoUpdate::Paused));
    // A new version published through `a` is offered by `b`.
    a.set_paused(APP, "stable", false).await.unwrap();
    a.publish(APP, "stable", crate::testing::sample_package("3.0.0")).await.unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match b.check(&who("m3", "1.0.0"), true, NOON).await.unwrap() {
            CheckOutcome::Update(p) if p.version == "3.0.0" => break,
            other => assert!(tokio::time::Instant::now() < deadline, "b still answers {other:?}"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}
