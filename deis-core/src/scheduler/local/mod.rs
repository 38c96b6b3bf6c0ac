//! [`LocalScheduler`]: units as child processes on this machine.
//!
//! Each unit of an [`Artifact::Source`] build runs as `/bin/sh -c <command>` in the
//! build's directory. Its environment is **cleared** except for
//! [`PATH`, `HOME`, `LANG`, `TZ`](INHERITED_ENV) (so the scheduler's own settings and
//! secrets don't leak into apps), then gets the release's config, then `PORT` (a free
//! loopback port, its own for each unit), `DEIS_APP`, `DEIS_RELEASE` (`v<N>`) and
//! `DEIS_UNIT` (`<app>.<type>.<n>`). Container images are refused with
//! [`SchedulerError::Unsupported`].
//!
//! Every unit is the leader of its own session and process group, dies with the
//! scheduler (`PR_SET_PDEATHSIG`; see [`crate::sys::process`]), is stopped with `SIGTERM` to the whole group and `SIGKILL`
//! after [`LocalSchedulerConfig::stop_timeout`], and is reaped. The groups of live units
//! are listed in `<state_dir>/local-units.json` ([`crate::sys::GroupRegistry`]);
//! [`LocalScheduler::new`] kills the groups a crashed predecessor left behind before it
//! starts anything, and a watchdog process per unit kills its group the moment the
//! scheduler's process dies ([`crate::sys::GroupWatchdog`]).
//!
//! One task per app converges its units on the applied spec (see the `supervisor`
//! module docs for the rules): replacements are rolling, new before old, gated by
//! readiness (the process type's healthcheck; without one, an open `PORT` for `web`
//! units and [`STAY_UP`] of running for others); crashed units restart with exponential backoff
//! ([`BACKOFF_MIN`] doubling up to [`BACKOFF_MAX`]). stdout and stderr go line by line
//! to a [`UnitOutput`].
//!
//! Resources are admitted and enforced: `apply` refuses a spec when the requests of
//! all apps would exceed [`LocalSchedulerConfig::capacity`], and each unit runs in a
//! cgroup of its own with its process type's memory and cpu limits and a pids limit
//! (where cgroups are available to us). A unit the kernel kills for going past its
//! memory limit crashes with "out of memory" and restarts with backoff.
//!
//! Units are confined as [`LocalSchedulerConfig::isolation`] asks and this machine
//! allows ([`crate::sys::isolation`]): as root, each app's units run as the app's own
//! uid and gid ([`AppSpec::identity`]); every unit gets `no_new_privs`, no
//! capabilities, a private `/tmp` and a view of the data directory in which only its
//! build shows, read-only. Run unprivileged, units run as the scheduler's user.
//!
//! ```no_run
//! # async fn run() -> Result<(), deis_core::SchedulerError> {
//! use deis_core::scheduler::{LocalScheduler, LocalSchedulerConfig, Scheduler};
//! let scheduler = LocalScheduler::new(LocalSchedulerConfig::new("/var/lib/deis")).await?;
//! let mut events = scheduler.subscribe();
//! // scheduler.apply(spec).await?; ... events.recv().await ...
//! scheduler.shutdown().await;
//! # Ok(()) }
//! ```

mod config;
mod output;
mod ports;
mod probe;
mod process;
mod supervisor;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{Mutex, broadcast, mpsc, oneshot};

pub use self::config::{LocalSchedulerConfig, STATE_FILE, hostname};
pub use self::output::{MAX_LINE_BYTES, OutputStream, TracingOutput, UnitOutput};
use self::ports::PortAllocator;
pub use self::probe::{STAY_UP, os_probe};
use self::process::OsRuntime;
pub use self::process::{Ended, ExitInfo, GroupSignal, Launch, OutputReader, ProbeTarget, ProcessRuntime, Spawned};
pub use self::supervisor::{BACKOFF_MAX, BACKOFF_MIN, BACKOFF_RESET};
use self::supervisor::{Command, Shared, Supervisor};
use super::{AppSpec, Artifact, NodeStatus, RestartFilter, Result, Scheduler, SchedulerError, UnitEvent};
use crate::model::limits::Resources;
use crate::model::{AppName, Unit};
pub use crate::sys::process::INHERITED_ENV;
use crate::sys::{Confinement, GroupRegistry};

/// Most units one app may ask for.
pub const MAX_UNITS_PER_APP: u64 = 1000;
/// How many unit events a slow subscriber may fall behind before it sees `Lagged`.
pub const EVENT_BUFFER: usize = 4096;
/// How long `new` waits for the killed leftovers of a previous run to exit.
const LEFTOVER_WAIT: Duration = Duration::from_secs(5);

/// The embedded default [`Scheduler`]: units as child processes on this machine. See the
/// module docs.
///
/// Dropping it stops every unit in the background; call
/// [`shutdown`](LocalScheduler::shutdown) to wait for that.
#[derive(Debug)]
pub struct LocalScheduler {
    shared: Arc<Shared>,
    node_name: String,
    capacity: super::Capacity,
    apps: Mutex<BTreeMap<AppName, AppHandle>>,
    closed: AtomicBool,
}

#[derive(Debug)]
struct AppHandle {
    commands: mpsc::Sender<Command>,
    spec: AppSpec,
    task: tokio::task::JoinHandle<()>,
}

impl LocalScheduler {
    /// Creates the scheduler: creates `config.state_dir`, kills the process groups a
    /// previous scheduler with the same state dir left running (after `kill -9`), and
    /// starts with no apps. Must be called inside a tokio runtime (multi-threaded in
    /// production: units are tied to the life of the runtime's worker threads).
    pub async fn new(config: LocalSchedulerConfig) -> Result<Arc<Self>> {
        let dir = &config.state_dir;
        tokio::fs::create_dir_all(dir).await.map_err(|e| {
            SchedulerError::backend(std::io::Error::new(
                e.kind(),
                format!("cannot create the local scheduler's state directory {}: {e}", dir.display()),
            ))
        })?;
        let (registry, killed) =
            GroupRegistry::take_over(&dir.join(STATE_FILE), LEFTOVER_WAIT).await.map_err(SchedulerError::backend)?;
        if killed > 0 {
            tracing::warn!(groups = killed, "killed units left running by a previous run of the scheduler");
        }
        let (isolation, tag) = (config.isolation.clone(), crate::sys::isolation::tag_for("units", dir));
        let confinement = tokio::task::spawn_blocking(move || Confinement::start(isolation, &tag))
            .await
            .map_err(SchedulerError::backend)?;
        Ok(Self::on_runtime(config, Arc::new(OsRuntime::new(registry, Arc::new(confinement)))))
    }

    /// A scheduler whose units run on `runtime` (containers of an engine, the tests'
    /// fake) instead of as processes here: the same supervision (see the module
    /// docs), with admission, placement and nodes left to the runtime where it does
    /// them ([`ProcessRuntime::admit`]). `config.state_dir` is not used.
    pub fn on_runtime(config: LocalSchedulerConfig, runtime: Arc<dyn ProcessRuntime>) -> Arc<Self> {
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let shared = Arc::new(Shared {
            runtime,
            ports: PortAllocator::default(),
            events,
            node: config.node_name.clone(),
            output: config.output.clone(),
            stop_timeout: config.stop_timeout,
            ready_timeout: config.ready_timeout,
            drain_delay: config.drain_delay,
            next_instance: AtomicU64::new(1),
        });
        Arc::new(Self {
            shared,
            node_name: config.node_name,
            capacity: config.capacity,
            apps: Mutex::new(BTreeMap::new()),
            closed: AtomicBool::new(false),
        })
    }

    /// Stops supervising without stopping any unit: for runtimes whose units outlive
    /// this process (containers an engine keeps), so the next scheduler adopts them.
    /// Afterwards `apply` is refused.
    pub async fn detach(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let handles: Vec<AppHandle> = std::mem::take(&mut *self.apps.lock().await).into_values().collect();
        for h in handles {
            h.task.abort();
            let _ = h.task.await;
        }
    }

    /// Stops every unit of every app gracefully (as [`Scheduler::remove`] does) and
    /// returns when all their processes are gone. Afterwards `apply` is refused.
    pub async fn shutdown(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let handles: Vec<AppHandle> = std::mem::take(&mut *self.apps.lock().await).into_values().collect();
        let mut waits = vec![];
        for h in &handles {
            let (tx, rx) = oneshot::channel();
            if h.commands.send(Command::Remove(tx)).await.is_ok() {
                waits.push(rx);
            }
        }
        for w in waits {
            let _ = w.await;
        }
        for h in handles {
            let _ = h.task.await;
            self.shared.runtime.forget(&h.spec.app).await;
        }
    }

    fn check(&self, spec: &AppSpec) -> Result<()> {
        let app = &spec.app;
        if app.is_empty() {
            return Err(SchedulerError::Invalid("the app name is empty".into()));
        }
        self.shared.runtime.check_artifact(spec)?;
        match &spec.artifact {
            Artifact::Image { .. } => {}
            Artifact::Source { dir } if !dir.is_dir() => {
                return Err(SchedulerError::Invalid(format!(
                    "app {app}: release v{}: the build directory {} does not exist; deploy the app again",
                    spec.release,
                    dir.display()
                )));
            }
            Artifact::Source { .. } => {}
        }
        let mut total = 0u64;
        // An image without a command runs its own (`CMD`); a source build has none.
        let own_command = matches!(spec.artifact, Artifact::Image { .. });
        for (proc_type, p) in &spec.processes {
            if p.count > 0 && p.command.trim().is_empty() && !own_command {
                return Err(SchedulerError::Invalid(format!(
                    "app {app}: process type {proc_type} has no command; add it to the Procfile or scale it to 0"
                )));
            }
            total += u64::from(p.count);
        }
        if total > MAX_UNITS_PER_APP {
            return Err(SchedulerError::Invalid(format!(
                "app {app}: {total} units requested; the local scheduler runs at most {MAX_UNITS_PER_APP} per app"
            )));
        }
        Ok(())
    }

    async fn commands(&self, app: &str) -> Option<mpsc::Sender<Command>> {
        self.apps.lock().await.get(app).map(|h| h.commands.clone())
    }
}

fn gone() -> SchedulerError {
    SchedulerError::Backend("the local scheduler's app task has ended (is the scheduler shutting down?)".into())
}

fn sum(specs: impl Iterator<Item = Resources>) -> Resources {
    specs.fold(Resources::default(), |a, r| Resources {
        cpu_millis: a.cpu_millis.saturating_add(r.cpu_millis),
        memory_bytes: a.memory_bytes.saturating_add(r.memory_bytes),
    })
}

#[async_trait]
impl Scheduler for LocalScheduler {
    /// See [`Scheduler::apply`]. Refuses images ([`SchedulerError::Unsupported`]),
    /// missing build directories and commands ([`SchedulerError::Invalid`]) and specs
    /// whose requests, added to those of the other apps, exceed the capacity
    /// ([`SchedulerError::Capacity`]); in every such case nothing changes.
    async fn apply(&self, spec: AppSpec) -> Result<()> {
        self.check(&spec)?;
        let mut apps = self.apps.lock().await;
        if self.closed.load(Ordering::SeqCst) {
            return Err(SchedulerError::Backend("the local scheduler is shutting down".into()));
        }
        let others = sum(apps.iter().filter(|(a, _)| **a != spec.app).map(|(_, h)| h.spec.total_resources()));
        let request = spec.total_resources();
        if !self.shared.runtime.admit(&spec).await? && !self.capacity.fits(others, request) {
            return Err(SchedulerError::Capacity(format!(
                "app {} on node {}: {}. Scale the app down (deis ps:scale), lower its limits (deis limits:set) \
                 or make room by scaling other apps down.",
                spec.app,
                self.node_name,
                self.capacity.explain(others, request)
            )));
        }
        let handle = apps.entry(spec.app.clone()).or_insert_with(|| {
            let (commands, task) = Supervisor::spawn(spec.app.clone(), self.shared.clone());
            AppHandle { commands, spec: spec.clone(), task }
        });
        handle.spec = spec.clone();
        let (tx, rx) = oneshot::channel();
        handle.commands.send(Command::Apply(Box::new(spec), tx)).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())
    }

    /// See [`Scheduler::remove`]. Up units are not drained: they get `SIGTERM` at once.
    async fn remove(&self, app: &AppName) -> Result<()> {
        let Some(handle) = self.apps.lock().await.remove(app) else { return Ok(()) };
        let (tx, rx) = oneshot::channel();
        if handle.commands.send(Command::Remove(tx)).await.is_ok() {
            let _ = rx.await;
        }
        let _ = handle.task.await;
        self.shared.runtime.forget(app).await;
        Ok(())
    }

    /// See [`Scheduler::units`]. Units that are created, up, crashed or in error are
    /// listed (not those being stopped), sorted by process type, number (so `web.2`
    /// comes before `web.10`) and instance.
    async fn units(&self, app: &AppName) -> Result<Vec<Unit>> {
        let Some(commands) = self.commands(app).await else { return Ok(vec![]) };
        let (tx, rx) = oneshot::channel();
        commands.send(Command::Units(tx)).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())
    }

    /// See [`Scheduler::restart`]. Returns once every matching unit has been replaced,
    /// with the units now in their slots; a replacement that does not become ready
    /// within `ready_timeout` ends it with an error (the old unit keeps running). An
    /// unknown unit name is [`SchedulerError::NotFound`].
    async fn restart(&self, app: &AppName, filter: RestartFilter) -> Result<Vec<Unit>> {
        let Some(commands) = self.commands(app).await else {
            return Err(SchedulerError::NotFound(format!("app {app}")));
        };
        let (tx, rx) = oneshot::channel();
        commands.send(Command::Restart(filter, tx)).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    /// One node: this machine, with the requests of all applied specs as allocated.
    async fn nodes(&self) -> Result<Vec<NodeStatus>> {
        if let Some(nodes) = self.shared.runtime.nodes().await {
            return nodes;
        }
        let apps = self.apps.lock().await;
        Ok(vec![NodeStatus::new(
            self.node_name.clone(),
            self.capacity,
            sum(apps.values().map(|h| h.spec.total_resources())),
        )])
    }

    fn subscribe(&self) -> broadcast::Receiver<UnitEvent> {
        self.shared.events.subscribe()
    }

    /// Stops every unit: child processes can't outlive the scheduler.
    async fn shutdown(&self) {
        LocalScheduler::shutdown(self).await;
    }
}
