//! `EtcdStore` against real etcd (Debian `etcd-server`) started by the tests: the
//! `Store` and lock conformance suites, watches across member restarts and leader
//! changes, compaction, an unreachable cluster.
#![cfg(feature = "etcd")]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use deis_sdk::deis_core::store::{EventKind, Store, StoreError, Watch, WatchEvent};
use deis_sdk::deis_core::testing::{lock_suite, store_suite};
use deis_sdk::etcd::{EtcdConfig, EtcdStore};
use deis_test_support::etcd::{EtcdCluster, EtcdServer};
use deis_test_support::{Service, free_addr};

async fn connect(endpoints: Vec<String>) -> Arc<EtcdStore> {
    EtcdStore::connect(EtcdConfig::new(endpoints)).await.unwrap()
}

/// A factory of stores on fresh key prefixes of one server.
fn fresh_prefixes(store: Arc<EtcdStore>) -> impl AsyncFn() -> Arc<dyn Store> {
    let n = AtomicUsize::new(0);
    move || {
        let scoped = store.scoped(&format!("case{}/", n.fetch_add(1, Ordering::Relaxed)));
        async move { scoped as Arc<dyn Store> }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_the_store_suite() {
    // A server of its own: the suite checks how revisions advance, so no other test may
    // write meanwhile.
    let Some(etcd) = EtcdServer::start() else { return };
    store_suite(fresh_prefixes(connect(vec![etcd.endpoint()]).await)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_the_lock_suite() {
    let Some(etcd) = EtcdServer::shared() else { return };
    let store = connect(vec![etcd.endpoint()]).await.scoped("lock-suite/");
    lock_suite(fresh_prefixes(store)).await;
}

async fn next(w: &mut Watch, within: Duration) -> WatchEvent {
    match tokio::time::timeout(within, w.next()).await {
        Ok(Some(Ok(e))) => e,
        other => panic!("expected a watch event within {within:?}, got {other:?}"),
    }
}

/// Writes `n` numbered keys, one at a time, retrying a write while the cluster elects
/// (a write that failed with `Unavailable` may have been applied: it is read back).
async fn write_numbered(store: Arc<dyn Store>, prefix: &str, range: std::ops::Range<usize>) -> BTreeMap<String, u64> {
    let mut written = BTreeMap::new();
    for i in range {
        let key = format!("{prefix}{i:05}");
        let revision = loop {
            match store.put(&key, i.to_string().into_bytes()).await {
                Ok(r) => break r,
                Err(StoreError::Unavailable(_)) => {
                    if let Ok(Some(kv)) = store.get(&key).await {
                        break kv.mod_revision;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("write {key}: {e}"),
            }
        };
        written.insert(key, revision);
    }
    written
}

/// Reads events until every written key was seen; fails on a repeat, a gap in revision
/// order, or an event for a key never written.
async fn expect_exactly(w: &mut Watch, written: &BTreeMap<String, u64>) {
    let mut seen = BTreeMap::new();
    let mut last = 0;
    while seen.len() < written.len() {
        let e = next(w, Duration::from_secs(30)).await;
        assert_eq!(e.kind, EventKind::Put);
        assert!(e.kv.mod_revision > last, "out of order or repeated: {} after {last}", e.kv.mod_revision);
        last = e.kv.mod_revision;
        assert!(seen.insert(e.kv.key.clone(), e.kv.mod_revision).is_none(), "{} delivered twice", e.kv.key);
    }
    assert_eq!(&seen, written, "every write seen once, at its revision");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_lose_no_event_across_member_restarts_and_leader_changes() {
    let Some(mut cluster) = EtcdCluster::start(3) else { return };
    let store = connect(cluster.endpoints()).await;
    let start = store.status().await.unwrap() + 1;
    let mut live = store.watch("w/", 0).await.unwrap();
    let mut written = BTreeMap::new();
    // Each member in turn, the leader first: SIGKILL it while writes go on, restart it.
    let leader = cluster.wait_leader(Duration::from_secs(10));
    let order = [leader, (leader + 1) % 3, (leader + 2) % 3];
    for (round, member) in order.into_iter().enumerate() {
        let writer = tokio::spawn(write_numbered(store.clone(), "w/", round * 100..round * 100 + 100));
        tokio::time::sleep(Duration::from_millis(30)).await;
        cluster.kill(member);
        written.extend(writer.await.unwrap());
        cluster.restart(member);
        cluster.wait_leader(Duration::from_secs(10));
    }
    expect_exactly(&mut live, &written).await;
    // A watch from the first revision replays the same.
    let mut replay = store.watch("w/", start).await.unwrap();
    expect_exactly(&mut replay, &written).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_waits_out_a_stopped_cluster_and_resumes() {
    let Some(mut cluster) = EtcdCluster::start(1) else { return };
    let store = connect(cluster.endpoints()).await;
    let mut w = store.watch("s/", 0).await.unwrap();
    let before = write_numbered(store.clone(), "s/", 0..5).await;
    cluster.stop(0);
    let err = store.put("s/while-down", b"x".to_vec()).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "a stopped cluster is unavailable: {err:?}");
    assert!(err.to_string().contains("retry when it is back"), "{err}");
    cluster.restart(0);
    let after = write_numbered(store.clone(), "s/", 5..10).await;
    let mut all = before;
    all.extend(after);
    expect_exactly(&mut w, &all).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compacted_history_is_a_resync_error() {
    let Some(etcd) = EtcdServer::shared() else { return };
    let store = connect(vec![etcd.endpoint()]).await.scoped("compaction/");
    let first = store.put("k", b"1".to_vec()).await.unwrap();
    let last = store.put("k", b"2".to_vec()).await.unwrap();
    // Compact through the JSON gateway, as an operator's `etcdctl compact` would.
    let body = format!("{{\"revision\":\"{last}\",\"physical\":true}}");
    let r = deis_test_support::http::Request::post("/v3/kv/compaction").body(body).send(etcd.addr()).unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    // etcd creates the watch, then cancels it: the error comes from `watch` or first.
    let err = match store.watch("", first).await {
        Err(e) => e,
        Ok(mut w) => match tokio::time::timeout(Duration::from_secs(5), w.next()).await {
            Ok(Some(Err(e))) => e,
            other => panic!("expected a compaction error, got {other:?}"),
        },
    };
    match err {
        StoreError::Compacted { requested, oldest } => assert_eq!((requested, oldest), (first, last)),
        other => panic!("expected Compacted, got {other:?}"),
    }
    assert!(err_text(first, last).contains("list again"));
    // From the compaction revision on, it works.
    let mut w = store.watch("", last).await.unwrap();
    assert_eq!(next(&mut w, Duration::from_secs(5)).await.kv.mod_revision, last);
}

fn err_text(requested: u64, oldest: u64) -> String {
    StoreError::Compacted { requested, oldest }.to_string()
}

#[tokio::test]
async fn an_unreachable_cluster_is_unavailable_not_a_hang() {
    let nobody = format!("http://{}", free_addr());
    let started = tokio::time::Instant::now();
    let err = EtcdStore::connect(EtcdConfig::new([nobody.clone()])).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(err.to_string().contains(&nobody), "names the endpoint: {err}");
    assert!(started.elapsed() < Duration::from_secs(15), "gave up within the timeouts");
}

/// Calls etcd's JSON gateway (what `etcdctl` does over gRPC).
fn gateway(addr: std::net::SocketAddr, path: &str, body: &str, token: Option<&str>) -> String {
    let mut r = deis_test_support::http::Request::post(path).body(body.to_string());
    if let Some(t) = token {
        r = r.header("Authorization", t);
    }
    let resp = r.send(addr).unwrap();
    assert_eq!(resp.status, 200, "{path}: {}", resp.body);
    resp.body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_and_password_from_a_store_uri() {
    let Some(etcd) = EtcdServer::start() else { return };
    let addr = etcd.addr();
    gateway(addr, "/v3/auth/role/add", r#"{"name":"root"}"#, None);
    gateway(addr, "/v3/auth/user/add", r#"{"name":"root","password":"s3cret"}"#, None);
    gateway(addr, "/v3/auth/user/grant", r#"{"user":"root","role":"root"}"#, None);
    gateway(addr, "/v3/auth/enable", "{}", None);

    let dir = tempfile::tempdir().unwrap();
    let (good, bad) = (dir.path().join("good"), dir.path().join("bad"));
    std::fs::write(&good, "s3cret\n").unwrap();
    std::fs::write(&bad, "guess\n").unwrap();
    let uri = |file: &std::path::Path| -> deis_sdk::adapters::StoreUri {
        format!("etcd://{addr}?user=root&password-file={}&prefix=auth/", file.display()).parse().unwrap()
    };
    let store = uri(&good).open().await.unwrap();
    store.put("k", b"v".to_vec()).await.unwrap();
    assert_eq!(store.get("k").await.unwrap().unwrap().value, b"v");
    // The prefix is a namespace: the key is auth/k in etcd.
    let token = gateway(addr, "/v3/auth/authenticate", r#"{"name":"root","password":"s3cret"}"#, None);
    let token = token.split("\"token\":\"").nth(1).unwrap().split('"').next().unwrap().to_string();
    let range = gateway(addr, "/v3/kv/range", r#"{"key":"YXV0aC9r"}"#, Some(&token));
    assert!(range.contains("\"count\":\"1\""), "auth/k is stored: {range}");

    let err = uri(&bad).open().await.unwrap_err();
    assert!(err.to_string().contains("authentication failed"), "a wrong password says so: {err}");
    let anonymous: deis_sdk::adapters::StoreUri = format!("etcd://{addr}").parse().unwrap();
    let err = anonymous.open().await.unwrap_err();
    assert!(err.to_string().contains("user name is empty") || err.to_string().contains("permission denied"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_update_channel_on_etcd_passes_its_suite() {
    use deis_sdk::deis_core::UpdateChannel;
    use deis_sdk::deis_core::update::StoreUpdateChannel;
    let Some(etcd) = EtcdServer::shared() else { return };
    let stores = fresh_prefixes(connect(vec![etcd.endpoint()]).await.scoped("update-suite/"));
    deis_sdk::deis_core::testing::update_channel_suite(async || {
        Arc::new(StoreUpdateChannel::new(stores().await)) as Arc<dyn UpdateChannel>
    })
    .await;
}

/// Three update servers (replicas), each on its own connection to one etcd: a change
/// made through one reaches the configuration the others cache as soon as their
/// watches deliver it (no time-to-live), and grants stay within the budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_replicas_see_each_others_configuration_changes_at_once() {
    use deis_sdk::deis_core::UpdateChannel;
    use deis_sdk::deis_core::testing::sample_package;
    use deis_sdk::deis_core::update::{
        CheckOutcome, GroupSpec, InstanceRef, NoUpdate, RolloutPolicy, StoreUpdateChannel,
    };
    let Some(etcd) = EtcdServer::shared() else { return };
    let prefix = format!("update-replicas-{}/", free_addr().port());
    let mut replicas = Vec::new();
    for _ in 0..3 {
        let store: Arc<dyn Store> = connect(vec![etcd.endpoint()]).await.scoped(&prefix);
        replicas.push(StoreUpdateChannel::new(store));
    }
    let (a, b, c) = (&replicas[0], &replicas[1], &replicas[2]);
    const APP: &str = "e96281a6-d1af-4bde-9a0a-97b76e56dc57";
    let who = |id: &str, version: &str| InstanceRef {
        app: APP.into(),
        group: "stable".into(),
        instance: id.into(),
        version: version.into(),
    };
    a.create_app(APP, "deisd").await.unwrap();
    a.publish(APP, "stable", sample_package("2.0.0")).await.unwrap();
    let policy = RolloutPolicy { max_updates_per_period: 2, ..RolloutPolicy::default() };
    a.put_group(APP, GroupSpec { name: "stable".into(), channel: "stable".into(), policy }).await.unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    // Every replica answers (and caches the configuration); two grants in all.
    let mut granted = 0;
    for (n, r) in replicas.iter().enumerate() {
        for m in 0..2 {
            if matches!(r.check(&who(&format!("m{n}-{m}"), "1.0.0"), true, now).await.unwrap(), CheckOutcome::Update(_))
            {
                granted += 1;
            }
        }
    }
    assert_eq!(granted, 2, "the period's budget holds across replicas");
    // Paused through `a`: `b` and `c` stop offering within the time their watches take.
    a.set_paused(APP, "stable", true).await.unwrap();
    let within = Duration::from_secs(10);
    let paused = async |r: &StoreUpdateChannel| {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match r.check(&who("m0-0", "1.0.0"), true, now).await.unwrap() {
                CheckOutcome::NoUpdate(NoUpdate::Paused) => return,
                other => assert!(tokio::time::Instant::now() < deadline, "still {other:?} after {within:?}"),
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let started = std::time::Instant::now();
    paused(b).await;
    paused(c).await;
    eprintln!("the pause reached the other replicas in {:?}", started.elapsed());
    // Resumed with a larger budget through `c`, 3.0.0 published through `b`: `a`
    // offers 3.0.0.
    c.set_paused(APP, "stable", false).await.unwrap();
    let policy = RolloutPolicy { max_updates_per_period: 10, ..RolloutPolicy::default() };
    c.put_group(APP, GroupSpec { name: "stable".into(), channel: "stable".into(), policy }).await.unwrap();
    b.publish(APP, "stable", sample_package("3.0.0")).await.unwrap();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match a.check(&who("m0-0", "1.0.0"), true, now).await.unwrap() {
            CheckOutcome::Update(p) if p.version == "3.0.0" => break,
            other => assert!(tokio::time::Instant::now() < deadline, "a still answers {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for r in &replicas {
        r.flush().await.unwrap();
    }
}
