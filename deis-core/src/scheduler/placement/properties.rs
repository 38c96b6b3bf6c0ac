//! Placement: model-based property tests of the engine, and the store's commits.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use proptest::prelude::*;

use super::*;
use crate::model::AppName;
use crate::model::limits::Resources;
use crate::store::RedbStore;
use crate::testing::{app_name, process_type};
use crate::time::Timestamp;

const GIB: u64 = 1 << 30;

fn cap(cpu: u64, mem_gib: u64) -> Capacity {
    Capacity { cpu_millis: cpu, memory_bytes: mem_gib * GIB }
}

fn res(cpu: u64, mem_mib: u64) -> Resources {
    Resources { cpu_millis: cpu, memory_bytes: mem_mib << 20 }
}

fn want(app: &AppName, ty: &str, n: u32, r: Resources, selector: &[(&str, &str)]) -> Vec<UnitRequest> {
    let selector: BTreeMap<String, String> = selector.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    (1..=n)
        .map(|i| UnitRequest::new(Slot::new(app.clone(), process_type(ty), i), r).selector(selector.clone()))
        .collect()
}

fn down() -> Health {
    Health::Down { since: Timestamp::from_unix_seconds(1) }
}

/// Every invariant a committed state must hold.
fn check(state: &ClusterState) -> Result<(), String> {
    let nodes: BTreeMap<&str, (&NodeInfo, Health, Resources)> =
        state.nodes().map(|(info, h, a)| (info.name.as_str(), (info, h, a))).collect();
    let mut sums: BTreeMap<&str, Resources> = BTreeMap::new();
    for (req, node) in state.held() {
        let (info, _, _) = nodes[node];
        if !info.planes.contains(req.plane) {
            return Err(format!("{} on {node} of planes {}", req.slot, info.planes));
        }
        if !info.carries(&req.selector) {
            return Err(format!("{} on {node} without its labels {:?}", req.slot, req.selector));
        }
        let s = sums.entry(node).or_default();
        s.cpu_millis += req.resources.cpu_millis;
        s.memory_bytes += req.resources.memory_bytes;
    }
    for (name, (info, _, allocated)) in &nodes {
        let sum = sums.get(name).copied().unwrap_or_default();
        if sum != *allocated {
            return Err(format!("{name}: allocated {allocated:?}, slots sum to {sum:?}"));
        }
        if !info.capacity.fits(Resources::default(), *allocated) {
            return Err(format!("{name} overcommitted: {allocated:?} of {:?}", info.capacity));
        }
    }
    Ok(())
}

/// One step of a random history.
#[derive(Debug, Clone)]
enum Step {
    /// Give app `app` `count` units of type `ty` of `r`, selecting zone `zone`.
    Apply {
        app: u8,
        ty: u8,
        count: u32,
        r: Resources,
        zone: Option<u8>,
    },
    Down(u8),
    Up(u8),
    Lost(u8),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0u8..6, 0u8..2, 0u32..6, 0u64..1500, 0u64..3000, proptest::option::weighted(0.3, 0u8..3))
            .prop_map(|(app, ty, count, cpu, mem, zone)| Step::Apply { app, ty, count, r: res(cpu, mem), zone }),
        1 => (0u8..8).prop_map(Step::Down),
        1 => (0u8..8).prop_map(Step::Up),
        1 => (0u8..8).prop_map(Step::Lost),
    ]
}

/// Nodes: random sizes, zones and planes (a few control and router nodes).
fn nodes() -> impl Strategy<Value = Vec<NodeInfo>> {
    proptest::collection::vec((1u64..5, 1u64..9, 0u8..3, 0u8..6), 1..8).prop_map(|specs| {
        specs
            .into_iter()
            .enumerate()
            .map(|(i, (cores, gib, zone, role))| {
                let planes = match role {
                    0 => Planes::of([Plane::Control]),
                    1 => Planes::of([Plane::Router]),
                    2 => Planes::of([Plane::Control, Plane::Data]),
                    _ => Planes::DATA,
                };
                NodeInfo::new(format!("n{i}"), cap(cores * 1000, gib)).label("zone", format!("z{zone}")).planes(planes)
            })
            .collect()
    })
}

/// Runs `steps` on a fresh cluster; returns the final assignment and checks the
/// invariants after every commit.
fn run(seed: u64, policy: Policy, nodes: &[NodeInfo], steps: &[Step]) -> Result<Vec<(String, String)>, String> {
    let mut cluster = Cluster::new(seed, nodes.iter().map(|n| (n.clone(), Health::Up)));
    let name = |i: u8| format!("n{}", usize::from(i) % nodes.len());
    for s in steps {
        match s {
            Step::Apply { app, ty, count, r, zone } => {
                let app = app_name(&format!("app{app}"));
                let ty = ["web", "worker"][usize::from(*ty)];
                let zone = zone.map(|z| format!("z{z}"));
                let sel: Vec<(&str, &str)> = zone.iter().map(|z| ("zone", z.as_str())).collect();
                let before = cluster.state().clone();
                match cluster.snapshot().plan_app(policy, &app, &want(&app, ty, *count, *r, &sel)) {
                    Ok(plan) => {
                        for p in &plan.placed {
                            let node = cluster.state().nodes().find(|(i, _, _)| i.name == p.node).unwrap();
                            if !node.1.is_up() {
                                return Err(format!("{} placed on {} which is down", p.request.slot, p.node));
                            }
                        }
                        cluster.commit(&plan).map_err(|e| e.to_string())?;
                    }
                    // A refusal changes nothing.
                    Err(_) => {
                        if cluster.state().held().ne(before.held()) {
                            return Err("a refused plan changed the state".into());
                        }
                    }
                }
            }
            Step::Down(i) => {
                cluster.set_health(&name(*i), down());
            }
            Step::Up(i) => {
                cluster.set_health(&name(*i), Health::Up);
            }
            Step::Lost(i) => {
                let node = name(*i);
                if cluster.state().nodes().any(|(n, h, _)| n.name == node && !h.is_up()) {
                    let plan = cluster.snapshot().plan_lost(policy, &node);
                    cluster.commit(&plan).map_err(|e| e.to_string())?;
                    let left = cluster.state().held().filter(|(_, n)| *n == node).count();
                    if left != plan.unplaced.len() {
                        return Err(format!("{left} slots left on lost {node}, {} unplaced", plan.unplaced.len()));
                    }
                }
            }
        }
        check(cluster.state())?;
    }
    Ok(cluster.state().held().map(|(r, n)| (r.slot.to_string(), n.to_string())).collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Whatever happens, no node holds more than it has, every unit is on a node of
    /// its plane carrying its labels, nothing lands on a down node, a refusal changes
    /// nothing, and a lost node keeps only what fits nowhere else.
    #[test]
    fn never_overcommits_nor_places_on_a_wrong_plane(
        nodes in nodes(),
        steps in proptest::collection::vec(step(), 1..40),
        spread in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let policy = if spread { Policy::Spread } else { Policy::Binpack };
        run(seed, policy, &nodes, &steps).map_err(TestCaseError::fail)?;
    }

    /// The same seed, nodes and history give the same placements.
    #[test]
    fn deterministic_for_a_seed(
        nodes in nodes(),
        steps in proptest::collection::vec(step(), 1..25),
        seed in any::<u64>(),
    ) {
        for policy in [Policy::Binpack, Policy::Spread] {
            let a = run(seed, policy, &nodes, &steps).map_err(TestCaseError::fail)?;
            let b = run(seed, policy, &nodes, &steps).map_err(TestCaseError::fail)?;
            prop_assert_eq!(a, b);
        }
    }

    /// Two plans from one snapshot: the second to commit is refused when they share a
    /// node, and the state never exceeds a node.
    #[test]
    fn concurrent_plans_never_overcommit(nodes in nodes(), seed in any::<u64>(), cpu in 100u64..3000) {
        let mut cluster = Cluster::new(seed, nodes.iter().map(|n| (n.clone(), Health::Up)));
        let snapshot = cluster.snapshot();
        let (a, b) = (app_name("a"), app_name("b"));
        let plan_a = snapshot.plan_app(Policy::Binpack, &a, &want(&a, "web", 3, res(cpu, 0), &[]));
        let plan_b = snapshot.plan_app(Policy::Binpack, &b, &want(&b, "web", 3, res(cpu, 0), &[]));
        if let (Ok(pa), Ok(pb)) = (plan_a, plan_b) {
            cluster.commit(&pa).unwrap();
            let shared = pa.touched.keys().any(|n| pb.touched.contains_key(n));
            let second = cluster.commit(&pb);
            prop_assert_eq!(second.is_err(), shared, "{:?}", second);
            check(cluster.state()).map_err(TestCaseError::fail)?;
        }
    }
}

fn four_nodes() -> Cluster {
    Cluster::new(
        1,
        [
            (NodeInfo::new("ctl", cap(8000, 16)).planes(Planes::of([Plane::Control])), Health::Up),
            (NodeInfo::new("edge", cap(8000, 16)).planes(Planes::of([Plane::Router])), Health::Up),
            (NodeInfo::new("d1", cap(2000, 4)).label("zone", "a"), Health::Up),
            (NodeInfo::new("d2", cap(2000, 4)).label("zone", "b"), Health::Up),
        ],
    )
}

#[test]
fn units_of_a_type_spread_over_nodes_and_bin_pack_fills_before_using_more() {
    let mut c = four_nodes();
    let app = app_name("hello");
    let plan = c.snapshot().plan_app(Policy::Binpack, &app, &want(&app, "web", 2, res(100, 64), &[])).unwrap();
    c.commit(&plan).unwrap();
    let nodes: BTreeSet<&str> = c.state().held().map(|(_, n)| n).collect();
    assert_eq!(nodes, BTreeSet::from(["d1", "d2"]), "two web units, two data nodes, none on ctl or edge");
    // Four workers of another app: two per node (spread cap 2), even under bin-pack.
    let other = app_name("other");
    let plan = c.snapshot().plan_app(Policy::Binpack, &other, &want(&other, "worker", 4, res(100, 64), &[])).unwrap();
    c.commit(&plan).unwrap();
    for node in ["d1", "d2"] {
        assert_eq!(c.state().slots_of(&other).filter(|(_, n)| *n == node).count(), 2, "{node}");
    }
    // Scaling up keeps the placed units where they are.
    let before: Vec<(Slot, String)> = c.state().slots_of(&app).map(|(r, n)| (r.slot.clone(), n.to_string())).collect();
    let plan = c.snapshot().plan_app(Policy::Binpack, &app, &want(&app, "web", 3, res(100, 64), &[])).unwrap();
    assert_eq!(plan.placed.len(), 1, "{plan:?}");
    assert!(plan.released.is_empty());
    c.commit(&plan).unwrap();
    for (slot, node) in before {
        assert_eq!(c.state().node_of(&slot), Some(node.as_str()));
    }
}

#[test]
fn bin_pack_fills_nodes_in_use_first_and_keeps_labelled_nodes_for_units_that_ask() {
    let mut c = Cluster::new(
        3,
        [
            (NodeInfo::new("small", cap(1000, 2)), Health::Up),
            (NodeInfo::new("plain", cap(2000, 4)), Health::Up),
            (NodeInfo::new("ssd", cap(2000, 4)).label("disk", "ssd"), Health::Up),
        ],
    );
    let mut place = |app: &str, ty: &str, n: u32, r: Resources, sel: &[(&str, &str)]| {
        let app = app_name(app);
        let plan = c.snapshot().plan_app(Policy::Binpack, &app, &want(&app, ty, n, r, sel)).unwrap();
        c.commit(&plan).unwrap();
        plan.placed.iter().map(|p| p.node.clone()).collect::<Vec<_>>()
    };
    // Empty nodes: the biggest, and of equal size the one without labels nobody asked for.
    assert_eq!(place("a", "web", 1, res(500, 512), &[]), ["plain"]);
    // In use beats empty.
    assert_eq!(place("b", "web", 1, res(500, 512), &[]), ["plain"]);
    // A unit asking for ssd gets the ssd node.
    assert_eq!(place("c", "web", 1, res(500, 512), &[("disk", "ssd")]), ["ssd"]);
    // plain fills up; then the node in use (ssd, though labelled) beats the empty small one.
    assert_eq!(place("d", "web", 1, res(1000, 512), &[]), ["plain"]);
    assert_eq!(place("e", "web", 1, res(1000, 512), &[]), ["ssd"]);
    check(c.state()).unwrap();
}

#[test]
fn tags_select_nodes_and_a_tag_no_node_carries_is_refused_clearly() {
    let mut c = four_nodes();
    let app = app_name("hello");
    let plan =
        c.snapshot().plan_app(Policy::Spread, &app, &want(&app, "web", 3, res(100, 64), &[("zone", "b")])).unwrap();
    c.commit(&plan).unwrap();
    assert!(c.state().held().all(|(_, n)| n == "d2"));

    let e = c.snapshot().plan_app(Policy::Spread, &app, &want(&app, "web", 1, res(0, 0), &[("zone", "mars")]));
    assert_eq!(
        e.unwrap_err().to_string(),
        "no node carries the label zone=mars (from the app's tags) (nodes carry zone=a, zone=b); \
         change the tag (deis tags:set / tags:unset) or label a node"
    );
    // Carried, but only by a node of another plane.
    let c2 = Cluster::new(
        0,
        [(NodeInfo::new("ctl", cap(1000, 1)).label("gpu", "yes").planes(Planes::of([Plane::Control])), Health::Up)],
    );
    let e =
        c2.snapshot().plan_app(Policy::Spread, &app, &want(&app, "web", 1, res(0, 0), &[("gpu", "yes")])).unwrap_err();
    assert_eq!(
        e.to_string(),
        "hello.web.1: no node of the data plane carries gpu=yes; nodes that do serve other planes: ctl (control)"
    );
}

#[test]
fn capacity_refusals_say_what_is_missing() {
    let c = four_nodes();
    let app = app_name("big");
    let e = c.snapshot().plan_app(Policy::Binpack, &app, &want(&app, "web", 3, res(1500, 512), &[])).unwrap_err();
    assert_eq!(
        e.to_string(),
        "big.web.3 needs 1500m cpu and 512M memory: none of the 2 up nodes of the data plane has that free \
         (most free: d1, 500m cpu and 3584M memory free). Scale down (deis ps:scale), lower the limits \
         (deis limits:set), or add nodes"
    );
    let mut c = four_nodes();
    c.set_health("d1", down());
    c.set_health("d2", down());
    let e = c.snapshot().plan_app(Policy::Binpack, &app, &want(&app, "web", 1, res(0, 0), &[])).unwrap_err();
    assert!(e.to_string().contains("no node of the data plane is up (2 more down)"), "{e}");
}

#[test]
fn a_lost_node_s_units_move_and_what_fits_nowhere_stays() {
    let mut c = four_nodes();
    let app = app_name("hello");
    let plan = c.snapshot().plan_app(Policy::Spread, &app, &want(&app, "web", 2, res(1000, 64), &[])).unwrap();
    c.commit(&plan).unwrap();
    let big = app_name("big");
    let plan = c.snapshot().plan_app(Policy::Spread, &big, &want(&big, "web", 1, res(500, 3 << 10), &[])).unwrap();
    c.commit(&plan).unwrap();
    let lost = c.state().node_of(&Slot::new(big.clone(), process_type("web"), 1)).unwrap().to_string();
    let other = if lost == "d1" { "d2" } else { "d1" };
    c.set_health(&lost, down());
    let plan = c.snapshot().plan_lost(Policy::Spread, &lost);
    c.commit(&plan).unwrap();
    // The other node has room for one of the two (the bigger is tried first): it
    // moves, the other stays where it was, listed as unplaced.
    assert_eq!(plan.placed.len(), 1, "{plan:?}");
    assert_eq!(plan.unplaced.len(), 1, "{plan:?}");
    assert_eq!(plan.placed[0].request.slot.app, big);
    assert_eq!(plan.placed[0].node, other);
    assert_eq!(c.state().node_of(&plan.unplaced[0].slot), Some(lost.as_str()));
    check(c.state()).unwrap();
    // A plan for an app with a unit on a down node moves that unit too: hello's does
    // not fit anywhere now.
    assert!(c.snapshot().plan_app(Policy::Spread, &app, &want(&app, "web", 2, res(1000, 64), &[])).is_err());
}

#[test]
fn a_changed_request_moves_a_slot_through_release_and_place() {
    let mut c = four_nodes();
    let app = app_name("hello");
    let plan = c.snapshot().plan_app(Policy::Binpack, &app, &want(&app, "web", 1, res(1500, 64), &[])).unwrap();
    c.commit(&plan).unwrap();
    // Bigger: it may stay on the same node, because the plan frees its old share first.
    let plan = c.snapshot().plan_app(Policy::Binpack, &app, &want(&app, "web", 1, res(2000, 64), &[])).unwrap();
    assert_eq!((plan.released.len(), plan.placed.len()), (1, 1));
    c.commit(&plan).unwrap();
    check(c.state()).unwrap();
    // Scaling to zero releases.
    let plan = c.snapshot().plan_app(Policy::Binpack, &app, &[]).unwrap();
    c.commit(&plan).unwrap();
    assert_eq!(c.state().held().count(), 0);
    assert!(c.state().nodes().all(|(_, _, a)| a == Resources::default()));
}

async fn store_with_nodes(n: usize, cpu: u64) -> (tempfile::TempDir, Arc<dyn crate::Store>) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn crate::Store> = RedbStore::open(&dir.path().join("s.redb")).await.unwrap();
    let placement = PlacementStore::new(store.clone(), Policy::Binpack);
    for i in 0..n {
        placement.register(NodeInfo::new(format!("n{i}"), cap(cpu, 64))).await.unwrap();
    }
    (dir, store)
}

#[tokio::test]
async fn schedulers_sharing_a_store_never_overcommit_a_node() {
    // 3 nodes of 1000m, 8 schedulers placing 8 apps of 2 × 200m at once: 16 units
    // want 3200m, 3000m exist; exactly 15 fit, however the races go.
    let (_dir, store) = store_with_nodes(3, 1000).await;
    let mut tasks = vec![];
    for i in 0..8 {
        let placement = PlacementStore::new(store.clone(), if i % 2 == 0 { Policy::Binpack } else { Policy::Spread });
        tasks.push(tokio::spawn(async move {
            let app = app_name(&format!("app{i}"));
            placement.place_app(&app, &want(&app, "web", 2, res(200, 0), &[])).await
        }));
    }
    let mut placed = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(plan) => placed += plan.placed.len(),
            Err(PlacementStoreError::Placement(PlacementError::Capacity { .. })) => {}
            Err(e) => panic!("{e}"),
        }
    }
    let snapshot = PlacementStore::new(store.clone(), Policy::Binpack).snapshot().await.unwrap();
    check(snapshot.state()).unwrap();
    assert_eq!(placed, snapshot.state().held().count());
    // Whole apps only: 7 apps of 2 fit in 3000m (14 units), the 8th is refused.
    assert_eq!(placed, 14);
}

#[tokio::test]
async fn the_store_keeps_placements_health_and_revisions() {
    let (_dir, store) = store_with_nodes(2, 1000).await;
    let placement = PlacementStore::new(store.clone(), Policy::Spread);
    let app = app_name("hello");
    let plan = placement.place_app(&app, &want(&app, "web", 2, res(300, 0), &[])).await.unwrap();
    assert_eq!(plan.placed.len(), 2);
    // Applying the same again changes nothing and writes nothing.
    let rev = store.list("placement/").await.unwrap().revision;
    assert!(placement.place_app(&app, &want(&app, "web", 2, res(300, 0), &[])).await.unwrap().is_empty());
    assert_eq!(store.list("placement/").await.unwrap().revision, rev);

    // A stale plan is refused by the store.
    let stale = placement.snapshot().await.unwrap();
    let other = app_name("other");
    let stale_plan = stale.plan_app(Policy::Spread, &other, &want(&other, "web", 1, res(400, 0), &[])).unwrap();
    placement.place_app(&other, &want(&other, "web", 1, res(400, 0), &[])).await.unwrap();
    assert!(!placement.commit(&stale, &stale_plan).await.unwrap());

    // Down: its unit of hello moves to the other node (after the grace period, the
    // caller decides when), and the record remembers since when it is down.
    let snap = placement.snapshot().await.unwrap();
    let lost = snap.state().node_of(&Slot::new(app.clone(), process_type("web"), 1)).unwrap().to_string();
    let since = Timestamp::from_unix_seconds(100);
    placement.set_health(&lost, Health::Down { since }).await.unwrap();
    placement.set_health(&lost, Health::Down { since: Timestamp::from_unix_seconds(200) }).await.unwrap();
    let record = placement.nodes().await.unwrap().into_iter().find(|r| r.info.name == lost).unwrap();
    assert_eq!(record.health, Health::Down { since });
    let plan = placement.replace_lost(&lost).await.unwrap();
    let moved: usize = plan.placed.len();
    assert!(moved >= 1, "{plan:?}");
    let snap = placement.snapshot().await.unwrap();
    check(snap.state()).unwrap();
    assert!(snap.state().slots_of(&app).all(|(_, n)| n != lost));

    // Releasing an app frees its share.
    placement.release_app(&app).await.unwrap();
    let snap = placement.snapshot().await.unwrap();
    assert_eq!(snap.state().slots_of(&app).count(), 0);
}
