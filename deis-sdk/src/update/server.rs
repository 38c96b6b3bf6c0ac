//! The Omaha v3 server: `POST /v1/update/` (CoreUpdate's path) answered from an
//! [`UpdateChannel`]. Served by `deisd` on its API address and by the standalone
//! `deis-update-server`.
//!
//! Per `<app>` of a request, in this order: its events are recorded (so an "update
//! complete" counts before the check that follows it), then its update check (or
//! ping) is recorded and decided by the group's rollout policy.
//!
//! | situation | answer |
//! |---|---|
//! | not `POST` | 400 |
//! | body over 1 MiB | 413 |
//! | malformed XML, not Omaha v3 | 400, `text/plain` saying what is wrong and where |
//! | app id not an id | app `status="error-invalidAppId"` |
//! | unknown app | app `status="error-unknownApplication"` |
//! | unknown track (group) | `<updatecheck status="error-unknownTrack"/>` |
//! | no instance id (`machineid`, or a `userid`) or a bad version | app `status="error-invalidRequest"` |
//! | store failure | `<updatecheck status="error-internal"/>` |
//! | HTTP status | 200 when any app is `ok`, else 400 (the XML answer is sent either way) |

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response as HttpResponse};
use axum::routing::any;
use base64::Engine as _;
use deis_core::time::Timestamp;
use deis_core::update::{CheckOutcome, InstanceEvent, InstanceRef, NoUpdate, Package, UpdateChannel, UpdateError};
use http::{Method, StatusCode, header};

use super::omaha::{
    AppRequest, AppResponse, MAX_BODY_BYTES, Manifest, OmahaError, Request as OmahaRequest, Response, UpdateCheck,
    parse_request,
};

/// The path Omaha clients post to.
pub const OMAHA_PATH: &str = "/v1/update/";

/// Answers Omaha requests from an [`UpdateChannel`].
#[derive(Debug, Clone)]
pub struct OmahaServer {
    channel: Arc<dyn UpdateChannel>,
    name: String,
}

impl OmahaServer {
    /// A server answering from `channel`, naming itself `deis` in responses.
    pub fn new(channel: Arc<dyn UpdateChannel>) -> Self {
        Self { channel, name: "deis".into() }
    }

    /// The routes: `POST /v1/update/` (and without the trailing slash), to merge into
    /// an API (e.g. with [`PlatformBuilder::api_routes`](crate::PlatformBuilder::api_routes)).
    pub fn routes(self) -> Router {
        Router::new()
            .route(OMAHA_PATH, any(handle))
            .route(OMAHA_PATH.trim_end_matches('/'), any(handle))
            .with_state(Arc::new(self))
    }

    /// Parses `body` and answers it at `now`: the HTTP status and the XML.
    pub async fn answer_bytes(&self, body: &[u8], now: SystemTime) -> Result<(StatusCode, String), OmahaError> {
        let request = parse_request(body)?;
        let response = self.answer(&request, now).await;
        let status = if response.any_ok() { StatusCode::OK } else { StatusCode::BAD_REQUEST };
        Ok((status, response.render()))
    }

    /// Answers a parsed request at `now`.
    pub async fn answer(&self, request: &OmahaRequest, now: SystemTime) -> Response {
        let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let mut apps = Vec::with_capacity(request.apps.len());
        for app in &request.apps {
            apps.push(self.answer_app(request, app, secs).await);
        }
        Response { server: self.name.clone(), daystart_elapsed: secs % 86_400, apps }
    }

    async fn answer_app(&self, request: &OmahaRequest, app: &AppRequest, now: u64) -> AppResponse {
        let mut answer = AppResponse {
            appid: app.appid.clone(),
            status: "ok".into(),
            ping: app.ping,
            events: app.events.len(),
            updatecheck: None,
        };
        let fail = |mut answer: AppResponse, status: &str| {
            answer.status = status.into();
            answer.ping = false;
            answer.events = 0;
            answer
        };
        if deis_core::update::canonical_app_id(&app.appid).is_err() {
            return fail(answer, "error-invalidAppId");
        }
        let instance = app.machineid.as_ref().or(app.userid.as_ref()).or(request.userid.as_ref());
        let Some(instance) = instance else { return fail(answer, "error-invalidRequest") };
        let who = InstanceRef {
            app: app.appid.clone(),
            group: app.track.clone().unwrap_or_default(),
            instance: instance.clone(),
            version: app.version.clone().unwrap_or_else(|| "0.0.0".into()),
        };
        for event in &app.events {
            let event = InstanceEvent {
                event_type: event.event_type,
                result: event.result,
                error_code: event.error_code,
                previous_version: event.previous_version.clone(),
                at: Timestamp::from_unix_seconds(now),
                repeats: 0,
            };
            if let Err(e) = self.channel.record_event(&who, event).await {
                return match app_status(&e) {
                    Some(status) => fail(answer, status),
                    None => {
                        tracing::error!(app = %app.appid, error = %e, "recording an Omaha event failed");
                        fail(answer, "error-internal")
                    }
                };
            }
        }
        if !app.updatecheck && !app.ping {
            return answer;
        }
        match self.channel.check(&who, app.updatecheck, now).await {
            Ok(CheckOutcome::Update(package)) => {
                answer.updatecheck = Some(UpdateCheck::Update(manifest(package)));
            }
            Ok(CheckOutcome::NoUpdate(why)) => {
                if why != NoUpdate::NotAsked {
                    answer.updatecheck = Some(UpdateCheck::Status("noupdate"));
                }
            }
            Err(e) => {
                if let Some(status) = app_status(&e) {
                    return fail(answer, status);
                }
                let status = match &e {
                    UpdateError::NotFound { kind: "group", .. } => "error-unknownTrack",
                    _ => {
                        tracing::error!(app = %app.appid, error = %e, "an Omaha update check failed");
                        "error-internal"
                    }
                };
                if app.updatecheck {
                    answer.updatecheck = Some(UpdateCheck::Status(status));
                }
            }
        }
        answer
    }
}

/// The app-level status for errors about the app or the request itself.
fn app_status(e: &UpdateError) -> Option<&'static str> {
    match e {
        UpdateError::NotFound { kind: "application", .. } => Some("error-unknownApplication"),
        UpdateError::Invalid { .. } => Some("error-invalidRequest"),
        _ => None,
    }
}

/// The manifest of `package` as the wire carries it.
pub fn manifest(package: Package) -> Manifest {
    let sha256_base64 = hex::decode(&package.sha256)
        .map(|raw| base64::engine::general_purpose::STANDARD.encode(raw))
        .unwrap_or_default();
    Manifest {
        version: package.version,
        url: package.url,
        name: package.name,
        size: package.size,
        sha1: package.sha1,
        sha256_hex: package.sha256,
        sha256_base64,
    }
}

fn plain(status: StatusCode, text: String) -> HttpResponse {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response()
}

async fn handle(State(server): State<Arc<OmahaServer>>, request: Request) -> HttpResponse {
    if request.method() != Method::POST {
        return plain(StatusCode::BAD_REQUEST, format!("Omaha requests are POSTed XML to {OMAHA_PATH}\n"));
    }
    let declared = crate::controller::extract::content_length(request.headers());
    let body = match crate::controller::extract::read_body(request.into_body(), declared, MAX_BODY_BYTES).await {
        Ok(body) => body,
        Err(e) => {
            let (status, _) = e.status_and_body();
            return plain(status, format!("{e}\n"));
        }
    };
    match server.answer_bytes(&body, SystemTime::now()).await {
        Ok((status, xml)) => (status, [(header::CONTENT_TYPE, "application/xml; charset=utf-8")], xml).into_response(),
        Err(e) => plain(StatusCode::BAD_REQUEST, format!("malformed Omaha request: {e}\n")),
    }
}
