//! Planning: the placement pipeline run for each slot against an immutable state.
//!
//! 1. **Feasibility by class**: nodes with the same planes and labels form a class; a
//!    request keeps the classes that serve its plane and carry its selector. A
//!    selector label no node carries at all is refused at once
//!    ([`PlacementError::UnknownLabel`]).
//! 2. **Spread of an app's process type**: a node may hold at most
//!    `ceil(units of the type / eligible up nodes)` of its units, so the units of
//!    `web` land on different nodes while there are nodes enough. When that leaves no
//!    room, the cap is dropped (a placement that fits beats a refusal).
//! 3. **Capacity**: the node must have the request free, counting what this plan has
//!    already put on it or taken off it.
//! 4. **Score** by policy among the first [`BINPACK_CANDIDATES`] nodes that fit in
//!    each class (nodes tried biggest first) for bin-pack: a node in use before an
//!    empty one, the fullest after placement first; of empty nodes, those with fewer
//!    labels the unit does not ask for, then the biggest. Spread takes the emptiest
//!    node. Fullness is a share of capacity, so nodes of different sizes compare
//!    fairly. Ties go to the first found, in an order fixed by the seed.
//!
//! The plan records the revisions of every node it touches; a commit (in memory or in
//! the store) checks them, so two planners working from the same snapshot never both
//! fill the same room.

use std::collections::{BTreeMap, HashMap};

use super::cluster::{ClusterState, fullness, group_of, spread_key, to_i64};
use super::{Plane, Policy, Slot, UnitRequest};
use crate::model::AppName;
use crate::model::limits::{Resources, format_memory};
use crate::store::Revision;

/// How many fitting nodes per class the bin-pack policy compares.
pub const BINPACK_CANDIDATES: usize = 3;

/// A slot and the node it is (or was) on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The slot and what it needs.
    pub request: UnitRequest,
    /// The node.
    pub node: String,
}

/// What a planning run decided. Apply it with a commit, which checks that no node it
/// touches has changed since the snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Slots put on a node they are not held on now (new, or moved).
    pub placed: Vec<Placement>,
    /// Slots taken off the node that holds them (gone, moved, or changed).
    pub released: Vec<Placement>,
    /// Slots the plan could not place (only [`Snapshot::plan_lost`](super::Snapshot::plan_lost)
    /// leaves any; they stay where they were).
    pub unplaced: Vec<UnitRequest>,
    /// Every node changed, with its (record, allocation) revisions as planned from.
    pub touched: BTreeMap<String, (Revision, Revision)>,
}

impl Plan {
    /// Whether the plan changes nothing.
    pub fn is_empty(&self) -> bool {
        self.placed.is_empty() && self.released.is_empty()
    }
}

/// Why a placement was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    /// A selector label (an app tag) that no node carries.
    #[error(
        "no node carries the label {key}={value} (from the app's tags){}; change the tag (deis tags:set / tags:unset) or label a node",
        known_values(.known)
    )]
    UnknownLabel {
        /// The label's key.
        key: String,
        /// The value asked for.
        value: String,
        /// The values nodes do carry for `key`.
        known: Vec<String>,
    },
    /// Nodes carry the selector, but none serves the plane.
    #[error(
        "{slot}: no node of the {plane} plane carries {}; nodes that do serve other planes: {}",
        show_selector(.selector),
        .others.join(", ")
    )]
    NoNodeOfPlane {
        /// The first slot that can't be placed.
        slot: String,
        /// The plane asked for.
        plane: Plane,
        /// Its selector.
        selector: BTreeMap<String, String>,
        /// Nodes carrying the selector, with their planes.
        others: Vec<String>,
    },
    /// The eligible nodes have no room for the slot.
    #[error(
        "{slot} needs {}: {}{}. Scale down (deis ps:scale), lower the limits (deis limits:set){}, or add nodes",
        show_resources(.request),
        show_eligible(*.up, *.down, *.plane, .selector),
        show_most_free(.most_free),
        if .selector.is_empty() { "" } else { ", drop tags (deis tags:unset)" }
    )]
    Capacity {
        /// The first slot that does not fit.
        slot: String,
        /// What it needs.
        request: Resources,
        /// The plane.
        plane: Plane,
        /// Its selector.
        selector: BTreeMap<String, String>,
        /// Eligible nodes that are up.
        up: usize,
        /// Eligible nodes that are down.
        down: usize,
        /// The eligible up node with the most free, and what it has free.
        most_free: Option<(String, Resources)>,
    },
    /// A node the plan touches changed since the snapshot; plan again.
    #[error("node {node} changed while the plan was made; plan again from a new snapshot")]
    Conflict {
        /// The node.
        node: String,
    },
}

fn known_values(known: &[String]) -> String {
    if known.is_empty() { String::new() } else { format!(" (nodes carry {})", known.join(", ")) }
}

fn show_selector(selector: &BTreeMap<String, String>) -> String {
    let labels: Vec<String> = selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
    labels.join(",")
}

fn show_resources(r: &Resources) -> String {
    format!("{}m cpu and {} memory", r.cpu_millis, format_memory(r.memory_bytes))
}

fn show_eligible(up: usize, down: usize, plane: Plane, selector: &BTreeMap<String, String>) -> String {
    let carrying = if selector.is_empty() { String::new() } else { format!(" carrying {}", show_selector(selector)) };
    let down = if down > 0 { format!(" ({down} more down)") } else { String::new() };
    match up {
        0 => format!("no node of the {plane} plane{carrying} is up{down}"),
        n => format!("none of the {n} up nodes of the {plane} plane{carrying}{down} has that free"),
    }
}

fn show_most_free(most: &Option<(String, Resources)>) -> String {
    match most {
        Some((node, free)) => format!(" (most free: {node}, {})", show_free(free)),
        None => String::new(),
    }
}

fn show_free(r: &Resources) -> String {
    format!("{}m cpu and {} memory free", r.cpu_millis, format_memory(r.memory_bytes))
}

/// One planning run: the state it reads and what it has decided so far.
pub(super) struct Planning<'a> {
    state: &'a ClusterState,
    policy: Policy,
    /// Resources this plan adds to (positive) or takes from (negative) each node.
    delta: HashMap<usize, (i64, i64)>,
    /// Units this plan adds to or takes from each (group, node).
    group_delta: HashMap<(u64, usize), i64>,
    /// Size of each group the plan places.
    group_size: HashMap<u64, i64>,
    /// Nodes this plan freed room on: the index can't know, so they are tried directly.
    freed: Vec<usize>,
    /// Eligible classes per (plane, selector) seen in this run.
    eligible: Vec<(Plane, BTreeMap<String, String>, Vec<usize>)>,
    plan: Plan,
}

impl<'a> Planning<'a> {
    pub fn new(state: &'a ClusterState, policy: Policy) -> Self {
        Self {
            state,
            policy,
            delta: HashMap::new(),
            group_delta: HashMap::new(),
            group_size: HashMap::new(),
            freed: Vec::new(),
            eligible: Vec::new(),
            plan: Plan::default(),
        }
    }

    /// See [`Snapshot::plan_app`](super::Snapshot::plan_app).
    pub fn app(mut self, app: &AppName, want: &[UnitRequest]) -> Result<Plan, PlacementError> {
        let state = self.state;
        let wanted: BTreeMap<&Slot, &UnitRequest> =
            want.iter().filter(|r| r.slot.app == *app).map(|r| (&r.slot, r)).collect();
        for r in wanted.values() {
            *self.group_size.entry(group_of(&r.slot)).or_default() += 1;
        }
        let mut to_place = Vec::new();
        let held = state.slots.get(app);
        for h in held.into_iter().flat_map(|m| m.values()) {
            let keep = wanted.get(&h.request.slot).is_some_and(|r| **r == h.request && self.still_right(h.node, r));
            if !keep {
                self.release(&h.request, h.node);
            }
        }
        for (slot, r) in &wanted {
            let kept = held.and_then(|m| m.get(*slot)).is_some_and(|h| h.request == **r && self.still_right(h.node, r));
            if !kept {
                to_place.push(*r);
            }
        }
        // Biggest first: large units find room before small ones fragment it.
        to_place.sort_by_key(|r| std::cmp::Reverse((r.resources.memory_bytes, r.resources.cpu_millis)));
        for r in to_place {
            self.place(r)?;
        }
        Ok(self.plan)
    }

    /// See [`Snapshot::plan_lost`](super::Snapshot::plan_lost).
    pub fn lost(mut self, node: &str) -> Plan {
        let state = self.state;
        let Some(lost) = state.node_index(node) else { return self.plan };
        let mut moving: Vec<&UnitRequest> =
            state.slots.values().flat_map(|m| m.values()).filter(|h| h.node == lost).map(|h| &h.request).collect();
        moving.sort_by_key(|r| std::cmp::Reverse((r.resources.memory_bytes, r.resources.cpu_millis)));
        for r in moving {
            let group = group_of(&r.slot);
            self.group_size.insert(group, i64::from(state.group_sizes.get(&group).copied().unwrap_or(1)));
            // Release and place together, so a slot that fits nowhere stays as it was.
            let before = (self.delta.clone(), self.group_delta.clone(), self.freed.len(), self.plan.released.len());
            self.release(r, lost);
            if self.place(r).is_err() {
                (self.delta, self.group_delta) = (before.0, before.1);
                self.freed.truncate(before.2);
                self.plan.released.truncate(before.3);
                self.plan.unplaced.push(r.clone());
            }
        }
        self.plan
    }

    /// Whether node `node` may keep holding `request`: up, and still of its plane and
    /// labels.
    fn still_right(&self, node: usize, request: &UnitRequest) -> bool {
        let n = &self.state.nodes[node];
        n.health.is_up() && n.info.planes.contains(request.plane) && n.info.carries(&request.selector)
    }

    fn touch(&mut self, node: usize) {
        let n = &self.state.nodes[node];
        self.plan.touched.entry(n.info.name.clone()).or_insert((n.node_revision, n.alloc_revision));
    }

    fn release(&mut self, request: &UnitRequest, node: usize) {
        let d = self.delta.entry(node).or_default();
        d.0 -= to_i64(request.resources.cpu_millis);
        d.1 -= to_i64(request.resources.memory_bytes);
        *self.group_delta.entry((group_of(&request.slot), node)).or_default() -= 1;
        if !self.freed.contains(&node) {
            self.freed.push(node);
        }
        self.touch(node);
        let name = self.state.nodes[node].info.name.clone();
        self.plan.released.push(super::Placement { request: request.clone(), node: name });
    }

    /// What node `node` has free now, counting this plan.
    fn free(&self, node: usize) -> (i64, i64) {
        let n = &self.state.nodes[node];
        let (dc, dm) = self.delta.get(&node).copied().unwrap_or_default();
        (
            to_i64(n.info.capacity.cpu_millis) - to_i64(n.allocated.cpu_millis) - dc,
            to_i64(n.info.capacity.memory_bytes) - to_i64(n.allocated.memory_bytes) - dm,
        )
    }

    /// Units of `group` on `node`, counting this plan.
    fn group_count(&self, group: u64, node: usize) -> i64 {
        let base = self.state.group_counts.get(&(group, node)).copied().map_or(0, i64::from);
        base + self.group_delta.get(&(group, node)).copied().unwrap_or(0)
    }

    /// The classes that serve `plane` and carry `selector`.
    fn classes_for(&mut self, request: &UnitRequest) -> Result<Vec<usize>, PlacementError> {
        if let Some((_, _, c)) = self.eligible.iter().find(|(p, s, _)| *p == request.plane && *s == request.selector) {
            return Ok(c.clone());
        }
        let state = self.state;
        let classes: Vec<usize> = (0..state.classes.len())
            .filter(|&c| {
                let class = &state.classes[c];
                class.planes.contains(request.plane)
                    && request.selector.iter().all(|(k, v)| class.labels.get(k) == Some(v))
            })
            .collect();
        if classes.is_empty() {
            return Err(self.why_no_class(request));
        }
        self.eligible.push((request.plane, request.selector.clone(), classes.clone()));
        Ok(classes)
    }

    fn why_no_class(&self, request: &UnitRequest) -> PlacementError {
        let classes = &self.state.classes;
        for (k, v) in &request.selector {
            if !classes.iter().any(|c| c.labels.get(k) == Some(v)) {
                let mut known: Vec<String> =
                    classes.iter().filter_map(|c| c.labels.get(k)).map(|v| format!("{k}={v}")).collect();
                known.sort();
                known.dedup();
                return PlacementError::UnknownLabel { key: k.clone(), value: v.clone(), known };
            }
        }
        let others = self
            .state
            .nodes
            .iter()
            .filter(|n| n.info.carries(&request.selector))
            .map(|n| format!("{} ({})", n.info.name, n.info.planes))
            .take(10)
            .collect();
        PlacementError::NoNodeOfPlane {
            slot: request.slot.to_string(),
            plane: request.plane,
            selector: request.selector.clone(),
            others,
        }
    }

    /// Places one slot (see the module docs) and records it.
    fn place(&mut self, request: &UnitRequest) -> Result<(), PlacementError> {
        let classes = self.classes_for(request)?;
        let state = self.state;
        let up: usize = classes.iter().map(|&c| state.classes[c].up).sum();
        let group = group_of(&request.slot);
        let size = self.group_size.get(&group).copied().unwrap_or(1).max(1);
        let cap = if up == 0 { None } else { Some((size + up as i64 - 1) / up as i64) };
        let found = self.search(request, &classes, group, cap).or_else(|| self.search(request, &classes, group, None));
        let Some(node) = found else { return Err(self.capacity_error(request, &classes, up)) };
        let d = self.delta.entry(node).or_default();
        d.0 += to_i64(request.resources.cpu_millis);
        d.1 += to_i64(request.resources.memory_bytes);
        *self.group_delta.entry((group, node)).or_default() += 1;
        self.touch(node);
        let name = state.nodes[node].info.name.clone();
        self.plan.placed.push(super::Placement { request: request.clone(), node: name });
        Ok(())
    }

    /// The policy's score of putting `request` on `node` (higher is better), or None
    /// when it can't go there (down, no room, or its group is at `cap` there).
    fn score(&self, request: &UnitRequest, node: usize, group: u64, cap: Option<i64>) -> Option<i64> {
        let n = &self.state.nodes[node];
        if !n.health.is_up() || cap.is_some_and(|cap| self.group_count(group, node) >= cap) {
            return None;
        }
        let (cpu, mem) = (to_i64(request.resources.cpu_millis), to_i64(request.resources.memory_bytes));
        let (free_cpu, free_mem) = self.free(node);
        if free_cpu < cpu || free_mem < mem {
            return None;
        }
        let cap = n.info.capacity;
        let used = |free: i64, total: u64| u64::try_from(to_i64(total) - free).unwrap_or(0);
        let now =
            Resources { cpu_millis: used(free_cpu, cap.cpu_millis), memory_bytes: used(free_mem, cap.memory_bytes) };
        Some(match self.policy {
            Policy::Binpack => self.binpack_score(request, node, now),
            Policy::Spread => spread_key(cap, now),
        })
    }

    /// Bin-pack's score. Taking a node into use is what bin-pack avoids, so a node
    /// already in use always wins over an empty one, and among those in use the fullest
    /// after placement wins. When a node must be taken into use, the one with the fewest
    /// labels the unit does not ask for wins (so units that could go anywhere leave
    /// labelled nodes such as `disk=ssd` to the units that need them), then the biggest
    /// (the fewest nodes hold the most).
    fn binpack_score(&self, request: &UnitRequest, node: usize, now: Resources) -> i64 {
        const IN_USE: i64 = 1 << 61;
        let n = &self.state.nodes[node];
        let cap = n.info.capacity;
        // Every selector label is on the node (its class was chosen for them).
        let asked = 1023 - (n.info.labels.len() - request.selector.len()).min(1023) as i64;
        if now != Resources::default() {
            let after = Resources {
                cpu_millis: now.cpu_millis + request.resources.cpu_millis,
                memory_bytes: now.memory_bytes + request.resources.memory_bytes,
            };
            return IN_USE + (asked << 24) + fullness(cap, after);
        }
        let size =
            (to_i64(cap.cpu_millis).min((1 << 22) - 1) << 20) + to_i64(cap.memory_bytes >> 20).min((1 << 20) - 1);
        (size << 10) + asked
    }

    /// The best node for `request` in `classes`, or None.
    fn search(&self, request: &UnitRequest, classes: &[usize], group: u64, cap: Option<i64>) -> Option<usize> {
        let (cpu, mem) = (to_i64(request.resources.cpu_millis), to_i64(request.resources.memory_bytes));
        let mut best: Option<(i64, usize)> = None;
        let mut offer = |score: i64, node: usize| {
            if best.is_none_or(|(b, _)| score > b) {
                best = Some((score, node));
            }
        };
        for &c in classes {
            let class = &self.state.classes[c];
            match self.policy {
                Policy::Binpack => {
                    let mut seen = 0;
                    class.index.first_fits(cpu, mem, |pos| {
                        let node = class.members[pos];
                        if let Some(s) = self.score(request, node, group, cap) {
                            offer(s, node);
                            seen += 1;
                        }
                        seen < BINPACK_CANDIDATES
                    });
                }
                Policy::Spread => {
                    let found = class.index.best(cpu, mem, |pos| self.score(request, class.members[pos], group, cap));
                    if let Some((pos, s)) = found {
                        offer(s, class.members[pos]);
                    }
                }
            }
        }
        // Room this plan freed is not in the index: look at those nodes directly.
        for &node in &self.freed {
            if classes.contains(&self.state.nodes[node].class)
                && let Some(s) = self.score(request, node, group, cap)
            {
                offer(s, node);
            }
        }
        best.map(|(_, node)| node)
    }

    fn capacity_error(&self, request: &UnitRequest, classes: &[usize], up: usize) -> PlacementError {
        let state = self.state;
        let members = classes.iter().flat_map(|&c| state.classes[c].members.iter().copied());
        let total: usize = classes.iter().map(|&c| state.classes[c].members.len()).sum();
        let most_free = members
            .filter(|&n| state.nodes[n].health.is_up())
            .map(|n| {
                let (c, m) = self.free(n);
                let free = Resources { cpu_millis: c.max(0) as u64, memory_bytes: m.max(0) as u64 };
                let cap = state.nodes[n].info.capacity;
                let used = Resources {
                    cpu_millis: cap.cpu_millis.saturating_sub(free.cpu_millis),
                    memory_bytes: cap.memory_bytes.saturating_sub(free.memory_bytes),
                };
                (spread_key(cap, used), std::cmp::Reverse(n), free)
            })
            .max_by_key(|&(key, n, _)| (key, n))
            .map(|(_, std::cmp::Reverse(n), free)| (state.nodes[n].info.name.clone(), free));
        PlacementError::Capacity {
            slot: request.slot.to_string(),
            request: request.resources,
            plane: request.plane,
            selector: request.selector.clone(),
            up,
            down: total - up,
            most_free,
        }
    }
}
