//! The controller's HTTP API: the Deis Workflow v2.3 REST API (so existing Workflow
//! clients keep working) plus our extensions, on top of [`Controller`].
//!
//! [`router`] builds an `axum::Router`; serve it with [`serve`], which cuts off slow
//! clients and caps connections ([`ApiLimits`]; plain `axum::serve` does neither):
//!
//! ```no_run
//! # async fn demo(controller: std::sync::Arc<deis_sdk::controller::Controller>) -> std::io::Result<()> {
//! use deis_sdk::controller::{ApiLimits, router, serve};
//!
//! let limits = ApiLimits::default();
//! let app = router(controller, limits);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8000").await?;
//! serve(listener, app, limits, async {
//!     deis_sdk::shutdown_signal().await;
//! })
//! .await;
//! # Ok(()) }
//! ```
//!
//! Conventions (`docs/CONTROLLER-API.md` §1): every response, errors included, carries
//! `DEIS_API_VERSION: 2.3` and `DEIS_PLATFORM_VERSION: 2.3.0`; every route answers
//! with or without a trailing slash (never a redirect); path segments are
//! percent-decoded; `Authorization: token <t>`; an empty body is `{}`; JSON bodies are
//! limited to [`ApiLimits::max_json_bytes`] (413 beyond); errors are JSON as in §1.6.
//! Each request is logged at debug level with method, path, status and duration.

mod addons;
mod apps;
mod auth;
mod builds;
mod certs;
mod config;
mod domains;
mod drains;
mod error;
pub(crate) mod extract;
mod ingest;
mod keys;
mod logs;
mod perms;
#[cfg(feature = "registry")]
mod pin;
mod ps;
#[cfg(feature = "registry")]
mod push;
mod run;
mod serve;
mod settings;

use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use http::{HeaderName, HeaderValue, Method, StatusCode};

pub use addons::{MAX_WAIT as MAX_ADDON_WAIT, addons_router};
pub use deis_core::controller::*;
pub use drains::{PlatformListeners, sync_drains};
pub use error::{ApiError, ApiResult, controller_error_response};
pub use extract::{AppPath, AuthUser, DEFAULT_PAGE, JsonBody, MAX_PAGE, MaybeUser, Page};
pub use logs::{DEFAULT_LOG_LINES, FollowShutdown, HEARTBEAT, MAX_LOG_LINES, MAX_LOGS_BODY};
#[cfg(feature = "registry")]
pub use push::{PlatformRegistry, RegistryTokens, push_routes};
pub use serve::{serve, serve_with_grace};

/// The API version Workflow clients check (`DEIS_API_VERSION`).
pub const API_VERSION: &str = "2.3";
/// The platform version reported in `DEIS_PLATFORM_VERSION`.
pub const PLATFORM_VERSION: &str = "2.3.0";

/// Limits of the API: request bodies and connections (see [`serve`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiLimits {
    /// Largest JSON body (default 1 MiB).
    pub max_json_bytes: usize,
    /// Largest source tarball upload to `POST /v2/apps/<app>/builds/` (default 256 MiB).
    pub max_upload_bytes: usize,
    /// Time a connection has to send a request head (default 30 s).
    pub header_read_timeout: Duration,
    /// Most connections open at once (default 1024).
    pub max_connections: usize,
    /// Most source uploads read and unpacked at once (default 4); more get a 503 with
    /// `Retry-After`, so uploads can't fill the memory and disk together.
    pub max_concurrent_uploads: usize,
}

impl Default for ApiLimits {
    fn default() -> Self {
        Self {
            max_json_bytes: 1 << 20,
            max_upload_bytes: 256 << 20,
            header_read_timeout: Duration::from_secs(30),
            max_connections: 1024,
            max_concurrent_uploads: 4,
        }
    }
}

/// What handlers share.
#[derive(Debug, Clone)]
pub struct ApiState {
    /// The controller logic.
    pub controller: Arc<Controller>,
    /// Body limits.
    pub limits: ApiLimits,
    /// Permits for source uploads ([`ApiLimits::max_concurrent_uploads`]).
    pub uploads: Arc<tokio::sync::Semaphore>,
}

impl ApiState {
    /// The state of routes on `controller` with `limits` (and upload permits of their own).
    pub fn new(controller: Arc<Controller>, limits: ApiLimits) -> Self {
        let uploads = Arc::new(tokio::sync::Semaphore::new(limits.max_concurrent_uploads.max(1)));
        Self { controller, limits, uploads }
    }
}

/// Adds `path` and `path/` (the API accepts both everywhere, and never redirects).
fn both(router: Router<ApiState>, path: &str, methods: MethodRouter<ApiState>) -> Router<ApiState> {
    let trimmed = path.trim_end_matches('/');
    router.route(trimmed, methods.clone()).route(&format!("{trimmed}/"), methods)
}

/// The controller API on `platform`. See the module docs for the conventions.
pub fn router(controller: Arc<Controller>, limits: ApiLimits) -> Router {
    use axum::routing::{delete, patch, post};
    let r = Router::new();
    let r = r
        .route("/healthz", get(health))
        .route("/healthz/", get(health))
        .route("/readiness", get(health))
        .route("/readiness/", get(health));
    let r = both(r, "/v2", get(api_root));
    // Auth and users.
    let r = both(r, "/v2/auth/register", post(auth::register));
    let r = both(r, "/v2/auth/login", post(auth::login));
    let r = both(r, "/v2/auth/whoami", get(auth::whoami));
    let r = both(r, "/v2/auth/cancel", delete(auth::cancel));
    let r = both(r, "/v2/auth/passwd", post(auth::passwd));
    let r = both(r, "/v2/auth/tokens", post(auth::tokens));
    let r = both(r, "/v2/users", get(auth::list_users));
    let r = both(r, "/v2/users/{username}/enable", patch(perms::enable_user).post(perms::enable_user));
    let r = both(r, "/v2/users/{username}/disable", patch(perms::disable_user).post(perms::disable_user));
    let r = both(r, "/v2/admin/perms", get(perms::list_admins).post(perms::grant_admin));
    let r = both(r, "/v2/admin/perms/{username}", delete(perms::revoke_admin));
    let r = both(r, "/v2/keys", get(keys::list).post(keys::add));
    let r = both(r, "/v2/keys/{id}", delete(keys::remove));
    let r = both(r, "/v2/nodes", get(auth::list_nodes));
    let r = both(r, "/v2/certs", get(certs::list).post(certs::add));
    let r = both(r, "/v2/certs/{name}", get(certs::info).delete(certs::remove));
    let r = both(r, "/v2/certs/{name}/domain", post(certs::attach));
    let r = both(r, "/v2/certs/{name}/domain/{domain}", delete(certs::detach));
    // Apps.
    let r = both(r, "/v2/apps", get(apps::list).post(apps::create));
    let r = both(r, "/v2/apps/{app}", get(apps::info).post(apps::transfer).delete(apps::destroy));
    let r = both(r, "/v2/apps/{app}/settings", get(settings::get).post(settings::update));
    let r = both(r, "/v2/apps/{app}/tls", get(settings::get_tls).post(settings::set_tls));
    let r =
        both(r, "/v2/apps/{app}/whitelist", get(settings::whitelist).post(settings::allow).delete(settings::disallow));
    let r = both(r, "/v2/apps/{app}/perms", get(perms::list_collaborators).post(perms::add_collaborator));
    let r = both(r, "/v2/apps/{app}/perms/{username}", delete(perms::remove_collaborator));
    let r = both(r, "/v2/apps/{app}/config", get(config::get_config).post(config::set_config));
    let r = both(r, "/v2/apps/{app}/builds", get(builds::list).post(builds::create));
    let r = both(r, "/v2/apps/{app}/releases", get(config::releases));
    let r = both(r, "/v2/apps/{app}/releases/rollback", post(config::rollback));
    let r = both(r, "/v2/apps/{app}/releases/{version}", get(config::release));
    let r = both(r, "/v2/apps/{app}/scale", post(ps::scale));
    let r = both(r, "/v2/apps/{app}/pods", get(ps::list));
    let r = both(r, "/v2/apps/{app}/pods/restart", post(ps::restart_all));
    let r = both(r, "/v2/apps/{app}/pods/{ptype}/restart", post(ps::restart_type));
    let r = both(r, "/v2/apps/{app}/pods/{ptype}/{name}/restart", post(ps::restart_unit));
    let r = both(r, "/v2/apps/{app}/domains", get(domains::list).post(domains::add));
    let r = both(r, "/v2/apps/{app}/domains/{domain}", delete(domains::remove));
    let r = both(r, "/v2/apps/{app}/run", post(run::run));
    let r = both(r, "/v2/apps/{app}/sessions", post(run::create_session));
    let r = both(r, "/v2/apps/{app}/logs", get(logs::logs));
    let r = both(r, "/v2/apps/{app}/logs/follow", get(logs::follow));
    let r = both(r, "/v2/apps/{app}/logs/token", get(ingest::show).post(ingest::rotate));
    let r = both(r, "/v2/apps/{app}/drains", get(drains::list).post(drains::add));
    let r = both(r, "/v2/apps/{app}/drains/{drain}", delete(drains::remove));
    r.fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(version_headers))
        .with_state(ApiState::new(controller, limits))
}

static API_VERSION_HEADER: HeaderName = HeaderName::from_static("deis_api_version");
static PLATFORM_VERSION_HEADER: HeaderName = HeaderName::from_static("deis_platform_version");

/// Adds the version headers to every response and logs the request.
async fn version_headers(req: Request, next: Next) -> Response {
    let (method, path, start) = (req.method().clone(), req.uri().path().to_string(), Instant::now());
    let mut resp = next.run(req).await;
    let headers = resp.headers_mut();
    headers.insert(API_VERSION_HEADER.clone(), HeaderValue::from_static(API_VERSION));
    headers.insert(PLATFORM_VERSION_HEADER.clone(), HeaderValue::from_static(PLATFORM_VERSION));
    tracing::debug!(%method, path, status = resp.status().as_u16(), elapsed_us = start.elapsed().as_micros() as u64, "api request");
    resp
}

/// `GET /healthz`: `OK` when the store answers a read; 503 with the store's error
/// otherwise (a load balancer then takes this replica out of rotation).
async fn health(State(state): State<ApiState>) -> Response {
    match state.controller.store().get("healthz").await {
        Ok(_) => "OK".into_response(),
        Err(e) => json(StatusCode::SERVICE_UNAVAILABLE, serde_json::json!({ "detail": e.to_string() })),
    }
}

/// `GET /v2/`: 401 without a token (the CLI's connection probe), `{}` with one.
async fn api_root(_: AuthUser) -> Response {
    axum::Json(serde_json::json!({})).into_response()
}

async fn not_found() -> ApiError {
    ApiError::NoRoute
}

async fn method_not_allowed(method: Method) -> ApiError {
    ApiError::MethodNotAllowed(method.to_string())
}

/// A JSON response with a status.
fn json(status: StatusCode, body: impl serde::Serialize) -> Response {
    (status, axum::Json(body)).into_response()
}

#[cfg(test)]
mod tests;
