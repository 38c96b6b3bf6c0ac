//! `deis push` against a real `docker-registry` (deis-test-support), with and without
//! htpasswd auth: images built here (OCI layouts and docker-archives written by the
//! test), blob uploads counted in the registry's access log, interrupted pushes,
//! corrupt inputs, and the permission matrix of the push endpoints.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deis_core::artifact::ArtifactStore;
use deis_core::controller::{Controller, ControllerConfig, RegistrationMode};
use deis_core::scheduler::{LocalScheduler, LocalSchedulerConfig};
use deis_core::store::RedbStore;
use deis_sdk::controller::{ApiLimits, PlatformRegistry, push_routes, router};
use deis_sdk::registry::image::{Blob, LocalImage};
use deis_sdk::registry::push::{BlobOutcome, PushProgress, PushTarget, push_image};
use deis_sdk::registry::{ImageError, PushError, RegistryAddress, RegistryClient, RegistryLogin};
use deis_test_support::http::Request;
use deis_test_support::image::{self as images, layer, sha256};
use deis_test_support::registry::DockerRegistry;
use deis_test_support::service::Service;
use serde_json::{Value, json};

const CMD: &str = "sleep 1000";

fn sha(data: &[u8]) -> String {
    sha256(data)
}

fn oci_layout(dir: &Path, layers: &[Vec<u8>]) -> String {
    images::oci_layout(dir, layers, CMD)
}

fn docker_archive(path: &Path, layers: &[Vec<u8>]) {
    images::docker_archive(path, layers, CMD)
}

/// Records outcomes; optionally reports when a given number of blobs are finished.
#[derive(Default)]
struct Record {
    finished: Mutex<Vec<(String, BlobOutcome)>>,
    sent: Mutex<u64>,
    notify: Option<(usize, tokio::sync::mpsc::UnboundedSender<()>)>,
}

impl PushProgress for Record {
    fn started(&self, _: &Blob) {}
    fn sent(&self, _: &Blob, bytes: u64) {
        *self.sent.lock().unwrap() += bytes;
    }
    fn finished(&self, blob: &Blob, outcome: &BlobOutcome) {
        let mut f = self.finished.lock().unwrap();
        f.push((blob.digest().to_string(), outcome.clone()));
        if let Some((n, tx)) = &self.notify
            && f.len() == *n
        {
            let _ = tx.send(());
        }
    }
}

fn target(registry: &DockerRegistry, repository: &str, login: Option<(&str, &str)>) -> PushTarget {
    let address = RegistryAddress::parse(&registry.url()).unwrap();
    let login = login.map(|(u, p)| RegistryLogin { username: u.into(), password: p.into() });
    PushTarget { client: RegistryClient::new(address, login), repository: repository.into(), mount_from: vec![] }
}

fn open(path: &Path) -> LocalImage {
    LocalImage::open(path).unwrap()
}

fn three_layers() -> Vec<Vec<u8>> {
    vec![layer("a", 300_000, b'a'), layer("b", 70_000, b'b'), layer("c", 5_000, b'c')]
}

#[tokio::test]
async fn a_push_uploads_each_blob_once_and_a_second_push_uploads_none() {
    let Some(registry) = DockerRegistry::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let layers = three_layers();
    let digest = oci_layout(dir.path(), &layers);
    let image = open(dir.path());
    assert_eq!(image.digest(), digest, "an OCI layout's manifest is pushed as it is");
    let t = target(&registry, "hello", None);
    let first = Arc::new(Record::default());
    let report = push_image(&image, &t, first.clone()).await.unwrap();
    assert_eq!(report.digest, digest);
    assert_eq!(report.reference, format!("{}/hello@{digest}", registry.addr()));
    assert!(report.blobs.iter().all(|(_, o)| *o == BlobOutcome::Uploaded), "{:?}", report.blobs);
    assert_eq!(registry.blob_puts(), 4, "three layers and the config: {}", registry.log());
    assert_eq!(*first.sent.lock().unwrap(), image.size(), "progress counts every byte");
    assert!(t.client.has_manifest("hello", &digest).await.unwrap());

    let again = push_image(&image, &t, Arc::new(Record::default())).await.unwrap();
    assert!(again.blobs.iter().all(|(_, o)| *o == BlobOutcome::Existed), "{:?}", again.blobs);
    assert_eq!(registry.blob_puts(), 4, "the second push uploaded a blob");
}

#[tokio::test]
async fn blobs_another_repository_has_are_mounted_not_uploaded() {
    let Some(registry) = DockerRegistry::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    oci_layout(dir.path(), &three_layers());
    let image = open(dir.path());
    push_image(&image, &target(&registry, "first", None), Arc::new(Record::default())).await.unwrap();
    let puts = registry.blob_puts();
    let mut t = target(&registry, "second", None);
    t.mount_from = vec!["nothing-here".into(), "first".into()];
    let report = push_image(&image, &t, Arc::new(Record::default())).await.unwrap();
    assert!(report.blobs.iter().all(|(_, o)| *o == BlobOutcome::Mounted("first".into())), "{:?}", report.blobs);
    assert_eq!(registry.blob_puts(), puts, "a mounted blob was uploaded");
    assert!(t.client.has_manifest("second", &report.digest).await.unwrap());
}

#[tokio::test]
async fn a_push_interrupted_halfway_completes_when_run_again() {
    let Some(registry) = DockerRegistry::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    // One big layer still uploading when the push is stopped after the small ones.
    let layers = vec![layer("big", 64 << 20, b'x'), layer("s1", 1000, b'1'), layer("s2", 2000, b'2')];
    let digest = oci_layout(dir.path(), &layers);
    let image = Arc::new(open(dir.path()));
    let t = target(&registry, "resumed", None);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let record = Arc::new(Record { notify: Some((2, tx)), ..Default::default() });
    let task = {
        let (image, t, record) = (image.clone(), t.clone(), record.clone());
        tokio::spawn(async move { push_image(&image, &t, record).await })
    };
    tokio::time::timeout(Duration::from_secs(60), rx.recv()).await.expect("two blobs finished");
    task.abort();
    let _ = task.await;
    assert!(!t.client.has_manifest("resumed", &digest).await.unwrap(), "an interrupted push left a manifest");
    let done: Vec<String> = record.finished.lock().unwrap().iter().map(|(d, _)| d.clone()).collect();

    // What the registry holds now: the blobs the push finished, and maybe one whose last
    // request the registry completed just as the push was stopped.
    let stored = |d: &str| {
        let hex = d.trim_start_matches("sha256:");
        registry.data_dir().join("docker/registry/v2/blobs/sha256").join(&hex[..2]).join(hex).join("data").exists()
    };
    let held: Vec<String> = image.blobs().map(|b| b.digest().to_string()).filter(|d| stored(d)).collect();
    assert!(done.iter().all(|d| held.contains(d)), "finished blobs are stored: {done:?} {held:?}");

    let report = push_image(&image, &t, Arc::new(Record::default())).await.unwrap();
    for (d, outcome) in &report.blobs {
        let expected = if held.contains(d) { BlobOutcome::Existed } else { BlobOutcome::Uploaded };
        assert_eq!(*outcome, expected, "{d}: held before the second push {}", held.contains(d));
    }
    assert!(t.client.has_manifest("resumed", &digest).await.unwrap());
}

#[tokio::test]
async fn htpasswd_registries_take_the_right_password_and_refuse_a_wrong_one() {
    let Some(registry) = DockerRegistry::start_with_htpasswd("deis", "s3cret") else { return };
    let dir = tempfile::tempdir().unwrap();
    oci_layout(dir.path(), &three_layers());
    let image = open(dir.path());
    let wrong = target(&registry, "locked", Some(("deis", "wrong")));
    let e = push_image(&image, &wrong, Arc::new(Record::default())).await.unwrap_err();
    assert!(matches!(e, PushError::Unauthorized { .. }), "{e:?}");
    assert!(e.to_string().contains("refused the credentials of deis"), "{e}");
    let anonymous = target(&registry, "locked", None);
    assert!(matches!(
        push_image(&image, &anonymous, Arc::new(Record::default())).await,
        Err(PushError::Unauthorized { .. })
    ));
    assert_eq!(registry.blob_puts(), 0);
    let right = target(&registry, "locked", Some(("deis", "s3cret")));
    let report = push_image(&image, &right, Arc::new(Record::default())).await.unwrap();
    assert!(right.client.has_manifest("locked", &report.digest).await.unwrap());
}

#[tokio::test]
async fn docker_archives_push_and_truncated_ones_are_refused() {
    let Some(registry) = DockerRegistry::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("image.tar");
    docker_archive(&path, &three_layers());
    let image = open(&path);
    assert_eq!(image.layers.len(), 3);
    let t = target(&registry, "archived", None);
    let report = push_image(&image, &t, Arc::new(Record::default())).await.unwrap();
    assert!(t.client.has_manifest("archived", &report.digest).await.unwrap());

    let bytes = std::fs::read(&path).unwrap();
    for cut in [bytes.len() / 3, bytes.len() - 1500, 700] {
        let truncated = dir.path().join(format!("cut{cut}.tar"));
        std::fs::write(&truncated, &bytes[..cut]).unwrap();
        let e = LocalImage::open(&truncated).unwrap_err();
        assert!(matches!(e, ImageError::Truncated(_) | ImageError::MissingBlob(_)), "cut at {cut}: {e:?}");
    }
    let garbage = dir.path().join("garbage.tar");
    std::fs::write(&garbage, vec![7u8; 4096]).unwrap();
    assert!(LocalImage::open(&garbage).is_err());
}

#[tokio::test]
async fn corrupt_images_leave_nothing_behind() {
    let Some(registry) = DockerRegistry::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let layers = three_layers();
    let digest = oci_layout(dir.path(), &layers);
    // Same size, other bytes: only the registry's digest check can tell.
    let victim = dir.path().join("blobs/sha256").join(sha(&layers[1]).trim_start_matches("sha256:"));
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes[600] ^= 0xff;
    std::fs::write(&victim, &bytes).unwrap();
    let t = target(&registry, "corrupt", None);
    let e = push_image(&open(dir.path()), &t, Arc::new(Record::default())).await.unwrap_err();
    assert!(matches!(&e, PushError::DigestMismatch(d) if *d == sha(&layers[1])), "{e:?}");
    assert!(e.to_string().contains("does not match its digest"), "{e}");
    assert!(!t.client.has_manifest("corrupt", &digest).await.unwrap(), "a corrupt push left a manifest");

    // A manifest naming a blob the layout lacks is refused before anything is sent.
    std::fs::remove_file(&victim).unwrap();
    let e = LocalImage::open(dir.path()).unwrap_err();
    assert!(matches!(&e, ImageError::MissingBlob(d) if d.contains(&sha(&layers[1]))), "{e:?}");
}

// ---- the push endpoints --------------------------------------------------------------

struct Api {
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

async fn api(registry: &DockerRegistry) -> Api {
    let dir = tempfile::tempdir().unwrap();
    let scheduler = LocalScheduler::new(LocalSchedulerConfig::new(dir.path().join("scheduler"))).await.unwrap();
    let controller = Controller::new(ControllerConfig {
        store: RedbStore::in_memory(),
        scheduler,
        artifacts: ArtifactStore::new(dir.path()),
        domain: "example.test".into(),
        registration: RegistrationMode::Enabled,
        logs: None,
        policy: Default::default(),
    });
    let platform = PlatformRegistry::new(RegistryAddress::parse(&registry.url()).unwrap(), None);
    let app =
        router(controller.clone(), ApiLimits::default()).merge(push_routes(controller, ApiLimits::default(), platform));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Api { addr, _dir: dir }
}

impl Api {
    async fn call(&self, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
        let mut req = Request::new(method, path).header("Content-Type", "application/json");
        if let Some(t) = token {
            req = req.header("Authorization", &format!("token {t}"));
        }
        if let Some(b) = body {
            req = req.body(b.to_string());
        }
        let r = req.send_async(self.addr).await.unwrap();
        (r.status, serde_json::from_str(&r.body).unwrap_or(Value::Null))
    }

    async fn user(&self, name: &str) -> String {
        let creds = json!({"username": name, "password": "pw", "email": ""});
        assert_eq!(self.call("POST", "/v2/auth/register/", None, Some(creds.clone())).await.0, 201);
        self.call("POST", "/v2/auth/login/", None, Some(creds)).await.1["token"].as_str().unwrap().to_string()
    }
}

/// Owner, collaborator and admin may ask where to push and build what they pushed;
/// a stranger gets 403 on both; a digest the registry lacks is a 400.
#[tokio::test]
async fn push_endpoints_let_in_the_app_members_only() {
    let Some(registry) = DockerRegistry::start() else { return };
    let api = api(&registry).await;
    let admin = api.user("root").await; // the first user is an admin
    let owner = api.user("alice").await;
    let collaborator = api.user("bob").await;
    let stranger = api.user("eve").await;
    let dir = tempfile::tempdir().unwrap();
    oci_layout(dir.path(), &three_layers());
    let image = open(dir.path());
    for (role, token, allowed) in [
        ("owner", &owner, true),
        ("collaborator", &collaborator, true),
        ("admin", &admin, true),
        ("stranger", &stranger, false),
    ] {
        let app = format!("push-{role}");
        assert_eq!(api.call("POST", "/v2/apps/", Some(&owner), Some(json!({"id": app}))).await.0, 201);
        let perms = json!({"username": "bob"});
        assert_eq!(api.call("POST", &format!("/v2/apps/{app}/perms/"), Some(&owner), Some(perms)).await.0, 201);
        let (status, grant) = api.call("GET", &format!("/v2/apps/{app}/push/"), Some(token), None).await;
        assert_eq!(status, if allowed { 200 } else { 403 }, "GET push as {role}: {grant}");
        if allowed {
            assert_eq!(grant["repository"], app.as_str());
            assert_eq!(grant["registry"], registry.url());
        }
        let report = push_image(&image, &target(&registry, &app, None), Arc::new(Record::default())).await.unwrap();
        let body = json!({"digest": report.digest});
        let (status, build) = api.call("POST", &format!("/v2/apps/{app}/push/"), Some(token), Some(body)).await;
        assert_eq!(status, if allowed { 201 } else { 403 }, "POST push as {role}: {build}");
        if allowed {
            assert_eq!(build["image"], report.reference.as_str(), "the build names the image by digest");
        }
    }
    // Nothing pushed under that digest: no build.
    let missing = json!({"digest": format!("sha256:{}", "0".repeat(64))});
    let (status, body) = api.call("POST", "/v2/apps/push-owner/push/", Some(&owner), Some(missing)).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("push it first"), "{body}");
    let (_, builds) = api.call("GET", "/v2/apps/push-owner/builds/", Some(&owner), None).await;
    assert_eq!(builds["count"], 1, "{builds}");
    let (status, _) = api.call("GET", "/v2/apps/push-owner/push/", None, None).await;
    assert_eq!(status, 401);
}
