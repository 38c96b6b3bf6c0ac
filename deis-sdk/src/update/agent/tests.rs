//! The agent against a real Omaha server and a real file server on loopback; the
//! process applier with real processes (`python3 -m http.server` as the service).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::response::IntoResponse;
use deis_core::store::RedbStore;
use deis_core::time::Timestamp;
use deis_core::update::{InstanceStatus, Package, StoreUpdateChannel, UpdateChannel};
use http::{HeaderMap, StatusCode, header};
use sha2::Digest;

use super::*;

const APP: &str = "{e96281a6-d1af-4bde-9a0a-97b76e56dc57}";

/// Serves `/files/pkg` with `Range` support, remembering the ranges asked for.
#[derive(Debug, Default)]
struct Files {
    content: Vec<u8>,
    ranges: Mutex<Vec<String>>,
}

async fn serve_file(State(files): State<Arc<Files>>, headers: HeaderMap) -> axum::response::Response {
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok()).map(str::to_owned);
    if let Some(r) = &range {
        files.ranges.lock().unwrap().push(r.clone());
        let from: usize = r.trim_start_matches("bytes=").trim_end_matches('-').parse().unwrap();
        return (StatusCode::PARTIAL_CONTENT, files.content[from..].to_vec()).into_response();
    }
    files.content.clone().into_response()
}

struct Setup {
    addr: SocketAddr,
    channel: Arc<dyn UpdateChannel>,
    files: Arc<Files>,
    dir: tempfile::TempDir,
}

/// An Omaha server with `APP`, and a file server, on one loopback listener.
async fn setup(content: &[u8]) -> Setup {
    let channel: Arc<dyn UpdateChannel> = Arc::new(StoreUpdateChannel::new(RedbStore::in_memory()));
    channel.create_app(APP, "deisd").await.unwrap();
    let files = Arc::new(Files { content: content.to_vec(), ranges: Mutex::default() });
    let app = crate::update::OmahaServer::new(channel.clone())
        .routes()
        .merge(axum::Router::new().route("/files/pkg", axum::routing::get(serve_file)).with_state(files.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Setup { addr, channel, files, dir: tempfile::tempdir().unwrap() }
}

impl Setup {
    async fn publish(&self, version: &str, sha256_of: &[u8]) {
        let package = Package {
            version: version.into(),
            url: format!("http://{}/files/", self.addr),
            name: "pkg".into(),
            size: self.files.content.len() as u64,
            sha256: hex::encode(sha2::Sha256::digest(sha256_of)),
            sha1: None,
            published: Timestamp::now(),
        };
        self.channel.publish(APP, "stable", package).await.unwrap();
    }

    fn agent(&self, instance: &str, applier: Arc<dyn Applier>) -> Agent {
        let server = format!("http://{}/v1/update/", self.addr);
        let config = AgentConfig::new(&server, APP, "stable", instance, "1.0.0", self.dir.path().join(instance));
        Agent::new(config, applier)
    }
}

/// Records what it was given; fails with `fail` when set.
#[derive(Debug, Default)]
struct Recording {
    applied: Mutex<Vec<(Vec<u8>, String)>>,
    fail: Option<i64>,
}

#[async_trait]
impl Applier for Recording {
    async fn apply(&self, file: &Path, version: &str) -> Result<(), ApplyError> {
        self.applied.lock().unwrap().push((std::fs::read(file).unwrap(), version.into()));
        match self.fail {
            Some(code) => Err(ApplyError { code, message: "unhealthy".into() }),
            None => Ok(()),
        }
    }
}

#[tokio::test]
async fn a_cycle_downloads_verifies_applies_and_reports() {
    let content = b"the new deisd".repeat(1000);
    let s = setup(&content).await;
    let recording = Arc::new(Recording::default());
    let mut agent = s.agent("r1", recording.clone());
    assert_eq!(agent.cycle().await.unwrap(), Cycle::NoUpdate, "nothing published yet");
    s.publish("2.0.0", &content).await;
    assert_eq!(agent.cycle().await.unwrap(), Cycle::Updated("2.0.0".into()));
    assert_eq!(*recording.applied.lock().unwrap(), [(content.clone(), "2.0.0".to_string())]);
    assert_eq!(agent.version(), "2.0.0");
    let i = &s.channel.instances(APP, None).await.unwrap()[0];
    let kinds: Vec<_> = i.events.iter().map(|e| (e.event_type, e.result)).collect();
    assert_eq!(kinds, [(13, 1), (14, 1), (800, 1), (3, 1)]);
    assert_eq!((i.version.as_str(), i.status), ("2.0.0", InstanceStatus::Complete));
    assert_eq!(agent.cycle().await.unwrap(), Cycle::NoUpdate, "up to date");
}

#[tokio::test]
async fn a_package_with_the_wrong_hash_is_never_applied_and_halts_the_group() {
    let content = b"tampered".to_vec();
    let s = setup(&content).await;
    s.publish("2.0.0", b"what was published").await;
    let recording = Arc::new(Recording::default());
    let e = s.agent("r1", recording.clone()).cycle().await.unwrap_err();
    assert!(matches!(e, AgentError::Verification(_)), "{e}");
    assert!(recording.applied.lock().unwrap().is_empty(), "never applied");
    assert!(!s.dir.path().join("r1/pkg.2.0.0.part").exists(), "the bad file is deleted");
    let g = s.channel.group(APP, "stable").await.unwrap().unwrap();
    assert!(g.halted.as_deref().unwrap().contains("error 101"), "{g:?}");
    // Halted: the next replica is not offered the update.
    assert_eq!(s.agent("r2", recording.clone()).cycle().await.unwrap(), Cycle::NoUpdate);
}

#[tokio::test]
async fn a_failed_apply_is_reported_with_its_code() {
    let content = b"new".to_vec();
    let s = setup(&content).await;
    s.publish("2.0.0", &content).await;
    let failing = Arc::new(Recording { fail: Some(error_code::HEALTH_CHECK), ..Recording::default() });
    let mut agent = s.agent("r1", failing);
    assert!(matches!(agent.cycle().await, Err(AgentError::Apply(ApplyError { code: 103, .. }))));
    assert_eq!(agent.version(), "1.0.0", "still the old version");
    let i = &s.channel.instances(APP, None).await.unwrap()[0];
    assert_eq!((i.status, i.failed_version.as_deref()), (InstanceStatus::Error, Some("2.0.0")));
    assert_eq!(i.last_event().unwrap().error_code, Some(103));
}

#[tokio::test]
async fn a_partial_download_is_resumed() {
    let content: Vec<u8> = (0..100_000u32).flat_map(|n| n.to_le_bytes()).collect();
    let s = setup(&content).await;
    s.publish("2.0.0", &content).await;
    let part = s.dir.path().join("r1/pkg.2.0.0.part");
    std::fs::create_dir_all(part.parent().unwrap()).unwrap();
    std::fs::write(&part, &content[..150_000]).unwrap();
    let recording = Arc::new(Recording::default());
    assert_eq!(s.agent("r1", recording.clone()).cycle().await.unwrap(), Cycle::Updated("2.0.0".into()));
    assert_eq!(*s.files.ranges.lock().unwrap(), ["bytes=150000-"]);
    assert_eq!(recording.applied.lock().unwrap()[0].0, content);
}

/// A script that serves HTTP on `port` (python3's http.server), tagged with `tag`.
fn service_script(port: u16, tag: &str) -> String {
    format!("#!/bin/sh\n# {tag}\nexec python3 -m http.server {port} --bind 127.0.0.1\n")
}

#[tokio::test]
async fn the_process_applier_swaps_the_binary_and_rolls_back_an_unhealthy_one() {
    let dir = tempfile::tempdir().unwrap();
    let port = deis_test_support::free_addr().port();
    let binary = dir.path().join("service");
    std::fs::write(&binary, service_script(port, "v1")).unwrap();
    std::fs::set_permissions(&binary, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut config = ProcessConfig::new(binary.clone(), vec![], &format!("http://127.0.0.1:{port}/"));
    config.health_timeout = Duration::from_secs(15);
    config.stop_timeout = Duration::from_secs(5);
    let applier = ProcessApplier::start(config).await.expect("v1 starts healthy");

    // v2 is healthy: it replaces v1, which is kept as service.old.
    let v2 = dir.path().join("v2");
    std::fs::write(&v2, service_script(port, "v2")).unwrap();
    applier.apply(&v2, "2").await.expect("v2 applied");
    assert!(std::fs::read_to_string(&binary).unwrap().contains("# v2"));
    assert!(std::fs::read_to_string(dir.path().join("service.old")).unwrap().contains("# v1"));

    // v3 exits at once: rolled back to v2, which serves again.
    let v3 = dir.path().join("v3");
    std::fs::write(&v3, "#!/bin/sh\nexit 3\n").unwrap();
    let e = applier.apply(&v3, "3").await.unwrap_err();
    assert_eq!(e.code, error_code::HEALTH_CHECK, "{e}");
    assert!(e.message.contains("rolled back"), "{e}");
    assert!(std::fs::read_to_string(&binary).unwrap().contains("# v2"), "v2 is back in place");
    let r = deis_test_support::http::get_async(SocketAddr::from(([127, 0, 0, 1], port)), "/").await.unwrap();
    assert_eq!(r.status, 200, "v2 serves again");
    applier.stop().await;
}

#[tokio::test]
async fn an_instance_waiting_for_the_lock_does_not_apply_a_version_that_halted_the_group_meanwhile() {
    let content = b"new".to_vec();
    let s = setup(&content).await;
    s.publish("2.0.0", &content).await;
    let store: Arc<dyn deis_core::Store> = RedbStore::in_memory();
    // Another instance is applying: it holds the group's lock.
    let held = Lock::acquire(
        store.clone(),
        &format!("updates/{}/stable", APP.trim_matches(['{', '}'])),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    let recording = Arc::new(Recording::default());
    let mut agent = s.agent("r2", recording.clone());
    agent.config.coordination = Some(store);
    let waiting = tokio::spawn(async move { agent.cycle().await });
    deis_test_support::eventually(Duration::from_secs(10), "r2 downloaded 2.0.0 and waits for the lock", || {
        let channel = s.channel.clone();
        async move {
            let instances = channel.instances(APP, None).await.unwrap();
            instances.iter().any(|i| i.id == "r2" && i.events.iter().any(|e| e.event_type == 14)).then_some(())
        }
    })
    .await;
    // The instance holding the lock fails with 2.0.0: safe mode halts the group.
    let r1 = deis_core::update::InstanceRef {
        app: APP.into(),
        group: "stable".into(),
        instance: "r1".into(),
        version: "1.0.0".into(),
    };
    let failed = deis_core::update::InstanceEvent {
        event_type: event_type::UPDATE_COMPLETE,
        result: event_result::ERROR,
        error_code: Some(error_code::HEALTH_CHECK),
        previous_version: None,
        at: Timestamp::now(),
        repeats: 0,
    };
    s.channel.record_event(&r1, failed).await.unwrap();
    held.release().await.unwrap();
    assert_eq!(waiting.await.unwrap().unwrap(), Cycle::NoUpdate);
    assert!(recording.applied.lock().unwrap().is_empty(), "the halted version was not applied");
}
