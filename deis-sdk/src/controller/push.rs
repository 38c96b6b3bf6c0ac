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
//! - `GET /v2/registry/token?service=…&scope=repository:APP:pull,push`: the token
//!   server of a registry that takes deisd's tokens (`--registry embedded`): Basic
//!   auth with the platform's own login (any repository) or with a username and that
//!   user's API token (the repositories of apps the user is a member of; others are
//!   left out of the grant).
//!
//! The first two are for the app's members (owner, collaborators, admins). When the
//! registry takes deisd's tokens, a pusher gets a token for the app's repository
//! (push and pull) and pull on the caller's other apps (for mounts), valid for a few
//! minutes; otherwise the platform registry's own credentials are handed out, and
//! anyone who may deploy an app may push to the whole registry.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{RawQuery, State};
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
use crate::registry::token::{Access, MAX_SCOPES, TokenIssuer};
use crate::registry::{PushError, RegistryClient, RegistryLogin};

/// The platform registry images are pushed to (what `deisd --registry` sets).
#[derive(Debug, Clone)]
pub struct PlatformRegistry {
    /// A client of it, logged in with the platform's credentials.
    pub client: RegistryClient,
    /// Those credentials (engines pull with them; without `tokens` they are handed to
    /// pushers too).
    pub login: Option<RegistryLogin>,
    /// Set when the registry takes deisd's tokens: pushers get scoped tokens instead.
    pub tokens: Option<RegistryTokens>,
}

/// How deisd issues tokens for a registry that trusts it (see [`TokenIssuer`]).
#[derive(Debug, Clone)]
pub struct RegistryTokens {
    /// Signs the tokens.
    pub issuer: Arc<TokenIssuer>,
    /// How long a pusher's token lasts.
    pub ttl: Duration,
}

impl PlatformRegistry {
    /// The registry at `client`'s address, pushed to with `login`.
    pub fn new(address: crate::registry::RegistryAddress, login: Option<RegistryLogin>) -> Self {
        Self { client: RegistryClient::new(address, login.clone()), login, tokens: None }
    }

    /// A registry that takes the tokens of `tokens` (its realm is deisd's token
    /// route); the platform logs in with `login` there.
    pub fn with_tokens(
        address: crate::registry::RegistryAddress,
        login: RegistryLogin,
        tokens: RegistryTokens,
    ) -> Self {
        Self { tokens: Some(tokens), ..Self::new(address, Some(login)) }
    }
}

/// The `deis push` routes and the registry token route, to serve next to
/// [`super::router`] (e.g. with [`crate::Platform`]'s `api_routes`).
pub fn push_routes(controller: Arc<Controller>, limits: ApiLimits, registry: PlatformRegistry) -> Router {
    let r = both(Router::new(), "/v2/apps/{app}/push", get(grant).post(build));
    let r = both(r, "/v2/registry/token", get(token));
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
    if let Some(tokens) = &registry.tokens {
        let mut access = vec![Access::repository(app.as_str(), &["pull", "push"])];
        access.extend(others.iter().map(|o| Access::repository(o, &["pull"])));
        let t = tokens.issuer.issue(&user.username, &access, tokens.ttl).map_err(|e| ApiError::Internal(e.into()))?;
        return Ok(json(
            StatusCode::OK,
            json!({
                "registry": registry.client.address().url(),
                "repository": app.to_string(),
                "token": t.token,
                "expires_in": t.expires_in,
                "mount_from": others,
            }),
        ));
    }
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

/// The token server (see the module docs). Answers 401 without valid Basic
/// credentials and 404 when the registry takes no tokens.
async fn token(
    State(s): State<ApiState>,
    Extension(registry): Extension<PlatformRegistry>,
    headers: http::HeaderMap,
    RawQuery(query): RawQuery,
) -> ApiResult {
    let Some(tokens) = &registry.tokens else {
        return Err(ApiError::NoRoute);
    };
    let (username, password) = basic_credentials(&headers).ok_or(ApiError::Unauthenticated(
        "Basic credentials wanted: your username and your API token (deis auth:token)",
    ))?;
    let mut wanted = Vec::new();
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        if key == "scope" {
            wanted.extend(value.split(' ').filter_map(Access::parse_scope));
        }
    }
    if wanted.len() > MAX_SCOPES {
        return Err(ApiError::bad_request(format!("at most {MAX_SCOPES} scopes per token")));
    }
    let allowed = |a: &Access| Access {
        actions: a.actions.iter().filter(|x| *x == "pull" || *x == "push").cloned().collect(),
        ..a.clone()
    };
    let platform = registry.login.as_ref().is_some_and(|l| {
        use subtle::ConstantTimeEq;
        bool::from(l.username.as_bytes().ct_eq(username.as_bytes()) & l.password.as_bytes().ct_eq(password.as_bytes()))
    });
    let granted: Vec<Access> = if platform {
        wanted.iter().map(allowed).collect()
    } else {
        let user =
            s.controller.authenticate(&password).await.map_err(|_| ApiError::Unauthenticated("Invalid token."))?;
        if user.username != username {
            return Err(ApiError::Unauthenticated("Invalid token."));
        }
        let mut granted = Vec::new();
        for a in &wanted {
            let member = match deis_core::AppName::new(a.name.clone()) {
                Ok(app) => s.controller.app(&user, &app).await.is_ok(),
                Err(_) => false,
            };
            if member {
                granted.push(allowed(a));
            }
        }
        granted
    };
    let t = tokens.issuer.issue(&username, &granted, tokens.ttl).map_err(|e| ApiError::Internal(e.into()))?;
    let issued = humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(t.issued_at));
    Ok(json(
        StatusCode::OK,
        json!({ "token": t.token, "access_token": t.token, "expires_in": t.expires_in, "issued_at": issued.to_string() }),
    ))
}

/// The username and password of an `Authorization: Basic …` header.
fn basic_credentials(headers: &http::HeaderMap) -> Option<(String, String)> {
    use base64::Engine as _;
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let (user, password) = std::str::from_utf8(&decoded).ok()?.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}
