//! The PostgreSQL broker against a real PostgreSQL (test-support's starter): the
//! conformance suite with credentials checked by connecting, and what apps see.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deis_core::broker::{
    BindRequest, BindResource, DeleteRequest, ManagedBroker, Object, ProvisionRequest, RequestContext, ServiceBroker,
};
use deis_core::store::RedbStore;
use deis_core::testing::{BrokerHarness, broker_suite};
use deis_sdk::osb::OsbDriver;
use deis_sdk::osb::postgres::{POSTGRES_SERVICE_ID, POSTGRES_SHARED_PLAN_ID, PostgresBackend};
use deis_test_support::postgres::PostgresServer;
use deis_test_support::service::Service;

async fn connect(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

struct Harness;

#[async_trait]
impl BrokerHarness for Harness {
    fn plan(&self) -> (String, String) {
        (POSTGRES_SERVICE_ID.into(), POSTGRES_SHARED_PLAN_ID.into())
    }
    async fn credentials_work(&self, credentials: &Object) -> Option<bool> {
        let url = credentials["uri"].as_str().expect("a uri");
        Some(match connect(url).await {
            Ok(client) => client.simple_query("SELECT 1").await.is_ok(),
            Err(_) => false,
        })
    }
}

async fn broker(server: &PostgresServer) -> ManagedBroker {
    let backend = Arc::new(PostgresBackend::new(&server.admin_url()).unwrap());
    ManagedBroker::start(RedbStore::in_memory(), "pg/", backend).await.unwrap()
}

#[tokio::test]
async fn postgres_broker_passes_the_suite() {
    let Some(server) = PostgresServer::shared() else { return };
    let broker = Arc::new(broker(server).await);
    broker_suite(async || broker.clone() as Arc<dyn ServiceBroker>, &Harness).await;
}

fn provision_request() -> ProvisionRequest {
    ProvisionRequest {
        service_id: POSTGRES_SERVICE_ID.into(),
        plan_id: POSTGRES_SHARED_PLAN_ID.into(),
        organization_guid: "deis".into(),
        space_guid: "test".into(),
        ..Default::default()
    }
}

fn bind_request(app: &str) -> BindRequest {
    BindRequest {
        service_id: POSTGRES_SERVICE_ID.into(),
        plan_id: POSTGRES_SHARED_PLAN_ID.into(),
        bind_resource: Some(BindResource { app_guid: Some(app.into()), route: None }),
        ..Default::default()
    }
}

#[tokio::test]
async fn apps_share_a_database_with_roles_of_their_own() {
    let Some(server) = PostgresServer::shared() else { return };
    let driver = OsbDriver::new(Arc::new(broker(server).await));
    let ctx = RequestContext::default();
    let max = Some(Duration::from_secs(60));
    driver.provision(&ctx, "db-1", provision_request(), max).await.unwrap();
    let one = driver.bind(&ctx, "db-1", "app-1", bind_request("one"), max).await.unwrap().credentials.unwrap();
    let two = driver.bind(&ctx, "db-1", "app-2", bind_request("two"), max).await.unwrap().credentials.unwrap();
    assert_ne!(one["username"], two["username"], "each app gets a role of its own");
    let url = |c: &Object| c["uri"].as_str().unwrap().to_string();

    // The first app writes, the second reads and writes the same table.
    let first = connect(&url(&one)).await.unwrap();
    first.batch_execute("CREATE TABLE notes (body text); INSERT INTO notes VALUES ('from one')").await.unwrap();
    let second = connect(&url(&two)).await.unwrap();
    second.batch_execute("INSERT INTO notes VALUES ('from two')").await.unwrap();
    let rows = second.query("SELECT body FROM notes ORDER BY body", &[]).await.unwrap();
    let bodies: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(bodies, ["from one", "from two"]);

    // Another tenant's role can't connect to this database.
    driver.provision(&ctx, "db-2", provision_request(), max).await.unwrap();
    let other = driver.bind(&ctx, "db-2", "app-3", bind_request("three"), max).await.unwrap().credentials.unwrap();
    let foreign = url(&other).rsplit_once('/').unwrap().0.to_string() + "/" + one["database"].as_str().unwrap();
    assert!(connect(&foreign).await.is_err(), "a role of another instance got into this database");

    // Unbinding the first app ends its session and its credentials; the table stays.
    let delete = DeleteRequest { service_id: POSTGRES_SERVICE_ID.into(), plan_id: POSTGRES_SHARED_PLAN_ID.into() };
    driver.unbind(&ctx, "db-1", "app-1", delete.clone(), max).await.unwrap();
    assert!(first.simple_query("SELECT 1").await.is_err(), "the unbound app's session survived");
    assert!(connect(&url(&one)).await.is_err(), "the unbound app's credentials still work");
    assert_eq!(second.query("SELECT count(*) FROM notes", &[]).await.unwrap()[0].get::<_, i64>(0), 2);

    // Deprovisioning drops the database.
    driver.deprovision(&ctx, "db-1", delete.clone(), max).await.unwrap();
    let admin = connect(&server.admin_url()).await.unwrap();
    let database = one["database"].as_str().unwrap();
    let left = admin.query("SELECT 1 FROM pg_database WHERE datname = $1", &[&database]).await.unwrap();
    assert!(left.is_empty(), "the database is still there");
    driver.deprovision(&ctx, "db-2", delete, max).await.unwrap();
}
