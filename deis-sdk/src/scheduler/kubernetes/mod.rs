//! [`KubernetesScheduler`] (preview, feature `kubernetes`): units as pods of a
//! Kubernetes cluster, through its API (kube-rs).
//!
//! - **Namespace per app**, named like the app, labelled
//!   `app.kubernetes.io/managed-by=deis`; removing the app deletes it, and `remove`
//!   returns once it is gone.
//! - **Deployment per unit slot** (`<type>-<n>`, one replica; see
//!   [`crate::scheduler`] for why not one per type) with the unit's cpu and memory as
//!   requests and limits, the app's tags as a `nodeSelector`, `PORT` ([`DEFAULT_PORT`]),
//!   `DEIS_APP`, `DEIS_RELEASE`, `DEIS_UNIT` and `POD_IP` (from the downward API) in its
//!   environment. Rolling updates are the Deployment's (`maxSurge` 1,
//!   `maxUnavailable` 0: new pod before old), one slot at a time; readiness is the
//!   process type's healthcheck (`httpGet`, `tcpSocket`, `exec` probes), or for `web`
//!   an open port; liveness checks become liveness probes.
//! - **Service per `web` type**: port 80 to the units' `PORT`, for in-cluster callers.
//! - **Unit states from pods**: ready -> `up`, running -> `created`, terminated or in
//!   `CrashLoopBackOff` -> `crashed` (the restart count is the unit's), terminating
//!   -> `down`; the pod IP and `PORT` are the unit's address. Pods are polled.
//! - **Admission** by the placement engine over the nodes' allocatable cpu and memory
//!   minus the requests of the pods already there: a spec that does not fit is
//!   refused and nothing changes.
//! - **Images** run as they are (a non-empty command runs with `/bin/sh -c`); a
//!   **source build** runs on the [stack image](KubernetesSchedulerConfig::stack_image)
//!   with its directory mounted from the node (`hostPath`) at `/app`: it must exist at
//!   the same path on the nodes (a one-node cluster on this machine, or shared storage).
//! - `deis run`: [`crate::tty::kubernetes`] execs in a unit pod (deisd wires it with
//!   `--scheduler kubernetes`).
//!
//! Every answer of the API server is read up to [`MAX_RESPONSE_BYTES`].

mod objects;
pub mod quantity;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use deis_core::model::AppName;
use deis_core::model::limits::Resources;
use deis_core::scheduler::placement::{Health, Planes, Policy};
use deis_core::scheduler::{AppSpec, Capacity, NodeStatus, Result, SchedulerError};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

pub use self::objects::{
    ANNOTATION_HASH, ANNOTATION_INSTANCE, APP_DIR, CONTAINER, LABEL_APP, LABEL_MANAGED_BY, LABEL_NUMBER, LABEL_RELEASE,
    LABEL_TYPE, MANAGER, namespace_of,
};
use self::objects::{Shape, deployment_name, managed_selector};
use crate::scheduler::slots::{Observed, SlotBackend, SlotKey, SlotRecord, SlotScheduler, slot_scheduler};

/// `PORT` of every unit (as Deis Workflow on Kubernetes).
pub const DEFAULT_PORT: u16 = 5000;
/// Largest answer read from the API server.
pub const MAX_RESPONSE_BYTES: usize = 16 << 20;
/// How long removing an app may take.
const REMOVE_TIMEOUT: Duration = Duration::from_secs(120);

/// Settings of the [`KubernetesScheduler`]; [`KubernetesSchedulerConfig::new`] gives the
/// defaults.
#[derive(Debug, Clone)]
pub struct KubernetesSchedulerConfig {
    /// Kubeconfig files (merged in order, as `KUBECONFIG` lists them); empty: `KUBECONFIG`,
    /// else `~/.kube/config`, else the in-cluster service account.
    pub kubeconfig: Vec<PathBuf>,
    /// The kubeconfig context to use (default: its current context).
    pub context: Option<String>,
    /// `PORT` of the units (default [`DEFAULT_PORT`]).
    pub port: u16,
    /// Image source builds run on (default [`crate::scheduler::DEFAULT_STACK_IMAGE`]).
    pub stack_image: String,
    /// How admission ranks nodes (default bin-pack).
    pub policy: Policy,
    /// How long a unit gets to stop (default 10 s).
    pub grace: Duration,
    /// How long one slot may take to roll before the next goes anyway (default 120 s).
    pub settle_timeout: Duration,
}

impl KubernetesSchedulerConfig {
    /// Defaults, with the kubeconfig files `kubeconfig` (may be empty).
    pub fn new(kubeconfig: Vec<PathBuf>) -> Self {
        Self {
            kubeconfig,
            context: None,
            port: DEFAULT_PORT,
            stack_image: crate::scheduler::DEFAULT_STACK_IMAGE.into(),
            policy: Policy::Binpack,
            grace: Duration::from_secs(10),
            settle_timeout: Duration::from_secs(120),
        }
    }

    /// The paths of a `KUBECONFIG`-style list (`a:b`).
    pub fn paths(list: &str) -> Vec<PathBuf> {
        std::env::split_paths(list).filter(|p| !p.as_os_str().is_empty()).collect()
    }
}

/// Errors connecting to a cluster.
fn config_error(what: &str, e: impl std::fmt::Display) -> SchedulerError {
    SchedulerError::Backend(format!("kubernetes: {what}: {e}").into())
}

/// Runs units as pods of a Kubernetes cluster (preview). See the module docs.
#[derive(Debug)]
pub struct KubernetesScheduler {
    inner: SlotScheduler<Kube>,
}

impl KubernetesScheduler {
    /// Reads the kubeconfig, connects, and checks that the API server answers (by
    /// listing nodes).
    pub async fn connect(config: KubernetesSchedulerConfig) -> Result<Arc<Self>> {
        let client = client(&config).await?;
        let backend = Kube { client, shape: shape(&config) };
        backend.nodes().await?;
        Ok(Arc::new(Self { inner: SlotScheduler::new(backend, config.policy, config.settle_timeout) }))
    }

    /// The API client (with the response size limit).
    pub fn client(&self) -> &kube::Client {
        &self.inner.backend().client
    }
}

slot_scheduler!(KubernetesScheduler);

fn shape(config: &KubernetesSchedulerConfig) -> Shape {
    Shape {
        port: config.port,
        stack_image: config.stack_image.clone(),
        grace_seconds: config.grace.as_secs().try_into().unwrap_or(i64::MAX),
    }
}

/// A client of the cluster of `config`'s kubeconfig, reading answers up to
/// [`MAX_RESPONSE_BYTES`].
pub async fn client(config: &KubernetesSchedulerConfig) -> Result<kube::Client> {
    let options = KubeConfigOptions { context: config.context.clone(), ..Default::default() };
    let kube_config = if config.kubeconfig.is_empty() {
        kube::Config::infer().await.map_err(|e| config_error("finding a kubeconfig (set --kubeconfig)", e))?
    } else {
        let mut merged: Option<Kubeconfig> = None;
        for path in &config.kubeconfig {
            let one =
                Kubeconfig::read_from(path).map_err(|e| config_error(&format!("reading {}", path.display()), e))?;
            merged = Some(match merged {
                None => one,
                Some(m) => m.merge(one).map_err(|e| config_error("merging kubeconfig files", e))?,
            });
        }
        let merged = merged.unwrap_or_default();
        kube::Config::from_custom_kubeconfig(merged, &options)
            .await
            .map_err(|e| config_error("reading the kubeconfig", e))?
    };
    let builder =
        kube::client::ClientBuilder::try_from(kube_config).map_err(|e| config_error("building a client", e))?;
    let limit = tower::util::MapResponseLayer::new(|r: http::Response<Box<kube::client::DynBody>>| {
        r.map(|b| http_body_util::Limited::new(b, MAX_RESPONSE_BYTES))
    });
    Ok(builder.with_layer(&limit).build())
}

/// A [`SlotBackend`] on a cluster.
#[derive(Clone)]
struct Kube {
    client: kube::Client,
    shape: Shape,
}

impl std::fmt::Debug for Kube {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kube").field("shape", &self.shape).finish_non_exhaustive()
    }
}

fn api_error(what: String) -> impl FnOnce(kube::Error) -> SchedulerError {
    move |e| SchedulerError::Backend(format!("kubernetes: {what}: {e}").into())
}

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

impl Kube {
    fn namespaced<K>(&self, app: &AppName) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &namespace_of(app))
    }

    /// Creates `obj` unless it exists.
    async fn ensure<K>(&self, api: &Api<K>, obj: &K, what: String) -> Result<()>
    where
        K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
    {
        match api.create(&PostParams::default(), obj).await {
            Ok(_) => Ok(()),
            Err(e) if is_status(&e, 409) => Ok(()),
            Err(e) => Err(api_error(format!("creating {what}"))(e)),
        }
    }
}

#[async_trait::async_trait]
impl SlotBackend for Kube {
    async fn prepare(&self, spec: &AppSpec) -> Result<()> {
        let app = &spec.app;
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        self.ensure(&namespaces, &objects::namespace(app), format!("namespace {app}")).await?;
        if let Some(web) = spec.processes.keys().find(|t| t.as_str() == "web") {
            let services: Api<Service> = self.namespaced(app);
            self.ensure(&services, &objects::service(app, web, &self.shape), format!("service {app}/web")).await?;
        }
        Ok(())
    }

    async fn slots(&self, app: &AppName) -> Result<std::collections::BTreeMap<SlotKey, SlotRecord>> {
        let api: Api<Deployment> = self.namespaced(app);
        let list = api
            .list(&ListParams::default().labels(&managed_selector()))
            .await
            .map_err(api_error(format!("listing the deployments of {app}")))?;
        Ok(list.items.iter().filter_map(objects::slot_of).collect())
    }

    async fn put(&self, spec: &AppSpec, key: &SlotKey, record: &SlotRecord) -> Result<()> {
        let api: Api<Deployment> = self.namespaced(&spec.app);
        let name = deployment_name(key);
        let mut wanted = objects::deployment(spec, key, record, &self.shape);
        let what = format!("deployment {}/{name}", spec.app);
        // Replace needs the current resourceVersion; a conflict means it moved under
        // us: read it again.
        for _ in 0..3 {
            let current = api.get_opt(&name).await.map_err(api_error(format!("reading {what}")))?;
            let result = match current {
                None => api.create(&PostParams::default(), &wanted).await,
                Some(c) => {
                    wanted.metadata.resource_version = c.metadata.resource_version;
                    api.replace(&name, &PostParams::default(), &wanted).await
                }
            };
            match result {
                Ok(_) => return Ok(()),
                Err(e) if is_status(&e, 409) => continue,
                Err(e) => return Err(api_error(format!("writing {what}"))(e)),
            }
        }
        Err(SchedulerError::Backend(format!("kubernetes: {what} keeps changing under us; try again").into()))
    }

    async fn delete(&self, app: &AppName, key: &SlotKey) -> Result<()> {
        let api: Api<Deployment> = self.namespaced(app);
        let name = deployment_name(key);
        match api.delete(&name, &DeleteParams::background()).await {
            Ok(_) => Ok(()),
            Err(e) if is_status(&e, 404) => Ok(()),
            Err(e) => Err(api_error(format!("deleting deployment {app}/{name}"))(e)),
        }
    }

    async fn units(&self, app: &AppName) -> Result<Vec<Observed>> {
        let api: Api<Pod> = self.namespaced(app);
        let pods = api
            .list(&ListParams::default().labels(&managed_selector()))
            .await
            .map_err(api_error(format!("listing the pods of {app}")))?;
        Ok(pods.items.iter().filter_map(|p| objects::unit_of(p, app, self.shape.port)).collect())
    }

    async fn remove(&self, app: &AppName) -> Result<()> {
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let ns = namespace_of(app);
        // Only a namespace deis made is deleted.
        match namespaces.get_opt(&ns).await.map_err(api_error(format!("reading namespace {ns}")))? {
            None => return Ok(()),
            Some(n)
                if n.metadata.labels.as_ref().and_then(|l| l.get(LABEL_MANAGED_BY)).map(String::as_str)
                    != Some(MANAGER) =>
            {
                return Err(SchedulerError::Invalid(format!(
                    "namespace {ns} was not made by deis (no {LABEL_MANAGED_BY}={MANAGER} label); delete it yourself"
                )));
            }
            Some(_) => {}
        }
        match namespaces.delete(&ns, &DeleteParams::foreground()).await {
            Ok(_) => {}
            Err(e) if is_status(&e, 404) => return Ok(()),
            Err(e) => return Err(api_error(format!("deleting namespace {ns}"))(e)),
        }
        let deadline = tokio::time::Instant::now() + REMOVE_TIMEOUT;
        while tokio::time::Instant::now() < deadline {
            if namespaces.get_opt(&ns).await.map_err(api_error(format!("reading namespace {ns}")))?.is_none() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(SchedulerError::Backend(
            format!("kubernetes: namespace {ns} still terminating after {REMOVE_TIMEOUT:?}").into(),
        ))
    }

    async fn nodes(&self) -> Result<Vec<NodeStatus>> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let nodes = nodes.list(&ListParams::default()).await.map_err(api_error("listing nodes".into()))?;
        let pods: Api<Pod> = Api::all(self.client.clone());
        let pods = pods
            .list(&ListParams::default().fields("status.phase!=Succeeded,status.phase!=Failed"))
            .await
            .map_err(api_error("listing pods".into()))?;
        let mut allocated: std::collections::HashMap<String, Resources> = Default::default();
        for pod in &pods.items {
            let Some(spec) = &pod.spec else { continue };
            let Some(node) = &spec.node_name else { continue };
            let a = allocated.entry(node.clone()).or_default();
            for c in &spec.containers {
                let requests = c.resources.as_ref().and_then(|r| r.requests.as_ref());
                let get = |k: &str| requests.and_then(|r| r.get(k)).map(|q| q.0.as_str());
                let r = quantity::resources(get("cpu"), get("memory"));
                a.cpu_millis += r.cpu_millis;
                a.memory_bytes += r.memory_bytes;
            }
        }
        Ok(nodes
            .items
            .iter()
            .map(|n| {
                let name = n.metadata.name.clone().unwrap_or_default();
                let status = n.status.clone().unwrap_or_default();
                let alloc = status.allocatable.unwrap_or_default();
                let capacity = quantity::resources(
                    alloc.get("cpu").map(|q| q.0.as_str()),
                    alloc.get("memory").map(|q| q.0.as_str()),
                );
                let ready =
                    status.conditions.unwrap_or_default().iter().any(|c| c.type_ == "Ready" && c.status == "True");
                let unschedulable = n.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false);
                let mut node = NodeStatus::new(
                    name.clone(),
                    Capacity { cpu_millis: capacity.cpu_millis, memory_bytes: capacity.memory_bytes },
                    allocated.get(&name).copied().unwrap_or_default(),
                );
                node.labels = n.metadata.labels.clone().unwrap_or_default();
                node.planes = Planes::data();
                if !ready || unschedulable {
                    node.health = Health::Down { since: deis_core::time::Timestamp::now() };
                }
                node
            })
            .collect())
    }
}
