//! Unit usage of containers from the Docker engine's stats API (feature `docker`): the
//! [`UnitStatsSource`] of platforms whose units run on the Docker scheduler.
//!
//! Each reading lists the engines' running containers labelled
//! [`deis.unit`](crate::scheduler::docker::LABEL_UNIT) and asks the engine for a
//! one-shot stats sample of those the collector wants: cpu is the container's total
//! cpu time, memory its usage less the page cache the kernel can drop
//! (`inactive_file`), as `docker stats` shows it.

use std::collections::HashMap;
use std::time::Duration;

use bollard::Docker;
use bollard::models::ContainerStatsResponse;
use bollard::query_parameters::{ListContainersOptions, StatsOptions};
use deis_core::Unit;
use futures_util::StreamExt;

use super::units::{RawUsage, UnitStatsSource};
use crate::scheduler::docker::LABEL_UNIT;

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
        let opts = ListContainersOptions {
            filters: Some(HashMap::from([("label".to_string(), vec![LABEL_UNIT.to_string()])])),
            ..Default::default()
        };
        let list = docker.list_containers(Some(opts)).await?;
        Ok(list
            .into_iter()
            .filter_map(|c| {
                let unit = c.labels?.remove(LABEL_UNIT)?;
                Some((unit, c.id?))
            })
            .collect())
    }

    async fn sample(docker: &Docker, id: &str) -> Option<RawUsage> {
        let opts = StatsOptions { stream: false, one_shot: true };
        let stats = docker.stats(id, Some(opts)).next().await?.ok()?;
        usage_of(&stats)
    }
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
