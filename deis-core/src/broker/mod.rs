//! The `ServiceBroker` trait: the Open Service Broker API v2.17 as Rust calls.
//!
//! A service broker provisions service instances (a database on a shared server, a
//! Redis user, ...), binds them (credentials for one app) and tears both down. The
//! platform's add-ons (`deis addons:create postgresql:shared`) are instances and
//! bindings of brokers; the HTTP form of the trait is served by `deis_sdk::osb` and a
//! remote broker is reached through its client, which implements this trait too.
//!
//! - [`types`]: the OSB JSON bodies (unknown fields ignored).
//! - [`BrokerError`]: each failure the spec names, with its status and error code.
//! - [`ManagedBroker`]: the spec's state machine (idempotent repeats, 409 on conflicts,
//!   410 on absent deletes, asynchronous operations resumed after a restart) with its
//!   state in the [`Store`](crate::Store), over a small [`Backend`] that only creates
//!   and deletes the real resources. Every broker of this workspace is one.
//! - [`UserProvided`]: the embedded default backend, credentials the user supplies
//!   (Cloud Foundry's user-provided services).
//!
//! To be correct, an implementation must pass [`crate::testing::broker_suite`].

mod error;
mod managed;
pub mod types;
mod user_provided;

use async_trait::async_trait;

pub use error::{
    ASYNC_REQUIRED_DESCRIPTION, BrokerError, CONCURRENCY_ERROR_DESCRIPTION, MAINTENANCE_INFO_CONFLICT_DESCRIPTION,
    REQUIRES_APP_DESCRIPTION, Result,
};
pub use managed::{
    Backend, BindingRecord, BindingSpec, Bound, Created, InstanceRecord, InstanceSpec, ManagedBroker, OperationKind,
    OperationRecord, PlanRef, ResourceState,
};
pub use types::*;
pub use user_provided::{USER_PROVIDED_PLAN_ID, USER_PROVIDED_SERVICE_ID, UserProvided};

/// A service broker: the operations of OSB v2.17.
///
/// Every mutating call takes `accepts_incomplete`: whether the caller can poll an
/// operation answered with [`Status::Accepted`]. A broker that must work asynchronously
/// and is not allowed to answers [`BrokerError::AsyncRequired`].
///
/// To ensure correctness (what [`crate::testing::broker_suite`] checks):
/// - a repeat of a request with identical attributes answers [`Status::Ok`] once done
///   ([`Status::Accepted`] with the same operation while in progress); a repeat with
///   different attributes answers [`BrokerError::Conflict`];
/// - deleting what does not exist answers [`BrokerError::Gone`];
/// - a mutation while another one runs on the same resource answers
///   [`BrokerError::ConcurrencyError`];
/// - an error that is a 4xx ([`BrokerError::is_client_error`]) changed nothing;
/// - an operation answered with 202 reaches `succeeded` or `failed` in
///   [`last_operation`](Self::last_operation) / [`binding_last_operation`](Self::binding_last_operation);
///   after an asynchronous delete completed, polling answers [`BrokerError::Gone`].
#[async_trait]
pub trait ServiceBroker: Send + Sync + std::fmt::Debug {
    /// The services and plans offered.
    async fn catalog(&self, ctx: &RequestContext) -> Result<Catalog>;

    /// Creates instance `instance_id`.
    async fn provision(
        &self,
        ctx: &RequestContext,
        instance_id: &str,
        request: ProvisionRequest,
        accepts_incomplete: bool,
    ) -> Result<Reply<ProvisionResponse>>;

    /// Changes an instance's plan or parameters.
    async fn update(
        &self,
        ctx: &RequestContext,
        instance_id: &str,
        request: UpdateRequest,
        accepts_incomplete: bool,
    ) -> Result<Reply<AsyncResponse>>;

    /// Deletes an instance.
    async fn deprovision(
        &self,
        ctx: &RequestContext,
        instance_id: &str,
        request: DeleteRequest,
        accepts_incomplete: bool,
    ) -> Result<Reply<AsyncResponse>>;

    /// Fetches an instance ([`BrokerError::NotFound`] while it is being provisioned).
    async fn instance(&self, ctx: &RequestContext, instance_id: &str) -> Result<InstanceResponse>;

    /// The state of the last operation on an instance.
    async fn last_operation(
        &self,
        ctx: &RequestContext,
        instance_id: &str,
        request: PollRequest,
    ) -> Result<LastOperation>;

    /// Creates binding `binding_id` of an instance.
    async fn bind(
        &self,
        ctx: &RequestContext,
        instance_id: &str,
        binding_id: &str,
        request: BindRequest,
        accepts_incomplete: bool,
    ) -> Result<Reply<BindingResponse>>;

    /// Deletes a binding.
    async fn unbind(
        &self,
        ctx: &RequestContext,
        instance_id: &str,
        binding_id: &str,
        request: DeleteRequest,
        accepts_incomplete: bool,
    ) -> Result<Reply<AsyncResponse>>;

    /// Fetches a binding with its credentials ([`BrokerError::NotFound`] while it is
    /// being created).
    async fn binding(&self, ctx: &RequestContext, instance_id: &str, binding_id: &str) -> Result<BindingResponse>;

    /// The state of the last operation on a binding.
    async fn binding_last_operation(
        &self,
        ctx: &RequestContext,
        instance_id: &str,
        binding_id: &str,
        request: PollRequest,
    ) -> Result<LastOperation>;
}

/// The longest instance or binding id accepted.
pub const MAX_ID_CHARS: usize = 512;

/// Checks an instance or binding id from a URL: non-empty, at most [`MAX_ID_CHARS`],
/// no control characters.
pub fn check_id(what: &str, id: &str) -> Result<()> {
    if id.is_empty() || id.chars().count() > MAX_ID_CHARS || id.chars().any(char::is_control) {
        return Err(BrokerError::BadRequest(format!(
            "{what} must be 1 to {MAX_ID_CHARS} characters without control characters"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests;

/// A random password for credentials a backend creates: 32 hex characters (128 bits;
/// safe inside SQL string literals and URLs).
pub fn random_password() -> Result<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| BrokerError::Backend(format!("no randomness: {e}")))?;
    Ok(hex::encode(bytes))
}

/// A name for what a backend creates from instance and binding ids: `prefix` and 24 hex
/// characters of their hash, so any id maps to a safe identifier, the same one again
/// after a restart.
pub fn hashed_name(prefix: &str, ids: &[&str]) -> String {
    use sha2::Digest;
    let mut hash = sha2::Sha256::new();
    for id in ids {
        hash.update(id.as_bytes());
        hash.update([0]);
    }
    format!("{prefix}{}", &hex::encode(hash.finalize())[..24])
}
