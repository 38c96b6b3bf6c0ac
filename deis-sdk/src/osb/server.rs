//! The OSB HTTP server: any [`ServiceBroker`] as an axum router, exactly per the spec.
//!
//! Every request is checked in this order: basic auth (401; credentials compared in
//! constant time), `X-Broker-API-Version` (412 when missing or not 2.17+),
//! `X-Broker-API-Originating-Identity` (passed to the broker, which records it; left
//! out when malformed), the query (`accepts_incomplete`, `service_id`, `plan_id`, `operation`)
//! and the JSON body (400 when invalid, 413 past the limit). Errors are the spec's body
//! `{"error": ..., "description": ...}` with the status [`BrokerError::status`] gives.
//! `X-Broker-API-Request-Identity` is echoed on the response.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use deis_core::broker::{
    BindRequest, BrokerError, ErrorBody, ProvisionRequest, Reply, RequestContext, ServiceBroker, UpdateRequest,
};
use http_body_util::BodyExt;
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::request::{self, DEFAULT_MAX_BODY_BYTES, HeaderRefusal};

/// Basic-auth credentials a platform must send.
#[derive(Clone)]
pub struct BasicAuth {
    username: String,
    password: String,
}

impl std::fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicAuth").field("username", &self.username).finish_non_exhaustive()
    }
}

impl BasicAuth {
    /// Credentials `username:password`.
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Self { username: username.into(), password: password.into() }
    }

    /// The `Authorization` header value a client sends.
    pub fn header(&self) -> String {
        use base64::Engine;
        let pair = format!("{}:{}", self.username, self.password);
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair))
    }

    /// Whether an `Authorization` header carries these credentials. Compares digests in
    /// constant time, so neither the content nor the length leaks through timing.
    pub fn allows(&self, header: Option<&str>) -> bool {
        let given = header.unwrap_or("").as_bytes();
        let want = self.header();
        Sha256::digest(given).ct_eq(&Sha256::digest(want.as_bytes())).into()
    }
}

/// How the server runs.
#[derive(Debug, Clone)]
pub struct OsbServerConfig {
    /// Credentials required on every request (`None`: no auth, for tests and a broker
    /// reachable only from a trusted network).
    pub auth: Option<BasicAuth>,
    /// The largest request body read.
    pub max_body_bytes: usize,
}

impl Default for OsbServerConfig {
    fn default() -> Self {
        Self { auth: None, max_body_bytes: DEFAULT_MAX_BODY_BYTES }
    }
}

#[derive(Debug)]
struct ServerState {
    broker: Arc<dyn ServiceBroker>,
    config: OsbServerConfig,
}

type Shared = State<Arc<ServerState>>;

/// The OSB API of `broker` (routes under `/v2/`).
pub fn router(broker: Arc<dyn ServiceBroker>, config: OsbServerConfig) -> Router {
    let state = Arc::new(ServerState { broker, config });
    Router::new()
        .route("/v2/catalog", get(catalog))
        .route("/v2/service_instances/{instance_id}", get(instance).put(provision).patch(update).delete(deprovision))
        .route("/v2/service_instances/{instance_id}/last_operation", get(last_operation))
        .route(
            "/v2/service_instances/{instance_id}/service_bindings/{binding_id}",
            get(binding).put(bind).delete(unbind),
        )
        .route(
            "/v2/service_instances/{instance_id}/service_bindings/{binding_id}/last_operation",
            get(binding_last_operation),
        )
        .layer(middleware::from_fn_with_state(state.clone(), check_headers))
        .with_state(state)
}

fn error_response(status: StatusCode, error: Option<&str>, description: String) -> Response {
    let body = ErrorBody { error: error.map(str::to_string), description: Some(description), ..ErrorBody::default() };
    (status, axum::Json(body)).into_response()
}

/// A broker error as the spec's answer.
fn failure(e: BrokerError) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if status.is_server_error() {
        tracing::warn!(error = %e, "broker request failed");
    }
    (status, axum::Json(e.body())).into_response()
}

fn reply<T: Serialize>(r: deis_core::broker::Result<Reply<T>>) -> Response {
    match r {
        Ok(Reply { status, body }) => {
            (StatusCode::from_u16(status.code()).expect("a 2xx"), axum::Json(body)).into_response()
        }
        Err(e) => failure(e),
    }
}

fn ok<T: Serialize>(r: deis_core::broker::Result<T>) -> Response {
    match r {
        Ok(body) => (StatusCode::OK, axum::Json(body)).into_response(),
        Err(e) => failure(e),
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

async fn check_headers(State(state): Shared, mut request: Request, next: Next) -> Response {
    let headers = request.headers();
    if let Some(auth) = &state.config.auth
        && !auth.allows(header(headers, "authorization"))
    {
        let mut response = error_response(
            StatusCode::UNAUTHORIZED,
            None,
            "authentication failed: send the broker's basic-auth credentials".into(),
        );
        response.headers_mut().insert("www-authenticate", HeaderValue::from_static("Basic realm=\"broker\""));
        return response;
    }
    if let Err(HeaderRefusal::Version(m)) = request::check_version(header(headers, "x-broker-api-version")) {
        return error_response(StatusCode::PRECONDITION_FAILED, None, m);
    }
    let ctx = request::context(
        header(headers, "x-broker-api-originating-identity"),
        header(headers, "x-broker-api-request-identity"),
    );
    let echo = ctx.request_identity.clone().and_then(|r| HeaderValue::from_str(&r).ok());
    request.extensions_mut().insert(ctx);
    let mut response = next.run(request).await;
    if let Some(echo) = echo {
        response.headers_mut().insert("x-broker-api-request-identity", echo);
    }
    response
}

/// A refusal before the broker is called (boxed: responses are large).
type Refused = Box<Response>;

/// Reads the body up to the limit: 413 past it.
async fn read_body(body: Body, max: usize) -> Result<Bytes, Refused> {
    let refused = |status, message| Box::new(error_response(status, None, message));
    match http_body_util::Limited::new(body, max).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(refused(StatusCode::PAYLOAD_TOO_LARGE, format!("the body is larger than {max} bytes")))
        }
        Err(e) => Err(refused(StatusCode::BAD_REQUEST, format!("reading the body: {e}"))),
    }
}

/// The request context the header check put in.
fn ctx(request: &Request) -> RequestContext {
    request.extensions().get::<RequestContext>().cloned().unwrap_or_default()
}

/// Splits a request into its context, query and body parsed as `T`.
async fn parts<T: serde::de::DeserializeOwned>(
    state: &ServerState,
    query: Option<&str>,
    request: Request,
) -> Result<(RequestContext, request::Query, T), Refused> {
    let ctx = ctx(&request);
    let query = query_only(query)?;
    let bytes = read_body(request.into_body(), state.config.max_body_bytes).await?;
    let body = request::body(&bytes, state.config.max_body_bytes).map_err(|e| Box::new(failure(e)))?;
    Ok((ctx, query, body))
}

fn query_only(query: Option<&str>) -> Result<request::Query, Refused> {
    request::query(query).map_err(|e| Box::new(failure(e)))
}

async fn catalog(State(state): Shared, request: Request) -> Response {
    ok(state.broker.catalog(&ctx(&request)).await)
}

async fn provision(
    State(state): Shared,
    Path(instance_id): Path<String>,
    RawQuery(query): RawQuery,
    request: Request,
) -> Response {
    match parts::<ProvisionRequest>(&state, query.as_deref(), request).await {
        Ok((ctx, q, body)) => reply(state.broker.provision(&ctx, &instance_id, body, q.accepts_incomplete).await),
        Err(r) => *r,
    }
}

async fn update(
    State(state): Shared,
    Path(instance_id): Path<String>,
    RawQuery(query): RawQuery,
    request: Request,
) -> Response {
    match parts::<UpdateRequest>(&state, query.as_deref(), request).await {
        Ok((ctx, q, body)) => reply(state.broker.update(&ctx, &instance_id, body, q.accepts_incomplete).await),
        Err(r) => *r,
    }
}

async fn deprovision(
    State(state): Shared,
    Path(instance_id): Path<String>,
    RawQuery(query): RawQuery,
    request: Request,
) -> Response {
    let q = match query_only(query.as_deref()) {
        Ok(q) => q,
        Err(r) => return *r,
    };
    match q.delete_request() {
        Ok(d) => reply(state.broker.deprovision(&ctx(&request), &instance_id, d, q.accepts_incomplete).await),
        Err(e) => failure(e),
    }
}

async fn instance(State(state): Shared, Path(instance_id): Path<String>, request: Request) -> Response {
    ok(state.broker.instance(&ctx(&request), &instance_id).await)
}

async fn last_operation(
    State(state): Shared,
    Path(instance_id): Path<String>,
    RawQuery(query): RawQuery,
    request: Request,
) -> Response {
    match query_only(query.as_deref()) {
        Ok(q) => ok(state.broker.last_operation(&ctx(&request), &instance_id, q.poll_request()).await),
        Err(r) => *r,
    }
}

async fn bind(
    State(state): Shared,
    Path((instance_id, binding_id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    request: Request,
) -> Response {
    match parts::<BindRequest>(&state, query.as_deref(), request).await {
        Ok((ctx, q, body)) => {
            reply(state.broker.bind(&ctx, &instance_id, &binding_id, body, q.accepts_incomplete).await)
        }
        Err(r) => *r,
    }
}

async fn unbind(
    State(state): Shared,
    Path((instance_id, binding_id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    request: Request,
) -> Response {
    let q = match query_only(query.as_deref()) {
        Ok(q) => q,
        Err(r) => return *r,
    };
    match q.delete_request() {
        Ok(d) => reply(state.broker.unbind(&ctx(&request), &instance_id, &binding_id, d, q.accepts_incomplete).await),
        Err(e) => failure(e),
    }
}

async fn binding(
    State(state): Shared,
    Path((instance_id, binding_id)): Path<(String, String)>,
    request: Request,
) -> Response {
    ok(state.broker.binding(&ctx(&request), &instance_id, &binding_id).await)
}

async fn binding_last_operation(
    State(state): Shared,
    Path((instance_id, binding_id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    request: Request,
) -> Response {
    match query_only(query.as_deref()) {
        Ok(q) => {
            ok(state.broker.binding_last_operation(&ctx(&request), &instance_id, &binding_id, q.poll_request()).await)
        }
        Err(r) => *r,
    }
}
