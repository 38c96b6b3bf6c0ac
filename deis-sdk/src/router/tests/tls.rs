//! HTTPS through the router with real TLS clients (`curl`, `openssl s_client`, rustls,
//! a WebSocket client) and a test CA: certificates by SNI from the store, the platform
//! certificate as fallback, certificates replaced live, upgrades and redirects.

use std::path::Path;
// Async: the router's accept loop runs on the test's runtime.
use tokio::process::Command;

use deis_core::{CertAttachment, Certificate};
use deis_test_support::tls::{Issued, TestCa};
use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::*;
use crate::router::TlsListener;

/// A router serving HTTP and HTTPS, the platform certificate issued by `ca`.
struct TlsRouter {
    http: SocketAddr,
    https: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl TlsRouter {
    async fn start(store: &Arc<RedbStore>, ca: &TestCa) -> Self {
        let platform = ca.issue(&["*.deis.test", "deis.test"]);
        let key = crate::certs::inspect(&platform.cert, &platform.key).unwrap().key;
        let (plain, tls) =
            (TcpListener::bind("127.0.0.1:0").await.unwrap(), TcpListener::bind("127.0.0.1:0").await.unwrap());
        let (http, https) = (plain.local_addr().unwrap(), tls.local_addr().unwrap());
        let mut config = RouterConfig::new(DOMAIN);
        config.https_port = https.port();
        let router = Router::new(store.clone(), config);
        let (stop, stopped) = oneshot::channel::<()>();
        let r = router.clone();
        let task = tokio::spawn(async move {
            r.serve_with_tls(Some(plain), Some(TlsListener::new(tls, key)), async move {
                let _ = stopped.await;
            })
            .await
        });
        router.synced().await;
        Self { http, https, stop: Some(stop), task }
    }

    async fn stop(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), self.task).await.unwrap().unwrap().unwrap();
    }
}

/// Stores certificate `name` (issued by the CA) and attaches it to `domain` of `app`.
async fn attach(store: &RedbStore, name: &str, issued: &Issued, domain: &str, app: &str) {
    let info = crate::certs::inspect(&issued.cert, &issued.key).unwrap().info;
    let now = deis_core::time::Timestamp::now();
    let cert = Certificate {
        name: name.into(),
        owner: "tester".into(),
        certificate: issued.cert.clone(),
        key: issued.key.clone(),
        info,
        created: now,
        updated: now,
    };
    store.put(&records::cert_key(name), records::encode(&cert)).await.unwrap();
    let a = CertAttachment { cert: name.into(), app: app.into() };
    store.put(&records::cert_domain_key(domain), records::encode(&a)).await.unwrap();
}

/// `curl` over HTTPS to `name` (resolved to the router) trusting only `ca`: status and
/// body, or curl's error.
async fn curl(ca: &Path, https: SocketAddr, name: &str, extra: &[&str]) -> Result<(u16, String), String> {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(ca)
        .args(["--resolve", &format!("{name}:{}:127.0.0.1", https.port())])
        .args(["-w", "\n%{http_code}"])
        .args(extra)
        .arg(format!("https://{name}:{}/path?q=1", https.port()))
        .output()
        .await
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let (body, code) = text.rsplit_once('\n').unwrap();
    Ok((code.trim().parse().unwrap(), body.to_string()))
}

/// The subject of the certificate `openssl s_client` gets for SNI `name`, and whether
/// it verified against `ca`.
async fn openssl_subject(ca: &Path, https: SocketAddr, name: &str) -> (String, bool) {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &https.to_string(), "-servername", name, "-CAfile"])
        .arg(ca)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("openssl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let subject = text
        .lines()
        .find_map(|l| l.strip_prefix("subject="))
        .unwrap_or_else(|| panic!("no certificate from openssl: {text}"))
        .trim()
        .to_string();
    (subject, text.contains("Verify return code: 0 (ok)"))
}

/// A rustls client connection to the router for SNI `name`, trusting `ca`.
async fn tls_connect(ca: &TestCa, https: SocketAddr, name: &str) -> TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls::pki_types::CertificateDer::from_pem_slice(ca.pem().as_bytes()).unwrap()).unwrap();
    let connector = TlsConnector::from(crate::logger::client_config_with_roots(roots));
    let tcp = TcpStream::connect(https).await.unwrap();
    connector.connect(ServerName::try_from(name.to_string()).unwrap(), tcp).await.unwrap()
}

/// The fingerprint of the certificate the server presented on `tls`.
fn peer_fingerprint(tls: &TlsStream<TcpStream>) -> String {
    let der = &tls.get_ref().1.peer_certificates().unwrap()[0];
    crate::certs::fingerprint(der)
}

fn fingerprint(issued: &Issued) -> String {
    crate::certs::inspect(&issued.cert, &issued.key).unwrap().info.fingerprint
}

/// A store with app `hello` (one backend), its domain `www.shop.example`, and the CA.
async fn shop() -> (Arc<RedbStore>, TestCa, tempfile::TempDir) {
    let store = RedbStore::in_memory();
    add_app(&store, "hello").await;
    add_endpoint(&store, "hello", 1, backend("hello-1").await).await;
    add_domain(&store, "www.shop.example", "hello").await;
    add_domain(&store, "other.example", "hello").await;
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("Deis Test CA");
    ca.write(&dir.path().join("ca.pem"));
    (store, ca, dir)
}

use rustls::pki_types::pem::PemObject;

#[tokio::test]
async fn each_name_gets_its_certificate_and_the_rest_the_platform_one() {
    let (store, ca, dir) = shop().await;
    let ca_file = dir.path().join("ca.pem");
    attach(&store, "www", &ca.issue(&["www.shop.example"]), "www.shop.example", "hello").await;
    let r = TlsRouter::start(&store, &ca).await;

    let (subject, verified) = openssl_subject(&ca_file, r.https, "www.shop.example").await;
    assert!(subject.contains("CN") && subject.contains("www.shop.example") && verified, "{subject}");
    let (subject, verified) = openssl_subject(&ca_file, r.https, "hello.deis.test").await;
    assert!(subject.contains("*.deis.test") && verified, "the platform wildcard: {subject}");
    let (subject, _) = openssl_subject(&ca_file, r.https, "other.example").await;
    assert!(subject.contains("*.deis.test"), "a domain without a certificate of its own: {subject}");

    assert_eq!(curl(&ca_file, r.https, "www.shop.example", &[]).await.unwrap(), (200, "hello-1".into()));
    assert_eq!(curl(&ca_file, r.https, "hello.deis.test", &[]).await.unwrap(), (200, "hello-1".into()));
    let err = curl(&ca_file, r.https, "other.example", &[]).await.unwrap_err();
    assert!(err.contains("certificate") || err.contains("SSL"), "the wildcard does not cover it: {err}");
    r.stop().await;
}

#[tokio::test]
async fn a_replaced_certificate_serves_new_handshakes_while_open_connections_keep_theirs() {
    let (store, ca, dir) = shop().await;
    let ca_file = dir.path().join("ca.pem");
    let (old, new) = (ca.issue(&["www.shop.example"]), ca.issue(&["www.shop.example", "shop.example"]));
    attach(&store, "www", &old, "www.shop.example", "hello").await;
    let r = TlsRouter::start(&store, &ca).await;

    let tls = tls_connect(&ca, r.https, "www.shop.example").await;
    assert_eq!(peer_fingerprint(&tls), fingerprint(&old));
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
    let conn = tokio::spawn(conn);
    let get =
        |path: &str| Request::get(path).header("host", "www.shop.example").body(Full::<Bytes>::default()).unwrap();
    let resp = sender.send_request(get("/before")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    resp.into_body().collect().await.unwrap();

    // Replaced in the store, as `deis certs:remove` + `certs:add` + `certs:attach` do.
    attach(&store, "www", &new, "www.shop.example", "hello").await;
    eventually("new handshakes to get the new certificate", async || {
        let tls = tls_connect(&ca, r.https, "www.shop.example").await;
        peer_fingerprint(&tls) == fingerprint(&new)
    })
    .await;
    let (subject, verified) = openssl_subject(&ca_file, r.https, "www.shop.example").await;
    assert!(subject.contains("www.shop.example") && verified, "{subject}");

    let resp = sender.send_request(get("/after")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "the open connection keeps working");
    assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "hello-1");
    drop(sender);
    conn.await.unwrap().unwrap();
    r.stop().await;
}

/// A WebSocket backend echoing every message.
async fn websocket_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else { return };
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_text() && ws.send(msg).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn websockets_pass_through_tls_and_backends_learn_the_scheme() {
    let (store, ca, _dir) = shop().await;
    add_app(&store, "chat").await;
    add_endpoint(&store, "chat", 1, websocket_backend().await).await;
    let r = TlsRouter::start(&store, &ca).await;

    let tls = tls_connect(&ca, r.https, "hello.deis.test").await;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let resp = sender
        .send_request(Request::get("/").header("host", "hello.deis.test").body(Full::<Bytes>::default()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-seen-xfp"], "https");

    let tls = tls_connect(&ca, r.https, "chat.deis.test").await;
    let (mut ws, resp) = tokio_tungstenite::client_async("wss://chat.deis.test/socket", tls).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    for text in ["hello over TLS", "and back"] {
        ws.send(tokio_tungstenite::tungstenite::Message::text(text)).await.unwrap();
        let echoed = ws.next().await.unwrap().unwrap();
        assert_eq!(echoed.into_text().unwrap().as_str(), text);
    }
    r.stop().await;
}

#[tokio::test]
async fn enforced_https_sends_plain_requests_to_the_tls_port_which_serves_them() {
    let (store, ca, dir) = shop().await;
    let mut app = App::new("hello".parse().unwrap(), "tester");
    app.settings.https_enforced = true;
    store.put(&records::app_key("hello"), records::encode(&app)).await.unwrap();
    let r = TlsRouter::start(&store, &ca).await;

    let (status, _, headers) = {
        let resp = Client::connect(r.http).await.send("GET", "/path?q=1", "hello.deis.test", "").await;
        (resp.status(), (), resp.headers().clone())
    };
    assert_eq!(status, StatusCode::MOVED_PERMANENTLY);
    let location = headers["location"].to_str().unwrap();
    assert_eq!(location, format!("https://hello.deis.test:{}/path?q=1", r.https.port()));
    // curl follows it from plain HTTP to a 200 over HTTPS.
    let out = Command::new("curl")
        .args(["-sS", "-L", "--max-time", "10", "--cacert"])
        .arg(dir.path().join("ca.pem"))
        .args(["--resolve", &format!("hello.deis.test:{}:127.0.0.1", r.http.port())])
        .args(["--resolve", &format!("hello.deis.test:{}:127.0.0.1", r.https.port())])
        .args(["-w", "\n%{http_code} %{url_effective}"])
        .arg(format!("http://hello.deis.test:{}/path?q=1", r.http.port()))
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.ends_with(&format!("200 https://hello.deis.test:{}/path?q=1", r.https.port())), "{text}");
    assert!(text.starts_with("hello-1"), "{text}");
    r.stop().await;
}

#[tokio::test]
async fn slow_or_broken_handshakes_are_cut_off() {
    let (store, ca, _dir) = shop().await;
    let platform = ca.issue(&["*.deis.test"]);
    let key = crate::certs::inspect(&platform.cert, &platform.key).unwrap().key;
    let tls = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let https = tls.local_addr().unwrap();
    let mut config = RouterConfig::new(DOMAIN);
    config.tls_handshake_timeout = Duration::from_millis(200);
    let router = Router::new(store.clone(), config);
    let task = tokio::spawn(async move {
        router.serve_with_tls(None, Some(TlsListener::new(tls, key)), std::future::pending()).await
    });
    // Connects and says nothing: closed after the handshake timeout.
    let mut idle = TcpStream::connect(https).await.unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf)).await.unwrap().unwrap_or(0);
    assert_eq!(n, 0, "closed without an answer");
    assert!(started.elapsed() >= Duration::from_millis(150), "{:?}", started.elapsed());
    // Plain HTTP on the TLS port: refused, and the listener keeps serving.
    let mut plain = TcpStream::connect(https).await.unwrap();
    plain.write_all(b"GET / HTTP/1.1\r\nHost: hello.deis.test\r\n\r\n").await.unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut got)).await.unwrap();
    assert!(!got.starts_with(b"HTTP/1.1 200"), "no HTTP answer on the TLS port");
    let tls = tls_connect(&ca, https, "hello.deis.test").await;
    assert!(tls.get_ref().1.peer_certificates().is_some());
    task.abort();
}
