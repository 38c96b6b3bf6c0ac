//! Processes: list, scale, restart (§3.6 and extensions 3, 4, 6).

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::response::IntoResponse;
use deis_core::controller::{ControllerError, UnknownRestartTarget};
use deis_core::scheduler::RestartFilter;
use deis_core::time::Timestamp;
use deis_core::{AppName, ProcessType, Unit};
use http::StatusCode;
use serde_json::{Value, json};

use super::error::{ApiError, ApiResult};
use super::extract::{AppPath, AuthUser, JsonBody, Page};
use super::{ApiState, json};

/// A unit as a Workflow `Pod` plus our `address`, `node` and `restarts`, and its
/// latest `cpu_percent` and `memory_bytes` where telemetry reads them.
fn pod(u: &Unit, telemetry: Option<&crate::telemetry::Telemetry>) -> Value {
    let usage = telemetry.and_then(|t| t.units()?.usage(&u.name));
    let mut pod = json!({
        "name": u.name,
        "state": u.state.to_string(),
        "release": format!("v{}", u.release),
        "type": u.proc_type,
        "started": u.started.unwrap_or_else(Timestamp::now),
        "address": u.address.map(|a| a.to_string()),
        "node": u.node,
        "restarts": u.restarts,
    });
    if let Some(usage) = usage {
        pod["cpu_percent"] = json!(usage.cpu_percent);
        pod["memory_bytes"] = json!(usage.memory_bytes);
    }
    pod
}

pub(super) async fn list(
    State(s): State<ApiState>,
    AuthUser(user): AuthUser,
    AppPath(app): AppPath,
    page: Page,
    telemetry: Option<axum::Extension<std::sync::Arc<crate::telemetry::Telemetry>>>,
) -> ApiResult {
    let units = s.controller.units(&user, &app).await?;
    let telemetry = telemetry.as_ref().map(|t| &*t.0);
    Ok(page.render(units.iter().map(|u| pod(u, telemetry)).collect()))
}

/// Parses `{"web": 3, "worker": "1"}`.
fn parse_scale(body: BTreeMap<String, Value>) -> Result<BTreeMap<ProcessType, u32>, ApiError> {
    let invalid = |what: String| ApiError::bad_request(format!("Invalid scaling format: {what}"));
    body.into_iter()
        .map(|(ty, v)| {
            let ty = ProcessType::new(ty).map_err(|e| invalid(e.message))?;
            let n = match &v {
                Value::Number(n) => n.as_u64(),
                Value::String(s) => s.trim().parse::<u64>().ok(),
                _ => None,
            };
            let n = n
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| invalid(format!("{ty}: {v} is not a non-negative integer")))?;
            Ok((ty, n))
        })
        .collect()
}

pub(super) async fn scale(
    State(s): State<ApiState>,
    AuthUser(user): AuthUser,
    AppPath(app): AppPath,
    JsonBody(body): JsonBody<BTreeMap<String, Value>>,
) -> ApiResult {
    let counts = parse_scale(body)?;
    s.controller.scale(&user, &app, &counts).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The process type named in a restart path; one that is not even a valid name is as
/// unknown to the app as any other.
fn process_type(name: String) -> Result<ProcessType, ApiError> {
    ProcessType::new(name.as_str())
        .map_err(|_| ControllerError::UnknownRestartTarget(UnknownRestartTarget::ProcessType(name)).into())
}

async fn restart(s: ApiState, user: &deis_core::User, app: &AppName, filter: RestartFilter) -> ApiResult {
    let units = s.controller.restart(user, app, filter).await?;
    Ok(json(StatusCode::OK, units.iter().map(|u| pod(u, None)).collect::<Vec<_>>()))
}

pub(super) async fn restart_all(
    State(s): State<ApiState>,
    AuthUser(user): AuthUser,
    AppPath(app): AppPath,
) -> ApiResult {
    restart(s, &user, &app, RestartFilter::default()).await
}

pub(super) async fn restart_type(
    State(s): State<ApiState>,
    AuthUser(user): AuthUser,
    AppPath(app): AppPath,
    Path((_, ptype)): Path<(String, String)>,
) -> ApiResult {
    let proc_type = Some(process_type(ptype)?);
    restart(s, &user, &app, RestartFilter { proc_type, unit: None }).await
}

pub(super) async fn restart_unit(
    State(s): State<ApiState>,
    AuthUser(user): AuthUser,
    AppPath(app): AppPath,
    Path((_, ptype, name)): Path<(String, String, String)>,
) -> ApiResult {
    let proc_type = Some(process_type(ptype)?);
    restart(s, &user, &app, RestartFilter { proc_type, unit: Some(name) }).await
}
