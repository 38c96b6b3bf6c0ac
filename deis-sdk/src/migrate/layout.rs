//! Records that the migration writes beyond the controller's (see
//! [`deis_core::store::records`]): certificates, v1 settings and component
//! registrations. Certificates follow the Workflow API's Cert object, so the controller
//! can serve them as they are once it has that endpoint.

use crate::deis_core::time::Timestamp;
use serde::{Deserialize, Serialize};

/// Key of a certificate.
pub fn cert_key(name: &str) -> String {
    format!("certs/{name}")
}
/// Key of a Deis v1 setting (`/deis/platform/domain` → `settings/platform/domain`).
pub fn setting_key(v1_path: &str) -> String {
    format!("settings/{v1_path}")
}
/// Key of a Deis v1 component registration (`/deis/builder/host` →
/// `registrations/builder/host`), always under a lease.
pub fn registration_key(v1_path: &str) -> String {
    format!("registrations/{v1_path}")
}

/// The name a certificate of `domain` gets: `www.example.com` → `www-example-com`,
/// `*.example.com` → `wildcard-example-com` (Workflow names are DNS labels).
pub fn cert_name(domain: &str) -> String {
    domain.replace('*', "wildcard").replace('.', "-")
}

/// A TLS certificate with its key (`certs/<name>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Certificate {
    /// Name (a DNS label).
    pub name: String,
    /// The domain it was issued for.
    pub common_name: String,
    /// PEM certificate (chain).
    pub certificate: String,
    /// PEM private key.
    pub key: String,
    /// Domains it is attached to.
    pub domains: Vec<String>,
    /// Username of whoever added it.
    pub owner: String,
    /// Creation time.
    pub created: Timestamp,
    /// Last change.
    pub updated: Timestamp,
}

/// The password hash of a user the migration creates: no password matches it (it is
/// not a PHC string), so the user logs in only after an admin sets a password.
pub const NO_PASSWORD: &str = "!migrated-from-deis-v1";
