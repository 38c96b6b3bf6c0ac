//! How the embedded backends confine what they run: [`Isolation`] (the settings) and
//! [`Confinement`] (what this machine and our privileges allow, found once at start).
//!
//! Every unit of the [`LocalScheduler`](crate::scheduler::LocalScheduler) and every
//! session of the [`LocalTtyBroker`](crate::tty::LocalTtyBroker) gets, where possible:
//!
//! - **the app's identity** (when we run as root and the platform gave the app one):
//!   its own uid and gid, no supplementary groups, `HOME` its build directory;
//! - **a cgroup** of its own with the memory and cpu limits of its process type and
//!   [`Isolation::pids_max`] (see [`cgroup`](super::cgroup));
//! - **a mount namespace**: a private `/tmp`, and the platform's data directory
//!   ([`Isolation::hidden_dir`]) covered, only the app's build showing, read-only;
//! - **`no_new_privs`** and **no capabilities**.
//!
//! Run unprivileged, the daemon can't change identities: units run as its own user,
//! so they can read what it can (the data directory, the store, each other's
//! environment). Limits then hold only where its cgroup is delegated to it, and the
//! mount namespace only where the kernel allows user namespaces. [`Confinement::start`]
//! logs what is enforced and what is not.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::cgroup::{CgroupLimits, CgroupRoot, UnitCgroup};
use super::process::{SpawnSpec, namespaces_available};
use crate::model::AppIdentity;
use crate::model::limits::Resources;

/// Default [`Isolation::pids_max`]: enough for any web app, few enough that a fork
/// bomb stays small.
pub const DEFAULT_PIDS_MAX: u64 = 512;
/// How long leftovers of a crashed predecessor get to die.
const LEFTOVER_WAIT: Duration = Duration::from_secs(5);

/// What the embedded backends should confine units and sessions with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Isolation {
    /// A directory no unit may see (the platform's data directory); only the app's own
    /// build shows inside it. `None`: nothing is covered.
    pub hidden_dir: Option<PathBuf>,
    /// Most processes and threads of one unit or session (default
    /// [`DEFAULT_PIDS_MAX`]; `None`: no limit).
    pub pids_max: Option<u64>,
    /// Put each unit in a cgroup with its limits (default true).
    pub cgroups: bool,
    /// Give each unit a mount namespace (default true).
    pub namespaces: bool,
}

impl Default for Isolation {
    fn default() -> Self {
        Self { hidden_dir: None, pids_max: Some(DEFAULT_PIDS_MAX), cgroups: true, namespaces: true }
    }
}

impl Isolation {
    /// Nothing at all: units run as we do, unlimited, in our namespaces (tests of
    /// unrelated logic).
    pub fn none() -> Self {
        Self { hidden_dir: None, pids_max: None, cgroups: false, namespaces: false }
    }
}

/// What a unit or session runs as and in.
#[derive(Debug, Clone, Copy)]
pub struct Confined<'a> {
    /// The app's identity, if the platform gave it one.
    pub identity: Option<AppIdentity>,
    /// Its build directory (working directory).
    pub dir: &'a Path,
    /// Its cgroup, if it has one.
    pub cgroup: Option<&'a UnitCgroup>,
}

/// [`Isolation`] as this machine and our privileges allow it. Cheap to share.
#[derive(Debug)]
pub struct Confinement {
    isolation: Isolation,
    cgroups: Option<CgroupRoot>,
    namespaces: bool,
    root: bool,
}

impl Confinement {
    /// Finds out what can be enforced (cgroups under `tag`, namespaces, identities),
    /// clears cgroups a crashed predecessor with the same tag left, and logs what will
    /// and won't hold. Blocking (it reads `/proc`, may start a probe process).
    pub fn start(isolation: Isolation, tag: &str) -> Self {
        let root = running_as_root();
        let cgroups = if isolation.cgroups {
            match CgroupRoot::detect(tag) {
                Ok(cg) => {
                    let killed = cg.clear_leftovers(LEFTOVER_WAIT);
                    if killed > 0 {
                        tracing::warn!(processes = killed, "killed processes left in units' cgroups by a previous run");
                    }
                    tracing::info!(version = cg.version(), "units get cgroups: memory, cpu and pids limits hold");
                    Some(cg)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "no cgroups for units: memory, cpu and pids limits are NOT enforced");
                    None
                }
            }
        } else {
            None
        };
        let namespaces = isolation.namespaces && namespaces_available();
        if isolation.namespaces && !namespaces {
            tracing::warn!("no mount namespaces for units: they share /tmp and see the data directory");
        }
        if !root {
            tracing::warn!(
                "running unprivileged: units run as this user and can read what it can (data directory, store, \
                 other units); run as root for an identity per app"
            );
        }
        Self { isolation, cgroups, namespaces, root }
    }

    /// No confinement at all (tests of unrelated logic, platforms that confine
    /// elsewhere).
    pub fn disabled() -> Self {
        Self { isolation: Isolation::none(), cgroups: None, namespaces: false, root: false }
    }

    /// The settings.
    pub fn isolation(&self) -> &Isolation {
        &self.isolation
    }

    /// Whether apps' identities are applied (we run as root).
    pub fn identities(&self) -> bool {
        self.root
    }

    /// Whether units get cgroups.
    pub fn has_cgroups(&self) -> bool {
        self.cgroups.is_some()
    }

    /// Makes the cgroup `name` with `limits` (0 = none) and the pids limit; `None`
    /// without cgroups.
    pub fn cgroup(&self, name: &str, limits: Resources) -> io::Result<Option<UnitCgroup>> {
        let Some(root) = &self.cgroups else { return Ok(None) };
        let limits = CgroupLimits {
            memory_bytes: (limits.memory_bytes > 0).then_some(limits.memory_bytes),
            cpu_millis: (limits.cpu_millis > 0).then_some(limits.cpu_millis),
            pids_max: self.isolation.pids_max,
        };
        root.create(name, &limits).map(Some)
    }

    /// `spec` with everything that holds here applied for `run`.
    pub fn apply(&self, mut spec: SpawnSpec, run: Confined<'_>) -> SpawnSpec {
        if let Some(cg) = run.cgroup {
            spec = spec.cgroup(cg);
        }
        if self.namespaces {
            spec = spec.private_tmp();
            if let Some(hidden) = &self.isolation.hidden_dir {
                spec = spec.app_view(hidden, run.dir);
            }
        }
        if self.root
            && let Some(id) = run.identity
        {
            spec = spec.identity(id.uid, id.gid).var("HOME", run.dir);
        }
        if self.isolation != Isolation::none() {
            spec = spec.no_new_privs().drop_capabilities();
        }
        spec
    }
}

impl Drop for Confinement {
    fn drop(&mut self) {
        if let Some(cg) = &self.cgroups {
            cg.remove_if_unused();
        }
    }
}

/// Whether this process runs as root (and so can give units other identities).
pub fn running_as_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// A cgroup tag for the daemon whose state lives at `path`: stable across restarts,
/// different for every data directory.
pub fn tag_for(prefix: &str, path: &Path) -> String {
    use sha2::Digest as _;
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let digest = sha2::Sha256::digest(abs.as_os_str().as_encoded_bytes());
    format!("{prefix}-{}", &hex::encode(digest)[..12])
}
