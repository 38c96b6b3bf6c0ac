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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_key_broker_passes_the_broker_suite() {
    use deis_examples::ApiKeyBroker;
    use deis_sdk::broker::{ManagedBroker, ServiceBroker};
    use deis_sdk::testing::{BrokerHarness, broker_suite};

    struct Harness(Arc<ApiKeyBroker>);
    #[async_trait::async_trait]
    impl BrokerHarness for Harness {
        fn plan(&self) -> (String, String) {
            (ApiKeyBroker::SERVICE_ID.into(), ApiKeyBroker::FREE_PLAN_ID.into())
        }
        async fn credentials_work(&self, credentials: &deis_sdk::broker::Object) -> Option<bool> {
            Some(self.0.accepts(credentials["api_key"].as_str().unwrap()))
        }
    }
    let backend = Arc::new(ApiKeyBroker::default());
    let broker = ManagedBroker::start(MemoryStore::new(), "mailer/", backend.clone()).await.unwrap();
    broker_suite(|| async { Arc::new(broker.clone()) as Arc<dyn ServiceBroker> }, &Harness(backend)).await;
}
