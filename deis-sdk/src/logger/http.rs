//! The logger's HTTP API, served by `deis-logger`:
//!
//! - `GET /logs/<app>?log_lines=N[&type=web][&source=app|deis]`: the last N lines
//!   (default 100), `text/plain`, one [`LogLine`](deis_core::logs::LogLine) per line as
//!   `deis logs` prints it;
//! - `GET /logs/<app>/follow?log_lines=N[&after=SEQ][&type=..][&source=..]`: the last N
//!   lines (default 0), or every line after sequence `SEQ`, then live lines, as a
//!   chunked `text/plain` stream; a gap prints `-- N lines missed --`;
//! - `GET /metrics`: ingest and drain counters, Prometheus text 0.0.4 or OpenMetrics
//!   by `Accept`;
//! - `GET /healthz`: `OK`.
//!
//! With a token configured, `/logs` needs `Authorization: Bearer <token>` (compared in
//! constant time); `/metrics` and `/healthz` are open.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use deis_core::auth::secrets_equal;
use deis_core::logs::{Cursor, FollowItem, LogFilter, LogStore};
use serde::Deserialize;
use tokio::net::TcpListener;

use super::counters::IngestCounters;
use super::drains::DrainSet;

/// Most lines one `GET /logs` returns.
pub const MAX_LOG_LINES: usize = 100_000;

/// What the logger API serves.
#[derive(Debug, Clone)]
pub struct LoggerApi {
    /// Where lines are read from.
    pub store: Arc<dyn LogStore>,
    /// Ingest counters for `/metrics` (none: only drain figures, if any).
    pub counters: Option<Arc<IngestCounters>>,
    /// Drains for `/metrics`.
    pub drains: Option<Arc<DrainSet>>,
    /// Bearer token required on `/logs` (none: open, for loopback use only).
    pub token: Option<String>,
}

impl LoggerApi {
    /// An API over `store`, open, with no counters.
    pub fn new(store: Arc<dyn LogStore>) -> Self {
        Self { store, counters: None, drains: None, token: None }
    }
}

/// The API as an axum router.
pub fn router(api: LoggerApi) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "OK" }))
        .route("/metrics", get(metrics))
        .route("/logs/{app}", get(tail))
        .route("/logs/{app}/follow", get(follow))
        .fallback(|| async { text(StatusCode::NOT_FOUND, "not found: try /logs/<app>, /logs/<app>/follow, /metrics") })
        .with_state(Arc::new(api))
}

/// Serves the API on `listener` under `limits` (its header read timeout and
/// connection cap; [`crate::controller::serve`]) until `shutdown` completes, then
/// finishes open requests (followers end when their connection closes).
pub async fn serve(
    listener: TcpListener,
    api: LoggerApi,
    limits: crate::controller::ApiLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    crate::controller::serve(listener, router(api), limits, shutdown).await;
    Ok(())
}

type ApiState = State<Arc<LoggerApi>>;

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    let mut body = body.into();
    if !body.ends_with('\n') {
        body.push('\n');
    }
    (status, [(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"))], body).into_response()
}

#[allow(clippy::result_large_err)] // A Response is the error by design.
fn authorize(api: &LoggerApi, headers: &HeaderMap) -> Result<(), Response> {
    let Some(token) = &api.token else { return Ok(()) };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim);
    match given {
        Some(given) if secrets_equal(given.as_bytes(), token.as_bytes()) => Ok(()),
        given => {
            let mut resp = text(
                StatusCode::UNAUTHORIZED,
                if given.is_none() {
                    "missing bearer token: send Authorization: Bearer <token> (the logger's --token)"
                } else {
                    "invalid bearer token: use the logger's --token"
                },
            );
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            Err(resp)
        }
    }
}

/// Query of the logs endpoints.
#[derive(Debug, Default, Deserialize)]
struct LogsQuery {
    log_lines: Option<String>,
    after: Option<String>,
    #[serde(rename = "type")]
    proc_type: Option<String>,
    source: Option<String>,
}

impl LogsQuery {
    #[allow(clippy::result_large_err)]
    fn lines(&self, default: usize) -> Result<usize, Response> {
        match &self.log_lines {
            None => Ok(default),
            Some(v) => v.parse::<usize>().map(|n| n.min(MAX_LOG_LINES)).map_err(|_| {
                text(StatusCode::BAD_REQUEST, format!("log_lines must be a non-negative integer, got {v:?}"))
            }),
        }
    }

    #[allow(clippy::result_large_err)]
    fn filter(&self) -> Result<LogFilter, Response> {
        if let Some(s) = &self.source
            && s != "app"
            && s != "deis"
        {
            return Err(text(StatusCode::BAD_REQUEST, format!("source must be app or deis, got {s:?}")));
        }
        Ok(LogFilter { proc_type: self.proc_type.clone().filter(|t| !t.is_empty()), source: self.source.clone() })
    }
}

fn store_error(e: deis_core::logs::LogError) -> Response {
    match e {
        deis_core::logs::LogError::Invalid(msg) => text(StatusCode::BAD_REQUEST, msg),
        other => {
            tracing::warn!("log store: {other}");
            text(StatusCode::SERVICE_UNAVAILABLE, format!("{other}; retry shortly"))
        }
    }
}

async fn tail(State(api): ApiState, Path(app): Path<String>, query: Query<LogsQuery>, headers: HeaderMap) -> Response {
    if let Err(r) = authorize(&api, &headers) {
        return r;
    }
    let (n, filter) = match (query.lines(100), query.filter()) {
        (Ok(n), Ok(f)) => (n, f),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    match api.store.tail(&app, n, &filter).await {
        Ok(entries) => {
            let mut body = String::with_capacity(entries.len() * 96);
            for e in entries {
                body.push_str(&e.line.to_string());
                body.push('\n');
            }
            (StatusCode::OK, [(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"))], body)
                .into_response()
        }
        Err(e) => store_error(e),
    }
}

async fn follow(
    State(api): ApiState,
    Path(app): Path<String>,
    query: Query<LogsQuery>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = authorize(&api, &headers) {
        return r;
    }
    let (n, filter) = match (query.lines(0), query.filter()) {
        (Ok(n), Ok(f)) => (n, f),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    let cursor = match &query.after {
        Some(v) => match v.parse::<u64>() {
            Ok(seq) => Cursor::After(seq),
            Err(_) => return text(StatusCode::BAD_REQUEST, format!("after must be a sequence number, got {v:?}")),
        },
        None if n == 0 => Cursor::Now,
        None => Cursor::Last(n),
    };
    let follow = match api.store.follow(&app, cursor, filter).await {
        Ok(f) => f,
        Err(e) => return store_error(e),
    };
    let stream = futures_util::stream::unfold(follow, |mut follow| async move {
        let chunk = match follow.next().await? {
            Ok(FollowItem::Line(entry)) => format!("{}\n", entry.line),
            Ok(FollowItem::Missed(n)) => format!("-- {n} lines missed --\n"),
            Err(e) => {
                tracing::warn!("log follow ended: {e}");
                return None;
            }
        };
        Some((Ok::<_, Infallible>(Bytes::from(chunk)), follow))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-cache")
        .header("X-Content-Type-Options", "nosniff")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| text(StatusCode::INTERNAL_SERVER_ERROR, "building the response failed"))
}

async fn metrics(State(api): ApiState, headers: HeaderMap) -> Response {
    let mut families = api.counters.as_ref().map(|c| c.families()).unwrap_or_default();
    families.extend(api.drains.as_ref().map(|d| d.families()).unwrap_or_default());
    crate::telemetry::exposition::response(families, &headers)
}
