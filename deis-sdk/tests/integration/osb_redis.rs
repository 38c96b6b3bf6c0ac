//! The Redis broker against a real redis-server (test-support's starter): the
//! conformance suite for both plans with credentials checked by logging in, and the
//! confinement of `prefix` users.

use std::sync::Arc;

use async_trait::async_trait;
use deis_core::broker::{
    BindRequest, DeleteRequest, ManagedBroker, Object, ProvisionRequest, RequestContext, ServiceBroker,
};
use deis_core::store::RedbStore;
use deis_core::testing::{BrokerHarness, broker_suite};
use deis_sdk::osb::OsbDriver;
use deis_sdk::osb::redis::{REDIS_DB_PLAN_ID, REDIS_PREFIX_PLAN_ID, REDIS_SERVICE_ID, RedisBackend};
use deis_test_support::redis::RedisServer;
use deis_test_support::service::Service;

async fn connect(url: &str) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    redis::Client::open(url)?.get_multiplexed_async_connection().await
}

/// Logs in with the credentials and writes and reads a key under the prefix.
async fn works(credentials: &Object) -> bool {
    let Ok(mut con) = connect(credentials["uri"].as_str().unwrap()).await else { return false };
    let key = format!("{}probe", credentials.get("key_prefix").and_then(|p| p.as_str()).unwrap_or(""));
    let set: redis::RedisResult<()> = redis::cmd("SET").arg(&key).arg("1").query_async(&mut con).await;
    let got: redis::RedisResult<String> = redis::cmd("GET").arg(&key).query_async(&mut con).await;
    set.is_ok() && got.is_ok_and(|v| v == "1")
}

struct Harness(&'static str);

#[async_trait]
impl BrokerHarness for Harness {
    fn plan(&self) -> (String, String) {
        (REDIS_SERVICE_ID.into(), self.0.into())
    }
    async fn credentials_work(&self, credentials: &Object) -> Option<bool> {
        Some(works(credentials).await)
    }
}

async fn broker(server: &RedisServer) -> ManagedBroker {
    let backend = Arc::new(RedisBackend::new(&server.url(), 16).unwrap());
    ManagedBroker::start(RedbStore::in_memory(), "redis/", backend).await.unwrap()
}

#[tokio::test]
async fn redis_broker_passes_the_suite_for_both_plans() {
    let Some(server) = RedisServer::shared() else { return };
    let broker = Arc::new(broker(server).await);
    broker_suite(async || broker.clone() as Arc<dyn ServiceBroker>, &Harness(REDIS_PREFIX_PLAN_ID)).await;
    broker_suite(async || broker.clone() as Arc<dyn ServiceBroker>, &Harness(REDIS_DB_PLAN_ID)).await;
}

#[tokio::test]
async fn prefix_users_are_confined_and_lose_their_connections_on_unbind() {
    let Some(server) = RedisServer::shared() else { return };
    let driver = OsbDriver::new(Arc::new(broker(server).await));
    let ctx = RequestContext::default();
    let provision = ProvisionRequest {
        service_id: REDIS_SERVICE_ID.into(),
        plan_id: REDIS_PREFIX_PLAN_ID.into(),
        organization_guid: "deis".into(),
        space_guid: "test".into(),
        ..Default::default()
    };
    driver.provision(&ctx, "cache", provision, None).await.unwrap();
    let bind =
        BindRequest { service_id: REDIS_SERVICE_ID.into(), plan_id: REDIS_PREFIX_PLAN_ID.into(), ..Default::default() };
    let creds = driver.bind(&ctx, "cache", "app", bind, None).await.unwrap().credentials.unwrap();
    let prefix = creds["key_prefix"].as_str().unwrap().to_string();
    let mut con = connect(creds["uri"].as_str().unwrap()).await.unwrap();
    redis::cmd("SET").arg(format!("{prefix}k")).arg("v").query_async::<()>(&mut con).await.unwrap();
    let outside: redis::RedisResult<()> = redis::cmd("SET").arg("elsewhere").arg("v").query_async(&mut con).await;
    assert!(outside.is_err(), "a prefix user wrote outside its prefix");
    let admin: redis::RedisResult<()> = redis::cmd("FLUSHALL").query_async(&mut con).await;
    assert!(admin.is_err(), "a prefix user ran FLUSHALL");

    let delete = DeleteRequest { service_id: REDIS_SERVICE_ID.into(), plan_id: REDIS_PREFIX_PLAN_ID.into() };
    driver.unbind(&ctx, "cache", "app", delete.clone(), None).await.unwrap();
    let after: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut con).await;
    assert!(after.is_err(), "the unbound user's connection survived");
    assert!(connect(creds["uri"].as_str().unwrap()).await.is_err(), "the unbound user can log in");

    // Deprovisioning deletes the instance's keys.
    driver.deprovision(&ctx, "cache", delete, None).await.unwrap();
    let mut admin = connect(&server.url()).await.unwrap();
    let left: Vec<String> = redis::cmd("KEYS").arg(format!("{prefix}*")).query_async(&mut admin).await.unwrap();
    assert!(left.is_empty(), "{left:?}");
}
