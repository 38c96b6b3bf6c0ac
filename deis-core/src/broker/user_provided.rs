//! [`UserProvided`]: the embedded default backend, like Cloud Foundry's user-provided
//! service instances. The instance's parameters are the credentials (`-p
//! url=postgres://...`); every binding hands them out as they are.

use async_trait::async_trait;
use serde_json::Value;

use super::managed::{Backend, BindingRecord, BindingSpec, Bound, Created, InstanceRecord, InstanceSpec};
use super::types::{Catalog, ServiceOffering, ServicePlan};
use super::{BrokerError, Result};

/// The service id of user-provided instances.
pub const USER_PROVIDED_SERVICE_ID: &str = "5a3d6f2e-8f0b-4c4e-9d55-user-provided";
/// The id of its one plan, `default`.
pub const USER_PROVIDED_PLAN_ID: &str = "5a3d6f2e-8f0b-4c4e-9d55-user-provided-default";

/// Credentials supplied by the user: service `user-provided`, plan `default`. Run it
/// inside a [`ManagedBroker`](super::ManagedBroker).
#[derive(Debug, Clone, Copy, Default)]
pub struct UserProvided;

#[async_trait]
impl Backend for UserProvided {
    fn catalog(&self) -> Catalog {
        Catalog {
            services: vec![ServiceOffering {
                name: "user-provided".into(),
                id: USER_PROVIDED_SERVICE_ID.into(),
                description: "Credentials of a service you run yourself, handed to apps as they are".into(),
                tags: vec!["user-provided".into()],
                bindable: true,
                instances_retrievable: Some(true),
                bindings_retrievable: Some(true),
                plans: vec![ServicePlan {
                    id: USER_PROVIDED_PLAN_ID.into(),
                    name: "default".into(),
                    description: "The parameters given at creation are the credentials".into(),
                    free: Some(true),
                    ..ServicePlan::default()
                }],
                ..ServiceOffering::default()
            }],
        }
    }

    async fn create_instance(&self, _id: &str, spec: &InstanceSpec) -> Result<Created> {
        if spec.parameters.as_ref().is_none_or(|p| p.is_empty()) {
            return Err(BrokerError::BadRequest(
                "a user-provided service needs its credentials as parameters (e.g. -p url=postgres://...)".into(),
            ));
        }
        Ok(Created::default())
    }

    async fn update_instance(&self, _instance: &InstanceRecord, _new: &InstanceSpec) -> Result<Value> {
        Ok(Value::Null)
    }

    async fn delete_instance(&self, _instance: &InstanceRecord) -> Result<()> {
        Ok(())
    }

    async fn create_binding(&self, instance: &InstanceRecord, _id: &str, _spec: &BindingSpec) -> Result<Bound> {
        Ok(Bound { credentials: instance.spec.parameters.clone().unwrap_or_default(), data: Value::Null })
    }

    async fn delete_binding(&self, _instance: &InstanceRecord, _binding: &BindingRecord) -> Result<()> {
        Ok(())
    }
}
