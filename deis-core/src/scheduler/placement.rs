//! Resource admission and placement: does a set of units fit on the nodes, and where.
//!
//! The placement engine follows the shape of Nomad's scheduler: a plan is computed from
//! an immutable [`Snapshot`] of the cluster (nodes with [`Capacity`], labels and
//! [`Plane`]s; the slots they hold) and committed separately, optimistically: the
//! commit checks that every node the plan touches is still as the snapshot saw it
//! ([`Cluster::commit`] in memory, [`PlacementStore`] with one compare-and-swap
//! transaction in the [`Store`](crate::Store)), so two schedulers planning at once
//! never fill the same room twice; the loser plans again.
//!
//! Placing one unit is a pipeline (see [`plan`] for the details): feasibility by node
//! class (plane, label selector from the app's tags), spread of one app's process type
//! over nodes, capacity, then a score by [`Policy`] (bin-pack or spread). A segment
//! tree per class keeps the search near `log2(nodes)` steps, so one core
//! places well over 100,000 units a second at 10,000 nodes (`BENCHMARKS.md`).
//!
//! ```
//! use deis_core::scheduler::placement::{Cluster, Health, NodeInfo, Policy, Slot, UnitRequest};
//! use deis_core::scheduler::Capacity;
//! use deis_core::model::limits::Resources;
//! use deis_core::model::{AppName, ProcessType};
//!
//! let cap = Capacity { cpu_millis: 2000, memory_bytes: 4 << 30 };
//! let mut cluster = Cluster::new(7, [
//!     (NodeInfo::new("a", cap), Health::Up),
//!     (NodeInfo::new("b", cap).label("disk", "ssd"), Health::Up),
//! ]);
//! let (app, web) = (AppName::new("hello").unwrap(), ProcessType::new("web").unwrap());
//! let want: Vec<UnitRequest> = (1..=2)
//!     .map(|n| UnitRequest::new(Slot::new(app.clone(), web.clone(), n), Resources { cpu_millis: 500, memory_bytes: 1 << 30 }))
//!     .collect();
//! let plan = cluster.snapshot().plan_app(Policy::Binpack, &app, &want).unwrap();
//! cluster.commit(&plan).unwrap();
//! // The two web units of one app go to two nodes.
//! assert_ne!(cluster.state().node_of(&want[0].slot), cluster.state().node_of(&want[1].slot));
//! ```

mod cluster;
mod index;
mod node;
pub mod plan;
#[cfg(test)]
mod properties;
mod request;
mod store;

pub use cluster::{Cluster, ClusterState, Snapshot};
pub use node::{Health, NodeInfo, Plane, Planes, UnknownPlane};
pub use plan::{Placement, PlacementError, Plan};
pub use request::{Policy, Slot, UnitRequest, UnknownPolicy};
pub use store::{PlacementStore, PlacementStoreError};

use serde::{Deserialize, Serialize};

use crate::model::limits::{Resources, format_memory};

/// What a node offers to units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capacity {
    /// CPU in millicores.
    pub cpu_millis: u64,
    /// Memory in bytes.
    pub memory_bytes: u64,
}

impl Capacity {
    /// Whether `request` fits next to `allocated`.
    pub fn fits(&self, allocated: Resources, request: Resources) -> bool {
        allocated.cpu_millis.saturating_add(request.cpu_millis) <= self.cpu_millis
            && allocated.memory_bytes.saturating_add(request.memory_bytes) <= self.memory_bytes
    }

    /// A clear message for a request that does not fit.
    pub fn explain(&self, allocated: Resources, request: Resources) -> String {
        let mut parts = vec![];
        if allocated.cpu_millis.saturating_add(request.cpu_millis) > self.cpu_millis {
            parts.push(format!(
                "cpu: {}m requested, {}m of {}m free",
                request.cpu_millis,
                self.cpu_millis.saturating_sub(allocated.cpu_millis),
                self.cpu_millis
            ));
        }
        if allocated.memory_bytes.saturating_add(request.memory_bytes) > self.memory_bytes {
            parts.push(format!(
                "memory: {} requested, {} of {} free",
                format_memory(request.memory_bytes),
                format_memory(self.memory_bytes.saturating_sub(allocated.memory_bytes)),
                format_memory(self.memory_bytes)
            ));
        }
        parts.join("; ")
    }

    /// This machine: its cores and physical memory.
    pub fn of_this_machine() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
        let mem = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("MemTotal:"))
                    .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<u64>().ok()))
            })
            .map_or(1 << 30, |kb| kb * 1024);
        Self { cpu_millis: cores * 1000, memory_bytes: mem }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn explains_what_is_short() {
        let cap = Capacity { cpu_millis: 2000, memory_bytes: 1 << 30 };
        let used = Resources { cpu_millis: 1500, memory_bytes: 0 };
        let req = Resources { cpu_millis: 1000, memory_bytes: 512 << 20 };
        assert!(!cap.fits(used, req));
        let msg = cap.explain(used, req);
        assert!(msg.contains("cpu: 1000m requested, 500m of 2000m free"), "{msg}");
        assert!(!msg.contains("memory"));
    }

    proptest! {
        #[test]
        fn fits_is_monotone(cpu in 0u64..10_000, mem in 0u64..(1<<34), a in 0u64..10_000, b in 0u64..10_000) {
            let cap = Capacity { cpu_millis: cpu, memory_bytes: mem };
            let small = Resources { cpu_millis: a.min(b), memory_bytes: 0 };
            let big = Resources { cpu_millis: a.max(b), memory_bytes: 0 };
            if cap.fits(Resources::default(), big) {
                prop_assert!(cap.fits(Resources::default(), small));
            }
        }
    }
}
