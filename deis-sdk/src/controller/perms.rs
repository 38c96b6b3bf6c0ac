//! Collaborators and administrators (§3.10), enabling and disabling users (§3.11).

use axum::extract::{Path, State};
use axum::response::IntoResponse;
use http::StatusCode;
use serde::Deserialize;
use serde_json::json;

use super::error::{ApiError, ApiResult};
use super::extract::{AppPath, AuthUser, JsonBody, Page};
use super::{ApiState, json};

#[derive(Debug, Deserialize)]
pub(super) struct UsernameBody {
    username: Option<String>,
}

impl UsernameBody {
    fn username(self) -> Result<String, ApiError> {
        self.username.filter(|u| !u.is_empty()).ok_or_else(|| ApiError::required("username"))
    }
}

pub(super) async fn list_collaborators(
    State(s): State<ApiState>,
    AuthUser(user): AuthUser,
    AppPath(app): AppPath,
) -> ApiResult {
    Ok(json(StatusCode::OK, json!({ "users": s.controller.collaborators(&user, &app).await? })))
}

pub(super) async fn add_collaborator(
    State(s): State<ApiState>,
    AuthUser(user): AuthUser,
    AppPath(app): AppPath,
    JsonBody(b): JsonBody<UsernameBody>,
) -> ApiResult {
    s.controller.add_collaborator(&user, &app, &b.username()?).await?;
    Ok(StatusCode::CREATED.into_response())
}

pub(super) async fn remove_collaborator(
    State(s): State<ApiState>,
    AuthUser(user): AuthUser,
    AppPath(app): AppPath,
    Path((_, username)): Path<(String, String)>,
) -> ApiResult {
    s.controller.remove_collaborator(&user, &app, &username).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(super) async fn list_admins(State(s): State<ApiState>, AuthUser(user): AuthUser, page: Page) -> ApiResult {
    let admins = s.controller.admins(&user).await?;
    Ok(page.render(admins.iter().map(|u| json!({ "username": u.username, "is_superuser": true })).collect()))
}

pub(super) async fn grant_admin(
    State(s): State<ApiState>,
    AuthUser(user): AuthUser,
    JsonBody(b): JsonBody<UsernameBody>,
) -> ApiResult {
    s.controller.grant_admin(&user, &b.username()?).await?;
    Ok(StatusCode::CREATED.into_response())
}

pub(super) async fn revoke_admin(
    State(s): State<ApiState>,
    AuthUser(user): AuthUser,
    Path(username): Path<String>,
) -> ApiResult {
    s.controller.revoke_admin(&user, &username).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(super) async fn enable_user(
    State(s): State<ApiState>,
    AuthUser(user): AuthUser,
    Path(username): Path<String>,
) -> ApiResult {
    s.controller.set_user_active(&user, &username, true).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(super) async fn disable_user(
    State(s): State<ApiState>,
    AuthUser(user): AuthUser,
    Path(username): Path<String>,
) -> ApiResult {
    s.controller.set_user_active(&user, &username, false).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
