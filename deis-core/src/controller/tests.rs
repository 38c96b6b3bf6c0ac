//! Logic tests of the platform: the real embedded store, a mocked scheduler.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};

use serde_json::json;
use tokio::sync::broadcast;

use super::MAX_UNITS_PER_TYPE as MAX_UNITS;
use super::*;
use crate::artifact::ArtifactError;
use crate::model::{AppName, ConfigPatch, Unit, UnitState, ValidationError};
use crate::scheduler::{self, AppSpec, Artifact, NodeStatus, RestartFilter, SchedulerError, UnitEvent};
use crate::store::RedbStore;
use crate::testing::{app_name, process_type};

mockall::mock! {
    pub Sched {}
    #[async_trait::async_trait]
    impl Scheduler for Sched {
        async fn apply(&self, spec: AppSpec) -> scheduler::Result<()>;
        async fn remove(&self, app: &AppName) -> scheduler::Result<()>;
        async fn units(&self, app: &AppName) -> scheduler::Result<Vec<Unit>>;
        async fn restart(&self, app: &AppName, filter: RestartFilter) -> scheduler::Result<Vec<Unit>>;
        async fn nodes(&self) -> scheduler::Result<Vec<NodeStatus>>;
        fn subscribe(&self) -> broadcast::Receiver<UnitEvent>;
    }
}

impl std::fmt::Debug for MockSched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MockSched")
    }
}

/// Memory the mocked node offers: specs asking for more are refused.
const CAPACITY_BYTES: u64 = 1 << 30;

type Applied = Arc<Mutex<Vec<AppSpec>>>;

/// A scheduler mock that records applied specs, refuses those over capacity and
/// refuses image builds like the local scheduler does.
fn recording_scheduler() -> (MockSched, Applied, Arc<Mutex<Vec<String>>>) {
    let applied: Applied = Arc::default();
    let removed: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut s = MockSched::new();
    let a = applied.clone();
    s.expect_apply().returning(move |spec| {
        if spec.total_resources().memory_bytes > CAPACITY_BYTES {
            return Err(SchedulerError::Capacity("memory: too much".into()));
        }
        if matches!(spec.artifact, Artifact::Image { .. }) {
            return Err(SchedulerError::Unsupported("the local scheduler can't run image builds".into()));
        }
        a.lock().unwrap().push(spec);
        Ok(())
    });
    let r = removed.clone();
    s.expect_remove().returning(move |app| {
        r.lock().unwrap().push(app.to_string());
        Ok(())
    });
    s.expect_units().returning(|app| {
        Ok(vec![Unit {
            name: Unit::name_for(app, "web", 1),
            instance: 1,
            app: app_name(app),
            proc_type: process_type("web"),
            number: 1,
            release: 2,
            state: UnitState::Up,
            address: None,
            node: "local".into(),
            started: Some(crate::time::Timestamp::now()),
            restarts: 0,
            pid: None,
        }])
    });
    (s, applied, removed)
}

struct Env {
    platform: Arc<Controller>,
    applied: Applied,
    removed: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

fn env_with(s: MockSched, applied: Applied, removed: Arc<Mutex<Vec<String>>>) -> Env {
    env_with_policy(s, applied, removed, ControllerPolicy::default())
}

fn env_with_policy(s: MockSched, applied: Applied, removed: Arc<Mutex<Vec<String>>>, policy: ControllerPolicy) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let platform = Controller::new(ControllerConfig {
        store: RedbStore::in_memory(),
        scheduler: Arc::new(s),
        artifacts: ArtifactStore::new(dir.path()),
        domain: "example.test".into(),
        registration: RegistrationMode::Enabled,
        logs: None,
        policy,
    });
    Env { platform, applied, removed, _dir: dir }
}

fn env() -> Env {
    let (s, a, r) = recording_scheduler();
    env_with(s, a, r)
}

fn patch(v: serde_json::Value) -> ConfigPatch {
    serde_json::from_value(v).unwrap()
}

fn tarball(procfile: &str) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in [("Procfile", procfile), ("app.sh", "echo hi")] {
        let mut h = tar::Header::new_gnu();
        h.set_path(path).unwrap();
        h.set_size(data.len() as u64);
        h.set_mode(0o755);
        h.set_cksum();
        b.append(&h, data.as_bytes()).unwrap();
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&b.into_inner().unwrap()).unwrap();
    gz.finish().unwrap()
}

/// Asserts that `result` is an error matching `pattern`.
macro_rules! assert_err {
    ($result:expr, $pattern:pat $(if $guard:expr)?) => {
        match $result {
            Err($pattern) $(if $guard)? => {}
            other => panic!("expected {}, got {other:?}", stringify!($pattern $(if $guard)?)),
        }
    };
}

fn n(name: &str) -> AppName {
    AppName::new(name).unwrap()
}

fn ty(name: &str) -> crate::ProcessType {
    crate::ProcessType::new(name).unwrap()
}

async fn alice(p: &Controller) -> User {
    p.register(None, "alice", "pw-alice", "alice@example.com").await.unwrap()
}

async fn versions(p: &Controller, u: &User, app: &str) -> Vec<u64> {
    p.releases(u, &n(app)).await.unwrap().iter().map(|r| r.version).collect()
}

#[tokio::test]
async fn first_user_is_admin_and_login_issues_tokens() {
    let e = env();
    let p = &e.platform;
    let a = alice(p).await;
    assert!(a.is_superuser);
    let b = p.register(None, "bob", "pw-bob", "").await.unwrap();
    assert!(!b.is_superuser);
    assert_err!(
        p.register(None, "bob", "x", "").await,
        ControllerError::Validation(ValidationError { field, message }) if field == "username" && message == "A user with that username already exists."
    );
    assert_err!(p.register(None, "", "x", "").await, ControllerError::Validation(_));
    for (user, pw) in [("bob", "wrong"), ("nobody", "x")] {
        assert_err!(
            p.login(user, pw).await,
            ControllerError::Validation(ValidationError { field, message }) if field == "non_field_errors" && message == "Unable to log in with provided credentials."
        );
    }
    let token = p.login("bob", "pw-bob").await.unwrap();
    assert_eq!(token.len(), 40);
    assert_eq!(p.authenticate(&token).await.unwrap().username, "bob");
    assert!(p.whoami(&b).await.unwrap().last_login.is_some());
    // Only the digest is stored.
    let keys: Vec<String> = p.store().list("tokens/").await.unwrap().kvs.into_iter().map(|kv| kv.key).collect();
    assert_eq!(keys, vec![format!("tokens/{}", crate::auth::token_digest(&token))]);
    assert_err!(p.authenticate("nope").await, ControllerError::InvalidToken);
}

#[tokio::test]
async fn registration_modes() {
    for (mode, second_ok) in [(RegistrationMode::AdminOnly, false), (RegistrationMode::Disabled, false)] {
        let (s, a, r) = recording_scheduler();
        let mut e = env_with(s, a, r);
        Arc::get_mut(&mut e.platform).unwrap().settings.registration = mode;
        let p = &e.platform;
        let first = p.register(None, "root", "pw", "").await;
        if mode == RegistrationMode::Disabled {
            assert_err!(first, ControllerError::RegistrationDisabled);
            continue;
        }
        let root = first.unwrap();
        let second = p.register(None, "eve", "pw", "").await;
        assert_eq!(second.is_ok(), second_ok);
        assert_err!(second, ControllerError::RegistrationAdminOnly);
        assert!(p.register(Some(&root), "eve", "pw", "").await.is_ok(), "an admin may register users");
    }
}

#[tokio::test]
async fn regenerate_invalidates_old_tokens() {
    let e = env();
    let p = &e.platform;
    let a = alice(p).await;
    let b = p.register(None, "bob", "pw-bob", "").await.unwrap();
    let t1 = p.login("alice", "pw-alice").await.unwrap();
    let t2 = p.login("alice", "pw-alice").await.unwrap();
    let tb = p.login("bob", "pw-bob").await.unwrap();
    let new = p.regenerate_token(&a, RegenerateTarget::Own).await.unwrap().unwrap();
    assert!(p.authenticate(&t1).await.is_err());
    assert!(p.authenticate(&t2).await.is_err());
    assert_eq!(p.authenticate(&new).await.unwrap().username, "alice");
    assert!(p.authenticate(&tb).await.is_ok(), "other users keep their tokens");
    assert_err!(p.regenerate_token(&b, RegenerateTarget::All).await, ControllerError::Forbidden);
    assert_err!(p.regenerate_token(&b, RegenerateTarget::User("alice".into())).await, ControllerError::Forbidden);
    assert_eq!(p.regenerate_token(&a, RegenerateTarget::All).await.unwrap(), None);
    assert!(p.authenticate(&tb).await.is_err());
    assert!(p.authenticate(&new).await.is_err());
}

#[tokio::test]
async fn passwd_and_cancel() {
    let e = env();
    let p = &e.platform;
    let a = alice(p).await;
    let b = p.register(None, "bob", "pw-bob", "").await.unwrap();
    assert_err!(p.change_password(&b, None, None, Some("n")).await, ControllerError::Required { field: "password" });
    assert_err!(
        p.change_password(&b, None, Some("p"), None).await,
        ControllerError::Required { field: "new_password" }
    );
    assert_err!(p.change_password(&b, None, Some("bad"), Some("n")).await, ControllerError::WrongPassword);
    assert_err!(p.change_password(&b, Some("alice"), Some("pw-bob"), Some("n")).await, ControllerError::Forbidden);
    p.change_password(&b, None, Some("pw-bob"), Some("new-bob")).await.unwrap();
    assert!(p.login("bob", "pw-bob").await.is_err());
    p.change_password(&a, Some("bob"), None, Some("by-admin")).await.unwrap();
    let tb = p.login("bob", "by-admin").await.unwrap();
    // Bob owns an app: cancelling him is refused until it is gone.
    p.create_app(&b, Some(n("bobs"))).await.unwrap();
    let err = p.cancel_user(&a, Some("bob")).await.unwrap_err();
    assert!(matches!(&err, ControllerError::OwnsApps { username } if username == "bob"), "{err:?}");
    assert_eq!(err.to_string(), "bob still has applications assigned. Delete or transfer ownership");
    assert_err!(p.cancel_user(&b, Some("alice")).await, ControllerError::Forbidden);
    p.transfer_app(&b, &n("bobs"), "alice").await.unwrap();
    p.cancel_user(&b, None).await.unwrap();
    assert!(p.authenticate(&tb).await.is_err());
    assert_err!(
        p.cancel_user(&a, Some("bob")).await,
        ControllerError::NotFound { kind: ResourceKind::User, name } if name == "bob"
    );
    assert_eq!(p.list_users(&a).await.unwrap().len(), 1);
}

#[tokio::test]
async fn apps_create_list_permissions() {
    let e = env();
    let p = &e.platform;
    let a = alice(p).await;
    let b = p.register(None, "bob", "pw", "").await.unwrap();
    let app = p.create_app(&a, Some(n("demo"))).await.unwrap();
    assert_eq!(app.owner, "alice");
    assert_err!(
        p.create_app(&b, Some(n("demo"))).await,
        ControllerError::Validation(ValidationError { field, message }) if field == "id" && message == "Application with this id already exists."
    );
    assert_err!(
        p.create_app(&b, Some(n("deis"))).await,
        ControllerError::Validation(ValidationError { field, message }) if field == "id" && message == "deis is a reserved name."
    );
    let random = p.create_app(&b, None).await.unwrap();
    let (adj, noun) = random.id.split_once('-').unwrap();
    assert!(!adj.is_empty() && !noun.is_empty());
    let rel = p.releases(&a, &n("demo")).await.unwrap();
    assert_eq!(rel.len(), 1);
    assert_eq!(rel[0].summary, "alice created initial release");
    assert_eq!(rel[0].build, None);
    assert!(p.config(&a, &n("demo")).await.unwrap().values.is_empty());
    assert_eq!(p.domains(&a, &n("demo")).await.unwrap()[0].domain, "demo");
    // Admin sees everything, bob only his own.
    assert_eq!(p.list_apps(&a).await.unwrap().len(), 2);
    assert_eq!(p.list_apps(&b).await.unwrap(), vec![random.clone()]);
    // Non-owners are refused, unknown apps are 404.
    assert_err!(p.app(&b, &n("demo")).await, ControllerError::Forbidden);
    assert_err!(p.set_config(&b, &n("demo"), &patch(json!({"values": {"A": "1"}}))).await, ControllerError::Forbidden);
    assert_err!(p.destroy_app(&b, &n("demo")).await, ControllerError::Forbidden);
    let err = p.app(&a, &n("nope")).await.unwrap_err();
    assert!(matches!(&err, ControllerError::NotFound { kind: ResourceKind::App, name } if name == "nope"), "{err:?}");
    assert_eq!(err.to_string(), "No App matches the given query.");
    assert_eq!(p.app(&a, &random.id).await.unwrap().id, random.id, "admins may see any app");
}

#[tokio::test]
async fn config_set_unset_summary_and_numbering() {
    let e = env();
    let p = &e.platform;
    let a = alice(p).await;
    p.create_app(&a, Some(n("demo"))).await.unwrap();
    let (c, r) = p.set_config(&a, &n("demo"), &patch(json!({"values": {"FOO": "bar", "BAZ": "1"}}))).await.unwrap();
    assert_eq!(r.version, 2);
    assert_eq!(r.summary, "alice added BAZ, FOO");
    assert_eq!(c.values["FOO"], "bar");
    let (_, r) = p.set_config(&a, &n("demo"), &patch(json!({"values": {"FOO": "qux", "BAZ": null}}))).await.unwrap();
    assert_eq!(r.summary, "alice changed FOO, deleted BAZ");
    assert_eq!(r.version, 3);
    let err = p.set_config(&a, &n("demo"), &patch(json!({"values": {"FOO": "qux"}}))).await.unwrap_err();
    assert!(matches!(&err, ControllerError::NothingChanged { user } if user == "alice"), "{err:?}");
    assert_eq!(err.to_string(), "alice changed nothing - release stopped");
    let err = p.set_config(&a, &n("demo"), &patch(json!({"values": {"NOPE": null}}))).await.unwrap_err();
    assert!(matches!(&err, ControllerError::NotSet { key, section } if key == "NOPE" && section == "values"));
    assert_err!(
        p.set_config(&a, &n("demo"), &patch(json!({"values": {"1X": "y"}}))).await,
        ControllerError::Validation(ValidationError { field, .. }) if field == "values"
    );
    assert_eq!(versions(p, &a, "demo").await, vec![3, 2, 1], "failed requests made no release");
    assert_eq!(p.config(&a, &n("demo")).await.unwrap().values, BTreeMap::from([("FOO".into(), "qux".into())]));
    assert_eq!(p.release(&a, &n("demo"), 2).await.unwrap().summary, "alice added BAZ, FOO");
    assert_err!(
        p.release(&a, &n("demo"), 9).await,
        ControllerError::NotFound { kind: ResourceKind::Release, name } if name == "v9"
    );
    assert!(e.applied.lock().unwrap().is_empty(), "nothing to run without a build");
}

#[tokio::test]
async fn source_build_deploys_and_sets_formation() {
    let e = env();
    let p = &e.platform;
    let a = alice(p).await;
    p.create_app(&a, Some(n("demo"))).await.unwrap();
    p.set_config(&a, &n("demo"), &patch(json!({"values": {"GREETING": "hi"}}))).await.unwrap();
    let out = p
        .create_build(&a, &n("demo"), BuildInput::Source(tarball("web: ./app.sh\nworker: ./app.sh worker\n")))
        .await
        .unwrap();
    assert!(out.build.sha.starts_with("sha256:"));
    assert_eq!(out.build.procfile["worker"], "./app.sh worker");
    assert_eq!(out.release.version, 3);
    assert!(out.release.summary.starts_with("alice deployed sha256:"), "{}", out.release.summary);
    assert_eq!(out.warning, None);
    let app = p.app(&a, &n("demo")).await.unwrap();
    assert_eq!(app.structure, BTreeMap::from([(ty("web"), 1), (ty("worker"), 0)]));
    let spec = e.applied.lock().unwrap().last().cloned().unwrap();
    assert_eq!(spec.release, 3);
    assert_eq!(spec.env["GREETING"], "hi");
    assert_eq!(spec.processes["web"].count, 1);
    assert_eq!(spec.processes["web"].command, "./app.sh");
    let Artifact::Source { dir } = &spec.artifact else { panic!("source artifact expected") };
    assert_eq!(std::fs::read_to_string(dir.join("app.sh")).unwrap(), "echo hi");
    assert_eq!(p.builds(&a, &n("demo")).await.unwrap()[0].uuid, out.build.uuid);
    // A config change redeploys the same build with the new env.
    p.set_config(&a, &n("demo"), &patch(json!({"values": {"GREETING": "hello"}}))).await.unwrap();
    let spec = e.applied.lock().unwrap().last().cloned().unwrap();
    assert_eq!((spec.release, spec.env["GREETING"].as_str()), (4, "hello"));
    // Bad archives change nothing.
    let err = p.create_build(&a, &n("demo"), BuildInput::Source(b"junk".to_vec())).await.unwrap_err();
    assert!(matches!(err, ControllerError::Artifact(ArtifactError::Malformed(_))), "{err:?}");
    let err = p.create_build(&a, &n("demo"), BuildInput::Source(tarball("nonsense"))).await.unwrap_err();
    assert!(matches!(err, ControllerError::Artifact(ArtifactError::InvalidProcfile(_))), "{err:?}");
    assert!(err.to_string().contains("Procfile"), "{err}");
    assert_eq!(versions(p, &a, "demo").await, vec![4, 3, 2, 1]);
}

#[tokio::test]
async fn image_build_on_a_process_scheduler_is_a_failed_release() {
    let e = env();
    let p = &e.platform;
    let a = alice(p).await;
    p.create_app(&a, Some(n("demo"))).await.unwrap();
    let input = BuildInput::Image { image: "nginx:1.13".into(), procfile: BTreeMap::new() };
    let out = p.create_build(&a, &n("demo"), input).await.unwrap();
    assert!(out.release.failed);
    assert_eq!(out.release.summary, "alice deployed nginx:1.13");
    assert!(out.warning.unwrap().contains("image builds"));
    assert!(p.app(&a, &n("demo")).await.unwrap().structure.is_empty());
    assert_eq!(p.builds(&a, &n("demo")).await.unwrap().len(), 1);
    // A failed release is not rolled back to, and scaling needs a build that runs.
    assert_err!(p.scale(&a, &n("demo"), &BTreeMap::from([(ty("cmd"), 1)])).await, ControllerError::NoBuild);
    let blank = BuildInput::Image { image: " ".into(), procfile: BTreeMap::new() };
    assert_err!(
        p.create_build(&a, &n("demo"), blank).await,
        ControllerError::Validation(ValidationError { field, message }) if field == "image" && message == "This field may not be blank."
    );
}

#[tokio::test]
async fn rollback_copies_build_and_config() {
    let e = env();
    let p = &e.platform;
    let a = alice(p).await;
    p.create_app(&a, Some(n("demo"))).await.unwrap();
    assert_err!(p.rollback(&a, &n("demo"), None).await, ControllerError::Rollback(RollbackRefusal::BelowZero));
    let v2 = p.create_build(&a, &n("demo"), BuildInput::Source(tarball("web: ./app.sh"))).await.unwrap().release;
    let (_, v3) = p.set_config(&a, &n("demo"), &patch(json!({"values": {"A": "1"}}))).await.unwrap();
    let (_, v4) = p.set_config(&a, &n("demo"), &patch(json!({"values": {"A": "2"}}))).await.unwrap();
    let r = p.rollback(&a, &n("demo"), Some(3)).await.unwrap();
    assert_eq!(r.version, 5);
    assert_eq!(r.summary, "alice rolled back to v3");
    assert_eq!((r.config, r.build), (v3.config, v2.build));
    assert_eq!(p.config(&a, &n("demo")).await.unwrap().values["A"], "1");
    assert_eq!(e.applied.lock().unwrap().last().unwrap().env["A"], "1");
    // Default target: the release before the latest.
    let r = p.rollback(&a, &n("demo"), None).await.unwrap();
    assert_eq!((r.version, r.config), (6, v4.config));
    assert_err!(p.rollback(&a, &n("demo"), Some(1)).await, ControllerError::Rollback(RollbackRefusal::InitialRelease));
    assert_err!(p.rollback(&a, &n("demo"), Some(0)).await, ControllerError::Rollback(RollbackRefusal::BelowZero));
    assert_err!(
        p.rollback(&a, &n("demo"), Some(42)).await,
        ControllerError::NotFound { kind: ResourceKind::Release, .. }
    );
    let image = BuildInput::Image { image: "nginx".into(), procfile: BTreeMap::new() };
    let failed = p.create_build(&a, &n("demo"), image).await.unwrap().release;
    let err = p.rollback(&a, &n("demo"), Some(failed.version as i64)).await.unwrap_err();
    assert!(matches!(err, ControllerError::Rollback(RollbackRefusal::FailedRelease)), "{err:?}");
    assert_eq!(err.to_string(), "Cannot roll back to failed release.");
}

#[tokio::test]
async fn capacity_refusal_changes_nothing() {
    let e = env();
    let p = &e.platform;
    let a = alice(p).await;
    p.create_app(&a, Some(n("demo"))).await.unwrap();
    p.create_build(&a, &n("demo"), BuildInput::Source(tarball("web: ./app.sh\nworker: ./w"))).await.unwrap();
    p.set_config(&a, &n("demo"), &patch(json!({"memory": {"web": "400M"}}))).await.unwrap();
    let before_app = p.app(&a, &n("demo")).await.unwrap();
    let before_rev = p.store().list("").await.unwrap();
    let applied_before = e.applied.lock().unwrap().len();
    // 3 x 400M does not fit in 1G.
    let err = p.scale(&a, &n("demo"), &BTreeMap::from([(ty("web"), 3)])).await.unwrap_err();
    assert!(matches!(err, ControllerError::Capacity(SchedulerError::Capacity(_))), "{err:?}");
    assert!(err.to_string().contains("not enough capacity"), "{err}");
    // Neither may a limit that does not fit.
    let err = p.set_config(&a, &n("demo"), &patch(json!({"memory": {"web": "2G"}}))).await.unwrap_err();
    assert!(matches!(err, ControllerError::Capacity(_)), "{err:?}");
    assert_eq!(p.app(&a, &n("demo")).await.unwrap(), before_app);
    assert_eq!(p.store().list("").await.unwrap(), before_rev, "no record changed");
    assert_eq!(e.applied.lock().unwrap().len(), applied_before);
    // A fitting scale is applied and committed.
    p.scale(&a, &n("demo"), &BTreeMap::from([(ty("web"), 2), (ty("worker"), 1)])).await.unwrap();
    assert_eq!(p.app(&a, &n("demo")).await.unwrap().structure, BTreeMap::from([(ty("web"), 2), (ty("worker"), 1)]));
    let spec = e.applied.lock().unwrap().last().cloned().unwrap();
    assert_eq!((spec.processes["web"].count, spec.processes["web"].resources.memory_bytes), (2, 400 << 20));
    assert_eq!(versions(p, &a, "demo").await.len(), 3, "scaling makes no release");
    let err = p.scale(&a, &n("demo"), &BTreeMap::from([(ty("clock"), 1)])).await.unwrap_err();
    assert!(matches!(&err, ControllerError::UnknownProcessType { proc_type } if proc_type == "clock"), "{err:?}");
    assert_eq!(err.to_string(), "Container type clock does not exist in application");
    let err = p.scale(&a, &n("demo"), &BTreeMap::from([(ty("web"), MAX_UNITS + 1)])).await.unwrap_err();
    assert!(matches!(err, ControllerError::TooManyUnits { max: MAX_UNITS, .. }), "{err:?}");
}

#[tokio::test]
async fn scale_without_build_is_refused() {
    let e = env();
    let p = &e.platform;
    let a = alice(p).await;
    p.create_app(&a, Some(n("demo"))).await.unwrap();
    assert_err!(p.scale(&a, &n("demo"), &BTreeMap::from([(ty("web"), 1)])).await, ControllerError::NoBuild);
}

#[tokio::test]
async fn destroy_removes_every_record() {
    let e = env();
    let p = &e.platform;
    let a = alice(p).await;
    p.create_app(&a, Some(n("keep"))).await.unwrap();
    let before: Vec<String> = p.store().list("").await.unwrap().kvs.into_iter().map(|kv| kv.key).collect();
    p.create_app(&a, Some(n("demo"))).await.unwrap();
    p.create_build(&a, &n("demo"), BuildInput::Source(tarball("web: ./app.sh"))).await.unwrap();
    p.set_config(&a, &n("demo"), &patch(json!({"values": {"A": "1"}}))).await.unwrap();
    p.add_domain(&a, &n("demo"), "www.example.com").await.unwrap();
    p.store().put("endpoints/demo/demo.web.1#1", b"{}".to_vec()).await.unwrap();
    p.destroy_app(&a, &n("demo")).await.unwrap();
    assert_eq!(e.removed.lock().unwrap().as_slice(), ["demo".to_string()]);
    let after: Vec<String> = p.store().list("").await.unwrap().kvs.into_iter().map(|kv| kv.key).collect();
    assert_eq!(after, before, "only records of other apps and users remain");
    assert_err!(p.app(&a, &n("demo")).await, ControllerError::NotFound { .. });
    // The name and domain are free again.
    p.create_app(&a, Some(n("demo"))).await.unwrap();
    p.add_domain(&a, &n("demo"), "www.example.com").await.unwrap();
}

#[tokio::test]
async fn domains_are_unique_across_apps() {
    let e = env();
    let p = &e.platform;
    let a = alice(p).await;
    p.create_app(&a, Some(n("one"))).await.unwrap();
    p.create_app(&a, Some(n("two"))).await.unwrap();
    let d = p.add_domain(&a, &n("one"), "WWW.Example.com").await.unwrap();
    assert_eq!(d.domain, "www.example.com");
    assert_err!(
        p.add_domain(&a, &n("two"), "www.example.com").await,
        ControllerError::DomainTaken { domain } if domain == "www.example.com"
    );
    assert_err!(
        p.add_domain(&a, &n("two"), "bad domain").await,
        ControllerError::Validation(ValidationError { field, .. }) if field == "domain"
    );
    assert_err!(
        p.create_app(&a, Some(n("one"))).await,
        ControllerError::Validation(ValidationError { field, .. }) if field == "id"
    );
    let names: Vec<String> = p.domains(&a, &n("one")).await.unwrap().into_iter().map(|d| d.domain).collect();
    assert_eq!(names, ["one", "www.example.com"]);
    assert_err!(
        p.remove_domain(&a, &n("two"), "www.example.com").await,
        ControllerError::NotFound { kind: ResourceKind::Domain, .. }
    );
    p.remove_domain(&a, &n("one"), "www.example.com").await.unwrap();
    p.add_domain(&a, &n("two"), "www.example.com").await.unwrap();
}

/// Fault "domain takeover": bob could add `shop.<platform domain>` while alice's app
/// `shop` existed (and get its traffic once it was gone), wildcards over the platform
/// domain, `localhost`, IP literals.
#[tokio::test]
async fn domains_under_the_platform_belong_to_their_app_and_wildcards_to_admins() {
    let e = env();
    let p = &e.platform;
    let a = alice(p).await;
    let b = p.register(None, "bob", "pw", "").await.unwrap();
    p.create_app(&a, Some(n("shop"))).await.unwrap();
    p.create_app(&b, Some(n("evil"))).await.unwrap();
    for taken in [
        "shop.example.test",
        "www.shop.example.test",
        "*.example.test",
        "*.test",
        "example.test",
        "localhost",
        "127.0.0.1",
        "10.0.0.1",
        "evil",
        "*.bob.example.org",
    ] {
        assert_err!(
            p.add_domain(&b, &n("evil"), taken).await,
            ControllerError::Validation(ValidationError { field, .. }) if field == "domain"
        );
    }
    p.destroy_app(&a, &n("shop")).await.unwrap();
    assert_err!(
        p.add_domain(&b, &n("evil"), "shop.example.test").await,
        ControllerError::Validation(ValidationError { field, .. }) if field == "domain"
    );
    p.add_domain(&b, &n("evil"), "evil.example.test").await.unwrap();
    p.add_domain(&b, &n("evil"), "www.evil.example.org").await.unwrap();
    p.create_app(&a, Some(n("other"))).await.unwrap();
    assert_err!(p.add_domain(&a, &n("other"), "www.evil.example.org").await, ControllerError::DomainTaken { .. });
    p.add_domain(&a, &n("evil"), "*.example.org").await.expect("admins may add wildcards");
    assert_err!(
        p.add_domain(&a, &n("evil"), "*.test").await,
        ControllerError::Validation(ValidationError { field, .. }) if field == "domain"
    );
}

/// The smaller fault: `scale web=300` started 300 processes; a user's apps now share a
/// cap (admins are not held to it).
#[tokio::test]
async fn units_per_user_are_capped() {
    let (s, applied, removed) = recording_scheduler();
    let e = env_with_policy(s, applied, removed, ControllerPolicy::default().with_max_units_per_user(4));
    let p = &e.platform;
    let a = alice(p).await;
    let b = p.register(None, "bob", "pw", "").await.unwrap();
    for app in ["one", "two"] {
        p.create_app(&b, Some(n(app))).await.unwrap();
        p.create_build(&b, &n(app), BuildInput::Source(tarball("web: ./app.sh\n"))).await.unwrap();
    }
    p.scale(&b, &n("one"), &BTreeMap::from([(ty("web"), 3)])).await.unwrap();
    let err = p.scale(&b, &n("two"), &BTreeMap::from([(ty("web"), 2)])).await.unwrap_err();
    assert!(matches!(err, ControllerError::UnitQuota { max: 4, asked: 5, .. }), "{err:?}");
    assert!(err.to_string().contains("at most 4 units"), "{err}");
    assert_eq!(p.app(&b, &n("two")).await.unwrap().structure[&ty("web")], 1, "nothing changed");
    p.scale(&b, &n("one"), &BTreeMap::from([(ty("web"), 2)])).await.unwrap();
    p.scale(&b, &n("two"), &BTreeMap::from([(ty("web"), 2)])).await.unwrap();
    p.scale(&a, &n("two"), &BTreeMap::from([(ty("web"), 10)])).await.expect("an admin may");
}

#[tokio::test]
async fn ps_list_and_restart_validation() {
    let (mut s, applied, removed) = recording_scheduler();
    s.expect_restart().returning(|_, _| Err(SchedulerError::NotFound("app".into())));
    let e = env_with(s, applied, removed);
    let p = &e.platform;
    let a = alice(p).await;
    p.create_app(&a, Some(n("demo"))).await.unwrap();
    p.create_build(&a, &n("demo"), BuildInput::Source(tarball("web: ./app.sh"))).await.unwrap();
    assert_eq!(p.units(&a, &n("demo")).await.unwrap()[0].name, "demo.web.1");
    let bad = RestartFilter { proc_type: Some(process_type("worker")), unit: None };
    assert_err!(
        p.restart(&a, &n("demo"), bad).await,
        ControllerError::UnknownRestartTarget(UnknownRestartTarget::ProcessType(t)) if t == "worker"
    );
    let bad = RestartFilter { proc_type: Some(process_type("web")), unit: Some("demo.web.9".into()) };
    let err = p.restart(&a, &n("demo"), bad).await.unwrap_err();
    assert!(matches!(&err, ControllerError::UnknownRestartTarget(UnknownRestartTarget::Unit(u)) if u == "demo.web.9"));
    assert_eq!(err.to_string(), "Pod demo.web.9 does not exist in application");
    assert_eq!(p.restart(&a, &n("demo"), RestartFilter::default()).await.unwrap(), vec![]);
}

#[tokio::test]
async fn reconcile_applies_every_app() {
    let e = env();
    let p = &e.platform;
    let a = alice(p).await;
    for app in ["one", "two", "idle"] {
        p.create_app(&a, Some(n(app))).await.unwrap();
    }
    for app in ["one", "two"] {
        p.create_build(&a, &n(app), BuildInput::Source(tarball("web: ./app.sh"))).await.unwrap();
    }
    e.applied.lock().unwrap().clear();
    p.reconcile_all().await;
    let apps: Vec<String> = e.applied.lock().unwrap().iter().map(|s| s.app.to_string()).collect();
    assert_eq!(apps, ["one", "two"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_config_sets_make_distinct_consecutive_releases() {
    let e = env();
    let p = e.platform.clone();
    let a = alice(&p).await;
    p.create_app(&a, Some(n("demo"))).await.unwrap();
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let (p, a) = (p.clone(), a.clone());
            tokio::spawn(async move {
                p.set_config(&a, &n("demo"), &patch(json!({"values": {format!("K{i}"): "v"}}))).await.unwrap().1.version
            })
        })
        .collect();
    let mut got = vec![];
    for t in tasks {
        got.push(t.await.unwrap());
    }
    got.sort_unstable();
    assert_eq!(got, (2..=21).collect::<Vec<u64>>());
    assert_eq!(versions(&p, &a, "demo").await, (1..=21).rev().collect::<Vec<u64>>());
    assert_eq!(p.config(&a, &n("demo")).await.unwrap().values.len(), 20, "no update was lost");
}

#[tokio::test]
async fn ingest_tokens_come_and_go_with_their_app_and_rotate() {
    let e = env();
    let p = &e.platform;
    let a = alice(p).await;
    let b = p.register(None, "bob", "pw", "").await.unwrap();
    let c = p.register(None, "carol", "pw", "").await.unwrap();
    p.create_app(&b, Some(n("logged"))).await.unwrap();
    let first = p.ingest_token(&b, &n("logged")).await.unwrap();
    assert_eq!(first.token.len(), 32, "128 bits as hex");
    assert!(first.token.bytes().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(p.ingest_token(&b, &n("logged")).await.unwrap(), first, "stable until rotated");
    assert_eq!(p.ingest_token(&a, &n("logged")).await.unwrap(), first, "admins may read it");
    assert_err!(p.ingest_token(&c, &n("logged")).await, ControllerError::Forbidden);
    assert_err!(p.rotate_ingest_token(&c, &n("logged")).await, ControllerError::Forbidden);
    p.add_collaborator(&b, &n("logged"), "carol").await.unwrap();
    let rotated = p.rotate_ingest_token(&c, &n("logged")).await.unwrap();
    assert_ne!(rotated.token, first.token);
    assert_eq!(p.ingest_token(&b, &n("logged")).await.unwrap(), rotated);

    // Apps from before tokens get one at start (or when first asked).
    let store = p.store().clone();
    store.delete(&ingest_token_key("logged")).await.unwrap();
    p.create_app(&b, Some(n("other"))).await.unwrap();
    assert_eq!(p.ensure_ingest_tokens().await.unwrap(), 1);
    assert_eq!(p.ensure_ingest_tokens().await.unwrap(), 0);
    assert!(store.get(&ingest_token_key("logged")).await.unwrap().is_some());

    p.destroy_app(&b, &n("logged")).await.unwrap();
    assert!(store.get(&ingest_token_key("logged")).await.unwrap().is_none(), "gone with its app");
    assert!(store.get(&ingest_token_key("other")).await.unwrap().is_some());
    assert_err!(p.ingest_token(&b, &n("logged")).await, ControllerError::NotFound { .. });
}
