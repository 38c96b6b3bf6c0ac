//! Conformance suite of the `Scheduler` trait.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use deis_test_support::http::Request;
use tokio::sync::broadcast;
use tokio::time::Instant;

use super::run_cases;
use super::{app_name as name, process_type as ptype};
use crate::model::limits::Resources;
use crate::model::{AppName, Unit, UnitState};
use crate::scheduler::{AppSpec, Artifact, RestartFilter, Scheduler, SchedulerError, UnitEvent};

/// What the suite needs besides the scheduler: specs the backend under test can run,
/// and a way to make one of their units crash.
#[async_trait]
pub trait SchedulerHarness: Send + Sync {
    /// A spec of app `app` at release `release` with two process types:
    /// - `web`: serves HTTP/1.x on the unit's address (its `PORT`), answering every
    ///   `GET` with a body that contains the value of `DEIS_UNIT`; unless
    ///   [`crash`](SchedulerHarness::crash) is overridden, a `GET /crash` makes it exit
    ///   at once with a non-zero status;
    /// - `worker`: just keeps running.
    ///
    /// Counts are set by the suite, which may also raise the resource requests (to test
    /// admission). Requests should be small (zero is fine).
    fn sample_app(&self, app: &AppName, release: u64) -> AppSpec;

    /// Makes the process of `unit`, a `web` unit of [`sample_app`](Self::sample_app),
    /// exit on its own as a crash would (not through the scheduler). The default sends
    /// `GET /crash` to the unit's address; a container backend may instead kill the
    /// container's process through its engine.
    async fn crash(&self, unit: &Unit) {
        let addr = unit.address.unwrap_or_else(|| panic!("crash: {} has no address", unit.name));
        // The process exits instead of answering: the request fails, as it should.
        let _ = Request::get("/crash").timeout(Duration::from_secs(5)).send_async(addr).await;
    }

    /// How long the backend may take to converge after a change (default 30 s).
    fn converge_timeout(&self) -> Duration {
        Duration::from_secs(30)
    }
}

/// The sample app of [`SchedulerHarness::sample_app`] as a Python HTTP server.
const SAMPLE_WEB_PY: &str = r#"
import http.server, os
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/crash":
            os._exit(3)
        body = (os.environ["DEIS_UNIT"] + " " + os.environ.get("GREETING", "") + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"#;

/// A [`SchedulerHarness`] for backends that run [`Artifact::Source`] builds on this
/// machine with `python3` available: the sample app in a temporary directory. Its web
/// units answer `<DEIS_UNIT> <GREETING>\n` (`GREETING` is `hello from v<release>`) and
/// exit with status 3 on `GET /crash`.
#[derive(Debug)]
pub struct SourceAppHarness {
    dir: tempfile::TempDir,
}

impl Default for SourceAppHarness {
    fn default() -> Self {
        Self::new()
    }
}

impl SourceAppHarness {
    /// Writes the sample app (`web.py`) into a new temporary directory.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory for the sample app");
        std::fs::write(dir.path().join("web.py"), SAMPLE_WEB_PY).expect("writing the sample app");
        Self { dir }
    }

    /// The build directory (holds `web.py`; tests may add files).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A spec of `app` at `release` running `(type, command, count)` processes in the
    /// build directory, each requesting 10 millicores and 16 MiB.
    pub fn spec(&self, app: &AppName, release: u64, processes: &[(&str, &str, u32)]) -> AppSpec {
        let artifact = Artifact::Source { dir: PathBuf::from(self.dir()) };
        super::sample_spec(app, release, artifact, Resources { cpu_millis: 10, memory_bytes: 16 << 20 }, processes)
    }
}

/// `exec python3 web.py`: the sample web process of [`SourceAppHarness`].
pub const SAMPLE_WEB: &str = "exec python3 web.py";
/// `exec sleep 3600`: the sample worker process of [`SourceAppHarness`].
pub const SAMPLE_WORKER: &str = "exec sleep 3600";

impl SchedulerHarness for SourceAppHarness {
    fn sample_app(&self, app: &AppName, release: u64) -> AppSpec {
        self.spec(app, release, &[("web", SAMPLE_WEB, 1), ("worker", SAMPLE_WORKER, 1)])
    }
}

/// Runs every case against fresh schedulers from `make` (see the [module docs](super)
/// for the shape); a scheduler must not run other apps named `suite-*`. Panics with the
/// failing case, step and what was seen.
///
/// Besides the basics (units named and numbered, addresses, scale up and down, restart,
/// remove, events), the cases check what [`Scheduler::apply`] promises: a refused spec
/// leaves the running units alone, a crashed unit is restarted, and a release change
/// replaces units one at a time with a ready web unit at every moment.
pub async fn scheduler_suite(make: impl AsyncFn() -> Arc<dyn Scheduler>, harness: &dyn SchedulerHarness) {
    run_cases!(
        "scheduler",
        Suite: [unknown_app, lifecycle, capacity_refusal, crash_restart, rolling_release, events],
        |case| case(&Suite { s: make().await, h: harness, timeout: harness.converge_timeout() }).await
    );
}

struct Suite<'a> {
    s: Arc<dyn Scheduler>,
    h: &'a dyn SchedulerHarness,
    timeout: Duration,
}

/// How long the suite watches for a change that must not happen.
const QUIET: Duration = Duration::from_millis(500);
/// Bound of one HTTP request to a unit.
const UNIT_HTTP_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause between two samples while watching a rollout.
const SAMPLE_PAUSE: Duration = Duration::from_millis(5);

fn spec(h: &dyn SchedulerHarness, app: &str, release: u64, web: u32, worker: u32) -> AppSpec {
    let mut spec = h.sample_app(&name(app), release);
    assert_eq!(spec.app, app, "sample_app must return a spec of the app asked for");
    assert_eq!(spec.release, release, "sample_app must return a spec of the release asked for");
    for (t, n) in [("web", web), ("worker", worker)] {
        spec.processes.get_mut(t).unwrap_or_else(|| panic!("sample_app must have a {t} process type")).count = n;
    }
    spec
}

fn summary(units: &[Unit]) -> Vec<String> {
    units.iter().map(|u| format!("{}#{} v{} {} {:?}", u.name, u.instance, u.release, u.state, u.address)).collect()
}

fn instances(units: &[Unit]) -> BTreeSet<u64> {
    units.iter().map(|u| u.instance).collect()
}

/// What must not change about a unit that is left alone.
fn identity(units: &[Unit]) -> Vec<String> {
    let show = |u: &Unit| {
        let Unit { name, instance, release, state, address, restarts, pid, .. } = u;
        format!("{name}#{instance} v{release} {state} {address:?} restarts={restarts} pid={pid:?}")
    };
    units.iter().map(show).collect()
}

fn total(nodes: &[crate::scheduler::NodeStatus], of: impl Fn(&crate::scheduler::NodeStatus) -> Resources) -> Resources {
    nodes.iter().map(of).fold(Resources::default(), |a, r| Resources {
        cpu_millis: a.cpu_millis + r.cpu_millis,
        memory_bytes: a.memory_bytes + r.memory_bytes,
    })
}

/// `GET /` on `addr`; the body, or None when nothing answers with a 200.
async fn get_body(addr: SocketAddr) -> Option<String> {
    let r = Request::get("/").timeout(UNIT_HTTP_TIMEOUT).send_async(addr).await.ok()?;
    (r.status == 200).then_some(r.body)
}

/// Whether web unit `u` is up and answers on its address with its own name.
async fn serves(u: &Unit) -> bool {
    let Some(addr) = u.address.filter(|_| u.state == UnitState::Up && u.proc_type == "web") else { return false };
    get_body(addr).await.is_some_and(|body| body.contains(&u.name))
}

/// The next event of a unit of `app`, or None at `deadline`. Panics when the stream
/// ends or the receiver fell behind (events were lost).
async fn next_event(rx: &mut broadcast::Receiver<UnitEvent>, app: &str, deadline: Instant) -> Option<UnitEvent> {
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Err(_) => return None,
            Ok(Ok(ev)) if ev.unit.app == app => return Some(ev),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("unit events of {app}: {e}"),
        }
    }
}

/// What a rollout watch saw.
#[derive(Debug, Default)]
struct Rollout {
    samples: usize,
    /// Samples in which units of both the old and the new release were listed.
    mixed: usize,
    /// Rule violations, with the sample that showed them.
    violations: Vec<String>,
}

impl Suite<'_> {
    /// Polls `units(app)` until `ok` holds; panics after the converge timeout.
    async fn wait(&self, step: &str, app: &str, ok: impl Fn(&[Unit]) -> bool) -> Vec<Unit> {
        let deadline = Instant::now() + self.timeout;
        loop {
            let units = self.units(step, app).await;
            if ok(&units) {
                return units;
            }
            if Instant::now() >= deadline {
                panic!("{step}: not converged within {:?}; units of {app}: {:#?}", self.timeout, summary(&units));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn units(&self, step: &str, app: &str) -> Vec<Unit> {
        self.s.units(&name(app)).await.unwrap_or_else(|e| panic!("{step}: units({app}) failed: {e}"))
    }

    async fn apply(&self, step: &str, spec: AppSpec) {
        self.s.apply(spec).await.unwrap_or_else(|e| panic!("{step}: apply failed: {e}"));
    }

    /// Waits until `app` has exactly `web` web and `worker` worker units, all up, at
    /// `release`.
    async fn wait_up(&self, step: &str, app: &str, release: u64, web: usize, worker: usize) -> Vec<Unit> {
        self.wait(step, app, |units| {
            let count = |t: &str| units.iter().filter(|u| u.proc_type == t).count();
            count("web") == web
                && count("worker") == worker
                && units.len() == web + worker
                && units.iter().all(|u| u.state == UnitState::Up && u.release == release)
        })
        .await
    }

    /// Applies the sample app at `release` with `web` and `worker` units and waits until
    /// they are all up.
    async fn run_sample(&self, step: &str, app: &str, release: u64, web: u32, worker: u32) -> Vec<Unit> {
        self.apply(step, spec(self.h, app, release, web, worker)).await;
        self.wait_up(step, app, release, web as usize, worker as usize).await
    }

    /// Every web unit answers HTTP on its address with its own name.
    async fn answers(&self, step: &str, units: &[Unit]) {
        for u in units.iter().filter(|u| u.proc_type == "web") {
            let addr = u.address.unwrap_or_else(|| panic!("{step}: {} has no address", u.name));
            let body = get_body(addr).await.unwrap_or_else(|| panic!("{step}: {} does not answer on {addr}", u.name));
            assert!(body.contains(&u.name), "{step}: {} on {addr} answered {body:?}", u.name);
        }
    }

    /// No unit event of `app` arrives on `rx` for [`QUIET`].
    async fn assert_quiet(&self, step: &str, app: &str, rx: &mut broadcast::Receiver<UnitEvent>) {
        if let Some(ev) = next_event(rx, app, Instant::now() + QUIET).await {
            panic!("{step}: the units of {app} must be left alone, but {} became {}", ev.unit.name, ev.unit.state)
        }
    }

    async fn remove(&self, step: &str, app: &str) {
        self.s.remove(&name(app)).await.unwrap_or_else(|e| panic!("{step}: remove: {e}"));
        let left = self.units(step, app).await;
        assert!(left.is_empty(), "{step}: units left after remove: {:?}", summary(&left));
    }

    async fn unknown_app(&self) {
        let step = "unknown app";
        let units = self.units(step, "suite-nothing").await;
        assert!(units.is_empty(), "{step}: units of an unknown app: {units:?}");
        match self.s.restart(&name("suite-nothing"), RestartFilter::default()).await {
            Err(SchedulerError::NotFound(_)) => {}
            other => panic!("{step}: restart of an unknown app must be NotFound, got {other:?}"),
        }
        self.s.remove(&name("suite-nothing")).await.unwrap_or_else(|e| panic!("{step}: remove must succeed: {e}"));
    }

    async fn lifecycle(&self) {
        let (app, h) = ("suite-a", self.h);

        // Apply creates the counts, named <app>.<type>.<n>, up, with addresses.
        let step = "apply web=2 worker=1";
        let units = self.run_sample(step, app, 1, 2, 1).await;
        let names: Vec<&str> = units.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["suite-a.web.1", "suite-a.web.2", "suite-a.worker.1"], "{step}: names and order");
        for u in &units {
            assert_eq!(u.app, app, "{step}: {u:?}");
            assert_eq!(u.name, Unit::name_for(&u.app, &u.proc_type, u.number), "{step}: {u:?}");
            assert!(!u.node.is_empty(), "{step}: unit without node: {u:?}");
        }
        let webs: Vec<&Unit> = units.iter().filter(|u| u.proc_type == "web").collect();
        let addrs: BTreeSet<SocketAddr> = webs
            .iter()
            .map(|u| u.address.unwrap_or_else(|| panic!("{step}: web unit without address: {u:?}")))
            .collect();
        assert_eq!(addrs.len(), 2, "{step}: web units share an address: {:?}", summary(&units));
        self.answers(step, &units).await;

        // The same spec again changes nothing.
        let step = "apply the same spec twice";
        let mut rx = self.s.subscribe();
        self.apply(step, spec(h, app, 1, 2, 1)).await;
        self.assert_quiet(step, app, &mut rx).await;
        let again = self.wait_up(step, app, 1, 2, 1).await;
        assert_eq!(instances(&again), instances(&units), "{step}: units were replaced: {:?}", summary(&again));

        // Scale up keeps the existing units and adds.
        let step = "scale web=3";
        let scaled = self.run_sample(step, app, 1, 3, 1).await;
        assert!(instances(&scaled).is_superset(&instances(&units)), "{step}: existing units replaced");
        self.answers(step, &scaled).await;

        // Scale down removes the highest numbers.
        let step = "scale web=1 worker=0";
        let down = self.run_sample(step, app, 1, 1, 0).await;
        assert_eq!(down[0].name, "suite-a.web.1", "{step}: the lowest number must stay");
        assert_eq!(down[0].instance, units[0].instance, "{step}: web.1 must be the same unit as before");

        // A new release replaces every unit.
        let step = "new release v2 web=2";
        let v2 = self.run_sample(step, app, 2, 2, 0).await;
        assert!(instances(&v2).is_disjoint(&instances(&down)), "{step}: a v1 unit was kept: {:?}", summary(&v2));
        self.answers(step, &v2).await;

        // Restart replaces the matching units and returns them.
        let step = "restart web";
        let filter = RestartFilter { proc_type: Some(ptype("web")), unit: None };
        let restarted = self.s.restart(&name(app), filter).await.unwrap_or_else(|e| panic!("{step}: {e}"));
        let names: Vec<&str> = restarted.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["suite-a.web.1", "suite-a.web.2"], "{step}: returned {:?}", summary(&restarted));
        assert!(instances(&restarted).is_disjoint(&instances(&v2)), "{step}: not new: {:?}", summary(&restarted));
        let after = self.wait_up(step, app, 2, 2, 0).await;
        assert!(instances(&after).is_disjoint(&instances(&v2)), "{step}: old units back: {:?}", summary(&after));
        let step = "restart one unit";
        let filter = RestartFilter { proc_type: None, unit: Some("suite-a.web.2".into()) };
        let one = self.s.restart(&name(app), filter).await.unwrap_or_else(|e| panic!("{step}: {e}"));
        assert_eq!(one.len(), 1, "{step}: returned {:?}", summary(&one));
        assert_eq!(one[0].name, "suite-a.web.2", "{step}");
        assert_ne!(one[0].instance, after[1].instance, "{step}: not a new instance");
        let filter = RestartFilter { proc_type: None, unit: Some("suite-a.web.9".into()) };
        match self.s.restart(&name(app), filter).await {
            Err(SchedulerError::NotFound(_)) => {}
            other => panic!("{step}: restart of an unknown unit must be NotFound, got {other:?}"),
        }
        let last = self.wait_up(step, app, 2, 2, 0).await;

        // Remove leaves nothing, and nothing answers any more.
        let step = "remove";
        self.remove(step, app).await;
        for u in &last {
            let addr = u.address.unwrap();
            assert!(get_body(addr).await.is_none(), "{step}: {} still answers on {addr}", u.name);
        }
        self.s.remove(&name(app)).await.unwrap_or_else(|e| panic!("{step}: removing twice must succeed: {e}"));
    }

    /// Specs beyond capacity are refused and leave the running units alone: the same
    /// instances, processes and addresses, no event, the same allocation.
    async fn capacity_refusal(&self) {
        let (app, h) = ("suite-cap", self.h);
        let step = "capacity refusal: start web=2 worker=1";
        let before = self.run_sample(step, app, 1, 2, 1).await;
        let nodes = self.s.nodes().await.unwrap_or_else(|e| panic!("{step}: nodes: {e}"));
        assert!(!nodes.is_empty(), "{step}: no nodes");
        let allocated = total(&nodes, |n| n.allocated);
        let capacity =
            total(&nodes, |n| Resources { cpu_millis: n.capacity.cpu_millis, memory_bytes: n.capacity.memory_bytes });
        let mut rx = self.s.subscribe();

        let web = |release: u64, count: u32, resources: Resources| {
            let mut s = spec(h, app, release, count, 1);
            s.processes.get_mut("web").unwrap().resources = resources;
            s
        };
        let refusals = [
            ("a new release whose unit needs more cpu than every node together", {
                web(2, 2, Resources { cpu_millis: capacity.cpu_millis + 1000, memory_bytes: 0 })
            }),
            ("a new release whose unit needs more memory than every node together", {
                web(2, 2, Resources { cpu_millis: 0, memory_bytes: capacity.memory_bytes + (1 << 30) })
            }),
            ("units that each fit but not together", {
                web(2, 3, Resources { cpu_millis: capacity.cpu_millis / 2 + 1, memory_bytes: 0 })
            }),
        ];
        for (what, big) in refusals {
            let step = format!("capacity refusal: {what}");
            match self.s.apply(big).await {
                Err(SchedulerError::Capacity(msg)) => assert!(!msg.is_empty(), "{step}: empty message"),
                other => panic!("{step}: expected a capacity error, got {other:?}"),
            }
        }
        let step = "capacity refusal: running units left alone";
        self.assert_quiet(step, app, &mut rx).await;
        let after = self.units(step, app).await;
        assert_eq!(identity(&after), identity(&before), "{step}: units changed: {:?}", summary(&after));
        self.answers(step, &after).await;
        let nodes = self.s.nodes().await.unwrap_or_else(|e| panic!("{step}: nodes: {e}"));
        assert_eq!(total(&nodes, |n| n.allocated), allocated, "{step}: allocation changed");
        self.remove(step, app).await;
    }

    /// A unit whose process exits on its own is restarted: the same unit (name and
    /// instance), a new process, its restart counted, serving again; the others are left
    /// alone.
    async fn crash_restart(&self) {
        let (app, h) = ("suite-crash", self.h);
        let step = "crash: start web=2 worker=1";
        let before = self.run_sample(step, app, 1, 2, 1).await;
        let victim = before[0].clone();
        assert_eq!(victim.name, "suite-crash.web.1", "{step}");

        let step = "crash web.1";
        let mut rx = self.s.subscribe();
        h.crash(&victim).await;
        let deadline = Instant::now() + self.timeout;
        let mut seen = vec![];
        let restarted = loop {
            let Some(ev) = next_event(&mut rx, app, deadline).await else {
                panic!("{step}: web.1 not up again within {:?}; events: {seen:?}", self.timeout)
            };
            seen.push(format!("{}#{} {} ({:?})", ev.unit.name, ev.unit.instance, ev.unit.state, ev.reason));
            assert_eq!(ev.unit.name, victim.name, "{step}: only the crashed unit may change; events: {seen:?}");
            if ev.unit.state == UnitState::Up {
                break ev.unit;
            }
        };
        assert!(
            seen.iter().any(|e| e.contains(" crashed ")),
            "{step}: the crash must be announced (state crashed) before the unit is up again: {seen:?}"
        );
        assert_eq!(restarted.instance, victim.instance, "{step}: a restart keeps the unit: {seen:?}");
        assert_eq!(restarted.restarts, victim.restarts + 1, "{step}: the restart is counted: {restarted:?}");
        if let (Some(old), Some(new)) = (victim.pid, restarted.pid) {
            assert_ne!(old, new, "{step}: the same process is still running");
        }
        let after = self.wait_up(step, app, 1, 2, 1).await;
        assert_eq!(identity(&after[1..]), identity(&before[1..]), "{step}: other units changed: {:?}", summary(&after));
        assert_eq!(after[0].instance, victim.instance, "{step}");
        self.answers(step, &after).await;
        self.remove(step, app).await;
    }

    /// A release change replaces units one at a time, new before old: watched
    /// continuously (units() and real requests to the web units), at no moment is there
    /// no web unit both up and answering, never more than one unit of a type is being
    /// replaced, and never more than one extra unit of a type runs.
    async fn rolling_release(&self) {
        let (app, h) = ("suite-roll", self.h);

        // One web unit: only the surge unit keeps the app serving.
        let step = "rolling: one web unit";
        let v1 = self.run_sample(step, app, 1, 1, 1).await;
        let v2 = self.roll(step, app, spec(h, app, 2, 1, 1), &v1).await;

        // Three web units and two workers: one replacement at a time.
        let step = "rolling: web=3 worker=2";
        let scaled = self.run_sample(step, app, 2, 3, 2).await;
        assert!(instances(&scaled).is_superset(&instances(&v2)), "{step}: scaling replaced units");
        self.roll(step, app, spec(h, app, 3, 3, 2), &scaled).await;
        self.remove(step, app).await;
    }

    /// Applies `next` to `app`, whose units are `old`, watching the rollout until it
    /// converged; returns the new units.
    async fn roll(&self, step: &str, app: &str, next: AppSpec, old: &[Unit]) -> Vec<Unit> {
        let counts: BTreeMap<String, u32> = next.processes.iter().map(|(t, p)| (t.to_string(), p.count)).collect();
        let (release, web, worker) = (next.release, counts["web"] as usize, counts["worker"] as usize);
        let done = AtomicBool::new(false);
        let (seen, new) = tokio::join!(self.watch_rollout(step, app, &counts, &done), async {
            self.apply(step, next).await;
            let new = self.wait_up(step, app, release, web, worker).await;
            done.store(true, Ordering::Release);
            new
        });
        let first: Vec<&str> = seen.violations.iter().take(10).map(String::as_str).collect();
        assert!(
            first.is_empty(),
            "{step}: {} rule violations; the first:\n{}",
            seen.violations.len(),
            first.join("\n")
        );
        assert!(
            seen.mixed > 0,
            "{step}: the watch never saw the rollout ({} samples): it proves nothing",
            seen.samples
        );
        assert!(instances(&new).is_disjoint(&instances(old)), "{step}: a unit was kept: {:?}", summary(&new));
        self.answers(step, &new).await;
        new
    }

    /// Samples `app` until `done`: see [`Suite::rolling_release`].
    async fn watch_rollout(&self, step: &str, app: &str, counts: &BTreeMap<String, u32>, done: &AtomicBool) -> Rollout {
        let mut seen = Rollout::default();
        while !done.load(Ordering::Acquire) {
            let mut units = self.units(step, app).await;
            seen.samples += 1;
            let releases: BTreeSet<u64> = units.iter().map(|u| u.release).collect();
            if releases.len() > 1 {
                seen.mixed += 1;
            }
            for (t, &n) in counts {
                let of_type: Vec<&Unit> = units.iter().filter(|u| u.proc_type == *t).collect();
                if of_type.len() > n as usize + 1 {
                    seen.violations.push(format!("more than one extra {t} unit: {:?}", summary(&units)));
                }
                // A slot is changing unless it has exactly one unit, and that one is up.
                let changing = (1..=n)
                    .filter(|k| {
                        let slot: Vec<&&Unit> = of_type.iter().filter(|u| u.number == *k).collect();
                        !(slot.len() == 1 && slot[0].state == UnitState::Up)
                    })
                    .count();
                if changing > 1 {
                    seen.violations.push(format!("{changing} {t} units replaced at once: {:?}", summary(&units)));
                }
            }
            // Some web unit is up and answers. A unit listed up may have been replaced
            // and stopped since the listing: look again before calling it a gap.
            let mut serving = false;
            for _ in 0..2 {
                for u in &units {
                    if serves(u).await {
                        serving = true;
                        break;
                    }
                }
                if serving || done.load(Ordering::Acquire) {
                    break;
                }
                units = self.units(step, app).await;
            }
            if !serving && !done.load(Ordering::Acquire) {
                seen.violations.push(format!("no web unit up and answering: {:?}", summary(&units)));
            }
            tokio::time::sleep(SAMPLE_PAUSE).await;
        }
        seen
    }

    async fn events(&self) {
        let (app, step) = ("suite-b", "subscribe sees up events");
        let mut rx = self.s.subscribe();
        self.apply(step, spec(self.h, app, 1, 1, 1)).await;
        let mut want: BTreeSet<String> = ["suite-b.web.1", "suite-b.worker.1"].map(String::from).into();
        let deadline = Instant::now() + self.timeout;
        while !want.is_empty() {
            let Some(ev) = next_event(&mut rx, app, deadline).await else {
                panic!("{step}: no up event for {want:?} within {:?}", self.timeout)
            };
            if ev.unit.state == UnitState::Up {
                want.remove(&ev.unit.name);
            }
        }
        self.remove(step, app).await;
    }
}
