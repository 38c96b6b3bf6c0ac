//! Add-ons, services and brokers (`deis addons:*`, `deis services`, `deis brokers:*`).

use http::Method;
use serde_json::json;

use super::{Body, Client, Result, encode_segment, json_body};
use crate::addons::{Addon, BrokerView, ServiceListing};
use deis_core::AppName;
use deis_core::broker::Object;

impl Client {
    /// `GET /v2/services/`: the services every broker offers.
    pub async fn services(&self) -> Result<Vec<ServiceListing>> {
        self.call_json(Method::GET, "/v2/services/", Body::Empty).await
    }

    /// `GET /v2/brokers/` (admins).
    pub async fn brokers_list(&self) -> Result<Vec<BrokerView>> {
        self.call_json(Method::GET, "/v2/brokers/", Body::Empty).await
    }

    /// `POST /v2/brokers/` `{"name", "url", "username", "password"}` (admins).
    pub async fn brokers_add(&self, name: &str, url: &str, username: &str, password: &str) -> Result<BrokerView> {
        let body = json!({ "name": name, "url": url, "username": username, "password": password });
        self.call_json(Method::POST, "/v2/brokers/", json_body(&body)?).await
    }

    /// `DELETE /v2/brokers/<name>` (admins).
    pub async fn brokers_remove(&self, name: &str) -> Result<()> {
        self.call(Method::DELETE, &format!("/v2/brokers/{}", encode_segment(name)), Body::Empty).await.map(drop)
    }

    /// `GET /v2/apps/<app>/addons/`.
    pub async fn addons_list(&self, app: &AppName) -> Result<Vec<Addon>> {
        self.call_json(Method::GET, &format!("/v2/apps/{app}/addons/"), Body::Empty).await
    }

    /// `POST /v2/apps/<app>/addons/` `{"service": "SERVICE:PLAN", "as", "parameters"}`.
    pub async fn addons_create(
        &self,
        app: &AppName,
        service: &str,
        alias: Option<&str>,
        parameters: &Object,
    ) -> Result<Addon> {
        let body = json!({ "service": service, "as": alias, "parameters": parameters });
        self.call_json(Method::POST, &format!("/v2/apps/{app}/addons/"), json_body(&body)?).await
    }

    /// `GET /v2/addons/<name>`.
    pub async fn addons_info(&self, name: &str) -> Result<Addon> {
        self.call_json(Method::GET, &format!("/v2/addons/{}", encode_segment(name)), Body::Empty).await
    }

    /// `GET /v2/addons/<name>/wait?timeout=<secs>`: the add-on once it is no longer
    /// provisioning, or when `timeout_secs` passed.
    pub async fn addons_wait(&self, name: &str, timeout_secs: u64) -> Result<Addon> {
        let path = format!("/v2/addons/{}/wait?timeout={timeout_secs}", encode_segment(name));
        self.call_json(Method::GET, &path, Body::Empty).await
    }

    /// `POST /v2/addons/<name>/attachments/` `{"app", "as"}`.
    pub async fn addons_attach(&self, name: &str, app: &AppName, alias: Option<&str>) -> Result<Addon> {
        let path = format!("/v2/addons/{}/attachments/", encode_segment(name));
        self.call_json(Method::POST, &path, json_body(&json!({ "app": app, "as": alias }))?).await
    }

    /// `DELETE /v2/addons/<name>/attachments/<app>`.
    pub async fn addons_detach(&self, name: &str, app: &AppName) -> Result<Addon> {
        let path = format!("/v2/addons/{}/attachments/{app}", encode_segment(name));
        self.call_json(Method::DELETE, &path, Body::Empty).await
    }

    /// `DELETE /v2/addons/<name>`.
    pub async fn addons_destroy(&self, name: &str) -> Result<()> {
        self.call(Method::DELETE, &format!("/v2/addons/{}", encode_segment(name)), Body::Empty).await.map(drop)
    }
}
