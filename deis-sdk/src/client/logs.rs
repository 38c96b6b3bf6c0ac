//! Logs and drains: `GET /v2/apps/<app>/logs`, the follow stream
//! (`GET /v2/apps/<app>/logs/follow?format=json`) and `/v2/apps/<app>/drains/`.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderValue, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};

use super::{Body, Client, ClientError, Result, app_path, encode_segment, json_body, root_cause};

/// Longest line accepted from the follow stream.
pub const MAX_FOLLOW_LINE: usize = 1 << 20;

/// How long the follow request may take to answer (its body then lasts as long as it
/// is followed).
const FOLLOW_HEAD_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the follow stream may stay silent: the server sends a heartbeat every
/// 15 s, so a longer silence means the connection is dead.
pub const FOLLOW_IDLE_TIMEOUT: Duration = Duration::from_secs(45);

/// Which lines to read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// How many of the last lines (`log_lines`); `None`: the server's default (100).
    pub lines: Option<usize>,
    /// Only this process type.
    pub proc_type: Option<String>,
    /// Only `app` or `deis` lines.
    pub source: Option<String>,
}

impl LogOptions {
    fn query(&self, extra: &[(&str, String)]) -> String {
        let mut parts: Vec<String> = vec![];
        if let Some(n) = self.lines {
            parts.push(format!("log_lines={n}"));
        }
        if let Some(t) = &self.proc_type {
            parts.push(format!("type={}", encode_segment(t)));
        }
        if let Some(s) = &self.source {
            parts.push(format!("source={}", encode_segment(s)));
        }
        parts.extend(extra.iter().map(|(k, v)| format!("{k}={}", encode_segment(v))));
        if parts.is_empty() { String::new() } else { format!("?{}", parts.join("&")) }
    }
}

/// One line of the follow stream (`format=json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRecord {
    /// Sequence number within the app: resume after it.
    pub seq: u64,
    /// RFC 3339 time with milliseconds (`2026-11-25T14:47:21.123Z`).
    pub time: String,
    /// App id.
    #[serde(default)]
    pub app: String,
    /// `hello[web.1]`, `deis[controller]`.
    pub source: String,
    /// `app` or `deis`.
    #[serde(default)]
    pub kind: String,
    /// `stdout`, `stderr` or `severityN`.
    #[serde(default)]
    pub stream: String,
    /// The text.
    pub message: String,
}

impl std::fmt::Display for LogRecord {
    /// `2026-11-25T14:47:21.123Z hello[web.1]: message`, as `deis logs` prints it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.time, self.source, self.message)
    }
}

/// What the follow stream delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FollowEvent {
    /// A line.
    Line(LogRecord),
    /// This many lines were skipped because the reader fell behind.
    Missed(u64),
    /// The server ended the follow with this error.
    Error(String),
    /// Something the reader should know (e.g. the log started over after a restart).
    Notice(String),
}

/// A live follow of an app's log. Dropping it closes the connection.
#[derive(Debug)]
pub struct LogFollowStream {
    body: Incoming,
    buf: BytesMut,
    pending: VecDeque<FollowEvent>,
    url: String,
}

impl LogFollowStream {
    /// The next event; `Ok(None)` when the server ended the stream. A connection that
    /// breaks (or stays silent past [`FOLLOW_IDLE_TIMEOUT`]) is an error: reconnect
    /// with [`Client::logs_follow`] resuming after the last `seq` seen.
    pub async fn next(&mut self) -> Result<Option<FollowEvent>> {
        loop {
            if let Some(ev) = self.pending.pop_front() {
                return Ok(Some(ev));
            }
            while let Some(nl) = self.buf.iter().position(|b| *b == b'\n') {
                let line = self.buf.split_to(nl + 1);
                if let Some(ev) = parse_follow_line(&line[..nl])? {
                    self.pending.push_back(ev);
                }
            }
            if !self.pending.is_empty() {
                continue;
            }
            if self.buf.len() > MAX_FOLLOW_LINE {
                return Err(self.broken(format!("a line longer than {MAX_FOLLOW_LINE} bytes")));
            }
            let frame = match tokio::time::timeout(FOLLOW_IDLE_TIMEOUT, self.body.frame()).await {
                Err(_) => return Err(self.broken(format!("nothing received for {FOLLOW_IDLE_TIMEOUT:?}"))),
                Ok(None) => return Ok(None),
                Ok(Some(Err(e))) => return Err(self.broken(root_cause(&e))),
                Ok(Some(Ok(frame))) => frame,
            };
            if let Ok(mut data) = frame.into_data() {
                while data.has_remaining() {
                    let chunk = data.chunk();
                    self.buf.extend_from_slice(chunk);
                    let n = chunk.len();
                    data.advance(n);
                }
            }
        }
    }

    fn broken(&self, reason: String) -> ClientError {
        ClientError::Transport {
            method: "GET".into(),
            url: self.url.clone(),
            reason: format!("the log stream broke: {reason}"),
            source: reason.into(),
        }
    }
}

/// Parses one JSON line of the follow stream; empty lines are heartbeats.
fn parse_follow_line(line: &[u8]) -> Result<Option<FollowEvent>> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let v: serde_json::Value = serde_json::from_slice(line).map_err(|e| ClientError::Decode {
        method: "GET".into(),
        url: "logs/follow".into(),
        reason: format!("{e} in line {:?}", String::from_utf8_lossy(&line[..line.len().min(200)])),
    })?;
    if let Some(n) = v.get("missed").and_then(serde_json::Value::as_u64) {
        return Ok(Some(FollowEvent::Missed(n)));
    }
    if let Some(n) = v.get("notice").and_then(serde_json::Value::as_str) {
        return Ok(Some(FollowEvent::Notice(n.to_string())));
    }
    if let Some(e) = v.get("error").and_then(serde_json::Value::as_str) {
        return Ok(Some(FollowEvent::Error(e.to_string())));
    }
    serde_json::from_value(v).map(|r| Some(FollowEvent::Line(r))).map_err(|e| ClientError::Decode {
        method: "GET".into(),
        url: "logs/follow".into(),
        reason: e.to_string(),
    })
}

/// A drain as the API returns it: the platform's own record.
pub type DrainInfo = deis_core::controller::Drain;

impl Client {
    /// `GET /v2/apps/<app>/logs`: the last lines as the server formats them (each
    /// ending in `\n`); an empty string when there are none (204).
    pub async fn logs(&self, app: &str, options: &LogOptions) -> Result<String> {
        let path = format!("/v2/apps/{}/logs{}", encode_segment(app), options.query(&[]));
        let (status, _, bytes) = self.send(Method::GET, &path, Body::Empty, true).await?;
        match status {
            StatusCode::NO_CONTENT => Ok(String::new()),
            s if s.is_success() => Ok(String::from_utf8_lossy(&bytes).into_owned()),
            s => Err(ClientError::from_response(s.as_u16(), &bytes)),
        }
    }

    /// `GET /v2/apps/<app>/logs/follow?format=json`: the last `options.lines` lines
    /// (the server's default when `None`; `Some(0)`: only new ones), or every line
    /// after `after` (a resume), then new lines as they come.
    pub async fn logs_follow(&self, app: &str, options: &LogOptions, after: Option<u64>) -> Result<LogFollowStream> {
        let mut extra = vec![("format", "json".to_string())];
        if let Some(seq) = after {
            extra.push(("after", seq.to_string()));
        }
        let path = format!("/v2/apps/{}/logs/follow{}", encode_segment(app), options.query(&extra));
        let url = format!("{}{path}", self.base);
        let mut req = Request::builder().method(Method::GET).uri(&url);
        let ua = HeaderValue::from_str(&self.user_agent)
            .map_err(|_| ClientError::Request(format!("invalid User-Agent {:?}", self.user_agent)))?;
        req = req.header(header::USER_AGENT, ua);
        if let Some(token) = &self.token {
            let value = HeaderValue::from_str(&format!("token {token}"))
                .map_err(|_| ClientError::Request("the token contains characters not allowed in a header".into()))?;
            req = req.header(header::AUTHORIZATION, value);
        }
        let req = req.body(Full::new(Bytes::new())).map_err(|e| ClientError::Request(e.to_string()))?;
        let resp = match tokio::time::timeout(FOLLOW_HEAD_TIMEOUT, self.http.request(req)).await {
            Err(_) => {
                return Err(ClientError::Timeout { method: "GET".into(), url, secs: FOLLOW_HEAD_TIMEOUT.as_secs() });
            }
            Ok(Err(e)) => {
                let reason = root_cause(&e);
                return Err(if e.is_connect() {
                    ClientError::Connect { url: self.base.clone(), reason, source: Box::new(e) }
                } else {
                    ClientError::Transport { method: "GET".into(), url, reason, source: Box::new(e) }
                });
            }
            Ok(Ok(resp)) => resp,
        };
        let (parts, body) = resp.into_parts();
        if !parts.status.is_success() {
            let bytes = Limited::new(body, 64 * 1024).collect().await.map(|c| c.to_bytes()).unwrap_or_default();
            return Err(ClientError::from_response(parts.status.as_u16(), &bytes));
        }
        Ok(LogFollowStream { body, buf: BytesMut::new(), pending: VecDeque::new(), url })
    }

    /// `GET /v2/apps/<app>/drains/`: the app's log drains.
    pub async fn drains_list(&self, app: &str) -> Result<Vec<DrainInfo>> {
        self.list(&app_path(app, "drains/")).await
    }

    /// `POST /v2/apps/<app>/drains/` `{"url": ...}`: forwards the app's log to `url`
    /// (`syslog://host:port`, `syslog+udp://...`, `syslog+tls://...`).
    pub async fn drains_add(&self, app: &str, url: &str) -> Result<DrainInfo> {
        let body = json_body(&serde_json::json!({ "url": url }))?;
        self.call_json(Method::POST, &app_path(app, "drains/"), body).await
    }

    /// `DELETE /v2/apps/<app>/drains/<id or url>`.
    pub async fn drains_remove(&self, app: &str, id_or_url: &str) -> Result<()> {
        let path = app_path(app, &format!("drains/{}", encode_segment(id_or_url)));
        self.call(Method::DELETE, &path, Body::Empty).await.map(drop)
    }

    /// `GET /v2/apps/<app>/logs/token`: the app's syslog ingest token.
    pub async fn ingest_token(&self, app: &str) -> Result<deis_core::controller::IngestToken> {
        self.call_json(Method::GET, &app_path(app, "logs/token"), Body::Empty).await
    }

    /// `POST /v2/apps/<app>/logs/token`: replaces the app's ingest token; lines with
    /// the old one are refused from now on.
    pub async fn rotate_ingest_token(&self, app: &str) -> Result<deis_core::controller::IngestToken> {
        self.call_json(Method::POST, &app_path(app, "logs/token"), Body::Empty).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries() {
        assert_eq!(LogOptions::default().query(&[]), "");
        let o = LogOptions { lines: Some(5), proc_type: Some("web".into()), source: Some("app".into()) };
        assert_eq!(o.query(&[("after", "9".into())]), "?log_lines=5&type=web&source=app&after=9");
    }

    #[test]
    fn follow_lines() {
        assert_eq!(parse_follow_line(b"").unwrap(), None);
        assert_eq!(parse_follow_line(b"  \r").unwrap(), None);
        assert_eq!(parse_follow_line(br#"{"missed":4}"#).unwrap(), Some(FollowEvent::Missed(4)));
        assert_eq!(parse_follow_line(br#"{"error":"gone"}"#).unwrap(), Some(FollowEvent::Error("gone".into())));
        assert_eq!(parse_follow_line(br#"{"notice":"n"}"#).unwrap(), Some(FollowEvent::Notice("n".into())));
        let line = br#"{"seq":3,"time":"2026-11-25T14:47:21.123Z","app":"a","source":"a[web.1]","kind":"app","stream":"stdout","message":"hi"}"#;
        match parse_follow_line(line).unwrap() {
            Some(FollowEvent::Line(r)) => {
                assert_eq!(r.seq, 3);
                assert_eq!(r.to_string(), "2026-11-25T14:47:21.123Z a[web.1]: hi");
            }
            other => panic!("{other:?}"),
        }
        assert!(parse_follow_line(b"{nope").is_err());
    }
}
