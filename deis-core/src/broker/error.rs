//! [`BrokerError`]: what a broker answers when a request fails, with the spec's status
//! and error code for each case.

use super::types::ErrorBody;
use crate::store::StoreError;

/// `AsyncRequired`'s description, verbatim (widely used clients match it).
pub const ASYNC_REQUIRED_DESCRIPTION: &str =
    "This service plan requires client support for asynchronous service operations.";
/// `RequiresApp`'s description, verbatim.
pub const REQUIRES_APP_DESCRIPTION: &str =
    "This service supports generation of credentials through binding an application only.";
/// `ConcurrencyError`'s description, verbatim.
pub const CONCURRENCY_ERROR_DESCRIPTION: &str =
    "The Service Broker does not support concurrent requests that mutate the same resource.";
/// `MaintenanceInfoConflict`'s description.
pub const MAINTENANCE_INFO_CONFLICT_DESCRIPTION: &str =
    "The maintenance information for the requested Service Plan has changed.";

/// Why a broker operation failed. Each variant is one answer of the spec; [`status`]
/// and [`body`] give the HTTP form.
///
/// [`status`]: BrokerError::status
/// [`body`]: BrokerError::body
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// 400: the request is malformed or names what the catalog does not have.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// 404: the instance or binding does not exist (fetch, poll).
    #[error("not found: {0}")]
    NotFound(String),
    /// 409: it exists with different attributes.
    #[error("conflict: {0}")]
    Conflict(String),
    /// 410: it does not exist (delete; poll after an asynchronous delete).
    #[error("gone: {0}")]
    Gone(String),
    /// 422 `AsyncRequired`: the plan needs `accepts_incomplete=true`.
    #[error("{ASYNC_REQUIRED_DESCRIPTION}")]
    AsyncRequired,
    /// 422 `ConcurrencyError`: another operation on the resource is in progress.
    #[error("{CONCURRENCY_ERROR_DESCRIPTION}")]
    ConcurrencyError,
    /// 422 `RequiresApp`: the binding must name an app.
    #[error("{REQUIRES_APP_DESCRIPTION}")]
    RequiresApp,
    /// 422 `MaintenanceInfoConflict`: the plan's maintenance version changed.
    #[error("{MAINTENANCE_INFO_CONFLICT_DESCRIPTION}")]
    MaintenanceInfoConflict,
    /// 422 without a code: the change is not supported or not possible now.
    #[error("unprocessable: {0}")]
    Unprocessable(String),
    /// 500: the service behind the broker failed; the message says how.
    #[error("the service failed: {0}")]
    Backend(String),
    /// 500: the broker's state could not be read or written.
    #[error("broker state: {0}")]
    Store(#[from] StoreError),
    /// A remote broker answered with an error (the OSB client); `status` is its HTTP
    /// status.
    #[error("the broker answered {status}: {}", describe(.body))]
    Remote {
        /// HTTP status.
        status: u16,
        /// Its error body (empty when it sent none).
        body: ErrorBody,
    },
    /// A remote broker could not be reached or answered something that is not OSB
    /// (the OSB client).
    #[error("talking to the broker: {0}")]
    Transport(String),
    /// A remote broker did not answer in time (the OSB client).
    #[error("the broker did not answer within {0:?}")]
    Timeout(std::time::Duration),
}

fn describe(body: &ErrorBody) -> String {
    match (&body.error, &body.description) {
        (Some(e), Some(d)) => format!("{e}: {d}"),
        (Some(e), None) => e.clone(),
        (None, Some(d)) => d.clone(),
        (None, None) => "no description".into(),
    }
}

impl BrokerError {
    /// The HTTP status the spec gives this failure.
    pub fn status(&self) -> u16 {
        match self {
            Self::BadRequest(_) => 400,
            Self::NotFound(_) => 404,
            Self::Conflict(_) => 409,
            Self::Gone(_) => 410,
            Self::AsyncRequired
            | Self::ConcurrencyError
            | Self::RequiresApp
            | Self::MaintenanceInfoConflict
            | Self::Unprocessable(_) => 422,
            Self::Backend(_) | Self::Store(_) | Self::Transport(_) => 500,
            Self::Remote { status, .. } => *status,
            Self::Timeout(_) => 504,
        }
    }

    /// The spec's error code, for the failures that have one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::AsyncRequired => Some("AsyncRequired"),
            Self::ConcurrencyError => Some("ConcurrencyError"),
            Self::RequiresApp => Some("RequiresApp"),
            Self::MaintenanceInfoConflict => Some("MaintenanceInfoConflict"),
            Self::Remote { body, .. } => body.error.as_deref(),
            _ => None,
        }
    }

    /// The error body to answer with.
    pub fn body(&self) -> ErrorBody {
        if let Self::Remote { body, .. } = self {
            return body.clone();
        }
        let description = match self {
            Self::BadRequest(m)
            | Self::NotFound(m)
            | Self::Conflict(m)
            | Self::Gone(m)
            | Self::Unprocessable(m)
            | Self::Backend(m) => m.clone(),
            other => other.to_string(),
        };
        ErrorBody { error: self.code().map(str::to_string), description: Some(description), ..ErrorBody::default() }
    }

    /// The error a remote broker's answer means: the spec's codes become their
    /// variants, so callers match on them whichever side the broker is.
    pub fn from_remote(status: u16, body: ErrorBody) -> Self {
        let description = || body.description.clone().unwrap_or_default();
        match (status, body.error.as_deref()) {
            (422, Some("AsyncRequired")) => Self::AsyncRequired,
            (422, Some("ConcurrencyError")) => Self::ConcurrencyError,
            (422, Some("RequiresApp")) => Self::RequiresApp,
            (422, Some("MaintenanceInfoConflict")) => Self::MaintenanceInfoConflict,
            (400, _) => Self::BadRequest(description()),
            (404, _) => Self::NotFound(description()),
            (409, _) => Self::Conflict(description()),
            (410, _) => Self::Gone(description()),
            (422, None) => Self::Unprocessable(description()),
            _ => Self::Remote { status, body },
        }
    }

    /// Whether this is a 4xx (the request was refused and changed nothing).
    pub fn is_client_error(&self) -> bool {
        (400..500).contains(&self.status())
    }
}

/// Result of broker operations.
pub type Result<T, E = BrokerError> = std::result::Result<T, E>;
