//! A service broker of your own: a `Backend` that hands out API keys of a fictional
//! SaaS (`mailer`), run inside a `ManagedBroker`, which answers the OSB spec (repeats,
//! conflicts, 410s, asynchronous operations, state in the `Store`). Serve it with
//! `deis_sdk::osb::server::router`, or hand it to `PlatformBuilder::service_broker`
//! so `deis addons:create mailer:free` works on an embedded platform. It passes
//! `deis_core::testing::broker_suite` (see `tests/suites.rs`).

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use deis_sdk::broker::{
    Backend, BindingRecord, BindingSpec, Bound, BrokerError, Catalog, Created, InstanceRecord, InstanceSpec, Object,
    Result, ServiceOffering, ServicePlan,
};
use serde_json::{Value, json};

/// Keys handed out per binding, in memory (a real one would call the SaaS's API).
#[derive(Debug, Default)]
pub struct ApiKeyBroker {
    keys: Mutex<HashMap<String, String>>,
}

impl ApiKeyBroker {
    /// The service id.
    pub const SERVICE_ID: &str = "example-mailer";
    /// The id of plan `free`.
    pub const FREE_PLAN_ID: &str = "example-mailer-free";

    /// Whether `key` is live (what the SaaS would check).
    pub fn accepts(&self, key: &str) -> bool {
        self.keys.lock().expect("keys").values().any(|k| k == key)
    }
}

#[async_trait]
impl Backend for ApiKeyBroker {
    fn catalog(&self) -> Catalog {
        Catalog {
            services: vec![ServiceOffering {
                name: "mailer".into(),
                id: Self::SERVICE_ID.into(),
                description: "Transactional mail (an API key per app)".into(),
                bindable: true,
                plans: vec![ServicePlan {
                    id: Self::FREE_PLAN_ID.into(),
                    name: "free".into(),
                    description: "100 mails a day".into(),
                    ..ServicePlan::default()
                }],
                ..ServiceOffering::default()
            }],
        }
    }

    async fn create_instance(&self, id: &str, _spec: &InstanceSpec) -> Result<Created> {
        Ok(Created { data: json!({ "account": format!("acct-{id}") }), dashboard_url: None })
    }

    async fn delete_instance(&self, _instance: &InstanceRecord) -> Result<()> {
        Ok(())
    }

    async fn create_binding(&self, instance: &InstanceRecord, id: &str, _spec: &BindingSpec) -> Result<Bound> {
        let account = instance.data["account"].as_str().ok_or_else(|| BrokerError::Backend("no account".into()))?;
        let key = format!("key-{}", uuid_like(id));
        self.keys.lock().expect("keys").insert(format!("{}/{id}", instance.id), key.clone());
        let mut credentials = Object::new();
        credentials.insert("url".into(), Value::String(format!("https://{key}@mailer.example.com/{account}")));
        credentials.insert("api_key".into(), Value::String(key));
        Ok(Bound { credentials, data: Value::Null })
    }

    async fn delete_binding(&self, instance: &InstanceRecord, binding: &BindingRecord) -> Result<()> {
        self.keys.lock().expect("keys").remove(&format!("{}/{}", instance.id, binding.id));
        Ok(())
    }
}

/// A key from the binding id hashed with a random seed (unique enough for an example).
fn uuid_like(id: &str) -> String {
    use std::hash::{BuildHasher, RandomState};
    format!("{:016x}", RandomState::new().hash_one(id))
}
