//! The app's syslog ingest token (our extension): `GET /v2/apps/<app>/logs/token`
//! shows it, `POST` to the same path replaces it with a new one (200 with the new
//! token). Both answer `{"app", "token", "created"}`; owner, collaborators and admins
//! may, anybody else gets 403 as on the rest of the app's API.

use axum::extract::State;
use http::StatusCode;

use super::error::ApiResult;
use super::extract::{AppPath, AuthUser};
use super::{ApiState, json};

pub(super) async fn show(State(s): State<ApiState>, AuthUser(user): AuthUser, AppPath(app): AppPath) -> ApiResult {
    Ok(json(StatusCode::OK, s.controller.ingest_token(&user, &app).await?))
}

pub(super) async fn rotate(State(s): State<ApiState>, AuthUser(user): AuthUser, AppPath(app): AppPath) -> ApiResult {
    Ok(json(StatusCode::OK, s.controller.rotate_ingest_token(&user, &app).await?))
}
