//! The records of add-ons and registered brokers in the store.
//!
//! | key | value |
//! |---|---|
//! | `service-brokers/<name>` | [`BrokerRegistration`] |
//! | `addons/<name>` | [`Addon`] |

use deis_core::AppName;
use deis_core::time::Timestamp;
use serde::{Deserialize, Serialize};

/// Prefix of registered brokers.
pub const BROKERS_PREFIX: &str = "service-brokers/";
/// Prefix of add-ons.
pub const ADDONS_PREFIX: &str = "addons/";

/// Key of a registered broker.
pub fn broker_key(name: &str) -> String {
    format!("{BROKERS_PREFIX}{name}")
}

/// Key of an add-on.
pub fn addon_key(name: &str) -> String {
    format!("{ADDONS_PREFIX}{name}")
}

/// A third-party broker an admin registered (`deis brokers:add`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerRegistration {
    /// Its name on this platform.
    pub name: String,
    /// Its URL.
    pub url: String,
    /// Basic-auth user.
    pub username: String,
    /// Basic-auth password (never shown).
    pub password: String,
    /// Who registered it.
    pub owner: String,
    /// When.
    pub created: Timestamp,
}

/// A broker as the API shows it (no password).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerView {
    /// Its name.
    pub name: String,
    /// Its URL (`embedded` for brokers inside the controller).
    pub url: String,
    /// Basic-auth user, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
}

/// Where an add-on stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AddonState {
    /// Being provisioned and bound to its app.
    Provisioning,
    /// Ready: its app has its credentials.
    Ready,
    /// Provisioning failed (`message` says why); destroy it.
    Failed,
}

/// An app an add-on is attached to: its binding and the config variable holding the URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// The app.
    pub app: AppName,
    /// The variable (`DATABASE_URL`, `<ALIAS>_URL`).
    pub var: String,
    /// The binding's id at the broker.
    pub binding_id: String,
}

/// A service instance provisioned for an app (`deis addons:create`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Addon {
    /// Its name (unique on the platform).
    pub name: String,
    /// The broker it came from.
    pub broker: String,
    /// The service name (`postgresql`).
    pub service: String,
    /// The plan name (`shared`).
    pub plan: String,
    /// The service's id at the broker.
    pub service_id: String,
    /// The plan's id at the broker.
    pub plan_id: String,
    /// The instance's id at the broker.
    pub instance_id: String,
    /// The app it was created for (who may destroy it).
    pub app: AppName,
    /// The variable the app gets.
    pub var: String,
    /// Who created it.
    pub owner: String,
    /// Where it stands.
    pub state: AddonState,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The apps that have its credentials.
    pub attachments: Vec<Attachment>,
    /// The plan's maximum polling duration, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_polling_secs: Option<u64>,
    /// Provision parameters (`-p key=value`); never shown ([`Addon::view`]), they may
    /// hold secrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<deis_core::broker::Object>,
    /// When it was created.
    pub created: Timestamp,
    /// When it last changed.
    pub updated: Timestamp,
}

impl Addon {
    /// The add-on as the API shows it: without its parameters.
    pub fn view(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).expect("add-ons serialise");
        if let Some(o) = v.as_object_mut() {
            o.remove("parameters");
        }
        v
    }

    /// The attachment to `app`, if any.
    pub fn attachment(&self, app: &AppName) -> Option<&Attachment> {
        self.attachments.iter().find(|a| &a.app == app)
    }
}
