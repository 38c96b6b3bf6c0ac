//! `/v2/auth/*` and `/v2/users/` (§3.1, §3.11).

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use deis_core::controller::RegenerateTarget;
use http::StatusCode;
use serde::Deserialize;
use serde_json::json;

use super::error::{ApiError, ApiResult};
use super::extract::{AuthUser, JsonBody, MaybeUser, Page};
use super::{ApiState, json};
use crate::tty::TtyService;

#[derive(Debug, Deserialize)]
pub(super) struct RegisterBody {
    username: Option<String>,
    password: Option<String>,
    #[serde(default)]
    email: String,
}

pub(super) async fn register(
    State(s): State<ApiState>,
    MaybeUser(caller): MaybeUser,
    JsonBody(b): JsonBody<RegisterBody>,
) -> ApiResult {
    let username = b.username.ok_or_else(|| ApiError::required("username"))?;
    let password = b.password.ok_or_else(|| ApiError::required("password"))?;
    let user = s.controller.register(caller.as_ref(), &username, &password, &b.email).await?;
    Ok(json(StatusCode::CREATED, user.public()))
}

#[derive(Debug, Deserialize)]
pub(super) struct LoginBody {
    username: Option<String>,
    password: Option<String>,
}

pub(super) async fn login(State(s): State<ApiState>, JsonBody(b): JsonBody<LoginBody>) -> ApiResult {
    let username = b.username.ok_or_else(|| ApiError::required("username"))?;
    let password = b.password.ok_or_else(|| ApiError::required("password"))?;
    let token = s.controller.login(&username, &password).await?;
    Ok(json(StatusCode::OK, json!({ "token": token })))
}

pub(super) async fn whoami(State(s): State<ApiState>, AuthUser(user): AuthUser) -> ApiResult {
    Ok(json(StatusCode::OK, s.controller.whoami(&user).await?.public()))
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct CancelBody {
    username: Option<String>,
}

pub(super) async fn cancel(
    State(s): State<ApiState>,
    AuthUser(user): AuthUser,
    JsonBody(b): JsonBody<CancelBody>,
) -> ApiResult {
    s.controller.cancel_user(&user, b.username.as_deref().filter(|u| !u.is_empty())).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, Deserialize)]
pub(super) struct PasswdBody {
    username: Option<String>,
    password: Option<String>,
    new_password: Option<String>,
}

pub(super) async fn passwd(
    State(s): State<ApiState>,
    AuthUser(user): AuthUser,
    JsonBody(b): JsonBody<PasswdBody>,
) -> ApiResult {
    s.controller
        .change_password(&user, b.username.as_deref(), b.password.as_deref(), b.new_password.as_deref())
        .await?;
    Ok(json(StatusCode::OK, json!({ "status": "password set" })))
}

#[derive(Debug, Deserialize)]
pub(super) struct TokensBody {
    username: Option<String>,
    #[serde(default)]
    all: bool,
}

pub(super) async fn tokens(
    State(s): State<ApiState>,
    AuthUser(user): AuthUser,
    tty: Option<Extension<Arc<TtyService>>>,
    JsonBody(b): JsonBody<TokensBody>,
) -> ApiResult {
    let target = match (b.all, b.username.filter(|u| !u.is_empty())) {
        (true, _) => RegenerateTarget::All,
        (false, Some(name)) => RegenerateTarget::User(name),
        (false, None) => RegenerateTarget::Own,
    };
    let whose = match &target {
        RegenerateTarget::All => None,
        RegenerateTarget::User(name) => Some(name.clone()),
        RegenerateTarget::Own => Some(user.username.clone()),
    };
    let regenerated = s.controller.regenerate_token(&user, target).await?;
    // `deis run` sessions created with the old token must not attach after it.
    if let Some(Extension(tty)) = tty {
        tty.revoke_sessions(whose.as_deref());
    }
    Ok(match regenerated {
        Some(token) => json(StatusCode::OK, json!({ "token": token })),
        None => json(StatusCode::OK, ""),
    })
}

pub(super) async fn list_users(State(s): State<ApiState>, AuthUser(user): AuthUser, page: Page) -> ApiResult<Response> {
    let users = s.controller.list_users(&user).await?;
    Ok(page.render(users.iter().map(|u| u.public()).collect()))
}

/// `GET /v2/nodes/` (admins): the scheduler's nodes.
pub(super) async fn list_nodes(State(s): State<ApiState>, AuthUser(user): AuthUser, page: Page) -> ApiResult<Response> {
    Ok(page.render(s.controller.nodes(&user).await?))
}
