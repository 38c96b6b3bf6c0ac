//! The OSB server and client against each other, and the server's answers to every
//! error case of the spec, over real HTTP on loopback.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use deis_core::broker::{ManagedBroker, ServiceBroker, USER_PROVIDED_PLAN_ID, USER_PROVIDED_SERVICE_ID, UserProvided};
use deis_core::store::RedbStore;
use deis_core::testing::{MemoryBackend, PlanHarness, broker_suite};
use deis_core::{Store, broker};
use deis_sdk::osb::server::{BasicAuth, OsbServerConfig, router};
use deis_sdk::osb::{OsbClient, OsbDriver, PollPolicy};
use deis_test_support::http::{Request, Response};
use serde_json::{Value, json};

const USER: &str = "platform";
const PASSWORD: &str = "broker-secret-1";

struct Served {
    addr: SocketAddr,
    store: Arc<dyn Store>,
    backend: Arc<MemoryBackend>,
    broker: ManagedBroker,
}

async fn serve_broker(broker: Arc<dyn ServiceBroker>, max_body_bytes: usize) -> SocketAddr {
    let config = OsbServerConfig { auth: Some(BasicAuth::new(USER, PASSWORD)), max_body_bytes };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router(broker, config)).await });
    addr
}

async fn serve_memory() -> Served {
    let store: Arc<dyn Store> = RedbStore::in_memory();
    let backend = Arc::new(MemoryBackend::default());
    let broker = ManagedBroker::start(store.clone(), "osb/", backend.clone()).await.unwrap();
    let addr = serve_broker(Arc::new(broker.clone()), 4096).await;
    Served { addr, store, backend, broker }
}

fn client(addr: SocketAddr) -> OsbClient {
    OsbClient::new(&format!("http://{addr}"), Some(BasicAuth::new(USER, PASSWORD))).unwrap()
}

#[tokio::test]
async fn client_and_server_pass_the_suite() {
    let served = serve_memory().await;
    let make = async || Arc::new(client(served.addr)) as Arc<dyn ServiceBroker>;
    broker_suite(make, &MemoryBackend::harness(MemoryBackend::ASYNC_PLAN_ID)).await;
    broker_suite(make, &MemoryBackend::harness(MemoryBackend::SYNC_PLAN_ID)).await;

    let store: Arc<dyn Store> = RedbStore::in_memory();
    let user_provided = ManagedBroker::start(store, "up/", Arc::new(UserProvided)).await.unwrap();
    let addr = serve_broker(Arc::new(user_provided), 4096).await;
    let mut parameters = broker::Object::new();
    parameters.insert("url".into(), json!("redis://example.com:6379"));
    let harness = PlanHarness {
        service_id: USER_PROVIDED_SERVICE_ID.into(),
        plan_id: USER_PROVIDED_PLAN_ID.into(),
        parameters: Some(parameters),
        distinct_credentials: false,
    };
    broker_suite(async || Arc::new(client(addr)) as Arc<dyn ServiceBroker>, &harness).await;
}

/// A request with the version and auth headers.
fn osb(method: &str, path: &str) -> Request {
    Request::new(method, path)
        .header("X-Broker-API-Version", "2.17")
        .header("Authorization", &BasicAuth::new(USER, PASSWORD).header())
}

async fn send(req: Request, addr: SocketAddr) -> (u16, Value, Response) {
    let response = req.send_async(addr).await.unwrap();
    let body = serde_json::from_str(&response.body).unwrap_or(Value::Null);
    (response.status, body, response)
}

fn provision_body(plan: &str) -> String {
    json!({"service_id": MemoryBackend::SERVICE_ID, "plan_id": plan, "organization_guid": "o", "space_guid": "s",
           "x-vendor-extension": {"ignored": true}})
    .to_string()
}

async fn snapshot(store: &Arc<dyn Store>) -> Vec<(String, Vec<u8>)> {
    store.list("osb/").await.unwrap().kvs.into_iter().map(|kv| (kv.key, kv.value)).collect()
}

#[tokio::test]
async fn server_answers_every_error_case_of_the_spec() {
    let Served { addr, store, .. } = serve_memory().await;
    let put_async = |id: &str| format!("/v2/service_instances/{id}?accepts_incomplete=true");

    // 412: version missing, older, or not a version at all.
    for version in [None, Some("2.16"), Some("3.0"), Some("two")] {
        let mut req =
            Request::new("GET", "/v2/catalog").header("Authorization", &BasicAuth::new(USER, PASSWORD).header());
        if let Some(v) = version {
            req = req.header("X-Broker-API-Version", v);
        }
        let (status, body, _) = send(req, addr).await;
        assert_eq!(status, 412, "version {version:?}");
        assert!(body["description"].as_str().unwrap().contains("2.17"), "{body}");
    }
    assert_eq!(send(osb("GET", "/v2/catalog").header("X-Broker-API-Version", "2.18"), addr).await.0, 200);

    // 401: no credentials, wrong ones.
    let (status, _, response) =
        send(Request::new("GET", "/v2/catalog").header("X-Broker-API-Version", "2.17"), addr).await;
    assert_eq!(status, 401);
    assert!(response.headers.contains_key("www-authenticate"));
    let wrong = Request::new("GET", "/v2/catalog")
        .header("X-Broker-API-Version", "2.17")
        .header("Authorization", &BasicAuth::new(USER, "wrong").header());
    assert_eq!(send(wrong, addr).await.0, 401);

    let (status, catalog, _) = send(osb("GET", "/v2/catalog"), addr).await;
    assert_eq!(status, 200);
    assert_eq!(catalog["services"][0]["name"], "memory");

    let before = snapshot(&store).await;
    // 400: bad JSON, missing required fields, unknown plan, bad query, bad identity.
    let cases: Vec<(Request, u16)> = vec![
        (osb("PUT", &put_async("i1")).body("{not json"), 400),
        (osb("PUT", &put_async("i1")).body(r#"{"service_id":"memory-service","plan_id":"memory-plan-sync"}"#), 400),
        (osb("PUT", &put_async("i1")).body(provision_body("no-such-plan")), 400),
        (osb("PUT", "/v2/service_instances/i1?accepts_incomplete=maybe").body(provision_body("memory-plan-sync")), 400),
        (osb("PUT", &put_async("i1")).body(vec![b' '; 8192]), 413),
        (osb("DELETE", "/v2/service_instances/i1?service_id=memory-service"), 400),
        (osb("PATCH", "/v2/service_instances/i1").body(r#"{"service_id":"memory-service"}"#), 422),
        // 422 AsyncRequired: an asynchronous plan without accepts_incomplete.
        (osb("PUT", "/v2/service_instances/i1").body(provision_body("memory-plan-async")), 422),
        // 410: deleting what does not exist; 404: fetching or polling it.
        (osb("DELETE", "/v2/service_instances/i1?service_id=memory-service&plan_id=memory-plan-sync"), 410),
        (
            osb(
                "DELETE",
                "/v2/service_instances/i1/service_bindings/b1?service_id=memory-service&plan_id=memory-plan-sync",
            ),
            410,
        ),
        (osb("GET", "/v2/service_instances/i1"), 404),
        (osb("GET", "/v2/service_instances/i1/last_operation"), 404),
        (osb("GET", "/v2/service_instances/i1/service_bindings/b1"), 404),
        (osb("GET", "/v2/service_instances/i1/service_bindings/b1/last_operation"), 404),
    ];
    for (req, want) in cases {
        let (status, body, _) = send(req.clone(), addr).await;
        assert_eq!(status, want, "{req:?}: {body}");
        assert!(body["description"].as_str().is_some_and(|d| !d.is_empty()), "{req:?}: an error body {body}");
    }
    // A 4xx left the broker's state as it was.
    assert_eq!(snapshot(&store).await, before, "a refused request changed the broker's state");

    let (_, body, _) =
        send(osb("PUT", "/v2/service_instances/i1").body(provision_body("memory-plan-async")), addr).await;
    assert_eq!(
        body,
        json!({"error": "AsyncRequired",
               "description": "This service plan requires client support for asynchronous service operations."})
    );

    // 202 + polling, identity recorded and request identity echoed.
    let identity = broker::OriginatingIdentity::deis_user("alice").to_header();
    let (status, body, response) = send(
        osb("PUT", &put_async("i1"))
            .header("X-Broker-API-Originating-Identity", &identity)
            .header("X-Broker-API-Request-Identity", "req-42")
            .body(provision_body("memory-plan-async")),
        addr,
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(response.headers.get("x-broker-api-request-identity").map(String::as_str), Some("req-42"));
    let operation = body["operation"].as_str().unwrap().to_string();
    let poll = format!("/v2/service_instances/i1/last_operation?operation={operation}");
    deis_test_support::eventually(Duration::from_secs(10), "the provision to succeed", || {
        let req = osb("GET", &poll);
        async move { (send(req, addr).await.1["state"] == "succeeded").then_some(()) }
    })
    .await;
    let record = store.get("osb/instances/i1").await.unwrap().unwrap();
    let record: Value = serde_json::from_slice(&record.value).unwrap();
    assert_eq!(record["requested_by"], r#"deis {"user_id":"alice"}"#);

    // Identical repeat: 200; conflicting: 409 and nothing changes.
    assert_eq!(send(osb("PUT", &put_async("i1")).body(provision_body("memory-plan-async")), addr).await.0, 200);
    let before = snapshot(&store).await;
    let other = json!({"service_id": "memory-service", "plan_id": "memory-plan-async", "organization_guid": "o",
                       "space_guid": "s", "parameters": {"size": 2}});
    assert_eq!(send(osb("PUT", &put_async("i1")).body(other.to_string()), addr).await.0, 409);
    assert_eq!(snapshot(&store).await, before);

    // Bind: 201 then 200 identical, 409 for another app.
    let bind = |app: &str| {
        json!({"service_id": "memory-service", "plan_id": "memory-plan-async",
                                  "bind_resource": {"app_guid": app}})
        .to_string()
    };
    let path = "/v2/service_instances/i1/service_bindings/b1";
    let (status, body, _) = send(osb("PUT", path).body(bind("a")), addr).await;
    assert_eq!(status, 422, "asynchronous bind without accepts_incomplete: {body}");
    let path = "/v2/service_instances/i1/service_bindings/b1?accepts_incomplete=true";
    let (status, body, _) = send(osb("PUT", path).body(bind("a")), addr).await;
    assert_eq!(status, 202, "{body}");
    assert!(body.get("credentials").is_none(), "a 202 carries no credentials");
    deis_test_support::eventually(Duration::from_secs(10), "the binding", || {
        let req = osb("GET", "/v2/service_instances/i1/service_bindings/b1");
        async move { send(req, addr).await.1["credentials"]["uri"].as_str().map(str::to_string) }
    })
    .await;
    assert_eq!(send(osb("PUT", path).body(bind("a")), addr).await.0, 200);
    assert_eq!(send(osb("PUT", path).body(bind("b")), addr).await.0, 409);

    // Deprovision: 202, then polling answers 410 once it is gone.
    let delete = "/v2/service_instances/i1?service_id=memory-service&plan_id=memory-plan-async&accepts_incomplete=true";
    assert_eq!(send(osb("DELETE", delete), addr).await.0, 202);
    deis_test_support::eventually(Duration::from_secs(10), "the instance to be gone", || {
        let req = osb("GET", "/v2/service_instances/i1/last_operation");
        async move { (send(req, addr).await.0 == 410).then_some(()) }
    })
    .await;
    assert_eq!(send(osb("DELETE", delete), addr).await.0, 410);
}

#[tokio::test]
async fn driver_mitigates_orphans_of_failed_provisions() {
    let served = serve_memory().await;
    served.backend.fail.store(true, Ordering::SeqCst);
    let policy = PollPolicy { interval: Duration::from_millis(20), ..PollPolicy::default() };
    let driver = OsbDriver::new(Arc::new(client(served.addr))).with_policy(policy);
    let request = broker::ProvisionRequest {
        service_id: MemoryBackend::SERVICE_ID.into(),
        plan_id: MemoryBackend::ASYNC_PLAN_ID.into(),
        organization_guid: "o".into(),
        space_guid: "s".into(),
        ..Default::default()
    };
    let ctx = broker::RequestContext::default();
    let err = driver.provision(&ctx, "orphan", request.clone(), None).await.unwrap_err();
    assert!(err.to_string().contains("told to fail"), "{err}");
    // The failed instance was deprovisioned: the broker deleted it and forgot it.
    assert_eq!(served.backend.deleted_instances.load(Ordering::SeqCst), 1);
    assert!(served.broker.instance_record("orphan").await.unwrap().is_none());

    // A 4xx is no orphan: nothing is deleted.
    let mut bad = request.clone();
    bad.plan_id = "nope".into();
    driver.provision(&ctx, "refused", bad, None).await.unwrap_err();
    assert_eq!(served.backend.deleted_instances.load(Ordering::SeqCst), 1);

    // The plan's maximum polling duration ends a stuck provision, then mitigation runs.
    served.backend.fail.store(false, Ordering::SeqCst);
    served.backend.hold.store(true, Ordering::SeqCst);
    let err = driver.provision(&ctx, "stuck", request, Some(Duration::from_millis(200))).await.unwrap_err();
    assert!(matches!(err, broker::BrokerError::Timeout(_)), "{err}");
    served.backend.hold.store(false, Ordering::SeqCst);
}

#[tokio::test]
async fn driver_honours_retry_after() {
    // A broker that accepts a provision, answers `in progress` with Retry-After: 1 once,
    // then `succeeded`.
    use axum::routing::{get, put};
    let polls = Arc::new(std::sync::Mutex::new(Vec::<std::time::Instant>::new()));
    let seen = polls.clone();
    let app = axum::Router::new()
        .route(
            "/v2/service_instances/{id}",
            put(|| async { (axum::http::StatusCode::ACCEPTED, axum::Json(json!({"operation": "op-1"}))) }),
        )
        .route(
            "/v2/service_instances/{id}/last_operation",
            get(move || {
                let seen = seen.clone();
                async move {
                    let mut polls = seen.lock().unwrap();
                    polls.push(std::time::Instant::now());
                    let state = if polls.len() == 1 { "in progress" } else { "succeeded" };
                    ([("retry-after", "1")], axum::Json(json!({ "state": state })))
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let policy = PollPolicy { interval: Duration::from_millis(10), ..PollPolicy::default() };
    let driver = OsbDriver::new(Arc::new(client(addr))).with_policy(policy);
    let request = broker::ProvisionRequest { service_id: "s".into(), plan_id: "p".into(), ..Default::default() };
    driver.provision(&Default::default(), "x", request, None).await.unwrap();
    let polls = polls.lock().unwrap();
    assert_eq!(polls.len(), 2);
    assert!(polls[1] - polls[0] >= Duration::from_secs(1), "polled again after {:?}", polls[1] - polls[0]);
}

#[test]
fn basic_auth_compares_whole_credentials() {
    let auth = BasicAuth::new("u", "p");
    assert!(auth.allows(Some(&auth.header())));
    for other in [
        None,
        Some(""),
        Some("Basic "),
        Some(&BasicAuth::new("u", "p2").header()[..]),
        Some(&BasicAuth::new("u2", "p").header()[..]),
    ] {
        assert!(!auth.allows(other), "{other:?}");
    }
}
