//! One read of the swarm (nodes, deis services, their tasks) and what follows from it:
//! units, node allocations, admission of a spec.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};

use bollard::models::{Node, NodeSpecAvailabilityEnum, NodeState, Service, Task, TaskState};
use deis_core::model::limits::Resources;
use deis_core::model::{AppName, ProcessType, Unit, UnitState};
use deis_core::scheduler::placement::{Cluster, Health, NodeInfo, PlacementError, Policy, Slot, UnitRequest};
use deis_core::scheduler::{AppSpec, Capacity, NodeStatus, SchedulerError};
use deis_core::time::Timestamp;

use super::service::{LABEL_GENERATION, LABEL_PORT_BLOCK, LABEL_RELEASE, PortBlocks, node_planes};
use crate::tty::docker::{LABEL_APP, LABEL_TYPE};

/// A swarm node as units see it.
#[derive(Debug, Clone)]
pub struct SwarmNode {
    /// Swarm node id.
    pub id: String,
    /// Its host name (a unit's `node`).
    pub name: String,
    /// The address units on it are reached at.
    pub ip: IpAddr,
    /// Capacity, labels, planes.
    pub info: NodeInfo,
    /// Ready and active.
    pub health: Health,
}

/// Restart bookkeeping kept across reads: failed tasks seen per unit, and units
/// restarted on purpose.
#[derive(Debug, Default)]
pub struct History {
    /// Failed task ids per (service, generation, slot), with the restart epoch of
    /// the slot when each was first seen.
    failed: HashMap<(String, u64, u32), HashMap<String, u64>>,
    /// Tasks stopped by `restart` (their end is no crash).
    pub restarted_tasks: HashSet<String>,
    /// Restarts on purpose per (service, slot): part of the unit's instance.
    pub epochs: HashMap<(String, u32), u64>,
}

/// Most failed task ids remembered per unit.
const MAX_FAILED_REMEMBERED: usize = 10_000;

/// Everything read at once.
#[derive(Debug)]
pub struct View {
    /// Sequence number of the read (later reads have higher ones).
    pub seq: u64,
    /// The nodes.
    pub nodes: Vec<SwarmNode>,
    /// Deis services.
    pub services: Vec<Service>,
    /// Tasks of every service (deis or not: their reservations count).
    pub tasks: Vec<Task>,
}

fn label<'a>(labels: Option<&'a HashMap<String, String>>, key: &str) -> Option<&'a str> {
    labels.and_then(|l| l.get(key)).map(String::as_str)
}

fn task_labels(t: &Task) -> Option<&HashMap<String, String>> {
    t.spec.as_ref()?.container_spec.as_ref()?.labels.as_ref()
}

fn state(t: &Task) -> TaskState {
    t.status.as_ref().and_then(|s| s.state).unwrap_or(TaskState::NEW)
}

fn desired(t: &Task) -> TaskState {
    t.desired_state.unwrap_or(TaskState::RUNNING)
}

fn terminal(s: TaskState) -> bool {
    matches!(
        s,
        TaskState::COMPLETE
            | TaskState::SHUTDOWN
            | TaskState::FAILED
            | TaskState::REJECTED
            | TaskState::REMOVE
            | TaskState::ORPHANED
    )
}

/// Whether a task holds (or is about to hold) its reservation on its node.
fn holds(t: &Task) -> bool {
    !terminal(state(t)) && t.node_id.is_some()
}

fn reserved(t: &Task) -> Resources {
    let r = t.spec.as_ref().and_then(|s| s.resources.as_ref()).and_then(|r| r.reservations.as_ref());
    let cpu = r.and_then(|r| r.nano_cpus).unwrap_or(0).max(0) as u64 / 1_000_000;
    let memory = r.and_then(|r| r.memory_bytes).unwrap_or(0).max(0) as u64;
    Resources { cpu_millis: cpu, memory_bytes: memory }
}

fn timestamp(t: &Task) -> Option<Timestamp> {
    let at = t.status.as_ref()?.timestamp.as_ref()?;
    at.to_string().parse().ok()
}

impl View {
    /// The nodes from the engine's answers; `fallback` is the address of nodes that
    /// report none (a single node advertising 0.0.0.0).
    pub fn nodes_of(nodes: Vec<Node>, fallback: IpAddr) -> Vec<SwarmNode> {
        let mut out: Vec<SwarmNode> = Vec::new();
        for n in nodes {
            let Some(id) = n.id.clone() else { continue };
            let spec = n.spec.unwrap_or_default();
            let desc = n.description.unwrap_or_default();
            let status = n.status.unwrap_or_default();
            let mut name = desc.hostname.clone().unwrap_or_else(|| id.clone());
            if out.iter().any(|o| o.name == name) {
                name = format!("{name}-{}", &id[..id.len().min(12)]);
            }
            let res = desc.resources.unwrap_or_default();
            let capacity = Capacity {
                cpu_millis: res.nano_cpus.unwrap_or(0).max(0) as u64 / 1_000_000,
                memory_bytes: res.memory_bytes.unwrap_or(0).max(0) as u64,
            };
            let labels = spec.labels.unwrap_or_default();
            let mut info = NodeInfo::new(name.clone(), capacity).planes(node_planes(&labels));
            info.labels = labels.into_iter().collect();
            let ready = status.state == Some(NodeState::READY)
                && matches!(spec.availability, Some(NodeSpecAvailabilityEnum::ACTIVE) | None);
            let health = if ready { Health::Up } else { Health::Down { since: Timestamp::now() } };
            let ip = status.addr.and_then(|a| a.parse::<IpAddr>().ok()).filter(|ip| !ip.is_unspecified());
            out.push(SwarmNode { id, name, ip: ip.unwrap_or(fallback), info, health });
        }
        out
    }

    fn node(&self, id: Option<&str>) -> Option<&SwarmNode> {
        id.and_then(|id| self.nodes.iter().find(|n| n.id == id))
    }

    /// The deis services of `app`.
    pub fn services_of<'a>(&'a self, app: &'a str) -> impl Iterator<Item = &'a Service> + 'a {
        self.services
            .iter()
            .filter(move |s| label(s.spec.as_ref().and_then(|s| s.labels.as_ref()), LABEL_APP) == Some(app))
    }

    /// The port blocks in use: deis services' templates and their live tasks'.
    pub fn used_blocks(&self) -> Vec<u16> {
        let mut used = Vec::new();
        for s in &self.services {
            if let Some(b) =
                label(s.spec.as_ref().and_then(|s| s.labels.as_ref()), LABEL_PORT_BLOCK).and_then(|b| b.parse().ok())
            {
                used.push(b);
            }
        }
        for t in self.tasks.iter().filter(|t| !terminal(state(t))) {
            if let Some(b) = label(task_labels(t), LABEL_PORT_BLOCK).and_then(|b| b.parse().ok()) {
                used.push(b);
            }
        }
        used
    }

    /// The nodes with what the live tasks on them reserve.
    pub fn node_status(&self) -> Vec<NodeStatus> {
        self.nodes
            .iter()
            .map(|n| {
                let allocated = self.tasks.iter().filter(|t| holds(t) && t.node_id.as_deref() == Some(&n.id)).fold(
                    Resources::default(),
                    |a, t| {
                        let r = reserved(t);
                        Resources {
                            cpu_millis: a.cpu_millis + r.cpu_millis,
                            memory_bytes: a.memory_bytes + r.memory_bytes,
                        }
                    },
                );
                NodeStatus {
                    name: n.name.clone(),
                    capacity: n.info.capacity,
                    allocated,
                    labels: n.info.labels.clone(),
                    planes: n.info.planes,
                    health: n.health,
                }
            })
            .collect()
    }

    /// Whether `spec` fits: the placement engine over the nodes, less what tasks other
    /// than `spec.app`'s reserve. A refusal names what is short, or the tags no node
    /// carries.
    pub fn admit(&self, spec: &AppSpec, policy: Policy) -> Result<(), SchedulerError> {
        let ours: HashSet<&str> = self.services_of(&spec.app).filter_map(|s| s.id.as_deref()).collect();
        let nodes = self.nodes.iter().map(|n| {
            let mut info = n.info.clone();
            for t in self.tasks.iter().filter(|t| holds(t) && t.node_id.as_deref() == Some(&n.id)) {
                if !t.service_id.as_deref().is_some_and(|id| ours.contains(id)) {
                    let r = reserved(t);
                    info.capacity.cpu_millis = info.capacity.cpu_millis.saturating_sub(r.cpu_millis);
                    info.capacity.memory_bytes = info.capacity.memory_bytes.saturating_sub(r.memory_bytes);
                }
            }
            (info, n.health)
        });
        let cluster = Cluster::new(0, nodes);
        let mut want = Vec::new();
        for (proc_type, p) in &spec.processes {
            for n in 1..=p.count {
                let slot = Slot::new(spec.app.clone(), proc_type.clone(), n);
                want.push(UnitRequest::new(slot, p.resources).selector(spec.selector.clone()));
            }
        }
        match cluster.snapshot().plan_app(policy, &spec.app, &want) {
            Ok(_) => Ok(()),
            Err(e @ PlacementError::Capacity { .. }) => Err(SchedulerError::Capacity(e.to_string())),
            Err(e) => Err(SchedulerError::Invalid(e.to_string())),
        }
    }

    /// The units of `app`, sorted by name (then instance); `history` learns the failed
    /// tasks seen.
    pub fn units(&self, app: &AppName, history: &mut History) -> Vec<Unit> {
        let mut units = Vec::new();
        for s in self.services_of(app) {
            let Some(id) = s.id.as_deref() else { continue };
            let labels = s.spec.as_ref().and_then(|s| s.labels.as_ref());
            let Some(proc_type) = label(labels, LABEL_TYPE).and_then(|t| ProcessType::new(t).ok()) else { continue };
            let service_name = s.spec.as_ref().and_then(|s| s.name.clone()).unwrap_or_default();
            let tasks: Vec<&Task> = self.tasks.iter().filter(|t| t.service_id.as_deref() == Some(id)).collect();
            let mut by_slot: BTreeMap<u32, Vec<&Task>> = BTreeMap::new();
            for t in tasks {
                if let Some(slot) = t.slot.and_then(|s| u32::try_from(s).ok()) {
                    by_slot.entry(slot).or_default().push(t);
                }
            }
            let wanted = label(labels, LABEL_GENERATION).and_then(|g| g.parse::<u64>().ok()).unwrap_or(0);
            let started = by_slot.values().flatten().any(|t| generation(t) == wanted);
            let mut pending = None;
            for (slot, tasks) in by_slot {
                let live = slot_units(app, &proc_type, &service_name, slot, &tasks, self, history);
                if !started && pending.is_none() && !live.is_empty() {
                    // Swarm has not begun replacing units with the new template: show the
                    // first replacement as wanted, so the type is not taken as converged.
                    let epoch = history.epochs.get(&(service_name.clone(), slot)).copied().unwrap_or(0);
                    let release =
                        label(labels, LABEL_RELEASE).and_then(|r| r.strip_prefix('v')).and_then(|r| r.parse().ok());
                    pending = Some(Unit {
                        instance: instance(&service_name, wanted, slot, epoch),
                        release: release.unwrap_or(live[0].release),
                        state: UnitState::Initialized,
                        address: None,
                        started: None,
                        restarts: 0,
                        pid: None,
                        ..live[0].clone()
                    });
                }
                units.extend(live);
            }
            units.extend(pending);
        }
        units.sort_by(|a, b| (a.number, &a.proc_type, a.instance).cmp(&(b.number, &b.proc_type, b.instance)));
        units.sort_by(|a, b| a.name.cmp(&b.name));
        units
    }
}

/// The template generation a task runs.
pub(super) fn task_generation(t: &Task) -> u64 {
    generation(t)
}

fn generation(t: &Task) -> u64 {
    label(task_labels(t), LABEL_GENERATION).and_then(|g| g.parse().ok()).unwrap_or(0)
}

/// The unit instance of a task: the same across crash restarts of its slot, new with a
/// new task template (generation) or a restart on purpose (epoch).
pub(super) fn instance(service: &str, generation: u64, slot: u32, epoch: u64) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (service, generation, slot, epoch).hash(&mut h);
    // Instances are shown and compared, never ordered: keep them readable.
    h.finish() >> 12
}

/// The units of one slot: every task that is to run (during a start-first update, the
/// old and the new).
fn slot_units(
    app: &AppName,
    proc_type: &ProcessType,
    service: &str,
    slot: u32,
    tasks: &[&Task],
    view: &View,
    history: &mut History,
) -> Vec<Unit> {
    let epoch = history.epochs.get(&(service.to_string(), slot)).copied().unwrap_or(0);
    for t in tasks.iter().filter(|t| matches!(state(t), TaskState::FAILED | TaskState::REJECTED)) {
        let id = t.id.clone().unwrap_or_default();
        if history.restarted_tasks.contains(&id) {
            continue;
        }
        let seen = history.failed.entry((service.to_string(), generation(t), slot)).or_default();
        if seen.len() < MAX_FAILED_REMEMBERED {
            seen.entry(id).or_insert(epoch);
        }
    }
    let last_end = tasks
        .iter()
        .filter(|t| terminal(state(t)))
        .max_by_key(|t| t.status.as_ref().and_then(|s| s.timestamp.as_ref()).map(|d| d.to_string()));
    let mut out = Vec::new();
    for t in tasks {
        let (now, want) = (state(t), desired(t));
        // A task swarm is stopping (replaced, scaled down) is no unit any more: swarm
        // moves on to the next one as soon as it asked it to stop.
        if terminal(now) || !matches!(want, TaskState::RUNNING | TaskState::READY) {
            continue;
        }
        let g = generation(t);
        let unit_state = match now {
            TaskState::RUNNING => UnitState::Up,
            _ => {
                let crashed = last_end.is_some_and(|e| {
                    matches!(state(e), TaskState::FAILED | TaskState::REJECTED)
                        && generation(e) == g
                        && !history.restarted_tasks.contains(e.id.as_deref().unwrap_or_default())
                });
                if crashed {
                    UnitState::Crashed
                } else if matches!(now, TaskState::STARTING) {
                    UnitState::Created
                } else {
                    UnitState::Initialized
                }
            }
        };
        let node = view.node(t.node_id.as_deref());
        let port = label(task_labels(t), LABEL_PORT_BLOCK)
            .and_then(|b| b.parse().ok())
            .and_then(|b| PortBlocks::port(b, slot));
        let release = label(task_labels(t), LABEL_RELEASE)
            .and_then(|r| r.strip_prefix('v'))
            .and_then(|r| r.parse().ok())
            .unwrap_or(0);
        let restarts = history
            .failed
            .get(&(service.to_string(), g, slot))
            .map_or(0, |s| s.values().filter(|e| **e == epoch).count() as u32);
        let pid = t.status.as_ref().and_then(|s| s.container_status.as_ref()).and_then(|c| c.pid);
        out.push(Unit {
            name: Unit::name_for(app, proc_type, slot),
            instance: instance(service, g, slot, epoch),
            app: app.clone(),
            proc_type: proc_type.clone(),
            number: slot,
            release,
            state: unit_state,
            address: node.zip(port).map(|(n, p)| SocketAddr::new(n.ip, p)),
            node: node.map(|n| n.name.clone()).unwrap_or_default(),
            started: (now == TaskState::RUNNING).then(|| timestamp(t)).flatten(),
            restarts,
            pid: pid.filter(|p| *p > 0).and_then(|p| u32::try_from(p).ok()),
        });
    }
    out
}

/// Why the slot's latest task ended, for a crash event.
pub fn crash_reason(view: &View, unit: &Unit) -> Option<String> {
    let service = view.services_of(&unit.app).find(|s| {
        label(s.spec.as_ref().and_then(|s| s.labels.as_ref()), LABEL_TYPE) == Some(unit.proc_type.as_str())
    })?;
    let id = service.id.as_deref()?;
    view.tasks
        .iter()
        .filter(|t| t.service_id.as_deref() == Some(id) && t.slot == Some(i64::from(unit.number)))
        .filter(|t| matches!(state(t), TaskState::FAILED | TaskState::REJECTED))
        .max_by_key(|t| t.status.as_ref().and_then(|s| s.timestamp.as_ref()).map(|d| d.to_string()))
        .and_then(|t| t.status.as_ref().and_then(|s| s.err.clone()))
}

/// The task of `unit` that runs (or is to run) now.
pub(super) fn running_task<'a>(view: &'a View, unit: &Unit) -> Option<&'a Task> {
    let service = view.services_of(&unit.app).find(|s| {
        label(s.spec.as_ref().and_then(|s| s.labels.as_ref()), LABEL_TYPE) == Some(unit.proc_type.as_str())
    })?;
    let id = service.id.as_deref()?;
    view.tasks.iter().find(|t| {
        t.service_id.as_deref() == Some(id)
            && t.slot == Some(i64::from(unit.number))
            && state(t) == TaskState::RUNNING
            && matches!(desired(t), TaskState::RUNNING | TaskState::READY)
    })
}
