//! The cluster as placement sees it: nodes, the slots held on them, and the indexes a
//! plan searches. [`Snapshot`] is an immutable view to plan from; [`Cluster`] keeps the
//! current state in memory and commits plans to it with the same optimistic check the
//! store does (every node a plan touches must be as the plan saw it).

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use super::index::{Free, FreeIndex};
use super::plan::{PlacementError, Plan, Planning};
use super::{Capacity, Health, NodeInfo, Planes, Policy, Slot, UnitRequest};
use crate::model::AppName;
use crate::model::limits::Resources;
use crate::store::Revision;

/// Fixed-point scale of scores and keys: 1.0 = `SCALE`.
pub(super) const SCALE: i128 = 1 << 20;

/// A node and what placement keeps about it.
#[derive(Debug, Clone)]
pub(super) struct NodeEntry {
    pub info: NodeInfo,
    pub health: Health,
    /// Sum of the requests of the slots it holds.
    pub allocated: Resources,
    /// Its class and position in the class's index.
    pub class: usize,
    pub pos: usize,
    /// Changes when the node's record (health, labels) changes.
    pub node_revision: Revision,
    /// Changes when what the node holds changes.
    pub alloc_revision: Revision,
}

impl NodeEntry {
    /// What the index shows for the node.
    fn free(&self) -> Free {
        if !self.health.is_up() {
            return Free::NONE;
        }
        let cap = self.info.capacity;
        Free {
            cpu: to_i64(cap.cpu_millis) - to_i64(self.allocated.cpu_millis),
            mem: to_i64(cap.memory_bytes) - to_i64(self.allocated.memory_bytes),
            key: spread_key(cap, self.allocated),
        }
    }
}

pub(super) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn fraction(part: i128, whole: u64) -> i128 {
    if whole == 0 { 0 } else { part * SCALE / i128::from(whole) }
}

/// How empty a node is: free cpu share plus free memory share (0 to 2 × [`SCALE`]).
/// The spread policy picks the highest.
pub(super) fn spread_key(cap: Capacity, allocated: Resources) -> i64 {
    let cpu = i128::from(cap.cpu_millis) - i128::from(allocated.cpu_millis);
    let mem = i128::from(cap.memory_bytes) - i128::from(allocated.memory_bytes);
    (fraction(cpu, cap.cpu_millis) + fraction(mem, cap.memory_bytes)) as i64
}

/// How full a node would be with `after` allocated: cpu share plus memory share (0 to
/// 2 × [`SCALE`]). The bin-pack policy picks the highest.
pub(super) fn fullness(cap: Capacity, after: Resources) -> i64 {
    (fraction(i128::from(after.cpu_millis), cap.cpu_millis)
        + fraction(i128::from(after.memory_bytes), cap.memory_bytes)) as i64
}

/// Nodes that look the same to feasibility: the same planes and labels. A request is
/// checked against each class once, not against each node.
#[derive(Debug, Clone)]
pub(super) struct Class {
    pub planes: Planes,
    pub labels: BTreeMap<String, String>,
    /// Node indexes by position, biggest first.
    pub members: Vec<usize>,
    pub index: FreeIndex,
    /// How many members are up.
    pub up: usize,
}

/// A slot held on a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Held {
    pub node: usize,
    pub request: UnitRequest,
}

/// The key of an app's process type, for spreading its units.
pub(super) fn group_of(slot: &Slot) -> u64 {
    // DefaultHasher::new() has fixed keys: the same value in every run.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    slot.app.hash(&mut h);
    slot.proc_type.hash(&mut h);
    h.finish()
}

/// Everything placement knows. See the module docs.
#[derive(Debug, Clone)]
pub struct ClusterState {
    pub(super) nodes: Vec<NodeEntry>,
    by_name: HashMap<String, usize>,
    pub(super) classes: Vec<Class>,
    /// Held slots by app.
    pub(super) slots: BTreeMap<AppName, BTreeMap<Slot, Held>>,
    /// Units of a group (app and process type) per node.
    pub(super) group_counts: HashMap<(u64, usize), u32>,
    /// Slots per group.
    pub(super) group_sizes: HashMap<u64, u32>,
}

impl ClusterState {
    /// Nodes without slots. Within a class, nodes are tried biggest first and, among
    /// equals, in an order given by `seed`: the same seed gives the same placements.
    pub fn new(seed: u64, nodes: impl IntoIterator<Item = (NodeInfo, Health)>) -> Self {
        let mut entries: Vec<NodeEntry> = nodes
            .into_iter()
            .map(|(info, health)| NodeEntry {
                info,
                health,
                allocated: Resources::default(),
                class: 0,
                pos: 0,
                node_revision: 1,
                alloc_revision: 0,
            })
            .collect();
        entries.sort_by(|a, b| a.info.name.cmp(&b.info.name));
        entries.dedup_by(|a, b| a.info.name == b.info.name);
        let by_name = entries.iter().enumerate().map(|(i, n)| (n.info.name.clone(), i)).collect();
        let mut state = Self {
            nodes: entries,
            by_name,
            classes: Vec::new(),
            slots: BTreeMap::new(),
            group_counts: HashMap::new(),
            group_sizes: HashMap::new(),
        };
        state.build_classes(seed);
        state
    }

    fn build_classes(&mut self, seed: u64) {
        let mut by_key: BTreeMap<(Planes, &BTreeMap<String, String>), Vec<usize>> = BTreeMap::new();
        for (i, n) in self.nodes.iter().enumerate() {
            by_key.entry((n.info.planes, &n.info.labels)).or_default().push(i);
        }
        let tie = |name: &str| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (seed, name).hash(&mut h);
            h.finish()
        };
        let mut classes = Vec::with_capacity(by_key.len());
        for ((planes, labels), mut members) in by_key {
            members.sort_by_key(|&i| {
                let n = &self.nodes[i].info;
                (std::cmp::Reverse((n.capacity.cpu_millis, n.capacity.memory_bytes)), tie(&n.name), i)
            });
            classes.push(Class {
                planes,
                labels: labels.clone(),
                index: FreeIndex::new(members.len()),
                up: 0,
                members,
            });
        }
        for (c, class) in classes.iter_mut().enumerate() {
            for (pos, &i) in class.members.iter().enumerate() {
                self.nodes[i].class = c;
                self.nodes[i].pos = pos;
            }
            class.up = class.members.iter().filter(|&&i| self.nodes[i].health.is_up()).count();
            class.index.fill(class.members.iter().map(|&i| self.nodes[i].free()));
        }
        self.classes = classes;
    }

    /// The index of node `name`.
    pub(super) fn node_index(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// Sets the revisions a store gave the node's records (for commits).
    pub fn set_revisions(&mut self, node: &str, node_revision: Revision, alloc_revision: Revision) {
        if let Some(i) = self.node_index(node) {
            self.nodes[i].node_revision = node_revision;
            self.nodes[i].alloc_revision = alloc_revision;
        }
    }

    /// Records that `request`'s slot is held on `node` (loading what a store says).
    /// Unknown nodes are ignored; returns whether the node is known.
    pub fn hold(&mut self, request: UnitRequest, node: &str) -> bool {
        let Some(i) = self.node_index(node) else { return false };
        self.add(request, i);
        true
    }

    fn add(&mut self, request: UnitRequest, node: usize) {
        let group = group_of(&request.slot);
        *self.group_counts.entry((group, node)).or_default() += 1;
        *self.group_sizes.entry(group).or_default() += 1;
        let r = request.resources;
        let n = &mut self.nodes[node];
        n.allocated.cpu_millis = n.allocated.cpu_millis.saturating_add(r.cpu_millis);
        n.allocated.memory_bytes = n.allocated.memory_bytes.saturating_add(r.memory_bytes);
        let app = self.slots.entry(request.slot.app.clone()).or_default();
        if let Some(old) = app.insert(request.slot.clone(), Held { node, request }) {
            self.remove_held(&old);
            self.reindex(old.node);
        }
        self.reindex(node);
    }

    fn remove(&mut self, slot: &Slot) {
        let Some(app) = self.slots.get_mut(&slot.app) else { return };
        let held = app.remove(slot);
        if app.is_empty() {
            self.slots.remove(&slot.app);
        }
        if let Some(held) = held {
            self.remove_held(&held);
            self.reindex(held.node);
        }
    }

    /// Where `slot` is held.
    pub(super) fn held_slot(&self, slot: &Slot) -> Option<&Held> {
        self.slots.get(&slot.app)?.get(slot)
    }

    /// Takes a held slot's share off its node and group (not out of `slots`).
    fn remove_held(&mut self, held: &Held) {
        let group = group_of(&held.request.slot);
        if let Some(c) = self.group_counts.get_mut(&(group, held.node)) {
            *c -= 1;
            if *c == 0 {
                self.group_counts.remove(&(group, held.node));
            }
        }
        if let Some(s) = self.group_sizes.get_mut(&group) {
            *s -= 1;
            if *s == 0 {
                self.group_sizes.remove(&group);
            }
        }
        let r = held.request.resources;
        let n = &mut self.nodes[held.node];
        n.allocated.cpu_millis = n.allocated.cpu_millis.saturating_sub(r.cpu_millis);
        n.allocated.memory_bytes = n.allocated.memory_bytes.saturating_sub(r.memory_bytes);
    }

    fn reindex(&mut self, node: usize) {
        let n = &self.nodes[node];
        let free = n.free();
        self.classes[n.class].index.set(n.pos, free);
    }

    /// Sets the health of node `name`; false if there is no such node.
    pub fn set_health(&mut self, name: &str, health: Health) -> bool {
        let Some(i) = self.node_index(name) else { return false };
        let was_up = self.nodes[i].health.is_up();
        self.nodes[i].health = health;
        self.nodes[i].node_revision += 1;
        let class = self.nodes[i].class;
        match (was_up, health.is_up()) {
            (true, false) => self.classes[class].up -= 1,
            (false, true) => self.classes[class].up += 1,
            _ => {}
        }
        self.reindex(i);
        true
    }

    /// Checks that every node `plan` touches is as the plan saw it, then applies it.
    /// On a conflict nothing changes: plan again from a new snapshot.
    pub fn commit(&mut self, plan: &Plan) -> Result<(), PlacementError> {
        for (name, seen) in &plan.touched {
            let now = self.node_index(name).map(|i| (self.nodes[i].node_revision, self.nodes[i].alloc_revision));
            if now != Some(*seen) {
                return Err(PlacementError::Conflict { node: name.clone() });
            }
        }
        self.apply(plan);
        Ok(())
    }

    /// Applies `plan` without checking (its nodes' revisions were checked elsewhere,
    /// e.g. by the store's transaction).
    pub fn apply(&mut self, plan: &Plan) {
        for p in &plan.released {
            if self.held_slot(&p.request.slot).is_some_and(|h| self.nodes[h.node].info.name == p.node) {
                self.remove(&p.request.slot);
            }
        }
        for p in &plan.placed {
            if let Some(i) = self.node_index(&p.node) {
                self.add(p.request.clone(), i);
            }
        }
        for name in plan.touched.keys() {
            if let Some(i) = self.node_index(name) {
                self.nodes[i].alloc_revision += 1;
            }
        }
    }

    /// The node holding `slot`.
    pub fn node_of(&self, slot: &Slot) -> Option<&str> {
        self.held_slot(slot).map(|h| self.nodes[h.node].info.name.as_str())
    }

    /// The slots of `app` and their nodes, in slot order.
    pub fn slots_of<'a>(&'a self, app: &'a AppName) -> impl Iterator<Item = (&'a UnitRequest, &'a str)> + 'a {
        self.slots.get(app).into_iter().flatten().map(|(_, h)| (&h.request, self.nodes[h.node].info.name.as_str()))
    }

    /// Every held slot and its node, in slot order.
    pub fn held(&self) -> impl Iterator<Item = (&UnitRequest, &str)> {
        self.slots.values().flatten().map(|(_, h)| (&h.request, self.nodes[h.node].info.name.as_str()))
    }

    /// Every node: what it is, its health and what it holds, by name.
    pub fn nodes(&self) -> impl Iterator<Item = (&NodeInfo, Health, Resources)> {
        self.nodes.iter().map(|n| (&n.info, n.health, n.allocated))
    }

    /// What node `name` holds.
    pub fn allocated(&self, name: &str) -> Option<Resources> {
        self.node_index(name).map(|i| self.nodes[i].allocated)
    }
}

/// An immutable view of the cluster to plan from. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub(super) state: Arc<ClusterState>,
}

impl Snapshot {
    /// A view of `state`.
    pub fn new(state: ClusterState) -> Self {
        Self { state: Arc::new(state) }
    }

    /// The state seen.
    pub fn state(&self) -> &ClusterState {
        &self.state
    }

    /// A plan giving `app` exactly the slots of `want`: slots it no longer wants are
    /// released; slots it keeps stay where they are while their node is up and still
    /// right for them (plane, labels, the same request); the rest are placed by
    /// `policy`. Fails, naming the first slot that does not fit and why, when any
    /// does not: then nothing may change.
    pub fn plan_app(&self, policy: Policy, app: &AppName, want: &[UnitRequest]) -> Result<Plan, PlacementError> {
        Planning::new(&self.state, policy).app(app, want)
    }

    /// A plan moving every slot of node `node` (down) to other nodes. Slots that fit
    /// nowhere stay, listed in [`Plan::unplaced`].
    pub fn plan_lost(&self, policy: Policy, node: &str) -> Plan {
        Planning::new(&self.state, policy).lost(node)
    }
}

/// The cluster in memory: a current state, snapshots of it, and commits of plans made
/// from them. A plan made from an older snapshot commits only if none of its nodes has
/// changed since.
#[derive(Debug, Clone)]
pub struct Cluster {
    state: Arc<ClusterState>,
}

impl Cluster {
    /// A cluster of `nodes` (see [`ClusterState::new`]).
    pub fn new(seed: u64, nodes: impl IntoIterator<Item = (NodeInfo, Health)>) -> Self {
        Self { state: Arc::new(ClusterState::new(seed, nodes)) }
    }

    /// The current state, to plan from.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot { state: self.state.clone() }
    }

    /// Commits `plan` (see [`ClusterState::commit`]).
    pub fn commit(&mut self, plan: &Plan) -> Result<(), PlacementError> {
        // Copies the state only while an older snapshot is still held.
        Arc::make_mut(&mut self.state).commit(plan)
    }

    /// Sets a node's health.
    pub fn set_health(&mut self, name: &str, health: Health) -> bool {
        Arc::make_mut(&mut self.state).set_health(name, health)
    }

    /// The current state.
    pub fn state(&self) -> &ClusterState {
        &self.state
    }
}
