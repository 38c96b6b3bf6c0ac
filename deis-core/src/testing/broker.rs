//! Conformance suite of the `ServiceBroker` trait.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::run_cases;
use crate::broker::{
    BindRequest, BindResource, BrokerError, DeleteRequest, LastOperation, Object, OperationState, PollRequest,
    ProvisionRequest, RequestContext, ServiceBroker, Status,
};

/// How long the suite waits for an asynchronous operation.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(60);

/// What [`broker_suite`] needs to know about the broker under test.
#[async_trait]
pub trait BrokerHarness: Send + Sync {
    /// The `(service_id, plan_id)` the suite provisions.
    fn plan(&self) -> (String, String);

    /// The parameters of a provision (`None`: none).
    fn parameters(&self) -> Option<Object> {
        None
    }

    /// Whether each binding gets credentials of its own (a user-provided service hands
    /// out the same ones).
    fn distinct_credentials(&self) -> bool {
        true
    }

    /// Whether these credentials let a client in now (connect to the database, ...);
    /// `None` (the default): can't tell. A backend with real credentials checks, so
    /// the suite sees that a binding works and that an unbind revokes it.
    async fn credentials_work(&self, credentials: &Object) -> Option<bool> {
        let _ = credentials;
        None
    }
}

/// A harness for a plan, trusting credentials (see [`BrokerHarness`]).
#[derive(Debug, Clone)]
pub struct PlanHarness {
    /// The offering.
    pub service_id: String,
    /// The plan.
    pub plan_id: String,
    /// Provision parameters.
    pub parameters: Option<Object>,
    /// See [`BrokerHarness::distinct_credentials`].
    pub distinct_credentials: bool,
}

#[async_trait]
impl BrokerHarness for PlanHarness {
    fn plan(&self) -> (String, String) {
        (self.service_id.clone(), self.plan_id.clone())
    }
    fn parameters(&self) -> Option<Object> {
        self.parameters.clone()
    }
    fn distinct_credentials(&self) -> bool {
        self.distinct_credentials
    }
}

/// Runs every conformance case of [`ServiceBroker`] against fresh brokers from `make`
/// (see the [module docs](super) for the shape), provisioning the harness's plan.
/// Cases use instance and binding ids of their own, so one broker may serve them all.
///
/// Panics (failing the calling test) with the case's name and what went wrong.
pub async fn broker_suite(make: impl AsyncFn() -> Arc<dyn ServiceBroker>, harness: &dyn BrokerHarness) {
    run_cases!(
        "broker",
        [
            catalog_is_valid,
            lifecycle,
            identical_repeats_answer_200,
            conflicting_repeats_answer_409,
            absent_resources,
            refused_requests_change_nothing,
            async_only_plans_require_accepts_incomplete,
            bindings_are_separate,
        ],
        |case| case(make().await, harness).await
    );
}

fn ctx() -> RequestContext {
    RequestContext::on_behalf_of(crate::broker::OriginatingIdentity::deis_user("conformance"))
}

fn id(what: &str) -> String {
    format!("conformance-{what}-{}", uuid::Uuid::new_v4())
}

fn provision_request(h: &dyn BrokerHarness) -> ProvisionRequest {
    let (service_id, plan_id) = h.plan();
    ProvisionRequest {
        service_id,
        plan_id,
        context: Some(serde_json::json!({ "platform": "deis" })),
        organization_guid: "deis".into(),
        space_guid: "conformance".into(),
        parameters: h.parameters(),
        maintenance_info: None,
    }
}

fn bind_request(h: &dyn BrokerHarness, app: &str) -> BindRequest {
    let (service_id, plan_id) = h.plan();
    BindRequest {
        service_id,
        plan_id,
        bind_resource: Some(BindResource { app_guid: Some(app.into()), route: None }),
        ..BindRequest::default()
    }
}

fn delete_request(h: &dyn BrokerHarness) -> DeleteRequest {
    let (service_id, plan_id) = h.plan();
    DeleteRequest { service_id, plan_id }
}

/// Polls until the operation is done; returns its final state.
async fn wait_done(what: &str, mut poll: impl AsyncFnMut() -> Result<LastOperation, BrokerError>) -> LastOperation {
    let deadline = Instant::now() + OPERATION_TIMEOUT;
    loop {
        match poll().await {
            Ok(op) if op.state != OperationState::InProgress => return op,
            Ok(_) => {}
            Err(e) => panic!("{what}: polling failed: {e}"),
        }
        assert!(Instant::now() < deadline, "{what}: still in progress after {OPERATION_TIMEOUT:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Provisions `instance` (asynchronously if the broker likes) and waits until it is.
async fn provision(b: &dyn ServiceBroker, h: &dyn BrokerHarness, instance: &str) {
    let reply = b.provision(&ctx(), instance, provision_request(h), true).await.expect("provision");
    match reply.status {
        Status::Created => {}
        Status::Accepted => {
            let operation = reply.body.operation.clone();
            let poll = PollRequest { operation, ..PollRequest::default() };
            let done = wait_done("provision", async || b.last_operation(&ctx(), instance, poll.clone()).await).await;
            assert_eq!(done.state, OperationState::Succeeded, "provision failed: {:?}", done.description);
        }
        Status::Ok => panic!("a new instance answered 200, not 201 or 202"),
    }
}

/// Binds and returns the credentials.
async fn bind(b: &dyn ServiceBroker, h: &dyn BrokerHarness, instance: &str, binding: &str, app: &str) -> Object {
    let reply = b.bind(&ctx(), instance, binding, bind_request(h, app), true).await.expect("bind");
    match reply.status {
        Status::Created => reply.body.credentials.expect("a binding's credentials"),
        Status::Accepted => {
            assert!(reply.body.credentials.is_none(), "a 202 to bind must not carry credentials");
            let poll = PollRequest { operation: reply.body.operation.clone(), ..PollRequest::default() };
            let done =
                wait_done("bind", async || b.binding_last_operation(&ctx(), instance, binding, poll.clone()).await)
                    .await;
            assert_eq!(done.state, OperationState::Succeeded, "bind failed: {:?}", done.description);
            b.binding(&ctx(), instance, binding).await.expect("fetching the binding").credentials.expect("credentials")
        }
        Status::Ok => panic!("a new binding answered 200, not 201 or 202"),
    }
}

async fn unbind(b: &dyn ServiceBroker, h: &dyn BrokerHarness, instance: &str, binding: &str) {
    let reply = b.unbind(&ctx(), instance, binding, delete_request(h), true).await.expect("unbind");
    if reply.status == Status::Accepted {
        let poll = PollRequest { operation: reply.body.operation, ..PollRequest::default() };
        let done = async || match b.binding_last_operation(&ctx(), instance, binding, poll.clone()).await {
            Err(BrokerError::Gone(_)) => Ok(LastOperation::new(OperationState::Succeeded)),
            other => other,
        };
        assert_eq!(wait_done("unbind", done).await.state, OperationState::Succeeded);
    } else {
        assert_eq!(reply.status, Status::Ok, "unbind answers 200 or 202");
    }
}

async fn deprovision(b: &dyn ServiceBroker, h: &dyn BrokerHarness, instance: &str) {
    let reply = b.deprovision(&ctx(), instance, delete_request(h), true).await.expect("deprovision");
    if reply.status == Status::Accepted {
        let poll = PollRequest { operation: reply.body.operation, ..PollRequest::default() };
        let deadline = Instant::now() + OPERATION_TIMEOUT;
        // Done when polling answers 410 (or a final state).
        loop {
            match b.last_operation(&ctx(), instance, poll.clone()).await {
                Err(BrokerError::Gone(_)) => break,
                Ok(op) if op.state == OperationState::Succeeded => break,
                Ok(op) if op.state == OperationState::Failed => panic!("deprovision failed: {:?}", op.description),
                Ok(_) => {}
                Err(e) => panic!("polling a deprovision: {e}"),
            }
            assert!(Instant::now() < deadline, "deprovision still in progress after {OPERATION_TIMEOUT:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    } else {
        assert_eq!(reply.status, Status::Ok, "deprovision answers 200 or 202");
    }
}

fn expect_err<T: std::fmt::Debug>(
    what: &str,
    r: Result<T, BrokerError>,
    want: fn(&BrokerError) -> bool,
) -> BrokerError {
    match r {
        Err(e) if want(&e) => e,
        other => panic!("{what}: unexpected answer {other:?}"),
    }
}

async fn catalog_is_valid(b: Arc<dyn ServiceBroker>, h: &dyn BrokerHarness) {
    let catalog = b.catalog(&RequestContext::default()).await.expect("catalog");
    assert!(!catalog.services.is_empty(), "the catalog offers nothing");
    let mut ids = std::collections::HashSet::new();
    for s in &catalog.services {
        assert!(!s.name.is_empty() && !s.id.is_empty() && !s.description.is_empty(), "offering {s:?}");
        assert!(!s.plans.is_empty(), "offering {} has no plan", s.name);
        assert!(ids.insert(s.id.clone()), "offering id {} is not unique", s.id);
        for p in &s.plans {
            assert!(!p.name.is_empty() && !p.id.is_empty() && !p.description.is_empty(), "plan {p:?}");
            assert!(ids.insert(p.id.clone()), "plan id {} is not unique", p.id);
        }
    }
    let (service_id, plan_id) = h.plan();
    assert!(catalog.plan(&service_id, &plan_id).is_some(), "the harness's plan is not in the catalog");
    // The wire form round-trips and ignores unknown fields.
    let mut json = serde_json::to_value(&catalog).expect("catalog serialises");
    json["x-unknown"] = serde_json::json!(true);
    let again: crate::broker::Catalog = serde_json::from_value(json).expect("catalog with an unknown field");
    assert_eq!(again, catalog);
}

async fn lifecycle(b: Arc<dyn ServiceBroker>, h: &dyn BrokerHarness) {
    let (instance, binding) = (id("instance"), id("binding"));
    provision(&*b, h, &instance).await;
    let fetched = b.instance(&ctx(), &instance).await.expect("fetching the instance");
    assert_eq!(fetched.plan_id, Some(h.plan().1), "fetched instance's plan");
    let credentials = bind(&*b, h, &instance, &binding, "app-1").await;
    assert_ne!(h.credentials_work(&credentials).await, Some(false), "the binding's credentials do not work");
    let fetched = b.binding(&ctx(), &instance, &binding).await.expect("fetching the binding");
    assert_eq!(fetched.credentials.as_ref(), Some(&credentials), "fetched credentials differ");
    unbind(&*b, h, &instance, &binding).await;
    assert_ne!(h.credentials_work(&credentials).await, Some(true), "credentials still work after unbind");
    expect_err("unbind again", b.unbind(&ctx(), &instance, &binding, delete_request(h), true).await, |e| {
        matches!(e, BrokerError::Gone(_))
    });
    deprovision(&*b, h, &instance).await;
    expect_err("deprovision again", b.deprovision(&ctx(), &instance, delete_request(h), true).await, |e| {
        matches!(e, BrokerError::Gone(_))
    });
    expect_err("fetch after deprovision", b.instance(&ctx(), &instance).await, |e| {
        matches!(e, BrokerError::NotFound(_))
    });
}

async fn identical_repeats_answer_200(b: Arc<dyn ServiceBroker>, h: &dyn BrokerHarness) {
    let (instance, binding) = (id("instance"), id("binding"));
    provision(&*b, h, &instance).await;
    let again = b.provision(&ctx(), &instance, provision_request(h), true).await.expect("identical provision");
    assert_eq!(again.status, Status::Ok, "an identical provision of a ready instance");
    let credentials = bind(&*b, h, &instance, &binding, "app-1").await;
    let again = b.bind(&ctx(), &instance, &binding, bind_request(h, "app-1"), true).await.expect("identical bind");
    assert_eq!(again.status, Status::Ok, "an identical bind of a ready binding");
    assert_eq!(again.body.credentials.as_ref(), Some(&credentials), "an identical bind hands out the same credentials");
    unbind(&*b, h, &instance, &binding).await;
    deprovision(&*b, h, &instance).await;
}

async fn conflicting_repeats_answer_409(b: Arc<dyn ServiceBroker>, h: &dyn BrokerHarness) {
    let (instance, binding) = (id("instance"), id("binding"));
    provision(&*b, h, &instance).await;
    let mut other = provision_request(h);
    other.parameters.get_or_insert_default().insert("x-conformance-other".into(), serde_json::json!(1));
    expect_err("provision with other parameters", b.provision(&ctx(), &instance, other, true).await, |e| {
        matches!(e, BrokerError::Conflict(_))
    });
    bind(&*b, h, &instance, &binding, "app-1").await;
    expect_err(
        "bind for another app",
        b.bind(&ctx(), &instance, &binding, bind_request(h, "app-2"), true).await,
        |e| matches!(e, BrokerError::Conflict(_)),
    );
    // The refused repeats changed nothing: the first attributes still hold.
    let again = b.provision(&ctx(), &instance, provision_request(h), true).await.expect("identical provision");
    assert_eq!(again.status, Status::Ok);
    unbind(&*b, h, &instance, &binding).await;
    deprovision(&*b, h, &instance).await;
}

async fn absent_resources(b: Arc<dyn ServiceBroker>, h: &dyn BrokerHarness) {
    let (instance, binding) = (id("absent"), id("absent"));
    expect_err("deprovision absent", b.deprovision(&ctx(), &instance, delete_request(h), true).await, |e| {
        matches!(e, BrokerError::Gone(_))
    });
    expect_err("unbind absent", b.unbind(&ctx(), &instance, &binding, delete_request(h), true).await, |e| {
        matches!(e, BrokerError::Gone(_))
    });
    expect_err("fetch absent instance", b.instance(&ctx(), &instance).await, |e| matches!(e, BrokerError::NotFound(_)));
    expect_err("fetch absent binding", b.binding(&ctx(), &instance, &binding).await, |e| {
        matches!(e, BrokerError::NotFound(_))
    });
    expect_err("poll absent instance", b.last_operation(&ctx(), &instance, PollRequest::default()).await, |e| {
        matches!(e, BrokerError::NotFound(_))
    });
    expect_err(
        "bind to an absent instance",
        b.bind(&ctx(), &instance, &binding, bind_request(h, "a"), true).await,
        |e| e.is_client_error(),
    );
}

async fn refused_requests_change_nothing(b: Arc<dyn ServiceBroker>, h: &dyn BrokerHarness) {
    let instance = id("refused");
    let mut unknown = provision_request(h);
    unknown.plan_id = "no-such-plan".into();
    expect_err("unknown plan", b.provision(&ctx(), &instance, unknown, true).await, |e| {
        matches!(e, BrokerError::BadRequest(_))
    });
    let mut missing = provision_request(h);
    missing.organization_guid.clear();
    expect_err("missing organization_guid", b.provision(&ctx(), &instance, missing, true).await, |e| {
        matches!(e, BrokerError::BadRequest(_))
    });
    let mut maintenance = provision_request(h);
    maintenance.maintenance_info =
        Some(crate::broker::MaintenanceInfo { version: "0.0.0-none".into(), description: None });
    expect_err("other maintenance version", b.provision(&ctx(), &instance, maintenance, true).await, |e| {
        matches!(e, BrokerError::MaintenanceInfoConflict)
    });
    expect_err("after refusals the instance", b.deprovision(&ctx(), &instance, delete_request(h), true).await, |e| {
        matches!(e, BrokerError::Gone(_))
    });
    // A provision after the refusals is a first one.
    provision(&*b, h, &instance).await;
    let mut wrong = delete_request(h);
    wrong.plan_id = "no-such-plan".into();
    expect_err("deprovision naming another plan", b.deprovision(&ctx(), &instance, wrong, true).await, |e| {
        matches!(e, BrokerError::BadRequest(_))
    });
    b.instance(&ctx(), &instance).await.expect("the instance is still there after a refused deprovision");
    deprovision(&*b, h, &instance).await;
}

async fn async_only_plans_require_accepts_incomplete(b: Arc<dyn ServiceBroker>, h: &dyn BrokerHarness) {
    let instance = id("sync");
    match b.provision(&ctx(), &instance, provision_request(h), false).await {
        Ok(reply) => {
            assert_eq!(reply.status, Status::Created, "without accepts_incomplete a provision is done at once");
            b.instance(&ctx(), &instance).await.expect("a synchronously provisioned instance exists");
            deprovision(&*b, h, &instance).await;
        }
        Err(BrokerError::AsyncRequired) => {
            assert_eq!(
                BrokerError::AsyncRequired.body().description.as_deref(),
                Some(crate::broker::ASYNC_REQUIRED_DESCRIPTION)
            );
            expect_err("the refused instance", b.deprovision(&ctx(), &instance, delete_request(h), true).await, |e| {
                matches!(e, BrokerError::Gone(_))
            });
        }
        Err(e) => panic!("provision without accepts_incomplete: {e}"),
    }
}

async fn bindings_are_separate(b: Arc<dyn ServiceBroker>, h: &dyn BrokerHarness) {
    let (instance, one, two) = (id("instance"), id("binding"), id("binding"));
    provision(&*b, h, &instance).await;
    let first = bind(&*b, h, &instance, &one, "app-1").await;
    let second = bind(&*b, h, &instance, &two, "app-2").await;
    if h.distinct_credentials() {
        assert_ne!(first, second, "two bindings share credentials");
    }
    unbind(&*b, h, &instance, &one).await;
    assert_ne!(h.credentials_work(&second).await, Some(false), "unbinding one binding revoked another");
    // Deprovision with a binding left deletes it too.
    deprovision(&*b, h, &instance).await;
    assert_ne!(h.credentials_work(&second).await, Some(true), "credentials work after deprovision");
}

/// A [`Backend`](crate::broker::Backend) in memory for tests of what drives brokers
/// (servers, clients, the platform): service `memory` with plans `sync` (everything
/// synchronous) and `async` (provision, bind and deprovision asynchronous). Each binding
/// gets credentials of its own (`{"uri": "memory://<binding>/<n>"}`); while
/// [`hold`](Self::hold) is set, asynchronous provisions never finish; while
/// [`fail`](Self::fail) is set, provisions fail.
#[derive(Debug, Default)]
pub struct MemoryBackend {
    /// Provisions wait while set (as if the broker were stuck or killed).
    pub hold: std::sync::atomic::AtomicBool,
    /// Provisions fail while set.
    pub fail: std::sync::atomic::AtomicBool,
    /// How many instances were deleted.
    pub deleted_instances: std::sync::atomic::AtomicUsize,
    /// How many bindings were deleted.
    pub deleted_bindings: std::sync::atomic::AtomicUsize,
    counter: std::sync::atomic::AtomicUsize,
}

impl MemoryBackend {
    /// The service id.
    pub const SERVICE_ID: &str = "memory-service";
    /// The id of plan `sync`.
    pub const SYNC_PLAN_ID: &str = "memory-plan-sync";
    /// The id of plan `async`.
    pub const ASYNC_PLAN_ID: &str = "memory-plan-async";

    /// A backend whose provisions wait until [`hold`](Self::hold) is cleared.
    pub fn holding() -> Self {
        let backend = Self::default();
        backend.hold.store(true, std::sync::atomic::Ordering::SeqCst);
        backend
    }

    /// A harness for one of its plans.
    pub fn harness(plan_id: &str) -> PlanHarness {
        PlanHarness {
            service_id: Self::SERVICE_ID.into(),
            plan_id: plan_id.into(),
            parameters: None,
            distinct_credentials: true,
        }
    }
}

#[async_trait]
impl crate::broker::Backend for MemoryBackend {
    fn catalog(&self) -> crate::broker::Catalog {
        use crate::broker::{ServiceOffering, ServicePlan};
        let plan = |id: &str, name: &str| ServicePlan {
            id: id.into(),
            name: name.into(),
            description: format!("in memory, {name}"),
            maximum_polling_duration: Some(60),
            ..ServicePlan::default()
        };
        crate::broker::Catalog {
            services: vec![ServiceOffering {
                name: "memory".into(),
                id: Self::SERVICE_ID.into(),
                description: "Nothing real: for tests".into(),
                bindable: true,
                plans: vec![plan(Self::SYNC_PLAN_ID, "sync"), plan(Self::ASYNC_PLAN_ID, "async")],
                ..ServiceOffering::default()
            }],
        }
    }

    fn asynchronous(&self, plan_id: &str, kind: crate::broker::OperationKind) -> bool {
        use crate::broker::OperationKind::*;
        plan_id == Self::ASYNC_PLAN_ID && matches!(kind, Provision | Bind | Deprovision)
    }

    async fn create_instance(
        &self,
        _id: &str,
        _spec: &crate::broker::InstanceSpec,
    ) -> crate::broker::Result<crate::broker::Created> {
        use std::sync::atomic::Ordering::SeqCst;
        while self.hold.load(SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if self.fail.load(SeqCst) {
            return Err(BrokerError::Backend("the memory backend was told to fail".into()));
        }
        Ok(crate::broker::Created::default())
    }

    async fn delete_instance(&self, _instance: &crate::broker::InstanceRecord) -> crate::broker::Result<()> {
        self.deleted_instances.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    async fn create_binding(
        &self,
        _instance: &crate::broker::InstanceRecord,
        id: &str,
        _spec: &crate::broker::BindingSpec,
    ) -> crate::broker::Result<crate::broker::Bound> {
        let n = self.counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let mut credentials = Object::new();
        credentials.insert("uri".into(), serde_json::Value::String(format!("memory://{id}/{n}")));
        Ok(crate::broker::Bound { credentials, data: serde_json::Value::Null })
    }

    async fn delete_binding(
        &self,
        _instance: &crate::broker::InstanceRecord,
        _binding: &crate::broker::BindingRecord,
    ) -> crate::broker::Result<()> {
        self.deleted_bindings.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
}
