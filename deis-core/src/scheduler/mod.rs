//! The `Scheduler` trait: make an app's running units match its release and formation.
//!
//! The platform hands a scheduler an [`AppSpec`] (what to run, with which environment,
//! how many units of each process type, what each unit needs) and the scheduler
//! converges on it: starting, replacing (one at a time, new before old) and stopping
//! units, restarting crashed ones. It reports units and node capacity, and announces
//! every unit state change on [`Scheduler::subscribe`], from which the publisher
//! writes endpoints for the router.
//!
//! To be correct, an implementation must pass [`crate::testing::scheduler_suite`].

#[cfg(feature = "embedded")]
pub mod local;
pub mod placement;

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::path::PathBuf;

use async_trait::async_trait;
use tokio::sync::broadcast;

use crate::model::limits::Resources;
use crate::model::{AppIdentity, AppName, Healthcheck, ProcessType, Unit};

#[cfg(feature = "embedded")]
pub use local::{LocalScheduler, LocalSchedulerConfig};
pub use placement::Capacity;

/// What to run for a release.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Artifact {
    /// An unpacked source build: commands run in this directory.
    Source {
        /// The directory holding the unpacked build.
        dir: PathBuf,
    },
    /// A container image.
    Image {
        /// Image reference.
        reference: String,
    },
}

/// One process type of an app.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProcessSpec {
    /// Command (run with `sh -c` by process backends; the image's command if empty).
    pub command: String,
    /// Number of units wanted.
    pub count: u32,
    /// What each unit reserves on its node.
    pub resources: Resources,
    /// What each unit may use at most (zero: no limit of that kind). Backends enforce
    /// it: memory past it kills the unit, cpu is throttled to it.
    pub limits: Resources,
    /// Readiness probe; without one a unit with a port is ready when the port accepts
    /// connections. New units must pass it before old ones stop (rolling deploys).
    pub healthcheck: Option<Healthcheck>,
    /// Liveness probe: a running unit that fails it `failureThreshold` times in a row is
    /// restarted (with the crash backoff).
    pub liveness: Option<Healthcheck>,
}

/// Desired state of one app (serialisable, so a replica can hand it to the one that
/// runs the units).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AppSpec {
    /// The app.
    pub app: AppName,
    /// Release version.
    pub release: u64,
    /// What to run.
    pub artifact: Artifact,
    /// Environment from the release's config (the scheduler adds `PORT`, `DEIS_APP`,
    /// `DEIS_RELEASE`, `DEIS_UNIT`).
    pub env: BTreeMap<String, String>,
    /// Process types; types absent here have no units.
    pub processes: BTreeMap<ProcessType, ProcessSpec>,
    /// Node labels every unit's node must carry: the app's tags (`deis tags:set
    /// KEY=VALUE`). Backends that place units over labelled nodes refuse a spec whose
    /// labels no node carries; the local backend (one unlabelled node) ignores them.
    pub selector: BTreeMap<String, String>,
    /// The uid and gid the app's processes run as, when the platform gives apps their
    /// own (see [`AppIdentity`]); `None`: the backend's default user.
    pub identity: Option<AppIdentity>,
    /// Credentials for pulling an image build from a private registry (the app's
    /// `deis registry:set username=… password=…`); image backends use them for
    /// registries other than the platform's own.
    #[serde(default)]
    pub pull_credentials: Option<PullCredentials>,
}

/// Credentials for a private image registry. Debug output hides the password.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PullCredentials {
    /// Username.
    pub username: String,
    /// Password or token.
    pub password: String,
}

impl PullCredentials {
    /// The credentials of an app's registry settings (`username` and `password`), if
    /// both are set.
    pub fn from_settings(registry: &BTreeMap<String, String>) -> Option<Self> {
        Some(Self { username: registry.get("username")?.clone(), password: registry.get("password")?.clone() })
    }
}

impl std::fmt::Debug for PullCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PullCredentials").field("username", &self.username).field("password", &"<hidden>").finish()
    }
}

impl AppSpec {
    /// Total resources the spec asks for.
    pub fn total_resources(&self) -> Resources {
        self.processes.values().fold(Resources::default(), |acc, p| Resources {
            cpu_millis: acc.cpu_millis + p.resources.cpu_millis * u64::from(p.count),
            memory_bytes: acc.memory_bytes + p.resources.memory_bytes * u64::from(p.count),
        })
    }
}

/// A node and what is placed on it (`deis nodes`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeStatus {
    /// Node name.
    pub name: String,
    /// What the node offers.
    pub capacity: Capacity,
    /// What units placed on it reserve.
    pub allocated: Resources,
    /// Its labels (what `deis tags:set` selects on).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The planes it serves.
    #[serde(default = "placement::Planes::data")]
    pub planes: placement::Planes,
    /// Whether it answers.
    #[serde(default = "placement::Health::up")]
    pub health: placement::Health,
}

impl NodeStatus {
    /// An unlabelled data-plane node that is up.
    pub fn new(name: impl Into<String>, capacity: Capacity, allocated: Resources) -> Self {
        Self {
            name: name.into(),
            capacity,
            allocated,
            labels: BTreeMap::new(),
            planes: placement::Planes::DATA,
            health: placement::Health::Up,
        }
    }
}

/// Which units to restart.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RestartFilter {
    /// Only units of this process type.
    pub proc_type: Option<ProcessType>,
    /// Only the unit with this name.
    pub unit: Option<String>,
}

/// A unit changed state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitEvent {
    /// The unit after the change.
    pub unit: Unit,
    /// Why it changed, where the backend knows (`exit status 3`, `killed by signal 9`).
    pub reason: Option<String>,
}

impl UnitEvent {
    /// An event without a reason.
    pub fn new(unit: Unit) -> Self {
        Self { unit, reason: None }
    }
}

/// Errors of a [`Scheduler`].
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    /// The spec asks for more than the nodes can hold; nothing was changed.
    #[error("not enough capacity: {0}")]
    Capacity(String),
    /// The backend can't run this kind of build.
    #[error("{0}")]
    Unsupported(String),
    /// The spec is invalid (e.g. a process type without a command).
    #[error("invalid spec: {0}")]
    Invalid(String),
    /// Unknown app or unit.
    #[error("{0} not found")]
    NotFound(String),
    /// The backend failed.
    #[error("scheduler backend: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl SchedulerError {
    /// Wraps any backend error.
    pub fn backend(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Backend(Box::new(e))
    }
}

/// Result of scheduler operations.
pub type Result<T, E = SchedulerError> = std::result::Result<T, E>;

/// Runs the units of apps. See the module docs.
#[async_trait]
pub trait Scheduler: Send + Sync + Debug {
    /// Sets the desired state of `spec.app` and starts converging on it.
    ///
    /// To ensure correctness: admission is checked first and a spec that does not fit
    /// is refused with [`SchedulerError::Capacity`] leaving the running units alone;
    /// the call returns once the spec is accepted, and convergence continues in the
    /// background. Units of an older release are replaced one at a time: the new unit
    /// must be ready before the old one is stopped, so a web app keeps serving. Applying
    /// the same spec twice changes nothing.
    async fn apply(&self, spec: AppSpec) -> Result<()>;

    /// Stops and forgets every unit of `app`. To ensure correctness: returns only when
    /// no process of the app is left. Removing an unknown app is not an error.
    async fn remove(&self, app: &AppName) -> Result<()>;

    /// The units of `app` (empty for an unknown app), sorted by name.
    async fn units(&self, app: &AppName) -> Result<Vec<Unit>>;

    /// Restarts the matching units (one at a time, like a release change) and returns
    /// them. Unknown app → [`SchedulerError::NotFound`].
    async fn restart(&self, app: &AppName, filter: RestartFilter) -> Result<Vec<Unit>>;

    /// The nodes and what they hold.
    async fn nodes(&self) -> Result<Vec<NodeStatus>>;

    /// Unit state changes from now on.
    fn subscribe(&self) -> broadcast::Receiver<UnitEvent>;

    /// Called once when the platform stops, after its listeners have drained.
    ///
    /// To ensure correctness: returns when the backend's background work has ended.
    /// Units that can outlive this process (containers an engine keeps) keep running,
    /// for the next start to adopt; units that can't (child processes) are stopped
    /// gracefully, as [`Scheduler::remove`] would. Later calls to `apply` may be
    /// refused. The default does nothing.
    async fn shutdown(&self) {}
}
