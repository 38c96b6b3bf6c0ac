//! The example parts pass their traits' conformance suites, like every implementation.

use std::sync::Arc;

use deis_examples::{MemoryStore, TinyLogStore};
use deis_sdk::logs::LogStore;
use deis_sdk::store::Store;
use deis_sdk::testing::{lock_suite, logstore_suite, store_suite};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_passes_the_store_suite() {
    store_suite(|| async { MemoryStore::new() as Arc<dyn Store> }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_passes_the_lock_suite() {
    lock_suite(|| async { MemoryStore::new() as Arc<dyn Store> }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiny_log_store_passes_the_logstore_suite() {
    logstore_suite(|| async { Arc::new(TinyLogStore::new()) as Arc<dyn LogStore> }).await;
}
