//! TLS certificates (§3.8): added by a user, attached to their apps' domains. The PEM
//! is checked and its fields extracted here ([`crate::certs::inspect`]) before the
//! controller stores it.

use axum::extract::{Path, State};
use axum::response::IntoResponse;
use deis_core::controller::NewCertificate;
use http::StatusCode;
use serde::Deserialize;

use super::error::{ApiError, ApiResult};
use super::extract::{AuthUser, JsonBody, Page};
use super::{ApiState, json};

pub(super) async fn list(State(s): State<ApiState>, AuthUser(user): AuthUser, page: Page) -> ApiResult {
    Ok(page.render(s.controller.list_certs(&user).await?))
}

#[derive(Debug, Deserialize)]
pub(super) struct AddBody {
    name: Option<String>,
    certificate: Option<String>,
    key: Option<String>,
}

pub(super) async fn add(
    State(s): State<ApiState>,
    AuthUser(user): AuthUser,
    JsonBody(b): JsonBody<AddBody>,
) -> ApiResult {
    let name = b.name.unwrap_or_default();
    deis_core::model::cert_name(&name)?;
    let (certificate, key) = (b.certificate.unwrap_or_default(), b.key.unwrap_or_default());
    let inspected = crate::certs::inspect(&certificate, &key)?;
    let new = NewCertificate { name, certificate, key, info: inspected.info };
    Ok(json(StatusCode::CREATED, s.controller.add_cert(&user, new).await?))
}

pub(super) async fn info(State(s): State<ApiState>, AuthUser(user): AuthUser, Path(name): Path<String>) -> ApiResult {
    Ok(json(StatusCode::OK, s.controller.cert(&user, &name).await?))
}

pub(super) async fn remove(State(s): State<ApiState>, AuthUser(user): AuthUser, Path(name): Path<String>) -> ApiResult {
    s.controller.remove_cert(&user, &name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, Deserialize)]
pub(super) struct AttachBody {
    domain: Option<String>,
}

pub(super) async fn attach(
    State(s): State<ApiState>,
    AuthUser(user): AuthUser,
    Path(name): Path<String>,
    JsonBody(b): JsonBody<AttachBody>,
) -> ApiResult {
    let domain = b.domain.filter(|d| !d.trim().is_empty()).ok_or_else(|| ApiError::required("domain"))?;
    s.controller.attach_cert(&user, &name, &domain).await?;
    Ok(json(StatusCode::CREATED, serde_json::json!({"name": name, "domain": domain.trim().to_ascii_lowercase()})))
}

pub(super) async fn detach(
    State(s): State<ApiState>,
    AuthUser(user): AuthUser,
    Path((name, domain)): Path<(String, String)>,
) -> ApiResult {
    s.controller.detach_cert(&user, &name, &domain).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
