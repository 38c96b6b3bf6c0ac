//! The update service's admin API (administrators only, `Authorization: token <t>` as
//! the controller API), behind `deis updates:*`:
//!
//! | method and path | does |
//! |---|---|
//! | `GET /v2/updates/apps/` | the applications |
//! | `POST /v2/updates/apps/` `{"id", "name"}` | creates one (with alpha, beta, stable) |
//! | `GET /v2/updates/apps/<app>/` | rollout status: channels, groups, instance counts |
//! | `POST /v2/updates/apps/<app>/channels/<channel>/` `{package}` | publishes a package to a channel (201) |
//! | `POST /v2/updates/apps/<app>/promote/` `{"from", "to"}` | points `to` at `from`'s version |
//! | `PUT /v2/updates/apps/<app>/groups/<group>/` `{"channel", "policy"}` | creates or changes a group |
//! | `POST /v2/updates/apps/<app>/groups/<group>/pause/`, `.../resume/` | pauses, resumes (and lifts a halt) |
//! | `GET /v2/updates/apps/<app>/instances/?group=<g>` | instances: version, status, last event |
//!
//! Errors are `{"detail": "..."}` with 400 (invalid), 401, 403 (not an administrator),
//! 404 (unknown app, channel, group), 409 (a published version with another file).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRequestParts, Path, Query, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post, put};
use deis_core::User;
use deis_core::controller::{ControllerError, authenticate};
use deis_core::store::Store;
use deis_core::time::Timestamp;
use deis_core::update::{Channel, Group, GroupSpec, Package, RolloutPolicy, UpdateApp, UpdateChannel, UpdateError};
use http::StatusCode;
use http::request::Parts;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::controller::ApiError;
use crate::controller::extract::{content_length, parse_json, read_body, token};

/// Largest JSON body of the admin API.
const MAX_JSON_BYTES: usize = 64 << 10;

/// What the handlers share: the store users and tokens are in, and the channel.
#[derive(Debug)]
struct UpdateApi {
    store: Arc<dyn Store>,
    channel: Arc<dyn UpdateChannel>,
}

type Shared = Arc<UpdateApi>;

/// The admin API's routes, authenticating against the users in `store` (the
/// platform's), to merge into the controller API.
pub fn admin_routes(store: Arc<dyn Store>, channel: Arc<dyn UpdateChannel>) -> Router {
    let r = Router::new();
    let r = both(r, "/v2/updates/apps", get(list_apps).post(create_app));
    let r = both(r, "/v2/updates/apps/{app}", get(status));
    let r = both(r, "/v2/updates/apps/{app}/channels/{channel}", post(publish));
    let r = both(r, "/v2/updates/apps/{app}/promote", post(promote));
    let r = both(r, "/v2/updates/apps/{app}/groups/{group}", put(put_group).post(put_group));
    let r = both(r, "/v2/updates/apps/{app}/groups/{group}/pause", post(pause));
    let r = both(r, "/v2/updates/apps/{app}/groups/{group}/resume", post(resume));
    let r = both(r, "/v2/updates/apps/{app}/instances", get(instances));
    r.with_state(Arc::new(UpdateApi { store, channel }))
}

fn both(router: Router<Shared>, path: &str, methods: MethodRouter<Shared>) -> Router<Shared> {
    router.route(path, methods.clone()).route(&format!("{path}/"), methods)
}

/// An administrator making the request; 401 without a valid token, 403 for others.
struct Admin(#[allow(dead_code)] User);

impl FromRequestParts<Shared> for Admin {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Self, Response> {
        let user = match token(parts) {
            None => Err(ApiError::Unauthenticated("Authentication credentials were not provided.")),
            Some(Err(e)) => Err(e),
            Some(Ok(t)) => authenticate(&*state.store, &t).await.map_err(ApiError::from),
        };
        match user {
            Ok(user) if user.is_superuser => Ok(Self(user)),
            Ok(_) => Err(ApiError::from(ControllerError::Forbidden).into_response()),
            Err(e) => Err(e.into_response()),
        }
    }
}

/// A bounded JSON body.
struct Json<T>(T);

impl<T: DeserializeOwned, S: Send + Sync> axum::extract::FromRequest<S> for Json<T> {
    type Rejection = Response;

    async fn from_request(req: Request, _: &S) -> Result<Self, Response> {
        let declared = content_length(req.headers());
        let bytes = read_body(req.into_body(), declared, MAX_JSON_BYTES).await.map_err(IntoResponse::into_response)?;
        parse_json(&bytes).map(Self).map_err(IntoResponse::into_response)
    }
}

/// An [`UpdateError`] as a response.
struct Failed(UpdateError);

impl From<UpdateError> for Failed {
    fn from(e: UpdateError) -> Self {
        Self(e)
    }
}

impl IntoResponse for Failed {
    fn into_response(self) -> Response {
        let status = match &self.0 {
            UpdateError::Invalid { .. } => StatusCode::BAD_REQUEST,
            UpdateError::NotFound { .. } => StatusCode::NOT_FOUND,
            UpdateError::Conflict(_) => StatusCode::CONFLICT,
            UpdateError::Store(deis_core::StoreError::Unavailable(_)) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (status, axum::Json(json!({ "detail": self.0.to_string() }))).into_response()
    }
}

type Answer = Result<Response, Failed>;

fn ok(status: StatusCode, body: impl Serialize) -> Answer {
    Ok((status, axum::Json(body)).into_response())
}

async fn list_apps(State(s): State<Shared>, _: Admin) -> Answer {
    let apps = s.channel.apps().await?;
    ok(StatusCode::OK, json!({ "count": apps.len(), "results": apps }))
}

#[derive(Debug, Deserialize)]
struct NewApp {
    id: String,
    name: String,
}

async fn create_app(State(s): State<Shared>, _: Admin, Json(b): Json<NewApp>) -> Answer {
    ok(StatusCode::CREATED, s.channel.create_app(&b.id, &b.name).await?)
}

/// A package as `deis updates:publish` sends it (the publication time is the server's).
#[derive(Debug, Deserialize)]
struct NewPackage {
    version: String,
    url: String,
    name: String,
    size: u64,
    sha256: String,
    #[serde(default)]
    sha1: Option<String>,
}

async fn publish(
    State(s): State<Shared>,
    _: Admin,
    Path((app, channel)): Path<(String, String)>,
    Json(b): Json<NewPackage>,
) -> Answer {
    let package = Package {
        version: b.version,
        url: b.url,
        name: b.name,
        size: b.size,
        sha256: b.sha256,
        sha1: b.sha1,
        published: Timestamp::now(),
    };
    ok(StatusCode::CREATED, s.channel.publish(&app, &channel, package).await?)
}

#[derive(Debug, Deserialize)]
struct Promotion {
    from: String,
    to: String,
}

async fn promote(State(s): State<Shared>, _: Admin, Path(app): Path<String>, Json(b): Json<Promotion>) -> Answer {
    ok(StatusCode::OK, s.channel.promote(&app, &b.from, &b.to).await?)
}

#[derive(Debug, Deserialize)]
struct GroupBody {
    channel: String,
    #[serde(default)]
    policy: Option<RolloutPolicy>,
}

async fn put_group(
    State(s): State<Shared>,
    _: Admin,
    Path((app, group)): Path<(String, String)>,
    Json(b): Json<GroupBody>,
) -> Answer {
    // A group changed without a policy keeps its own.
    let current = s.channel.group(&app, &group).await?.map(|g| g.policy);
    let policy = b.policy.or(current).unwrap_or_default();
    ok(StatusCode::OK, s.channel.put_group(&app, GroupSpec { name: group, channel: b.channel, policy }).await?)
}

async fn pause(State(s): State<Shared>, _: Admin, Path((app, group)): Path<(String, String)>) -> Answer {
    ok(StatusCode::OK, s.channel.set_paused(&app, &group, true).await?)
}

async fn resume(State(s): State<Shared>, _: Admin, Path((app, group)): Path<(String, String)>) -> Answer {
    ok(StatusCode::OK, s.channel.set_paused(&app, &group, false).await?)
}

#[derive(Debug, Deserialize)]
struct GroupQuery {
    group: Option<String>,
}

async fn instances(State(s): State<Shared>, _: Admin, Path(app): Path<String>, Query(q): Query<GroupQuery>) -> Answer {
    let group = q.group.filter(|g| !g.is_empty());
    let instances = s.channel.instances(&app, group.as_deref()).await?;
    ok(StatusCode::OK, json!({ "count": instances.len(), "results": instances }))
}

/// The rollout status of an application (`GET /v2/updates/apps/<app>/`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateStatus {
    /// The application.
    pub app: UpdateApp,
    /// Its channels.
    pub channels: Vec<Channel>,
    /// Its groups with their instances' tallies.
    pub groups: Vec<GroupStatus>,
}

/// A group in an [`UpdateStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupStatus {
    /// The group (policy, paused, halted, window).
    pub group: Group,
    /// The version its channel offers.
    pub version: Option<String>,
    /// Instances per status.
    pub statuses: BTreeMap<String, usize>,
    /// Instances per version.
    pub versions: BTreeMap<String, usize>,
}

/// `GET /v2/updates/apps/<app>/`: the app, its channels, and per group its state and
/// how many instances are in each status and on each version.
async fn status(State(s): State<Shared>, _: Admin, Path(app): Path<String>) -> Answer {
    let Some(record) = s.channel.app(&app).await? else { return Err(UpdateError::unknown_app(&app).into()) };
    let channels = s.channel.channels(&app).await?;
    let instances = s.channel.instances(&app, None).await?;
    let mut groups = Vec::new();
    for group in s.channel.groups(&app).await? {
        let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
        let mut versions: BTreeMap<String, usize> = BTreeMap::new();
        for i in instances.iter().filter(|i| i.group == group.name) {
            *statuses.entry(i.status.to_string()).or_default() += 1;
            *versions.entry(i.version.clone()).or_default() += 1;
        }
        let version = channels.iter().find(|c| c.name == group.channel).and_then(|c| c.version.clone());
        groups.push(GroupStatus { group, version, statuses, versions });
    }
    ok(StatusCode::OK, UpdateStatus { app: record, channels, groups })
}
