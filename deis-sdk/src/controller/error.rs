//! Errors as the Workflow CLI expects them: status codes and JSON bodies (§1.6).

use axum::response::{IntoResponse, Response};
use deis_core::platform::PlatformError;
use http::{HeaderValue, StatusCode, header};
use serde_json::json;

/// An error response of the controller API.
#[derive(Debug)]
pub enum ApiError {
    /// An error of the platform's logic.
    Platform(PlatformError),
    /// 413: the body exceeds the limit.
    TooLarge(String),
    /// 405: the path exists but not with this method.
    MethodNotAllowed(String),
}

impl From<PlatformError> for ApiError {
    fn from(e: PlatformError) -> Self {
        Self::Platform(e)
    }
}

impl ApiError {
    /// 400 `{"detail": ...}`.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::Platform(PlatformError::BadRequest(detail.into()))
    }

    /// 400 `{"<field>": ["This field is required."]}`.
    pub fn required(field: &str) -> Self {
        Self::Platform(PlatformError::validation(field, "This field is required."))
    }
}

/// `No <Thing> matches the given query.`: the reference renders these as a bare JSON
/// string, which the CLI prints verbatim.
fn is_query_miss(msg: &str) -> bool {
    msg.starts_with("No ") && msg.ends_with(" matches the given query.")
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = match self {
            Self::TooLarge(detail) => (StatusCode::PAYLOAD_TOO_LARGE, json!({ "detail": detail })),
            Self::MethodNotAllowed(method) => {
                (StatusCode::METHOD_NOT_ALLOWED, json!({ "detail": format!("Method \"{method}\" not allowed.") }))
            }
            Self::Platform(e) => {
                let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                let body = match e {
                    PlatformError::Validation { field, message } if field == "detail" => json!({ "detail": message }),
                    PlatformError::Validation { field, message } => json!({ field: [message] }),
                    PlatformError::NotFound(msg) if is_query_miss(&msg) => json!(msg),
                    PlatformError::Internal(msg) => {
                        tracing::error!(error = %msg, "internal error");
                        json!({ "detail": format!("Server Error: {msg}") })
                    }
                    other => json!({ "detail": other.to_string() }),
                };
                (status, body)
            }
        };
        let mut resp = (status, axum::Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Token"));
        }
        resp
    }
}

/// Result of handlers.
pub type ApiResult<T = Response> = Result<T, ApiError>;
