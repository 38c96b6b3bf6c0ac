//! The permission matrix: every endpoint that reads or changes an app or the platform,
//! called as the owner, a collaborator, an administrator and a stranger.
//!
//! | role | app endpoints | owner-only app endpoints | admin endpoints |
//! |---|---|---|---|
//! | owner | allowed | allowed | 403 |
//! | collaborator | allowed | 403 | 403 |
//! | admin | allowed | allowed | allowed |
//! | stranger | 403 (never 404) | 403 | 403 |
//!
//! Certificates (`/v2/certs/`) belong to the user who added them: the owner's
//! certificate is "owner-only" for the others, and attaching it needs the app too.

use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::{Value, json};

use super::{Api, start};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Owner,
    Collaborator,
    Admin,
    Stranger,
}

const ROLES: [Role; 4] = [Role::Owner, Role::Collaborator, Role::Admin, Role::Stranger];

/// Who an endpoint lets in.
#[derive(Debug, Clone, Copy)]
enum Who {
    /// Owner, collaborators, admins.
    Members,
    /// Owner and admins.
    Managers,
    /// Admins only.
    Admins,
    /// Any user.
    Anyone,
}

impl Who {
    fn allows(self, role: Role) -> bool {
        match self {
            Who::Members => role != Role::Stranger,
            Who::Managers => matches!(role, Role::Owner | Role::Admin),
            Who::Admins => role == Role::Admin,
            Who::Anyone => true,
        }
    }
}

/// One endpoint: `{app}` in the path is a fresh app of the owner's, with the
/// collaborator on it; `status` is what an allowed caller gets.
struct Case {
    method: Method,
    path: &'static str,
    body: Option<Value>,
    who: Who,
    status: u16,
}

fn case(method: Method, path: &'static str, body: Option<Value>, who: Who, status: u16) -> Case {
    Case { method, path, body, who, status }
}

fn cases() -> Vec<Case> {
    use Method as M;
    use Who::*;
    vec![
        case(M::GET, "/v2/apps/{app}/", None, Members, 200),
        case(M::POST, "/v2/apps/{app}/", Some(json!({"owner": "carol"})), Managers, 200),
        case(M::DELETE, "/v2/apps/{app}/", None, Managers, 204),
        case(M::GET, "/v2/apps/{app}/config/", None, Members, 200),
        case(M::POST, "/v2/apps/{app}/config/", Some(json!({"values": {"FOO": "1"}})), Members, 201),
        case(M::GET, "/v2/apps/{app}/builds/", None, Members, 200),
        case(M::GET, "/v2/apps/{app}/releases/", None, Members, 200),
        case(M::GET, "/v2/apps/{app}/releases/v1/", None, Members, 200),
        // v1 is the first release: there is nothing to roll back to.
        case(M::POST, "/v2/apps/{app}/releases/rollback/", None, Members, 400),
        // No build yet: nothing to scale or run (refused after the permission check).
        case(M::POST, "/v2/apps/{app}/scale/", Some(json!({"web": 1})), Members, 400),
        case(M::POST, "/v2/apps/{app}/run", Some(json!({"command": "true"})), Members, 400),
        case(M::POST, "/v2/apps/{app}/sessions", Some(json!({"command": ["true"]})), Members, 400),
        case(M::GET, "/v2/apps/{app}/pods/", None, Members, 200),
        case(M::POST, "/v2/apps/{app}/pods/restart/", None, Members, 200),
        case(M::GET, "/v2/apps/{app}/domains/", None, Members, 200),
        case(M::POST, "/v2/apps/{app}/domains/", Some(json!({"domain": "{app}.example.org"})), Members, 201),
        case(M::DELETE, "/v2/apps/{app}/domains/{app}", None, Members, 204),
        case(M::GET, "/v2/apps/{app}/logs", None, Members, 200),
        case(M::GET, "/v2/apps/{app}/logs/follow", None, Members, 200),
        case(M::GET, "/v2/apps/{app}/drains/", None, Members, 200),
        case(M::POST, "/v2/apps/{app}/drains/", Some(json!({"url": "syslog://127.0.0.1:9"})), Members, 201),
        // A drain back to the platform: refused, but only after the permission check.
        case(M::POST, "/v2/apps/{app}/drains/", Some(json!({"url": "syslog://localhost:{api_port}"})), Members, 400),
        case(M::GET, "/v2/apps/{app}/settings/", None, Members, 200),
        case(M::POST, "/v2/apps/{app}/settings/", Some(json!({"maintenance": true})), Members, 201),
        case(M::GET, "/v2/apps/{app}/tls/", None, Members, 200),
        case(M::POST, "/v2/apps/{app}/tls/", Some(json!({"https_enforced": true})), Members, 201),
        case(M::GET, "/v2/apps/{app}/whitelist/", None, Members, 200),
        case(M::POST, "/v2/apps/{app}/whitelist/", Some(json!({"addresses": ["10.0.0.0/8"]})), Members, 201),
        case(M::DELETE, "/v2/apps/{app}/whitelist/", Some(json!({"addresses": ["192.0.2.1"]})), Members, 422),
        case(M::GET, "/v2/apps/{app}/perms/", None, Members, 200),
        case(M::POST, "/v2/apps/{app}/perms/", Some(json!({"username": "carol"})), Managers, 201),
        case(M::DELETE, "/v2/apps/{app}/perms/bob", None, Managers, 204),
        case(M::GET, "/v2/users/", None, Admins, 200),
        case(M::GET, "/v2/nodes/", None, Admins, 200),
        case(M::PATCH, "/v2/users/carol/disable/", None, Admins, 204),
        case(M::PATCH, "/v2/users/carol/enable/", None, Admins, 204),
        case(M::GET, "/v2/admin/perms/", None, Admins, 200),
        case(M::POST, "/v2/admin/perms/", Some(json!({"username": "{app}-admin"})), Admins, 201),
        case(M::DELETE, "/v2/admin/perms/{app}-demoted", None, Admins, 204),
        // Everyone lists (their own) certificates and may add one.
        case(M::GET, "/v2/certs/", None, Anyone, 200),
        case(
            M::POST,
            "/v2/certs/",
            Some(json!({"name": "{app}-mine", "certificate": "{pem}", "key": "{key}"})),
            Anyone,
            201,
        ),
        // The owner's certificate `{app}-cert` (for *.example.org; `{app}.example.org`
        // is a domain of the app, attached in the detach case).
        case(M::GET, "/v2/certs/{app}-cert", None, Managers, 200),
        case(M::DELETE, "/v2/certs/{app}-cert", None, Managers, 204),
        case(M::POST, "/v2/certs/{app}-cert/domain/", Some(json!({"domain": "{app}.example.org"})), Managers, 201),
        case(M::DELETE, "/v2/certs/{app}-cert/domain/{app}.example.org", None, Managers, 204),
        // Add-ons (`{app}-db` is a ready add-on of the app; `{app}-other` another app of
        // the owner's with the collaborator on it) and the broker registry.
        case(M::GET, "/v2/services/", None, Anyone, 200),
        case(M::GET, "/v2/brokers/", None, Admins, 200),
        // Nothing answers on port 9: the admin's request reaches the broker and fails.
        case(M::POST, "/v2/brokers/", Some(json!({"name": "{app}-b", "url": "http://127.0.0.1:9"})), Admins, 502),
        case(M::DELETE, "/v2/brokers/{app}-none", None, Admins, 404),
        case(M::GET, "/v2/apps/{app}/addons/", None, Members, 200),
        case(M::POST, "/v2/apps/{app}/addons/", Some(json!({"service": "memory:sync"})), Members, 201),
        case(M::GET, "/v2/addons/{app}-db/", None, Members, 200),
        case(M::GET, "/v2/addons/{app}-db/wait?timeout=1", None, Members, 200),
        case(M::POST, "/v2/addons/{app}-db/attachments/", Some(json!({"app": "{app}-other"})), Members, 201),
        case(M::DELETE, "/v2/addons/{app}-db/attachments/{app}", None, Members, 200),
        case(M::DELETE, "/v2/addons/{app}-db/", None, Members, 204),
        // The update service (administrators only), on the update app `UPDATE_APP`.
        case(M::GET, "/v2/updates/apps/", None, Admins, 200),
        case(M::POST, "/v2/updates/apps/", Some(json!({"id": "{app}-updates", "name": "x"})), Admins, 201),
        case(M::GET, "/v2/updates/apps/deisd/", None, Admins, 200),
        case(M::POST, "/v2/updates/apps/deisd/channels/alpha/", Some(update_package()), Admins, 201),
        case(M::POST, "/v2/updates/apps/deisd/promote/", Some(json!({"from": "alpha", "to": "beta"})), Admins, 200),
        case(M::PUT, "/v2/updates/apps/deisd/groups/canary/", Some(json!({"channel": "alpha"})), Admins, 200),
        case(M::POST, "/v2/updates/apps/deisd/groups/beta/pause/", None, Admins, 200),
        case(M::POST, "/v2/updates/apps/deisd/groups/beta/resume/", None, Admins, 200),
        case(M::GET, "/v2/updates/apps/deisd/instances/?group=beta", None, Admins, 200),
    ]
}

/// The package the update cases publish (again and again: the same file is fine).
fn update_package() -> Value {
    json!({"version": "2.0.0", "url": "http://updates.example.org/", "name": "deisd", "size": 3, "sha256": "ab".repeat(32)})
}

struct Users {
    owner: String,
    collaborator: String,
    admin: String,
    stranger: String,
}

impl Users {
    fn token(&self, role: Role) -> &str {
        match role {
            Role::Owner => &self.owner,
            Role::Collaborator => &self.collaborator,
            Role::Admin => &self.admin,
            Role::Stranger => &self.stranger,
        }
    }
}

/// Status of a call (the body is read only when the answer is not a stream).
async fn status_of(api: &Api, method: Method, path: &str, token: &str, body: Option<Value>) -> (StatusCode, String) {
    let bytes = body.map(|b| serde_json::to_vec(&b).unwrap()).unwrap_or_default();
    let req = http::Request::builder()
        .method(method)
        .uri(format!("http://{}{path}", api.addr))
        .header("authorization", format!("token {token}"))
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(axum::body::Bytes::from(bytes)))
        .unwrap();
    let resp = api.client.request(req).await.unwrap();
    let status = resp.status();
    let body = tokio::time::timeout(Duration::from_millis(500), http_body_util::BodyExt::collect(resp.into_body()))
        .await
        .ok()
        .and_then(Result::ok)
        .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
        .unwrap_or_else(|| "(streaming)".into());
    (status, body)
}

/// Creates add-on `<app>-db` (plan `memory:sync`) for `app` and waits until it is ready.
async fn add_ready_addon(api: &Api, owner: &str, app: &str) {
    let body = json!({"service": "memory:sync", "as": format!("{app}-db")});
    let r = api.post(&format!("/v2/apps/{app}/addons/"), owner, body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    let r = api.get(&format!("/v2/addons/{app}-db/wait?timeout=10"), owner).await;
    assert_eq!(r.json()["state"], "ready", "{r:?}");
}

#[tokio::test]
async fn every_endpoint_lets_in_exactly_whom_it_should() {
    let api = start().await;
    let users = Users {
        admin: api.user("root").await,
        owner: api.user("alice").await,
        collaborator: api.user("bob").await,
        stranger: api.user("eve").await,
    };
    api.user("carol").await;
    // The update app the update cases work on, with a package on alpha to promote.
    let r = api.post("/v2/updates/apps/", &users.admin, json!({"id": "deisd", "name": "deisd"})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    let r = api.post("/v2/updates/apps/deisd/channels/alpha/", &users.admin, update_package()).await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    let wildcard = rcgen::generate_simple_self_signed(vec!["*.example.org".to_string()]).unwrap();
    let (pem, key) = (wildcard.cert.pem(), wildcard.signing_key.serialize_pem());
    let mut failures = Vec::new();
    for (n, case) in cases().into_iter().enumerate() {
        for role in ROLES {
            // A fresh app per call, so destructive calls don't affect the others.
            let app = format!("app{n}-{}", format!("{role:?}").to_lowercase());
            let r = api.post("/v2/apps/", &users.owner, json!({"id": app})).await;
            assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
            let r = api.post(&format!("/v2/apps/{app}/perms/"), &users.owner, json!({"username": "bob"})).await;
            assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
            // For the admin-demotion case: someone to demote.
            let demoted = format!("{app}-demoted");
            if case.path.contains("{app}-demoted") {
                api.user(&demoted).await;
                let r = api.post("/v2/admin/perms/", &users.admin, json!({"username": demoted})).await;
                assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
            }
            if case.body.as_ref().is_some_and(|b| b.to_string().contains("{app}-admin")) {
                api.user(&format!("{app}-admin")).await;
            }
            if case.path.contains("{app}-cert") {
                let cert = json!({"name": format!("{app}-cert"), "certificate": pem, "key": key});
                assert_eq!(api.post("/v2/certs/", &users.owner, cert).await.status, StatusCode::CREATED);
                let domain = json!({"domain": format!("{app}.example.org")});
                let r = api.post(&format!("/v2/apps/{app}/domains/"), &users.owner, domain.clone()).await;
                assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
                if case.method == Method::DELETE && case.path.contains("/domain/") {
                    let r = api.post(&format!("/v2/certs/{app}-cert/domain/"), &users.owner, domain).await;
                    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
                }
            }
            if case.path.contains("{app}-db") {
                add_ready_addon(&api, &users.owner, &app).await;
            }
            if case.body.as_ref().is_some_and(|b| b.to_string().contains("{app}-other")) {
                let other = format!("{app}-other");
                assert_eq!(api.post("/v2/apps/", &users.owner, json!({"id": other})).await.status, StatusCode::CREATED);
                let bob = json!({"username": "bob"});
                assert_eq!(
                    api.post(&format!("/v2/apps/{other}/perms/"), &users.owner, bob).await.status,
                    StatusCode::CREATED
                );
            }
            let path = case.path.replace("{app}", &app);
            // JSON-escaped PEM: fill in the JSON text, then parse.
            let body = case.body.as_ref().map(|b| {
                let text = b.to_string();
                let escaped = |s: &str| serde_json::to_string(s).unwrap().trim_matches('"').to_string();
                let text = text.replace("{pem}", &escaped(&pem)).replace("{key}", &escaped(&key));
                let text = text.replace("{api_port}", &api.addr.port().to_string());
                serde_json::from_str(&text.replace("{app}", &app)).unwrap()
            });

            let (status, text) = status_of(&api, case.method.clone(), &path, users.token(role), body).await;
            let expected = if case.who.allows(role) { case.status } else { 403 };
            if status.as_u16() != expected {
                failures.push(format!("{} {path} as {role:?}: {status} (expected {expected}): {text}", case.method));
            }
        }
    }
    assert!(failures.is_empty(), "{} wrong answers:\n{}", failures.len(), failures.join("\n"));
}

#[tokio::test]
async fn collaborators_see_the_app_in_their_list_and_lose_it_when_removed() {
    let api = start().await;
    let _root = api.user("root").await;
    let alice = api.user("alice").await;
    let bob = api.user("bob").await;
    assert_eq!(api.post("/v2/apps/", &alice, json!({"id": "shared"})).await.status, StatusCode::CREATED);
    let listed = |v: Value| v["results"].as_array().unwrap().iter().map(|a| a["id"].clone()).collect::<Vec<_>>();
    assert!(listed(api.get("/v2/apps/", &bob).await.json()).is_empty());
    assert_eq!(
        api.post("/v2/apps/shared/perms/", &alice, json!({"username": "bob"})).await.status,
        StatusCode::CREATED
    );
    assert_eq!(listed(api.get("/v2/apps/", &bob).await.json()), [json!("shared")]);
    assert_eq!(api.get("/v2/apps/shared/perms/", &bob).await.json(), json!({"users": ["bob"]}));
    let again = api.post("/v2/apps/shared/perms/", &alice, json!({"username": "bob"})).await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{again:?}");
    assert_eq!(again.json()["detail"], "bob is already a collaborator on shared");
    let owner = api.post("/v2/apps/shared/perms/", &alice, json!({"username": "alice"})).await;
    assert_eq!(owner.status, StatusCode::CONFLICT);
    let unknown = api.post("/v2/apps/shared/perms/", &alice, json!({"username": "nobody"})).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    let r = api.call(Method::DELETE, "/v2/apps/shared/perms/bob", Some(&alice), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(api.get("/v2/apps/shared/", &bob).await.status, StatusCode::FORBIDDEN, "403, not 404");
    let r = api.call(Method::DELETE, "/v2/apps/shared/perms/bob", Some(&alice), None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "not a collaborator any more");
}

#[tokio::test]
async fn disabled_users_can_not_log_in_nor_use_their_tokens_until_enabled() {
    let api = start().await;
    let root = api.user("root").await;
    let bob = api.user("bob").await;
    assert_eq!(api.get("/v2/auth/whoami/", &bob).await.status, StatusCode::OK);
    let r = api.call(Method::PATCH, "/v2/users/bob/disable/", Some(&root), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{r:?}");
    let r = api.get("/v2/auth/whoami/", &bob).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.json()["detail"], "User account is disabled.");
    let login = json!({"username": "bob", "password": "pw"});
    assert_eq!(
        api.call(Method::POST, "/v2/auth/login/", None, Some(login.clone())).await.status,
        StatusCode::UNAUTHORIZED
    );
    let users = api.get("/v2/users/", &root).await.json();
    let bob_row = users["results"].as_array().unwrap().iter().find(|u| u["username"] == "bob").unwrap().clone();
    assert_eq!(bob_row["is_active"], false);
    let r = api.call(Method::PATCH, "/v2/users/root/disable/", Some(&root), None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "admins can't lock themselves out: {r:?}");
    assert_eq!(
        api.call(Method::PATCH, "/v2/users/bob/enable/", Some(&root), None).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(api.get("/v2/auth/whoami/", &bob).await.status, StatusCode::OK, "the old token works again");
    assert_eq!(api.call(Method::POST, "/v2/auth/login/", None, Some(login)).await.status, StatusCode::OK);
}

#[tokio::test]
async fn the_last_administrator_stays_one() {
    let api = start().await;
    let root = api.user("root").await;
    api.user("bob").await;
    let r = api.call(Method::DELETE, "/v2/admin/perms/root", Some(&root), None).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{r:?}");
    assert!(r.json()["detail"].as_str().unwrap().contains("last active administrator"));
    let r = api.call(Method::DELETE, "/v2/auth/cancel/", Some(&root), None).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "cancelling the last admin is refused too: {r:?}");
    assert_eq!(api.post("/v2/admin/perms/", &root, json!({"username": "bob"})).await.status, StatusCode::CREATED);
    let admins = api.get("/v2/admin/perms/", &root).await.json();
    let names: Vec<&str> =
        admins["results"].as_array().unwrap().iter().map(|a| a["username"].as_str().unwrap()).collect();
    assert_eq!(names, ["bob", "root"]);
    assert_eq!(
        api.call(Method::DELETE, "/v2/admin/perms/root", Some(&root), None).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(api.get("/v2/users/", &root).await.status, StatusCode::FORBIDDEN, "root is no admin any more");
}

#[tokio::test]
async fn ssh_keys_belong_to_one_user_each() {
    let api = start().await;
    let alice = api.user("alice").await;
    let bob = api.user("bob").await;
    let public = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINW5R8RtYHiAX3r5dVVBw3NTlJwrlyHOujxFlgie4Yrw alice@laptop\n";
    let r = api.post("/v2/keys/", &alice, json!({"id": "alice@laptop", "public": public})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    assert_eq!(r.json()["fingerprint"], "SHA256:IvMPzMYbmjDFo7r/JVt55xtCbiDc96COsF8eGb5XjCg");
    assert_eq!(r.json()["owner"], "alice");
    let again = api.post("/v2/keys/", &bob, json!({"id": "mine", "public": public})).await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST);
    assert_eq!(again.json(), json!({"public": ["Public Key is already in use"]}));
    let bad = api.post("/v2/keys/", &bob, json!({"id": "x", "public": "ssh-ed25519 bm90IGEga2V5"})).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.json()["public"][0].as_str().unwrap().contains("not an SSH public key"), "{bad:?}");
    let listed = api.get("/v2/keys/", &bob).await.json();
    assert_eq!(listed["count"], 0, "bob sees only his own keys");
    let r = api.call(Method::DELETE, "/v2/keys/alice@laptop", Some(&bob), None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "nobody removes another user's key");
    let key = api.platform.user_by_key(&deis_core::PublicKey::parse(public).unwrap().blob).await.unwrap();
    assert_eq!(key.map(|u| u.username).as_deref(), Some("alice"));
    let r = api.call(Method::DELETE, "/v2/keys/alice@laptop", Some(&alice), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = api.post("/v2/keys/", &bob, json!({"id": "mine", "public": public})).await;
    assert_eq!(r.status, StatusCode::CREATED, "a removed key can be registered again: {r:?}");
}

#[tokio::test]
async fn settings_change_what_they_say_and_nothing_twice() {
    let api = start().await;
    let alice = api.user("alice").await;
    assert_eq!(api.post("/v2/apps/", &alice, json!({"id": "hello"})).await.status, StatusCode::CREATED);
    let s = api.get("/v2/apps/hello/settings/", &alice).await.json();
    assert_eq!((s["maintenance"].clone(), s["routable"].clone()), (json!(false), json!(true)));
    let r = api.post("/v2/apps/hello/settings/", &alice, json!({"maintenance": true, "label": {"team": "web"}})).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!((r.json()["maintenance"].clone(), r.json()["label"].clone()), (json!(true), json!({"team": "web"})));
    let r = api.post("/v2/apps/hello/settings/", &alice, json!({"maintenance": true})).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.json()["detail"], "alice changed nothing - release stopped");
    let r = api.post("/v2/apps/hello/whitelist/", &alice, json!({"addresses": ["10.1.2.3/8", "192.0.2.1"]})).await;
    assert_eq!(r.json(), json!({"addresses": ["10.0.0.0/8", "192.0.2.1"]}));
    let bad = api.post("/v2/apps/hello/whitelist/", &alice, json!({"addresses": ["10.0.0.0/33"]})).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{bad:?}");
    let r = api
        .call(Method::DELETE, "/v2/apps/hello/whitelist/", Some(&alice), Some(json!({"addresses": ["10.0.0.0/8"]})))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(api.get("/v2/apps/hello/whitelist/", &alice).await.json(), json!({"addresses": ["192.0.2.1"]}));
    let releases = api.get("/v2/apps/hello/releases/", &alice).await.json();
    assert_eq!(releases["count"], 1, "settings make no release");
}

/// A certificate for `names`, valid from `days_from_now` for `days`.
fn certificate(names: &[&str], days_from_now: i64, days: i64) -> (String, String) {
    let mut params = rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let at = |d: i64| rcgen::date_time_ymd(1970, 1, 1) + Duration::from_secs(((now / 86_400 + d) * 86_400) as u64);
    params.not_before = at(days_from_now);
    params.not_after = at(days_from_now + days);
    params.distinguished_name.push(rcgen::DnType::CommonName, names[0]);
    let key = rcgen::KeyPair::generate().unwrap();
    (params.self_signed(&key).unwrap().pem(), key.serialize_pem())
}

#[tokio::test]
async fn certificates_are_checked_owned_and_attached_only_where_they_fit() {
    let api = start().await;
    let root = api.user("root").await;
    let alice = api.user("alice").await;
    let bob = api.user("bob").await;
    let eve = api.user("eve").await;
    assert_eq!(api.post("/v2/apps/", &alice, json!({"id": "shop"})).await.status, StatusCode::CREATED);
    assert_eq!(api.post("/v2/apps/shop/perms/", &alice, json!({"username": "bob"})).await.status, StatusCode::CREATED);
    for d in ["www.shop.example", "api.shop.example"] {
        let r = api.post("/v2/apps/shop/domains/", &alice, json!({"domain": d})).await;
        assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    }
    let (pem, key) = certificate(&["www.shop.example"], -1, 90);
    let (_, other_key) = certificate(&["x.example"], -1, 90);

    let r = api.post("/v2/certs/", &alice, json!({"name": "www", "certificate": "junk", "key": key})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.json()["certificate"][0].as_str().unwrap().starts_with("Could not load certificate"), "{r:?}");
    let r = api.post("/v2/certs/", &alice, json!({"name": "www", "certificate": pem, "key": other_key})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.json()["key"][0].as_str().unwrap().contains("does not match"), "{r:?}");
    let r = api.post("/v2/certs/", &alice, json!({"name": "Bad_Name", "certificate": pem, "key": key})).await;
    assert_eq!(r.json(), json!({"name": ["Can only contain a-z (lowercase), 0-9 and hyphens"]}));

    let r = api.post("/v2/certs/", &alice, json!({"name": "www", "certificate": pem, "key": key})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    let shown = r.json();
    assert_eq!(
        (shown["common_name"].clone(), shown["san"].clone()),
        (json!("www.shop.example"), json!(["www.shop.example"]))
    );
    assert_eq!(
        (shown["owner"].clone(), shown["expired"].clone(), shown["domains"].clone()),
        (json!("alice"), json!(false), json!([]))
    );
    assert!(shown["id"].as_u64().unwrap() > 0);
    for time in ["expires", "starts", "created"] {
        shown[time].as_str().unwrap().parse::<deis_core::time::Timestamp>().unwrap();
    }
    assert!(shown.get("key").is_none() && !r.body.windows(7).any(|w| w == b"PRIVATE"), "the key never leaves");
    let again = api.post("/v2/certs/", &alice, json!({"name": "www", "certificate": pem, "key": key})).await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST, "names are unique");

    // An expired certificate is accepted and shown as expired.
    let (old, old_key) = certificate(&["*.shop.example"], -400, 30);
    let r = api.post("/v2/certs/", &bob, json!({"name": "old", "certificate": old, "key": old_key})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    assert_eq!(r.json()["expired"], true);

    // Owner-scoped lists; admins see all.
    let names = |v: Value| v["results"].as_array().unwrap().iter().map(|c| c["name"].clone()).collect::<Vec<_>>();
    assert_eq!(names(api.get("/v2/certs/", &alice).await.json()), [json!("www")]);
    assert_eq!(names(api.get("/v2/certs/", &bob).await.json()), [json!("old")]);
    assert_eq!(names(api.get("/v2/certs/", &root).await.json()), [json!("old"), json!("www")]);
    assert_eq!(api.get("/v2/certs/www", &eve).await.status, StatusCode::FORBIDDEN);
    assert_eq!(api.get("/v2/certs/nope", &eve).await.status, StatusCode::NOT_FOUND);

    // Attaching: the names must cover the domain, the domain must exist and be usable.
    let attach = |cert: &str| format!("/v2/certs/{cert}/domain/");
    let r = api.post(&attach("www"), &alice, json!({"domain": "api.shop.example"})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.json()["domain"][0].as_str().unwrap().contains("not valid for api.shop.example"), "{r:?}");
    assert_eq!(api.post(&attach("www"), &alice, json!({"domain": "nope.example"})).await.status, StatusCode::NOT_FOUND);
    let r = api.post(&attach("www"), &alice, json!({"domain": "www.shop.example"})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    assert_eq!(api.get("/v2/certs/www", &alice).await.json()["domains"], json!(["www.shop.example"]));
    // The collaborator attaches their own wildcard to the app's other domain; one
    // certificate per domain.
    let r = api.post(&attach("old"), &bob, json!({"domain": "www.shop.example"})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.json()["domain"][0].as_str().unwrap().contains("already has certificate www"), "{r:?}");
    assert_eq!(api.post(&attach("old"), &bob, json!({"domain": "api.shop.example"})).await.status, StatusCode::CREATED);
    // A stranger's certificate can't be attached to someone else's app.
    let (eve_pem, eve_key) = certificate(&["*.shop.example"], -1, 90);
    let r = api.post("/v2/certs/", &eve, json!({"name": "eve", "certificate": eve_pem, "key": eve_key})).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(
        api.post(&attach("eve"), &eve, json!({"domain": "api.shop.example"})).await.status,
        StatusCode::FORBIDDEN
    );

    // Removing the domain drops its attachment; removing a certificate drops its own.
    let r = api.call(Method::DELETE, "/v2/apps/shop/domains/api.shop.example", Some(&alice), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(api.get("/v2/certs/old", &bob).await.json()["domains"], json!([]));
    let r = api.call(Method::DELETE, "/v2/certs/www/domain/www.shop.example", Some(&alice), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = api.call(Method::DELETE, "/v2/certs/www/domain/www.shop.example", Some(&alice), None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "not attached any more");
    assert_eq!(api.call(Method::DELETE, "/v2/certs/www", Some(&alice), None).await.status, StatusCode::NO_CONTENT);
    assert_eq!(api.get("/v2/certs/www", &alice).await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn source_uploads_are_for_members_and_never_take_a_strangers_turn() {
    // One upload at a time: a stranger's refused upload must not hold the slot.
    let api = super::start_with(super::ApiLimits { max_concurrent_uploads: 1, ..Default::default() }).await;
    let users = Users {
        admin: api.user("root").await,
        owner: api.user("alice").await,
        collaborator: api.user("bob").await,
        stranger: api.user("eve").await,
    };
    assert_eq!(api.post("/v2/apps/", &users.owner, json!({"id": "up"})).await.status, StatusCode::CREATED);
    let r = api.post("/v2/apps/up/perms/", &users.owner, json!({"username": "bob"})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    for role in [Role::Stranger, Role::Owner, Role::Stranger, Role::Collaborator, Role::Admin] {
        let body = super::tarball("web: true\n");
        let r = api.send(Method::POST, "/v2/apps/up/builds/", Some(users.token(role)), "application/gzip", body).await;
        let expected = if role == Role::Stranger { StatusCode::FORBIDDEN } else { StatusCode::CREATED };
        assert_eq!(r.status, expected, "{role:?}: {r:?}");
    }
}
