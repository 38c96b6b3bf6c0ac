//! `deis push` (feature `registry`): images pushed from a developer's machine to the
//! platform registry, under the app's repository, then built by digest.
//!
//! - `GET /v2/apps/<app>/push/`: where to push (`registry`, `repository`), the
//!   credentials to push with, and `mount_from`: the caller's other apps, whose
//!   repositories may already hold some blobs (cross-repository mounts).
//! - `POST /v2/apps/<app>/push/` `{"digest": "sha256:…", "procfile": {…}}`: 201 Build.
//!   The registry must hold that manifest in the app's repository (a push that did
//!   not finish never becomes a build); the build's image is
//!   `<registry>/<app>@<digest>`, so schedulers pull it by digest.
//!
//! Both are for the app's members (owner, collaborators, admins). The credentials
//! handed out are the platform registry's: anyone who may deploy an app may push to
//! the registry.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::routing::get;
use axum::{Extension, Router};
use deis_core::controller::BuildInput;
use http::StatusCode;
use serde::Deserialize;
use serde_json::json;

use super::error::{ApiError, ApiResult};
use super::extract::{AppPath, AuthUser, JsonBody};
use super::{ApiLimits, ApiState, Controller, both, json};
use crate::registry::manifest::check_digest;
use crate::registry::{PushError, RegistryClient, RegistryLogin};

/// The platform registry images are pushed to (what `deisd --registry` sets).
#[derive(Debug, Clone)]
pub struct PlatformRegistry {
    /// A client of it, logged in with the platform's credentials.
    pub client: RegistryClient,
    /// Those credentials, handed to pushers.
    pub login: Option<RegistryLogin>,
}

impl PlatformRegistry {
    /// The registry at `client`'s address, pushed to with `login`.
    pub fn new(address: crate::registry::RegistryAddress, login: Option<RegistryLogin>) -> Self {
        Self { client: RegistryClient::new(address, login.clone()), login }
    }
}

/// The `deis push` routes, to serve next to [`super::router`] (e.g. with
/// [`crate::Platform`]'s `api_routes`).
pub fn push_routes(controller: std::sync::Arc<Controller>, limits: ApiLimits, registry: PlatformRegistry) -> Router {
    let r = both(Router::new(), "/v2/apps/{app}/push", get(grant).post(build));
    r.layer(Extension(registry)).with_state(ApiState::new(controller, limits))
}

async fn grant(
    State(s): State<ApiState>,
    Extension(registry): Extension<PlatformRegistry>,
    AuthUser(user): AuthUser,
    AppPath(app): AppPath,
) -> ApiResult {
    s.controller.app(&user, &app).await?;
    let others: Vec<String> =
        s.controller.list_apps(&user).await?.into_iter().filter(|a| a.id != app).map(|a| a.id.to_string()).collect();
    let login = registry.login.as_ref();
    Ok(json(
        StatusCode::OK,
        json!({
            "registry": registry.client.address().url(),
            "repository": app.to_string(),
            "username": login.map(|l| l.username.clone()),
            "password": login.map(|l| l.password.clone()),
            "mount_from": others,
        }),
    ))
}

#[derive(Debug, Deserialize)]
struct PushedBody {
    digest: Option<String>,
    #[serde(default)]
    procfile: Option<BTreeMap<String, String>>,
}

async fn build(
    State(s): State<ApiState>,
    Extension(registry): Extension<PlatformRegistry>,
    AuthUser(user): AuthUser,
    AppPath(app): AppPath,
    JsonBody(body): JsonBody<PushedBody>,
) -> ApiResult {
    s.controller.app(&user, &app).await?;
    let digest = body.digest.ok_or_else(|| ApiError::required("digest"))?;
    check_digest("the pushed image", &digest).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let found = registry.client.has_manifest(app.as_str(), &digest).await.map_err(|e| match e {
        PushError::Unauthorized { .. } => {
            ApiError::Internal(format!("the platform registry refused the platform's credentials: {e}").into())
        }
        other => ApiError::Internal(other.to_string().into()),
    })?;
    if !found {
        return Err(ApiError::bad_request(format!(
            "the platform registry has no image {digest} in repository {app}: push it first (deis push IMAGE -a {app})"
        )));
    }
    let procfile = super::builds::procfile_of(body.procfile)?;
    let image = format!("{}/{app}@{digest}", registry.client.host());
    let outcome = s.controller.create_build(&user, &app, BuildInput::Image { image, procfile }).await?;
    let mut body = serde_json::to_value(&outcome.build).unwrap_or_default();
    if let Some(w) = outcome.warning {
        body["warning"] = serde_json::Value::String(w);
    }
    Ok(json(StatusCode::CREATED, body))
}
