//! Errors as the Workflow CLI expects them: status codes and JSON bodies (§1.6).
//!
//! [`ControllerError`]s say what went wrong; this module decides how each one is shown to
//! an HTTP client: the status, and one of the bodies the Workflow SDK understands:
//! `{"detail": "..."}`, `{"<field>": ["..."]}` for invalid fields, and a bare JSON string
//! (`"No App matches the given query."`) for unknown records.

use axum::response::{IntoResponse, Response};
use deis_core::ValidationError;
use deis_core::artifact::ArtifactError;
use deis_core::controller::ControllerError;
use deis_core::logs::LogError;
use deis_core::scheduler::SchedulerError;
use http::{HeaderValue, StatusCode, header};
use serde_json::{Value, json};

/// An error response of the controller API.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// An error of the controller's logic, shown as [`controller_error_response`] says.
    #[error(transparent)]
    Controller(#[from] ControllerError),
    /// 400 `{"detail": ...}`: the request itself is malformed (query, body, field type).
    #[error("{0}")]
    BadRequest(String),
    /// 401 `{"detail": ...}`: no usable credentials in the request.
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// 404 `{"detail": "Not found."}`: no route has this path.
    #[error("Not found.")]
    NoRoute,
    /// 413: the body exceeds the limit.
    #[error("{0}")]
    TooLarge(String),
    /// 405: the path exists but not with this method.
    #[error("Method \"{0}\" not allowed.")]
    MethodNotAllowed(String),
    /// 503 `{"detail": ...}` with `Retry-After`: enough requests of this kind are in
    /// progress; the message says what to do.
    #[error("{message}")]
    Busy {
        /// What is busy and what to do.
        message: String,
        /// Seconds to wait before trying again.
        retry_after_secs: u64,
    },
    /// 500 `{"detail": "Server Error: ..."}`: a backend the controller uses failed.
    #[error("{0}")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        Self::Controller(e.into())
    }
}

impl ApiError {
    /// 400 `{"detail": ...}`.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::BadRequest(detail.into())
    }

    /// 400 `{"<field>": ["This field is required."]}`.
    pub fn required(field: &str) -> Self {
        Self::Controller(ControllerError::validation(field, "This field is required."))
    }

    /// The status and JSON body of this error.
    pub fn status_and_body(&self) -> (StatusCode, Value) {
        let detail = |status: StatusCode| (status, json!({ "detail": self.to_string() }));
        match self {
            Self::Controller(e) => controller_error_response(e),
            Self::BadRequest(_) => detail(StatusCode::BAD_REQUEST),
            Self::Unauthenticated(_) => detail(StatusCode::UNAUTHORIZED),
            Self::NoRoute => detail(StatusCode::NOT_FOUND),
            Self::TooLarge(_) => detail(StatusCode::PAYLOAD_TOO_LARGE),
            Self::MethodNotAllowed(_) => detail(StatusCode::METHOD_NOT_ALLOWED),
            Self::Busy { .. } => detail(StatusCode::SERVICE_UNAVAILABLE),
            Self::Internal(e) => server_error(e.as_ref()),
        }
    }
}

/// How the API shows a [`ControllerError`]: the status and the Workflow-compatible body.
///
/// | error | status | body |
/// |---|---|---|
/// | `Validation` | 400 | `{"<field>": ["<message>"]}` |
/// | `NotFound` | 404 | `"No <Kind> matches the given query."` (a bare JSON string) |
/// | `InvalidToken`, `WrongPassword`, `AccountDisabled` | 401 | `{"detail": ...}` |
/// | `Forbidden`, `Registration*` | 403 | `{"detail": ...}` |
/// | `UnknownProcessType` | 404 | `{"detail": ...}` |
/// | `NothingChanged`, `OwnsApps`, `Concurrent`, `LastAdmin`, `AlreadyMember` | 409 | `{"detail": ...}` |
/// | `NotSet`, `Capacity` | 422 | `{"detail": ...}` |
/// | store unavailable (etcd down or without quorum) | 503 | `{"detail": "the store is unavailable: ...; retry when it is back"}` |
/// | store, worker and inconsistency failures | 500 | `{"detail": "Server Error: ..."}` |
/// | other refusals (no build, bad command, rollback, scheduler or archive refusals) | 400 | `{"detail": ...}` |
pub fn controller_error_response(e: &ControllerError) -> (StatusCode, Value) {
    use ControllerError as E;
    let detail = |status: StatusCode| (status, json!({ "detail": e.to_string() }));
    match e {
        E::Validation(v) if v.field == "detail" => (StatusCode::BAD_REQUEST, json!({ "detail": v.message })),
        E::Validation(v) => (StatusCode::BAD_REQUEST, json!({ v.field.as_str(): [v.message] })),
        E::NotFound { .. } => (StatusCode::NOT_FOUND, json!(e.to_string())),
        E::InvalidToken | E::WrongPassword | E::AccountDisabled => detail(StatusCode::UNAUTHORIZED),
        E::Forbidden | E::RegistrationDisabled | E::RegistrationAdminOnly => detail(StatusCode::FORBIDDEN),
        E::UnknownProcessType { .. } => detail(StatusCode::NOT_FOUND),
        E::NothingChanged { .. }
        | E::OwnsApps { .. }
        | E::Concurrent { .. }
        | E::LastAdmin { .. }
        | E::AlreadyMember { .. }
        | E::DomainTaken { .. } => detail(StatusCode::CONFLICT),
        E::NotSet { .. } | E::Capacity(_) => detail(StatusCode::UNPROCESSABLE_ENTITY),
        // Nothing was written (or the client is told to read first): try again later.
        E::Store(deis_core::StoreError::Unavailable(_)) => detail(StatusCode::SERVICE_UNAVAILABLE),
        E::Required { .. }
        | E::UnknownRestartTarget(_)
        | E::NoBuild
        | E::NoBuildToRun
        | E::TooManyUnits { .. }
        | E::UnitQuota { .. }
        | E::Command(_)
        | E::Rollback(_)
        | E::TooManyDrains { .. } => detail(StatusCode::BAD_REQUEST),
        E::Scheduler(s) => match s {
            SchedulerError::Unsupported(_) | SchedulerError::Invalid(_) => detail(StatusCode::BAD_REQUEST),
            SchedulerError::NotFound(_) => detail(StatusCode::NOT_FOUND),
            SchedulerError::Capacity(_) => detail(StatusCode::UNPROCESSABLE_ENTITY),
            SchedulerError::Backend(_) => server_error(e),
        },
        E::Artifact(ArtifactError::Io { .. } | ArtifactError::NotFound(_)) => server_error(e),
        E::Artifact(_) => detail(StatusCode::BAD_REQUEST),
        E::Logs { source: LogError::Invalid(message), .. } => (StatusCode::BAD_REQUEST, json!({ "detail": message })),
        _ => server_error(e),
    }
}

/// 500 `{"detail": "Server Error: <e>"}`, logged with the whole cause chain.
fn server_error(e: &(dyn std::error::Error + 'static)) -> (StatusCode, Value) {
    let mut chain = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        chain.push_str(": ");
        chain.push_str(&c.to_string());
        cause = c.source();
    }
    tracing::error!(error = %chain, "internal error");
    (StatusCode::INTERNAL_SERVER_ERROR, json!({ "detail": format!("Server Error: {e}") }))
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = self.status_and_body();
        let mut resp = (status, axum::Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Token"));
        }
        if let Self::Busy { retry_after_secs, .. } = self {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
        }
        resp
    }
}

/// Result of handlers.
pub type ApiResult<T = Response> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use deis_core::controller::{CommandError, ResourceKind, RollbackRefusal, UnknownRestartTarget};
    use deis_core::{AppName, StoreError};

    use super::*;

    fn shown(e: ControllerError) -> (u16, Value) {
        let (status, body) = controller_error_response(&e);
        (status.as_u16(), body)
    }

    /// The statuses and bodies Workflow clients parse (`docs/CONTROLLER-API.md` §1.6).
    #[test]
    fn platform_errors_look_like_workflows() {
        let detail = |s: &str| json!({ "detail": s });
        assert_eq!(
            shown(ControllerError::validation("id", "App name can only contain a-z (lowercase), 0-9 and hyphens")),
            (400, json!({"id": ["App name can only contain a-z (lowercase), 0-9 and hyphens"]}))
        );
        assert_eq!(
            shown(ControllerError::not_found(ResourceKind::App, "nope")),
            (404, json!("No App matches the given query."))
        );
        assert_eq!(shown(ControllerError::InvalidToken), (401, detail("Invalid token.")));
        assert_eq!(
            shown(ControllerError::Forbidden),
            (403, detail("You do not have permission to perform this action."))
        );
        assert_eq!(
            shown(ControllerError::UnknownProcessType { proc_type: "clock".into() }),
            (404, detail("Container type clock does not exist in application"))
        );
        assert_eq!(
            shown(ControllerError::UnknownRestartTarget(UnknownRestartTarget::Unit("a.web.9".into()))),
            (400, detail("Pod a.web.9 does not exist in application"))
        );
        assert_eq!(
            shown(ControllerError::OwnsApps { username: "bob".into() }),
            (409, detail("bob still has applications assigned. Delete or transfer ownership"))
        );
        assert_eq!(
            shown(ControllerError::NotSet { key: "A".into(), section: "values".into() }),
            (422, detail("A does not exist under values"))
        );
        assert_eq!(
            shown(SchedulerError::Capacity("memory: 2G asked, 1G free".into()).into()),
            (422, detail("not enough capacity: memory: 2G asked, 1G free"))
        );
        assert_eq!(shown(RollbackRefusal::BelowZero.into()), (400, detail("version cannot be below 0")));
        assert_eq!(shown(CommandError::Missing.into()), (400, detail("command is a required field")));
        assert_eq!(shown(SchedulerError::Unsupported("no images".into()).into()), (400, detail("no images")));
        assert_eq!(shown(ArtifactError::TooLarge("2 GiB".into()).into()).0, 400);
        let app = AppName::new("hello").unwrap();
        assert_eq!(
            shown(ControllerError::Logs { app: app.clone(), source: LogError::Invalid("bad filter".into()) }),
            (400, detail("bad filter"))
        );
        assert_eq!(
            shown(ControllerError::Logs { app, source: LogError::Closed }),
            (500, detail("Server Error: Error accessing logs for hello: log store is closed"))
        );
        assert_eq!(shown(StoreError::Closed.into()), (500, detail("Server Error: store is closed")));
        assert_eq!(
            shown(StoreError::Unavailable("etcd at http://e1:2379 did not answer a read: timeout".into()).into()),
            (
                503,
                detail(
                    "the store is unavailable: etcd at http://e1:2379 did not answer a read: timeout; retry when it is back"
                )
            )
        );
    }

    #[test]
    fn request_errors() {
        let (status, body) = ApiError::required("owner").status_and_body();
        assert_eq!((status.as_u16(), body), (400, json!({"owner": ["This field is required."]})));
        let (status, body) = ApiError::NoRoute.status_and_body();
        assert_eq!((status.as_u16(), body), (404, json!({"detail": "Not found."})));
        let (status, body) = ApiError::MethodNotAllowed("PUT".into()).status_and_body();
        assert_eq!((status.as_u16(), body), (405, json!({"detail": "Method \"PUT\" not allowed."})));
        let resp = ApiError::Unauthenticated("Invalid token header.").into_response();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(resp.headers()[header::WWW_AUTHENTICATE], "Token");
    }
}
