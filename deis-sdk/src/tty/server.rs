//! The attach route: `GET /v2/sessions/<id>/attach` upgraded to a WebSocket speaking the
//! Kubernetes channel protocol, piping frames between the client and a [`Session`].

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use deis_core::tty::channel::{self, Frame, Protocol};
use deis_core::tty::{ExitStatus, Session, SessionInput, SessionOutput, TermSize};
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};

use super::audit::AuditEvent;
use super::{SessionEnd, TtyService};

/// The attach route (`/v2/sessions/{id}/attach`) of `service`, as an axum router to
/// serve alone or merge into another (deisd merges it into the controller API).
pub fn attach_router(service: Arc<TtyService>) -> Router {
    Router::new().route("/v2/sessions/{id}/attach", get(attach)).with_state(service)
}

/// A refusal before the upgrade: status and a plain-text explanation.
fn refuse(status: StatusCode, message: impl Into<String>) -> Response {
    let mut text = message.into();
    text.push('\n');
    let mut resp = (status, text).into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    resp
}

/// The attach request's query: `?token=...&app=...` (both optional). A query that can't
/// be decoded counts as none.
#[derive(Debug, Default, serde::Deserialize)]
struct AttachQuery {
    token: Option<String>,
    app: Option<String>,
}

impl AttachQuery {
    fn of(uri: &http::Uri) -> Self {
        Query::try_from_uri(uri).map(|Query(q)| q).unwrap_or_default()
    }
}

/// The token: `?token=` or `Authorization: Bearer <token>`.
fn token_of<'a>(headers: &'a HeaderMap, query: &'a AttachQuery) -> Option<&'a str> {
    if let Some(t) = query.token.as_deref().filter(|t| !t.is_empty()) {
        return Some(t);
    }
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The host part of a `Host` header or an origin's authority, lower-cased.
fn host_of(authority: &str) -> String {
    authority.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// `Origin` policy: absent is fine (CLIs send none); otherwise it must be listed in
/// `allowed` or name the same host (and port) the request was sent to.
fn origin_allowed(headers: &HeaderMap, allowed: &[String]) -> Result<(), String> {
    let Some(origin) = headers.get(header::ORIGIN) else { return Ok(()) };
    let origin = origin.to_str().map_err(|_| "the Origin header is not valid text".to_string())?.trim();
    if allowed.iter().any(|a| a.eq_ignore_ascii_case(origin)) {
        return Ok(());
    }
    let origin_host = origin.split_once("://").map(|(_, rest)| host_of(rest.trim_end_matches('/')));
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).map(host_of);
    match (origin_host, host) {
        (Some(o), Some(h)) if o == h => Ok(()),
        _ => Err(format!(
            "Origin {origin} is not allowed to open sessions on this broker (cross-site WebSocket requests are \
             refused; allow it with the broker's allowed-origins setting)"
        )),
    }
}

async fn attach(state: State<Arc<TtyService>>, id: Path<String>, req: Request) -> Response {
    let svc = state.0.clone();
    let resp = upgrade(state, id, req).await;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        svc.counters.refused();
    }
    resp
}

/// Checks an attach request and upgrades it (or refuses it, saying why).
async fn upgrade(State(svc): State<Arc<TtyService>>, Path(id): Path<String>, mut req: Request) -> Response {
    let headers = req.headers();
    let query = AttachQuery::of(req.uri());
    let is_upgrade = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|p| p.trim().eq_ignore_ascii_case("websocket")));
    let key = headers.get(header::SEC_WEBSOCKET_KEY).cloned();
    let (true, Some(key)) = (is_upgrade, key) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "this endpoint is a WebSocket (Upgrade: websocket with Sec-WebSocket-Key); attach with `deis run` or a \
             Kubernetes channel-protocol client",
        );
    };
    if headers.get(header::SEC_WEBSOCKET_VERSION).is_some_and(|v| v.as_bytes() != b"13") {
        return refuse(StatusCode::BAD_REQUEST, "unsupported WebSocket version: only version 13 is spoken");
    }
    if let Err(msg) = origin_allowed(headers, &svc.config.allowed_origins) {
        return refuse(StatusCode::FORBIDDEN, msg);
    }
    let offered = headers.get_all(header::SEC_WEBSOCKET_PROTOCOL).iter().filter_map(|v| v.to_str().ok());
    let Some(protocol) = channel::negotiate(offered) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            format!(
                "no supported subprotocol offered: send Sec-WebSocket-Protocol: {} (or {})",
                channel::V5_PROTOCOL,
                channel::V4_PROTOCOL
            ),
        );
    };
    let Some(token) = token_of(headers, &query) else {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "no session token: pass ?token=<token> or Authorization: Bearer <token> (tokens come from \
             POST /v2/apps/<app>/sessions)",
        );
    };
    let Some(app) = svc.directory.app_of(&id, query.app.as_deref()).await else {
        return refuse(
            StatusCode::NOT_FOUND,
            format!("no session {id} is waiting to be attached (already attached, expired, or never created)"),
        );
    };
    let claims = match svc.signer.verify(token, &app, SystemTime::now()) {
        Ok(c) => c,
        Err(e) => {
            tracing::info!(session = %id, error = %e, "tty attach refused");
            return refuse(StatusCode::FORBIDDEN, e.to_string());
        }
    };
    if claims.session != id {
        return refuse(StatusCode::FORBIDDEN, "session token is for another session");
    }
    if let Err(e) = svc.replay.consume(&claims) {
        tracing::info!(session = %id, error = %e, "tty attach refused");
        return refuse(StatusCode::FORBIDDEN, e.to_string());
    }
    let mut spec = match svc.directory.take(&claims).await {
        Ok(spec) => spec,
        Err(e) => return refuse(StatusCode::NOT_FOUND, e.to_string()),
    };
    if spec.tty && spec.size.is_none() {
        spec.size = Some(TermSize { cols: 80, rows: 24 });
    }

    {
        // Through the routing mesh, the router names the client in X-Forwarded-For.
        let text = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("");
        let (host, forwarded_for) = (text("host"), text("x-forwarded-for"));
        let via = if forwarded_for.is_empty() { "direct" } else { "router" };
        tracing::info!(session = %id, app = %spec.app, host, forwarded_for, via, "tty session attached");
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    let svc2 = svc.clone();
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let config = WebSocketConfig::default()
                    .max_message_size(Some(svc2.config.max_message_bytes))
                    .max_frame_size(Some(svc2.config.max_message_bytes));
                let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await;
                run_session(svc2, ws, protocol, id, spec).await;
            }
            Err(e) => tracing::warn!(session = %id, error = %e, "tty attach: upgrade failed"),
        }
    });
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(protocol.name()));
    if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    resp
}

/// How long each half of the closing handshake may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// How a session's socket loop ended.
enum End {
    Exited(ExitStatus),
    ClientGone,
    Idle,
    TooLong,
    Failed(String),
}

/// Runs one attached session: opens it on the broker, pipes frames, audits.
async fn run_session<S>(
    svc: Arc<TtyService>,
    mut ws: WebSocketStream<S>,
    protocol: Protocol,
    id: String,
    spec: deis_core::tty::SessionSpec,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let started = Instant::now();
    let (user, app, command, tty) = (spec.user.clone(), spec.app.clone(), spec.command.clone(), spec.tty);
    let session = match svc.broker.open(spec).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(session = %id, %app, error = %e, "tty session could not start");
            let status =
                channel::status_error(channel::REASON_INTERNAL_ERROR, &format!("the session could not start: {e}"));
            let _ = ws.send(Message::Binary(channel::encode(&Frame::Status(status)).into())).await;
            let _ = ws.close(None).await;
            return;
        }
    };
    svc.counters.started();
    svc.audit
        .record(&AuditEvent::Started {
            id: id.clone(),
            user: user.clone(),
            app: app.clone(),
            command: command.clone(),
            tty,
        })
        .await;
    let (end, closing) = pump(&svc, ws, protocol, session).await;
    let (exit, reason, how) = match end {
        End::Exited(e) => (Some(e), "exited".to_string(), SessionEnd::Exited),
        End::ClientGone => (None, "client disconnected".to_string(), SessionEnd::ClientGone),
        End::Idle => (None, format!("idle for {}s", svc.config.idle_timeout.as_secs()), SessionEnd::Idle),
        End::TooLong => (
            None,
            format!("reached the maximum session length of {}s", svc.config.max_session.as_secs()),
            SessionEnd::TimedOut,
        ),
        End::Failed(m) => (None, m, SessionEnd::Failed),
    };
    svc.counters.ended(how);
    svc.audit.record(&AuditEvent::Ended { id, user, app, command, exit, reason, duration: started.elapsed() }).await;
    closing.await;
}

fn binary(frame: &Frame) -> Message {
    Message::Binary(Bytes::from(channel::encode(frame)))
}

/// Pipes frames until the command exits or the session must end.
///
/// Backpressure: client input goes to the session's bounded input channel from a
/// separate task (a process that does not read its stdin stops us reading the
/// socket); process output is read only after the previous message was written to the
/// socket (a client that does not read stops us reading the process).
///
/// Returns how the session ended, and the closing handshake still to run.
async fn pump<S>(
    svc: &TtyService,
    ws: WebSocketStream<S>,
    protocol: Protocol,
    session: Session,
) -> (End, impl std::future::Future<Output = ()> + use<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let Session { input, mut output } = session;
    let (mut sink, mut stream) = ws.split();
    let last_activity = Arc::new(std::sync::Mutex::new(Instant::now()));
    let reader_activity = last_activity.clone();
    let mut reader = tokio::spawn(async move {
        while let Some(msg) = stream.next().await {
            let msg = match msg {
                Ok(m) => m,
                Err(e) => return Err(format!("reading from the client: {e}")),
            };
            *reader_activity.lock().expect("activity") = Instant::now();
            let frame = match msg {
                Message::Binary(b) => channel::decode(&b, protocol),
                // tungstenite answers pings itself.
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
                Message::Text(_) => {
                    return Err("text messages are not part of the channel protocol; send binary frames".into());
                }
                Message::Close(_) => return Ok(()),
            };
            let input_msg = match frame {
                Ok(Frame::Stdin(b)) if b.is_empty() => continue,
                Ok(Frame::Stdin(b)) => SessionInput::Stdin(b),
                Ok(Frame::Resize(size)) => SessionInput::Resize(size),
                Ok(Frame::Close(channel::STDIN)) => SessionInput::Eof,
                Ok(Frame::Close(_)) => continue,
                Ok(other) => return Err(format!("the client may not send on channel {}", other.channel())),
                Err(e) => return Err(e.to_string()),
            };
            // An error means the command ended: the writer reports it, and this loop
            // keeps reading (and discarding) until the client's close.
            let _ = input.send(input_msg).await;
        }
        Ok(())
    });

    let mut ping = tokio::time::interval(svc.config.ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    let max_deadline = tokio::time::Instant::now() + svc.config.max_session;
    let idle = svc.config.idle_timeout;
    let mut reader_done = false;
    let end = loop {
        let idle_deadline = tokio::time::Instant::from_std(*last_activity.lock().expect("activity") + idle);
        tokio::select! {
            out = output.recv() => {
                *last_activity.lock().expect("activity") = Instant::now();
                let frame = match out {
                    Some(SessionOutput::Stdout(b)) => Frame::Stdout(b),
                    Some(SessionOutput::Stderr(b)) => Frame::Stderr(b),
                    Some(SessionOutput::Exit(status)) => {
                        let _ = sink.send(binary(&Frame::Status(channel::status_exit(status)))).await;
                        break End::Exited(status);
                    }
                    None => {
                        let msg = "the session ended without an exit status (backend failure)";
                        let st = channel::status_error(channel::REASON_INTERNAL_ERROR, msg);
                        let _ = sink.send(binary(&Frame::Status(st))).await;
                        break End::Failed(msg.into());
                    }
                };
                if sink.send(binary(&frame)).await.is_err() {
                    break End::ClientGone;
                }
            }
            r = &mut reader => {
                reader_done = true;
                match r {
                    Ok(Ok(())) => break End::ClientGone,
                    Ok(Err(msg)) => {
                        let st = channel::status_error("BadRequest", &msg);
                        let _ = sink.send(binary(&Frame::Status(st))).await;
                        break End::Failed(msg);
                    }
                    Err(e) => break End::Failed(format!("reader task failed: {e}")),
                }
            }
            _ = ping.tick() => {
                if sink.send(Message::Ping(Bytes::new())).await.is_err() {
                    break End::ClientGone;
                }
            }
            () = tokio::time::sleep_until(idle_deadline) => {
                if last_activity.lock().expect("activity").elapsed() >= idle {
                    let msg = format!("session closed after {}s without input or output", idle.as_secs());
                    let _ = sink.send(binary(&Frame::Status(channel::status_error("Timeout", &msg)))).await;
                    break End::Idle;
                }
            }
            () = tokio::time::sleep_until(max_deadline) => {
                let msg = format!("session closed: it reached the maximum length of {}s", svc.config.max_session.as_secs());
                let _ = sink.send(binary(&Frame::Status(channel::status_error("Timeout", &msg)))).await;
                break End::TooLong;
            }
        }
    };
    // Dropping the output receiver ends the session: the backend kills what is left of
    // the command.
    drop(output);
    let handshake = !matches!(end, End::ClientGone);
    let closing = async move {
        if handshake {
            // Our close, then the client's. Closing the socket before reading what the
            // client still sends would make the kernel answer with a reset, which can
            // overtake the status frame on its way to the client.
            let close = CloseFrame { code: CloseCode::Normal, reason: "".into() };
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, sink.send(Message::Close(Some(close)))).await;
            if !reader_done {
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, &mut reader).await;
            }
        }
        reader.abort();
    };
    (end, closing)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn origin_policy() {
        assert!(origin_allowed(&headers(&[("host", "a:1")]), &[]).is_ok());
        assert!(origin_allowed(&headers(&[("host", "a:1"), ("origin", "http://a:1")]), &[]).is_ok());
        let err = origin_allowed(&headers(&[("host", "a:1"), ("origin", "https://evil.example")]), &[]).unwrap_err();
        assert!(err.contains("https://evil.example") && err.contains("not allowed"), "{err}");
        let allowed = vec!["https://console.example".to_string()];
        assert!(origin_allowed(&headers(&[("host", "a:1"), ("origin", "https://console.example")]), &allowed).is_ok());
        assert!(origin_allowed(&headers(&[("host", "a:1"), ("origin", "null")]), &[]).is_err());
    }

    #[test]
    fn token_from_query_or_bearer() {
        let query = |q: &str| AttachQuery::of(&format!("/v2/sessions/s/attach{q}").parse().unwrap());
        let h = headers(&[("authorization", "Bearer abc.def")]);
        assert_eq!(token_of(&h, &query("")), Some("abc.def"));
        assert_eq!(token_of(&h, &query("?x=1&token=q.r")), Some("q.r"));
        assert_eq!(token_of(&h, &query("?token=")), Some("abc.def"), "an empty token falls back to the header");
        assert_eq!(token_of(&headers(&[("authorization", "token abc")]), &query("")), None);
        assert_eq!(query("?a=1&app=hello").app.as_deref(), Some("hello"));
        assert_eq!(query("?app=hel%6Co").app.as_deref(), Some("hello"), "values are percent-decoded");
    }
}
