//! Autoscaling: a control loop on the units' collected cpu. For each process type with
//! bounds (`deis autoscale:set web --min=2 --max=6 --cpu-percent=70`, kept in the app's
//! settings), the wanted count is `ceil(units x average cpu / target)` within the
//! bounds, as Kubernetes' HPA computes it, with stabilisation windows so it does not
//! flap: it scales up only when every reading over the up-window asked for more (and
//! then to the smallest of them), down only when every reading over the down-window
//! asked for fewer (and then to the largest). Each change is a normal scale, logged as
//! `Scaled to web=3 by autoscaler`. Cpu is in percent of what a unit requests
//! (`deis limits:set --cpu web=500m`: 100% is half a core; the request of a
//! `REQUEST/LIMIT` pair), as the HPA counts it, or of one core when the type has no cpu
//! set.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use deis_core::controller::Controller;
use deis_core::time::Timestamp;
use deis_core::{App, Autoscale, ProcessType, User};

use super::units::UnitCollector;

/// Settings of the autoscaler.
#[derive(Debug, Clone, Copy)]
pub struct AutoscaleConfig {
    /// How often it looks (default 10 s; unit cpu is read as often by the telemetry loop).
    pub interval: Duration,
    /// Readings must have asked for more for this long before scaling up (default 30 s).
    pub up_window: Duration,
    /// Readings must have asked for fewer for this long before scaling down (default 3 min).
    pub down_window: Duration,
}

impl Default for AutoscaleConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(10),
            up_window: Duration::from_secs(30),
            down_window: Duration::from_secs(180),
        }
    }
}

/// The count the cpu readings ask for.
pub fn wanted(current: u32, average_cpu_percent: f64, bounds: &Autoscale) -> u32 {
    let target = f64::from(bounds.cpu_percent.max(1));
    let raw = (f64::from(current.max(1)) * average_cpu_percent / target).ceil();
    // Within 10% of the target nothing changes (HPA's tolerance).
    let raw = if (average_cpu_percent / target - 1.0).abs() <= 0.1 { f64::from(current) } else { raw };
    (raw.max(0.0) as u32).clamp(bounds.min, bounds.max.max(bounds.min))
}

/// The decision of one process type given its recent wanted counts.
#[derive(Debug, Default)]
pub struct Stabiliser {
    readings: VecDeque<(Instant, u32)>,
}

impl Stabiliser {
    /// Adds a reading at `now` and answers the count to scale to, if any.
    pub fn decide(&mut self, now: Instant, current: u32, wanted: u32, config: &AutoscaleConfig) -> Option<u32> {
        self.readings.push_back((now, wanted));
        // Keep the newest reading from before the longest window began (it speaks for the
        // window's start) and all after it. Dropping every reading older than the window
        // instead left none old enough whenever the readings' timing jittered, and the
        // window was never covered.
        let keep = config.up_window.max(config.down_window);
        while self.readings.get(1).is_some_and(|(t, _)| now.duration_since(*t) >= keep) {
            self.readings.pop_front();
        }
        // The readings in force over the last `window`; `None` until it is covered.
        let covering = |window: Duration| {
            let start = self.readings.iter().rposition(|(t, _)| now.duration_since(*t) >= window)?;
            Some(self.readings.range(start..).map(|(_, w)| *w).collect::<Vec<u32>>())
        };
        if wanted > current
            && let Some(w) = covering(config.up_window)
            && w.iter().all(|&n| n > current)
        {
            return w.into_iter().min();
        }
        if wanted < current
            && let Some(w) = covering(config.down_window)
            && w.iter().all(|&n| n < current)
        {
            return w.into_iter().max();
        }
        None
    }
}

/// Who the autoscaler's changes are made (and logged) as.
fn autoscaler() -> User {
    User {
        username: "autoscaler".into(),
        email: String::new(),
        is_superuser: true,
        password_hash: String::new(),
        date_joined: Timestamp::now(),
        last_login: None,
        is_active: true,
    }
}

/// Runs the loop until `stop`.
pub async fn run(
    controller: Arc<Controller>,
    units: Arc<UnitCollector>,
    config: AutoscaleConfig,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    let mut state: HashMap<(String, ProcessType), Stabiliser> = HashMap::new();
    let mut tick = tokio::time::interval(config.interval);
    // After a slow round (a scale waits for the scheduler), no burst of rounds on the
    // same readings.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = &mut stop => return,
            _ = tick.tick() => {}
        }
        let store = controller.store().clone();
        let Ok(listing) = store.list("apps/").await else { continue };
        let apps: Vec<App> = listing.kvs.iter().filter_map(|kv| serde_json::from_slice(&kv.value).ok()).collect();
        let usage = units.all();
        let now = Instant::now();
        state.retain(|(app, ty), _| apps.iter().any(|a| a.id.as_str() == app && a.settings.autoscale.contains_key(ty)));
        for app in &apps {
            for (ty, bounds) in &app.settings.autoscale {
                let current = app.structure.get(ty).copied().unwrap_or(0);
                let cpus: Vec<f64> = usage
                    .values()
                    .filter(|u| u.app == app.id.as_str() && u.proc_type == ty.as_str())
                    .filter_map(|u| u.cpu_percent)
                    .collect();
                // Outside the bounds (set by hand, or new bounds): come back within at once.
                let target = if current < bounds.min || current > bounds.max {
                    Some(current.clamp(bounds.min, bounds.max))
                } else if cpus.is_empty() {
                    None
                } else {
                    let basis = match controller.config(&autoscaler(), &app.id).await {
                        Ok(config) => cpu_basis_millis(&config, ty),
                        Err(_) => 1000,
                    };
                    let average = cpus.iter().sum::<f64>() / cpus.len() as f64 * 1000.0 / basis as f64;
                    let w = wanted(current, average, bounds);
                    state.entry((app.id.to_string(), ty.clone())).or_default().decide(now, current, w, &config)
                };
                let Some(target) = target.filter(|t| *t != current) else { continue };
                let counts = BTreeMap::from([(ty.clone(), target)]);
                match controller.scale(&autoscaler(), &app.id, &counts).await {
                    Ok(()) => {
                        tracing::info!(app = %app.id, proc_type = %ty, from = current, to = target, "autoscaled");
                        state.remove(&(app.id.to_string(), ty.clone()));
                    }
                    Err(e) => tracing::warn!(app = %app.id, proc_type = %ty, error = %e, "autoscaling failed"),
                }
            }
        }
    }
}

/// What 100% cpu of a `proc_type` unit is, in millicores: its cpu request, else its
/// limit, else one core.
fn cpu_basis_millis(config: &deis_core::Config, proc_type: &str) -> u64 {
    let (request, limit) = (config.resources(proc_type).cpu_millis, config.limits(proc_type).cpu_millis);
    [request, limit].into_iter().find(|m| *m > 0).unwrap_or(1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wanted_counts_follow_cpu_within_bounds() {
        let b = Autoscale { min: 2, max: 6, cpu_percent: 70 };
        assert_eq!(wanted(2, 140.0, &b), 4);
        assert_eq!(wanted(2, 700.0, &b), 6, "capped at max");
        assert_eq!(wanted(4, 5.0, &b), 2, "floored at min");
        assert_eq!(wanted(3, 75.0, &b), 3, "within the tolerance");
    }

    #[test]
    fn cpu_is_counted_against_the_request_else_the_limit_else_one_core() {
        let mut config = deis_core::Config::initial(&deis_core::testing::app_name("burner"), "alice");
        config.cpu.insert("web".into(), "250m/2".into());
        config.cpu.insert("worker".into(), "500m".into());
        assert_eq!(cpu_basis_millis(&config, "web"), 250);
        assert_eq!(cpu_basis_millis(&config, "worker"), 500);
        assert_eq!(cpu_basis_millis(&config, "clock"), 1000);
    }

    #[test]
    fn stabilisation_windows_prevent_flapping() {
        let config = AutoscaleConfig {
            interval: Duration::from_secs(10),
            up_window: Duration::from_secs(30),
            down_window: Duration::from_secs(60),
        };
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut s = Stabiliser::default();
        assert_eq!(s.decide(at(0), 2, 4, &config), None, "one reading is not enough");
        assert_eq!(s.decide(at(10), 2, 5, &config), None);
        assert_eq!(s.decide(at(20), 2, 2, &config), None);
        assert_eq!(s.decide(at(30), 2, 4, &config), None, "a reading in the window did not ask for more");
        assert_eq!(s.decide(at(50), 2, 4, &config), None);
        assert_eq!(s.decide(at(60), 2, 5, &config), Some(4), "30 s of more: the smallest asked");
        let mut s = Stabiliser::default();
        for t in [0, 10, 20, 30, 40, 50] {
            assert_eq!(s.decide(at(t), 4, 2, &config), None, "{t}");
        }
        assert_eq!(s.decide(at(60), 4, 3, &config), Some(3), "60 s of fewer: the largest asked");
    }

    #[test]
    fn windows_are_covered_when_readings_come_late() {
        // Real ticks drift: every reading a little later than the interval.
        let config = AutoscaleConfig {
            interval: Duration::from_secs(10),
            up_window: Duration::from_secs(30),
            down_window: Duration::from_secs(60),
        };
        let t0 = Instant::now();
        let at = |n: u64| t0 + Duration::from_millis(n * 10_007);
        let mut s = Stabiliser::default();
        let decisions: Vec<Option<u32>> = (0..=8).map(|n| s.decide(at(n), 3, 1, &config)).collect();
        assert_eq!(decisions.iter().position(Option::is_some), Some(6), "{decisions:?}");
        assert_eq!(decisions[6], Some(1));
        let mut s = Stabiliser::default();
        let decisions: Vec<Option<u32>> = (0..=4).map(|n| s.decide(at(n), 1, 3, &config)).collect();
        assert_eq!(decisions, [None, None, None, Some(3), Some(3)]);
        // A reading that asked for fewer just before the window began still counts.
        let mut s = Stabiliser::default();
        assert_eq!(s.decide(at(0), 3, 3, &config), None);
        for n in 1..6 {
            assert_eq!(s.decide(at(n), 3, 1, &config), None, "{n}");
        }
        assert_eq!(s.decide(at(6), 3, 1, &config), None, "the reading in force at the window's start asked for 3");
        assert_eq!(s.decide(at(7), 3, 1, &config), Some(1));
    }
}
