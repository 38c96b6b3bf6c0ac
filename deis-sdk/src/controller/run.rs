//! One-off commands: the Workflow batch run and our interactive sessions.
//!
//! - `POST /v2/apps/<app>/run` `{"command": "ls -la"}` → 200 `{"exit_code": 0,
//!   "output": "..."}` (Workflow; runs through the TTY broker without a terminal,
//!   bounded in time and output, see [`TtyConfig`](crate::tty::TtyConfig)).
//! - `POST /v2/apps/<app>/sessions` `{"command": ["bash"], "tty": true, "type": "web"}`
//!   → 201 `{"id", "token", "url": "/v2/sessions/<id>/attach", "expires"}`: a one-time
//!   token (60 s) bound to user, app and command, to attach with a WebSocket. When the
//!   broker is reachable through the routing mesh (deisd), the ticket also has
//!   `"router": "127.0.0.1:8080"` and `"host": "deis.<domain>"`: clients connect to the
//!   router and send that `Host`.
//!
//! Both need the app's owner or an admin, and a [`TtyService`] installed as an
//! `axum::Extension<Arc<TtyService>>` on the controller router (deisd does it); without
//! one they answer 501.

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use deis_core::tty::TtyError;
use http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::{ApiError, ApiResult};
use super::extract::{AppPath, AuthUser, JsonBody};
use super::{ApiState, json};
use crate::tty::{ServiceError, TtyService};

/// 501: this controller has no broker.
fn no_broker() -> Response {
    json(
        StatusCode::NOT_IMPLEMENTED,
        json!({"detail": "this controller has no TTY broker, so `deis run` is not available here"}),
    )
}

/// A service error as a response.
fn service_error(e: ServiceError) -> Response {
    match e {
        e @ (ServiceError::Session(_) | ServiceError::NotEmbedded) => {
            json(StatusCode::SERVICE_UNAVAILABLE, json!({"detail": e.to_string()}))
        }
        ServiceError::Tty(e @ TtyError::Busy(_)) => {
            json(StatusCode::SERVICE_UNAVAILABLE, json!({"detail": e.to_string()}))
        }
        ServiceError::Tty(TtyError::Unsupported(msg)) => ApiError::bad_request(msg).into_response(),
        ServiceError::Tty(e @ TtyError::Invalid(_)) => ApiError::bad_request(e.to_string()).into_response(),
        ServiceError::Tty(e) => ApiError::Internal(Box::new(e)).into_response(),
    }
}

/// A command given as a string (run with `sh -c`) or as argv.
fn command_of(value: Option<Value>) -> Result<Vec<String>, ApiError> {
    let required = || ApiError::bad_request("command is a required field");
    match value {
        None | Some(Value::Null) => Err(required()),
        Some(Value::String(s)) if s.trim().is_empty() => Err(required()),
        Some(Value::String(s)) => Ok(vec![s]),
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                other => Err(ApiError::bad_request(format!("command items must be strings, not {other}"))),
            })
            .collect(),
        Some(other) => {
            Err(ApiError::bad_request(format!("command must be a string or a list of strings, not {other}")))
        }
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct RunBody {
    command: Option<Value>,
}

/// `POST /v2/apps/<app>/run`.
pub(super) async fn run(
    State(s): State<ApiState>,
    ext: Option<Extension<Arc<TtyService>>>,
    AuthUser(user): AuthUser,
    AppPath(app): AppPath,
    JsonBody(body): JsonBody<RunBody>,
) -> ApiResult {
    let command = command_of(body.command)?;
    // Permissions first: a stranger learns nothing about the platform's setup.
    let spec = s.controller.session_spec(&user, &app, command, false, None).await?;
    let Some(Extension(svc)) = ext else { return Ok(no_broker()) };
    match svc.run_batch(spec).await {
        Ok(out) => Ok(json(StatusCode::OK, out)),
        Err(e) => Ok(service_error(e)),
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct SessionBody {
    command: Option<Value>,
    #[serde(default)]
    tty: bool,
    #[serde(rename = "type")]
    proc_type: Option<String>,
}

/// `POST /v2/apps/<app>/sessions`.
pub(super) async fn create_session(
    State(s): State<ApiState>,
    ext: Option<Extension<Arc<TtyService>>>,
    AuthUser(user): AuthUser,
    AppPath(app): AppPath,
    JsonBody(body): JsonBody<SessionBody>,
) -> ApiResult {
    let command = command_of(body.command)?;
    let spec = s.controller.session_spec(&user, &app, command, body.tty, body.proc_type.as_deref()).await?;
    let Some(Extension(svc)) = ext else { return Ok(no_broker()) };
    match svc.create_session(spec) {
        Ok(ticket) => Ok(json(StatusCode::CREATED, ticket)),
        Err(e) => Ok(service_error(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_as_string_or_argv() {
        assert_eq!(command_of(Some(json!("ls -la"))).unwrap(), vec!["ls -la"]);
        assert_eq!(command_of(Some(json!(["sh", "-c", "exit 7"]))).unwrap(), vec!["sh", "-c", "exit 7"]);
        for bad in [None, Some(json!(null)), Some(json!("  "))] {
            let err = command_of(bad).unwrap_err();
            assert!(matches!(&err, ApiError::BadRequest(m) if m == "command is a required field"), "{err:?}");
        }
        assert!(command_of(Some(json!([1]))).is_err());
        assert!(command_of(Some(json!({"a": 1}))).is_err());
    }
}
