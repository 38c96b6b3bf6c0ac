//! Config (§3.3) and releases (§3.5).

use axum::extract::{Path, State};
use deis_core::ConfigPatch;
use deis_core::controller::{ControllerError, ResourceKind};
use http::StatusCode;
use serde::Deserialize;
use serde_json::json;

use super::error::ApiResult;
use super::extract::{AppPath, AuthUser, JsonBody, Page};
use super::{ApiState, json};

pub(super) async fn get_config(
    State(s): State<ApiState>,
    AuthUser(user): AuthUser,
    AppPath(app): AppPath,
) -> ApiResult {
    Ok(json(StatusCode::OK, s.controller.config(&user, &app).await?))
}

pub(super) async fn set_config(
    State(s): State<ApiState>,
    AuthUser(user): AuthUser,
    AppPath(app): AppPath,
    JsonBody(patch): JsonBody<ConfigPatch>,
) -> ApiResult {
    let (config, _) = s.controller.set_config(&user, &app, &patch).await?;
    Ok(json(StatusCode::CREATED, config))
}

pub(super) async fn releases(
    State(s): State<ApiState>,
    AuthUser(user): AuthUser,
    AppPath(app): AppPath,
    page: Page,
) -> ApiResult {
    Ok(page.render(s.controller.releases(&user, &app).await?))
}

pub(super) async fn release(
    State(s): State<ApiState>,
    AuthUser(user): AuthUser,
    AppPath(app): AppPath,
    Path((_, version)): Path<(String, String)>,
) -> ApiResult {
    let version: u64 = version
        .strip_prefix('v')
        .unwrap_or(&version)
        .parse()
        .map_err(|_| ControllerError::not_found(ResourceKind::Release, &version))?;
    Ok(json(StatusCode::OK, s.controller.release(&user, &app, version).await?))
}

#[derive(Debug, Deserialize)]
pub(super) struct RollbackBody {
    version: Option<i64>,
}

pub(super) async fn rollback(
    State(s): State<ApiState>,
    AuthUser(user): AuthUser,
    AppPath(app): AppPath,
    JsonBody(b): JsonBody<RollbackBody>,
) -> ApiResult {
    let release = s.controller.rollback(&user, &app, b.version).await?;
    Ok(json(StatusCode::CREATED, json!({ "version": release.version })))
}
