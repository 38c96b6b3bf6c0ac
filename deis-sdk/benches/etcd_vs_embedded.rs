//! Lock acquire/release per second and controller writes per second on etcd (a private
//! single-member `etcd` on loopback, its data on disk) vs the embedded store (redb file),
//! in the same run.
//!
//! ```sh
//! cargo bench -p deis-sdk --features etcd --bench etcd_vs_embedded   # BENCH_OPS=500
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

use deis_sdk::deis_core::artifact::ArtifactStore;
use deis_sdk::deis_core::controller::{Controller, ControllerConfig, RegistrationMode};
use deis_sdk::deis_core::model::ConfigPatch;
use deis_sdk::deis_core::scheduler::{LocalScheduler, LocalSchedulerConfig};
use deis_sdk::deis_core::store::lock::Lock;
use deis_sdk::deis_core::store::{RedbStore, Store};
use deis_sdk::etcd::{EtcdConfig, EtcdStore};
use deis_test_support::Service;
use deis_test_support::etcd::EtcdServer;

fn ops() -> usize {
    std::env::var("BENCH_OPS").ok().and_then(|v| v.parse().ok()).unwrap_or(500)
}

async fn locks(store: Arc<dyn Store>, n: usize) -> f64 {
    let started = Instant::now();
    for _ in 0..n {
        let guard = Lock::acquire(store.clone(), "bench", Duration::from_secs(10)).await.unwrap();
        guard.release().await.unwrap();
    }
    n as f64 / started.elapsed().as_secs_f64()
}

async fn controller_writes(store: Arc<dyn Store>, n: usize) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let scheduler = LocalScheduler::new(LocalSchedulerConfig::new(dir.path().join("scheduler"))).await.unwrap();
    let c = Controller::new(ControllerConfig {
        store,
        scheduler,
        artifacts: ArtifactStore::new(dir.path().join("builds")),
        domain: "bench.test".into(),
        registration: RegistrationMode::Enabled,
        logs: None,
    });
    let user = c.register(None, "bench", "bench-password", "b@example.com").await.unwrap();
    let app = c.create_app(&user, Some("bench".parse().unwrap())).await.unwrap().id;
    let started = Instant::now();
    for i in 0..n {
        let patch = ConfigPatch {
            values: Some(BTreeMap::from([("N".to_string(), Some(serde_json::json!(i.to_string())))])),
            ..ConfigPatch::default()
        };
        c.set_config(&user, &app, &patch).await.unwrap();
    }
    n as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let Some(etcd) = EtcdServer::start() else { return };
    let n = ops();
    let dir = tempfile::tempdir().unwrap();
    let embedded = |name: &str| {
        let path = dir.path().join(name);
        async move { RedbStore::open(&path).await.unwrap() as Arc<dyn Store> }
    };
    let remote = EtcdStore::connect(EtcdConfig::new([etcd.endpoint()])).await.unwrap();

    let lock_redb = locks(embedded("locks.redb").await, n).await;
    let lock_etcd = locks(remote.scoped("locks/"), n).await;
    let writes_redb = controller_writes(embedded("controller.redb").await, n).await;
    let writes_etcd = controller_writes(remote.scoped("controller/"), n).await;

    println!("{n} operations each\n");
    println!("| operation | embedded (redb) /s | etcd /s | etcd/embedded |");
    println!("|---|---:|---:|---:|");
    println!("| lock acquire + release | {lock_redb:.0} | {lock_etcd:.0} | {:.2}× |", lock_etcd / lock_redb);
    println!(
        "| controller write (config:set) | {writes_redb:.0} | {writes_etcd:.0} | {:.2}× |",
        writes_etcd / writes_redb
    );
}
