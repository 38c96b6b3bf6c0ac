//! Domains (§3.7).

use axum::extract::{Path, State};
use axum::response::IntoResponse;
use http::StatusCode;
use serde::Deserialize;

use super::error::{ApiError, ApiResult};
use super::extract::{AppPath, AuthUser, JsonBody, Page};
use super::{ApiState, json};

pub(super) async fn list(
    State(s): State<ApiState>,
    AuthUser(user): AuthUser,
    AppPath(app): AppPath,
    page: Page,
) -> ApiResult {
    Ok(page.render(s.controller.domains(&user, &app).await?))
}

#[derive(Debug, Deserialize)]
pub(super) struct AddBody {
    domain: Option<String>,
}

pub(super) async fn add(
    State(s): State<ApiState>,
    AuthUser(user): AuthUser,
    AppPath(app): AppPath,
    JsonBody(b): JsonBody<AddBody>,
) -> ApiResult {
    let domain = b.domain.ok_or_else(|| ApiError::required("domain"))?;
    Ok(json(StatusCode::CREATED, s.controller.add_domain(&user, &app, &domain).await?))
}

pub(super) async fn remove(
    State(s): State<ApiState>,
    AuthUser(user): AuthUser,
    AppPath(app): AppPath,
    Path((_, domain)): Path<(String, String)>,
) -> ApiResult {
    s.controller.remove_domain(&user, &app, &domain).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
