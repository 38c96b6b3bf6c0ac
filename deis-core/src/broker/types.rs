//! The JSON bodies of the Open Service Broker API v2.17, request and response.
//!
//! Every type ignores fields it does not know (the spec's vendor extension rule) and
//! leaves out optional fields that are unset, so what we send is what the spec shows.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A JSON object (parameters, credentials).
pub type Object = Map<String, Value>;

/// The API version this crate speaks (`X-Broker-API-Version`).
pub const API_VERSION: &str = "2.17";

/// The longest `operation` string the spec allows.
pub const MAX_OPERATION_CHARS: usize = 10_000;

/// `GET /v2/catalog`: the services a broker offers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Catalog {
    /// The service offerings.
    pub services: Vec<ServiceOffering>,
}

impl Catalog {
    /// The offering with this id and its plan with this id, if both exist.
    pub fn plan(&self, service_id: &str, plan_id: &str) -> Option<(&ServiceOffering, &ServicePlan)> {
        let service = self.services.iter().find(|s| s.id == service_id)?;
        Some((service, service.plans.iter().find(|p| p.id == plan_id)?))
    }

    /// The offering with this name and its plan with this name, if both exist.
    pub fn plan_by_name(&self, service: &str, plan: &str) -> Option<(&ServiceOffering, &ServicePlan)> {
        let service = self.services.iter().find(|s| s.name == service)?;
        Some((service, service.plans.iter().find(|p| p.name == plan)?))
    }
}

/// A service offering of the catalog.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceOffering {
    /// CLI-friendly name, unique in the catalog.
    pub name: String,
    /// Globally unique id.
    pub id: String,
    /// A short description.
    pub description: String,
    /// Classification tags (`postgresql`, `relational`, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Permissions the service needs (`syslog_drain`, `route_forwarding`, `volume_mount`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requires: Vec<String>,
    /// Whether instances can be bound (plans may override).
    pub bindable: bool,
    /// Whether `GET /v2/service_instances/:id` is supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instances_retrievable: Option<bool>,
    /// Whether `GET .../service_bindings/:id` is supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bindings_retrievable: Option<bool>,
    /// Whether context-only updates are accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_context_updates: Option<bool>,
    /// Opaque metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    /// Cloud Foundry's dashboard SSO client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dashboard_client: Option<Value>,
    /// Whether plans can be changed by an update (the spec's spelling).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_updateable: Option<bool>,
    /// The plans (at least one).
    pub plans: Vec<ServicePlan>,
}

/// A plan of a service offering.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServicePlan {
    /// Globally unique id.
    pub id: String,
    /// CLI-friendly name, unique in its offering.
    pub name: String,
    /// A short description.
    pub description: String,
    /// Opaque metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    /// Whether it is free (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free: Option<bool>,
    /// Overrides the offering's `bindable`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bindable: Option<bool>,
    /// Whether bindings can be rotated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binding_rotatable: Option<bool>,
    /// Overrides the offering's `plan_updateable`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_updateable: Option<bool>,
    /// JSON schemas of parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schemas: Option<Value>,
    /// How long, in seconds, a platform should poll an operation of this plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maximum_polling_duration: Option<u64>,
    /// The plan's maintenance version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance_info: Option<MaintenanceInfo>,
}

impl ServicePlan {
    /// Whether instances of this plan can be bound, given its offering.
    pub fn is_bindable(&self, offering: &ServiceOffering) -> bool {
        self.bindable.unwrap_or(offering.bindable)
    }
}

/// Maintenance information of a plan or an instance.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaintenanceInfo {
    /// A semantic version.
    pub version: String,
    /// What the version brings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// `PUT /v2/service_instances/:instance_id`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProvisionRequest {
    /// The offering.
    pub service_id: String,
    /// The plan.
    pub plan_id: String,
    /// Platform context (`{"platform": "deis", ...}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<Value>,
    /// Deprecated by `context`, still required by the spec.
    pub organization_guid: String,
    /// Deprecated by `context`, still required by the spec.
    pub space_guid: String,
    /// Configuration parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Object>,
    /// The maintenance version the platform expects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance_info: Option<MaintenanceInfo>,
}

/// The body of a successful provision.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProvisionResponse {
    /// Where the instance's dashboard is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dashboard_url: Option<String>,
    /// For 202: the operation to poll.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    /// Labels and attributes of the instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
}

/// `PATCH /v2/service_instances/:instance_id`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UpdateRequest {
    /// The offering.
    pub service_id: String,
    /// The new plan, if it changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_id: Option<String>,
    /// Platform context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<Value>,
    /// New configuration parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Object>,
    /// What the platform knew before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_values: Option<Value>,
    /// The maintenance version the platform expects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance_info: Option<MaintenanceInfo>,
}

/// `GET /v2/service_instances/:instance_id`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InstanceResponse {
    /// The offering.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_id: Option<String>,
    /// The plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_id: Option<String>,
    /// Where the instance's dashboard is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dashboard_url: Option<String>,
    /// The parameters it was provisioned with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Object>,
    /// Its maintenance version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance_info: Option<MaintenanceInfo>,
    /// Labels and attributes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
}

/// `PUT /v2/service_instances/:instance_id/service_bindings/:binding_id`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BindRequest {
    /// The offering.
    pub service_id: String,
    /// The plan.
    pub plan_id: String,
    /// Platform context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<Value>,
    /// Deprecated by `bind_resource.app_guid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_guid: Option<String>,
    /// What the binding is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind_resource: Option<BindResource>,
    /// Configuration parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Object>,
    /// The binding this one rotates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predecessor_binding_id: Option<String>,
}

impl BindRequest {
    /// The app the binding is for, from `bind_resource` or the deprecated field.
    pub fn app(&self) -> Option<&str> {
        self.bind_resource.as_ref().and_then(|r| r.app_guid.as_deref()).or(self.app_guid.as_deref())
    }
}

/// What a binding is for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindResource {
    /// The app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_guid: Option<String>,
    /// A route, for route services.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
}

/// The body of a successful bind, and of `GET` of a binding.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BindingResponse {
    /// Expiry and renewal times.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    /// What the app needs to connect (`uri`, `username`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<Object>,
    /// Where the app's logs should go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syslog_drain_url: Option<String>,
    /// A route service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_service_url: Option<String>,
    /// Volumes to mount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_mounts: Option<Vec<Value>>,
    /// Network endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<Vec<Value>>,
    /// The parameters of the binding (on `GET` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Object>,
    /// For 202: the operation to poll.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
}

/// The body of an update, unbind or deprovision: `{}` or `{"operation": ...}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AsyncResponse {
    /// For 202: the operation to poll.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    /// Where the instance's dashboard is (update only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dashboard_url: Option<String>,
}

/// The state of an asynchronous operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OperationState {
    /// Still running: poll again.
    #[serde(rename = "in progress")]
    InProgress,
    /// Done.
    #[serde(rename = "succeeded")]
    Succeeded,
    /// Failed (for a provision or bind, the platform mitigates the orphan).
    #[serde(rename = "failed")]
    Failed,
}

/// `GET .../last_operation`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastOperation {
    /// Where it stands.
    pub state: OperationState,
    /// A user-facing message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// After a failed update or deprovision: whether the instance is still usable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_usable: Option<bool>,
    /// After a failed update: whether repeating it may succeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_repeatable: Option<bool>,
    /// How long to wait before polling again (the `Retry-After` header, not the body).
    #[serde(skip)]
    pub retry_after: Option<std::time::Duration>,
}

impl LastOperation {
    /// An operation in `state` with nothing else said.
    pub fn new(state: OperationState) -> Self {
        Self { state, description: None, instance_usable: None, update_repeatable: None, retry_after: None }
    }
}

/// The query of `DELETE` of an instance or binding.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteRequest {
    /// The offering of what is deleted.
    pub service_id: String,
    /// Its plan.
    pub plan_id: String,
}

/// The query of `GET .../last_operation`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PollRequest {
    /// The offering.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_id: Option<String>,
    /// The plan (before an update changed it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_id: Option<String>,
    /// The operation a 202 returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
}

/// The body of an error answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// A camel-case code (`AsyncRequired`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// A user-facing message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// After a failed update or deprovision: whether the instance is still usable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_usable: Option<bool>,
    /// After a failed update: whether repeating it may succeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_repeatable: Option<bool>,
}

/// How a mutating request succeeded: the HTTP status the spec gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// 200: done (or already there, identical).
    Ok,
    /// 201: created by this request.
    Created,
    /// 202: in progress; poll `last_operation`.
    Accepted,
}

impl Status {
    /// The HTTP status code.
    pub fn code(self) -> u16 {
        match self {
            Self::Ok => 200,
            Self::Created => 201,
            Self::Accepted => 202,
        }
    }
}

/// A successful answer to a mutating request: its status and body.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply<T> {
    /// 200, 201 or 202.
    pub status: Status,
    /// The body.
    pub body: T,
}

impl<T> Reply<T> {
    /// A reply.
    pub fn new(status: Status, body: T) -> Self {
        Self { status, body }
    }
}

/// Who asked (`X-Broker-API-Originating-Identity: <platform> <base64 JSON>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginatingIdentity {
    /// The platform (`deis`, `cloudfoundry`, ...).
    pub platform: String,
    /// The decoded JSON object (e.g. `{"user_id": "alice"}`).
    pub value: Value,
}

/// The largest originating identity header accepted, in bytes.
pub const MAX_IDENTITY_BYTES: usize = 8 * 1024;

impl OriginatingIdentity {
    /// The identity of a Deis user.
    pub fn deis_user(username: &str) -> Self {
        Self { platform: "deis".into(), value: serde_json::json!({ "user_id": username }) }
    }

    /// Parses a header value: a platform, one space, base64 of a JSON object.
    pub fn parse(header: &str) -> Result<Self, String> {
        use base64::Engine;
        if header.len() > MAX_IDENTITY_BYTES {
            return Err(format!("X-Broker-API-Originating-Identity is longer than {MAX_IDENTITY_BYTES} bytes"));
        }
        let (platform, encoded) = header
            .split_once(' ')
            .filter(|(p, _)| !p.is_empty())
            .ok_or("X-Broker-API-Originating-Identity must be '<platform> <base64 JSON object>'")?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|e| format!("X-Broker-API-Originating-Identity: the value is not base64: {e}"))?;
        let value: Value = serde_json::from_slice(&bytes)
            .map_err(|e| format!("X-Broker-API-Originating-Identity: the value is not JSON: {e}"))?;
        if !value.is_object() {
            return Err("X-Broker-API-Originating-Identity: the value must be a JSON object".into());
        }
        Ok(Self { platform: platform.to_string(), value })
    }

    /// The header value.
    pub fn to_header(&self) -> String {
        use base64::Engine;
        format!("{} {}", self.platform, base64::engine::general_purpose::STANDARD.encode(self.value.to_string()))
    }
}

/// What came with a request besides its body: who asked, and the request's id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestContext {
    /// `X-Broker-API-Originating-Identity`, if sent.
    pub originating_identity: Option<OriginatingIdentity>,
    /// `X-Broker-API-Request-Identity`, if sent.
    pub request_identity: Option<String>,
}

impl RequestContext {
    /// A request on behalf of `identity`.
    pub fn on_behalf_of(identity: OriginatingIdentity) -> Self {
        Self { originating_identity: Some(identity), request_identity: None }
    }
}
