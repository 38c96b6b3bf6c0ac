//! SSH keys (§3.9): each user sees and changes only their own.

use axum::extract::{Path, State};
use axum::response::IntoResponse;
use http::StatusCode;
use serde::Deserialize;

use super::error::{ApiError, ApiResult};
use super::extract::{AuthUser, JsonBody, Page};
use super::{ApiState, json};

pub(super) async fn list(State(s): State<ApiState>, AuthUser(user): AuthUser, page: Page) -> ApiResult {
    Ok(page.render(s.controller.list_keys(&user).await?))
}

#[derive(Debug, Deserialize)]
pub(super) struct AddBody {
    id: Option<String>,
    public: Option<String>,
}

pub(super) async fn add(
    State(s): State<ApiState>,
    AuthUser(user): AuthUser,
    JsonBody(b): JsonBody<AddBody>,
) -> ApiResult {
    let public = b.public.filter(|p| !p.trim().is_empty()).ok_or_else(|| ApiError::required("public"))?;
    // Like the Workflow CLI, default the id to the key's comment.
    let id = match b.id.filter(|i| !i.is_empty()) {
        Some(id) => id,
        None => deis_core::PublicKey::parse(&public)?.comment,
    };
    if id.is_empty() {
        return Err(ApiError::required("id"));
    }
    Ok(json(StatusCode::CREATED, s.controller.add_key(&user, &id, &public).await?))
}

pub(super) async fn remove(State(s): State<ApiState>, AuthUser(user): AuthUser, Path(id): Path<String>) -> ApiResult {
    s.controller.remove_key(&user, &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
