//! The proxy service: host lookup, header rewriting, backend selection with retries,
//! upgrade pass-through and the router's own error pages.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::{Buf, Bytes};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Body, Incoming};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;

use super::Shared;
use super::backend::Conn;
use super::body::{BodyTooLarge, BoxError, RequestBody, ResponseBody};
use super::h1::{self, Forwarding, ProtocolError, RequestFraming, ResponseHead};
use super::policy::{self, ClientAddress};
use super::server::{Busy, ResponseDeadline, TrackedBody};
use super::table::{AppRoute, normalize_host};

const TEXT_PLAIN: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");

/// Per client connection state shared by its requests.
#[derive(Debug)]
pub(crate) struct ConnCtx {
    /// The router.
    pub shared: Arc<Shared>,
    /// The client's IP, ready to be appended to `X-Forwarded-For`.
    pub client_ip: HeaderValue,
    /// The TCP peer's address (for allow-lists).
    pub peer_ip: std::net::IpAddr,
    /// Whether the connection is TLS.
    pub secure: bool,
    /// Whether the peer is a trusted proxy (its forwarding headers are kept).
    pub trusted: bool,
    /// What the connection's idle/header-timeout watchdog looks at.
    pub activity: super::server::Activity,
}

/// Handles one client request: routes it (answering itself if it can't be routed),
/// then forwards it. The routing is done before the returned future exists, and the
/// future keeps the request in one place: it is moved a few times per request, so its
/// size matters.
pub(crate) fn handle(
    busy: Busy,
    req: Request<Incoming>,
) -> impl Future<Output = Result<Response<TrackedBody>, Infallible>> + Send {
    let metrics = busy.ctx().shared.config.metrics.as_deref();
    let started = metrics.map(|_| std::time::Instant::now());
    let mut prepared = prepare(busy.ctx(), req);
    let traffic = match (&prepared, metrics) {
        (Ok(forward), Some(m)) => Some(forward.route.traffic(m).clone()),
        _ => None,
    };
    async move {
        let response = match prepared {
            Ok(ref mut forward) => forward.run(busy.ctx()).await,
            Err(response) => response,
        };
        if let (Some(t), Some(started)) = (&traffic, started) {
            t.record(response.status().as_u16(), started.elapsed());
        }
        // The request counts as in progress until its response body is done.
        Ok(response.map(|body| TrackedBody::new(body, busy, traffic)))
    }
}

/// A routed request on its way to a backend.
struct Forward {
    route: Arc<AppRoute>,
    parts: http::request::Parts,
    /// The client's body (`None` if it has none).
    body: Option<RequestBody>,
    upgrade: Option<HeaderValue>,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    framing: RequestFraming,
    /// A body-less idempotent request may be replayed if its connection dies before
    /// answering (typically a pooled connection the backend was closing).
    replayable: bool,
}

/// Routes a request; the router's own answer if it can't be forwarded.
// Both outcomes are about as large, and live for an instant: boxing either would cost
// an allocation per request.
#[allow(clippy::result_large_err)]
fn prepare(ctx: &ConnCtx, mut req: Request<Incoming>) -> Result<Forward, Response<ResponseBody>> {
    let shared = &*ctx.shared;
    let stats = &shared.stats;
    stats.count_request();

    let route = {
        // Two `Host` fields make the request invalid (RFC 9110 section 7.2): the
        // router and the app might each believe another one.
        let mut hosts = req.headers().get_all(header::HOST).iter();
        let host = match (hosts.next(), hosts.next()) {
            (Some(_), Some(_)) => None,
            (Some(h), None) => h.to_str().ok(),
            (None, _) => req.uri().host(),
        };
        let Some(host) = host else {
            stats.bad_request.fetch_add(1, Ordering::Relaxed);
            return Err(text(
                StatusCode::BAD_REQUEST,
                "The request has no valid Host header, so the router can't route it.\n",
            ));
        };
        let normalized = normalize_host(host);
        let table = shared.table.load();
        match table.lookup(&normalized) {
            Some(route) => route.clone(),
            None => {
                stats.not_found.fetch_add(1, Ordering::Relaxed);
                return Err(text(
                    StatusCode::NOT_FOUND,
                    format!(
                        "No app is routed at host {host}. Use <app>.{} or add the host with `deis domains:add`.\n",
                        shared.config.domain
                    ),
                ));
            }
        }
    };
    if let Some(policy) = &route.policy {
        let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).or_else(|| req.uri().host());
        let host = normalize_host(host.unwrap_or_default());
        let request = policy::Request {
            app: &route.app,
            host: &host,
            uri: req.uri(),
            headers: req.headers(),
            secure: ctx.secure,
        };
        let client = ClientAddress { peer: ctx.peer_ip, trusted: &shared.config.trusted_proxies };
        if let Some(response) = policy.check(&request, &client, shared.config.https_port) {
            stats.policy_answers.fetch_add(1, Ordering::Relaxed);
            return Err(response);
        }
    }
    let app = &route.app;
    if route.backends.is_empty() {
        stats.no_backend.fetch_add(1, Ordering::Relaxed);
        return Err(text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("App {app} has no running web process. Deploy it, or scale web up: deis scale web=1 -a {app}\n"),
        ));
    }

    if let Some(limit) = shared.config.max_request_body
        && req.body().size_hint().lower() > limit
    {
        stats.too_large.fetch_add(1, Ordering::Relaxed);
        return Err(too_large(limit));
    }

    let upgrade = upgrade_protocol(req.headers());
    let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    let framing = if body.is_end_stream() {
        RequestFraming::Empty
    } else if body.size_hint().exact().is_some() {
        RequestFraming::Length
    } else {
        RequestFraming::Chunked
    };
    let body = (framing != RequestFraming::Empty).then_some(RequestBody {
        body,
        limit: shared.config.max_request_body,
        seen: 0,
    });
    let replayable = framing == RequestFraming::Empty && client_upgrade.is_none() && is_idempotent(&parts.method);
    Ok(Forward { route, parts, body, upgrade, client_upgrade, framing, replayable })
}

impl Forward {
    /// Sends the request to the route's backends (round-robin, skipping those that
    /// can't be reached, replaying it if allowed) and answers with the first response.
    async fn run(&mut self, ctx: &ConnCtx) -> Response<ResponseBody> {
        let shared = &*ctx.shared;
        let stats = &shared.stats;
        let Self { route, parts, body, upgrade, client_upgrade, framing, replayable } = self;
        let (app, replayable) = (&route.app, *replayable);
        let fwd = Forwarding {
            client_ip: &ctx.client_ip,
            trusted: ctx.trusted,
            upgrade: upgrade.as_ref(),
            framing: *framing,
            secure: ctx.secure,
        };
        let method = &parts.method;
        let backends = &route.backends;
        let n = backends.len();
        let mut pos = route.next_start();
        let (mut connect_failures, mut attempts, mut replays) = (0usize, 0usize, 0usize);
        let mut last_error = String::new();
        while connect_failures < n && attempts <= n + 8 {
            attempts += 1;
            let backend = &backends[pos % n];
            // An idle pooled connection without awaiting anything; connecting (rare once
            // the pool is warm) is boxed to keep this future small.
            let pooled = backend.checkout();
            let (mut conn, pooled) = match pooled {
                Some(conn) => (conn, true),
                None => match Box::pin(backend.connect()).await {
                    Ok(conn) => (conn, false),
                    Err(e) => {
                        stats.connect_failures.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(app = %app, error = %e, "router: backend connect failed; trying the next one");
                        last_error = e.to_string();
                        connect_failures += 1;
                        pos += 1;
                        continue;
                    }
                },
            };
            let result = {
                let mut exchange = std::pin::pin!(exchange(&mut conn, parts, &fwd, body.as_mut(), method));
                match shared.config.response_timeout {
                    Some(t) => {
                        let deadline = ResponseDeadline::start(&ctx.activity);
                        match std::future::poll_fn(|cx| deadline.poll(exchange.as_mut(), cx)).await {
                            Some(r) => r,
                            None => {
                                stats.gateway_timeout.fetch_add(1, Ordering::Relaxed);
                                return text(
                                    StatusCode::GATEWAY_TIMEOUT,
                                    format!("App {app} did not answer within {t:?} (backend {}).\n", backend.addr),
                                );
                            }
                        }
                    }
                    None => exchange.await,
                }
            };
            let error = match result {
                Ok((resp, complete)) => {
                    if resp.status == StatusCode::SWITCHING_PROTOCOLS {
                        return switch_protocols(shared, app, client_upgrade.take(), resp, conn);
                    }
                    let ResponseHead { status, mut headers, framing, keep_alive, .. } = resp;
                    h1::strip_hop_by_hop(&mut headers, false);
                    // A backend that answered before taking the whole request body can't
                    // take another request on this connection.
                    let body = ResponseBody::backend(framing, conn, backend, keep_alive && complete);
                    let mut response = Response::new(body);
                    *response.status_mut() = status;
                    *response.headers_mut() = headers;
                    return response;
                }
                Err(e) => e,
            };
            last_error = format!("{error} (backend {})", backend.addr);
            match error {
                // The head never got through: nothing was processed, whatever the request.
                ExchangeError::NotSent(_) => {
                    pos += usize::from(!pooled);
                    continue;
                }
                ExchangeError::NoAnswer(_) if replayable && replays < n => {
                    replays += 1;
                    stats.retries.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(app = %app, error = %last_error, "router: replaying a request its connection dropped");
                    pos += 1;
                    continue;
                }
                ExchangeError::ClientBody(e) => {
                    if let Some(limit) = e.downcast_ref::<BodyTooLarge>().map(|t| t.limit) {
                        stats.too_large.fetch_add(1, Ordering::Relaxed);
                        return too_large(limit);
                    }
                    return text(StatusCode::BAD_REQUEST, format!("The request body could not be read: {e}.\n"));
                }
                ExchangeError::NoAnswer(_) | ExchangeError::Broken(_) | ExchangeError::Protocol(_) => break,
            }
        }
        stats.bad_gateway.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(app = %app, error = %last_error, "router: no backend answered");
        text(
            StatusCode::BAD_GATEWAY,
            format!(
                "App {app} did not answer: none of its {n} web unit(s) could be reached ({last_error}). \
             Check `deis ps -a {app}` and the app's logs.\n"
            ),
        )
    }
}

/// Why an exchange with a backend failed.
#[derive(Debug, thiserror::Error)]
enum ExchangeError {
    /// Writing the request head failed: the backend can't have acted on it.
    #[error("sending the request: {0}")]
    NotSent(std::io::Error),
    /// The connection ended before any byte of a response.
    #[error("the connection closed without an answer ({0})")]
    NoAnswer(String),
    /// The connection failed in the middle of the response head.
    #[error("the connection failed during the response head: {0}")]
    Broken(std::io::Error),
    /// The response is not HTTP/1.1.
    #[error("invalid response: {0}")]
    Protocol(ProtocolError),
    /// The client's body failed (or went over the limit).
    #[error("{0}")]
    ClientBody(BoxError),
}

/// Sends a request (the head of `parts` as forwarded by `fwd`, then `body`) on `conn`
/// and reads the response head. Returns it and whether the backend took the whole
/// request first (if it answered early, the connection can't be reused).
async fn exchange(
    conn: &mut Conn,
    parts: &http::request::Parts,
    fwd: &Forwarding<'_>,
    body: Option<&mut RequestBody>,
    method: &Method,
) -> Result<(ResponseHead, bool), ExchangeError> {
    // Encoded into the connection's own buffer: no allocation once it is warm.
    conn.out.clear();
    h1::encode_request_head(&mut conn.out, parts, fwd);
    conn.stream.write_all(&conn.out).await.map_err(ExchangeError::NotSent)?;
    let complete = match body {
        // Boxed: most requests have no body, and this keeps every request's future small.
        Some(body) => Box::pin(send_body(conn, body, fwd.framing == RequestFraming::Chunked)).await?,
        None => true,
    };
    let mut received = !conn.buf.is_empty();
    loop {
        match h1::parse_response_head(&mut conn.buf, method) {
            // Interim responses (100 Continue, 103 Early Hints) are not passed on.
            Ok(Some(resp)) if resp.status.is_informational() && resp.status != StatusCode::SWITCHING_PROTOCOLS => {
                continue;
            }
            Ok(Some(resp)) => return Ok((resp, complete)),
            Ok(None) => {}
            Err(e) => return Err(ExchangeError::Protocol(e)),
        }
        match conn.fill().await {
            Ok(0) if received => {
                return Err(ExchangeError::Broken(std::io::ErrorKind::UnexpectedEof.into()));
            }
            Ok(0) => return Err(ExchangeError::NoAnswer("end of stream".into())),
            Ok(_) => received = true,
            Err(e) if received => return Err(ExchangeError::Broken(e)),
            Err(e) => return Err(ExchangeError::NoAnswer(e.to_string())),
        }
    }
}

/// Streams the client's body to the backend, chunked or as is, while watching for an
/// early response. `Ok(true)` once it was all sent, `Ok(false)` if the backend
/// answered (or closed) first.
async fn send_body(conn: &mut Conn, body: &mut RequestBody, chunked: bool) -> Result<bool, ExchangeError> {
    loop {
        tokio::select! {
            biased;
            frame = body.frame() => {
                let data = match frame {
                    None => break,
                    Some(Err(e)) => return Err(ExchangeError::ClientBody(e)),
                    // Trailers are not forwarded.
                    Some(Ok(frame)) => match frame.into_data() {
                        Ok(data) if !data.is_empty() => data,
                        _ => continue,
                    },
                };
                let written = if chunked {
                    let mut framed = h1::chunk_size_line(data.len()).chain(data).chain(&b"\r\n"[..]);
                    conn.stream.write_all_buf(&mut framed).await
                } else {
                    conn.stream.write_all(&data).await
                };
                if written.is_err() {
                    // Possibly closed after answering early: read what it said.
                    return Ok(false);
                }
            }
            read = conn.fill() => match read {
                Ok(n) if n > 0 && !conn.buf.windows(4).any(|w| w == b"\r\n\r\n") => {}
                // An answer, or the end of the connection, before the whole body.
                _ => return Ok(false),
            },
        }
    }
    if chunked && conn.stream.write_all(b"0\r\n\r\n").await.is_err() {
        return Ok(false);
    }
    Ok(true)
}

/// Completes a protocol switch: answers 101 and splices the two upgraded connections.
fn switch_protocols(
    shared: &Shared,
    app: &str,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    resp: ResponseHead,
    mut conn: Conn,
) -> Response<ResponseBody> {
    let Some(client_upgrade) = client_upgrade else {
        shared.stats.bad_gateway.fetch_add(1, Ordering::Relaxed);
        return text(
            StatusCode::BAD_GATEWAY,
            format!("App {app} switched protocols on a request that did not ask for an upgrade.\n"),
        );
    };
    shared.stats.upgrades.fetch_add(1, Ordering::Relaxed);
    let app = app.to_string();
    tokio::spawn(async move {
        match client_upgrade.await {
            Ok(client) => {
                let mut client = TokioIo::new(client);
                // What the backend sent right after its 101 goes first.
                let early = conn.buf.split();
                let copied = async {
                    client.write_all(&early).await?;
                    tokio::io::copy_bidirectional(&mut client, &mut conn.stream).await
                };
                if let Err(e) = copied.await {
                    tracing::debug!(app = %app, error = %e, "router: upgraded connection ended with an error");
                }
            }
            Err(e) => tracing::debug!(app = %app, error = %e, "router: upgrade failed"),
        }
    });
    let ResponseHead { status, mut headers, .. } = resp;
    h1::strip_hop_by_hop(&mut headers, true);
    let mut response = Response::new(ResponseBody::empty());
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// The protocol asked for by `Connection: upgrade` + `Upgrade: <protocol>`.
fn upgrade_protocol(headers: &HeaderMap) -> Option<HeaderValue> {
    let upgrade = headers.get(header::UPGRADE)?;
    connection_tokens(headers).any(|t| t.eq_ignore_ascii_case("upgrade")).then(|| upgrade.clone())
}

fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

fn is_idempotent(m: &Method) -> bool {
    matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE)
}

fn too_large(limit: u64) -> Response<ResponseBody> {
    text(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("The request body is larger than the router's limit of {limit} bytes.\n"),
    )
}

/// A plain-text response produced by the router itself.
fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, TEXT_PLAIN);
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_upgrades() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert_eq!(upgrade_protocol(&h).unwrap(), "websocket");

        let mut plain = HeaderMap::new();
        plain.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(upgrade_protocol(&plain).is_none(), "Upgrade without Connection: upgrade is not an upgrade");
    }
}
