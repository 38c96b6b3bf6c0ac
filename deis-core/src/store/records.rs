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
//! | `keys/<username>/<key id>` | [`SshKey`] |
//! | `keyprints/<hex sha256 of key blob>` | [`KeyRef`] (who holds a key, for the builder) |
//! | `certs/<name>` | [`Certificate`] (PEM chain and key) |
//! | `certdomains/<domain>` | [`CertAttachment`] (which certificate serves a domain) |
//! | `ingesttokens/<app>` | `IngestToken` (the app's syslog ingest token) |
//! | `endpoints/<app>/<unit>#<instance>` | [`Endpoint`] (leased, written by the publisher) |
//!
//! [`User`]: crate::User
//! [`App`]: crate::App
//! [`Config`]: crate::Config
//! [`Build`]: crate::Build
//! [`Release`]: crate::Release
//! [`Domain`]: crate::Domain
//! [`SshKey`]: crate::SshKey
//! [`Certificate`]: crate::Certificate
//! [`CertAttachment`]: crate::CertAttachment

use std::net::SocketAddr;

use serde::{Serialize, de::DeserializeOwned};
use uuid::Uuid;

use super::{KeyValue, Result, Store, StoreError};
use crate::model::{AppName, ProcessType};

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
pub fn config_key(app: &str, uuid: &Uuid) -> String {
    format!("configs/{app}/{uuid}")
}
/// Key of a build.
pub fn build_key(app: &str, uuid: &Uuid) -> String {
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
/// Prefix of a user's SSH keys.
pub fn ssh_keys_prefix(username: &str) -> String {
    format!("keys/{username}/")
}
/// Key of one SSH key of a user.
pub fn ssh_key_key(username: &str, id: &str) -> String {
    format!("keys/{username}/{id}")
}
/// Key of the index entry of an SSH key blob (by the hex sha256 of the blob).
pub fn keyprint_key(blob: &[u8]) -> String {
    use sha2::Digest;
    format!("keyprints/{}", hex::encode(sha2::Sha256::digest(blob)))
}

/// Prefix of all certificates.
pub const CERTS_PREFIX: &str = "certs/";
/// Key of a certificate.
pub fn cert_key(name: &str) -> String {
    format!("{CERTS_PREFIX}{name}")
}
/// Prefix of all certificate attachments.
pub const CERT_DOMAINS_PREFIX: &str = "certdomains/";
/// Key of the attachment of a certificate to a domain.
pub fn cert_domain_key(domain: &str) -> String {
    format!("{CERT_DOMAINS_PREFIX}{domain}")
}

/// Who registered an SSH key: the value at [`keyprint_key`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct KeyRef {
    /// The user.
    pub owner: String,
    /// The key's id among the user's keys.
    pub id: String,
}

/// Prefix of all endpoints.
pub const ENDPOINTS_PREFIX: &str = "endpoints/";
/// Key of one unit instance's endpoint.
pub fn endpoint_key(app: &str, unit: &str, instance: u64) -> String {
    format!("{ENDPOINTS_PREFIX}{app}/{unit}#{instance}")
}

/// Where a ready unit can be reached; the router routes `web` endpoints.
///
/// Written from the scheduler's [`Unit`](crate::Unit)s, whose names are still plain
/// text, so the names here are too.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Endpoint {
    /// The app.
    pub app: AppName,
    /// Unit name `<app>.<type>.<n>`.
    pub unit: String,
    /// Process type.
    pub proc_type: ProcessType,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{App, Build, Config, Domain, Release, User};

    /// Decodes `json` as a `T` and checks that encoding it again gives the same JSON.
    fn round_trip<T: Serialize + DeserializeOwned>(json: &str) -> T {
        let kv = KeyValue {
            key: "test/record".into(),
            value: json.as_bytes().to_vec(),
            create_revision: 1,
            mod_revision: 1,
            version: 1,
            lease: None,
        };
        let record: T = decode(&kv).unwrap_or_else(|e| panic!("{e}: {json}"));
        let again: serde_json::Value = serde_json::from_slice(&encode(&record)).unwrap();
        assert_eq!(again, serde_json::from_str::<serde_json::Value>(json).unwrap(), "wire form changed");
        record
    }

    /// Records exactly as earlier versions stored them (ids and times as strings)
    /// still load, and are written back the same.
    #[test]
    fn records_stored_by_earlier_versions_load() {
        let app: App = round_trip(
            r#"{"uuid":"0b0e9d4c-5a4e-4b4c-9f55-2f6a8c1d7e01","id":"hello","owner":"alice",
                "structure":{"web":2,"worker":0},"created":"2026-11-25T14:47:21Z","updated":"2026-11-25T14:50:03Z"}"#,
        );
        assert_eq!((app.id.as_str(), app.structure["web"]), ("hello", 2));
        assert_eq!(app.created.to_string(), "2026-11-25T14:47:21Z");
        let release: Release = round_trip(
            r#"{"uuid":"7d9c1c55-34a4-4a0a-8a43-8f1c2f2a0b11","app":"hello","owner":"alice","version":2,
                "summary":"alice deployed sha256:abc","failed":false,"config":"1f7b3b4e-2a41-4e8f-9d33-0c8d7e6f5a21",
                "build":"a2c4e6f8-1b3d-4f5a-8c7e-9d0b1a2c3e41","created":"2026-11-25T14:50:03Z",
                "updated":"2026-11-25T14:50:03Z"}"#,
        );
        assert_eq!(release.build.unwrap().to_string(), "a2c4e6f8-1b3d-4f5a-8c7e-9d0b1a2c3e41");
        let initial: Release = round_trip(
            r#"{"uuid":"7d9c1c55-34a4-4a0a-8a43-8f1c2f2a0b12","app":"hello","owner":"alice","version":1,
                "summary":"alice created initial release","failed":false,
                "config":"1f7b3b4e-2a41-4e8f-9d33-0c8d7e6f5a20","build":null,
                "created":"2026-11-25T14:47:21Z","updated":"2026-11-25T14:47:21Z"}"#,
        );
        assert_eq!(initial.build, None);
        let build: Build = round_trip(
            r#"{"uuid":"a2c4e6f8-1b3d-4f5a-8c7e-9d0b1a2c3e41","app":"hello","owner":"alice",
                "sha":"sha256:0000000000000000000000000000000000000000000000000000000000000000",
                "procfile":{"web":"./web.sh","worker":"./worker.sh"},
                "created":"2026-11-25T14:50:03Z","updated":"2026-11-25T14:50:03Z"}"#,
        );
        assert_eq!(build.procfile["worker"], "./worker.sh");
        let config: Config = round_trip(
            r#"{"uuid":"1f7b3b4e-2a41-4e8f-9d33-0c8d7e6f5a21","app":"hello","owner":"alice",
                "values":{"GREETING":"hi"},"memory":{"web":"512M"},"cpu":{},"tags":{},"registry":{},
                "healthcheck":{},"created":"2026-11-25T14:49:00Z","updated":"2026-11-25T14:49:00Z"}"#,
        );
        assert_eq!(config.values["GREETING"], "hi");
        let domain: Domain = round_trip(
            r#"{"owner":"alice","created":"2026-11-25T14:47:21Z","updated":"2026-11-25T14:47:21Z",
                "app":"hello","domain":"hello"}"#,
        );
        assert_eq!(domain.app, "hello");
        let user: User = round_trip(
            r#"{"username":"alice","email":"a@example.com","is_superuser":true,
                "password_hash":"$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA",
                "date_joined":"2026-11-25T14:40:00Z","last_login":"2026-11-25T14:41:00Z"}"#,
        );
        assert_eq!(user.last_login.unwrap().to_string(), "2026-11-25T14:41:00Z");
        let never: User = round_trip(
            r#"{"username":"bob","email":"","is_superuser":false,"password_hash":"x",
                "date_joined":"2026-11-25T14:40:00Z","last_login":null}"#,
        );
        assert_eq!(never.last_login, None);
        #[cfg(feature = "embedded")]
        let drain: crate::controller::Drain = round_trip(
            r#"{"uuid":"5c1f3e2a-9b8d-4c7e-a6f5-e4d3c2b1a091","app":"hello","owner":"alice",
                "url":"syslog+tls://logs.example.com:6514","created":"2026-11-25T15:00:00Z",
                "updated":"2026-11-25T15:00:00Z"}"#,
        );
        #[cfg(feature = "embedded")]
        assert_eq!(drain.url, "syslog+tls://logs.example.com:6514");
    }

    #[test]
    fn records_with_invalid_names_are_corrupt() {
        let kv = KeyValue {
            key: "apps/Bad".into(),
            value: br#"{"uuid":"0b0e9d4c-5a4e-4b4c-9f55-2f6a8c1d7e01","id":"Bad_Name","owner":"a",
                "created":"2026-11-25T14:47:21Z","updated":"2026-11-25T14:47:21Z"}"#
                .to_vec(),
            create_revision: 1,
            mod_revision: 1,
            version: 1,
            lease: None,
        };
        let err = decode::<App>(&kv).unwrap_err();
        assert!(
            matches!(&err, StoreError::Corrupt { key, message } if key == "apps/Bad" && message.contains("App name"))
        );
    }
}
