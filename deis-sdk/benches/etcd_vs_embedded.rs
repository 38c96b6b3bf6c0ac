//! Lock acquire/release per second and controller writes per second on etcd (a private
//! single-member `etcd` on loopback, its data on disk) vs the embedded store (redb file),
//! in the same run: alternating rounds, the median of each.
//!
//! ```sh
//! cargo bench -p deis-sdk --all-features --bench etcd_vs_embedded   # BENCH_OPS=200 ROUNDS=7
//! ```
//!
//! - **lock**: `Lock::acquire` then `release` of one lock, one after another (each is
//!   a lease grant, a compare-and-put and a revocation);
//! - **controller writes**: `Controller::set_config` on one app, one after another
//!   (each reads the app, its releases and config, then commits a new config and
//!   release in one transaction).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deis_sdk::deis_core::controller::Controller;
use deis_sdk::deis_core::model::{AppName, ConfigPatch, User};
use deis_sdk::deis_core::store::lock::Lock;
use deis_sdk::deis_core::store::{RedbStore, Store};
use deis_sdk::deis_core::testing::controller_with_app;
use deis_sdk::etcd::{EtcdConfig, EtcdStore};
use deis_test_support::Service;
use deis_test_support::etcd::EtcdServer;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

async fn locks(store: &Arc<dyn Store>, n: usize) -> f64 {
    let started = Instant::now();
    for _ in 0..n {
        let guard = Lock::acquire(store.clone(), "bench", Duration::from_secs(10)).await.unwrap();
        guard.release().await.unwrap();
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// A controller with one user and one app, for `config:set` in a loop.
struct Writer {
    c: Arc<Controller>,
    user: User,
    app: AppName,
    next: usize,
    _dir: tempfile::TempDir,
}

impl Writer {
    async fn new(store: Arc<dyn Store>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (c, user, app) = controller_with_app(store, dir.path(), "bench").await;
        Self { c, user, app, next: 0, _dir: dir }
    }

    async fn writes(&mut self, n: usize) -> f64 {
        let started = Instant::now();
        for _ in 0..n {
            self.next += 1;
            let patch = ConfigPatch {
                values: Some(BTreeMap::from([("N".to_string(), Some(serde_json::json!(self.next.to_string())))])),
                ..ConfigPatch::default()
            };
            self.c.set_config(&self.user, &self.app, &patch).await.unwrap();
        }
        n as f64 / started.elapsed().as_secs_f64()
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let Some(etcd) = EtcdServer::start() else { return };
    let (n, rounds) = (env("BENCH_OPS", 200), env("ROUNDS", 7));
    let dir = tempfile::tempdir().unwrap();
    let redb = |name: &str| {
        let path = dir.path().join(name);
        async move { RedbStore::open(&path).await.unwrap() as Arc<dyn Store> }
    };
    let remote = EtcdStore::connect(EtcdConfig::new([etcd.endpoint()])).await.unwrap();
    let (lock_redb_store, lock_etcd_store): (Arc<dyn Store>, Arc<dyn Store>) =
        (redb("locks.redb").await, remote.scoped("locks/"));
    let mut writer_redb = Writer::new(redb("controller.redb").await).await;
    let mut writer_etcd = Writer::new(remote.scoped("controller/")).await;

    // Alternating rounds, medians: the machine's other load hits both sides alike.
    let mut results: [Vec<f64>; 4] = Default::default();
    for _ in 0..rounds {
        results[0].push(locks(&lock_redb_store, n).await);
        results[1].push(locks(&lock_etcd_store, n).await);
        results[2].push(writer_redb.writes(n).await);
        results[3].push(writer_etcd.writes(n).await);
    }
    let [lock_redb, lock_etcd, writes_redb, writes_etcd] = results.map(median);

    println!("{rounds} alternating rounds of {n} operations each; medians\n");
    println!("| operation | embedded (redb) /s | etcd /s | etcd/embedded |");
    println!("|---|---:|---:|---:|");
    println!("| lock acquire + release | {lock_redb:.0} | {lock_etcd:.0} | {:.2}× |", lock_etcd / lock_redb);
    println!(
        "| controller write (config:set) | {writes_redb:.0} | {writes_etcd:.0} | {:.2}× |",
        writes_etcd / writes_redb
    );
}
