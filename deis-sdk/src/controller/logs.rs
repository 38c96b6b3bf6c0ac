//! App logs (§3.2 "Logs" plus our follow extension).
//!
//! - `GET /v2/apps/<app>/logs?log_lines=N&type=web&source=app|deis`: the last N lines
//!   (default [`DEFAULT_LOG_LINES`]) as `200 text/plain`, one `<time> <source>: <message>`
//!   per line, every line ending in `\n` (the Workflow body); `204` with no body when
//!   there are none.
//! - `GET /v2/apps/<app>/logs/follow?log_lines=N&after=SEQ&type=&source=&format=json`:
//!   the last N lines (default [`DEFAULT_LOG_LINES`]; `0` = only new lines), or every
//!   line after sequence number `SEQ` (a resume), then new lines as they come, as a
//!   chunked response that lasts until the client disconnects. Text lines by default;
//!   with `format=json` one JSON object per line: `{"seq", "time", "app", "source",
//!   "kind", "stream", "message"}` for a line, `{"missed": N}` when the reader fell
//!   behind (in text: `-- N lines skipped (reader too slow) --`), `{"notice": ...}` when
//!   `after` is past the end of the log (its numbering started over: the whole log is
//!   sent, as it is all new to the reader). An empty line is sent
//!   every [`HEARTBEAT`] when nothing happens, so a dead client is noticed.

use std::time::Duration;

use axum::Extension;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, Query, State};
use axum::response::{IntoResponse, Response};
use deis_core::ProcessType;
use deis_core::logs::{Cursor, FollowItem, LogEntry, LogFilter, LogFollow, LogStream};
use futures_util::FutureExt;
use http::request::Parts;
use http::{HeaderValue, StatusCode, Uri, header};
use serde::Deserialize;

use super::ApiState;
use super::error::{ApiError, ApiResult};
use super::extract::{AppPath, AuthUser};

/// Lines returned when `log_lines` is not given (Workflow's `LOG_LINES`).
pub const DEFAULT_LOG_LINES: usize = 100;
/// Most lines one request may ask for.
pub const MAX_LOG_LINES: usize = 10_000;
/// Largest `GET .../logs` body; older lines are left out beyond it.
pub const MAX_LOGS_BODY: usize = 16 << 20;
/// Interval of the empty keep-alive line of a quiet follow.
pub const HEARTBEAT: Duration = Duration::from_secs(15);
/// Most bytes sent in one chunk of a follow (lines already waiting are batched).
const MAX_CHUNK: usize = 64 * 1024;

/// Ends every follow stream when it turns `true`, so a graceful shutdown of the API
/// server does not wait forever for followers. Add it to the router as an
/// [`Extension`]: `router(..).layer(Extension(FollowShutdown(rx)))`.
#[derive(Debug, Clone)]
pub struct FollowShutdown(pub tokio::sync::watch::Receiver<bool>);

/// The query of both endpoints, checked.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct LogQuery {
    lines: Option<usize>,
    after: Option<u64>,
    filter: LogFilter,
    json: bool,
}

/// The query string as sent (decoded by axum's [`Query`]); every value is text so that a
/// bad one gets a message saying what is expected. Unknown keys are ignored.
#[derive(Debug, Default, Deserialize)]
struct LogParams {
    log_lines: Option<String>,
    after: Option<String>,
    #[serde(rename = "type")]
    proc_type: Option<String>,
    source: Option<String>,
    format: Option<String>,
}

impl LogParams {
    /// Checks the values; empty `type`, `source` and `format` mean "not given".
    fn check(self) -> Result<LogQuery, ApiError> {
        let mut q = LogQuery::default();
        if let Some(value) = self.log_lines {
            let n: usize = value.parse().map_err(|_| {
                ApiError::bad_request(format!("log_lines must be a non-negative integer, not {value:?}"))
            })?;
            if n > MAX_LOG_LINES {
                return Err(ApiError::bad_request(format!("log_lines may be at most {MAX_LOG_LINES}")));
            }
            q.lines = Some(n);
        }
        if let Some(value) = self.after {
            q.after = Some(value.parse().map_err(|_| {
                ApiError::bad_request(format!("after must be a sequence number (an integer), not {value:?}"))
            })?);
        }
        if let Some(value) = self.proc_type.filter(|v| !v.is_empty()) {
            let ty = ProcessType::new(value.as_str())
                .map_err(|e| ApiError::bad_request(format!("type {value:?}: {}", e.message)))?;
            q.filter.proc_type = Some(ty.into_string());
        }
        match self.source.as_deref() {
            None | Some("") => {}
            Some("app" | "deis") => q.filter.source = self.source,
            Some(other) => return Err(ApiError::bad_request(format!("source must be app or deis, not {other:?}"))),
        }
        q.json = match self.format.as_deref() {
            Some("json") => true,
            None | Some("text" | "") => false,
            Some(other) => return Err(ApiError::bad_request(format!("format must be text or json, not {other:?}"))),
        };
        Ok(q)
    }
}

fn parse_query(uri: &Uri) -> Result<LogQuery, ApiError> {
    let Query(params) = Query::<LogParams>::try_from_uri(uri).map_err(|e| ApiError::bad_request(e.body_text()))?;
    params.check()
}

impl<S: Send + Sync> FromRequestParts<S> for LogQuery {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parse_query(&parts.uri)
    }
}

/// One line of text: `<Display of LogLine>\n`, newlines inside the message flattened
/// so that one entry is always one line.
fn text_line(entry: &LogEntry, out: &mut String) {
    use std::fmt::Write as _;
    let start = out.len();
    let _ = write!(out, "{}", entry.line);
    if out[start..].contains(['\n', '\r']) {
        let flat = out[start..].replace(['\n', '\r'], " ");
        out.truncate(start);
        out.push_str(&flat);
    }
    out.push('\n');
}

fn stream_name(stream: LogStream) -> String {
    match stream {
        LogStream::Stdout => "stdout".into(),
        LogStream::Stderr => "stderr".into(),
        LogStream::Severity(s) => format!("severity{s}"),
    }
}

/// One JSON line of the follow endpoint.
fn json_line(entry: &LogEntry, out: &mut String) {
    let l = &entry.line;
    let v = serde_json::json!({
        "seq": entry.seq,
        "time": humantime::format_rfc3339_millis(l.time).to_string(),
        "app": l.app,
        "source": l.source.label(&l.app).to_string(),
        "kind": l.source.kind(),
        "stream": stream_name(l.stream),
        "message": l.message,
    });
    out.push_str(&v.to_string());
    out.push('\n');
}

fn render(item: &FollowItem, json: bool, out: &mut String) {
    match (item, json) {
        (FollowItem::Line(e), false) => text_line(e, out),
        (FollowItem::Line(e), true) => json_line(e, out),
        (FollowItem::Missed(n), false) => out.push_str(&format!("-- {n} lines skipped (reader too slow) --\n")),
        (FollowItem::Missed(n), true) => out.push_str(&format!("{{\"missed\":{n}}}\n")),
    }
}

fn text_response(status: StatusCode, body: impl Into<Body>) -> Response {
    let mut resp = (status, body.into()).into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    resp
}

/// `GET /v2/apps/<app>/logs`.
pub(super) async fn logs(
    State(s): State<ApiState>,
    AuthUser(user): AuthUser,
    AppPath(app): AppPath,
    q: LogQuery,
) -> ApiResult {
    let n = q.lines.unwrap_or(DEFAULT_LOG_LINES);
    let entries = s.controller.app_logs(&user, &app, n, &q.filter).await?;
    if entries.is_empty() {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    // Newest lines win when the body would be too large.
    let mut lines: Vec<String> = Vec::with_capacity(entries.len());
    let mut total = 0;
    for e in entries.iter().rev() {
        let mut line = String::new();
        text_line(e, &mut line);
        total += line.len();
        if total > MAX_LOGS_BODY {
            break;
        }
        lines.push(line);
    }
    lines.reverse();
    Ok(text_response(StatusCode::OK, lines.concat()))
}

/// State of a follow stream.
struct Follow {
    follow: LogFollow,
    json: bool,
    ended: bool,
    shutdown: Option<tokio::sync::watch::Receiver<bool>>,
    /// Said once, before the first line.
    notice: Option<String>,
}

impl Follow {
    /// The next chunk: waiting items (batched up to [`MAX_CHUNK`]), a heartbeat after
    /// [`HEARTBEAT`] of silence, or `None` when the follow is over.
    async fn next_chunk(&mut self) -> Option<Bytes> {
        if self.ended {
            return None;
        }
        if let Some(n) = self.notice.take() {
            let line = if self.json { serde_json::json!({ "notice": n }).to_string() } else { format!("-- {n} --") };
            return Some(Bytes::from(line + "\n"));
        }
        let mut out = String::new();
        let stopping = async {
            match &mut self.shutdown {
                Some(rx) => drop(rx.wait_for(|s| *s).await),
                None => std::future::pending().await,
            }
        };
        let first = tokio::select! {
            () = stopping => {
                self.ended = true;
                return None;
            }
            r = tokio::time::timeout(HEARTBEAT, self.follow.next()) => match r {
                Err(_) => return Some(Bytes::from_static(b"\n")),
                Ok(item) => item,
            },
        };
        let mut item = first;
        loop {
            match item {
                None => {
                    self.ended = true;
                    break;
                }
                Some(Err(e)) => {
                    self.ended = true;
                    if self.json {
                        out.push_str(&serde_json::json!({ "error": e.to_string() }).to_string());
                        out.push('\n');
                    } else {
                        out.push_str(&format!("-- log follow ended: {e} --\n"));
                    }
                    break;
                }
                Some(Ok(it)) => render(&it, self.json, &mut out),
            }
            if out.len() >= MAX_CHUNK {
                break;
            }
            match self.follow.next().now_or_never() {
                Some(next) => item = next,
                None => break,
            }
        }
        if out.is_empty() { None } else { Some(Bytes::from(out)) }
    }
}

/// `GET /v2/apps/<app>/logs/follow`.
pub(super) async fn follow(
    State(s): State<ApiState>,
    AuthUser(user): AuthUser,
    AppPath(app): AppPath,
    shutdown: Option<Extension<FollowShutdown>>,
    q: LogQuery,
) -> ApiResult {
    let mut notice = None;
    let cursor = match (q.after, q.lines) {
        // A resume past the end of the log means its numbering started over (the
        // logger restarted without keeping lines, or the app was re-created): every
        // line it has now is new to this reader.
        (Some(seq), _) => {
            let last = s.controller.app_logs(&user, &app, 1, &LogFilter::default()).await?.last().map_or(0, |e| e.seq);
            if seq > last {
                notice = Some("the log started over (the logger restarted); resuming from its start".to_string());
                Cursor::After(0)
            } else {
                Cursor::After(seq)
            }
        }
        (None, Some(0)) => Cursor::Now,
        (None, n) => Cursor::Last(n.unwrap_or(DEFAULT_LOG_LINES)),
    };
    let follow = s.controller.follow_app_logs(&user, &app, cursor, q.filter).await?;
    let json = q.json;
    let shutdown = shutdown.map(|Extension(FollowShutdown(rx))| rx);
    let state = Follow { follow, json, ended: false, shutdown, notice };
    let stream = futures_util::stream::unfold(state, |mut st| async move {
        let chunk = st.next_chunk().await?;
        Some((Ok::<_, std::convert::Infallible>(chunk), st))
    });
    let mut resp = text_response(StatusCode::OK, Body::from_stream(stream));
    if json {
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
    }
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp.headers_mut().insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use deis_core::logs::{LogLine, LogSource};

    use super::*;

    fn q(query: &str) -> Result<LogQuery, ApiError> {
        parse_query(&format!("/v2/apps/a/logs?{query}").parse().unwrap())
    }

    fn entry(seq: u64, msg: &str) -> LogEntry {
        let mut line = LogLine::from_unit("hello", "web", 1, LogStream::Stderr, msg);
        line.time = UNIX_EPOCH + Duration::from_millis(1_795_000_000_123);
        LogEntry { seq, line }
    }

    #[test]
    fn queries_are_parsed_and_checked() {
        assert_eq!(q("").unwrap(), LogQuery::default());
        let got = q("log_lines=5&type=web&source=deis&after=42&format=json").unwrap();
        assert_eq!(got.lines, Some(5));
        assert_eq!(got.after, Some(42));
        assert_eq!(got.filter, LogFilter { proc_type: Some("web".into()), source: Some("deis".into()) });
        assert!(got.json);
        for bad in ["log_lines=-1", "log_lines=x", "log_lines=10001", "source=other", "after=x", "format=xml"] {
            assert!(q(bad).is_err(), "{bad}");
        }
        assert_eq!(q("type=&source=&format=").unwrap(), LogQuery::default());
        assert_eq!(q("unknown=1&log_lines=2").unwrap().lines, Some(2), "unknown keys are ignored");
        // Values are percent-decoded, `+` is a space.
        assert_eq!(q("source=%64eis").unwrap().filter.source.as_deref(), Some("deis"));
        let err = q("source=a+b%21").unwrap_err().to_string();
        assert_eq!(err, r#"source must be app or deis, not "a b!""#);
        let err = q("log_lines=%2").unwrap_err().to_string();
        assert_eq!(err, r#"log_lines must be a non-negative integer, not "%2""#);
    }

    #[test]
    fn text_and_json_lines() {
        let mut out = String::new();
        text_line(&entry(7, "GET / 200"), &mut out);
        assert_eq!(out, "2026-11-18T11:06:40.123Z hello[web.1]: GET / 200\n");
        out.clear();
        text_line(&entry(7, "two\nlines"), &mut out);
        assert_eq!(out, "2026-11-18T11:06:40.123Z hello[web.1]: two lines\n");
        out.clear();
        json_line(&entry(7, "hi"), &mut out);
        assert!(out.ends_with('\n'));
        let v: serde_json::Value = serde_json::from_str(out.trim_end()).unwrap();
        assert_eq!(v["seq"], 7);
        assert_eq!(v["time"], "2026-11-18T11:06:40.123Z");
        assert_eq!(v["source"], "hello[web.1]");
        assert_eq!(v["kind"], "app");
        assert_eq!(v["stream"], "stderr");
        assert_eq!(v["message"], "hi");
        out.clear();
        render(&FollowItem::Missed(42), false, &mut out);
        render(&FollowItem::Missed(3), true, &mut out);
        assert_eq!(out, "-- 42 lines skipped (reader too slow) --\n{\"missed\":3}\n");
        let deis = LogEntry { seq: 1, line: LogLine::platform("hello", "controller", "x") };
        assert_eq!(deis.line.source, LogSource::Deis { component: "controller".into() });
    }
}
