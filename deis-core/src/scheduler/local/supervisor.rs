//! One task per app, owning the app's desired spec and its unit instances, converging
//! the second on the first. Commands arrive on a channel; processes and probes report
//! back on another; nothing else touches the state.
//!
//! Convergence ([`Supervisor::reconcile`], after every command, report or timer):
//! 1. units of types no longer wanted or numbered above the count are stopped (web
//!    units that were up are marked down first and drained for `drain_delay`);
//! 2. crashed units are restarted when their backoff is over;
//! 3. empty slots (`<type>.<n>` up to the count) get a new unit;
//! 4. units whose template (release, command, environment, resources, healthcheck,
//!    node selector)
//!    differs from the spec, or that a restart asked for, are replaced. One up unit at
//!    a time: a candidate starts next to it; once the candidate is ready it is marked
//!    up, the old one down, and after `drain_delay` the old one is stopped; only when
//!    it is gone does the next replacement start. Units that are not serving (not
//!    ready yet, crashed) are replaced at once. A candidate that is not ready within
//!    `ready_timeout` (or exits) is stopped, the old unit kept, and the rollout paused
//!    until the next `apply` or restart.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::output::{OutputStream, UnitOutput, pump_lines};
use super::ports::PortAllocator;
use super::probe::{ProbeTarget, Readiness, wait_ready, watch_liveness};
use super::process::{Ended, ExitInfo, GroupSignal, Launch, ProcessRuntime};
use crate::model::limits::{Resources, format_memory};
use crate::model::{AppIdentity, AppName, Healthcheck, ProcessType, Unit, UnitState};
use crate::scheduler::{AppSpec, Artifact, RestartFilter, Result, SchedulerError, UnitEvent};
use crate::sys::process::inherited_env;
use crate::time::Timestamp;

/// First delay before restarting a crashed unit; doubles on each crash.
pub const BACKOFF_MIN: Duration = Duration::from_millis(500);
/// Longest delay before restarting a crashed unit.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A unit that ran this long before crashing restarts after [`BACKOFF_MIN`] again.
pub const BACKOFF_RESET: Duration = Duration::from_secs(30);
/// How often a stopping unit's process group is checked for leftovers.
const GROUP_POLL: Duration = Duration::from_millis(20);
/// How long to wait for a killed process group to disappear.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// What every supervisor shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub runtime: Arc<dyn ProcessRuntime>,
    pub ports: PortAllocator,
    pub events: broadcast::Sender<UnitEvent>,
    pub node: String,
    pub output: Arc<dyn UnitOutput>,
    pub stop_timeout: Duration,
    pub ready_timeout: Duration,
    pub drain_delay: Duration,
    pub next_instance: AtomicU64,
}

/// Requests to a supervisor.
#[derive(Debug)]
pub(crate) enum Command {
    /// New desired state (already admitted).
    Apply(Box<AppSpec>, oneshot::Sender<()>),
    /// The current units.
    Units(oneshot::Sender<Vec<Unit>>),
    /// Rolling restart of the matching units; answered when done.
    Restart(RestartFilter, oneshot::Sender<Result<Vec<Unit>>>),
    /// Stop everything; answered when every process is gone. The task then ends.
    Remove(oneshot::Sender<()>),
}

/// Reports from process and probe tasks. `run` tells launches of one instance apart.
#[derive(Debug)]
enum Report {
    Exited {
        id: u64,
        run: u32,
        info: ExitInfo,
        ended: Ended,
    },
    Ready {
        id: u64,
        run: u32,
        ok: bool,
    },
    /// The liveness probe failed `failures` times in a row.
    Unhealthy {
        id: u64,
        run: u32,
        failures: u32,
    },
}

/// What a unit runs: the spec without the count. Units with an equal template need no
/// replacement.
#[derive(Debug, PartialEq, Eq)]
struct Template {
    release: u64,
    artifact: Artifact,
    dir: PathBuf,
    command: String,
    env: BTreeMap<String, String>,
    resources: Resources,
    limits: Resources,
    identity: Option<AppIdentity>,
    healthcheck: Option<Healthcheck>,
    liveness: Option<Healthcheck>,
    /// The app's node selector: where a runtime places units, a change moves them.
    selector: BTreeMap<String, String>,
}

#[derive(Debug)]
struct Instance {
    id: u64,
    proc_type: ProcessType,
    number: u32,
    template: Arc<Template>,
    /// 0 until allocated.
    port: u16,
    state: UnitState,
    run: u32,
    pid: Option<u32>,
    /// What [`Unit::pid`] shows while `pid` is set.
    process_id: Option<u32>,
    /// Where the runtime started it (None: the scheduler's node, 127.0.0.1).
    node: Option<String>,
    ip: Option<IpAddr>,
    started: Option<Timestamp>,
    launched_at: Option<Instant>,
    restarts: u32,
    backoff: Duration,
    restart_at: Option<Instant>,
    /// Set while this instance is the candidate replacing another one.
    replaces: Option<u64>,
    /// Being stopped for good.
    retiring: bool,
    drain_until: Option<Instant>,
    stop: Option<oneshot::Sender<()>>,
    probe: Option<AbortHandle>,
    /// Why the supervisor stopped a running unit itself (failed liveness probe).
    kill_reason: Option<String>,
}

#[derive(Debug)]
struct RestartWaiter {
    old: BTreeSet<u64>,
    slots: BTreeSet<(ProcessType, u32)>,
    reply: oneshot::Sender<Result<Vec<Unit>>>,
}

/// The state of one app. See the module docs.
#[derive(Debug)]
pub(crate) struct Supervisor {
    app: AppName,
    shared: Arc<Shared>,
    desired: Option<AppSpec>,
    templates: BTreeMap<ProcessType, Arc<Template>>,
    instances: BTreeMap<u64, Instance>,
    /// Instances a restart asked to replace.
    forced: BTreeSet<u64>,
    /// Why the current rollout stopped, until the next apply or restart.
    rollout_failed: Option<String>,
    /// The old instance of the last replacement, until it is gone.
    rolling_old: Option<u64>,
    removing: bool,
    remove_waiters: Vec<oneshot::Sender<()>>,
    restart_waiters: Vec<RestartWaiter>,
    reports: mpsc::UnboundedSender<Report>,
}

impl Supervisor {
    /// Starts the task of `app`; returns its command channel and the task.
    pub(crate) fn spawn(app: AppName, shared: Arc<Shared>) -> (mpsc::Sender<Command>, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(64);
        let (reports, report_rx) = mpsc::unbounded_channel();
        let sup = Self {
            app,
            shared,
            desired: None,
            templates: BTreeMap::new(),
            instances: BTreeMap::new(),
            forced: BTreeSet::new(),
            rollout_failed: None,
            rolling_old: None,
            removing: false,
            remove_waiters: vec![],
            restart_waiters: vec![],
            reports,
        };
        (tx, tokio::spawn(sup.run(rx, report_rx)))
    }

    async fn run(mut self, mut commands: mpsc::Receiver<Command>, mut reports: mpsc::UnboundedReceiver<Report>) {
        let mut commands_open = true;
        loop {
            let wake = self.next_wake();
            tokio::select! {
                cmd = commands.recv(), if commands_open => match cmd {
                    Some(cmd) => self.command(cmd),
                    // The scheduler was dropped: stop the units and end.
                    None => {
                        commands_open = false;
                        self.removing = true;
                    }
                },
                Some(report) = reports.recv() => self.report(report),
                () = sleep_until(wake) => {}
            }
            self.reconcile();
            self.answer_restarts();
            if self.removing && self.instances.is_empty() {
                for w in self.remove_waiters.drain(..) {
                    let _ = w.send(());
                }
                for w in self.restart_waiters.drain(..) {
                    let _ = w.reply.send(Err(SchedulerError::NotFound(format!("app {}", self.app))));
                }
                break;
            }
        }
        tracing::debug!(app = %self.app, "app supervisor ended");
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Apply(spec, reply) => {
                self.templates =
                    spec.processes.iter().map(|(t, p)| (t.clone(), Arc::new(template(&spec, p)))).collect();
                self.desired = Some(*spec);
                self.rollout_failed = None;
                let _ = reply.send(());
            }
            Command::Units(reply) => {
                let _ = reply.send(self.units());
            }
            Command::Restart(filter, reply) => self.restart(filter, reply),
            Command::Remove(reply) => {
                self.removing = true;
                self.remove_waiters.push(reply);
            }
        }
    }

    fn restart(&mut self, filter: RestartFilter, reply: oneshot::Sender<Result<Vec<Unit>>>) {
        let matching: Vec<&Instance> = self
            .instances
            .values()
            .filter(|i| !i.retiring && i.replaces.is_none())
            .filter(|i| filter.proc_type.as_ref().is_none_or(|t| *t == i.proc_type))
            .filter(|i| filter.unit.as_ref().is_none_or(|u| *u == self.name(i)))
            .collect();
        if matching.is_empty() {
            let _ = reply.send(match &filter.unit {
                Some(u) => Err(SchedulerError::NotFound(format!("unit {u} of app {}", self.app))),
                None => Ok(vec![]),
            });
            return;
        }
        let old: BTreeSet<u64> = matching.iter().map(|i| i.id).collect();
        let slots = matching.iter().map(|i| (i.proc_type.clone(), i.number)).collect();
        self.forced.extend(&old);
        self.rollout_failed = None;
        self.restart_waiters.push(RestartWaiter { old, slots, reply });
    }

    fn report(&mut self, report: Report) {
        match report {
            Report::Exited { id, run, info, ended } => self.exited(id, run, info, ended),
            Report::Ready { id, run, ok } => self.ready(id, run, ok),
            Report::Unhealthy { id, run, failures } => self.unhealthy(id, run, failures),
        }
    }

    fn exited(&mut self, id: u64, run: u32, info: ExitInfo, ended: Ended) {
        let Some(inst) = self.instances.get_mut(&id).filter(|i| i.run == run) else { return };
        inst.pid = None;
        inst.stop = None;
        if let Some(p) = inst.probe.take() {
            p.abort();
        }
        if inst.retiring {
            self.destroy(id);
            return;
        }
        let name = Unit::name_for(&self.app, &inst.proc_type, inst.number);
        let why = match inst.kill_reason.take() {
            Some(killed_for) => format!("{killed_for} ({info})"),
            None => crash_reason(info, ended, &inst.template),
        };
        if inst.replaces.is_some() {
            self.fail_rollout(format!("new unit {name} exited ({why}) before it became ready"));
            self.destroy(id);
            return;
        }
        let now = Instant::now();
        if inst.launched_at.is_some_and(|t| now.duration_since(t) >= BACKOFF_RESET) {
            inst.backoff = BACKOFF_MIN;
        }
        tracing::warn!(unit = %name, status = %why, restart_in = ?inst.backoff, "unit crashed");
        inst.state = UnitState::Crashed;
        inst.restart_at = Some(now + inst.backoff);
        inst.backoff = (inst.backoff * 2).min(BACKOFF_MAX);
        self.emit_because(id, Some(why));
    }

    fn ready(&mut self, id: u64, run: u32, ok: bool) {
        let Some(inst) = self.instances.get_mut(&id) else { return };
        if inst.run != run || inst.retiring || inst.pid.is_none() || inst.state != UnitState::Created {
            return;
        }
        let name = Unit::name_for(&self.app, &inst.proc_type, inst.number);
        if ok {
            inst.state = UnitState::Up;
            let replaced = inst.replaces.take();
            self.emit(id);
            // The old unit may be gone already (it crashed and was dropped).
            if let Some(old) = replaced.filter(|old| self.instances.contains_key(old)) {
                tracing::info!(unit = %name, "replacement ready; stopping the old unit");
                self.rolling_old = Some(old);
                self.retire(old, true);
            }
        } else if inst.replaces.is_some() {
            let timeout = self.shared.ready_timeout;
            self.fail_rollout(format!("new unit {name} did not become ready within {timeout:?}"));
            self.retire(id, false);
        } else {
            tracing::warn!(unit = %name, timeout = ?self.shared.ready_timeout, "unit is still not ready; still probing");
        }
    }

    /// A unit failed its liveness probe: stop it; its exit then counts as a crash
    /// (restart with backoff), with the probe named as the reason.
    fn unhealthy(&mut self, id: u64, run: u32, failures: u32) {
        let Some(inst) = self.instances.get_mut(&id).filter(|i| i.run == run && !i.retiring) else { return };
        let name = Unit::name_for(&self.app, &inst.proc_type, inst.number);
        tracing::warn!(unit = %name, failures, "liveness probe failed; restarting the unit");
        inst.kill_reason = Some(format!("liveness probe failed {failures} times in a row"));
        if let Some(stop) = inst.stop.take() {
            let _ = stop.send(());
        }
    }

    fn fail_rollout(&mut self, reason: String) {
        tracing::error!(app = %self.app, %reason,
            "rollout failed: the old units keep running; fix the app and deploy or restart again");
        self.rollout_failed = Some(reason);
    }

    /// Stops instance `id` for good; `drain` keeps an up unit running (marked down)
    /// for `drain_delay` first.
    fn retire(&mut self, id: u64, drain: bool) {
        let drain_delay = self.shared.drain_delay;
        let Some(inst) = self.instances.get_mut(&id) else { return };
        if inst.retiring {
            return;
        }
        inst.retiring = true;
        inst.restart_at = None;
        if let Some(p) = inst.probe.take() {
            p.abort();
        }
        if inst.pid.is_none() {
            self.destroy(id);
            return;
        }
        let was_up = inst.state == UnitState::Up;
        inst.state = UnitState::Down;
        if drain && was_up && !drain_delay.is_zero() {
            inst.drain_until = Some(Instant::now() + drain_delay);
        } else if let Some(stop) = inst.stop.take() {
            let _ = stop.send(());
        }
        self.emit(id);
    }

    fn destroy(&mut self, id: u64) {
        let Some(mut inst) = self.instances.remove(&id) else { return };
        if inst.port != 0 {
            self.shared.ports.release(inst.port);
        }
        inst.state = UnitState::Destroyed;
        inst.pid = None;
        let unit = self.unit(&inst);
        let _ = self.shared.events.send(UnitEvent::new(unit));
        self.forced.remove(&id);
        if self.rolling_old == Some(id) {
            self.rolling_old = None;
        }
    }

    fn reconcile(&mut self) {
        let now = Instant::now();
        for inst in self.instances.values_mut() {
            if inst.drain_until.is_some_and(|t| t <= now || self.removing) {
                inst.drain_until = None;
                if let Some(stop) = inst.stop.take() {
                    let _ = stop.send(());
                }
            }
        }
        if self.removing {
            let ids: Vec<u64> = self.instances.values().filter(|i| !i.retiring).map(|i| i.id).collect();
            for id in ids {
                self.retire(id, false);
            }
            return;
        }
        let Some(spec) = &self.desired else { return };
        let counts: BTreeMap<ProcessType, u32> = spec.processes.iter().map(|(t, p)| (t.clone(), p.count)).collect();
        let count = |t: &str| counts.get(t).copied().unwrap_or(0);

        // 1. Scale down, highest numbers first.
        let mut extra: Vec<(u32, u64)> = self
            .instances
            .values()
            .filter(|i| !i.retiring && i.number > count(&i.proc_type))
            .map(|i| (i.number, i.id))
            .collect();
        extra.sort_unstable_by(|a, b| b.cmp(a));
        for (_, id) in extra {
            self.retire(id, true);
        }

        // Candidates for a template that is no longer wanted.
        let stale: Vec<u64> = self
            .live()
            .filter(|i| i.replaces.is_some() && self.templates.get(&i.proc_type) != Some(&i.template))
            .map(|i| i.id)
            .collect();
        for id in stale {
            self.retire(id, false);
        }

        // 2. Restarts whose backoff is over, and replacement of units that serve nothing.
        let paused = self.rollout_failed.is_some();
        let due: Vec<u64> = self
            .live()
            .filter(|i| i.replaces.is_none())
            .filter(|i| {
                let restart_due = i.restart_at.is_some_and(|t| t <= now);
                let idle_outdated = !paused && i.state != UnitState::Up && self.outdated(i);
                restart_due || idle_outdated
            })
            .map(|i| i.id)
            .collect();
        for id in due {
            let inst = &self.instances[&id];
            if !paused && self.outdated(inst) {
                let slot = (inst.proc_type.clone(), inst.number);
                let has_candidate = self.live().any(|i| i.replaces == Some(id));
                self.retire(id, false);
                if !has_candidate {
                    self.start_new(slot.0, slot.1, None);
                }
            } else if inst.restart_at.is_some_and(|t| t <= now) {
                let inst = self.instances.get_mut(&id).unwrap();
                inst.restarts += 1;
                self.launch(id);
            }
        }

        // 3. Fill empty slots.
        let wanted: Vec<(ProcessType, u32)> = self.templates.keys().map(|t| (t.clone(), count(t))).collect();
        for (proc_type, n) in wanted {
            for number in 1..=n {
                if !self.live().any(|i| i.proc_type == proc_type && i.number == number) {
                    self.start_new(proc_type.clone(), number, None);
                }
            }
        }

        // 4. Rolling replacement of up units, one at a time.
        if paused || self.rolling_old.is_some() || self.live().any(|i| i.replaces.is_some()) {
            return;
        }
        let next = self
            .live()
            .filter(|i| i.replaces.is_none() && i.state == UnitState::Up && self.outdated(i))
            .min_by_key(|i| (i.proc_type.clone(), i.number))
            .map(|i| (i.proc_type.clone(), i.number, i.id));
        if let Some((proc_type, number, old)) = next {
            tracing::info!(unit = %Unit::name_for(&self.app, &proc_type, number), "replacing unit");
            self.start_new(proc_type, number, Some(old));
        }
    }

    /// Instances not being stopped.
    fn live(&self) -> impl Iterator<Item = &Instance> {
        self.instances.values().filter(|i| !i.retiring)
    }

    fn outdated(&self, inst: &Instance) -> bool {
        self.templates.get(&inst.proc_type) != Some(&inst.template) || self.forced.contains(&inst.id)
    }

    fn start_new(&mut self, proc_type: ProcessType, number: u32, replaces: Option<u64>) {
        let Some(template) = self.templates.get(&proc_type).cloned() else { return };
        let id = self.shared.next_instance.fetch_add(1, Ordering::Relaxed);
        self.instances.insert(
            id,
            Instance {
                id,
                proc_type,
                number,
                template,
                port: 0,
                state: UnitState::Initialized,
                run: 0,
                pid: None,
                process_id: None,
                node: None,
                ip: None,
                started: None,
                launched_at: None,
                restarts: 0,
                backoff: BACKOFF_MIN,
                restart_at: None,
                replaces,
                retiring: false,
                drain_until: None,
                stop: None,
                probe: None,
                kill_reason: None,
            },
        );
        self.launch(id);
    }

    /// Starts (or restarts) the process of instance `id`.
    fn launch(&mut self, id: u64) {
        let shared = self.shared.clone();
        let app = self.app.clone();
        let Some(inst) = self.instances.get_mut(&id) else { return };
        inst.run += 1;
        inst.restart_at = None;
        let name = Unit::name_for(&app, &inst.proc_type, inst.number);
        if inst.port == 0 {
            match shared.ports.allocate() {
                Ok(p) => inst.port = p,
                Err(e) => {
                    tracing::error!(unit = %name, error = %e, "cannot find a free port for the unit");
                    self.launch_failed(id);
                    return;
                }
            }
        }
        let env = unit_env(&inst.template, &app, &name, inst.port);
        let launch = Launch {
            unit: name.clone(),
            app: app.clone(),
            proc_type: inst.proc_type.clone(),
            number: inst.number,
            release: inst.template.release,
            artifact: inst.template.artifact.clone(),
            command: inst.template.command.clone(),
            dir: inst.template.dir.clone(),
            env: env.clone(),
            port: inst.port,
            resources: inst.template.resources,
            identity: inst.template.identity,
            limits: inst.template.limits,
        };
        let spawned = match shared.runtime.spawn(&launch) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(unit = %name, error = %e, "cannot start the unit");
                self.launch_failed(id);
                return;
            }
        };
        if let Some(port) = spawned.port.filter(|p| *p != inst.port) {
            // An adopted unit keeps the port it was started with.
            shared.ports.release(inst.port);
            shared.ports.hold(port);
            inst.port = port;
        }
        let now = Instant::now();
        inst.pid = Some(spawned.pid);
        inst.process_id = spawned.process_id;
        inst.node = spawned.node;
        inst.ip = spawned.ip;
        inst.state = UnitState::Created;
        inst.started = Some(Timestamp::now());
        inst.launched_at = Some(now);
        let (stop_tx, stop_rx) = oneshot::channel();
        inst.stop = Some(stop_tx);
        let run = inst.run;
        let readiness = Readiness::for_unit(&inst.proc_type, inst.template.healthcheck.as_ref());
        let liveness = inst.template.liveness.clone();
        let ip = inst.ip.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let target = ProbeTarget { handle: spawned.pid, ip, port: inst.port, dir: inst.template.dir.clone(), env };
        tracing::info!(unit = %name, pid = spawned.pid, port = inst.port, "unit started");

        let unit = self.unit(&self.instances[&id]);
        for (reader, stream) in [(spawned.stdout, OutputStream::Stdout), (spawned.stderr, OutputStream::Stderr)] {
            if let Some(reader) = reader {
                tokio::spawn(pump_lines(reader, unit.clone(), stream, shared.output.clone()));
            }
        }
        tokio::spawn(watch(shared.clone(), spawned.pid, spawned.exited, stop_rx, self.reports.clone(), id, run));
        let probe = tokio::spawn(probe_until_ready(shared, target, readiness, liveness, self.reports.clone(), id, run));
        self.instances.get_mut(&id).unwrap().probe = Some(probe.abort_handle());
        self.emit(id);
    }

    fn launch_failed(&mut self, id: u64) {
        let Some(inst) = self.instances.get_mut(&id) else { return };
        inst.state = UnitState::Error;
        inst.restart_at = Some(Instant::now() + inst.backoff);
        inst.backoff = (inst.backoff * 2).min(BACKOFF_MAX);
        if inst.replaces.is_some() {
            let name = self.name(&self.instances[&id]);
            self.fail_rollout(format!("new unit {name} could not be started"));
            self.destroy(id);
            return;
        }
        self.emit(id);
    }

    fn answer_restarts(&mut self) {
        for w in std::mem::take(&mut self.restart_waiters) {
            let pending = w.old.iter().any(|id| self.instances.get(id).is_some_and(|i| !i.retiring));
            let answer = match (&self.rollout_failed, pending) {
                (None, true) => {
                    self.restart_waiters.push(w);
                    continue;
                }
                (Some(reason), true) => {
                    Err(SchedulerError::Backend(format!("restart of app {}: {reason}", self.app).into()))
                }
                (_, false) => Ok(self
                    .units()
                    .into_iter()
                    .filter(|u| w.slots.contains(&(u.proc_type.clone(), u.number)))
                    .collect()),
            };
            let _ = w.reply.send(answer);
        }
    }

    fn next_wake(&self) -> Option<Instant> {
        self.instances.values().flat_map(|i| [i.restart_at, i.drain_until]).flatten().min()
    }

    /// The reportable units: those not stopped, sorted by type, number and instance.
    fn units(&self) -> Vec<Unit> {
        let mut units: Vec<Unit> = self
            .instances
            .values()
            .filter(|i| !matches!(i.state, UnitState::Down | UnitState::Destroyed | UnitState::Initialized))
            .map(|i| self.unit(i))
            .collect();
        units.sort_by(|a, b| (&a.proc_type, a.number, a.instance).cmp(&(&b.proc_type, b.number, b.instance)));
        units
    }

    fn name(&self, inst: &Instance) -> String {
        Unit::name_for(&self.app, &inst.proc_type, inst.number)
    }

    fn unit(&self, inst: &Instance) -> Unit {
        Unit {
            name: self.name(inst),
            instance: inst.id,
            app: self.app.clone(),
            proc_type: inst.proc_type.clone(),
            number: inst.number,
            release: inst.template.release,
            state: inst.state,
            address: (inst.port != 0)
                .then(|| SocketAddr::from((inst.ip.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)), inst.port))),
            node: inst.node.clone().unwrap_or_else(|| self.shared.node.clone()),
            started: inst.started,
            restarts: inst.restarts,
            pid: inst.pid.and(inst.process_id),
        }
    }

    fn emit(&self, id: u64) {
        self.emit_because(id, None);
    }

    fn emit_because(&self, id: u64, reason: Option<String>) {
        if let Some(inst) = self.instances.get(&id) {
            let _ = self.shared.events.send(UnitEvent { unit: self.unit(inst), reason });
        }
    }
}

fn template(spec: &AppSpec, p: &crate::scheduler::ProcessSpec) -> Template {
    let dir = match &spec.artifact {
        Artifact::Source { dir } => dir.clone(),
        // Refused by admission; keep a harmless value.
        Artifact::Image { .. } => PathBuf::new(),
    };
    Template {
        release: spec.release,
        artifact: spec.artifact.clone(),
        dir,
        command: p.command.clone(),
        env: spec.env.clone(),
        resources: p.resources,
        limits: p.limits,
        identity: spec.identity,
        healthcheck: p.healthcheck.clone(),
        liveness: p.liveness.clone(),
        selector: spec.selector.clone(),
    }
}

/// Why a unit ended, for its crash line: "out of memory" when the kernel killed it for
/// going past its memory limit.
fn crash_reason(info: ExitInfo, ended: Ended, template: &Template) -> String {
    if !ended.out_of_memory {
        return info.to_string();
    }
    match template.limits.memory_bytes {
        0 => format!("out of memory: {info}"),
        limit => format!("out of memory (limit {}): {info}", format_memory(limit)),
    }
}

/// The whole environment of a unit: [`inherited_env`] from the scheduler, then the
/// release's config, then `PORT`, `DEIS_APP`, `DEIS_RELEASE` (`v<N>`) and `DEIS_UNIT`.
fn unit_env(t: &Template, app: &str, unit: &str, port: u16) -> Vec<(String, String)> {
    let mut env = inherited_env();
    env.extend(t.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    env.insert("PORT".into(), port.to_string());
    env.insert("DEIS_APP".into(), app.into());
    env.insert("DEIS_RELEASE".into(), format!("v{}", t.release));
    env.insert("DEIS_UNIT".into(), unit.into());
    env.into_iter().collect()
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Watches one process: reports when it ends on its own, or stops it (SIGTERM to the
/// group; SIGKILL once `stop_timeout` is over) when asked. Reports only after the
/// leader was reaped and its group is gone (or was killed and waited for).
async fn watch(
    shared: Arc<Shared>,
    pgid: u32,
    mut exited: oneshot::Receiver<ExitInfo>,
    mut stop: oneshot::Receiver<()>,
    reports: mpsc::UnboundedSender<Report>,
    id: u64,
    run: u32,
) {
    let rt = &*shared.runtime;
    let unknown = ExitInfo { code: None, signal: None };
    let info = tokio::select! {
        info = &mut exited => {
            // The leader ended on its own: end what is left of its group.
            if rt.group_alive(pgid) {
                rt.signal_group(pgid, GroupSignal::Kill);
            }
            wait_group_gone(rt, pgid, Instant::now() + KILL_WAIT).await;
            info.unwrap_or(unknown)
        }
        // Asked to stop, or the supervisor is gone.
        _ = &mut stop => {
            rt.signal_group(pgid, GroupSignal::Term);
            let deadline = Instant::now() + shared.stop_timeout;
            let info = tokio::select! {
                info = &mut exited => Some(info.unwrap_or(unknown)),
                () = tokio::time::sleep_until(deadline) => None,
            };
            if info.is_none() || !wait_group_gone(rt, pgid, deadline).await {
                tracing::warn!(pgid, timeout = ?shared.stop_timeout, "unit did not stop after SIGTERM; sending SIGKILL");
                rt.signal_group(pgid, GroupSignal::Kill);
            }
            let info = match info {
                Some(i) => i,
                None => exited.await.unwrap_or(unknown),
            };
            wait_group_gone(rt, pgid, Instant::now() + KILL_WAIT).await;
            info
        }
    };
    let ended = rt.released(pgid).await;
    let _ = reports.send(Report::Exited { id, run, info, ended });
}

/// Polls until group `pgid` is empty; false if it still is not at `deadline`.
async fn wait_group_gone(rt: &dyn ProcessRuntime, pgid: u32, deadline: Instant) -> bool {
    loop {
        if !rt.group_alive(pgid) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(GROUP_POLL).await;
    }
}

/// Reports readiness: `ok: false` once `ready_timeout` is over, then keeps probing and
/// reports `ok: true` if the unit becomes ready later. Then, with a liveness probe,
/// watches the unit's health for as long as it runs (the task is aborted when it ends).
async fn probe_until_ready(
    shared: Arc<Shared>,
    target: ProbeTarget,
    readiness: Readiness,
    liveness: Option<Healthcheck>,
    reports: mpsc::UnboundedSender<Report>,
    id: u64,
    run: u32,
) {
    let rt = &*shared.runtime;
    let in_time = tokio::time::timeout(shared.ready_timeout, wait_ready(rt, &target, &readiness)).await.is_ok();
    let _ = reports.send(Report::Ready { id, run, ok: in_time });
    if !in_time {
        wait_ready(rt, &target, &readiness).await;
        let _ = reports.send(Report::Ready { id, run, ok: true });
    }
    if let Some(check) = liveness {
        let failures = watch_liveness(rt, &target, &check).await;
        let _ = reports.send(Report::Unhealthy { id, run, failures });
    }
}
