//! Request extraction: token auth, the app of the path, bounded JSON bodies, pagination.

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, FromRequestParts, Query, RawPathParams, Request};
use axum::response::{IntoResponse, Response};
use deis_core::controller::{ControllerError, ResourceKind};
use deis_core::{AppName, User};
use http::request::Parts;
use http::{StatusCode, header};
use http_body_util::BodyExt;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::ApiState;
use super::error::ApiError;

/// The token of an `Authorization: token <t>` header (keyword case-insensitive);
/// `None` if there is no such header or another scheme.
pub(crate) fn token(parts: &Parts) -> Option<Result<String, ApiError>> {
    let value = parts.headers.get(header::AUTHORIZATION)?;
    let Ok(value) = value.to_str() else {
        return Some(Err(ApiError::Unauthenticated("Invalid token header.")));
    };
    let mut words = value.split_whitespace();
    if !words.next()?.eq_ignore_ascii_case("token") {
        return None;
    }
    match (words.next(), words.next()) {
        (Some(t), None) => Some(Ok(t.to_string())),
        (None, _) => Some(Err(ApiError::Unauthenticated("Invalid token header. No credentials provided."))),
        _ => Some(Err(ApiError::Unauthenticated("Invalid token header. Token string should not contain spaces."))),
    }
}

/// The authenticated caller; 401 without a valid token.
#[derive(Debug, Clone)]
pub struct AuthUser(pub User);

impl FromRequestParts<ApiState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        match token(parts) {
            None => Err(ApiError::Unauthenticated("Authentication credentials were not provided.")),
            Some(t) => Ok(Self(state.controller.authenticate(&t?).await?)),
        }
    }
}

/// The caller if the request carries a token (which must then be valid).
#[derive(Debug, Clone)]
pub struct MaybeUser(pub Option<User>);

impl FromRequestParts<ApiState> for MaybeUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        match token(parts) {
            None => Ok(Self(None)),
            Some(t) => Ok(Self(Some(state.controller.authenticate(&t?).await?))),
        }
    }
}

/// The app a route's `{app}` segment names. A segment that can't be an app name is
/// answered as an unknown app is (404 `"No App matches the given query."`), so an
/// invalid name never reaches the platform.
#[derive(Debug, Clone)]
pub struct AppPath(pub AppName);

impl<S: Send + Sync> FromRequestParts<S> for AppPath {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        let params = RawPathParams::from_request_parts(parts, state).await.map_err(IntoResponse::into_response)?;
        let Some((_, raw)) = params.iter().find(|(name, _)| *name == "app") else {
            return Err(ApiError::NoRoute.into_response());
        };
        AppName::new(raw)
            .map(Self)
            .map_err(|_| ApiError::from(ControllerError::not_found(ResourceKind::App, raw)).into_response())
    }
}

/// Reads a body of at most `limit` bytes; 413 beyond.
pub async fn read_body(body: Body, declared: Option<u64>, limit: usize) -> Result<Bytes, ApiError> {
    let too_large = || ApiError::TooLarge(format!("request body exceeds the limit of {limit} bytes"));
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(e) => Err(ApiError::bad_request(format!("could not read the request body: {e}"))),
    }
}

/// The declared `Content-Length`, if any.
pub fn content_length(headers: &http::HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// Parses a JSON body; an empty body is `{}`.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let bytes = if bytes.iter().all(u8::is_ascii_whitespace) { &b"{}"[..] } else { bytes };
    serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ApiError::bad_request(format!("invalid request body: {e}")),
        _ => ApiError::bad_request(format!("malformed JSON: {e}")),
    })
}

/// A JSON request body, bounded by [`super::ApiLimits::max_json_bytes`]. Any content
/// type is accepted (the Go SDK always says `application/json`); an empty body is `{}`.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<ApiState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &ApiState) -> Result<Self, ApiError> {
        let declared = content_length(req.headers());
        let bytes = read_body(req.into_body(), declared, state.limits.max_json_bytes).await?;
        parse_json(&bytes).map(Self)
    }
}

/// `?limit=N&offset=M` of list endpoints.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    /// Most results to return.
    pub limit: usize,
    /// Results to skip.
    pub offset: usize,
}

/// Default page size, as the reference controller's.
pub const DEFAULT_PAGE: usize = 100;
/// Largest page size.
pub const MAX_PAGE: usize = 1000;

/// `limit` and `offset` as sent; checked by [`Page::from_request_parts`].
#[derive(Debug, Default, serde::Deserialize)]
struct PageParams {
    limit: Option<String>,
    offset: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for Page {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let Query(params) =
            Query::<PageParams>::try_from_uri(&parts.uri).map_err(|e| ApiError::bad_request(e.body_text()))?;
        let number = |value: Option<String>, what: &str| {
            value
                .map(|v| v.parse::<usize>())
                .transpose()
                .map_err(|_| ApiError::bad_request(format!("{what} must be a non-negative integer")))
        };
        Ok(Page {
            limit: number(params.limit, "limit")?.map_or(DEFAULT_PAGE, |n| n.clamp(1, MAX_PAGE)),
            offset: number(params.offset, "offset")?.unwrap_or(0),
        })
    }
}

impl Page {
    /// `{"count", "next", "previous", "results"}` of `items`; `count` is the total.
    pub fn render<T: Serialize>(&self, items: Vec<T>) -> Response {
        let count = items.len();
        let next = (self.offset + self.limit < count)
            .then(|| format!("?limit={}&offset={}", self.limit, self.offset + self.limit));
        let previous = (self.offset > 0)
            .then(|| format!("?limit={}&offset={}", self.limit, self.offset.saturating_sub(self.limit)));
        let results: Vec<T> = items.into_iter().skip(self.offset).take(self.limit).collect();
        let body = serde_json::json!({ "count": count, "next": next, "previous": previous, "results": results });
        (StatusCode::OK, axum::Json(body)).into_response()
    }
}
