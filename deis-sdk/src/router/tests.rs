//! Router tests against the real embedded store and real HTTP backends on loopback.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use deis_core::store::RedbStore;
use deis_core::store::records::{self, Endpoint};
use deis_core::testing::{app_name, process_type};
use deis_core::{App, Domain, Store};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use super::{Router, RouterConfig};

mod tls;

const DOMAIN: &str = "deis.test";

/// How long the test backend takes to answer `/slow`.
const SLOW_ANSWER: Duration = Duration::from_millis(900);

/// A backend answering every request with its name (and echoing a POST body after it),
/// reporting the forwarding headers it saw, and accepting `Upgrade: echo` by echoing
/// bytes back.
async fn backend(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let svc =
                    service_fn(
                        move |req: Request<Incoming>| async move { Ok::<_, Infallible>(answer(name, req).await) },
                    );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

async fn answer(name: &str, mut req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.headers().get("upgrade").is_some_and(|v| v == "echo") {
        let on_upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let upgraded = on_upgrade.await.unwrap();
            let mut io = TokioIo::new(upgraded);
            let mut buf = [0u8; 1024];
            loop {
                match io.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if io.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
        return Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("connection", "upgrade")
            .header("upgrade", "echo")
            .body(Full::default())
            .unwrap();
    }
    if let Some(n) = req.uri().path().strip_prefix("/bytes/") {
        // `n` bytes of a known pattern, with Content-Length.
        let n: usize = n.parse().unwrap();
        return Response::new(Full::new(Bytes::from(pattern(n))));
    }
    if req.uri().path() == "/slow" {
        // Answers late: for tests of timeouts that must not cut off a request in progress.
        tokio::time::sleep(SLOW_ANSWER).await;
    }
    let seen = |h: &str| req.headers().get(h).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    let (xff, xfh, xfp, host) =
        (seen("x-forwarded-for"), seen("x-forwarded-host"), seen("x-forwarded-proto"), seen("host"));
    let real_ip = seen("x-real-ip");
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let text = if body.is_empty() { name.to_string() } else { format!("{name}:{}", String::from_utf8_lossy(&body)) };
    Response::builder()
        .header("x-seen-xff", xff)
        .header("x-seen-xfh", xfh)
        .header("x-seen-xfp", xfp)
        .header("x-seen-host", host)
        .header("x-seen-real-ip", real_ip)
        .body(Full::new(Bytes::from(text)))
        .unwrap()
}

/// `n` bytes that are not all alike, so that a lost or moved chunk shows (printable
/// ASCII: the echo backend answers text).
fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| b'!' + (i % 89) as u8).collect()
}

/// An address nothing listens on.
async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

/// A client connection to the router, for requests one after another.
struct Client(hyper::client::conn::http1::SendRequest<Full<Bytes>>);

impl Client {
    async fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
        tokio::spawn(conn);
        Self(sender)
    }

    /// Sends `method path` for `host` with `body`; the response head.
    async fn send(&mut self, method: &str, path: &str, host: &str, body: impl Into<Bytes>) -> Response<Incoming> {
        let req =
            Request::builder().method(method).uri(path).header("host", host).body(Full::new(body.into())).unwrap();
        self.0.send_request(req).await.unwrap()
    }
}

struct TestRouter {
    addr: SocketAddr,
    router: Router,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl TestRouter {
    async fn start(store: &Arc<RedbStore>) -> Self {
        Self::start_with(store, RouterConfig::new(DOMAIN)).await
    }

    async fn start_with(store: &Arc<RedbStore>, config: RouterConfig) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = Router::new(store.clone(), config);
        let (stop, stopped) = oneshot::channel::<()>();
        let r = router.clone();
        let task = tokio::spawn(async move {
            r.serve(listener, async move {
                let _ = stopped.await;
            })
            .await
        });
        router.synced().await;
        Self { addr, router, stop: Some(stop), task }
    }

    /// Sends one request on a fresh connection; returns status, body and the response.
    async fn request(&self, method: &str, host: &str, body: &str) -> (StatusCode, String, http::HeaderMap) {
        let resp = Client::connect(self.addr).await.send(method, "/path?q=1", host, body.to_string()).await;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap(), headers)
    }

    async fn get(&self, host: &str) -> (StatusCode, String) {
        let (s, b, _) = self.request("GET", host, "").await;
        (s, b)
    }

    async fn stop(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), self.task).await.unwrap().unwrap().unwrap();
    }
}

/// A router (default settings) and its store, with app `app` routed to one backend.
async fn one_backend(app: &str, backend_name: &'static str) -> (Arc<RedbStore>, TestRouter) {
    let store = RedbStore::in_memory();
    add_app(&store, app).await;
    add_endpoint(&store, app, 1, backend(backend_name).await).await;
    let r = TestRouter::start(&store).await;
    (store, r)
}

async fn add_app(store: &RedbStore, app: &str) {
    store.put(&records::app_key(app), records::encode(&App::new(app.parse().unwrap(), "tester"))).await.unwrap();
}

async fn add_endpoint(store: &RedbStore, app: &str, n: u32, address: SocketAddr) -> String {
    let unit = format!("{app}.web.{n}");
    let key = records::endpoint_key(app, &unit, 1);
    let ep = Endpoint {
        app: app_name(app),
        unit,
        proc_type: process_type("web"),
        release: 1,
        address,
        node: "local".into(),
    };
    store.put(&key, records::encode(&ep)).await.unwrap();
    key
}

async fn add_domain(store: &RedbStore, domain: &str, app: &str) {
    let d = Domain {
        owner: "tester".into(),
        created: deis_core::time::Timestamp::now(),
        updated: deis_core::time::Timestamp::now(),
        app: app.parse().unwrap(),
        domain: domain.into(),
    };
    store.put(&records::domain_key(domain), records::encode(&d)).await.unwrap();
}

/// Polls until `f` is true; returns how long it took. Panics after 2 s.
async fn eventually<F: AsyncFnMut() -> bool>(what: &str, mut f: F) -> Duration {
    let start = Instant::now();
    while !f().await {
        assert!(start.elapsed() < Duration::from_secs(2), "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    start.elapsed()
}

#[tokio::test]
async fn routes_by_host_to_the_right_app() {
    let store = RedbStore::in_memory();
    add_app(&store, "alpha").await;
    add_app(&store, "beta").await;
    add_endpoint(&store, "alpha", 1, backend("alpha-1").await).await;
    add_endpoint(&store, "beta", 1, backend("beta-1").await).await;
    let r = TestRouter::start(&store).await;

    assert_eq!(r.get("alpha.deis.test").await, (StatusCode::OK, "alpha-1".into()));
    assert_eq!(r.get("BETA.Deis.Test:8080").await, (StatusCode::OK, "beta-1".into()));

    let (status, body, headers) = r.request("POST", "alpha.deis.test:80", "payload").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "alpha-1:payload"));
    assert_eq!(headers["x-seen-host"], "alpha.deis.test:80", "Host is kept as sent");
    assert_eq!(headers["x-seen-xfh"], "alpha.deis.test:80");
    assert_eq!(headers["x-seen-xff"], "127.0.0.1");
    assert_eq!(headers["x-seen-xfp"], "http");
    assert_eq!(r.router.stats().requests, 3);
    r.stop().await;
}

#[tokio::test]
async fn round_robin_spreads_over_all_backends() {
    let store = RedbStore::in_memory();
    add_app(&store, "hello").await;
    for (n, name) in [(1, "web-1"), (2, "web-2"), (3, "web-3")] {
        add_endpoint(&store, "hello", n, backend(name).await).await;
    }
    // One worker: its turns are exact.
    let mut config = RouterConfig::new(DOMAIN);
    config.workers = 1;
    let r = TestRouter::start_with(&store, config).await;
    let mut counts = std::collections::BTreeMap::new();
    for _ in 0..30 {
        let (status, body) = r.get("hello.deis.test").await;
        assert_eq!(status, StatusCode::OK);
        *counts.entry(body).or_insert(0) += 1;
    }
    assert_eq!(
        counts.into_iter().collect::<Vec<_>>(),
        [("web-1".into(), 10), ("web-2".into(), 10), ("web-3".into(), 10)]
    );
    r.stop().await;

    // Two workers take their own turns (staggered): each backend gets its share, give
    // or take one per worker.
    let mut config = RouterConfig::new(DOMAIN);
    config.workers = 2;
    let r = TestRouter::start_with(&store, config).await;
    let mut counts = std::collections::BTreeMap::new();
    for _ in 0..60 {
        let (status, body) = r.get("hello.deis.test").await;
        assert_eq!(status, StatusCode::OK);
        *counts.entry(body).or_insert(0) += 1;
    }
    assert_eq!(counts.len(), 3, "{counts:?}");
    assert!(counts.values().all(|&c| (18..=22).contains(&c)), "uneven spread: {counts:?}");
    r.stop().await;
}

#[tokio::test]
async fn endpoint_changes_route_live() {
    let store = RedbStore::in_memory();
    add_app(&store, "hello").await;
    let first = add_endpoint(&store, "hello", 1, backend("one").await).await;
    let r = TestRouter::start(&store).await;
    assert_eq!(r.get("hello.deis.test").await.1, "one");

    add_endpoint(&store, "hello", 2, backend("two").await).await;
    let took = eventually("the new endpoint to be routed", async || r.get("hello.deis.test").await.1 == "two").await;
    assert!(took < Duration::from_millis(500), "took {took:?}");

    store.delete(&first).await.unwrap();
    let took = eventually("the removed endpoint to be dropped", async || {
        r.router.routes().iter().any(|route| route.app == "hello" && route.backends.len() == 1)
    })
    .await;
    assert!(took < Duration::from_millis(500), "took {took:?}");
    for _ in 0..5 {
        assert_eq!(r.get("hello.deis.test").await.1, "two");
    }

    // A new app becomes reachable as soon as it is created.
    add_endpoint(&store, "late", 1, backend("late-1").await).await;
    assert_eq!(r.get("late.deis.test").await.0, StatusCode::NOT_FOUND);
    add_app(&store, "late").await;
    eventually("the new app", async || r.get("late.deis.test").await.1 == "late-1").await;
    r.stop().await;
}

#[tokio::test]
async fn custom_and_wildcard_domains() {
    let store = RedbStore::in_memory();
    add_app(&store, "hello").await;
    add_endpoint(&store, "hello", 1, backend("hello-1").await).await;
    add_domain(&store, "www.example.com", "hello").await;
    add_domain(&store, "*.wild.example", "hello").await;
    let r = TestRouter::start(&store).await;
    assert_eq!(r.get("www.example.com").await, (StatusCode::OK, "hello-1".into()));
    assert_eq!(r.get("WWW.EXAMPLE.COM.").await, (StatusCode::OK, "hello-1".into()));
    assert_eq!(r.get("any.wild.example").await, (StatusCode::OK, "hello-1".into()));
    assert_eq!(r.get("a.b.wild.example").await.0, StatusCode::NOT_FOUND);

    add_domain(&store, "api.example.com", "hello").await;
    eventually("the added domain", async || r.get("api.example.com").await.0 == StatusCode::OK).await;
    store.delete(&records::domain_key("www.example.com")).await.unwrap();
    eventually("the removed domain", async || r.get("www.example.com").await.0 == StatusCode::NOT_FOUND).await;
    r.stop().await;
}

#[tokio::test]
async fn unknown_host_is_404_and_app_without_units_is_503() {
    let store = RedbStore::in_memory();
    add_app(&store, "idle").await;
    let r = TestRouter::start(&store).await;
    let (status, body) = r.get("nope.deis.test").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.starts_with("No app is routed at host nope.deis.test."), "{body}");

    let (status, body) = r.get("idle.deis.test").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body, "App idle has no running web process. Deploy it, or scale web up: deis scale web=1 -a idle\n");
    let stats = r.router.stats();
    assert_eq!((stats.not_found, stats.no_backend), (1, 1));
    r.stop().await;
}

#[tokio::test]
async fn connect_failures_are_retried_on_another_backend() {
    let store = RedbStore::in_memory();
    add_app(&store, "hello").await;
    add_endpoint(&store, "hello", 1, closed_port().await).await;
    add_endpoint(&store, "hello", 2, backend("web-2").await).await;
    add_endpoint(&store, "hello", 3, backend("web-3").await).await;
    let r = TestRouter::start(&store).await;
    for _ in 0..30 {
        let (status, body) = r.get("hello.deis.test").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body == "web-2" || body == "web-3");
    }
    // A body is not lost when the first backend refuses the connection.
    for _ in 0..3 {
        let (status, body, _) = r.request("POST", "hello.deis.test", "data").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.ends_with(":data"), "{body}");
    }
    let stats = r.router.stats();
    assert!(stats.connect_failures >= 10, "{stats:?}");
    assert_eq!(stats.bad_gateway, 0);
    r.stop().await;
}

#[tokio::test]
async fn all_backends_down_is_502() {
    let store = RedbStore::in_memory();
    add_app(&store, "hello").await;
    add_endpoint(&store, "hello", 1, closed_port().await).await;
    add_endpoint(&store, "hello", 2, closed_port().await).await;
    let r = TestRouter::start(&store).await;
    let (status, body) = r.get("hello.deis.test").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(body.starts_with("App hello did not answer: none of its 2 web unit(s) could be reached"), "{body}");
    assert_eq!(r.router.stats().connect_failures, 2);
    r.stop().await;
}

/// A backend that answers the first request on a connection (keeping it alive) and
/// closes the connection without answering when a second one arrives: what a pooled
/// connection looks like when the backend closed it at the moment it was reused.
async fn closing_backend() -> SocketAddr {
    raw_backend(|i| (i == 0).then_some((&b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfresh"[..], false))).await
}

#[tokio::test]
async fn idempotent_request_on_a_dead_pooled_connection_is_replayed() {
    let store = RedbStore::in_memory();
    add_app(&store, "hello").await;
    add_endpoint(&store, "hello", 1, closing_backend().await).await;
    let r = TestRouter::start(&store).await;
    for _ in 0..5 {
        assert_eq!(r.get("hello.deis.test").await, (StatusCode::OK, "fresh".into()));
    }
    assert!(r.router.stats().retries >= 1, "{:?}", r.router.stats());
    // A POST is never replayed: it may have been processed.
    let (status, _, _) = r.request("POST", "hello.deis.test", "x").await;
    let (status2, _, _) = r.request("POST", "hello.deis.test", "x").await;
    assert!(status == StatusCode::BAD_GATEWAY || status2 == StatusCode::BAD_GATEWAY);
    r.stop().await;
}

#[tokio::test]
async fn upgrade_is_passed_through() {
    let (_store, r) = one_backend("ws", "ws-1").await;

    let mut s = TcpStream::connect(r.addr).await.unwrap();
    s.write_all(b"GET /socket HTTP/1.1\r\nHost: ws.deis.test\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).await.unwrap(), 1, "connection closed during the response head");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: echo"), "{head}");
    for msg in [&b"hello through the router"[..], b"and back again"] {
        s.write_all(msg).await.unwrap();
        let mut got = vec![0u8; msg.len()];
        s.read_exact(&mut got).await.unwrap();
        assert_eq!(got, msg);
    }
    assert_eq!(r.router.stats().upgrades, 1);
    r.stop().await;
}

#[tokio::test]
async fn request_body_limit_is_enforced() {
    let store = RedbStore::in_memory();
    add_app(&store, "hello").await;
    add_endpoint(&store, "hello", 1, backend("web-1").await).await;
    let mut config = RouterConfig::new(DOMAIN);
    config.max_request_body = Some(16);
    let r = TestRouter::start_with(&store, config).await;
    let (status, body, _) = r.request("POST", "hello.deis.test", "small").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "web-1:small"));
    let (status, body, _) = r.request("POST", "hello.deis.test", &"x".repeat(100)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    r.stop().await;
}

#[tokio::test]
async fn keep_alive_connections_are_reused() {
    let (_store, r) = one_backend("hello", "web-1").await;
    // One client connection, many requests.
    let mut client = Client::connect(r.addr).await;
    for _ in 0..20 {
        let resp = client.send("GET", "/", "hello.deis.test", "").await;
        assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "web-1");
    }
    let table = r.router.shared.table.load();
    let route = table.lookup("hello.deis.test").unwrap();
    assert_eq!(route.backends[0].idle_count(), 1, "sequential requests share one pooled backend connection");
    drop(table);
    r.stop().await;
}

#[tokio::test]
async fn connections_are_spread_over_workers_with_their_own_pools() {
    let store = RedbStore::in_memory();
    add_app(&store, "hello").await;
    add_endpoint(&store, "hello", 1, backend("web-1").await).await;
    let mut config = RouterConfig::new(DOMAIN);
    config.workers = 2;
    let r = TestRouter::start_with(&store, config).await;
    // Two client connections kept open: the second goes to the other worker (fewest
    // open connections), and each worker pools the backend connection it used.
    let mut senders = vec![];
    for _ in 0..2 {
        let mut client = Client::connect(r.addr).await;
        let resp = client.send("GET", "/", "hello.deis.test", "").await;
        assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "web-1");
        senders.push(client);
    }
    let table = r.router.shared.table.load();
    let route = table.lookup("hello.deis.test").unwrap();
    assert_eq!(route.backends[0].idle_counts(), vec![1, 1], "one pooled connection per worker");
    assert_eq!(r.router.stats().requests, 2);
    drop(table);
    drop(senders);
    r.stop().await;
}

#[tokio::test]
async fn platform_host_routes_to_the_controller_and_passes_upgrades() {
    let store = RedbStore::in_memory();
    // An app and a custom domain that would claim the platform host if they could.
    add_app(&store, "hello").await;
    add_endpoint(&store, "hello", 1, backend("hello-1").await).await;
    add_domain(&store, "deis.deis.test", "hello").await;
    add_domain(&store, "*.deis.test", "hello").await;
    let controller = backend("controller").await;
    let r = TestRouter::start_with(&store, RouterConfig::new(DOMAIN).with_platform_backend(controller)).await;
    assert_eq!(r.router.config().platform_host, Some(("deis.deis.test".to_string(), controller)));

    assert_eq!(r.get("deis.deis.test").await, (StatusCode::OK, "controller".into()));
    assert_eq!(r.get("DEIS.deis.test.:8080").await, (StatusCode::OK, "controller".into()));
    assert_eq!(r.get("hello.deis.test").await, (StatusCode::OK, "hello-1".into()), "apps are unaffected");
    assert_eq!(r.get("other.deis.test").await, (StatusCode::OK, "hello-1".into()), "the wildcard still applies");
    let (_, _, headers) = r.request("GET", "deis.deis.test", "").await;
    assert_eq!(headers["x-seen-xff"], "127.0.0.1", "the controller sees the client's address");
    assert!(r.router.routes().iter().any(|route| route.host == "deis.deis.test" && route.backends == [controller]));

    // Live changes to apps don't drop the platform host.
    add_app(&store, "late").await;
    eventually("the new app", async || r.get("late.deis.test").await.0 == StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(r.get("deis.deis.test").await, (StatusCode::OK, "controller".into()));

    // Upgrades (the TTY broker's WebSockets) go through.
    let mut s = TcpStream::connect(r.addr).await.unwrap();
    s.write_all(
        b"GET /v2/sessions/x/attach HTTP/1.1\r\nHost: deis.deis.test\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).await.unwrap(), 1, "connection closed during the response head");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    s.write_all(b"to the controller").await.unwrap();
    let mut got = [0u8; 17];
    s.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"to the controller");
    assert_eq!(r.router.stats().upgrades, 1);
    r.stop().await;
}

/// Reads from `stream` until the router closes it (EOF or reset); how long that took.
async fn time_until_closed(stream: &mut TcpStream, start: Instant) -> Duration {
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return start.elapsed(),
            Ok(Ok(_)) => {}
            Err(_) => panic!("the router kept the connection open for 5 s"),
        }
    }
}

#[tokio::test]
async fn header_read_timeout_cuts_off_slow_and_idle_clients_but_not_slow_backends() {
    let store = RedbStore::in_memory();
    add_app(&store, "hello").await;
    add_endpoint(&store, "hello", 1, backend("web-1").await).await;
    let timeout = Duration::from_millis(400);
    let mut config = RouterConfig::new(DOMAIN);
    config.header_read_timeout = timeout;
    config.workers = 1;
    let r = TestRouter::start_with(&store, config).await;
    // Checked every timeout/4: closed between timeout and 1.25 x timeout, plus slack.
    let late = timeout * 2;

    // Slowloris: a header line every 50 ms, never finishing the head.
    let start = Instant::now();
    let mut slow = TcpStream::connect(r.addr).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: hello.deis.test\r\n").await.unwrap();
    let trickle = async {
        for i in 0.. {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if slow.write_all(format!("X-Slow-{i}: 1\r\n").as_bytes()).await.is_err() {
                return start.elapsed();
            }
            let mut probe = [0u8; 64];
            if let Ok(Ok(0) | Err(_)) = tokio::time::timeout(Duration::from_millis(1), slow.read(&mut probe)).await {
                return start.elapsed();
            }
        }
        unreachable!()
    };
    let took = tokio::time::timeout(Duration::from_secs(5), trickle).await.expect("slowloris client never cut off");
    assert!(took >= timeout && took < late, "slow headers cut off after {took:?} (timeout {timeout:?})");

    // A silent connection, and one idle after a complete exchange, are closed too.
    let start = Instant::now();
    let mut silent = TcpStream::connect(r.addr).await.unwrap();
    let took = time_until_closed(&mut silent, start).await;
    assert!(took >= timeout && took < late, "silent connection closed after {took:?}");

    let mut idle = TcpStream::connect(r.addr).await.unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nHost: hello.deis.test\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let start = Instant::now();
    let took = time_until_closed(&mut idle, start).await;
    assert!(took >= timeout && took < late, "idle keep-alive connection closed after {took:?}");

    // A request in progress is not a slow client: a backend answering after more than
    // the timeout is waited for, and the connection keeps serving requests after.
    assert!(SLOW_ANSWER > timeout * 2);
    let mut client = Client::connect(r.addr).await;
    for path in ["/slow", "/", "/slow"] {
        let resp = client.send("GET", path, "hello.deis.test", "").await;
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "web-1");
    }
    r.stop().await;
}

#[tokio::test]
async fn response_timeout_answers_504_without_a_timer_per_request() {
    let store = RedbStore::in_memory();
    add_app(&store, "hello").await;
    add_endpoint(&store, "hello", 1, backend("web-1").await).await;
    let limit = Duration::from_millis(300);
    let mut config = RouterConfig::new(DOMAIN);
    config.response_timeout = Some(limit);
    config.workers = 1;
    let r = TestRouter::start_with(&store, config).await;
    assert!(SLOW_ANSWER > limit * 2);

    let mut client = Client::connect(r.addr).await;
    for (path, status) in [("/", StatusCode::OK), ("/slow", StatusCode::GATEWAY_TIMEOUT), ("/", StatusCode::OK)] {
        let start = Instant::now();
        let resp = client.send("GET", path, "hello.deis.test", "").await;
        let took = start.elapsed();
        assert_eq!(resp.status(), status, "{path}");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        if status == StatusCode::GATEWAY_TIMEOUT {
            // Checked every limit/8: between the limit and 1.25 x the limit, plus slack.
            assert!(took >= limit && took < limit * 2, "504 after {took:?} (limit {limit:?})");
            assert!(String::from_utf8_lossy(&body).contains("did not answer within"), "{body:?}");
        }
    }
    assert_eq!(r.router.stats().gateway_timeout, 1);
    r.stop().await;
}

/// What a [`raw_backend`] answers to the `i`th request on a connection.
type Script = fn(usize) -> Option<(&'static [u8], bool)>;

/// A backend speaking raw HTTP/1.1: for the `i`th request head it reads on a
/// connection, `script(i)` gives the bytes to answer and whether to close the
/// connection after them; `None` closes it without an answer.
async fn raw_backend(script: Script) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let (mut seen, mut requests) = (Vec::new(), 0);
                loop {
                    while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        seen.drain(..end + 4);
                        let Some((answer, close)) = script(requests) else { return };
                        requests += 1;
                        if stream.write_all(answer).await.is_err() || close {
                            return;
                        }
                    }
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn chunked_and_close_delimited_bodies_are_relayed() {
    let store = RedbStore::in_memory();
    for (app, addr) in [
        (
            "chunked",
            raw_backend(|_| {
                Some((
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: 1\r\n\r\n",
                    false,
                ))
            })
            .await,
        ),
        ("untilclose", raw_backend(|_| Some((b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end", true))).await),
        ("garbage", raw_backend(|_| Some((b"SSH-2.0-OpenSSH_9.2\r\n\r\n", false))).await),
        ("echo", backend("web-1").await),
    ] {
        add_app(&store, app).await;
        add_endpoint(&store, app, 1, addr).await;
    }
    let r = TestRouter::start(&store).await;

    // Several requests on one client connection: chunked bodies end where they should,
    // and the backend connection is reused.
    let mut client = Client::connect(r.addr).await;
    for host in ["chunked.deis.test", "untilclose.deis.test", "chunked.deis.test", "untilclose.deis.test"] {
        let resp = client.send("GET", "/", host, "").await;
        assert_eq!(resp.status(), StatusCode::OK, "{host}");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let want = if host.starts_with("chunked") { "hello, world" } else { "until the end" };
        assert_eq!(body, want, "{host}");
    }
    let table = r.router.shared.table.load();
    assert_eq!(table.lookup("chunked.deis.test").unwrap().backends[0].idle_count(), 1);
    assert_eq!(table.lookup("untilclose.deis.test").unwrap().backends[0].idle_count(), 0);
    drop(table);

    // Not HTTP: 502 with the reason.
    let (status, body, _) = r.request("GET", "garbage.deis.test", "").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(body.contains("invalid response"), "{body}");

    // A chunked request body is forwarded chunked.
    let mut s = TcpStream::connect(r.addr).await.unwrap();
    s.write_all(
        b"POST / HTTP/1.1\r\nHost: echo.deis.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n",
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("web-1:abcdef") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "closed before the echo: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    r.stop().await;
}

#[tokio::test]
async fn large_bodies_stream_both_ways_intact() {
    let (_store, r) = one_backend("big", "web-1").await;
    let mut client = Client::connect(r.addr).await;
    // Downloads over many backend reads, then an upload streamed to the backend, on one
    // client connection, with the backend connection reused throughout.
    for n in [0, 1, 70_000, 5 << 20] {
        let resp = client.send("GET", &format!("/bytes/{n}"), "big.deis.test", "").await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["content-length"], n.to_string().as_str());
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert!(body[..] == pattern(n)[..], "{n} bytes came back altered ({} bytes)", body.len());
    }
    // HEAD: the length of what a GET would get, and no body.
    let resp = client.send("HEAD", "/bytes/100", "big.deis.test", "").await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-length"], "100");
    assert!(resp.into_body().collect().await.unwrap().to_bytes().is_empty());
    let upload = pattern(3 << 20);
    let resp = client.send("POST", "/", "big.deis.test", upload.clone()).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body.len(), "web-1:".len() + upload.len());
    assert!(body[..6] == *b"web-1:" && body[6..] == upload[..], "the upload came back altered");
    let table = r.router.shared.table.load();
    assert_eq!(table.lookup("big.deis.test").unwrap().backends[0].idle_count(), 1, "one backend connection did it all");
    drop(table);
    r.stop().await;
}

/// Rewrites app `app`'s settings in the store, as the controller does.
async fn set_settings(store: &RedbStore, app: &str, change: impl FnOnce(&mut deis_core::AppSettings)) {
    let (mut record, _) = records::get_json::<App>(store, &records::app_key(app)).await.unwrap().unwrap();
    change(&mut record.settings);
    store.put(&records::app_key(app), records::encode(&record)).await.unwrap();
}

#[tokio::test]
async fn app_settings_take_effect_without_a_restart() {
    let (store, r) = one_backend("hello", "hello-1").await;
    add_domain(&store, "www.example.com", "hello").await;
    eventually("the custom domain", async || r.get("www.example.com").await.0 == StatusCode::OK).await;

    // Maintenance: a 503 HTML page on every host of the app.
    set_settings(&store, "hello", |s| s.maintenance = true).await;
    eventually("maintenance", async || r.get("www.example.com").await.0 == StatusCode::SERVICE_UNAVAILABLE).await;
    let (status, body, headers) = r.request("GET", "hello.deis.test", "").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("hello is down for maintenance"), "{body}");
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    assert_eq!(headers["retry-after"], "60");

    // Routing off: the app's hosts are unknown to the router.
    set_settings(&store, "hello", |s| (s.maintenance, s.routable) = (false, false)).await;
    eventually("routing off", async || r.get("hello.deis.test").await.0 == StatusCode::NOT_FOUND).await;
    assert_eq!(r.get("www.example.com").await.0, StatusCode::NOT_FOUND);

    // HTTPS enforced: a 301 keeping host, path and query.
    set_settings(&store, "hello", |s| (s.routable, s.https_enforced) = (true, true)).await;
    eventually("https", async || r.get("hello.deis.test").await.0 == StatusCode::MOVED_PERMANENTLY).await;
    let (_, _, headers) = r.request("GET", "Hello.Deis.Test:8080", "").await;
    assert_eq!(headers["location"], "https://hello.deis.test/path?q=1");

    // Allow-list: loopback is not on it, then it is.
    set_settings(&store, "hello", |s| {
        s.https_enforced = false;
        s.whitelist = vec!["192.0.2.0/24".parse().unwrap()];
    })
    .await;
    eventually("allow-list", async || r.get("hello.deis.test").await.0 == StatusCode::FORBIDDEN).await;
    assert!(r.get("hello.deis.test").await.1.contains("127.0.0.1 is not allowed to reach hello"));
    set_settings(&store, "hello", |s| s.whitelist.push("127.0.0.1".parse().unwrap())).await;
    eventually("allowed", async || r.get("hello.deis.test").await == (StatusCode::OK, "hello-1".into())).await;
    assert!(r.router.stats().policy_answers >= 5, "{:?}", r.router.stats());
    r.stop().await;
}

#[tokio::test]
async fn allow_lists_believe_forwarded_for_only_from_trusted_proxies() {
    let store = RedbStore::in_memory();
    add_app(&store, "hello").await;
    add_endpoint(&store, "hello", 1, backend("hello-1").await).await;
    set_settings(&store, "hello", |s| s.whitelist = vec!["203.0.113.0/24".parse().unwrap()]).await;
    let untrusted = TestRouter::start(&store).await;
    let mut config = RouterConfig::new(DOMAIN);
    config.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    let behind_proxy = TestRouter::start_with(&store, config).await;

    let get = async |r: &TestRouter, xff: &str| {
        let req = Request::builder()
            .uri("/")
            .header("host", "hello.deis.test")
            .header("x-forwarded-for", xff)
            .body(Full::new(Bytes::new()))
            .unwrap();
        Client::connect(r.addr).await.0.send_request(req).await.unwrap().status()
    };
    assert_eq!(get(&untrusted, "203.0.113.5").await, StatusCode::FORBIDDEN, "anyone could send that header");
    assert_eq!(get(&behind_proxy, "203.0.113.5").await, StatusCode::OK);
    assert_eq!(get(&behind_proxy, "203.0.113.5, 198.51.100.7").await, StatusCode::FORBIDDEN, "the right-most counts");
    assert_eq!(get(&behind_proxy, "not-an-address").await, StatusCode::FORBIDDEN);
    untrusted.stop().await;
    behind_proxy.stop().await;
}

/// Fault "router headers": a request with two `Host` fields was forwarded (RFC 9110
/// requires a 400), and a client's `X-Real-IP` reached the app unchanged.
#[tokio::test]
async fn two_host_fields_are_refused_and_forwarding_headers_come_from_the_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_store, r) = one_backend("hello", "b1").await;
    let send = async |head: &str| {
        let mut s = TcpStream::connect(r.addr).await.unwrap();
        s.write_all(head.as_bytes()).await.unwrap();
        let mut reply = Vec::new();
        s.read_to_end(&mut reply).await.unwrap();
        String::from_utf8_lossy(&reply).into_owned()
    };
    let reply =
        send("GET / HTTP/1.1\r\nHost: hello.deis.test\r\nHost: other.deis.test\r\nConnection: close\r\n\r\n").await;
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    assert_eq!(r.router.stats().bad_request, 1);
    let reply = send(
        "GET /headers HTTP/1.1\r\nHost: hello.deis.test\r\nX-Real-IP: 6.6.6.6\r\nX-Forwarded-For: 6.6.6.6\r\n\
         X-Forwarded-Proto: https\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(!reply.contains("6.6.6.6"), "the client's claims reached the app: {reply}");
    let reply = reply.to_ascii_lowercase();
    for seen in ["x-seen-real-ip: 127.0.0.1", "x-seen-xff: 127.0.0.1", "x-seen-xfp: http"] {
        assert!(reply.contains(seen), "{seen}: {reply}");
    }
    r.stop().await;
}
