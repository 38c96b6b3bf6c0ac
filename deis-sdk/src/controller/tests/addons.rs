//! Add-ons through the API: credentials into the app's config as a new release, never in
//! release summaries; attach, detach, destroy; user-provided services.

use http::{Method, StatusCode};
use serde_json::{Value, json};

use super::{Api, start};

async fn config(api: &Api, token: &str, app: &str) -> Value {
    api.get(&format!("/v2/apps/{app}/config/"), token).await.json()["values"].clone()
}

async fn summaries(api: &Api, token: &str, app: &str) -> String {
    api.get(&format!("/v2/apps/{app}/releases/"), token).await.json().to_string()
}

#[tokio::test]
async fn addons_put_credentials_in_config_and_take_them_out() {
    let api = start().await;
    let _root = api.user("root").await;
    let alice = api.user("alice").await;
    for app in ["web", "worker"] {
        assert_eq!(api.post("/v2/apps/", &alice, json!({"id": app})).await.status, StatusCode::CREATED);
    }
    let services = api.get("/v2/services/", &alice).await.json();
    let names: Vec<&str> = services.as_array().unwrap().iter().map(|s| s["service"].as_str().unwrap()).collect();
    assert!(names.contains(&"memory") && names.contains(&"user-provided"), "{services}");

    let r = api.post("/v2/apps/web/addons/", &alice, json!({"service": "memory:async", "as": "cache"})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    assert_eq!(r.json()["state"], "provisioning");
    let ready = api.get("/v2/addons/cache/wait?timeout=30", &alice).await.json();
    assert_eq!(ready["state"], "ready", "{ready}");
    let url = config(&api, &alice, "web").await["CACHE_URL"].as_str().unwrap().to_string();
    assert!(url.starts_with("memory://"), "{url}");
    let releases = summaries(&api, &alice, "web").await;
    assert!(releases.contains("CACHE_URL") && !releases.contains(&url), "release text shows the URL: {releases}");

    // A second app gets credentials of its own.
    let r = api.post("/v2/addons/cache/attachments/", &alice, json!({"app": "worker"})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    let other = config(&api, &alice, "worker").await["MEMORY_URL"].as_str().unwrap().to_string();
    assert_ne!(other, url);
    let listed = api.get("/v2/apps/worker/addons/", &alice).await.json();
    assert_eq!(listed[0]["name"], "cache");
    // Destroy is refused while another app is attached; detach first.
    assert_eq!(api.call(Method::DELETE, "/v2/addons/cache/", Some(&alice), None).await.status, StatusCode::CONFLICT);
    let r = api.call(Method::DELETE, "/v2/addons/cache/attachments/worker", Some(&alice), None).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert!(config(&api, &alice, "worker").await.get("MEMORY_URL").is_none());
    assert_eq!(api.call(Method::DELETE, "/v2/addons/cache/", Some(&alice), None).await.status, StatusCode::NO_CONTENT);
    assert!(config(&api, &alice, "web").await.get("CACHE_URL").is_none());
    assert_eq!(api.get("/v2/addons/cache/", &alice).await.status, StatusCode::NOT_FOUND);

    // A variable that is set already is not overwritten.
    let r = api.post("/v2/apps/web/config/", &alice, json!({"values": {"MEMORY_URL": "mine"}})).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = api.post("/v2/apps/web/addons/", &alice, json!({"service": "memory:sync"})).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{r:?}");
    // Unknown services and plans are refused with what to do.
    let r = api.post("/v2/apps/web/addons/", &alice, json!({"service": "nosuch:plan"})).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{r:?}");
    let r = api.post("/v2/apps/web/addons/", &alice, json!({"service": "memory:huge"})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
    assert!(r.json()["detail"].as_str().unwrap().contains("sync, async"));
}

#[tokio::test]
async fn user_provided_services_hand_out_the_given_credentials() {
    let api = start().await;
    let alice = api.user("alice").await;
    assert_eq!(api.post("/v2/apps/", &alice, json!({"id": "web"})).await.status, StatusCode::CREATED);
    let body = json!({"service": "user-provided", "as": "mail", "parameters": {"url": "smtp://u:p@mail.example.com"}});
    let r = api.post("/v2/apps/web/addons/", &alice, body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    assert!(r.json().get("parameters").is_none(), "parameters may hold secrets: never shown");
    assert_eq!(api.get("/v2/addons/mail/wait?timeout=30", &alice).await.json()["state"], "ready");
    assert_eq!(config(&api, &alice, "web").await["MAIL_URL"], "smtp://u:p@mail.example.com");
    // Without credentials the provision fails and says why.
    let r = api.post("/v2/apps/web/addons/", &alice, json!({"service": "user-provided", "as": "empty"})).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let failed = api.get("/v2/addons/empty/wait?timeout=30", &alice).await.json();
    assert_eq!(failed["state"], "failed", "{failed}");
    assert!(failed["message"].as_str().unwrap().contains("-p url="), "{failed}");
}
