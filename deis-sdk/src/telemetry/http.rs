//! The telemetry endpoints on the controller API listener, behind the API's users and
//! tokens:
//!
//! | route | who | what |
//! |---|---|---|
//! | `GET /metrics` | admins | every collector, Prometheus exposition (OpenMetrics or 0.0.4 by `Accept`) |
//! | `GET /v2/apps/<app>/metrics?minutes=N` | the app's owner, collaborators, admins | request rate, error rate, p50/p99 latency over the last N minutes (default 5), and each unit's cpu and memory |
//! | `GET /v2/events` | any user (admins: every app; others: their apps) | recent controller events |
//! | `GET /dashboard/` | anyone | the dashboard page: a login form, then the data above through the API |
//!
//! Platform-wide figures name every app and user-visible traffic, so `/metrics` is for
//! admins (Prometheus scrapes with an admin's token: `authorization: {type: token,
//! credentials: ...}`); an app's own figures are for whoever may see the app.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use deis_core::controller::ControllerError;
use http::{HeaderMap, StatusCode, header};
use serde::{Deserialize, Serialize};

use super::Telemetry;
use super::exposition;
use crate::controller::{ApiError, ApiState, AppPath, AuthUser};

/// The dashboard page (plain HTML, CSS and a small script; no build step).
pub const DASHBOARD_HTML: &str = include_str!("dashboard.html");

/// The telemetry routes over `state` (the controller's), reading `telemetry`.
pub fn routes(state: ApiState, telemetry: Arc<Telemetry>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/v2/apps/{app}/metrics", get(app_metrics))
        .route("/v2/apps/{app}/metrics/", get(app_metrics))
        .route("/v2/events", get(events))
        .route("/v2/events/", get(events))
        .route("/dashboard", get(|| async { axum::response::Redirect::permanent("/dashboard/") }))
        .route("/dashboard/", get(dashboard))
        .layer(Extension(telemetry))
        .with_state(state)
}

async fn metrics(
    State(_): State<ApiState>,
    AuthUser(user): AuthUser,
    Extension(t): Extension<Arc<Telemetry>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if !user.is_superuser {
        return Err(ControllerError::Forbidden.into());
    }
    Ok(prometheus_response(&t, &headers))
}

/// A `/metrics` answer for `headers`' `Accept` (also what the role daemons serve).
pub fn prometheus_response(t: &Telemetry, headers: &HeaderMap) -> Response {
    exposition::response(t.snapshot(), headers)
}

/// `?minutes=N` of the app metrics.
#[derive(Debug, Deserialize)]
struct Window {
    minutes: Option<u64>,
}

/// What `GET /v2/apps/<app>/metrics` answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppMetrics {
    /// The app.
    pub app: String,
    /// Seconds the figures cover (less than asked while history is short).
    pub window_seconds: f64,
    /// Requests routed to the app in the window.
    pub requests: u64,
    /// Requests per second.
    pub requests_per_second: f64,
    /// 5xx responses in the window.
    pub errors: u64,
    /// Share of 5xx responses, 0 to 1.
    pub error_rate: f64,
    /// Median time to the response head, milliseconds.
    pub p50_ms: Option<f64>,
    /// 99th percentile, milliseconds.
    pub p99_ms: Option<f64>,
    /// Responses by status class, `1xx` to `5xx`.
    pub by_class: [u64; 5],
    /// Each unit's latest cpu and memory.
    pub units: Vec<UnitFigures>,
}

/// A unit's latest usage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnitFigures {
    /// Unit name.
    pub name: String,
    /// Process type.
    #[serde(rename = "type")]
    pub proc_type: String,
    /// Cpu in percent of one core, over the last interval.
    pub cpu_percent: Option<f64>,
    /// Memory, bytes.
    pub memory_bytes: u64,
    /// Restarts after crashes.
    pub restarts: u32,
}

/// The figures of `app` over the last `window`.
pub fn app_figures(t: &Telemetry, app: &str, window: Duration) -> AppMetrics {
    let (secs, traffic) = t.app_window(app, window);
    let traffic = traffic.unwrap_or(super::AppTraffic {
        by_class: [0; 5],
        bytes_out: 0,
        latency: super::HistogramValue { buckets: Vec::new(), count: 0, sum: 0.0 },
    });
    let requests = traffic.requests();
    let mut units: Vec<UnitFigures> = t
        .units()
        .map(|u| u.all())
        .unwrap_or_default()
        .into_iter()
        .filter(|(_, u)| u.app == app)
        .map(|(name, u)| UnitFigures {
            name,
            proc_type: u.proc_type,
            cpu_percent: u.cpu_percent,
            memory_bytes: u.memory_bytes,
            restarts: u.restarts,
        })
        .collect();
    units.sort_by(|a, b| a.name.cmp(&b.name));
    AppMetrics {
        app: app.to_string(),
        window_seconds: secs,
        requests,
        requests_per_second: if secs > 0.0 { requests as f64 / secs } else { 0.0 },
        errors: traffic.errors(),
        error_rate: if requests > 0 { traffic.errors() as f64 / requests as f64 } else { 0.0 },
        p50_ms: traffic.latency.quantile(0.5).map(|s| s * 1000.0),
        p99_ms: traffic.latency.quantile(0.99).map(|s| s * 1000.0),
        by_class: traffic.by_class,
        units,
    }
}

async fn app_metrics(
    State(s): State<ApiState>,
    AuthUser(user): AuthUser,
    AppPath(app): AppPath,
    Extension(t): Extension<Arc<Telemetry>>,
    Query(w): Query<Window>,
) -> Result<Json<AppMetrics>, ApiError> {
    s.controller.app(&user, &app).await?;
    let minutes = w.minutes.unwrap_or(5).clamp(1, super::HISTORY.as_secs() / 60);
    Ok(Json(app_figures(&t, app.as_str(), Duration::from_secs(minutes * 60))))
}

async fn events(
    State(s): State<ApiState>,
    AuthUser(user): AuthUser,
    Extension(t): Extension<Arc<Telemetry>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let visible: Option<std::collections::HashSet<String>> = if user.is_superuser {
        None
    } else {
        Some(s.controller.list_apps(&user).await?.into_iter().map(|a| a.id.to_string()).collect())
    };
    let events: Vec<_> =
        t.events.recent().into_iter().filter(|e| visible.as_ref().is_none_or(|v| v.contains(&e.app))).collect();
    Ok(Json(serde_json::json!({ "count": events.len(), "results": events })))
}

async fn dashboard() -> Response {
    (
        StatusCode::OK,
        [
            (header::CACHE_CONTROL, "no-store"),
            // The page's own script and styles only; `data:` images for its empty favicon
            // (else the browser fetches `/favicon.ico`, a 401, an error in the console).
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; \
                 img-src 'self' data:",
            ),
        ],
        Html(DASHBOARD_HTML),
    )
        .into_response()
}
