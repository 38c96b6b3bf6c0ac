//! Conformance suite of the `Scheduler` trait.
//!
//! ```no_run
//! # async fn run(my_scheduler: &dyn deis_core::Scheduler, harness: &dyn deis_core::testing::SchedulerHarness) {
//! deis_core::testing::scheduler_suite(my_scheduler, harness).await;
//! # }
//! ```

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::model::limits::Resources;
use crate::model::{Unit, UnitState};
use crate::scheduler::{AppSpec, RestartFilter, Scheduler, SchedulerError};

/// What the suite needs besides the scheduler: specs the backend under test can run.
pub trait SchedulerHarness: Send + Sync {
    /// A spec of app `app` at release `release` with two process types:
    /// - `web`: serves HTTP/1.x on the unit's address (its `PORT`), answering every
    ///   `GET` with a body that contains the value of `DEIS_UNIT`;
    /// - `worker`: just keeps running.
    ///
    /// Counts are set by the suite. Resource requests should be small (zero is fine).
    fn sample_app(&self, app: &str, release: u64) -> AppSpec;

    /// How long the backend may take to converge after a change (default 30 s).
    fn converge_timeout(&self) -> Duration {
        Duration::from_secs(30)
    }
}

/// Runs every case against `scheduler`, which must not run other apps named `suite-*`.
/// Panics with the failing step and what was seen.
pub async fn scheduler_suite(scheduler: &dyn Scheduler, harness: &dyn SchedulerHarness) {
    let s = Suite { s: scheduler, h: harness, timeout: harness.converge_timeout() };
    s.unknown_app().await;
    s.lifecycle().await;
    s.events().await;
}

struct Suite<'a> {
    s: &'a dyn Scheduler,
    h: &'a dyn SchedulerHarness,
    timeout: Duration,
}

/// Largest HTTP response the suite reads.
const MAX_RESPONSE: usize = 64 * 1024;

fn spec(h: &dyn SchedulerHarness, app: &str, release: u64, web: u32, worker: u32) -> AppSpec {
    let mut spec = h.sample_app(app, release);
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

impl Suite<'_> {
    /// Polls `units(app)` until `ok` holds; panics after the converge timeout.
    async fn wait(&self, step: &str, app: &str, ok: impl Fn(&[Unit]) -> bool) -> Vec<Unit> {
        let deadline = Instant::now() + self.timeout;
        loop {
            let units = self.s.units(app).await.unwrap_or_else(|e| panic!("{step}: units({app}) failed: {e}"));
            if ok(&units) {
                return units;
            }
            if Instant::now() >= deadline {
                panic!("{step}: not converged within {:?}; units of {app}: {:#?}", self.timeout, summary(&units));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
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

    async fn unknown_app(&self) {
        let step = "unknown app";
        let units = self.s.units("suite-nothing").await.unwrap();
        assert!(units.is_empty(), "{step}: units of an unknown app: {units:?}");
        match self.s.restart("suite-nothing", RestartFilter::default()).await {
            Err(SchedulerError::NotFound(_)) => {}
            other => panic!("{step}: restart of an unknown app must be NotFound, got {other:?}"),
        }
        self.s.remove("suite-nothing").await.unwrap_or_else(|e| panic!("{step}: remove must succeed: {e}"));
    }

    async fn lifecycle(&self) {
        let (app, h) = ("suite-a", self.h);

        // Apply creates the counts, named <app>.<type>.<n>, up, with addresses.
        let step = "apply web=2 worker=1";
        self.s.apply(spec(h, app, 1, 2, 1)).await.unwrap_or_else(|e| panic!("{step}: {e}"));
        let units = self.wait_up(step, app, 1, 2, 1).await;
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
        self.s.apply(spec(h, app, 1, 2, 1)).await.unwrap_or_else(|e| panic!("{step}: {e}"));
        tokio::time::sleep(Duration::from_millis(500)).await;
        let again = self.wait_up(step, app, 1, 2, 1).await;
        assert_eq!(instances(&again), instances(&units), "{step}: units were replaced: {:?}", summary(&again));

        // Scale up keeps the existing units and adds.
        let step = "scale web=3";
        self.s.apply(spec(h, app, 1, 3, 1)).await.unwrap_or_else(|e| panic!("{step}: {e}"));
        let scaled = self.wait_up(step, app, 1, 3, 1).await;
        assert!(instances(&scaled).is_superset(&instances(&units)), "{step}: existing units replaced");
        self.answers(step, &scaled).await;

        // Scale down removes the highest numbers.
        let step = "scale web=1 worker=0";
        self.s.apply(spec(h, app, 1, 1, 0)).await.unwrap_or_else(|e| panic!("{step}: {e}"));
        let down = self.wait_up(step, app, 1, 1, 0).await;
        assert_eq!(down[0].name, "suite-a.web.1", "{step}: the lowest number must stay");
        assert_eq!(down[0].instance, units[0].instance, "{step}: web.1 must be the same unit as before");

        // A new release replaces every unit.
        let step = "new release v2 web=2";
        self.s.apply(spec(h, app, 2, 2, 0)).await.unwrap_or_else(|e| panic!("{step}: {e}"));
        let v2 = self.wait_up(step, app, 2, 2, 0).await;
        assert!(instances(&v2).is_disjoint(&instances(&down)), "{step}: a v1 unit was kept: {:?}", summary(&v2));
        self.answers(step, &v2).await;

        // Restart replaces the matching units and returns them.
        let step = "restart web";
        let filter = RestartFilter { proc_type: Some("web".into()), unit: None };
        let restarted = self.s.restart(app, filter).await.unwrap_or_else(|e| panic!("{step}: {e}"));
        let names: Vec<&str> = restarted.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["suite-a.web.1", "suite-a.web.2"], "{step}: returned {:?}", summary(&restarted));
        assert!(instances(&restarted).is_disjoint(&instances(&v2)), "{step}: not new: {:?}", summary(&restarted));
        let after = self.wait_up(step, app, 2, 2, 0).await;
        assert!(instances(&after).is_disjoint(&instances(&v2)), "{step}: old units back: {:?}", summary(&after));
        let step = "restart one unit";
        let filter = RestartFilter { proc_type: None, unit: Some("suite-a.web.2".into()) };
        let one = self.s.restart(app, filter).await.unwrap_or_else(|e| panic!("{step}: {e}"));
        assert_eq!(one.len(), 1, "{step}: returned {:?}", summary(&one));
        assert_eq!(one[0].name, "suite-a.web.2", "{step}");
        assert_ne!(one[0].instance, after[1].instance, "{step}: not a new instance");
        let filter = RestartFilter { proc_type: None, unit: Some("suite-a.web.9".into()) };
        match self.s.restart(app, filter).await {
            Err(SchedulerError::NotFound(_)) => {}
            other => panic!("{step}: restart of an unknown unit must be NotFound, got {other:?}"),
        }
        let before = self.wait_up(step, app, 2, 2, 0).await;

        // A spec beyond capacity is refused and changes nothing.
        let step = "capacity refusal";
        let nodes = self.s.nodes().await.unwrap_or_else(|e| panic!("{step}: nodes: {e}"));
        assert!(!nodes.is_empty(), "{step}: no nodes");
        let allocated = nodes.iter().map(|n| n.allocated).fold(Resources::default(), |a, r| Resources {
            cpu_millis: a.cpu_millis + r.cpu_millis,
            memory_bytes: a.memory_bytes + r.memory_bytes,
        });
        let total_cpu: u64 = nodes.iter().map(|n| n.capacity.cpu_millis).sum();
        let mut big = spec(h, app, 3, 2, 0);
        big.processes.get_mut("web").unwrap().resources.cpu_millis = total_cpu + 1000;
        match self.s.apply(big).await {
            Err(SchedulerError::Capacity(msg)) => assert!(!msg.is_empty(), "{step}: empty message"),
            other => panic!("{step}: expected a capacity error, got {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let kept = self.wait_up(step, app, 2, 2, 0).await;
        assert_eq!(instances(&kept), instances(&before), "{step}: units changed: {:?}", summary(&kept));
        let nodes = self.s.nodes().await.unwrap();
        let allocated_after = nodes.iter().map(|n| n.allocated).fold(Resources::default(), |a, r| Resources {
            cpu_millis: a.cpu_millis + r.cpu_millis,
            memory_bytes: a.memory_bytes + r.memory_bytes,
        });
        assert_eq!(allocated_after, allocated, "{step}: allocation changed");

        // Remove leaves nothing.
        let step = "remove";
        self.s.remove(app).await.unwrap_or_else(|e| panic!("{step}: {e}"));
        let left = self.s.units(app).await.unwrap();
        assert!(left.is_empty(), "{step}: units left: {:?}", summary(&left));
        for u in &kept {
            let addr = u.address.unwrap();
            assert!(http_get(addr).await.is_none(), "{step}: {} still answers on {addr}", u.name);
        }
        self.s.remove(app).await.unwrap_or_else(|e| panic!("{step}: removing twice must succeed: {e}"));
    }

    /// Every web unit answers HTTP on its address with its own name.
    async fn answers(&self, step: &str, units: &[Unit]) {
        for u in units.iter().filter(|u| u.proc_type == "web") {
            let addr = u.address.unwrap_or_else(|| panic!("{step}: {} has no address", u.name));
            let body = http_get(addr).await.unwrap_or_else(|| panic!("{step}: {} does not answer on {addr}", u.name));
            assert!(body.contains(&u.name), "{step}: {} on {addr} answered {body:?}", u.name);
        }
    }

    async fn events(&self) {
        let (app, step) = ("suite-b", "subscribe sees up events");
        let mut rx = self.s.subscribe();
        self.s.apply(spec(self.h, app, 1, 1, 1)).await.unwrap_or_else(|e| panic!("{step}: {e}"));
        let mut want: BTreeSet<String> = ["suite-b.web.1", "suite-b.worker.1"].map(String::from).into();
        let deadline = Instant::now() + self.timeout;
        while !want.is_empty() {
            let ev = match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Ok(ev)) => ev,
                Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => continue,
                Ok(Err(e)) => panic!("{step}: event stream ended: {e}"),
                Err(_) => panic!("{step}: no up event for {want:?} within {:?}", self.timeout),
            };
            if ev.unit.app == app && ev.unit.state == UnitState::Up {
                want.remove(&ev.unit.name);
            }
        }
        self.s.remove(app).await.unwrap_or_else(|e| panic!("{step}: remove: {e}"));
        assert!(self.s.units(app).await.unwrap().is_empty(), "{step}: units left after remove");
    }
}

/// `GET /` on `addr`; the body, or None when nothing answers with a 200.
pub async fn http_get(addr: SocketAddr) -> Option<String> {
    let attempt = async {
        let mut conn = TcpStream::connect(addr).await.ok()?;
        conn.write_all(format!("GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        (&mut conn).take(MAX_RESPONSE as u64).read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let (head, body) = text.split_once("\r\n\r\n")?;
        head.split_whitespace().nth(1).filter(|c| *c == "200")?;
        Some(body.to_owned())
    };
    tokio::time::timeout(Duration::from_secs(5), attempt).await.ok().flatten()
}
