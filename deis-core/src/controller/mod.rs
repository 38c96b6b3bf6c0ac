//! The controller's logic, without HTTP.
//!
//! [`Controller`] implements what the Deis controller does (users and tokens, apps,
//! config, builds, releases, scaling, processes, domains) on top of any
//! [`Store`] and [`Scheduler`]. The HTTP API in `deis-sdk` is a thin mapping of these
//! methods; an integrator can embed `Controller` directly.
//!
//! Guarantees:
//! - Every change is one store transaction with compares on the revisions it read
//!   (optimistic concurrency, retried on conflict), and changes to one app are
//!   serialised in-process, so concurrent requests never lose an update or create two
//!   releases with the same number.
//! - A request that fails leaves the stored state unchanged. Changes that alter what
//!   runs (releases, scaling, limits) are handed to the scheduler *before* they are
//!   committed, so a refusal (e.g. not enough capacity) changes nothing; if the commit
//!   then fails, the previous spec is applied again.
//! - Errors are [`ControllerError`]s: one variant per meaning, with the backend's error
//!   as the source. The HTTP API (`deis_sdk::controller`) maps them to statuses and
//!   Workflow's error bodies.
//!
//! ```no_run
//! # async fn demo(store: std::sync::Arc<dyn deis_core::Store>, scheduler: std::sync::Arc<dyn deis_core::Scheduler>) -> Result<(), deis_core::controller::ControllerError> {
//! use deis_core::artifact::ArtifactStore;
//! use deis_core::controller::{Controller, ControllerConfig, RegistrationMode};
//!
//! let platform = Controller::new(ControllerConfig {
//!     store,
//!     scheduler,
//!     artifacts: ArtifactStore::new("/var/lib/deis"),
//!     domain: "local.deis.cc".into(),
//!     registration: RegistrationMode::Enabled,
//!     logs: None,
//!     policy: Default::default(),
//! });
//! platform.reconcile_all().await; // converge units after a restart
//! let alice = platform.register(None, "alice", "s3cret", "alice@example.com").await?;
//! let app = platform.create_app(&alice, Some("hello".parse()?)).await?;
//! # Ok(()) }
//! ```

mod apps;
mod builds;
mod certs;
mod domains;
mod error;
mod gc;
mod identity;
mod ingest;
mod keys;
mod logs;
mod perms;
mod reconcile;
mod releases;
mod run;
mod scale;
mod settings;
mod users;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use crate::artifact::ArtifactStore;
use crate::model::{App, AppName, User};
use crate::scheduler::Scheduler;
use crate::store::Store;
use crate::store::records::{self, app_key};

pub use builds::{BuildInput, BuildOutcome};
pub use certs::{MAX_CERTS_PER_USER, NewCertificate};
pub use domains::check_domain_claim;
pub use error::{CommandError, ControllerError, ResourceKind, Result, RollbackRefusal, UnknownRestartTarget};
pub use identity::{identity_key, uid_key};
pub use ingest::{INGEST_TOKENS_PREFIX, IngestToken, ingest_token_key};
pub use logs::{DRAINS_PREFIX, Drain, MAX_DRAINS_PER_APP, drain_key, drains_prefix, unit_event_message};
pub use run::{MAX_COMMAND_ARGS, MAX_COMMAND_BYTES, validate_command};
pub use scale::MAX_UNITS_PER_TYPE;
pub use users::{RegenerateTarget, authenticate};

/// How many times an operation is retried when another writer changed what it read.
const MAX_ATTEMPTS: usize = 8;

/// Who may register (`REGISTRATION_MODE` of the Workflow controller).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RegistrationMode {
    /// Anyone may register.
    #[default]
    Enabled,
    /// Only an admin may register users (anyone may while there is no user yet).
    AdminOnly,
    /// Nobody may register.
    Disabled,
}

/// A registration mode that is not `enabled`, `admin_only` or `disabled`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown registration mode {given:?}: use enabled, admin_only or disabled")]
pub struct UnknownRegistrationMode {
    /// The mode as given.
    pub given: String,
}

impl FromStr for RegistrationMode {
    type Err = UnknownRegistrationMode;
    /// Parses `enabled`, `admin_only` or `disabled`.
    fn from_str(s: &str) -> std::result::Result<Self, UnknownRegistrationMode> {
        match s {
            "enabled" => Ok(Self::Enabled),
            "admin_only" => Ok(Self::AdminOnly),
            "disabled" => Ok(Self::Disabled),
            other => Err(UnknownRegistrationMode { given: other.chars().take(64).collect() }),
        }
    }
}

impl fmt::Display for RegistrationMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Enabled => "enabled",
            Self::AdminOnly => "admin_only",
            Self::Disabled => "disabled",
        })
    }
}

/// Everything a [`Controller`] is built from.
#[derive(Debug)]
pub struct ControllerConfig {
    /// Where records live.
    pub store: Arc<dyn Store>,
    /// What runs the units.
    pub scheduler: Arc<dyn Scheduler>,
    /// Where source builds are kept and unpacked.
    pub artifacts: ArtifactStore,
    /// The platform domain: apps are reachable at `<app>.<domain>`.
    pub domain: String,
    /// Who may register.
    pub registration: RegistrationMode,
    /// Where app logs go (platform events are written there; `deis logs` reads it);
    /// `None`: the platform keeps no logs.
    pub logs: Option<Arc<dyn crate::logs::LogStore>>,
    /// What apps and users are given and allowed (identities, quotas).
    pub policy: ControllerPolicy,
}

/// What the platform gives apps and allows users, beyond the API's own checks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ControllerPolicy {
    /// Give each app its own uid and gid from this range, recorded in the store and
    /// handed to the scheduler and the TTY broker with every spec (`None`, the default:
    /// no identities; units run as the backend's default user). deisd sets it when it
    /// runs as root.
    pub identities: Option<crate::model::IdentityRange>,
    /// Most units the apps of one (non-admin) user may run together (`None`: no cap).
    pub max_units_per_user: Option<u32>,
}

impl ControllerPolicy {
    /// Identities from `range`.
    pub fn with_identities(mut self, range: crate::model::IdentityRange) -> Self {
        self.identities = Some(range);
        self
    }

    /// At most `max` units per user.
    pub fn with_max_units_per_user(mut self, max: u32) -> Self {
        self.max_units_per_user = Some(max);
        self
    }
}

/// The platform settings shown to clients.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PlatformSettings {
    /// Apps are reachable at `<app>.<domain>`.
    pub domain: String,
    /// Who may register.
    #[serde(serialize_with = "display")]
    pub registration: RegistrationMode,
}

fn display<S: serde::Serializer>(v: &RegistrationMode, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// The controller's logic. Build it with [`Controller::new`]; share it as `Arc<Controller>`.
#[derive(Debug)]
pub struct Controller {
    store: Arc<dyn Store>,
    scheduler: Arc<dyn Scheduler>,
    artifacts: ArtifactStore,
    settings: PlatformSettings,
    logs: Option<Arc<dyn crate::logs::LogStore>>,
    policy: ControllerPolicy,
    /// One lock per existing app, so changes to an app are serialised in this process.
    app_locks: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Serialises registrations (the first user becomes admin) and user removals.
    users_lock: tokio::sync::Mutex<()>,
    /// Uploads (read) until their build is recorded, against build cleanup (write).
    build_gc: tokio::sync::RwLock<()>,
}

impl Controller {
    /// Builds the platform. Call [`Controller::reconcile_all`] once at startup so units
    /// converge on what the store says.
    pub fn new(config: ControllerConfig) -> Arc<Self> {
        Arc::new(Self {
            store: config.store,
            scheduler: config.scheduler,
            artifacts: config.artifacts,
            settings: PlatformSettings { domain: config.domain, registration: config.registration },
            logs: config.logs,
            policy: config.policy,
            app_locks: std::sync::Mutex::new(HashMap::new()),
            users_lock: tokio::sync::Mutex::new(()),
            build_gc: tokio::sync::RwLock::new(()),
        })
    }

    /// The store records live in.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The scheduler units run on.
    pub fn scheduler(&self) -> &Arc<dyn Scheduler> {
        &self.scheduler
    }

    /// The artifact store of source builds.
    pub fn artifacts(&self) -> &ArtifactStore {
        &self.artifacts
    }

    /// The platform settings.
    pub fn settings(&self) -> &PlatformSettings {
        &self.settings
    }

    /// What apps are given and users allowed.
    pub fn policy(&self) -> &ControllerPolicy {
        &self.policy
    }

    /// Locks `app` for a change. Only called for apps that exist (or are being
    /// created), so unknown names can't grow the lock table.
    async fn lock_app(&self, app: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = self.app_locks.lock().expect("app lock table").entry(app.to_string()).or_default().clone();
        lock.lock_owned().await
    }

    fn forget_lock(&self, app: &str) {
        self.app_locks.lock().expect("app lock table").remove(app);
    }

    /// Reads an app with its revision; not found if it does not exist.
    async fn load_app(&self, id: &AppName) -> Result<(App, u64)> {
        records::get_json::<App>(&*self.store, &app_key(id))
            .await?
            .ok_or_else(|| ControllerError::not_found(ResourceKind::App, id))
    }

    /// Reads an app `user` may use: owner, collaborator or admin (deploy, configure,
    /// scale, run, logs, domains).
    async fn app_for(&self, user: &User, id: &AppName) -> Result<(App, u64)> {
        self.app_with(user, id, Access::Use).await
    }

    /// Reads an app `user` may manage: owner or admin (destroy, transfer, collaborators).
    async fn app_managed_by(&self, user: &User, id: &AppName) -> Result<(App, u64)> {
        self.app_with(user, id, Access::Manage).await
    }

    async fn app_with(&self, user: &User, id: &AppName, access: Access) -> Result<(App, u64)> {
        let (app, rev) = self.load_app(id).await?;
        if access.allows(user, &app) { Ok((app, rev)) } else { Err(ControllerError::Forbidden) }
    }

    /// Commits a transaction; `false` when a compare failed.
    async fn commit(&self, txn: crate::store::Txn) -> Result<bool> {
        Ok(self.store.txn(txn).await?.succeeded)
    }
}

/// What a request does with an app, and so who may do it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Owner, collaborators and admins.
    Use,
    /// Owner and admins.
    Manage,
}

impl Access {
    fn allows(self, user: &User, app: &App) -> bool {
        user.is_superuser
            || match self {
                Access::Use => app.is_member(&user.username),
                Access::Manage => app.owner == user.username,
            }
    }
}
