//! Placement kept in the [`Store`], so every scheduler replica sees one truth.
//!
//! | key | value |
//! |---|---|
//! | `placement/nodes/<node>` | [`NodeRecord`]: what the node is and its health |
//! | `placement/allocs/<node>` | the requests of the slots it holds |
//!
//! A plan commits in one transaction that compares the record and the allocation of
//! every node it touches with the revisions its snapshot saw, and writes the new
//! allocations. When another scheduler got there first the transaction fails, nothing
//! is written, and [`PlacementStore::place_app`] plans again from a fresh snapshot: a
//! node is never given more than it has, however many schedulers place at once.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{ClusterState, Health, NodeInfo, PlacementError, Plan, Policy, Slot, Snapshot, UnitRequest};
use crate::model::AppName;
use crate::store::{Store, StoreError, Txn, records};
use crate::time::Timestamp;

/// Where placement keeps its records.
pub const PREFIX: &str = "placement/";
const NODES: &str = "placement/nodes/";
const ALLOCS: &str = "placement/allocs/";
/// How often a commit that lost a race is planned again before giving up.
const ATTEMPTS: usize = 32;

fn node_key(node: &str) -> String {
    format!("{NODES}{node}")
}

fn alloc_key(node: &str) -> String {
    format!("{ALLOCS}{node}")
}

/// A node as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// What the node is.
    #[serde(flatten)]
    pub info: NodeInfo,
    /// Whether it answers.
    pub health: Health,
    /// When it last answered.
    pub seen: Timestamp,
}

/// What a node holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct AllocRecord {
    units: Vec<UnitRequest>,
}

/// Errors of a [`PlacementStore`].
#[derive(Debug, thiserror::Error)]
pub enum PlacementStoreError {
    /// The plan was refused (no room, a tag no node carries, ...).
    #[error(transparent)]
    Placement(#[from] PlacementError),
    /// The store failed.
    #[error("placement records: {0}")]
    Store(#[from] StoreError),
    /// Other schedulers kept changing the same nodes.
    #[error("placement: {attempts} plans in a row lost the race for their nodes to other schedulers; try again")]
    Contended {
        /// Plans tried.
        attempts: usize,
    },
}

/// Placement records in a [`Store`]. See the module docs. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PlacementStore {
    store: Arc<dyn Store>,
    policy: Policy,
    seed: u64,
}

impl PlacementStore {
    /// Placement in `store` by `policy`.
    pub fn new(store: Arc<dyn Store>, policy: Policy) -> Self {
        Self { store, policy, seed: 0 }
    }

    /// The same, breaking ties between equal nodes by `seed` (default 0).
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// The policy.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// The cluster as the store has it now, with the revisions a commit compares.
    pub async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        let listing = self.store.list(PREFIX).await?;
        let mut nodes = Vec::new();
        let mut allocs = Vec::new();
        for kv in &listing.kvs {
            if kv.key.starts_with(NODES) {
                let record: NodeRecord = records::decode(kv)?;
                nodes.push((record, kv.mod_revision));
            } else if let Some(node) = kv.key.strip_prefix(ALLOCS) {
                let record: AllocRecord = records::decode(kv)?;
                allocs.push((node.to_string(), record, kv.mod_revision));
            }
        }
        let revisions: Vec<(String, u64)> = nodes.iter().map(|(r, rev)| (r.info.name.clone(), *rev)).collect();
        let mut state = ClusterState::new(self.seed, nodes.into_iter().map(|(r, _)| (r.info, r.health)));
        for (node, rev) in revisions {
            state.set_revisions(&node, rev, 0);
        }
        for (node, record, rev) in allocs {
            let node_rev = listing.kvs.iter().find(|kv| kv.key == node_key(&node)).map_or(0, |kv| kv.mod_revision);
            state.set_revisions(&node, node_rev, rev);
            for unit in record.units {
                if !state.hold(unit, &node) {
                    tracing::warn!(%node, "placement: allocations of an unknown node ignored");
                    break;
                }
            }
        }
        Ok(Snapshot::new(state))
    }

    /// The node records.
    pub async fn nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        records::list_json(&*self.store, NODES).await
    }

    /// Records node `info` as up (seen now), keeping what it holds.
    pub async fn register(&self, info: NodeInfo) -> Result<(), StoreError> {
        let record = NodeRecord { info, health: Health::Up, seen: Timestamp::now() };
        self.store.put(&node_key(&record.info.name), records::encode(&record)).await?;
        Ok(())
    }

    /// Sets the health of node `node`; the time it was seen moves on while it is up.
    /// Returns the record as it was, or None for an unknown node.
    pub async fn set_health(&self, node: &str, health: Health) -> Result<Option<NodeRecord>, StoreError> {
        let key = node_key(node);
        for _ in 0..ATTEMPTS {
            let Some((old, rev)) = records::get_json::<NodeRecord>(&*self.store, &key).await? else { return Ok(None) };
            let mut new = old.clone();
            new.health = match (old.health, health) {
                // Down stays down since the first time.
                (Health::Down { since }, Health::Down { .. }) => Health::Down { since },
                (_, h) => h,
            };
            if health.is_up() {
                new.seen = Timestamp::now();
            }
            if new == old || self.store.compare_and_swap(&key, rev, records::encode(&new)).await? {
                return Ok(Some(old));
            }
        }
        Err(StoreError::Backend(format!("node {node}: its record kept changing").into()))
    }

    /// Commits `plan`, made from `snapshot`: false (and nothing written) if any node it
    /// touches changed since.
    pub async fn commit(&self, snapshot: &Snapshot, plan: &Plan) -> Result<bool, StoreError> {
        let mut holds: BTreeMap<&str, BTreeMap<&Slot, &UnitRequest>> = BTreeMap::new();
        for node in plan.touched.keys() {
            holds.insert(node, BTreeMap::new());
        }
        for (request, node) in snapshot.state().held() {
            if let Some(h) = holds.get_mut(node) {
                h.insert(&request.slot, request);
            }
        }
        for p in &plan.released {
            if let Some(h) = holds.get_mut(p.node.as_str()) {
                h.remove(&p.request.slot);
            }
        }
        for p in &plan.placed {
            holds.entry(&p.node).or_default().insert(&p.request.slot, &p.request);
        }
        let mut txn = Txn::new();
        for (node, (node_rev, alloc_rev)) in &plan.touched {
            let units: Vec<UnitRequest> =
                holds.get(node.as_str()).into_iter().flatten().map(|(_, r)| (*r).clone()).collect();
            txn = txn
                .when(node_key(node), *node_rev)
                .when(alloc_key(node), *alloc_rev)
                .put(alloc_key(node), records::encode(&AllocRecord { units }));
        }
        Ok(self.store.txn(txn).await?.succeeded)
    }

    /// Plans `app` to hold exactly the slots of `want` (see [`Snapshot::plan_app`])
    /// and commits the plan, planning again while other schedulers win the race.
    /// Returns the committed plan; a refusal changes nothing.
    pub async fn place_app(&self, app: &AppName, want: &[UnitRequest]) -> Result<Plan, PlacementStoreError> {
        for _ in 0..ATTEMPTS {
            let snapshot = self.snapshot().await?;
            let plan = snapshot.plan_app(self.policy, app, want)?;
            if plan.is_empty() || self.commit(&snapshot, &plan).await? {
                return Ok(plan);
            }
            tracing::debug!(%app, "placement: a node changed under the plan; planning again");
        }
        Err(PlacementStoreError::Contended { attempts: ATTEMPTS })
    }

    /// Releases every slot of `app`.
    pub async fn release_app(&self, app: &AppName) -> Result<Plan, PlacementStoreError> {
        self.place_app(app, &[]).await
    }

    /// Moves the slots of node `node` (down) to other nodes, as far as they fit (see
    /// [`Snapshot::plan_lost`]); returns the committed plan.
    pub async fn replace_lost(&self, node: &str) -> Result<Plan, PlacementStoreError> {
        for _ in 0..ATTEMPTS {
            let snapshot = self.snapshot().await?;
            let plan = snapshot.plan_lost(self.policy, node);
            if plan.is_empty() || self.commit(&snapshot, &plan).await? {
                return Ok(plan);
            }
        }
        Err(PlacementStoreError::Contended { attempts: ATTEMPTS })
    }
}
