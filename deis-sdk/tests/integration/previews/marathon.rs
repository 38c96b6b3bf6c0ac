//! A fake Marathon, faithful to the part of the v2 REST API deis uses: `/v2/info`,
//! `/v2/apps` (list with `id` filter and `embed`), `/v2/apps/{id}` (PUT creates or
//! replaces and starts a deployment, DELETE, GET), `/v2/apps/{id}/versions/{v}`,
//! `/v2/apps/{id}/tasks`, `/v2/deployments`. Apps run as tasks (local processes) with
//! an assigned port (`PORT0`, `PORT`), health checks, the upgrade strategy's
//! `minimumHealthCapacity` and `maximumOverCapacity`, failed tasks replaced after
//! `backoffSeconds` and reported as `lastTaskFailure`.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use deis_sdk::scheduler::marathon::api::{App, HealthCheckResult, IpAddress, Task, TaskFailure};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::Instant;

use super::runtime::{self, Check, ContainerSpec, Event, Images, Probe, RunOptions};

struct FakeTask {
    task: Task,
    stop: watch::Sender<Option<Duration>>,
    healthy: bool,
    killing: bool,
}

struct FakeApp {
    def: App,
    version: String,
    versions: BTreeMap<String, App>,
    tasks: Vec<FakeTask>,
    last_failure: Option<TaskFailure>,
    backoff_until: Option<Instant>,
    deleted: bool,
    deployment: Option<String>,
}

#[derive(Default)]
struct World {
    apps: BTreeMap<String, FakeApp>,
    last_version: i64,
    requests: Vec<String>,
    /// Definitions as received (JSON), by app id.
    received: HashMap<String, Value>,
}

/// The fake Marathon.
#[derive(Clone)]
pub struct FakeMarathon {
    world: Arc<Mutex<World>>,
    images: Images,
    sandbox: Arc<tempfile::TempDir>,
    /// Its address.
    pub addr: SocketAddr,
}

fn error(code: StatusCode, message: String) -> Response {
    (code, Json(json!({ "message": message }))).into_response()
}

impl World {
    /// A new app version: an ISO timestamp, later than every earlier one.
    fn version(&mut self) -> String {
        let now = k8s_openapi::jiff::Timestamp::now().as_millisecond().max(self.last_version + 1);
        self.last_version = now;
        k8s_openapi::jiff::Timestamp::from_millisecond(now).unwrap().to_string()
    }
}

fn app_json(a: &FakeApp, tasks: bool, failure: bool) -> Value {
    let mut v = serde_json::to_value(&a.def).unwrap();
    v["version"] = json!(a.version);
    v["tasksRunning"] = json!(a.tasks.iter().filter(|t| t.task.state == "TASK_RUNNING").count());
    v["tasksHealthy"] = json!(a.tasks.iter().filter(|t| t.healthy).count());
    v["deployments"] = json!(a.deployment.iter().map(|d| json!({"id": d})).collect::<Vec<_>>());
    if tasks {
        v["tasks"] = json!(a.tasks.iter().map(|t| task_json(a, t)).collect::<Vec<_>>());
    }
    if failure && let Some(f) = &a.last_failure {
        v["lastTaskFailure"] = serde_json::to_value(f).unwrap();
    }
    v
}

fn task_json(a: &FakeApp, t: &FakeTask) -> Value {
    let mut task = t.task.clone();
    task.health_check_results =
        if a.def.health_checks.is_empty() { vec![] } else { vec![HealthCheckResult { alive: t.healthy }] };
    serde_json::to_value(task).unwrap()
}

impl FakeMarathon {
    /// Starts it, knowing `images`.
    pub async fn start(images: HashMap<String, PathBuf>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let fake = Self {
            world: Arc::default(),
            images: Arc::new(images),
            sandbox: Arc::new(tempfile::tempdir().unwrap()),
            addr,
        };
        let app = axum::Router::new()
            .route(
                "/v2/info",
                get(|| async { Json(json!({"name": "marathon", "version": "1.11.24", "frameworkId": "fake"})) }),
            )
            .route("/v2/apps", get(apps_list))
            .route("/v2/deployments", get(deployments))
            .route("/v2/apps/{*id}", get(app_get).put(app_put).delete(app_delete))
            .fallback(|| async { error(StatusCode::NOT_FOUND, "not found".into()) })
            .layer(axum::middleware::from_fn_with_state(fake.clone(), record))
            .with_state(fake.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        tokio::spawn(controller(fake.clone()));
        fake
    }

    /// Requests seen (`VERB path?query`).
    pub fn requests(&self) -> Vec<String> {
        self.world.lock().unwrap().requests.clone()
    }

    /// The last definition received for app `id`, as sent.
    pub fn definition(&self, id: &str) -> Option<Value> {
        self.world.lock().unwrap().received.get(id).cloned()
    }
}

async fn record(
    State(fake): State<FakeMarathon>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    fake.world.lock().unwrap().requests.push(format!("{} {}", req.method(), req.uri()));
    next.run(req).await
}

fn embeds(query: &Option<String>, what: &str) -> bool {
    query.as_deref().unwrap_or("").split('&').any(|kv| kv == format!("embed={what}"))
}

async fn apps_list(State(f): State<FakeMarathon>, RawQuery(query): RawQuery) -> Response {
    let filter = query.as_deref().unwrap_or("").split('&').find_map(|kv| kv.strip_prefix("id=")).map(|v| {
        url::form_urlencoded::parse(format!("v={v}").as_bytes()).next().map(|(_, v)| v.into_owned()).unwrap_or_default()
    });
    let w = f.world.lock().unwrap();
    let apps: Vec<Value> = w
        .apps
        .iter()
        .filter(|(id, a)| !a.deleted && filter.as_ref().is_none_or(|x| id.contains(x.as_str())))
        .map(|(_, a)| app_json(a, embeds(&query, "apps.tasks"), embeds(&query, "apps.lastTaskFailure")))
        .collect();
    Json(json!({ "apps": apps })).into_response()
}

async fn deployments(State(f): State<FakeMarathon>) -> Response {
    let w = f.world.lock().unwrap();
    let list: Vec<Value> = w
        .apps
        .iter()
        .filter_map(|(id, a)| {
            a.deployment.as_ref().map(|d| json!({"id": d, "version": a.version, "affectedApps": [id]}))
        })
        .collect();
    Json(json!(list)).into_response()
}

async fn app_get(State(f): State<FakeMarathon>, Path(id): Path<String>, RawQuery(query): RawQuery) -> Response {
    let w = f.world.lock().unwrap();
    if let Some((app, version)) = id.split_once("/versions/") {
        let app = format!("/{app}");
        return match w.apps.get(&app).and_then(|a| a.versions.get(version)) {
            Some(def) => {
                let mut v = serde_json::to_value(def).unwrap();
                v["version"] = json!(version);
                Json(v).into_response()
            }
            None => error(StatusCode::NOT_FOUND, format!("App '{app}' does not exist in version {version}")),
        };
    }
    if let Some(app) = id.strip_suffix("/tasks") {
        let app = format!("/{app}");
        return match w.apps.get(&app).filter(|a| !a.deleted) {
            Some(a) => {
                Json(json!({"tasks": a.tasks.iter().map(|t| task_json(a, t)).collect::<Vec<_>>()})).into_response()
            }
            None => error(StatusCode::NOT_FOUND, format!("App '{app}' does not exist")),
        };
    }
    let id = format!("/{id}");
    match w.apps.get(&id).filter(|a| !a.deleted) {
        Some(a) => Json(json!({"app": app_json(a, embeds(&query, "app.tasks"), true)})).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("App '{id}' does not exist")),
    }
}

async fn app_put(State(f): State<FakeMarathon>, Path(id): Path<String>, Json(body): Json<Value>) -> Response {
    let id = format!("/{id}");
    let mut def: App = match serde_json::from_value(body.clone()) {
        Ok(d) => d,
        Err(e) => return error(StatusCode::UNPROCESSABLE_ENTITY, format!("Object is not valid: {e}")),
    };
    if def.id != id {
        return error(StatusCode::UNPROCESSABLE_ENTITY, format!("App id {} does not match the path {id}", def.id));
    }
    if def.cmd.is_none() && def.container.is_none() {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "AppDefinition must either contain one of 'cmd' or 'args', and/or a 'container'".into(),
        );
    }
    def.version = None;
    let mut w = f.world.lock().unwrap();
    w.received.insert(id.clone(), body);
    let version = w.version();
    let deployment = uuid::Uuid::new_v4().to_string();
    let created = w.apps.get(&id).is_none_or(|a| a.deleted);
    let entry = w.apps.entry(id).or_insert_with(|| FakeApp {
        def: def.clone(),
        version: version.clone(),
        versions: BTreeMap::new(),
        tasks: vec![],
        last_failure: None,
        backoff_until: None,
        deleted: false,
        deployment: None,
    });
    entry.deleted = false;
    entry.def = def.clone();
    entry.version = version.clone();
    entry.versions.insert(version.clone(), def);
    entry.deployment = Some(deployment.clone());
    let code = if created { StatusCode::CREATED } else { StatusCode::OK };
    (code, Json(json!({"version": version, "deploymentId": deployment}))).into_response()
}

async fn app_delete(State(f): State<FakeMarathon>, Path(id): Path<String>) -> Response {
    let id = format!("/{id}");
    let mut w = f.world.lock().unwrap();
    let version = w.version();
    match w.apps.get_mut(&id).filter(|a| !a.deleted) {
        Some(a) => {
            a.deleted = true;
            let d = uuid::Uuid::new_v4().to_string();
            a.deployment = Some(d.clone());
            Json(json!({"version": version, "deploymentId": d})).into_response()
        }
        None => error(StatusCode::NOT_FOUND, format!("App '{id}' does not exist")),
    }
}

fn kill(t: &mut FakeTask) {
    if !t.killing {
        t.killing = true;
        t.task.state = "TASK_KILLING".into();
        let _ = t.stop.send(Some(Duration::from_secs(3)));
    }
}

/// Marathon's deployment logic for every app, every 20 ms.
async fn controller(f: FakeMarathon) {
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut launches = vec![];
        {
            let mut w = f.world.lock().unwrap();
            w.apps.retain(|_, a| !(a.deleted && a.tasks.is_empty()));
            for (id, a) in w.apps.iter_mut() {
                if a.deleted {
                    a.tasks.iter_mut().for_each(kill);
                    continue;
                }
                let n = a.def.instances as usize;
                let strategy = a.def.upgrade_strategy.clone().unwrap_or_default();
                let max_total = n + (n as f64 * strategy.maximum_over_capacity).ceil() as usize;
                let min_healthy = (n as f64 * strategy.minimum_health_capacity).ceil() as usize;
                let live = a.tasks.iter().filter(|t| !t.killing).count();
                let new = a.tasks.iter().filter(|t| !t.killing && t.task.version == a.version).count();
                let backing_off = a.backoff_until.is_some_and(|u| Instant::now() < u);
                if new < n && live < max_total.max(n) && !backing_off {
                    launches.push((id.clone(), a.version.clone(), a.def.clone()));
                }
                let mut healthy = a.tasks.iter().filter(|t| !t.killing && t.healthy).count();
                let version = a.version.clone();
                let mut old: Vec<&mut FakeTask> =
                    a.tasks.iter_mut().filter(|t| !t.killing && t.task.version != version).collect();
                old.sort_by_key(|t| t.healthy);
                for t in old {
                    if !t.healthy || healthy > min_healthy {
                        healthy -= usize::from(t.healthy);
                        kill(t);
                    }
                }
                let mut current: Vec<&mut FakeTask> =
                    a.tasks.iter_mut().filter(|t| !t.killing && t.task.version == version).collect();
                for t in current.iter_mut().skip(n) {
                    kill(t);
                }
                let done = a.tasks.iter().all(|t| t.task.version == a.version && t.healthy && !t.killing)
                    && a.tasks.len() == n;
                if done {
                    a.deployment = None;
                }
            }
        }
        for (id, version, def) in launches {
            launch(&f, id, version, def);
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn launch(f: &FakeMarathon, id: String, version: String, def: App) {
    let port = free_port();
    let task_id = format!("{}.{}", id.trim_start_matches('/').replace('/', "_"), uuid::Uuid::new_v4());
    let mut env = def.env.clone();
    for (k, v) in [
        ("PORT0", port.to_string()),
        ("PORT", port.to_string()),
        ("PORTS", port.to_string()),
        ("HOST", "127.0.0.1".to_string()),
        ("MARATHON_APP_ID", id.clone()),
        ("MARATHON_APP_VERSION", version.clone()),
        ("MESOS_TASK_ID", task_id.clone()),
    ] {
        env.insert(k.to_string(), v);
    }
    let cwd = match &def.container {
        Some(c) => f.images.get(&c.docker.image).cloned(),
        None => Some(f.sandbox.path().to_path_buf()),
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let probe = |h: &deis_sdk::scheduler::marathon::api::HealthCheck| Probe {
        check: match h.protocol.as_str() {
            "MESOS_HTTP" | "HTTP" => Check::Http(addr, h.path.clone().unwrap_or_else(|| "/".into())),
            "COMMAND" => Check::Exec(vec!["/bin/sh".into(), "-c".into(), h.command.clone().unwrap_or_default().value]),
            _ => Check::Tcp(addr),
        },
        initial_delay: Duration::ZERO,
        period: Duration::from_secs(u64::from(h.interval_seconds.max(1))),
        timeout: Duration::from_secs(u64::from(h.timeout_seconds.max(1))),
        success_threshold: 1,
        failure_threshold: h.max_consecutive_failures.max(1),
    };
    // A task is healthy when its checks pass; those that may kill are liveness.
    let readiness = def.health_checks.iter().find(|h| h.max_consecutive_failures == 0).map(probe);
    let liveness = def.health_checks.iter().find(|h| h.max_consecutive_failures > 0).map(probe);
    let (stop, stopped) = watch::channel(None);
    let task = Task {
        id: task_id.clone(),
        app_id: id.clone(),
        host: "127.0.0.1".into(),
        ip_addresses: vec![IpAddress { ip_address: "127.0.0.1".into(), protocol: "IPv4".into() }],
        ports: vec![port],
        state: "TASK_STAGING".into(),
        version: version.clone(),
        ..Default::default()
    };
    {
        let mut w = f.world.lock().unwrap();
        let Some(a) = w.apps.get_mut(&id) else { return };
        a.tasks.push(FakeTask { task, stop, healthy: false, killing: false });
    }
    let world = f.world.clone();
    let (tid, backoff) = (task_id.clone(), def.backoff_seconds.unwrap_or(1.0));
    let update = move |event: Event| {
        let mut w = world.lock().unwrap();
        let Some(a) = w.apps.get_mut(&id) else { return };
        let Some(i) = a.tasks.iter().position(|t| t.task.id == tid) else { return };
        let t = &mut a.tasks[i];
        match event {
            Event::Started { .. } => {
                t.task.state = "TASK_RUNNING".into();
                t.task.started_at = Some(k8s_openapi::jiff::Timestamp::now().to_string());
            }
            Event::Ready(r) => t.healthy = r && !def.health_checks.is_empty() || def.health_checks.is_empty(),
            Event::Exited { code } => {
                let killing = t.killing;
                a.tasks.remove(i);
                if !killing {
                    a.last_failure = Some(TaskFailure {
                        task_id: tid.clone(),
                        message: format!("Command exited with status {code}"),
                        state: "TASK_FAILED".into(),
                        version: version.clone(),
                    });
                    a.backoff_until = Some(Instant::now() + Duration::from_secs_f64(backoff));
                }
            }
            Event::Stopped | Event::Failed(_) => {
                a.tasks.remove(i);
            }
            Event::BackOff(_) => {}
        }
    };
    let options = RunOptions { readiness, liveness, restart: false, backoff: Duration::ZERO };
    let cmd = def.cmd.clone();
    tokio::spawn(async move {
        match (cwd, cmd) {
            (Some(cwd), Some(cmd)) => {
                let spec = ContainerSpec { argv: vec!["/bin/sh".into(), "-c".into(), cmd], cwd, env };
                runtime::run(spec, options, stopped, update).await
            }
            _ => update(Event::Failed("no command or unknown image".into())),
        }
    });
}
