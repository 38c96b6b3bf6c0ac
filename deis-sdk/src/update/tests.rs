//! The Omaha server replayed with the real clients' requests (fixtures), over HTTP on
//! loopback, and the admin API's flow.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use deis_core::store::RedbStore;
use deis_core::time::Timestamp;
use deis_core::update::{
    GroupSpec, InstanceStatus, Package, RolloutPolicy, StoreUpdateChannel, UpdateChannel, event_result, event_type,
};
use deis_core::{Store, controller};
use deis_test_support::http::Request;
use http::StatusCode;
use serde_json::json;

use super::omaha::{ResponseApp, parse_response};
use super::{OmahaServer, routes_on};

const GO_OMAHA: &[u8] = include_bytes!("../../../docs/fixtures/omaha/go-omaha-request.xml");
const UE_UPDATE: &[u8] = include_bytes!("../../../docs/fixtures/omaha/go-omaha-update-engine-update-request.xml");
const UE_NO_UPDATE: &[u8] = include_bytes!("../../../docs/fixtures/omaha/go-omaha-update-engine-no-update-request.xml");
const UE_RESPONSE: &[u8] = include_bytes!("../../../docs/fixtures/omaha/go-omaha-update-engine-update-response.xml");

const UE_APP: &str = "{87efface-864d-49a5-9bb3-4b050a7c227a}";
const UE_MACHINE: &str = "{8BDE4C4D-9083-4D61-B41C-3253212C0C37}";

fn channel() -> Arc<dyn UpdateChannel> {
    Arc::new(StoreUpdateChannel::new(RedbStore::in_memory()))
}

/// The package of the update_engine response fixture.
fn fixture_package() -> Package {
    Package {
        version: "9999.0.0".into(),
        url: "http://kam:8080/static/".into(),
        name: "update.gz".into(),
        size: 67546213,
        sha256: "d15025416dd113df521ad481e51e26d3c6a7b401cef170e804c283cb1413fcc8".into(),
        sha1: Some("+LXvjiaPkeYDLHoNKlf9qbJwvnk=".into()),
        published: Timestamp::now(),
    }
}

/// update_engine's app with a `dev-channel` group offering the fixture's package.
async fn update_engine_app(c: &Arc<dyn UpdateChannel>) {
    c.create_app(UE_APP, "Chrome OS").await.unwrap();
    c.publish(UE_APP, "dev-channel", fixture_package()).await.unwrap();
    let spec =
        GroupSpec { name: "dev-channel".into(), channel: "dev-channel".into(), policy: RolloutPolicy::default() };
    c.put_group(UE_APP, spec).await.unwrap();
}

async fn answer(c: &Arc<dyn UpdateChannel>, body: &[u8]) -> (StatusCode, String, Vec<ResponseApp>) {
    let (status, xml) = OmahaServer::new(c.clone()).answer_bytes(body, SystemTime::now()).await.unwrap();
    let apps = parse_response(xml.as_bytes()).unwrap_or_else(|e| panic!("our response does not parse ({e}): {xml}"));
    (status, xml, apps)
}

#[tokio::test]
async fn update_engine_update_request_gets_the_fixture_response() {
    let c = channel();
    update_engine_app(&c).await;
    let (status, xml, apps) = answer(&c, UE_UPDATE).await;
    assert_eq!(status, StatusCode::OK);
    let mut expected = parse_response(UE_RESPONSE).unwrap();
    // We also give the package's hex SHA-256 (`hash_sha256`), which the fixture lacks.
    expected[0].manifest.as_mut().unwrap().sha256_hex = fixture_package().sha256;
    assert_eq!(apps, expected, "{xml}");
    // Elements of the request are answered in the fixture's forms.
    assert!(xml.contains("<app appid=\"{87efface-864d-49a5-9bb3-4b050a7c227a}\" status=\"ok\"><ping status=\"ok\"/><event status=\"ok\"/><updatecheck status=\"ok\"><urls><url codebase=\"http://kam:8080/static/\"/></urls><manifest version=\"9999.0.0\"><packages><package name=\"update.gz\" hash=\"+LXvjiaPkeYDLHoNKlf9qbJwvnk=\""), "{xml}");
    assert!(
        xml.contains("<action event=\"postinstall\" sha256=\"0VAlQW3RE99SGtSB5R4m08antAHO8XDoBMKDyxQT/Mg=\""),
        "{xml}"
    );
    // The machine is recorded with its event, in its group, with the grant.
    let instances = c.instances(UE_APP, Some("dev-channel")).await.unwrap();
    let i = &instances[0];
    assert_eq!((i.id.as_str(), i.version.as_str(), i.status), (UE_MACHINE, "ForcedUpdate", InstanceStatus::Granted));
    let e = i.last_event().unwrap();
    assert_eq!((e.event_type, e.result), (event_type::UPDATE_COMPLETE, event_result::SUCCESS_REBOOT));
}

#[tokio::test]
async fn update_engine_event_only_request_is_acknowledged_and_recorded() {
    let c = channel();
    update_engine_app(&c).await;
    // The no-update fixture has no machineid: give it one, as update_engine does.
    let body = String::from_utf8_lossy(UE_NO_UPDATE)
        .replace("version=\"ForcedUpdate\"", "machineid=\"m-1\" version=\"ForcedUpdate\"");
    let (status, xml, apps) = answer(&c, body.as_bytes()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!((apps[0].status.as_str(), apps[0].updatecheck.as_deref()), ("ok", None), "{xml}");
    assert!(xml.contains("<event status=\"ok\"/></app>"), "{xml}");
    // track="" is the stable group.
    let i = &c.instances(UE_APP, Some("stable")).await.unwrap()[0];
    assert_eq!((i.id.as_str(), i.status), ("m-1", InstanceStatus::Complete));
    // Without any instance id the app is refused, not recorded under a made-up one.
    let (status, _, apps) = answer(&c, UE_NO_UPDATE).await;
    assert_eq!((status, apps[0].status.as_str()), (StatusCode::BAD_REQUEST, "error-invalidRequest"));
}

#[tokio::test]
async fn go_omaha_request_answers_each_app() {
    let c = channel();
    c.create_app("{430FD4D0-B729-4F61-AA34-91526481799D}", "omaha client").await.unwrap();
    let (status, xml, apps) = answer(&c, GO_OMAHA).await;
    assert_eq!(status, StatusCode::OK, "one app is ok: {xml}");
    let statuses: Vec<_> =
        apps.iter().map(|a| (a.appid.as_str(), a.status.as_str(), a.updatecheck.as_deref())).collect();
    assert_eq!(
        statuses,
        [
            ("{430FD4D0-B729-4F61-AA34-91526481799D}", "ok", Some("noupdate")),
            ("{D0AB2EBC-931B-4013-9FEB-C9C4C2225C8C}", "error-unknownApplication", None)
        ]
    );
    // The request's userid identifies the instance.
    let i = &c.instances("430fd4d0-b729-4f61-aa34-91526481799d", None).await.unwrap()[0];
    assert_eq!((i.id.as_str(), i.version.as_str()), ("{D0BBD725-742D-44ae-8D46-0231E881D58E}", "1.3.23.0"));
}

#[tokio::test]
async fn unknown_tracks_and_apps() {
    let c = channel();
    c.create_app(UE_APP, "Chrome OS").await.unwrap();
    // dev-channel is no group of this app.
    let (status, xml, apps) = answer(&c, UE_UPDATE).await;
    assert_eq!((status, apps[0].updatecheck.as_deref()), (StatusCode::OK, Some("error-unknownTrack")), "{xml}");
    let (status, _, apps) = answer(&channel(), UE_UPDATE).await;
    assert_eq!((status, apps[0].status.as_str()), (StatusCode::BAD_REQUEST, "error-unknownApplication"));
}

struct Served {
    addr: SocketAddr,
    admin: String,
    user: String,
    channel: Arc<dyn UpdateChannel>,
}

/// The update routes on loopback, with an administrator and a plain user in the store.
async fn serve() -> Served {
    let store: Arc<dyn Store> = RedbStore::in_memory();
    let channel: Arc<dyn UpdateChannel> = Arc::new(StoreUpdateChannel::new(store.clone()));
    let dir = tempfile::tempdir().unwrap();
    let (controller, _, _) = deis_core::testing::controller_with_app(store.clone(), dir.path(), "app").await;
    // alice registered first: she is the administrator.
    let admin = controller.login("alice", "pw-alice-123").await.unwrap();
    controller.register(None, "bob", "pw-bob-12345", "").await.unwrap();
    let user = controller.login("bob", "pw-bob-12345").await.unwrap();
    assert!(controller::authenticate(&*store, &admin).await.unwrap().is_superuser);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = routes_on(store, channel.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    std::mem::forget(dir);
    Served { addr, admin, user, channel }
}

#[tokio::test]
async fn over_http_non_post_big_and_malformed_bodies_are_refused() {
    let s = serve().await;
    update_engine_app(&s.channel).await;
    let r = Request::post("/v1/update/").body(UE_UPDATE).send_async(s.addr).await.unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.headers["content-type"], "application/xml; charset=utf-8");
    assert!(r.body.contains("<manifest version=\"9999.0.0\">"), "{r:?}");
    let r = Request::post("/v1/update").body(UE_UPDATE).send_async(s.addr).await.unwrap();
    assert_eq!(r.status, 200, "without the trailing slash too");
    let r = Request::get("/v1/update/").send_async(s.addr).await.unwrap();
    assert_eq!(r.status, 400, "{r:?}");
    let big = vec![b' '; super::omaha::MAX_BODY_BYTES + 1];
    let r = Request::post("/v1/update/").body(big).send_async(s.addr).await.unwrap();
    assert_eq!(r.status, 413, "{r:?}");
    let r =
        Request::post("/v1/update/").body(&b"<request protocol=\"3.0\"><app appid=\"a\">"[..]).send_async(s.addr).await;
    let r = r.unwrap();
    assert_eq!(r.status, 400);
    assert!(r.body.starts_with("malformed Omaha request: malformed XML at byte"), "{r:?}");
}

fn call(method: &str, path: &str, token: Option<&str>, body: Option<serde_json::Value>) -> Request {
    let mut r = Request::new(method, path).header("content-type", "application/json");
    if let Some(t) = token {
        r = r.header("authorization", &format!("token {t}"));
    }
    if let Some(b) = body {
        r = r.body(b.to_string());
    }
    r
}

#[tokio::test]
async fn the_admin_api_publishes_promotes_pauses_and_lists_instances() {
    let s = serve().await;
    let admin = Some(s.admin.as_str());
    let send = |r: Request| async move { r.send_async(s.addr).await.unwrap() };
    assert_eq!(send(call("GET", "/v2/updates/apps/", None, None)).await.status, 401);
    assert_eq!(send(call("GET", "/v2/updates/apps/", Some(&s.user), None)).await.status, 403);
    let r = send(call("POST", "/v2/updates/apps/", admin, Some(json!({"id": UE_APP, "name": "Chrome OS"})))).await;
    assert_eq!(r.status, 201, "{r:?}");
    let package = json!({"version": "9999.0.0", "url": "http://kam:8080/static/", "name": "update.gz",
        "size": 67546213, "sha256": fixture_package().sha256, "sha1": "+LXvjiaPkeYDLHoNKlf9qbJwvnk="});
    let path = format!("/v2/updates/apps/{}/channels/alpha/", "87efface-864d-49a5-9bb3-4b050a7c227a");
    let r = send(call("POST", &path, admin, Some(package.clone()))).await;
    assert_eq!((r.status, r.json()["version"].clone()), (201, json!("9999.0.0")), "{r:?}");
    let mut other = package.clone();
    other["size"] = json!(1);
    let r = send(call("POST", &path, admin, Some(other))).await;
    assert_eq!(r.status, 409, "{r:?}");
    assert!(r.json()["detail"].as_str().unwrap().contains("immutable"), "{r:?}");
    let app = "/v2/updates/apps/87efface-864d-49a5-9bb3-4b050a7c227a";
    for (from, to) in [("alpha", "beta"), ("beta", "stable")] {
        let r = send(call("POST", &format!("{app}/promote/"), admin, Some(json!({"from": from, "to": to})))).await;
        assert_eq!((r.status, r.json()["version"].clone()), (200, json!("9999.0.0")), "{r:?}");
    }
    let r = send(call("POST", &format!("{app}/groups/dev-channel/"), admin, Some(json!({"channel": "nightly"})))).await;
    assert_eq!(r.status, 404, "an unknown channel: {r:?}");
    let policy = json!({"max_updates_per_period": 1, "period_secs": 60, "update_timeout_secs": 600, "safe_mode": true});
    let r = send(call(
        "PUT",
        &format!("{app}/groups/dev-channel/"),
        admin,
        Some(json!({"channel": "stable", "policy": policy})),
    ))
    .await;
    assert_eq!((r.status, r.json()["policy"]["max_updates_per_period"].clone()), (200, json!(1)), "{r:?}");
    let r = send(call("POST", &format!("{app}/groups/dev-channel/pause/"), admin, None)).await;
    assert_eq!(r.json()["paused"], json!(true), "{r:?}");
    // Paused: update_engine gets no update.
    let omaha = Request::post("/v1/update/").body(UE_UPDATE).send_async(s.addr).await.unwrap();
    assert!(omaha.body.contains("<updatecheck status=\"noupdate\"/>"), "{omaha:?}");
    let r = send(call("POST", &format!("{app}/groups/dev-channel/resume/"), admin, None)).await;
    assert_eq!(r.json()["paused"], json!(false), "{r:?}");
    let omaha = Request::post("/v1/update/").body(UE_UPDATE).send_async(s.addr).await.unwrap();
    assert!(omaha.body.contains("<updatecheck status=\"ok\">"), "{omaha:?}");
    let r = send(call("GET", &format!("{app}/instances/?group=dev-channel"), admin, None)).await;
    let i = &r.json()["results"][0];
    assert_eq!(
        (i["id"].clone(), i["version"].clone(), i["status"].clone()),
        (json!(UE_MACHINE), json!("ForcedUpdate"), json!("granted")),
        "{r:?}"
    );
    assert_eq!(i["events"].as_array().unwrap().last().unwrap()["event_type"], json!(3));
    let r = send(call("GET", &format!("{app}/"), admin, None)).await;
    let groups = r.json()["groups"].as_array().unwrap().clone();
    let dev = groups.iter().find(|g| g["group"]["name"] == "dev-channel").unwrap();
    assert_eq!((dev["version"].clone(), dev["statuses"]["granted"].clone()), (json!("9999.0.0"), json!(1)), "{r:?}");
    assert_eq!(dev["group"]["window"]["granted"], json!(1));
}
