//! HTTP tests of the controller API: a real listener on loopback, the embedded store
//! and the local scheduler, driven with a plain HTTP client.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use deis_core::artifact::ArtifactStore;
use deis_core::controller::{Controller, ControllerConfig, RegistrationMode};
use deis_core::scheduler::{LocalScheduler, LocalSchedulerConfig};
use deis_core::store::RedbStore;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

use super::{ApiLimits, router};

struct Api {
    addr: SocketAddr,
    client: Client<HttpConnector, Full<Bytes>>,
    platform: Arc<Controller>,
    _dir: tempfile::TempDir,
}

#[derive(Debug)]
struct Resp {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

async fn start_with(limits: ApiLimits) -> Api {
    let dir = tempfile::tempdir().unwrap();
    let scheduler = LocalScheduler::new(LocalSchedulerConfig::new(dir.path().join("scheduler"))).await.unwrap();
    let store: Arc<dyn deis_core::Store> = RedbStore::in_memory();
    let platform = Controller::new(ControllerConfig {
        store: store.clone(),
        scheduler,
        artifacts: ArtifactStore::new(dir.path()),
        domain: "example.test".into(),
        registration: RegistrationMode::Enabled,
        logs: Some(Arc::new(deis_core::logs::RingLogStore::new())),
        policy: Default::default(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Add-ons with an in-memory broker (`memory:sync`, `memory:async`) besides the
    // user-provided one.
    let memory = deis_core::broker::ManagedBroker::start(
        platform.store().clone(),
        "broker-state/memory/",
        Arc::new(deis_core::testing::MemoryBackend::default()),
    )
    .await
    .unwrap();
    let brokers = std::collections::BTreeMap::from([(
        "memory".to_string(),
        Arc::new(memory) as Arc<dyn deis_core::ServiceBroker>,
    )]);
    let addons = crate::addons::Addons::new(platform.clone(), brokers)
        .await
        .unwrap()
        .with_policy(crate::osb::PollPolicy { interval: std::time::Duration::from_millis(20), ..Default::default() });
    // Its own address is a listener of the platform, as in a `Platform`.
    let app = router(platform.clone(), limits)
        .merge(super::addons_router(platform.clone(), limits, addons))
        // With the update service's routes, as deisd serves them.
        .merge(crate::update::routes(store))
        .layer(axum::Extension(super::PlatformListeners(vec![addr])));
    tokio::spawn(super::serve(listener, app, limits, std::future::pending()));
    let client = Client::builder(TokioExecutor::new()).build_http();
    Api { addr, client, platform, _dir: dir }
}

async fn start() -> Api {
    start_with(ApiLimits::default()).await
}

impl Api {
    async fn send(&self, method: Method, path: &str, token: Option<&str>, content_type: &str, body: Vec<u8>) -> Resp {
        let mut req = Request::builder().method(method).uri(format!("http://{}{path}", self.addr));
        if let Some(t) = token {
            req = req.header("authorization", format!("token {t}"));
        }
        req = req.header("content-type", content_type);
        let resp = self.client.request(req.body(Full::new(Bytes::from(body))).unwrap()).await.unwrap();
        let (parts, body) = resp.into_parts();
        Resp { status: parts.status, headers: parts.headers, body: body.collect().await.unwrap().to_bytes() }
    }

    async fn call(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> Resp {
        let bytes = body.map(|b| serde_json::to_vec(&b).unwrap()).unwrap_or_default();
        self.send(method, path, token, "application/json", bytes).await
    }

    async fn get(&self, path: &str, token: &str) -> Resp {
        self.call(Method::GET, path, Some(token), None).await
    }

    async fn post(&self, path: &str, token: &str, body: Value) -> Resp {
        self.call(Method::POST, path, Some(token), Some(body)).await
    }

    /// Registers and logs in `name`; returns the token.
    async fn user(&self, name: &str) -> String {
        let r = self
            .call(
                Method::POST,
                "/v2/auth/register/",
                None,
                Some(json!({"username": name, "password": "pw", "email": ""})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
        let r =
            self.call(Method::POST, "/v2/auth/login/", None, Some(json!({"username": name, "password": "pw"}))).await;
        assert_eq!(r.status, StatusCode::OK);
        r.json()["token"].as_str().unwrap().to_string()
    }
}

fn assert_versioned(r: &Resp) {
    assert_eq!(r.headers.get("deis_api_version").map(|v| v.to_str().unwrap()), Some("2.3"), "{r:?}");
    assert_eq!(r.headers.get("deis_platform_version").map(|v| v.to_str().unwrap()), Some("2.3.0"));
}

fn tarball(procfile: &str) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_path("Procfile").unwrap();
    h.set_size(procfile.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append(&h, procfile.as_bytes()).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&b.into_inner().unwrap()).unwrap();
    gz.finish().unwrap()
}

#[tokio::test]
async fn probe_and_auth_errors_carry_version_headers() {
    let api = start().await;
    let r = api.call(Method::GET, "/v2/", None, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_versioned(&r);
    assert_eq!(r.headers.get("www-authenticate").unwrap(), "Token");
    assert_eq!(r.json(), json!({"detail": "Authentication credentials were not provided."}));
    let r = api.call(Method::GET, "/v2/apps/", Some("0123456789abcdef"), None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.json(), json!({"detail": "Invalid token."}));
    assert_versioned(&r);
    let token = api.user("alice").await;
    let r = api.get("/v2", &token).await;
    assert_eq!((r.status, r.json()), (StatusCode::OK, json!({})));
    // The keyword is case-insensitive.
    let r = api.send(Method::GET, "/v2/auth/whoami", None, "application/json", vec![]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let req = Request::get(format!("http://{}/v2/auth/whoami/", api.addr))
        .header("Authorization", format!("TOKEN {token}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = api.client.request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let me: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!((me["username"].as_str(), me["is_superuser"].as_bool()), (Some("alice"), Some(true)));
    assert!(me.get("password_hash").is_none());
    let r = api.call(Method::GET, "/healthz", None, None).await;
    assert_eq!((r.status, &r.body[..]), (StatusCode::OK, &b"OK"[..]));
    assert_versioned(&r);
}

#[tokio::test]
async fn unknown_routes_and_apps_are_404_with_headers() {
    let api = start().await;
    let token = api.user("alice").await;
    let r = api.get("/v2/nothing/here", &token).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_versioned(&r);
    let r = api.get("/v2/apps/ghost/", &token).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(&r.body[..], br#""No App matches the given query.""#);
    assert_versioned(&r);
    let r = api.call(Method::PUT, "/v2/apps/", Some(&token), None).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_versioned(&r);
    assert!(r.json()["detail"].as_str().unwrap().contains("PUT"));
}

#[tokio::test]
async fn malformed_and_oversized_bodies_change_nothing() {
    let api = start_with(ApiLimits { max_json_bytes: 1024, max_upload_bytes: 4096, ..ApiLimits::default() }).await;
    let token = api.user("alice").await;
    assert_eq!(api.post("/v2/apps/", &token, json!({"id": "demo"})).await.status, StatusCode::CREATED);
    let before = api.platform.store().list("").await.unwrap();
    let r = api
        .send(Method::POST, "/v2/apps/demo/config/", Some(&token), "application/json", b"{\"values\":".to_vec())
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.json()["detail"].as_str().unwrap().starts_with("malformed JSON: "), "{r:?}");
    let r = api.send(Method::POST, "/v2/apps/", Some(&token), "text/plain", b"[1, 2".to_vec()).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let big = json!({"values": {"BIG": "x".repeat(2000)}});
    let r = api.post("/v2/apps/demo/config/", &token, big).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(r.json()["detail"].as_str().unwrap().contains("1024 bytes"));
    assert_versioned(&r);
    let r = api.send(Method::POST, "/v2/apps/demo/builds/", Some(&token), "application/gzip", vec![0; 5000]).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    let r = api.send(Method::POST, "/v2/apps/demo/builds/", Some(&token), "application/gzip", b"junk".to_vec()).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // Wrong field types are a 400 too.
    let r = api.post("/v2/apps/demo/releases/rollback/", &token, json!({"version": "three"})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(api.platform.store().list("").await.unwrap(), before, "no 4xx changed any record");
}

#[tokio::test]
async fn pagination_and_trailing_slashes() {
    let api = start().await;
    let token = api.user("alice").await;
    for id in ["a1", "a2", "a3"] {
        assert_eq!(api.post("/v2/apps", &token, json!({"id": id})).await.status, StatusCode::CREATED);
    }
    let page = api.get("/v2/apps/?limit=2", &token).await.json();
    assert_eq!(page["count"], 3);
    assert_eq!(page["results"].as_array().unwrap().len(), 2);
    assert_eq!(page["results"][0]["id"], "a1");
    assert!(page["next"].is_string() && page["previous"].is_null());
    let page = api.get("/v2/apps?limit=2&offset=2", &token).await.json();
    assert_eq!((page["count"].as_u64(), page["results"][0]["id"].as_str()), (Some(3), Some("a3")));
    assert_eq!(api.get("/v2/apps/?limit=x", &token).await.status, StatusCode::BAD_REQUEST);
    for path in ["/v2/apps/a1", "/v2/apps/a1/", "/v2/apps/a1/config", "/v2/apps/a1/config/", "/v2/apps/a1/releases/v1"]
    {
        let r = api.get(path, &token).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
    }
    let page = api.get("/v2/apps/a1/domains/?limit=1", &token).await.json();
    assert_eq!(page["results"][0]["domain"], "a1");
    let pods = api.get("/v2/apps/a1/pods/?limit=100", &token).await.json();
    assert_eq!((pods["count"].as_u64(), pods["results"].as_array().map(Vec::len)), (Some(0), Some(0)));
    let settings = api.get("/v2/apps/a1/settings/", &token).await.json();
    assert_eq!(settings["label"], json!({}));
    // Login without the slash works too.
    let r = api.call(Method::POST, "/v2/auth/login", None, Some(json!({"username": "alice", "password": "pw"}))).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = api.call(Method::POST, "/v2/auth/login/", None, Some(json!({"username": "alice"}))).await;
    assert_eq!(r.json(), json!({"password": ["This field is required."]}));
}

#[tokio::test]
async fn config_releases_rollback_over_http() {
    let api = start().await;
    let token = api.user("alice").await;
    let r = api.call(Method::POST, "/v2/apps/", Some(&token), None).await;
    assert_eq!(r.status, StatusCode::CREATED, "empty body creates an app with a random name");
    let app = r.json()["id"].as_str().unwrap().to_string();
    let base = format!("/v2/apps/{app}");
    let r = api.post(&format!("{base}/config/"), &token, json!({"values": {"FOO": "bar"}})).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.json()["values"]["FOO"], "bar");
    let r = api.post(&format!("{base}/config/"), &token, json!({"values": {"FOO": "bar"}})).await;
    assert_eq!(
        (r.status, r.json()),
        (StatusCode::CONFLICT, json!({"detail": "alice changed nothing - release stopped"}))
    );
    let r = api.post(&format!("{base}/config/"), &token, json!({"values": {"NOPE": null}})).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.json(), json!({"detail": "NOPE does not exist under values"}));
    let r = api.post(&format!("{base}/config/"), &token, json!({"values": {"1X": "y"}})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.json()["values"].is_array());
    api.post(&format!("{base}/config/"), &token, json!({"values": {"FOO": "baz"}})).await;
    let rel = api.get(&format!("{base}/releases/?limit=100"), &token).await.json();
    assert_eq!(rel["count"], 3);
    assert_eq!(rel["results"][0]["version"], 3);
    assert_eq!(rel["results"][0]["summary"], "alice changed FOO");
    let r = api.post(&format!("{base}/releases/rollback/"), &token, json!({"version": 2})).await;
    assert_eq!((r.status, r.json()), (StatusCode::CREATED, json!({"version": 4})));
    assert_eq!(api.get(&format!("{base}/config"), &token).await.json()["values"]["FOO"], "bar");
    let r = api.call(Method::POST, &format!("{base}/releases/rollback"), Some(&token), None).await;
    assert_eq!(r.json(), json!({"version": 5}));
    let r = api.get(&format!("{base}/releases/v99/"), &token).await;
    assert_eq!((r.status, &r.body[..]), (StatusCode::NOT_FOUND, &br#""No Release matches the given query.""#[..]));
    let r = api.post(&format!("{base}/releases/rollback/"), &token, json!({"version": 1})).await;
    assert_eq!(r.json(), json!({"detail": "Cannot roll back to initial release."}));
    // Scaling needs a build.
    let r = api.post(&format!("{base}/scale/"), &token, json!({"web": 1})).await;
    assert_eq!(r.json(), json!({"detail": "No build associated with this release"}));
    let r = api.post(&format!("{base}/scale/"), &token, json!({"web": -1})).await;
    assert!(r.json()["detail"].as_str().unwrap().starts_with("Invalid scaling format"));
}

#[tokio::test]
async fn tarball_upload_creates_a_build_with_its_procfile() {
    let api = start().await;
    let token = api.user("alice").await;
    api.post("/v2/apps/", &token, json!({"id": "demo"})).await;
    // Only a worker: the first deploy scales web to 1, and there is none, so nothing runs.
    let body = tarball("worker: sleep 30\n");
    let r = api.send(Method::POST, "/v2/apps/demo/builds/", Some(&token), "application/gzip", body.clone()).await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    let build = r.json();
    let digest = deis_core::artifact::Digest::of(&body);
    assert_eq!(build["sha"], digest.to_string());
    assert_eq!(build["procfile"], json!({"worker": "sleep 30"}));
    assert_eq!(build["image"], "");
    assert!(build.get("warning").is_none());
    let rel = api.get("/v2/apps/demo/releases/", &token).await.json();
    assert_eq!(rel["results"][0]["summary"], format!("alice deployed {}", digest.short()));
    assert_eq!(api.get("/v2/apps/demo", &token).await.json()["structure"], json!({"worker": 0}));
    let builds = api.get("/v2/apps/demo/builds/", &token).await.json();
    assert_eq!(builds["results"][0]["uuid"], build["uuid"]);
    // Scale by numeric string; unknown types are 404.
    let r = api.post("/v2/apps/demo/scale/", &token, json!({"worker": "0"})).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{r:?}");
    let r = api.post("/v2/apps/demo/scale/", &token, json!({"web": 1})).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.json(), json!({"detail": "Container type web does not exist in application"}));
    // An archive without a Procfile is refused with a clear message.
    let r = api.send(Method::POST, "/v2/apps/demo/builds/", Some(&token), "application/x-gzip", tarball("")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // An image build on the local scheduler is recorded as a failed release with a warning.
    let r = api.post("/v2/apps/demo/builds/", &token, json!({"image": "nginx:1.13"})).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert!(r.json()["warning"].is_string(), "{r:?}");
    let rel = api.get("/v2/apps/demo/releases/", &token).await.json();
    assert_eq!((rel["results"][0]["failed"].as_bool(), rel["count"].as_u64()), (Some(true), Some(3)));
    let r = api.post("/v2/apps/demo/builds/", &token, json!({})).await;
    assert_eq!(r.json(), json!({"image": ["This field is required."]}));
    let r = api.call(Method::DELETE, "/v2/apps/demo", Some(&token), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn domains_users_and_permissions() {
    let api = start().await;
    let alice = api.user("alice").await;
    let bob = api.user("bob").await;
    api.post("/v2/apps/", &alice, json!({"id": "demo"})).await;
    let r = api.post("/v2/apps/demo/domains/", &alice, json!({"domain": "*.example.com"})).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = api.call(Method::DELETE, "/v2/apps/demo/domains/%2A.example.com", Some(&alice), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{r:?}");
    let r = api.call(Method::DELETE, "/v2/apps/demo/domains/%2A.example.com", Some(&alice), None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = api.get("/v2/apps/demo", &bob).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.json(), json!({"detail": "You do not have permission to perform this action."}));
    assert_eq!(api.get("/v2/users/", &bob).await.status, StatusCode::FORBIDDEN);
    let users = api.get("/v2/users/?limit=100", &alice).await.json();
    assert_eq!(users["count"], 2);
    // Nodes: admins only; the local scheduler's one node, up, of the data plane.
    assert_eq!(api.get("/v2/nodes/", &bob).await.status, StatusCode::FORBIDDEN);
    let nodes = api.get("/v2/nodes/", &alice).await.json();
    assert_eq!(nodes["count"], 1, "{nodes}");
    assert_eq!(
        (nodes["results"][0]["planes"].clone(), nodes["results"][0]["health"].clone()),
        (json!(["data"]), json!({"state": "up"}))
    );
    let r = api.call(Method::DELETE, "/v2/auth/cancel/", Some(&alice), None).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(r.json()["detail"].as_str().unwrap().contains("still has applications assigned"));
    // Token regeneration: the old token stops working.
    let r = api.call(Method::POST, "/v2/auth/tokens/", Some(&bob), None).await;
    let new = r.json()["token"].as_str().unwrap().to_string();
    assert_eq!(api.get("/v2/apps/", &bob).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(api.get("/v2/apps/", &new).await.status, StatusCode::OK);
    let r = api.post("/v2/auth/passwd/", &new, json!({"password": "wrong", "new_password": "x"})).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = api.post("/v2/auth/passwd/", &new, json!({"password": "pw", "new_password": "x"})).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = api.call(Method::DELETE, "/v2/auth/cancel/", Some(&new), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(api.get("/v2/apps/", &new).await.status, StatusCode::UNAUTHORIZED);
}

/// Fault "API slowloris": connections that send half a request head and go quiet were
/// never closed, until deisd ran out of descriptors. Now each gets the header timeout,
/// and past the connection cap new ones are closed at once.
#[tokio::test]
async fn slow_and_surplus_connections_are_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let timeout = Duration::from_millis(300);
    let api = start_with(ApiLimits { header_read_timeout: timeout, max_connections: 3, ..ApiLimits::default() }).await;
    let closed_after = async |s: &mut tokio::net::TcpStream| {
        let start = std::time::Instant::now();
        let mut buf = [0u8; 256];
        loop {
            match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
                Ok(Ok(0) | Err(_)) => return start.elapsed(),
                Ok(Ok(_)) => {}
                Err(_) => panic!("the connection was never closed"),
            }
        }
    };
    let mut quiet = vec![];
    for _ in 0..3 {
        let mut s = tokio::net::TcpStream::connect(api.addr).await.unwrap();
        s.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        quiet.push(s);
    }
    // The cap is reached once the server has taken all three: a fourth is closed
    // without an answer (retry until the accept loop has seen the three).
    let surplus = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let mut s = tokio::net::TcpStream::connect(api.addr).await.unwrap();
            let took = closed_after(&mut s).await;
            if took < timeout {
                return took;
            }
        }
    })
    .await
    .expect("a connection past the cap is closed at once");
    assert!(surplus < timeout);
    for s in &mut quiet {
        let took = closed_after(s).await;
        assert!(took < timeout * 4, "a half-sent request head held its connection for {took:?}");
    }
    // Their slots are free again.
    let r = api.send(Method::GET, "/v2/", None, "application/json", vec![]).await;
    assert_ne!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
}

mod addons;
mod permissions;
