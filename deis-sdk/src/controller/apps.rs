//! `/v2/apps/` and `/v2/apps/<app>/` (§3.2).

use axum::extract::State;
use axum::response::IntoResponse;
use deis_core::AppName;
use http::StatusCode;
use serde::Deserialize;

use super::error::{ApiError, ApiResult};
use super::extract::{AppPath, AuthUser, JsonBody, Page};
use super::{ApiState, json};

pub(super) async fn list(State(s): State<ApiState>, AuthUser(user): AuthUser, page: Page) -> ApiResult {
    Ok(page.render(s.controller.list_apps(&user).await?))
}

#[derive(Debug, Deserialize)]
pub(super) struct CreateBody {
    id: Option<String>,
}

pub(super) async fn create(
    State(s): State<ApiState>,
    AuthUser(user): AuthUser,
    JsonBody(b): JsonBody<CreateBody>,
) -> ApiResult {
    let id = b.id.map(AppName::new).transpose()?;
    let app = s.controller.create_app(&user, id).await?;
    Ok(json(StatusCode::CREATED, app))
}

pub(super) async fn info(State(s): State<ApiState>, AuthUser(user): AuthUser, AppPath(app): AppPath) -> ApiResult {
    Ok(json(StatusCode::OK, s.controller.app(&user, &app).await?))
}

#[derive(Debug, Deserialize)]
pub(super) struct TransferBody {
    owner: Option<String>,
}

pub(super) async fn transfer(
    State(s): State<ApiState>,
    AuthUser(user): AuthUser,
    AppPath(app): AppPath,
    JsonBody(b): JsonBody<TransferBody>,
) -> ApiResult {
    let owner = b.owner.filter(|o| !o.is_empty()).ok_or_else(|| ApiError::required("owner"))?;
    s.controller.transfer_app(&user, &app, &owner).await?;
    Ok(StatusCode::OK.into_response())
}

pub(super) async fn destroy(State(s): State<ApiState>, AuthUser(user): AuthUser, AppPath(app): AppPath) -> ApiResult {
    s.controller.destroy_app(&user, &app).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
