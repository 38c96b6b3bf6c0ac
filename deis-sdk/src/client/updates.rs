//! The update service's admin API (`deis updates:*`, `/v2/updates/`, administrators).

use deis_core::update::{Channel, Group, Instance, RolloutPolicy, UpdateApp};
use http::Method;
use serde_json::json;

use super::{Body, Client, Page, Result, encode_segment, json_body};
use crate::update::UpdateStatus;

/// A package to publish: where clients download it and what it is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PackageUpload {
    /// Version (`1.4.0`).
    pub version: String,
    /// Base URL the file is under.
    pub url: String,
    /// File name under `url`.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Hex SHA-256 of the file.
    pub sha256: String,
    /// Base64 SHA-1 of the file (for old Omaha clients).
    pub sha1: Option<String>,
}

impl PackageUpload {
    /// The package of `file` (size, SHA-256 and SHA-1 read from it), downloaded from
    /// `url` as `name`.
    pub fn from_file(file: &std::path::Path, version: &str, url: &str, name: &str) -> std::io::Result<Self> {
        use base64::Engine as _;
        use sha1::Digest as _;
        use std::io::Read as _;
        let mut f = std::fs::File::open(file)?;
        let (mut sha256, mut sha1, mut size) = (sha2::Sha256::new(), sha1::Sha1::new(), 0u64);
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            sha256.update(&buf[..n]);
            sha1.update(&buf[..n]);
            size += n as u64;
        }
        Ok(Self {
            version: version.into(),
            url: url.into(),
            name: name.into(),
            size,
            sha256: hex::encode(sha256.finalize()),
            sha1: Some(base64::engine::general_purpose::STANDARD.encode(sha1.finalize())),
        })
    }
}

fn app_path(app: &str, rest: &str) -> String {
    format!("/v2/updates/apps/{}/{rest}", encode_segment(app))
}

impl Client {
    /// `GET /v2/updates/apps/`.
    pub async fn update_apps(&self) -> Result<Vec<UpdateApp>> {
        let page: Page<UpdateApp> = self.call_json(Method::GET, "/v2/updates/apps/", Body::Empty).await?;
        Ok(page.results)
    }

    /// `POST /v2/updates/apps/` `{"id", "name"}`: creates an application with the alpha,
    /// beta and stable channels and groups.
    pub async fn update_app_create(&self, id: &str, name: &str) -> Result<UpdateApp> {
        self.call_json(Method::POST, "/v2/updates/apps/", json_body(&json!({ "id": id, "name": name }))?).await
    }

    /// `GET /v2/updates/apps/<app>/`: channels, groups and instance tallies.
    pub async fn update_status(&self, app: &str) -> Result<UpdateStatus> {
        self.call_json(Method::GET, &app_path(app, ""), Body::Empty).await
    }

    /// `POST /v2/updates/apps/<app>/channels/<channel>/`: publishes a package to a channel.
    pub async fn update_publish(&self, app: &str, channel: &str, package: &PackageUpload) -> Result<Channel> {
        let path = app_path(app, &format!("channels/{}/", encode_segment(channel)));
        self.call_json(Method::POST, &path, json_body(package)?).await
    }

    /// `POST /v2/updates/apps/<app>/promote/` `{"from", "to"}`.
    pub async fn update_promote(&self, app: &str, from: &str, to: &str) -> Result<Channel> {
        let body = json_body(&json!({ "from": from, "to": to }))?;
        self.call_json(Method::POST, &app_path(app, "promote/"), body).await
    }

    /// `PUT /v2/updates/apps/<app>/groups/<group>/`: creates or changes a group (the
    /// policy stays as it is when `None`).
    pub async fn update_group(
        &self,
        app: &str,
        group: &str,
        channel: &str,
        policy: Option<RolloutPolicy>,
    ) -> Result<Group> {
        let body = json_body(&json!({ "channel": channel, "policy": policy }))?;
        self.call_json(Method::PUT, &app_path(app, &format!("groups/{}/", encode_segment(group))), body).await
    }

    /// `POST /v2/updates/apps/<app>/groups/<group>/pause/` (or `resume/`).
    pub async fn update_pause(&self, app: &str, group: &str, paused: bool) -> Result<Group> {
        let action = if paused { "pause" } else { "resume" };
        let path = app_path(app, &format!("groups/{}/{action}/", encode_segment(group)));
        self.call_json(Method::POST, &path, Body::Empty).await
    }

    /// `GET /v2/updates/apps/<app>/instances/?group=<group>`.
    pub async fn update_instances(&self, app: &str, group: Option<&str>) -> Result<Vec<Instance>> {
        let query = group.map(|g| format!("?group={}", encode_segment(g))).unwrap_or_default();
        let page: Page<Instance> =
            self.call_json(Method::GET, &app_path(app, &format!("instances/{query}")), Body::Empty).await?;
        Ok(page.results)
    }
}
