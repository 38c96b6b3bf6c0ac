use std::sync::Arc;

use serde_json::Value;

use super::*;
use crate::Store;
use crate::store::RedbStore;
use crate::testing::{MemoryBackend, PlanHarness, broker_suite};

fn user_provided_harness() -> PlanHarness {
    let mut parameters = Object::new();
    parameters.insert("url".into(), Value::String("postgres://u:p@db.example.com/app".into()));
    PlanHarness {
        service_id: USER_PROVIDED_SERVICE_ID.into(),
        plan_id: USER_PROVIDED_PLAN_ID.into(),
        parameters: Some(parameters),
        distinct_credentials: false,
    }
}

#[tokio::test]
async fn user_provided_passes_the_suite() {
    let store = RedbStore::in_memory();
    let make = async || {
        Arc::new(ManagedBroker::start(store.clone(), "brokers/user-provided/", Arc::new(UserProvided)).await.unwrap())
            as Arc<dyn ServiceBroker>
    };
    broker_suite(make, &user_provided_harness()).await;
}

#[tokio::test]
async fn asynchronous_backend_passes_the_suite() {
    let store = RedbStore::in_memory();
    let make = async || {
        Arc::new(
            ManagedBroker::start(store.clone(), "brokers/memory/", Arc::new(MemoryBackend::default())).await.unwrap(),
        ) as Arc<dyn ServiceBroker>
    };
    broker_suite(make, &MemoryBackend::harness(MemoryBackend::ASYNC_PLAN_ID)).await;
    broker_suite(make, &MemoryBackend::harness(MemoryBackend::SYNC_PLAN_ID)).await;
}

#[tokio::test]
async fn a_provision_in_progress_resumes_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn crate::Store> = RedbStore::open(&dir.path().join("store.redb")).await.unwrap();
    let held = Arc::new(MemoryBackend::holding());
    let first = ManagedBroker::start(store.clone(), "b/", held).await.unwrap();
    let request = ProvisionRequest {
        service_id: MemoryBackend::SERVICE_ID.into(),
        plan_id: MemoryBackend::ASYNC_PLAN_ID.into(),
        organization_guid: "o".into(),
        space_guid: "s".into(),
        ..Default::default()
    };
    let ctx = RequestContext::on_behalf_of(OriginatingIdentity::deis_user("alice"));
    let reply = first.provision(&ctx, "i-1", request.clone(), true).await.unwrap();
    assert_eq!(reply.status, Status::Accepted);
    let operation = reply.body.operation.clone();
    assert!(operation.is_some());
    // Who asked is recorded with the instance.
    let record = first.instance_record("i-1").await.unwrap().unwrap();
    assert_eq!(record.requested_by.as_deref(), Some(r#"deis {"user_id":"alice"}"#));
    // An identical repeat while in progress: 202 with the same operation.
    let again = first.provision(&ctx, "i-1", request.clone(), true).await.unwrap();
    assert_eq!((again.status, again.body.operation.clone()), (Status::Accepted, operation.clone()));
    first.stop();
    drop(first);

    let second = ManagedBroker::start(store, "b/", Arc::new(MemoryBackend::default())).await.unwrap();
    let poll = PollRequest { operation, ..Default::default() };
    deis_test_support::eventually(std::time::Duration::from_secs(10), "the resumed provision", || {
        let (broker, ctx, poll) = (second.clone(), ctx.clone(), poll.clone());
        async move {
            let state = broker.last_operation(&ctx, "i-1", poll).await.unwrap().state;
            (state == OperationState::Succeeded).then_some(())
        }
    })
    .await;
    assert_eq!(second.provision(&ctx, "i-1", request, true).await.unwrap().status, Status::Ok);
}

#[tokio::test]
async fn ids_with_slashes_do_not_reach_other_keys() {
    let store = RedbStore::in_memory();
    let broker = ManagedBroker::start(store.clone(), "b/", Arc::new(UserProvided)).await.unwrap();
    let ctx = RequestContext::default();
    let mut parameters = Object::new();
    parameters.insert("url".into(), Value::String("x://".into()));
    let request = ProvisionRequest {
        service_id: USER_PROVIDED_SERVICE_ID.into(),
        plan_id: USER_PROVIDED_PLAN_ID.into(),
        organization_guid: "o".into(),
        space_guid: "s".into(),
        parameters: Some(parameters),
        ..Default::default()
    };
    broker.provision(&ctx, "a/b", request.clone(), false).await.unwrap();
    broker.provision(&ctx, "a", request, false).await.unwrap();
    let keys: Vec<String> = store.list("b/").await.unwrap().kvs.into_iter().map(|kv| kv.key).collect();
    assert_eq!(keys, ["b/instances/a", "b/instances/a%2Fb"]);
}

#[test]
fn error_bodies_carry_the_spec_codes_verbatim() {
    let body = BrokerError::AsyncRequired.body();
    assert_eq!(body.error.as_deref(), Some("AsyncRequired"));
    assert_eq!(
        body.description.as_deref(),
        Some("This service plan requires client support for asynchronous service operations.")
    );
    assert_eq!(
        BrokerError::ConcurrencyError.body().description.as_deref(),
        Some("The Service Broker does not support concurrent requests that mutate the same resource.")
    );
    assert_eq!(
        BrokerError::RequiresApp.body().description.as_deref(),
        Some("This service supports generation of credentials through binding an application only.")
    );
    for e in [BrokerError::AsyncRequired, BrokerError::ConcurrencyError, BrokerError::RequiresApp] {
        let back = BrokerError::from_remote(e.status(), e.body());
        assert_eq!((back.status(), back.code()), (e.status(), e.code()));
    }
}

#[test]
fn originating_identity_round_trips_and_rejects_garbage() {
    let id = OriginatingIdentity::deis_user("alice");
    assert_eq!(OriginatingIdentity::parse(&id.to_header()).unwrap(), id);
    let cf = "cloudfoundry eyANCiAgInVzZXJfaWQiOiAiNjgzZWE3NDgtMzA5Mi00ZmY0LWI2NTYtMzljYWNjNGQ1MzYwIg0KfQ==";
    let parsed = OriginatingIdentity::parse(cf).unwrap();
    assert_eq!(parsed.value["user_id"], "683ea748-3092-4ff4-b656-39cacc4d5360");
    for bad in ["", "deis", " eyJ9", "deis !!!", "deis WzFd"] {
        assert!(OriginatingIdentity::parse(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn bodies_ignore_unknown_fields() {
    let request: BindRequest = serde_json::from_str(
        r#"{"service_id":"s","plan_id":"p","bind_resource":{"app_guid":"a","x-extra":1},"x-vendor":{"k":[1]}}"#,
    )
    .unwrap();
    assert_eq!(request.app(), Some("a"));
    let op: LastOperation = serde_json::from_str(r#"{"state":"in progress","x":1}"#).unwrap();
    assert_eq!(op.state, OperationState::InProgress);
}

mod properties {
    use proptest::prelude::*;

    proptest! {
        /// Distinct ids never share a key (escaping is injective and keeps `/` out).
        #[test]
        fn escaped_ids_are_distinct_and_slash_free(a in "\\PC{1,30}", b in "\\PC{1,30}") {
            let (ea, eb) = (super::super::managed::esc(&a), super::super::managed::esc(&b));
            prop_assert!(!ea.contains('/'));
            prop_assert_eq!(a == b, ea == eb);
        }
    }
}
