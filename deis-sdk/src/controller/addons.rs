//! Add-ons, services and brokers over the controller API ([`crate::addons`]).
//!
//! | route | what | who |
//! |---|---|---|
//! | `GET /v2/services` | the merged catalog | any user |
//! | `GET`, `POST /v2/brokers`; `DELETE /v2/brokers/<name>` | the broker registry | admins |
//! | `GET`, `POST /v2/apps/<app>/addons` | an app's add-ons; create one | owner, collaborators, admins |
//! | `GET`, `DELETE /v2/addons/<name>` | one add-on; destroy it | who may use its app (or an attached one) |
//! | `GET /v2/addons/<name>/wait?timeout=<secs>` | wait for provisioning | same |
//! | `POST /v2/addons/<name>/attachments` `{"app", "as"}` | attach to another app | who may use both apps |
//! | `DELETE /v2/addons/<name>/attachments/<app>` | detach | who may use the app |

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Extension, Router};
use deis_core::AppName;
use http::StatusCode;
use serde::Deserialize;
use serde_json::json;

use super::extract::{AppPath, AuthUser, JsonBody};
use super::{ApiLimits, ApiState, both, controller_error_response};
use crate::addons::{AddonError, Addons, NewAddon};
use deis_core::controller::Controller;

/// The longest `addons:wait` one request waits.
pub const MAX_WAIT: Duration = Duration::from_secs(300);

impl IntoResponse for AddonError {
    fn into_response(self) -> Response {
        let detail = |status: StatusCode| (status, axum::Json(json!({ "detail": self.to_string() }))).into_response();
        match &self {
            AddonError::Controller(e) => {
                let (status, body) = controller_error_response(e);
                (status, axum::Json(body)).into_response()
            }
            AddonError::Broker { .. } => detail(StatusCode::BAD_GATEWAY),
            AddonError::Invalid(_) => detail(StatusCode::BAD_REQUEST),
            AddonError::NotFound(_) => detail(StatusCode::NOT_FOUND),
            AddonError::Conflict(_) => detail(StatusCode::CONFLICT),
            AddonError::Forbidden => detail(StatusCode::FORBIDDEN),
        }
    }
}

type AddonResult = Result<Response, AddonError>;

fn ok(status: StatusCode, body: impl serde::Serialize) -> AddonResult {
    Ok((status, axum::Json(body)).into_response())
}

/// The add-on routes, to merge into the controller API
/// ([`PlatformBuilder::api_routes`](crate::PlatformBuilder::api_routes) does).
pub fn addons_router(controller: Arc<Controller>, limits: ApiLimits, addons: Arc<Addons>) -> Router {
    let r = Router::new();
    let r = both(r, "/v2/services", get(services));
    let r = both(r, "/v2/brokers", get(list_brokers).post(add_broker));
    let r = both(r, "/v2/brokers/{name}", delete(remove_broker));
    let r = both(r, "/v2/apps/{app}/addons", get(list).post(create));
    let r = both(r, "/v2/addons/{name}", get(info).delete(destroy));
    let r = both(r, "/v2/addons/{name}/wait", get(wait));
    let r = both(r, "/v2/addons/{name}/attachments", post(attach));
    let r = both(r, "/v2/addons/{name}/attachments/{app}", delete(detach));
    r.layer(Extension(addons)).with_state(ApiState::new(controller, limits))
}

type Service = Extension<Arc<Addons>>;

async fn services(Extension(a): Service, AuthUser(user): AuthUser) -> AddonResult {
    ok(StatusCode::OK, a.services(&user).await?)
}

async fn list_brokers(Extension(a): Service, AuthUser(user): AuthUser) -> AddonResult {
    ok(StatusCode::OK, a.list_brokers(&user).await?)
}

#[derive(Debug, Deserialize)]
struct AddBrokerBody {
    name: String,
    url: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
}

async fn add_broker(
    Extension(a): Service,
    AuthUser(user): AuthUser,
    JsonBody(b): JsonBody<AddBrokerBody>,
) -> AddonResult {
    ok(StatusCode::CREATED, a.add_broker(&user, &b.name, &b.url, &b.username, &b.password).await?)
}

async fn remove_broker(Extension(a): Service, AuthUser(user): AuthUser, Path(name): Path<String>) -> AddonResult {
    a.remove_broker(&user, &name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list(
    State(_): State<ApiState>,
    Extension(a): Service,
    AuthUser(user): AuthUser,
    AppPath(app): AppPath,
) -> AddonResult {
    let addons: Vec<_> = a.list(&user, &app).await?.iter().map(|x| x.view()).collect();
    ok(StatusCode::OK, addons)
}

#[derive(Debug, Deserialize)]
struct CreateBody {
    service: String,
    #[serde(default, rename = "as")]
    alias: Option<String>,
    #[serde(default)]
    parameters: deis_core::broker::Object,
}

async fn create(
    Extension(a): Service,
    AuthUser(user): AuthUser,
    AppPath(app): AppPath,
    JsonBody(b): JsonBody<CreateBody>,
) -> AddonResult {
    let new = NewAddon { service_plan: b.service, alias: b.alias, parameters: b.parameters };
    ok(StatusCode::CREATED, a.create(&user, &app, new).await?.view())
}

async fn info(Extension(a): Service, AuthUser(user): AuthUser, Path(name): Path<String>) -> AddonResult {
    ok(StatusCode::OK, a.info(&user, &name).await?.view())
}

#[derive(Debug, Deserialize)]
struct WaitQuery {
    timeout: Option<u64>,
}

async fn wait(
    Extension(a): Service,
    AuthUser(user): AuthUser,
    Path(name): Path<String>,
    Query(q): Query<WaitQuery>,
) -> AddonResult {
    let timeout = q.timeout.map_or(MAX_WAIT, Duration::from_secs).min(MAX_WAIT);
    ok(StatusCode::OK, a.wait(&user, &name, timeout).await?.view())
}

async fn destroy(Extension(a): Service, AuthUser(user): AuthUser, Path(name): Path<String>) -> AddonResult {
    a.destroy(&user, &name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, Deserialize)]
struct AttachBody {
    app: String,
    #[serde(default, rename = "as")]
    alias: Option<String>,
}

async fn attach(
    Extension(a): Service,
    AuthUser(user): AuthUser,
    Path(name): Path<String>,
    JsonBody(b): JsonBody<AttachBody>,
) -> AddonResult {
    let app = AppName::new(b.app).map_err(|e| AddonError::Invalid(e.to_string()))?;
    ok(StatusCode::CREATED, a.attach(&user, &name, &app, b.alias.as_deref()).await?.view())
}

async fn detach(
    Extension(a): Service,
    AuthUser(user): AuthUser,
    Path((name, app)): Path<(String, String)>,
) -> AddonResult {
    let app = AppName::new(app).map_err(|e| AddonError::Invalid(e.to_string()))?;
    ok(StatusCode::OK, a.detach(&user, &name, &app).await?.view())
}
