//! Unit usage of containers from the Docker engine's stats API (feature `docker`): the
//! [`UnitStatsSource`] of platforms whose units run on the Docker scheduler.
//!
//! Each reading lists the engines' running unit containers and asks the engine for a
//! one-shot stats sample of those the collector wants: cpu is the container's total
//! cpu time, memory its usage less the page cache the kernel can drop
//! (`inactive_file`), as `docker stats` shows it. A container is a unit's when it is
//! labelled [`deis.unit`](crate::scheduler::docker::LABEL_UNIT) (the Docker
//! scheduler's), or when it is a swarm task of a Deis service (the swarm scheduler's:
//! `deis.app` and `deis.type` labels, the slot from swarm's task name).

use std::collections::HashMap;
use std::time::Duration;

use bollard::Docker;
use bollard::models::ContainerStatsResponse;
use bollard::query_parameters::{ListContainersOptions, StatsOptions};
use deis_core::Unit;
use futures_util::StreamExt;

use super::units::{RawUsage, UnitStatsSource};
use crate::scheduler::docker::LABEL_UNIT;
use crate::tty::docker::{LABEL_APP, LABEL_TYPE};

/// Swarm's label on a task's container: `<service>.<slot>.<task id>`.
const LABEL_SWARM_TASK_NAME: &str = "com.docker.swarm.task.name";

/// How long one engine may take to list or sample; a slow one is skipped this round.
const ENGINE_TIMEOUT: Duration = Duration::from_secs(5);

/// Reads unit containers' usage from Docker engines.
#[derive(Debug, Clone)]
pub struct DockerUnitStats {
    engines: Vec<Docker>,
}

impl DockerUnitStats {
    /// Over `engines` (already connected).
    pub fn new(engines: Vec<Docker>) -> Self {
        Self { engines }
    }

    /// Over the engines at `endpoints` (`unix:///PATH` or `tcp://HOST:PORT`, as
    /// `--docker-host` takes them). Connecting does no I/O: an engine that is down
    /// only misses its readings.
    pub fn connect(endpoints: &[String]) -> Result<Self, String> {
        let engines = endpoints
            .iter()
            .map(|e| Docker::connect_with_host(e).map_err(|err| format!("docker host {e}: {err}")))
            .collect::<Result<_, _>>()?;
        Ok(Self { engines })
    }

    /// Running unit containers of `docker`, by unit name.
    async fn unit_containers(docker: &Docker) -> Result<HashMap<String, String>, bollard::errors::Error> {
        // Label filters are ANDed: one listing per kind of unit container.
        let mut out = HashMap::new();
        for labels in [vec![LABEL_UNIT.to_string()], vec![LABEL_APP.to_string(), LABEL_SWARM_TASK_NAME.to_string()]] {
            let opts = ListContainersOptions {
                filters: Some(HashMap::from([("label".to_string(), labels)])),
                ..Default::default()
            };
            for c in docker.list_containers(Some(opts)).await? {
                if let (Some(unit), Some(id)) = (c.labels.as_ref().and_then(unit_of), c.id) {
                    out.entry(unit).or_insert(id);
                }
            }
        }
        Ok(out)
    }

    async fn sample(docker: &Docker, id: &str) -> Option<RawUsage> {
        let opts = StatsOptions { stream: false, one_shot: true };
        let stats = docker.stats(id, Some(opts)).next().await?.ok()?;
        usage_of(&stats)
    }
}

/// The unit a container's labels name: `deis.unit`, or for a swarm task
/// `<deis.app>.<deis.type>.<slot>`, the slot read from its task name
/// (`<service>.<slot>.<task id>`).
pub fn unit_of(labels: &HashMap<String, String>) -> Option<String> {
    if let Some(unit) = labels.get(LABEL_UNIT) {
        return Some(unit.clone());
    }
    let (app, ty) = (labels.get(LABEL_APP)?, labels.get(LABEL_TYPE)?);
    let mut task = labels.get(LABEL_SWARM_TASK_NAME)?.rsplitn(3, '.');
    let (Some(_id), Some(slot), Some(_service)) = (task.next(), task.next(), task.next()) else { return None };
    let slot: u32 = slot.parse().ok()?;
    deis_core::AppName::new(app.as_str()).ok()?;
    deis_core::ProcessType::new(ty.as_str()).ok()?;
    Some(Unit::name_for(app, ty, slot))
}

/// A unit's usage from one stats sample; `None` when the engine gave no cpu figure
/// (a container that just stopped).
pub fn usage_of(stats: &ContainerStatsResponse) -> Option<RawUsage> {
    let cpu_ns = stats.cpu_stats.as_ref()?.cpu_usage.as_ref()?.total_usage?;
    let memory = stats.memory_stats.as_ref().map_or(0, |m| {
        let usage = m.usage.unwrap_or(0);
        // cgroup v2 names it inactive_file, v1 total_inactive_file.
        let cache = m.stats.as_ref().and_then(|s| s.get("inactive_file").or_else(|| s.get("total_inactive_file")));
        usage.saturating_sub(cache.copied().unwrap_or(0))
    });
    Some(RawUsage { cpu_seconds: cpu_ns as f64 / 1e9, memory_bytes: memory })
}

#[async_trait::async_trait]
impl UnitStatsSource for DockerUnitStats {
    async fn usage(&self, units: &[Unit]) -> HashMap<String, RawUsage> {
        let mut out = HashMap::new();
        for docker in &self.engines {
            let containers = match tokio::time::timeout(ENGINE_TIMEOUT, Self::unit_containers(docker)).await {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "telemetry: listing unit containers failed");
                    continue;
                }
                Err(_) => continue,
            };
            for unit in units {
                // Two nodes may be one engine: the first reading of a unit wins.
                let Some(id) = containers.get(&unit.name).filter(|_| !out.contains_key(&unit.name)) else { continue };
                if let Ok(Some(usage)) = tokio::time::timeout(ENGINE_TIMEOUT, Self::sample(docker, id)).await {
                    out.insert(unit.name.clone(), usage);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{ContainerCpuStats, ContainerCpuUsage, ContainerMemoryStats};

    #[test]
    fn containers_are_matched_to_units_by_their_labels() {
        let labels = |kv: &[(&str, &str)]| kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        assert_eq!(unit_of(&labels(&[(LABEL_UNIT, "shop.web.2")])).as_deref(), Some("shop.web.2"));
        let task = [(LABEL_APP, "shop"), (LABEL_TYPE, "web"), (LABEL_SWARM_TASK_NAME, "deis-shop-web.3.x1y2z3")];
        assert_eq!(unit_of(&labels(&task)).as_deref(), Some("shop.web.3"));
        assert_eq!(unit_of(&labels(&task[..2])), None, "not a swarm task");
        assert_eq!(
            unit_of(&labels(&[(LABEL_APP, "shop"), (LABEL_TYPE, "web"), (LABEL_SWARM_TASK_NAME, "svc.x.id")])),
            None
        );
        assert_eq!(
            unit_of(&labels(&[(LABEL_APP, "Shop!"), (LABEL_TYPE, "web"), (LABEL_SWARM_TASK_NAME, "s.1.id")])),
            None
        );
        // A global service's tasks are named by node, not slot: not a Deis unit.
        assert_eq!(
            unit_of(&labels(&[(LABEL_APP, "shop"), (LABEL_TYPE, "web"), (LABEL_SWARM_TASK_NAME, "s.nodeid.id")])),
            None
        );
        assert_eq!(unit_of(&labels(&[])), None);
    }

    proptest::proptest! {
        #[test]
        fn any_labels_give_a_well_formed_unit_or_none(app in "\\PC{0,40}", ty in "\\PC{0,20}", task in "\\PC{0,80}") {
            let labels = HashMap::from([
                (LABEL_APP.to_string(), app.clone()),
                (LABEL_TYPE.to_string(), ty.clone()),
                (LABEL_SWARM_TASK_NAME.to_string(), task),
            ]);
            if let Some(unit) = unit_of(&labels) {
                let slot = unit.strip_prefix(&format!("{app}.{ty}.")).and_then(|n| n.parse::<u32>().ok());
                proptest::prop_assert!(slot.is_some(), "{unit}");
            }
        }
    }

    #[test]
    fn memory_leaves_out_the_page_cache() {
        let mut stats = ContainerStatsResponse {
            cpu_stats: Some(ContainerCpuStats {
                cpu_usage: Some(ContainerCpuUsage { total_usage: Some(2_500_000_000), ..Default::default() }),
                ..Default::default()
            }),
            memory_stats: Some(ContainerMemoryStats {
                usage: Some(10 << 20),
                stats: Some(HashMap::from([("inactive_file".to_string(), 4 << 20)])),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(usage_of(&stats), Some(RawUsage { cpu_seconds: 2.5, memory_bytes: 6 << 20 }));
        stats.cpu_stats = None;
        assert_eq!(usage_of(&stats), None, "no cpu figure: no reading");
    }
}
