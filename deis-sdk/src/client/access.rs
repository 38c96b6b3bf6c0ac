//! Who may do what: SSH keys, collaborators, administrators, users, and the settings
//! that decide who reaches an app (maintenance, routing, allow-list, HTTPS).

use deis_core::SshKey;
use http::Method;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Body, Client, Result, UserInfo, app_path, encode_segment, json_body};

#[derive(Deserialize)]
struct Users {
    users: Vec<String>,
}

#[derive(Deserialize)]
struct Addresses {
    addresses: Vec<String>,
}

#[derive(Deserialize)]
struct Admin {
    username: String,
}

impl Client {
    // ---- keys ----------------------------------------------------------------------

    /// `GET /v2/keys/`: the caller's SSH keys.
    pub async fn keys_list(&self) -> Result<Vec<SshKey>> {
        self.list("/v2/keys/").await
    }

    /// `POST /v2/keys/` `{"id", "public"}`: registers an SSH public key (the text of a
    /// `.pub` file) under `id`.
    pub async fn keys_add(&self, id: &str, public: &str) -> Result<SshKey> {
        self.call_json(Method::POST, "/v2/keys/", json_body(&json!({ "id": id, "public": public }))?).await
    }

    /// `DELETE /v2/keys/<id>`.
    pub async fn keys_remove(&self, id: &str) -> Result<()> {
        self.call(Method::DELETE, &format!("/v2/keys/{}", encode_segment(id)), Body::Empty).await.map(drop)
    }

    // ---- collaborators and administrators ------------------------------------------

    /// `GET /v2/apps/<app>/perms/`: the app's collaborators.
    pub async fn perms_list(&self, app: &str) -> Result<Vec<String>> {
        let users: Users = self.call_json(Method::GET, &app_path(app, "perms/"), Body::Empty).await?;
        Ok(users.users)
    }

    /// `POST /v2/apps/<app>/perms/` `{"username"}`.
    pub async fn perms_create(&self, app: &str, username: &str) -> Result<()> {
        let body = json_body(&json!({ "username": username }))?;
        self.call(Method::POST, &app_path(app, "perms/"), body).await.map(drop)
    }

    /// `DELETE /v2/apps/<app>/perms/<username>`.
    pub async fn perms_delete(&self, app: &str, username: &str) -> Result<()> {
        let path = app_path(app, &format!("perms/{}", encode_segment(username)));
        self.call(Method::DELETE, &path, Body::Empty).await.map(drop)
    }

    /// `GET /v2/admin/perms/`: the administrators' names.
    pub async fn admins_list(&self) -> Result<Vec<String>> {
        let admins: Vec<Admin> = self.list("/v2/admin/perms/").await?;
        Ok(admins.into_iter().map(|a| a.username).collect())
    }

    /// `POST /v2/admin/perms/` `{"username"}`.
    pub async fn admins_create(&self, username: &str) -> Result<()> {
        self.call(Method::POST, "/v2/admin/perms/", json_body(&json!({ "username": username }))?).await.map(drop)
    }

    /// `DELETE /v2/admin/perms/<username>`.
    pub async fn admins_delete(&self, username: &str) -> Result<()> {
        let path = format!("/v2/admin/perms/{}", encode_segment(username));
        self.call(Method::DELETE, &path, Body::Empty).await.map(drop)
    }

    /// `GET /v2/users/` (admins only).
    pub async fn users_list(&self) -> Result<Vec<UserInfo>> {
        self.list("/v2/users/").await
    }

    /// `PATCH /v2/users/<username>/enable|disable/` (admins only).
    pub async fn users_set_active(&self, username: &str, active: bool) -> Result<()> {
        let verb = if active { "enable" } else { "disable" };
        let path = format!("/v2/users/{}/{verb}/", encode_segment(username));
        self.call(Method::PATCH, &path, Body::Empty).await.map(drop)
    }

    // ---- settings ------------------------------------------------------------------

    /// `POST /v2/apps/<app>/settings/` with a partial settings object
    /// (`{"maintenance": true}`, `{"routable": false}`, `{"label": {"k": "v"}}`).
    pub async fn settings_set(&self, app: &str, patch: &Value) -> Result<Value> {
        self.call_json(Method::POST, &app_path(app, "settings/"), json_body(patch)?).await
    }

    /// `GET /v2/apps/<app>/tls/`: whether HTTPS is enforced.
    pub async fn tls_get(&self, app: &str) -> Result<bool> {
        let tls: Value = self.call_json(Method::GET, &app_path(app, "tls/"), Body::Empty).await?;
        Ok(tls["https_enforced"].as_bool().unwrap_or(false))
    }

    /// `POST /v2/apps/<app>/tls/` `{"https_enforced"}`.
    pub async fn tls_set(&self, app: &str, enforced: bool) -> Result<()> {
        let body = json_body(&json!({ "https_enforced": enforced }))?;
        self.call(Method::POST, &app_path(app, "tls/"), body).await.map(drop)
    }

    /// `GET /v2/apps/<app>/whitelist/`: allowed client addresses (empty: everyone).
    pub async fn whitelist_list(&self, app: &str) -> Result<Vec<String>> {
        let a: Addresses = self.call_json(Method::GET, &app_path(app, "whitelist/"), Body::Empty).await?;
        Ok(a.addresses)
    }

    /// `POST /v2/apps/<app>/whitelist/` `{"addresses"}`; returns the whole list.
    pub async fn whitelist_add(&self, app: &str, addresses: &[String]) -> Result<Vec<String>> {
        let body = json_body(&json!({ "addresses": addresses }))?;
        let a: Addresses = self.call_json(Method::POST, &app_path(app, "whitelist/"), body).await?;
        Ok(a.addresses)
    }

    /// `DELETE /v2/apps/<app>/whitelist/` `{"addresses"}`.
    pub async fn whitelist_remove(&self, app: &str, addresses: &[String]) -> Result<()> {
        let body = json_body(&json!({ "addresses": addresses }))?;
        self.call(Method::DELETE, &app_path(app, "whitelist/"), body).await.map(drop)
    }
}
