//! The controller on a three-member etcd cluster whose leader is killed during a stream
//! of writes: every acknowledged write is there afterwards, and writes resume after the
//! election.
#![cfg(feature = "etcd")]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use deis_sdk::deis_core::StoreError;
use deis_sdk::deis_core::controller::ControllerError;
use deis_sdk::deis_core::model::ConfigPatch;
use deis_sdk::deis_core::testing::controller_with_app;
use deis_sdk::etcd::{EtcdConfig, EtcdStore};
use deis_test_support::etcd::EtcdCluster;

const WRITES: usize = 120;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_controller_writes_survive_killing_the_etcd_leader() {
    let Some(mut cluster) = EtcdCluster::start(3) else { return };
    let store = EtcdStore::connect(EtcdConfig::new(cluster.endpoints())).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (controller, alice, app) = controller_with_app(store, dir.path(), "steady").await;

    let acked = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (controller, alice, app, acked) = (controller.clone(), alice.clone(), app.clone(), acked.clone());
        tokio::spawn(async move {
            let mut unavailable = 0;
            for i in 0..WRITES {
                let patch = ConfigPatch {
                    values: Some(BTreeMap::from([(format!("K{i:03}"), Some(serde_json::json!(i.to_string())))])),
                    ..ConfigPatch::default()
                };
                loop {
                    match controller.set_config(&alice, &app, &patch).await {
                        Ok(_) => break,
                        // Applied by the attempt that timed out.
                        Err(ControllerError::NothingChanged { .. }) => break,
                        Err(ControllerError::Store(StoreError::Unavailable(_))) => {
                            unavailable += 1;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        Err(e) => panic!("write {i}: {e}"),
                    }
                }
                acked.store(i + 1, Ordering::SeqCst);
            }
            unavailable
        })
    };
    // Kill the leader a third of the way in.
    deis_test_support::eventually(Duration::from_secs(30), "a third of the writes", || async {
        (acked.load(Ordering::SeqCst) >= WRITES / 3).then_some(())
    })
    .await;
    let leader = cluster.wait_leader(Duration::from_secs(10));
    let at_kill = acked.load(Ordering::SeqCst);
    cluster.kill(leader);
    let unavailable = tokio::time::timeout(Duration::from_secs(120), writer).await.expect("writes resume").unwrap();
    assert!(acked.load(Ordering::SeqCst) > at_kill, "writes went on after the kill");
    let new_leader = cluster.wait_leader(Duration::from_secs(10));
    assert_ne!(new_leader, leader, "another member leads");

    let config = controller.config(&alice, &app).await.unwrap();
    for i in 0..WRITES {
        assert_eq!(config.values.get(&format!("K{i:03}")), Some(&i.to_string()), "acknowledged write {i} is kept");
    }
    let releases = controller.releases(&alice, &app).await.unwrap();
    assert_eq!(releases.len(), WRITES + 1, "one release per write, none doubled (v1 + {WRITES})");
    tracing::info!(unavailable, "writes retried during the election");
}
