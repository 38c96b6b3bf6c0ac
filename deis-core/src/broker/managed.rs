//! [`ManagedBroker`]: the spec's state machine over a [`Backend`], state in a [`Store`].

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::types::*;
use super::{BrokerError, Result, ServiceBroker, check_id};
use crate::store::records::{decode, encode, get_json};
use crate::store::{Store, Txn};
use crate::time::Timestamp;

/// How long the broker remembers a deleted instance or binding, so that polling after
/// an asynchronous delete answers 410 rather than 404.
const TOMBSTONE_TTL: std::time::Duration = std::time::Duration::from_secs(3600);

/// How many times a record update is retried when another writer changed it.
const MAX_ATTEMPTS: usize = 16;

/// The kind of an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperationKind {
    /// Creating an instance.
    Provision,
    /// Changing an instance.
    Update,
    /// Deleting an instance.
    Deprovision,
    /// Creating a binding.
    Bind,
    /// Deleting a binding.
    Unbind,
}

/// Where an instance or binding stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResourceState {
    /// Being created.
    Creating,
    /// Usable.
    Ready,
    /// Being changed.
    Updating,
    /// Being deleted.
    Deleting,
    /// Its asynchronous creation failed; only a delete is accepted.
    Failed,
}

/// The last operation on a resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperationRecord {
    /// Its id (the `operation` of a 202).
    pub id: String,
    /// What it does.
    pub kind: OperationKind,
    /// Where it stands.
    pub state: OperationState,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// The offering and plan an instance or binding is of (stored as the spec's own
/// `service_id` and `plan_id` fields).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanRef {
    /// The offering.
    pub service_id: String,
    /// The plan.
    pub plan_id: String,
}

impl PlanRef {
    /// A bad request unless a request about `what` names this offering and plan.
    fn check(&self, what: &str, service_id: &str, plan_id: &str) -> Result<()> {
        if self.service_id != service_id || self.plan_id != plan_id {
            return Err(BrokerError::BadRequest(format!(
                "{what} is not of service_id {service_id} and plan_id {plan_id}"
            )));
        }
        Ok(())
    }
}

/// What an instance was asked to be: the attributes a repeated provision is compared on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceSpec {
    /// The offering and plan.
    #[serde(flatten)]
    pub plan: PlanRef,
    /// Its parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Object>,
    /// The maintenance version asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance_info: Option<MaintenanceInfo>,
}

/// A stored instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceRecord {
    /// Its id.
    pub id: String,
    /// What it was asked to be.
    pub spec: InstanceSpec,
    /// The platform's context at creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<Value>,
    /// Where it stands.
    pub state: ResourceState,
    /// Its last operation.
    pub operation: OperationRecord,
    /// What the backend keeps about it (names of what it created).
    #[serde(default)]
    pub data: Value,
    /// Its dashboard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dashboard_url: Option<String>,
    /// Who asked for it (`X-Broker-API-Originating-Identity`, decoded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
    /// When it was asked for.
    pub created: Timestamp,
}

/// What a binding was asked to be: the attributes a repeated bind is compared on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BindingSpec {
    /// The offering and plan.
    #[serde(flatten)]
    pub plan: PlanRef,
    /// The app it is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_guid: Option<String>,
    /// Its parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Object>,
}

/// A stored binding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BindingRecord {
    /// Its instance.
    pub instance_id: String,
    /// Its id.
    pub id: String,
    /// What it was asked to be.
    pub spec: BindingSpec,
    /// Where it stands.
    pub state: ResourceState,
    /// Its last operation.
    pub operation: OperationRecord,
    /// The credentials handed out.
    #[serde(default)]
    pub credentials: Object,
    /// What the backend keeps about it.
    #[serde(default)]
    pub data: Value,
    /// Who asked for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
}

/// What a backend made for an instance.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Created {
    /// What to remember about it (handed back on later calls).
    pub data: Value,
    /// Its dashboard, if any.
    pub dashboard_url: Option<String>,
}

/// What a backend made for a binding.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Bound {
    /// The credentials for the app.
    pub credentials: Object,
    /// What to remember about it.
    pub data: Value,
}

/// The part of a broker that touches the real service: create and delete instances and
/// bindings. [`ManagedBroker`] does the rest (the spec's answers, state, operations).
///
/// To ensure correctness: `create_*` may be called again for the same id after a
/// restart interrupted it, and `delete_*` for what is already (partly) gone: both must
/// be idempotent. A failed `create_*` should leave nothing behind.
#[async_trait]
pub trait Backend: Send + Sync + Debug + 'static {
    /// The services and plans offered.
    fn catalog(&self) -> Catalog;

    /// Whether `kind` on plan `plan_id` runs asynchronously (needs
    /// `accepts_incomplete=true`, answered with 202). Updates always run synchronously.
    fn asynchronous(&self, plan_id: &str, kind: OperationKind) -> bool {
        let _ = (plan_id, kind);
        false
    }

    /// Creates the resources of an instance.
    async fn create_instance(&self, id: &str, spec: &InstanceSpec) -> Result<Created>;

    /// Applies a new plan or parameters; returns the new data. By default, changes are
    /// not supported.
    async fn update_instance(&self, instance: &InstanceRecord, new: &InstanceSpec) -> Result<Value> {
        let _ = (instance, new);
        Err(BrokerError::Unprocessable("this service does not support changing an instance".into()))
    }

    /// Deletes the resources of an instance (its bindings are deleted first).
    async fn delete_instance(&self, instance: &InstanceRecord) -> Result<()>;

    /// Creates the credentials of a binding.
    async fn create_binding(&self, instance: &InstanceRecord, id: &str, spec: &BindingSpec) -> Result<Bound>;

    /// Deletes a binding's credentials; what was connected with them stops working.
    async fn delete_binding(&self, instance: &InstanceRecord, binding: &BindingRecord) -> Result<()>;
}

/// A [`ServiceBroker`] over a [`Backend`], with its instances and bindings in a
/// [`Store`] under a prefix (a broker restart loses nothing; operations that were in
/// progress resume in [`ManagedBroker::start`]).
///
/// Keys: `<prefix>instances/<id>`, `<prefix>bindings/<instance>/<id>` and leased
/// tombstones `<prefix>gone/...` (ids escaped: `%` and `/`).
#[derive(Debug, Clone)]
pub struct ManagedBroker {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Arc<dyn Store>,
    prefix: String,
    backend: Arc<dyn Backend>,
    /// Operations running in the background, by resource key (to stop them).
    running: Mutex<HashMap<String, tokio::task::AbortHandle>>,
}

/// Escapes an id for a key segment.
pub(super) fn esc(id: &str) -> String {
    id.replace('%', "%25").replace('/', "%2F")
}

fn new_operation(kind: OperationKind, asynchronous: bool) -> OperationRecord {
    let id = if asynchronous { format!("{kind:?}-{}", uuid::Uuid::new_v4()).to_lowercase() } else { "sync".into() };
    OperationRecord { id, kind, state: OperationState::InProgress, description: None }
}

fn identity(ctx: &RequestContext) -> Option<String> {
    ctx.originating_identity.as_ref().map(|i| format!("{} {}", i.platform, i.value))
}

/// Ids that can't name anything answer as absent (404 on reads, 410 on deletes).
fn absent_if_invalid(instance_id: &str, binding_id: Option<&str>, absent: fn(String) -> BrokerError) -> Result<()> {
    let valid =
        check_id("instance_id", instance_id).is_ok() && binding_id.is_none_or(|b| check_id("binding_id", b).is_ok());
    if valid { Ok(()) } else { Err(absent("no such instance or binding".into())) }
}

fn required(field: &str, value: &str) -> Result<()> {
    if value.is_empty() {
        return Err(BrokerError::BadRequest(format!("{field} is required and must not be empty")));
    }
    Ok(())
}

impl ManagedBroker {
    /// A broker over `backend` keeping its state under `prefix` (e.g.
    /// `brokers/postgresql/`) in `store`; resumes the operations that were in progress.
    pub async fn start(store: Arc<dyn Store>, prefix: impl Into<String>, backend: Arc<dyn Backend>) -> Result<Self> {
        let broker = Self {
            inner: Arc::new(Inner { store, prefix: prefix.into(), backend, running: Mutex::new(HashMap::new()) }),
        };
        broker.resume().await?;
        Ok(broker)
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.inner.backend
    }

    /// Stops the operations running in the background (they resume on the next
    /// [`start`](Self::start) over the same store), as a crash would.
    pub fn stop(&self) {
        for (_, task) in self.inner.running.lock().expect("running table").drain() {
            task.abort();
        }
    }

    /// An instance's stored record.
    pub async fn instance_record(&self, id: &str) -> Result<Option<InstanceRecord>> {
        Ok(get_json(&*self.inner.store, &self.instance_key(id)).await?.map(|(r, _)| r))
    }

    /// A binding's stored record.
    pub async fn binding_record(&self, instance_id: &str, id: &str) -> Result<Option<BindingRecord>> {
        Ok(get_json(&*self.inner.store, &self.binding_key(instance_id, id)).await?.map(|(r, _)| r))
    }

    fn instance_key(&self, id: &str) -> String {
        format!("{}instances/{}", self.inner.prefix, esc(id))
    }
    fn bindings_prefix(&self, instance_id: &str) -> String {
        format!("{}bindings/{}/", self.inner.prefix, esc(instance_id))
    }
    fn binding_key(&self, instance_id: &str, id: &str) -> String {
        format!("{}{}", self.bindings_prefix(instance_id), esc(id))
    }
    fn tombstone(&self, key: &str) -> String {
        format!("{}gone/{}", self.inner.prefix, &key[self.inner.prefix.len()..])
    }

    async fn resume(&self) -> Result<()> {
        let store = &self.inner.store;
        for kv in store.list(&format!("{}instances/", self.inner.prefix)).await?.kvs {
            let record: InstanceRecord = decode(&kv)?;
            match record.state {
                ResourceState::Creating => self.spawn(kv.key, self.clone().run_provision(record.id)),
                ResourceState::Deleting => self.spawn(kv.key, self.clone().run_deprovision(record.id)),
                _ => {}
            }
        }
        for kv in store.list(&format!("{}bindings/", self.inner.prefix)).await?.kvs {
            let record: BindingRecord = decode(&kv)?;
            match record.state {
                ResourceState::Creating => {
                    self.spawn(kv.key, self.clone().run_bind(record.instance_id, record.id));
                }
                ResourceState::Deleting => {
                    self.spawn(kv.key, self.clone().run_unbind(record.instance_id, record.id));
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn spawn(&self, key: String, work: impl Future<Output = Result<()>> + Send + 'static) {
        let inner = Arc::downgrade(&self.inner);
        let k = key.clone();
        let task = tokio::spawn(async move {
            if let Err(e) = work.await {
                tracing::warn!(key = %k, error = %e, "broker operation could not record its outcome");
            }
            if let Some(inner) = inner.upgrade() {
                inner.running.lock().expect("running table").remove(&k);
            }
        });
        self.inner.running.lock().expect("running table").insert(key, task.abort_handle());
    }

    /// Reads, changes and writes back a record (compare-and-swap, retried); `None` when
    /// it does not exist.
    async fn modify<T>(&self, key: &str, change: impl Fn(&mut T)) -> Result<Option<T>>
    where
        T: Serialize + serde::de::DeserializeOwned,
    {
        for _ in 0..MAX_ATTEMPTS {
            let Some((mut record, rev)) = get_json::<T>(&*self.inner.store, key).await? else { return Ok(None) };
            change(&mut record);
            if self.inner.store.compare_and_swap(key, rev, encode(&record)).await? {
                return Ok(Some(record));
            }
        }
        Err(BrokerError::ConcurrencyError)
    }

    /// Deletes a record and leaves a tombstone, so polling answers 410.
    async fn forget(&self, key: &str) -> Result<()> {
        let lease = self.inner.store.grant_lease(TOMBSTONE_TTL).await?;
        self.inner.store.txn(Txn::new().delete(key).put_leased(self.tombstone(key), b"1".to_vec(), lease)).await?;
        Ok(())
    }

    async fn gone_or_not_found(&self, key: &str, what: &str) -> BrokerError {
        match self.inner.store.get(&self.tombstone(key)).await {
            Ok(Some(_)) => BrokerError::Gone(format!("{what} was deleted")),
            Ok(None) => BrokerError::NotFound(format!("{what} does not exist")),
            Err(e) => e.into(),
        }
    }

    fn check_plan(&self, service_id: &str, plan_id: &str) -> Result<(ServiceOffering, ServicePlan)> {
        let catalog = self.inner.backend.catalog();
        let (service, plan) = catalog.plan(service_id, plan_id).ok_or_else(|| {
            BrokerError::BadRequest(format!(
                "service_id {service_id:?} with plan_id {plan_id:?} is not in this broker's catalog"
            ))
        })?;
        Ok((service.clone(), plan.clone()))
    }

    async fn run_provision(self, id: String) -> Result<()> {
        let key = self.instance_key(&id);
        let Some(record) = self.instance_record(&id).await? else { return Ok(()) };
        let sync = record.operation.id == "sync";
        let created = self.inner.backend.create_instance(&id, &record.spec).await;
        if let Err(e) = &created {
            tracing::warn!(instance = %id, error = %e, "provisioning failed");
        }
        self.settle_create(&key, sync, created, |r: &mut InstanceRecord, created| {
            r.data = created.data.clone();
            r.dashboard_url = created.dashboard_url.clone();
        })
        .await
    }

    async fn run_deprovision(self, id: String) -> Result<()> {
        let key = self.instance_key(&id);
        let Some(record) = self.instance_record(&id).await? else { return Ok(()) };
        let sync = record.operation.id == "sync";
        let outcome = async {
            for kv in self.inner.store.list(&self.bindings_prefix(&id)).await?.kvs {
                let binding: BindingRecord = decode(&kv)?;
                self.inner.backend.delete_binding(&record, &binding).await?;
                self.inner.store.delete(&kv.key).await?;
            }
            self.inner.backend.delete_instance(&record).await
        }
        .await;
        match outcome {
            Ok(()) => self.forget(&key).await,
            Err(e) => {
                tracing::warn!(instance = %id, error = %e, "deprovisioning failed");
                self.settle_failed_delete::<InstanceRecord>(&key, sync, e).await
            }
        }
    }

    async fn run_bind(self, instance_id: String, id: String) -> Result<()> {
        let key = self.binding_key(&instance_id, &id);
        let (Some(instance), Some(record)) =
            (self.instance_record(&instance_id).await?, self.binding_record(&instance_id, &id).await?)
        else {
            return Ok(());
        };
        let sync = record.operation.id == "sync";
        let bound = self.inner.backend.create_binding(&instance, &id, &record.spec).await;
        self.settle_create(&key, sync, bound, |r: &mut BindingRecord, bound| {
            r.credentials = bound.credentials.clone();
            r.data = bound.data.clone();
        })
        .await
    }

    async fn run_unbind(self, instance_id: String, id: String) -> Result<()> {
        let key = self.binding_key(&instance_id, &id);
        let (Some(instance), Some(record)) =
            (self.instance_record(&instance_id).await?, self.binding_record(&instance_id, &id).await?)
        else {
            return Ok(());
        };
        let sync = record.operation.id == "sync";
        match self.inner.backend.delete_binding(&instance, &record).await {
            Ok(()) => self.forget(&key).await,
            Err(e) => self.settle_failed_delete::<BindingRecord>(&key, sync, e).await,
        }
    }

    /// Records how a create (provision or bind) ended: ready with what the backend
    /// returned, or failed with why. A synchronous failure is answered as an error and
    /// leaves nothing behind.
    async fn settle_create<R, T>(
        &self,
        key: &str,
        sync: bool,
        outcome: Result<T>,
        fill: impl Fn(&mut R, &T),
    ) -> Result<()>
    where
        R: Tracked + Serialize + serde::de::DeserializeOwned,
    {
        match outcome {
            Ok(made) => {
                self.modify(key, |r: &mut R| {
                    fill(r, &made);
                    *r.state_mut() = ResourceState::Ready;
                    r.operation_mut().state = OperationState::Succeeded;
                })
                .await?;
                Ok(())
            }
            Err(e) if sync => {
                self.inner.store.delete(key).await?;
                Err(e)
            }
            Err(e) => {
                self.mark_failed::<R>(key, ResourceState::Failed, &e).await?;
                Ok(())
            }
        }
    }

    /// Records a failed delete (deprovision or unbind): the resource stays usable and its
    /// operation failed; a synchronous caller gets the error.
    async fn settle_failed_delete<R>(&self, key: &str, sync: bool, e: BrokerError) -> Result<()>
    where
        R: Tracked + Serialize + serde::de::DeserializeOwned,
    {
        self.mark_failed::<R>(key, ResourceState::Ready, &e).await?;
        if sync { Err(e) } else { Ok(()) }
    }

    async fn mark_failed<R>(&self, key: &str, state: ResourceState, e: &BrokerError) -> Result<()>
    where
        R: Tracked + Serialize + serde::de::DeserializeOwned,
    {
        self.modify(key, |r: &mut R| {
            *r.state_mut() = state;
            let op = r.operation_mut();
            op.state = OperationState::Failed;
            op.description = Some(e.to_string());
        })
        .await?;
        Ok(())
    }

    /// Moves a ready (or failed) resource to `Deleting` with a new operation; `false`
    /// when another writer changed it first.
    async fn begin_delete<T: Serialize>(&self, key: &str, rev: u64, record: &T) -> Result<bool> {
        Ok(self.inner.store.compare_and_swap(key, rev, encode(record)).await?)
    }
}

/// A stored resource with a lifecycle state and a last operation (instances, bindings).
trait Tracked {
    fn state_mut(&mut self) -> &mut ResourceState;
    fn operation_mut(&mut self) -> &mut OperationRecord;
}

macro_rules! tracked {
    ($($record:ty),*) => {$(
        impl Tracked for $record {
            fn state_mut(&mut self) -> &mut ResourceState {
                &mut self.state
            }
            fn operation_mut(&mut self) -> &mut OperationRecord {
                &mut self.operation
            }
        }
    )*};
}
tracked!(InstanceRecord, BindingRecord);

fn last_operation(op: &OperationRecord) -> LastOperation {
    let failed_delete = op.state == OperationState::Failed
        && matches!(op.kind, OperationKind::Deprovision | OperationKind::Update | OperationKind::Unbind);
    LastOperation {
        state: op.state,
        description: op.description.clone(),
        instance_usable: (failed_delete && op.kind != OperationKind::Unbind).then_some(true),
        update_repeatable: (op.state == OperationState::Failed && op.kind == OperationKind::Update).then_some(true),
        retry_after: None,
    }
}

fn accepted<T>(body: T) -> Reply<T> {
    Reply::new(Status::Accepted, body)
}

#[async_trait]
impl ServiceBroker for ManagedBroker {
    async fn catalog(&self, _ctx: &RequestContext) -> Result<Catalog> {
        Ok(self.inner.backend.catalog())
    }

    async fn provision(
        &self,
        ctx: &RequestContext,
        instance_id: &str,
        request: ProvisionRequest,
        accepts_incomplete: bool,
    ) -> Result<Reply<ProvisionResponse>> {
        check_id("instance_id", instance_id)?;
        required("service_id", &request.service_id)?;
        required("plan_id", &request.plan_id)?;
        required("organization_guid", &request.organization_guid)?;
        required("space_guid", &request.space_guid)?;
        let (_, plan) = self.check_plan(&request.service_id, &request.plan_id)?;
        if let Some(asked) = &request.maintenance_info
            && plan.maintenance_info.as_ref().map(|m| &m.version) != Some(&asked.version)
        {
            return Err(BrokerError::MaintenanceInfoConflict);
        }
        let asynchronous = self.inner.backend.asynchronous(&plan.id, OperationKind::Provision);
        let spec = InstanceSpec {
            plan: PlanRef { service_id: request.service_id, plan_id: request.plan_id },
            parameters: request.parameters,
            maintenance_info: request.maintenance_info,
        };
        let key = self.instance_key(instance_id);
        for _ in 0..MAX_ATTEMPTS {
            if let Some((existing, _)) = get_json::<InstanceRecord>(&*self.inner.store, &key).await? {
                if existing.spec != spec {
                    return Err(BrokerError::Conflict(format!(
                        "instance {instance_id} exists with different attributes"
                    )));
                }
                return match existing.state {
                    ResourceState::Ready => Ok(Reply::new(
                        Status::Ok,
                        ProvisionResponse { dashboard_url: existing.dashboard_url, ..Default::default() },
                    )),
                    ResourceState::Creating if accepts_incomplete && existing.operation.id != "sync" => {
                        Ok(accepted(ProvisionResponse { operation: Some(existing.operation.id), ..Default::default() }))
                    }
                    ResourceState::Failed => Err(BrokerError::Conflict(format!(
                        "provisioning instance {instance_id} failed; deprovision it before provisioning it again"
                    ))),
                    _ => Err(BrokerError::ConcurrencyError),
                };
            }
            if asynchronous && !accepts_incomplete {
                return Err(BrokerError::AsyncRequired);
            }
            let record = InstanceRecord {
                id: instance_id.to_string(),
                spec: spec.clone(),
                context: request.context.clone(),
                state: ResourceState::Creating,
                operation: new_operation(OperationKind::Provision, asynchronous),
                data: Value::Null,
                dashboard_url: None,
                requested_by: identity(ctx),
                created: Timestamp::now(),
            };
            let txn = Txn::new().when(&key, 0).put(&key, encode(&record)).delete(self.tombstone(&key));
            if !self.inner.store.txn(txn).await?.succeeded {
                continue;
            }
            tracing::info!(instance = %instance_id, plan = %spec.plan.plan_id, requested_by = ?record.requested_by, "provisioning");
            if asynchronous {
                self.spawn(key, self.clone().run_provision(instance_id.to_string()));
                return Ok(accepted(ProvisionResponse { operation: Some(record.operation.id), ..Default::default() }));
            }
            self.clone().run_provision(instance_id.to_string()).await?;
            let done = self.instance_record(instance_id).await?;
            let dashboard_url = done.and_then(|r| r.dashboard_url);
            return Ok(Reply::new(Status::Created, ProvisionResponse { dashboard_url, ..Default::default() }));
        }
        Err(BrokerError::ConcurrencyError)
    }

    async fn update(
        &self,
        _ctx: &RequestContext,
        instance_id: &str,
        request: UpdateRequest,
        _accepts_incomplete: bool,
    ) -> Result<Reply<AsyncResponse>> {
        check_id("instance_id", instance_id)?;
        required("service_id", &request.service_id)?;
        let key = self.instance_key(instance_id);
        let Some((record, rev)) = get_json::<InstanceRecord>(&*self.inner.store, &key).await? else {
            return Err(BrokerError::Unprocessable(format!("instance {instance_id} does not exist")));
        };
        if record.spec.plan.service_id != request.service_id {
            return Err(BrokerError::BadRequest(format!(
                "instance {instance_id} is not of service_id {}",
                request.service_id
            )));
        }
        let plan_id = request.plan_id.clone().unwrap_or_else(|| record.spec.plan.plan_id.clone());
        let (service, plan) = self.check_plan(&request.service_id, &plan_id)?;
        if let Some(asked) = &request.maintenance_info
            && plan.maintenance_info.as_ref().map(|m| &m.version) != Some(&asked.version)
        {
            return Err(BrokerError::MaintenanceInfoConflict);
        }
        match record.state {
            ResourceState::Ready => {}
            ResourceState::Failed => {
                return Err(BrokerError::Unprocessable(format!("instance {instance_id} failed to provision")));
            }
            _ => return Err(BrokerError::ConcurrencyError),
        }
        let new = InstanceSpec {
            plan: PlanRef { service_id: record.spec.plan.service_id.clone(), plan_id: plan.id.clone() },
            parameters: request.parameters.clone().or_else(|| record.spec.parameters.clone()),
            maintenance_info: request.maintenance_info.clone().or_else(|| record.spec.maintenance_info.clone()),
        };
        if new == record.spec {
            return Ok(Reply::new(Status::Ok, AsyncResponse::default()));
        }
        if new.plan.plan_id != record.spec.plan.plan_id
            && !plan.plan_updateable.or(service.plan_updateable).unwrap_or(false)
        {
            return Err(BrokerError::Unprocessable(format!("plan {} does not allow changing plans", plan.name)));
        }
        let mut updating = record.clone();
        updating.state = ResourceState::Updating;
        updating.operation = new_operation(OperationKind::Update, false);
        if !self.inner.store.compare_and_swap(&key, rev, encode(&updating)).await? {
            return Err(BrokerError::ConcurrencyError);
        }
        let outcome = self.inner.backend.update_instance(&record, &new).await;
        self.modify(&key, |r: &mut InstanceRecord| {
            r.state = ResourceState::Ready;
            match &outcome {
                Ok(data) => {
                    r.spec = new.clone();
                    r.data = data.clone();
                    r.operation.state = OperationState::Succeeded;
                }
                Err(e) => {
                    r.operation.state = OperationState::Failed;
                    r.operation.description = Some(e.to_string());
                }
            }
        })
        .await?;
        outcome.map(|_| Reply::new(Status::Ok, AsyncResponse { dashboard_url: record.dashboard_url, operation: None }))
    }

    async fn deprovision(
        &self,
        ctx: &RequestContext,
        instance_id: &str,
        request: DeleteRequest,
        accepts_incomplete: bool,
    ) -> Result<Reply<AsyncResponse>> {
        absent_if_invalid(instance_id, None, BrokerError::Gone)?;
        required("service_id", &request.service_id)?;
        required("plan_id", &request.plan_id)?;
        let key = self.instance_key(instance_id);
        let Some((record, rev)) = get_json::<InstanceRecord>(&*self.inner.store, &key).await? else {
            return Err(BrokerError::Gone(format!("instance {instance_id} does not exist")));
        };
        record.spec.plan.check(&format!("instance {instance_id}"), &request.service_id, &request.plan_id)?;
        match record.state {
            ResourceState::Deleting if accepts_incomplete && record.operation.id != "sync" => {
                return Ok(accepted(AsyncResponse { operation: Some(record.operation.id), dashboard_url: None }));
            }
            ResourceState::Ready | ResourceState::Failed => {}
            _ => return Err(BrokerError::ConcurrencyError),
        }
        let bindings = self.inner.store.list(&self.bindings_prefix(instance_id)).await?.kvs;
        for kv in &bindings {
            if decode::<BindingRecord>(kv)?.state != ResourceState::Ready {
                return Err(BrokerError::ConcurrencyError);
            }
        }
        let asynchronous = self.inner.backend.asynchronous(&record.spec.plan.plan_id, OperationKind::Deprovision);
        if asynchronous && !accepts_incomplete {
            return Err(BrokerError::AsyncRequired);
        }
        let mut deleting = record;
        deleting.state = ResourceState::Deleting;
        deleting.operation = new_operation(OperationKind::Deprovision, asynchronous);
        if !self.begin_delete(&key, rev, &deleting).await? {
            return Err(BrokerError::ConcurrencyError);
        }
        tracing::info!(instance = %instance_id, requested_by = ?identity(ctx), "deprovisioning");
        if asynchronous {
            self.spawn(key, self.clone().run_deprovision(instance_id.to_string()));
            return Ok(accepted(AsyncResponse { operation: Some(deleting.operation.id), dashboard_url: None }));
        }
        self.clone().run_deprovision(instance_id.to_string()).await?;
        Ok(Reply::new(Status::Ok, AsyncResponse::default()))
    }

    async fn instance(&self, _ctx: &RequestContext, instance_id: &str) -> Result<InstanceResponse> {
        absent_if_invalid(instance_id, None, BrokerError::NotFound)?;
        let record = self.instance_record(instance_id).await?;
        match record {
            Some(r) if matches!(r.state, ResourceState::Ready | ResourceState::Deleting) => Ok(InstanceResponse {
                service_id: Some(r.spec.plan.service_id),
                plan_id: Some(r.spec.plan.plan_id),
                dashboard_url: r.dashboard_url,
                parameters: r.spec.parameters,
                maintenance_info: r.spec.maintenance_info,
                metadata: None,
            }),
            Some(r) if r.state == ResourceState::Updating => Err(BrokerError::ConcurrencyError),
            _ => Err(BrokerError::NotFound(format!("instance {instance_id} does not exist or is being provisioned"))),
        }
    }

    async fn last_operation(
        &self,
        _ctx: &RequestContext,
        instance_id: &str,
        _request: PollRequest,
    ) -> Result<LastOperation> {
        absent_if_invalid(instance_id, None, BrokerError::NotFound)?;
        match self.instance_record(instance_id).await? {
            Some(r) => Ok(last_operation(&r.operation)),
            None => {
                Err(self.gone_or_not_found(&self.instance_key(instance_id), &format!("instance {instance_id}")).await)
            }
        }
    }

    async fn bind(
        &self,
        ctx: &RequestContext,
        instance_id: &str,
        binding_id: &str,
        request: BindRequest,
        accepts_incomplete: bool,
    ) -> Result<Reply<BindingResponse>> {
        check_id("instance_id", instance_id)?;
        check_id("binding_id", binding_id)?;
        required("service_id", &request.service_id)?;
        required("plan_id", &request.plan_id)?;
        let (service, plan) = self.check_plan(&request.service_id, &request.plan_id)?;
        if !plan.is_bindable(&service) {
            return Err(BrokerError::BadRequest(format!("plan {} is not bindable", plan.name)));
        }
        let Some(instance) = self.instance_record(instance_id).await? else {
            return Err(BrokerError::Unprocessable(format!("instance {instance_id} does not exist")));
        };
        instance.spec.plan.check(&format!("instance {instance_id}"), &request.service_id, &request.plan_id)?;
        if instance.state != ResourceState::Ready {
            return Err(BrokerError::ConcurrencyError);
        }
        let spec = BindingSpec {
            plan: PlanRef { service_id: request.service_id.clone(), plan_id: request.plan_id.clone() },
            app_guid: request.app().map(str::to_string),
            parameters: request.parameters.clone(),
        };
        let asynchronous = self.inner.backend.asynchronous(&plan.id, OperationKind::Bind);
        let key = self.binding_key(instance_id, binding_id);
        for _ in 0..MAX_ATTEMPTS {
            if let Some((existing, _)) = get_json::<BindingRecord>(&*self.inner.store, &key).await? {
                if existing.spec != spec {
                    return Err(BrokerError::Conflict(format!(
                        "binding {binding_id} exists with different attributes"
                    )));
                }
                return match existing.state {
                    ResourceState::Ready => Ok(Reply::new(
                        Status::Ok,
                        BindingResponse { credentials: Some(existing.credentials), ..Default::default() },
                    )),
                    ResourceState::Creating if accepts_incomplete && existing.operation.id != "sync" => {
                        Ok(accepted(BindingResponse { operation: Some(existing.operation.id), ..Default::default() }))
                    }
                    ResourceState::Failed => Err(BrokerError::Conflict(format!(
                        "creating binding {binding_id} failed; unbind it before binding again"
                    ))),
                    _ => Err(BrokerError::ConcurrencyError),
                };
            }
            if asynchronous && !accepts_incomplete {
                return Err(BrokerError::AsyncRequired);
            }
            let record = BindingRecord {
                instance_id: instance_id.to_string(),
                id: binding_id.to_string(),
                spec: spec.clone(),
                state: ResourceState::Creating,
                operation: new_operation(OperationKind::Bind, asynchronous),
                credentials: Object::new(),
                data: Value::Null,
                requested_by: identity(ctx),
            };
            let txn = Txn::new().when(&key, 0).put(&key, encode(&record)).delete(self.tombstone(&key));
            if !self.inner.store.txn(txn).await?.succeeded {
                continue;
            }
            tracing::info!(instance = %instance_id, binding = %binding_id, requested_by = ?record.requested_by, "binding");
            let (i, b) = (instance_id.to_string(), binding_id.to_string());
            if asynchronous {
                self.spawn(key, self.clone().run_bind(i, b));
                return Ok(accepted(BindingResponse { operation: Some(record.operation.id), ..Default::default() }));
            }
            self.clone().run_bind(i, b).await?;
            let credentials = self.binding_record(instance_id, binding_id).await?.map(|r| r.credentials);
            return Ok(Reply::new(Status::Created, BindingResponse { credentials, ..Default::default() }));
        }
        Err(BrokerError::ConcurrencyError)
    }

    async fn unbind(
        &self,
        ctx: &RequestContext,
        instance_id: &str,
        binding_id: &str,
        request: DeleteRequest,
        accepts_incomplete: bool,
    ) -> Result<Reply<AsyncResponse>> {
        absent_if_invalid(instance_id, Some(binding_id), BrokerError::Gone)?;
        required("service_id", &request.service_id)?;
        required("plan_id", &request.plan_id)?;
        let key = self.binding_key(instance_id, binding_id);
        let Some((record, rev)) = get_json::<BindingRecord>(&*self.inner.store, &key).await? else {
            return Err(BrokerError::Gone(format!("binding {binding_id} of instance {instance_id} does not exist")));
        };
        record.spec.plan.check(&format!("binding {binding_id}"), &request.service_id, &request.plan_id)?;
        match record.state {
            ResourceState::Deleting if accepts_incomplete && record.operation.id != "sync" => {
                return Ok(accepted(AsyncResponse { operation: Some(record.operation.id), dashboard_url: None }));
            }
            ResourceState::Ready | ResourceState::Failed => {}
            _ => return Err(BrokerError::ConcurrencyError),
        }
        let asynchronous = self.inner.backend.asynchronous(&record.spec.plan.plan_id, OperationKind::Unbind);
        if asynchronous && !accepts_incomplete {
            return Err(BrokerError::AsyncRequired);
        }
        let mut deleting = record;
        deleting.state = ResourceState::Deleting;
        deleting.operation = new_operation(OperationKind::Unbind, asynchronous);
        if !self.begin_delete(&key, rev, &deleting).await? {
            return Err(BrokerError::ConcurrencyError);
        }
        tracing::info!(instance = %instance_id, binding = %binding_id, requested_by = ?identity(ctx), "unbinding");
        let (i, b) = (instance_id.to_string(), binding_id.to_string());
        if asynchronous {
            self.spawn(key, self.clone().run_unbind(i, b));
            return Ok(accepted(AsyncResponse { operation: Some(deleting.operation.id), dashboard_url: None }));
        }
        self.clone().run_unbind(i, b).await?;
        Ok(Reply::new(Status::Ok, AsyncResponse::default()))
    }

    async fn binding(&self, _ctx: &RequestContext, instance_id: &str, binding_id: &str) -> Result<BindingResponse> {
        absent_if_invalid(instance_id, Some(binding_id), BrokerError::NotFound)?;
        match self.binding_record(instance_id, binding_id).await? {
            Some(r) if matches!(r.state, ResourceState::Ready | ResourceState::Deleting) => Ok(BindingResponse {
                credentials: Some(r.credentials),
                parameters: r.spec.parameters,
                ..Default::default()
            }),
            _ => Err(BrokerError::NotFound(format!("binding {binding_id} does not exist or is being created"))),
        }
    }

    async fn binding_last_operation(
        &self,
        _ctx: &RequestContext,
        instance_id: &str,
        binding_id: &str,
        _request: PollRequest,
    ) -> Result<LastOperation> {
        absent_if_invalid(instance_id, Some(binding_id), BrokerError::NotFound)?;
        match self.binding_record(instance_id, binding_id).await? {
            Some(r) => Ok(last_operation(&r.operation)),
            None => {
                let key = self.binding_key(instance_id, binding_id);
                Err(self.gone_or_not_found(&key, &format!("binding {binding_id}")).await)
            }
        }
    }
}
