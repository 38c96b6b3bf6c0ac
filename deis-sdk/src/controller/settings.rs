//! App settings, TLS and the allow-list (§3.12).

use axum::extract::State;
use axum::response::IntoResponse;
use deis_core::{AddressRange, SettingsPatch};
use http::StatusCode;
use serde::Deserialize;
use serde_json::json;

use super::error::{ApiError, ApiResult};
use super::extract::{AppPath, AuthUser, JsonBody};
use super::{ApiState, json};

pub(super) async fn get(State(s): State<ApiState>, AuthUser(user): AuthUser, AppPath(app): AppPath) -> ApiResult {
    Ok(json(StatusCode::OK, s.controller.app_settings(&user, &app).await?))
}

pub(super) async fn update(
    State(s): State<ApiState>,
    AuthUser(user): AuthUser,
    AppPath(app): AppPath,
    JsonBody(patch): JsonBody<SettingsPatch>,
) -> ApiResult {
    Ok(json(StatusCode::CREATED, s.controller.update_settings(&user, &app, &patch).await?))
}

pub(super) async fn get_tls(State(s): State<ApiState>, AuthUser(user): AuthUser, AppPath(app): AppPath) -> ApiResult {
    Ok(json(StatusCode::OK, s.controller.app_tls(&user, &app).await?))
}

#[derive(Debug, Deserialize)]
pub(super) struct TlsBody {
    https_enforced: Option<bool>,
}

pub(super) async fn set_tls(
    State(s): State<ApiState>,
    AuthUser(user): AuthUser,
    AppPath(app): AppPath,
    JsonBody(b): JsonBody<TlsBody>,
) -> ApiResult {
    let enforced = b.https_enforced.ok_or_else(|| ApiError::required("https_enforced"))?;
    Ok(json(StatusCode::CREATED, s.controller.set_https_enforced(&user, &app, enforced).await?))
}

#[derive(Debug, Deserialize)]
pub(super) struct AddressesBody {
    addresses: Option<Vec<AddressRange>>,
}

impl AddressesBody {
    fn addresses(self) -> Result<Vec<AddressRange>, ApiError> {
        self.addresses.filter(|a| !a.is_empty()).ok_or_else(|| ApiError::required("addresses"))
    }
}

pub(super) async fn whitelist(State(s): State<ApiState>, AuthUser(user): AuthUser, AppPath(app): AppPath) -> ApiResult {
    Ok(json(StatusCode::OK, json!({ "addresses": s.controller.whitelist(&user, &app).await? })))
}

pub(super) async fn allow(
    State(s): State<ApiState>,
    AuthUser(user): AuthUser,
    AppPath(app): AppPath,
    JsonBody(b): JsonBody<AddressesBody>,
) -> ApiResult {
    let list = s.controller.allow_addresses(&user, &app, &b.addresses()?).await?;
    Ok(json(StatusCode::CREATED, json!({ "addresses": list })))
}

pub(super) async fn disallow(
    State(s): State<ApiState>,
    AuthUser(user): AuthUser,
    AppPath(app): AppPath,
    JsonBody(b): JsonBody<AddressesBody>,
) -> ApiResult {
    s.controller.disallow_addresses(&user, &app, &b.addresses()?).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
