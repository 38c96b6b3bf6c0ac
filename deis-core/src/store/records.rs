//! The platform's keyspace and typed JSON records on top of any [`Store`].
//!
//! | key | value |
//! |---|---|
//! | `users/<username>` | [`User`] |
//! | `tokens/<sha256 of token>` | username |
//! | `apps/<app>` | [`App`] |
//! | `configs/<app>/<uuid>` | [`Config`] |
//! | `builds/<app>/<uuid>` | [`Build`] |
//! | `releases/<app>/<version, 10 digits>` | [`Release`] |
//! | `domains/<domain>` | [`Domain`] |
//! | `endpoints/<app>/<unit>#<instance>` | [`Endpoint`] (leased, written by the publisher) |
//!
//! [`User`]: crate::User
//! [`App`]: crate::App
//! [`Config`]: crate::Config
//! [`Build`]: crate::Build
//! [`Release`]: crate::Release
//! [`Domain`]: crate::Domain

use std::net::SocketAddr;

use serde::{Serialize, de::DeserializeOwned};

use super::{KeyValue, Result, Store, StoreError};

/// Key of a user.
pub fn user_key(username: &str) -> String {
    format!("users/{username}")
}
/// Key of an API token (by its sha256, never the token itself).
pub fn token_key(token_sha256_hex: &str) -> String {
    format!("tokens/{token_sha256_hex}")
}
/// Key of an app.
pub fn app_key(app: &str) -> String {
    format!("apps/{app}")
}
/// Key of a config.
pub fn config_key(app: &str, uuid: &str) -> String {
    format!("configs/{app}/{uuid}")
}
/// Key of a build.
pub fn build_key(app: &str, uuid: &str) -> String {
    format!("builds/{app}/{uuid}")
}
/// Key of a release; versions are zero-padded so key order is version order.
pub fn release_key(app: &str, version: u64) -> String {
    format!("releases/{app}/{version:010}")
}
/// Prefix of an app's releases.
pub fn releases_prefix(app: &str) -> String {
    format!("releases/{app}/")
}
/// Key of a domain.
pub fn domain_key(domain: &str) -> String {
    format!("domains/{domain}")
}
/// Prefix of all endpoints.
pub const ENDPOINTS_PREFIX: &str = "endpoints/";
/// Key of one unit instance's endpoint.
pub fn endpoint_key(app: &str, unit: &str, instance: u64) -> String {
    format!("{ENDPOINTS_PREFIX}{app}/{unit}#{instance}")
}

/// Where a ready unit can be reached; the router routes `web` endpoints.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Endpoint {
    /// App id.
    pub app: String,
    /// Unit name `<app>.<type>.<n>`.
    pub unit: String,
    /// Process type.
    pub proc_type: String,
    /// Release version the unit runs.
    pub release: u64,
    /// Address to connect to.
    pub address: SocketAddr,
    /// Node running the unit.
    pub node: String,
}

/// Encodes a record as JSON.
pub fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("records serialise")
}

/// Decodes a record, naming the key on failure.
pub fn decode<T: DeserializeOwned>(kv: &KeyValue) -> Result<T> {
    serde_json::from_slice(&kv.value).map_err(|e| StoreError::Corrupt { key: kv.key.clone(), message: e.to_string() })
}

/// Reads and decodes one record with its mod revision.
pub async fn get_json<T: DeserializeOwned>(store: &dyn Store, key: &str) -> Result<Option<(T, u64)>> {
    match store.get(key).await? {
        Some(kv) => Ok(Some((decode(&kv)?, kv.mod_revision))),
        None => Ok(None),
    }
}

/// Lists and decodes every record under a prefix.
pub async fn list_json<T: DeserializeOwned>(store: &dyn Store, prefix: &str) -> Result<Vec<T>> {
    store.list(prefix).await?.kvs.iter().map(decode).collect()
}
