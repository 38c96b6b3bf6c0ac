//! The proxy service: host lookup, header rewriting, backend selection with retries,
//! upgrade pass-through and the router's own error pages.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::{Body, Incoming};
use hyper_util::rt::TokioIo;

use super::Shared;
use super::backend::Conn;
use super::body::{BodyTooLarge, Release, RequestBody, ResponseBody};
use super::table::normalize_host;

const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const HTTP: HeaderValue = HeaderValue::from_static("http");
const UPGRADE_TOKEN: HeaderValue = HeaderValue::from_static("upgrade");
const TEXT_PLAIN: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");

/// Headers that describe one hop and are never forwarded (RFC 9110 7.6.1), plus
/// `Expect`, which the router's server side already answered.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::EXPECT,
];

/// Per client connection state shared by its requests.
#[derive(Debug)]
pub(crate) struct ConnCtx {
    /// The router.
    pub shared: Arc<Shared>,
    /// The client's IP, ready to be appended to `X-Forwarded-For`.
    pub client_ip: HeaderValue,
    /// What the connection's idle/header-timeout watchdog looks at.
    pub activity: super::server::Activity,
}

/// Handles one client request.
pub(crate) async fn handle(ctx: &ConnCtx, mut req: Request<Incoming>) -> Response<ResponseBody> {
    let shared = &*ctx.shared;
    let stats = &shared.stats;
    stats.count_request();

    let route = {
        let host = match req.headers().get(header::HOST) {
            Some(h) => h.to_str().ok(),
            None => req.uri().host(),
        };
        let Some(host) = host else {
            stats.bad_request.fetch_add(1, Ordering::Relaxed);
            return text(
                StatusCode::BAD_REQUEST,
                "The request has no valid Host header, so the router can't route it.\n",
            );
        };
        let normalized = normalize_host(host);
        let table = shared.table.load();
        match table.lookup(&normalized) {
            Some(route) => route.clone(),
            None => {
                stats.not_found.fetch_add(1, Ordering::Relaxed);
                return text(
                    StatusCode::NOT_FOUND,
                    format!(
                        "No app is routed at host {host}. Use <app>.{} or add the host with `deis domains:add`.\n",
                        shared.config.domain
                    ),
                );
            }
        }
    };
    let app = &route.app;
    if route.backends.is_empty() {
        stats.no_backend.fetch_add(1, Ordering::Relaxed);
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("App {app} has no running web process. Deploy it, or scale web up: deis scale web=1 -a {app}\n"),
        );
    }

    if let Some(limit) = shared.config.max_request_body
        && req.body().size_hint().lower() > limit
    {
        stats.too_large.fetch_add(1, Ordering::Relaxed);
        return too_large(limit);
    }

    let upgrade = upgrade_protocol(req.headers());
    let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    prepare_request_headers(&mut parts.headers, &ctx.client_ip, upgrade);
    if parts.uri.scheme().is_some() {
        // Absolute-form (proxy-style) target: backends get origin-form.
        if !parts.headers.contains_key(header::HOST)
            && let Some(v) = parts.uri.authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            parts.headers.insert(header::HOST, v);
        }
        parts.uri = parts.uri.path_and_query().map_or_else(|| Uri::from_static("/"), |pq| Uri::from(pq.clone()));
    }
    parts.version = Version::HTTP_11;

    let bodyless = body.is_end_stream();
    // A body-less idempotent request may be replayed once if a connection dies before
    // answering (typically a pooled connection the backend had just closed).
    let replay = (bodyless && client_upgrade.is_none() && is_idempotent(&parts.method))
        .then(|| (parts.method.clone(), parts.uri.clone(), parts.headers.clone()));
    let body = if bodyless {
        RequestBody::Empty
    } else {
        RequestBody::Incoming { body, limit: shared.config.max_request_body, seen: 0 }
    };
    let mut request = Some(Request::from_parts(parts, body));

    let backends = &route.backends;
    let n = backends.len();
    let mut pos = route.next_start();
    let mut connect_failures = 0usize;
    let mut unsent_retries = 0usize;
    let mut replay = replay;
    let mut last_error = String::new();
    while connect_failures < n {
        let backend = &backends[pos % n];
        let mut conn = match backend.acquire().await {
            Ok(s) => s,
            Err(e) => {
                stats.connect_failures.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(app = %app, error = %e, "router: backend connect failed; trying the next one");
                last_error = e.to_string();
                connect_failures += 1;
                pos += 1;
                continue;
            }
        };
        let Some(req) = request.take() else { break };
        let sent = conn.send(req);
        let result = match shared.config.response_timeout {
            Some(t) => match tokio::time::timeout(t, sent).await {
                Ok(r) => r,
                Err(_) => {
                    stats.gateway_timeout.fetch_add(1, Ordering::Relaxed);
                    return text(
                        StatusCode::GATEWAY_TIMEOUT,
                        format!("App {app} did not answer within {t:?} (backend {}).\n", backend.addr),
                    );
                }
            },
            None => sent.await,
        };
        match result {
            Ok(mut resp) => {
                if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
                    return switch_protocols(shared, app, client_upgrade, resp, conn);
                }
                strip_hop_by_hop(resp.headers_mut(), false);
                let (parts, body) = resp.into_parts();
                let release = Release { conn, backend: backend.clone() };
                return Response::from_parts(parts, ResponseBody::proxied(body, Some(release)));
            }
            Err(mut e) => {
                if let Some(req) = e.take_message() {
                    // Never written: the connection was closed; try another one.
                    request = Some(req);
                    unsent_retries += 1;
                    if unsent_retries > n + 8 {
                        last_error = e.into_error().to_string();
                        break;
                    }
                    continue;
                }
                let error = e.into_error();
                if let Some(limit) = body_too_large(&error) {
                    stats.too_large.fetch_add(1, Ordering::Relaxed);
                    return too_large(limit);
                }
                last_error = format!("{} (backend {})", error, backend.addr);
                match replay.take() {
                    Some((method, uri, headers)) if replayable(&error) => {
                        stats.retries.fetch_add(1, Ordering::Relaxed);
                        let mut req = Request::new(RequestBody::Empty);
                        *req.method_mut() = method;
                        *req.uri_mut() = uri;
                        *req.headers_mut() = headers;
                        request = Some(req);
                        pos += 1;
                    }
                    _ => break,
                }
            }
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

/// Completes a protocol switch: answers 101 and splices the two upgraded connections.
fn switch_protocols(
    shared: &Shared,
    app: &str,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    mut resp: Response<Incoming>,
    conn: Conn,
) -> Response<ResponseBody> {
    let Some(client_upgrade) = client_upgrade else {
        shared.stats.bad_gateway.fetch_add(1, Ordering::Relaxed);
        return text(
            StatusCode::BAD_GATEWAY,
            format!("App {app} switched protocols on a request that did not ask for an upgrade.\n"),
        );
    };
    shared.stats.upgrades.fetch_add(1, Ordering::Relaxed);
    let backend_upgrade = hyper::upgrade::on(&mut resp);
    let app = app.to_string();
    let driver = conn.into_driver();
    tokio::spawn(async move {
        // The backend side of the upgrade completes when its driver hands over the
        // connection.
        if let Some(driver) = driver
            && let Err(e) = driver.await
        {
            tracing::debug!(app = %app, error = %e, "router: backend connection failed during the upgrade");
        }
        match tokio::try_join!(client_upgrade, backend_upgrade) {
            Ok((client, backend)) => {
                let mut client = TokioIo::new(client);
                let mut backend = TokioIo::new(backend);
                if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut backend).await {
                    tracing::debug!(app = %app, error = %e, "router: upgraded connection ended with an error");
                }
            }
            Err(e) => tracing::debug!(app = %app, error = %e, "router: upgrade failed"),
        }
    });
    strip_hop_by_hop(resp.headers_mut(), true);
    let (parts, _) = resp.into_parts();
    Response::from_parts(parts, ResponseBody::empty())
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

/// Removes hop-by-hop headers, including those the `Connection` header names.
/// With `keep_upgrade`, `Connection: upgrade` and `Upgrade` stay.
fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // One pass over the (few) headers present; most messages have none to remove,
    // and then nothing is allocated or looked up.
    if !headers.keys().any(|name| HOP_BY_HOP.contains(name)) {
        return;
    }
    let listed: Vec<HeaderName> = connection_tokens(headers)
        .filter(|t| {
            !t.eq_ignore_ascii_case("close")
                && !t.eq_ignore_ascii_case("keep-alive")
                && !t.eq_ignore_ascii_case("upgrade")
        })
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    let upgrade = if keep_upgrade { headers.get(header::UPGRADE).cloned() } else { None };
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    if let Some(u) = upgrade {
        headers.insert(header::CONNECTION, UPGRADE_TOKEN);
        headers.insert(header::UPGRADE, u);
    }
}

/// Rewrites a client request's headers for the backend. `Host` is kept as sent.
fn prepare_request_headers(headers: &mut HeaderMap, client_ip: &HeaderValue, upgrade: Option<HeaderValue>) {
    strip_hop_by_hop(headers, false);
    if let Some(u) = upgrade {
        headers.insert(header::CONNECTION, UPGRADE_TOKEN);
        headers.insert(header::UPGRADE, u);
    }
    let forwarded_for = {
        let mut prior = headers.get_all(&X_FORWARDED_FOR).iter().filter_map(|v| v.to_str().ok()).peekable();
        if prior.peek().is_none() {
            client_ip.clone()
        } else {
            let mut joined = String::new();
            for v in prior {
                joined.push_str(v);
                joined.push_str(", ");
            }
            joined.push_str(client_ip.to_str().unwrap_or_default());
            HeaderValue::from_str(&joined).unwrap_or_else(|_| client_ip.clone())
        }
    };
    headers.insert(X_FORWARDED_FOR, forwarded_for);
    headers.insert(X_FORWARDED_PROTO, HTTP);
    if let Some(host) = headers.get(header::HOST).cloned() {
        headers.insert(X_FORWARDED_HOST, host);
    }
}

fn is_idempotent(m: &Method) -> bool {
    matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE)
}

/// Whether a request that was written may have been lost without being processed:
/// the connection closed or reset before any response byte.
fn replayable(e: &hyper::Error) -> bool {
    if e.is_incomplete_message() || e.is_canceled() || e.is_closed() {
        return true;
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            return matches!(io.kind(), ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof);
        }
        source = s.source();
    }
    false
}

fn body_too_large(e: &hyper::Error) -> Option<u64> {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(t) = s.downcast_ref::<BodyTooLarge>() {
            return Some(t.limit);
        }
        source = s.source();
    }
    None
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
    fn strips_hop_by_hop_and_listed_headers() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, X-Secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert(KEEP_ALIVE, HeaderValue::from_static("timeout=5"));
        h.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        h.insert(header::HOST, HeaderValue::from_static("hello.deis.test"));
        h.insert(X_FORWARDED_FOR, HeaderValue::from_static("10.0.0.1"));
        prepare_request_headers(&mut h, &HeaderValue::from_static("127.0.0.1"), None);
        assert!(h.get("x-secret").is_none());
        assert!(h.get(header::CONNECTION).is_none());
        assert!(h.get(KEEP_ALIVE).is_none());
        assert!(h.get(header::TRANSFER_ENCODING).is_none());
        assert_eq!(h[header::HOST], "hello.deis.test");
        assert_eq!(h[X_FORWARDED_FOR], "10.0.0.1, 127.0.0.1");
        assert_eq!(h[X_FORWARDED_PROTO], "http");
        assert_eq!(h[X_FORWARDED_HOST], "hello.deis.test");
    }

    #[test]
    fn detects_and_keeps_upgrades() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        let up = upgrade_protocol(&h);
        assert_eq!(up.as_ref().unwrap(), "websocket");
        prepare_request_headers(&mut h, &HeaderValue::from_static("127.0.0.1"), up);
        assert_eq!(h[header::CONNECTION], "upgrade");
        assert_eq!(h[header::UPGRADE], "websocket");

        let mut plain = HeaderMap::new();
        plain.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(upgrade_protocol(&plain).is_none(), "Upgrade without Connection: upgrade is not an upgrade");
    }
}
