//! TLS certificates (`deis certs:*`, Workflow `/v2/certs/`).

use deis_core::CertificateView;
use http::Method;
use serde_json::json;

use super::{Body, Client, Result, encode_segment, json_body};

impl Client {
    /// `GET /v2/certs/`: the caller's certificates (all of them for admins).
    pub async fn certs_list(&self) -> Result<Vec<CertificateView>> {
        self.list("/v2/certs/").await
    }

    /// `POST /v2/certs/` `{"name", "certificate", "key"}`: adds a certificate (PEM
    /// chain, leaf first) and its PEM private key; the server checks that they match.
    pub async fn certs_add(&self, name: &str, certificate: &str, key: &str) -> Result<CertificateView> {
        let body = json_body(&json!({ "name": name, "certificate": certificate, "key": key }))?;
        self.call_json(Method::POST, "/v2/certs/", body).await
    }

    /// `GET /v2/certs/<name>`.
    pub async fn certs_info(&self, name: &str) -> Result<CertificateView> {
        self.call_json(Method::GET, &format!("/v2/certs/{}", encode_segment(name)), Body::Empty).await
    }

    /// `DELETE /v2/certs/<name>`: removes it and its attachments.
    pub async fn certs_remove(&self, name: &str) -> Result<()> {
        self.call(Method::DELETE, &format!("/v2/certs/{}", encode_segment(name)), Body::Empty).await.map(drop)
    }

    /// `POST /v2/certs/<name>/domain/` `{"domain"}`: serves `domain` with it.
    pub async fn certs_attach(&self, name: &str, domain: &str) -> Result<()> {
        let path = format!("/v2/certs/{}/domain/", encode_segment(name));
        self.call(Method::POST, &path, json_body(&json!({ "domain": domain }))?).await.map(drop)
    }

    /// `DELETE /v2/certs/<name>/domain/<domain>`.
    pub async fn certs_detach(&self, name: &str, domain: &str) -> Result<()> {
        let path = format!("/v2/certs/{}/domain/{}", encode_segment(name), encode_segment(domain));
        self.call(Method::DELETE, &path, Body::Empty).await.map(drop)
    }
}
