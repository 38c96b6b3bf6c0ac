//! A fake Kubernetes API server, faithful to the requests deis makes and the answers
//! a real one gives: namespaces, services, deployments (rolled with `maxSurge` and
//! `maxUnavailable` of their strategy, one replica set per template), pods scheduled
//! on nodes by their requests and `nodeSelector`, run by a fake kubelet (a process
//! per container, readiness and liveness probes, restarts with back-off, graceful
//! termination), `Status` objects on errors, `resourceVersion` conflicts on replace.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use deis_sdk::scheduler::kubernetes::quantity;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus};
use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus,
    Namespace, NamespaceStatus, Node, NodeCondition, NodeStatus, Pod, PodCondition, PodStatus, Service,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{Value, json};
use tokio::sync::watch;

use super::runtime::{self, Check, ContainerSpec, Event, Images, Probe, RunOptions};

/// How long a crashed container waits before it starts again (a real kubelet starts
/// at 10 s).
const BACKOFF: Duration = Duration::from_millis(300);

struct FakePod {
    pod: Pod,
    /// Namespace and deployment it belongs to.
    owner: (String, String),
    template_hash: String,
    stop: Option<watch::Sender<Option<Duration>>>,
    ready: bool,
}

#[derive(Default)]
struct World {
    version: u64,
    nodes: Vec<Node>,
    namespaces: BTreeMap<String, Namespace>,
    services: BTreeMap<(String, String), Service>,
    deployments: BTreeMap<(String, String), Deployment>,
    pods: BTreeMap<(String, String), FakePod>,
    next_ip: u32,
    /// Requests seen, `VERB path`, for tests of what deis sends.
    requests: Vec<String>,
}

impl World {
    fn bump(&mut self) -> String {
        self.version += 1;
        self.version.to_string()
    }
}

/// A node: name, allocatable cpu and memory, labels.
pub type FakeNode<'a> = (&'a str, &'a str, &'a str, &'a [(&'a str, &'a str)]);

/// The fake server.
#[derive(Clone)]
pub struct FakeKube {
    world: Arc<Mutex<World>>,
    images: Images,
    ip_base: Ipv4Addr,
    /// Runs what `exec` asks, in a pod's directory.
    exec: Arc<deis_core::tty::LocalTtyBroker>,
    /// Its address.
    pub addr: SocketAddr,
}

fn status(code: StatusCode, reason: &str, message: String) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16()});
    (code, Json(body)).into_response()
}

fn not_found(kind: &str, name: &str) -> Response {
    status(StatusCode::NOT_FOUND, "NotFound", format!("{kind} \"{name}\" not found"))
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

fn list(kind: &str, version: u64, items: Vec<Value>) -> Response {
    let api_version = if kind == "DeploymentList" { "apps/v1" } else { "v1" };
    Json(json!({"apiVersion": api_version, "kind": kind, "metadata": {"resourceVersion": version.to_string()}, "items": items}))
        .into_response()
}

/// `labelSelector` of equality terms (`a=b,c=d`), as deis sends them.
fn selects(selector: Option<&String>, labels: Option<&BTreeMap<String, String>>) -> bool {
    let Some(sel) = selector.filter(|s| !s.is_empty()) else { return true };
    sel.split(',').all(|term| match term.split_once('=') {
        Some((k, v)) => {
            labels.and_then(|l| l.get(k.trim_end_matches('='))) == Some(&v.trim_start_matches('=').to_string())
        }
        None => labels.is_some_and(|l| l.contains_key(term)),
    })
}

/// `fieldSelector` terms on `status.phase` (`status.phase!=Succeeded`).
fn phase_selected(selector: Option<&String>, pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default();
    selector.is_none_or(|sel| {
        sel.split(',').all(|term| match term.split_once("!=") {
            Some(("status.phase", v)) => phase != v,
            _ => true,
        })
    })
}

fn to_value<T: serde::Serialize>(t: &T) -> Value {
    serde_json::to_value(t).unwrap()
}

impl FakeKube {
    /// Starts the server with `nodes` (name, cpu, memory, labels) and the images it can
    /// run.
    pub async fn start(nodes: &[FakeNode<'_>], images: HashMap<String, PathBuf>) -> Self {
        let mut world = World::default();
        for (name, cpu, memory, labels) in nodes {
            let mut l: BTreeMap<String, String> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            l.insert("kubernetes.io/hostname".into(), name.to_string());
            let alloc = BTreeMap::from([
                ("cpu".to_string(), Quantity(cpu.to_string())),
                ("memory".to_string(), Quantity(memory.to_string())),
            ]);
            world.nodes.push(Node {
                metadata: ObjectMeta {
                    name: Some(name.to_string()),
                    labels: Some(l),
                    resource_version: Some("1".into()),
                    ..Default::default()
                },
                status: Some(NodeStatus {
                    allocatable: Some(alloc.clone()),
                    capacity: Some(alloc),
                    conditions: Some(vec![NodeCondition {
                        type_: "Ready".into(),
                        status: "True".into(),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
        // Pod IPs on loopback, in a /16 of their own per server.
        let ip_base = Ipv4Addr::new(127, 100 + (std::process::id() % 100) as u8, 0, 0);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let fake = Self {
            world: Arc::new(Mutex::new(world)),
            images: Arc::new(images),
            ip_base,
            exec: Arc::new(deis_core::tty::LocalTtyBroker::default()),
            addr,
        };
        let app = axum::Router::new()
            .route("/api/v1/nodes", get(nodes_list))
            .route("/api/v1/pods", get(pods_all))
            .route("/api/v1/namespaces", axum::routing::post(namespace_create))
            .route("/api/v1/namespaces/{ns}", get(namespace_get).delete(namespace_delete))
            .route("/api/v1/namespaces/{ns}/pods", get(pods_list))
            .route("/api/v1/namespaces/{ns}/pods/{name}/exec", get(pod_exec))
            .route("/api/v1/namespaces/{ns}/services", get(services_list).post(service_create))
            .route("/apis/apps/v1/namespaces/{ns}/deployments", get(deployments_list).post(deployment_create))
            .route(
                "/apis/apps/v1/namespaces/{ns}/deployments/{name}",
                get(deployment_get).put(deployment_replace).delete(deployment_delete),
            )
            .fallback(|uri: axum::http::Uri| async move {
                status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    format!("the server could not find the requested resource ({uri})"),
                )
            })
            .layer(axum::middleware::from_fn_with_state(fake.clone(), record))
            .with_state(fake.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        tokio::spawn(controllers(fake.clone()));
        fake
    }

    /// A kubeconfig file for the server, in `dir`.
    pub fn kubeconfig(&self, dir: &std::path::Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{}\nusers:\n- name: deis\n  user:\n    token: fake-token\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: deis\ncurrent-context: fake\n",
            self.addr
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Requests seen so far (`VERB path?query`).
    pub fn requests(&self) -> Vec<String> {
        self.world.lock().unwrap().requests.clone()
    }

    /// A deployment as stored.
    pub fn deployment(&self, ns: &str, name: &str) -> Option<Deployment> {
        self.world.lock().unwrap().deployments.get(&(ns.to_string(), name.to_string())).cloned()
    }

    /// A service as stored.
    pub fn service(&self, ns: &str, name: &str) -> Option<Service> {
        self.world.lock().unwrap().services.get(&(ns.to_string(), name.to_string())).cloned()
    }

    /// Whether the namespace exists.
    pub fn has_namespace(&self, ns: &str) -> bool {
        self.world.lock().unwrap().namespaces.contains_key(ns)
    }
}

async fn record(State(fake): State<FakeKube>, req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let line = format!("{} {}", req.method(), req.uri());
    let authorised = req.headers().get("authorization").and_then(|v| v.to_str().ok()) == Some("Bearer fake-token");
    fake.world.lock().unwrap().requests.push(line);
    if !authorised {
        return status(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized".into());
    }
    next.run(req).await
}

type Params = Query<HashMap<String, String>>;

async fn nodes_list(State(f): State<FakeKube>) -> Response {
    let w = f.world.lock().unwrap();
    list("NodeList", w.version, w.nodes.iter().map(to_value).collect())
}

fn pods_where(f: &FakeKube, ns: Option<&str>, q: &HashMap<String, String>) -> Response {
    let w = f.world.lock().unwrap();
    let items = w
        .pods
        .iter()
        .filter(|((pns, _), _)| ns.is_none_or(|n| n == pns))
        .filter(|(_, p)| selects(q.get("labelSelector"), p.pod.metadata.labels.as_ref()))
        .filter(|(_, p)| phase_selected(q.get("fieldSelector"), &p.pod))
        .map(|(_, p)| to_value(&p.pod))
        .collect();
    list("PodList", w.version, items)
}

async fn pods_all(State(f): State<FakeKube>, Query(q): Params) -> Response {
    pods_where(&f, None, &q)
}

async fn pods_list(State(f): State<FakeKube>, Path(ns): Path<String>, Query(q): Params) -> Response {
    pods_where(&f, Some(&ns), &q)
}

async fn namespace_create(State(f): State<FakeKube>, Json(mut ns): Json<Namespace>) -> Response {
    let mut w = f.world.lock().unwrap();
    let Some(name) = ns.metadata.name.clone() else {
        return status(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", "metadata.name: Required value".into());
    };
    if w.namespaces.contains_key(&name) {
        return status(StatusCode::CONFLICT, "AlreadyExists", format!("namespaces \"{name}\" already exists"));
    }
    ns.metadata.resource_version = Some(w.bump());
    ns.metadata.uid = Some(uuid::Uuid::new_v4().to_string());
    ns.metadata.creation_timestamp = Some(now());
    ns.status = Some(NamespaceStatus { phase: Some("Active".into()), ..Default::default() });
    w.namespaces.insert(name, ns.clone());
    (StatusCode::CREATED, Json(ns)).into_response()
}

async fn namespace_get(State(f): State<FakeKube>, Path(ns): Path<String>) -> Response {
    match f.world.lock().unwrap().namespaces.get(&ns) {
        Some(n) => Json(n.clone()).into_response(),
        None => not_found("namespaces", &ns),
    }
}

async fn namespace_delete(State(f): State<FakeKube>, Path(ns): Path<String>) -> Response {
    let mut w = f.world.lock().unwrap();
    let version = w.bump();
    let Some(n) = w.namespaces.get_mut(&ns) else { return not_found("namespaces", &ns) };
    n.metadata.deletion_timestamp.get_or_insert_with(now);
    n.metadata.resource_version = Some(version);
    n.status = Some(NamespaceStatus { phase: Some("Terminating".into()), ..Default::default() });
    Json(n.clone()).into_response()
}

fn terminating(w: &World, ns: &str) -> bool {
    w.namespaces.get(ns).is_some_and(|n| n.metadata.deletion_timestamp.is_some())
}

async fn services_list(State(f): State<FakeKube>, Path(ns): Path<String>) -> Response {
    let w = f.world.lock().unwrap();
    let items = w.services.iter().filter(|((n, _), _)| *n == ns).map(|(_, s)| to_value(s)).collect();
    list("ServiceList", w.version, items)
}

async fn service_create(State(f): State<FakeKube>, Path(ns): Path<String>, Json(mut s): Json<Service>) -> Response {
    let mut w = f.world.lock().unwrap();
    if !w.namespaces.contains_key(&ns) {
        return not_found("namespaces", &ns);
    }
    if terminating(&w, &ns) {
        return status(StatusCode::FORBIDDEN, "Forbidden", format!("namespace {ns} is being terminated"));
    }
    let name = s.metadata.name.clone().unwrap_or_default();
    if w.services.contains_key(&(ns.clone(), name.clone())) {
        return status(StatusCode::CONFLICT, "AlreadyExists", format!("services \"{name}\" already exists"));
    }
    s.metadata.namespace = Some(ns.clone());
    s.metadata.resource_version = Some(w.bump());
    s.metadata.uid = Some(uuid::Uuid::new_v4().to_string());
    if let Some(spec) = s.spec.as_mut() {
        spec.cluster_ip = Some("10.96.0.10".into());
    }
    w.services.insert((ns, name), s.clone());
    (StatusCode::CREATED, Json(s)).into_response()
}

async fn deployments_list(State(f): State<FakeKube>, Path(ns): Path<String>, Query(q): Params) -> Response {
    let w = f.world.lock().unwrap();
    let items = w
        .deployments
        .iter()
        .filter(|((n, _), d)| *n == ns && selects(q.get("labelSelector"), d.metadata.labels.as_ref()))
        .map(|(_, d)| to_value(d))
        .collect();
    list("DeploymentList", w.version, items)
}

fn template_hash(d: &Deployment) -> String {
    let t = d.spec.as_ref().map(|s| to_value(&s.template)).unwrap_or_default();
    let digest = <sha2::Sha256 as sha2::Digest>::digest(t.to_string().as_bytes());
    hex::encode(&digest[..5])
}

/// Checks what a real API server would refuse.
fn validate(d: &Deployment) -> Result<(), Box<Response>> {
    let Some(spec) = &d.spec else {
        return Err(Box::new(status(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", "spec: Required value".into())));
    };
    let selector = spec.selector.match_labels.clone().unwrap_or_default();
    let labels = spec.template.metadata.as_ref().and_then(|m| m.labels.clone()).unwrap_or_default();
    if selector.is_empty() || !selector.iter().all(|(k, v)| labels.get(k) == Some(v)) {
        return Err(Box::new(status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            "spec.template.metadata.labels: Invalid value: `selector` does not match template `labels`".into(),
        )));
    }
    if spec
        .template
        .spec
        .as_ref()
        .is_none_or(|s| s.containers.is_empty() || s.containers.iter().any(|c| c.image.is_none()))
    {
        return Err(Box::new(status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            "spec.template.spec.containers: image: Required value".into(),
        )));
    }
    Ok(())
}

async fn deployment_create(
    State(f): State<FakeKube>,
    Path(ns): Path<String>,
    Json(mut d): Json<Deployment>,
) -> Response {
    if let Err(r) = validate(&d) {
        return *r;
    }
    let mut w = f.world.lock().unwrap();
    if !w.namespaces.contains_key(&ns) {
        return not_found("namespaces", &ns);
    }
    if terminating(&w, &ns) {
        return status(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!("unable to create new content in namespace {ns} because it is being terminated"),
        );
    }
    let name = d.metadata.name.clone().unwrap_or_default();
    if w.deployments.contains_key(&(ns.clone(), name.clone())) {
        return status(StatusCode::CONFLICT, "AlreadyExists", format!("deployments.apps \"{name}\" already exists"));
    }
    d.metadata.namespace = Some(ns.clone());
    d.metadata.resource_version = Some(w.bump());
    d.metadata.uid = Some(uuid::Uuid::new_v4().to_string());
    d.metadata.generation = Some(1);
    d.metadata.creation_timestamp = Some(now());
    w.deployments.insert((ns, name), d.clone());
    (StatusCode::CREATED, Json(d)).into_response()
}

async fn deployment_get(State(f): State<FakeKube>, Path((ns, name)): Path<(String, String)>) -> Response {
    match f.world.lock().unwrap().deployments.get(&(ns, name.clone())) {
        Some(d) => Json(d.clone()).into_response(),
        None => not_found("deployments.apps", &name),
    }
}

async fn deployment_replace(
    State(f): State<FakeKube>,
    Path((ns, name)): Path<(String, String)>,
    Json(mut d): Json<Deployment>,
) -> Response {
    if let Err(r) = validate(&d) {
        return *r;
    }
    let mut w = f.world.lock().unwrap();
    let key = (ns.clone(), name.clone());
    let Some(current) = w.deployments.get(&key).cloned() else { return not_found("deployments.apps", &name) };
    if d.metadata.resource_version != current.metadata.resource_version {
        return status(
            StatusCode::CONFLICT,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on deployments.apps \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
            ),
        );
    }
    let changed = to_value(&d.spec) != to_value(&current.spec);
    d.metadata.namespace = Some(ns);
    d.metadata.uid = current.metadata.uid.clone();
    d.metadata.creation_timestamp = current.metadata.creation_timestamp.clone();
    d.metadata.generation = Some(current.metadata.generation.unwrap_or(1) + i64::from(changed));
    d.status = current.status.clone();
    d.metadata.resource_version = Some(w.bump());
    w.deployments.insert(key, d.clone());
    Json(d).into_response()
}

async fn deployment_delete(State(f): State<FakeKube>, Path((ns, name)): Path<(String, String)>) -> Response {
    let mut w = f.world.lock().unwrap();
    match w.deployments.remove(&(ns.clone(), name.clone())) {
        Some(_) => {
            w.bump();
            Json(json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                "details": {"name": name, "group": "apps", "kind": "deployments"}}))
            .into_response()
        }
        None => not_found("deployments.apps", &name),
    }
}

fn is_ready(p: &FakePod) -> bool {
    p.ready && p.pod.metadata.deletion_timestamp.is_none()
}

fn int_or(v: Option<&IntOrString>, default: i32) -> i32 {
    match v {
        Some(IntOrString::Int(i)) => *i,
        _ => default,
    }
}

fn requests(pod: &Pod) -> (u64, u64) {
    let mut r = (0, 0);
    for c in pod.spec.iter().flat_map(|s| &s.containers) {
        let req = c.resources.as_ref().and_then(|r| r.requests.as_ref());
        let get = |k: &str| req.and_then(|r| r.get(k)).map(|q| q.0.as_str());
        let x = quantity::resources(get("cpu"), get("memory"));
        r.0 += x.cpu_millis;
        r.1 += x.memory_bytes;
    }
    r
}

/// Marks a pod terminating and stops its container (the kubelet's part).
fn terminate(p: &mut FakePod, version: String) {
    if p.pod.metadata.deletion_timestamp.is_some() {
        return;
    }
    p.pod.metadata.deletion_timestamp = Some(now());
    p.pod.metadata.resource_version = Some(version);
    let grace = p.pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds).unwrap_or(30);
    match &p.stop {
        Some(stop) => {
            let _ = stop.send(Some(Duration::from_secs(grace.max(0) as u64)));
        }
        // Never started: nothing to stop.
        None => p.stop = None,
    }
}

/// The deployment, scheduler, namespace and kubelet controllers, every 20 ms.
async fn controllers(f: FakeKube) {
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut starts = vec![];
        {
            let mut guard = f.world.lock().unwrap();
            let w = &mut *guard;
            // Deployments.
            let deployments: Vec<((String, String), Deployment)> =
                w.deployments.iter().map(|(k, d)| (k.clone(), d.clone())).collect();
            for (key, d) in &deployments {
                let spec = d.spec.clone().unwrap_or_default();
                let replicas = spec.replicas.unwrap_or(1).max(0) as usize;
                let rolling = spec.strategy.as_ref().and_then(|s| s.rolling_update.as_ref());
                let surge = int_or(rolling.and_then(|r| r.max_surge.as_ref()), 1).max(0) as usize;
                let unavailable = int_or(rolling.and_then(|r| r.max_unavailable.as_ref()), 0).max(0) as usize;
                let hash = template_hash(d);
                let live: Vec<(String, bool, bool)> = w
                    .pods
                    .iter()
                    .filter(|(_, p)| p.owner == *key && p.pod.metadata.deletion_timestamp.is_none())
                    .map(|((_, n), p)| (n.clone(), p.template_hash == hash, is_ready(p)))
                    .collect();
                let new: Vec<&(String, bool, bool)> = live.iter().filter(|p| p.1).collect();
                let old: Vec<&(String, bool, bool)> = live.iter().filter(|p| !p.1).collect();
                if new.len() < replicas && live.len() < replicas + surge {
                    let version = w.bump();
                    let pod = new_pod(d, &hash, version);
                    let name = pod.metadata.name.clone().unwrap();
                    w.pods.insert(
                        (key.0.clone(), name),
                        FakePod { pod, owner: key.clone(), template_hash: hash.clone(), stop: None, ready: false },
                    );
                }
                let ready_new = new.iter().filter(|p| p.2).count();
                let ready_old = old.iter().filter(|p| p.2).count();
                let mut to_stop: Vec<String> = vec![];
                // Old pods go while enough stay available; not-ready ones first.
                let mut available = ready_new + ready_old;
                let mut old_sorted = old.clone();
                old_sorted.sort_by_key(|p| p.2);
                for p in old_sorted {
                    let after = available - usize::from(p.2);
                    if after + unavailable >= replicas || !p.2 && ready_new + ready_old + unavailable >= replicas {
                        available = after;
                        to_stop.push(p.0.clone());
                    }
                }
                if new.len() > replicas {
                    to_stop.extend(new[replicas..].iter().map(|p| p.0.clone()));
                }
                for name in to_stop {
                    let version = w.bump();
                    if let Some(p) = w.pods.get_mut(&(key.0.clone(), name)) {
                        terminate(p, version);
                    }
                }
                let status = DeploymentStatus {
                    observed_generation: d.metadata.generation,
                    replicas: Some(live.len() as i32),
                    updated_replicas: Some(new.len() as i32),
                    ready_replicas: Some((ready_new + ready_old) as i32),
                    available_replicas: Some((ready_new + ready_old) as i32),
                    ..Default::default()
                };
                if let Some(stored) = w.deployments.get_mut(key) {
                    stored.status = Some(status);
                }
            }
            // Pods whose deployment is gone, and pods of terminating namespaces.
            let orphans: Vec<(String, String)> = w
                .pods
                .iter()
                .filter(|(_, p)| !w.deployments.contains_key(&p.owner) || terminating(w, &p.owner.0))
                .map(|(k, _)| k.clone())
                .collect();
            for k in orphans {
                let version = w.bump();
                if let Some(p) = w.pods.get_mut(&k) {
                    terminate(p, version);
                }
            }
            // Terminating pods that stopped (or never started) are gone.
            w.pods.retain(|_, p| !(p.pod.metadata.deletion_timestamp.is_some() && p.stop.is_none()));
            // Namespaces being deleted: their content goes, then they do.
            let done: Vec<String> = w
                .namespaces
                .iter()
                .filter(|(n, ns)| ns.metadata.deletion_timestamp.is_some() && !w.pods.keys().any(|(pns, _)| pns == *n))
                .map(|(n, _)| n.clone())
                .collect();
            for n in done {
                w.deployments.retain(|(ns, _), _| *ns != n);
                w.services.retain(|(ns, _), _| *ns != n);
                w.namespaces.remove(&n);
                w.bump();
            }
            // The scheduler: pending pods without a node go to the first that fits.
            let mut used: HashMap<String, (u64, u64)> = HashMap::new();
            for p in w.pods.values() {
                if let Some(node) = p.pod.spec.as_ref().and_then(|s| s.node_name.clone()) {
                    let r = requests(&p.pod);
                    let e = used.entry(node).or_default();
                    e.0 += r.0;
                    e.1 += r.1;
                }
            }
            let unscheduled: Vec<(String, String)> = w
                .pods
                .iter()
                .filter(|(_, p)| {
                    p.pod.spec.as_ref().is_some_and(|s| s.node_name.is_none())
                        && p.pod.metadata.deletion_timestamp.is_none()
                })
                .map(|(k, _)| k.clone())
                .collect();
            for k in unscheduled {
                let (cpu, mem) = requests(&w.pods[&k].pod);
                let selector = w.pods[&k].pod.spec.as_ref().and_then(|s| s.node_selector.clone()).unwrap_or_default();
                let fits = w.nodes.iter().find(|n| {
                    let alloc = n.status.as_ref().and_then(|s| s.allocatable.clone()).unwrap_or_default();
                    let cap = quantity::resources(
                        alloc.get("cpu").map(|q| q.0.as_str()),
                        alloc.get("memory").map(|q| q.0.as_str()),
                    );
                    let name = n.metadata.name.clone().unwrap_or_default();
                    let u = used.get(&name).copied().unwrap_or_default();
                    let labels = n.metadata.labels.clone().unwrap_or_default();
                    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
                        && u.0 + cpu <= cap.cpu_millis
                        && u.1 + mem <= cap.memory_bytes
                });
                let Some(node) = fits.and_then(|n| n.metadata.name.clone()) else {
                    let p = w.pods.get_mut(&k).unwrap();
                    p.pod.status = Some(PodStatus {
                        phase: Some("Pending".into()),
                        conditions: Some(vec![PodCondition {
                            type_: "PodScheduled".into(),
                            status: "False".into(),
                            reason: Some("Unschedulable".into()),
                            message: Some(
                                "0/2 nodes are available: insufficient resources or node selector mismatch".into(),
                            ),
                            ..Default::default()
                        }]),
                        ..Default::default()
                    });
                    continue;
                };
                let e = used.entry(node.clone()).or_default();
                e.0 += cpu;
                e.1 += mem;
                w.next_ip += 1;
                let [_, _, x, y] = w.next_ip.to_be_bytes();
                let [a, b, _, _] = f.ip_base.octets();
                let ip = Ipv4Addr::new(a, b, x, y.max(1));
                let version = w.bump();
                let p = w.pods.get_mut(&k).unwrap();
                p.pod.spec.as_mut().unwrap().node_name = Some(node);
                p.pod.metadata.resource_version = Some(version);
                p.pod.status = Some(PodStatus {
                    phase: Some("Pending".into()),
                    pod_ip: Some(ip.to_string()),
                    host_ip: Some("127.0.0.1".into()),
                    start_time: Some(now()),
                    conditions: Some(vec![
                        PodCondition { type_: "PodScheduled".into(), status: "True".into(), ..Default::default() },
                        PodCondition { type_: "Ready".into(), status: "False".into(), ..Default::default() },
                    ]),
                    container_statuses: Some(vec![ContainerStatus {
                        name: p.pod.spec.as_ref().unwrap().containers[0].name.clone(),
                        image: p.pod.spec.as_ref().unwrap().containers[0].image.clone().unwrap_or_default(),
                        state: Some(ContainerState {
                            waiting: Some(ContainerStateWaiting {
                                reason: Some("ContainerCreating".into()),
                                ..Default::default()
                            }),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }]),
                    ..Default::default()
                });
                let (stop, stopped) = watch::channel(None);
                p.stop = Some(stop);
                starts.push((k.clone(), p.pod.clone(), stopped));
            }
        }
        for (key, pod, stopped) in starts {
            start_kubelet(&f, key, pod, stopped);
        }
    }
}

fn new_pod(d: &Deployment, hash: &str, version: String) -> Pod {
    let template = d.spec.as_ref().unwrap().template.clone();
    let mut meta = template.metadata.unwrap_or_default();
    let base = d.metadata.name.clone().unwrap_or_default();
    let suffix: String = uuid::Uuid::new_v4().simple().to_string()[..5].to_string();
    meta.name = Some(format!("{base}-{hash}-{suffix}"));
    meta.namespace = d.metadata.namespace.clone();
    meta.uid = Some(uuid::Uuid::new_v4().to_string());
    meta.resource_version = Some(version);
    meta.creation_timestamp = Some(now());
    meta.labels.get_or_insert_default().insert("pod-template-hash".into(), hash.to_string());
    Pod {
        metadata: meta,
        spec: template.spec,
        status: Some(PodStatus { phase: Some("Pending".into()), ..Default::default() }),
    }
}

fn probe_of(p: &k8s_openapi::api::core::v1::Probe, ip: IpAddr) -> Option<Probe> {
    let port = |v: &IntOrString| match v {
        IntOrString::Int(i) => *i as u16,
        IntOrString::String(_) => 0,
    };
    let check = if let Some(t) = &p.tcp_socket {
        Check::Tcp(SocketAddr::new(ip, port(&t.port)))
    } else if let Some(h) = &p.http_get {
        Check::Http(SocketAddr::new(ip, port(&h.port)), h.path.clone().unwrap_or_else(|| "/".into()))
    } else {
        Check::Exec(p.exec.as_ref()?.command.clone()?)
    };
    let secs = |v: Option<i32>, d: i32| Duration::from_secs(v.unwrap_or(d).max(0) as u64);
    Some(Probe {
        check,
        initial_delay: secs(p.initial_delay_seconds, 0),
        period: secs(p.period_seconds, 10),
        timeout: secs(p.timeout_seconds, 1),
        success_threshold: p.success_threshold.unwrap_or(1) as u32,
        failure_threshold: p.failure_threshold.unwrap_or(3) as u32,
    })
}

/// The container's process: command and args, the image's directory (or the
/// `hostPath` volume mounted at its working directory), env with the downward API.
fn container_spec(f: &FakeKube, pod: &Pod, c: &Container) -> Result<ContainerSpec, String> {
    let spec = pod.spec.as_ref().ok_or("no spec")?;
    let status = pod.status.clone().unwrap_or_default();
    let image = c.image.clone().unwrap_or_default();
    let mut cwd = f.images.get(&image).cloned().ok_or_else(|| format!("ErrImagePull: {image}"))?;
    if let Some(wd) = &c.working_dir {
        for m in c.volume_mounts.iter().flatten().filter(|m| m.mount_path == *wd) {
            let v = spec.volumes.iter().flatten().find(|v| v.name == m.name).ok_or("missing volume")?;
            cwd = PathBuf::from(&v.host_path.as_ref().ok_or("only hostPath volumes")?.path);
        }
    }
    let mut env = BTreeMap::from([("HOSTNAME".to_string(), pod.metadata.name.clone().unwrap_or_default())]);
    for e in c.env.iter().flatten() {
        let value = match (&e.value, e.value_from.as_ref().and_then(|v| v.field_ref.as_ref())) {
            (Some(v), _) => v.clone(),
            (None, Some(r)) => match r.field_path.as_str() {
                "status.podIP" => status.pod_ip.clone().unwrap_or_default(),
                "metadata.name" => pod.metadata.name.clone().unwrap_or_default(),
                "metadata.namespace" => pod.metadata.namespace.clone().unwrap_or_default(),
                "spec.nodeName" => spec.node_name.clone().unwrap_or_default(),
                other => return Err(format!("unsupported fieldRef {other}")),
            },
            _ => String::new(),
        };
        env.insert(e.name.clone(), value);
    }
    let argv: Vec<String> = c.command.iter().flatten().chain(c.args.iter().flatten()).cloned().collect();
    if argv.is_empty() {
        return Err("the fake's images have no default command".into());
    }
    Ok(ContainerSpec { argv, cwd, env })
}

fn start_kubelet(f: &FakeKube, key: (String, String), pod: Pod, stopped: watch::Receiver<Option<Duration>>) {
    let c = pod.spec.as_ref().unwrap().containers[0].clone();
    let ip: IpAddr = pod.status.as_ref().and_then(|s| s.pod_ip.as_deref()).and_then(|s| s.parse().ok()).unwrap();
    let world = f.world.clone();
    let update = move |event: Event| {
        let mut w = world.lock().unwrap();
        let version = w.bump();
        let Some(p) = w.pods.get_mut(&key) else { return };
        p.pod.metadata.resource_version = Some(version);
        let status = p.pod.status.get_or_insert_default();
        let cs = &mut status.container_statuses.get_or_insert_default()[0];
        match event {
            Event::Started { .. } => {
                cs.state = Some(ContainerState {
                    running: Some(ContainerStateRunning { started_at: Some(now()) }),
                    ..Default::default()
                });
                cs.started = Some(true);
                status.phase = Some("Running".into());
            }
            Event::Ready(r) => {
                cs.ready = r;
                p.ready = r;
                for cond in status.conditions.get_or_insert_default().iter_mut().filter(|c| c.type_ == "Ready") {
                    cond.status = if r { "True" } else { "False" }.into();
                }
            }
            Event::Exited { code } => {
                let t = ContainerStateTerminated {
                    exit_code: code,
                    reason: Some(if code == 0 { "Completed" } else { "Error" }.into()),
                    finished_at: Some(now()),
                    ..Default::default()
                };
                cs.state = Some(ContainerState { terminated: Some(t), ..Default::default() });
                cs.ready = false;
                p.ready = false;
                for cond in status.conditions.get_or_insert_default().iter_mut().filter(|c| c.type_ == "Ready") {
                    cond.status = "False".into();
                }
            }
            Event::BackOff(_) => {
                cs.last_state = cs.state.take();
                cs.restart_count += 1;
                cs.state = Some(ContainerState {
                    waiting: Some(ContainerStateWaiting {
                        reason: Some("CrashLoopBackOff".into()),
                        ..Default::default()
                    }),
                    ..Default::default()
                });
            }
            Event::Stopped => p.stop = None,
            Event::Failed(msg) => {
                cs.state = Some(ContainerState {
                    waiting: Some(ContainerStateWaiting {
                        reason: Some("CreateContainerError".into()),
                        message: Some(msg),
                    }),
                    ..Default::default()
                });
                // Nothing runs: nothing to stop.
                p.stop = None;
            }
        }
    };
    let spec = container_spec(f, &pod, &c);
    let options = RunOptions {
        readiness: c.readiness_probe.as_ref().and_then(|p| probe_of(p, ip)),
        liveness: c.liveness_probe.as_ref().and_then(|p| probe_of(p, ip)),
        restart: true,
        backoff: BACKOFF,
    };
    tokio::spawn(async move {
        match spec {
            Ok(spec) => runtime::run(spec, options, stopped, update).await,
            Err(msg) => update(Event::Failed(msg)),
        }
    });
}

/// `GET .../pods/{name}/exec?command=...&stdin=true&tty=true` upgraded to a WebSocket
/// speaking the channel protocol the client offers (v5 preferred, v4). As a kubelet,
/// the command keeps running when the connection ends (only a TTY's hang-up would end
/// it): killing it is the client's business.
async fn pod_exec(
    State(f): State<FakeKube>,
    Path((ns, name)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    mut req: axum::extract::Request,
) -> Response {
    use deis_core::tty::channel::{Frame, decode, encode, negotiate, status_exit};
    use deis_core::tty::{SessionInput, SessionOutput, SessionSpec, TtyBroker};
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let params: Vec<(String, String)> =
        url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()).into_owned().collect();
    let flag = |k: &str| params.iter().any(|(key, v)| key == k && v == "true");
    let command: Vec<String> = params.iter().filter(|(k, _)| k == "command").map(|(_, v)| v.clone()).collect();
    let headers = req.headers();
    let offered: Vec<String> = headers
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|p| p.trim().to_string()))
        .collect();
    let Some(protocol) = negotiate(offered.iter().map(String::as_str)) else {
        return status(StatusCode::BAD_REQUEST, "BadRequest", "no supported channel protocol offered".into());
    };
    let Some(key) = headers.get("sec-websocket-key").map(|k| k.as_bytes().to_vec()) else {
        return status(StatusCode::BAD_REQUEST, "BadRequest", "Upgrade request required".into());
    };
    let spec = {
        let w = f.world.lock().unwrap();
        let Some(p) = w.pods.get(&(ns.clone(), name.clone())) else { return not_found("pods", &name) };
        if p.pod.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Running") {
            return status(StatusCode::BAD_REQUEST, "BadRequest", format!("pod {name} is not running"));
        }
        match container_spec(&f, &p.pod, &p.pod.spec.as_ref().unwrap().containers[0]) {
            Ok(c) => c,
            Err(e) => return status(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", e),
        }
    };
    if command.is_empty() {
        return status(StatusCode::BAD_REQUEST, "BadRequest", "you must specify at least 1 command".into());
    }
    // A single argument is a program here, not a shell line.
    let argv = if command.len() == 1 { vec!["/usr/bin/env".into(), command[0].clone()] } else { command };
    let session_spec = SessionSpec {
        app: deis_core::testing::app_name(&ns),
        proc_type: deis_core::testing::process_type("exec"),
        artifact: deis_sdk::scheduler::Artifact::Source { dir: spec.cwd.clone() },
        release: 0,
        env: spec.env.clone(),
        command: argv,
        tty: flag("tty"),
        // A runtime's exec terminal starts at 0x0, until the client's first resize.
        size: flag("tty").then_some(deis_core::tty::TermSize { cols: 0, rows: 0 }),
        user: "kubelet".into(),
        identity: None,
        limits: Default::default(),
    };
    let upgrade = hyper::upgrade::on(&mut req);
    let session = match f.exec.open(session_spec).await {
        Ok(s) => s,
        Err(e) => return status(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", e.to_string()),
    };
    let with_stdin = flag("stdin");
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let io = hyper_util::rt::TokioIo::new(upgraded);
        let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            io,
            tokio_tungstenite::tungstenite::protocol::Role::Server,
            None,
        )
        .await;
        let (mut sink, mut stream) = ws.split();
        let deis_core::tty::Session { input, mut output } = session;
        let (hung_up, client_gone) = tokio::sync::oneshot::channel::<()>();
        let reader = tokio::spawn(async move {
            // Reads to the end of the connection, also once the command is over: a
            // socket closed with bytes unread (say the client's end of stdin, sent as
            // the command exits) makes the kernel send a reset, which can destroy the
            // status frame before the client reads it (its exit is then lost).
            let mut to_command = Some(input);
            while let Some(Ok(msg)) = stream.next().await {
                let (Message::Binary(bytes), Some(input)) = (msg, to_command.as_ref()) else { continue };
                let sent = match decode(&bytes, protocol) {
                    Ok(Frame::Stdin(b)) if with_stdin => input.send(SessionInput::Stdin(b)).await,
                    Ok(Frame::Resize(size)) => input.send(SessionInput::Resize(size)).await,
                    Ok(Frame::Close(0)) => input.send(SessionInput::Eof).await,
                    _ => Ok(()),
                };
                if sent.is_err() {
                    // The command is over: what else comes is read and dropped.
                    to_command = None;
                }
            }
            let _ = hung_up.send(());
            // The connection ended: the command goes on (as with a kubelet).
            std::future::pending::<()>().await;
            drop(to_command);
        });
        let mut connected = true;
        while let Some(out) = output.recv().await {
            let frame = match out {
                SessionOutput::Stdout(b) => Frame::Stdout(b),
                SessionOutput::Stderr(b) => Frame::Stderr(b),
                SessionOutput::Exit(e) => Frame::Status(status_exit(e)),
            };
            if connected && sink.send(Message::Binary(encode(&frame).into())).await.is_err() {
                connected = false;
            }
        }
        let _ = sink.close().await;
        // Closes as RFC 6455 asks: the socket is dropped once the client has hung up
        // (the kube client does after the status, without a close frame), never with
        // its last frames unread (see the reader).
        let _ = tokio::time::timeout(std::time::Duration::from_secs(30), client_gone).await;
        reader.abort();
    });
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(&key);
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("upgrade", "websocket")
        .header("connection", "Upgrade")
        .header("sec-websocket-accept", accept)
        .header("sec-websocket-protocol", protocol.name())
        .body(axum::body::Body::empty())
        .unwrap()
}
