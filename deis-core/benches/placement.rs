//! Placement simulator: 10,000 nodes, 1,000,000 units of mixed sizes, placed app by app
//! (snapshot, plan, commit, as a scheduler does) on one core by bin-pack and by spread,
//! next to a first-fit baseline (a scan of the nodes in name order, no index, no
//! scoring) in the same run. Prints placements per second and packing quality: nodes
//! used against a lower bound, and the cpu and memory left stranded on used nodes.
//!
//! `cargo bench -p deis-core --bench placement [-- NODES UNITS [SEED]]` (default 10000
//! 1000000 1).

use std::collections::BTreeMap;
use std::time::Instant;

use deis_core::model::limits::Resources;
use deis_core::model::{AppName, ProcessType};
use deis_core::scheduler::Capacity;
use deis_core::scheduler::placement::{Cluster, Health, NodeInfo, Plane, Planes, Policy, Slot, UnitRequest};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// SplitMix64: a small, fixed random sequence (the same for a seed on every machine).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// An index into `weights`, drawn by weight.
    fn pick(&mut self, weights: &[u64]) -> usize {
        let mut r = self.below(weights.iter().sum());
        for (i, w) in weights.iter().enumerate() {
            if r < *w {
                return i;
            }
            r -= w;
        }
        weights.len() - 1
    }
}

/// Node shapes (cores, GiB) and their shares; 1% control and 2% router nodes; zones
/// z0..z2; a quarter with `disk=ssd`.
fn nodes(n: usize, rng: &mut Rng) -> Vec<NodeInfo> {
    let shapes = [(4, 16), (8, 32), (16, 64)];
    (0..n)
        .map(|i| {
            let (cores, gib) = shapes[rng.pick(&[40, 40, 20])];
            let planes = match rng.below(100) {
                0 => Planes::of([Plane::Control]),
                1 | 2 => Planes::of([Plane::Router]),
                _ => Planes::DATA,
            };
            let mut node =
                NodeInfo::new(format!("node-{i:05}"), Capacity { cpu_millis: cores * 1000, memory_bytes: gib * GIB })
                    .label("zone", format!("z{}", rng.below(3)))
                    .planes(planes);
            if rng.below(4) == 0 {
                node = node.label("disk", "ssd");
            }
            node
        })
        .collect()
}

/// Unit sizes (cpu millicores, memory MiB) and their shares: many small units, some
/// cpu-heavy and some memory-heavy ones.
const SIZES: [(u64, u64); 6] = [(10, 64), (25, 128), (50, 256), (100, 384), (200, 128), (25, 1024)];
const SIZE_WEIGHTS: [u64; 6] = [30, 30, 20, 10, 5, 5];

/// Apps of 1 to 20 units in one or two process types, each type one size; 10% of the
/// apps select a zone, 5% `disk=ssd`. Returns each app's requests, `units` in all.
fn apps(units: usize, rng: &mut Rng) -> Vec<(AppName, Vec<UnitRequest>)> {
    let types = [ProcessType::new("web").unwrap(), ProcessType::new("worker").unwrap()];
    let mut apps = Vec::new();
    let mut left = units;
    while left > 0 {
        let app = AppName::new(format!("app-{}", apps.len())).unwrap();
        let mut selector = BTreeMap::new();
        match rng.below(100) {
            0..10 => {
                selector.insert("zone".to_string(), format!("z{}", rng.below(3)));
            }
            10..15 => {
                selector.insert("disk".to_string(), "ssd".to_string());
            }
            _ => {}
        }
        let mut want = Vec::new();
        for ty in &types[..1 + rng.below(2) as usize] {
            let (cpu, mem) = SIZES[rng.pick(&SIZE_WEIGHTS)];
            let count = (1 + rng.below(10) as usize).min(left);
            left -= count;
            for n in 1..=count {
                let slot = Slot::new(app.clone(), ty.clone(), n as u32);
                let r = Resources { cpu_millis: cpu, memory_bytes: mem * MIB };
                want.push(UnitRequest::new(slot, r).selector(selector.clone()));
            }
            if left == 0 {
                break;
            }
        }
        apps.push((app, want));
    }
    apps
}

/// Packing quality of one run.
struct Quality {
    used: usize,
    /// Of the used nodes' capacity: allocated, and free but unusable by the smallest unit.
    cpu_used: f64,
    mem_used: f64,
    cpu_stranded: f64,
    mem_stranded: f64,
}

/// Per node: capacity and allocated.
fn quality(nodes: &[(Capacity, Resources)]) -> Quality {
    let (min_cpu, min_mem) = (SIZES.iter().map(|s| s.0).min().unwrap(), SIZES.iter().map(|s| s.1).min().unwrap() * MIB);
    let (mut used, mut cap_cpu, mut cap_mem, mut a_cpu, mut a_mem, mut s_cpu, mut s_mem) =
        (0, 0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
    for (cap, a) in nodes.iter().filter(|(_, a)| a.cpu_millis > 0 || a.memory_bytes > 0) {
        used += 1;
        cap_cpu += cap.cpu_millis;
        cap_mem += cap.memory_bytes;
        a_cpu += a.cpu_millis;
        a_mem += a.memory_bytes;
        let (free_cpu, free_mem) = (cap.cpu_millis - a.cpu_millis, cap.memory_bytes - a.memory_bytes);
        if free_mem < min_mem {
            s_cpu += free_cpu;
        }
        if free_cpu < min_cpu {
            s_mem += free_mem;
        }
    }
    let pct = |a: u64, b: u64| 100.0 * a as f64 / b.max(1) as f64;
    Quality {
        used,
        cpu_used: pct(a_cpu, cap_cpu),
        mem_used: pct(a_mem, cap_mem),
        cpu_stranded: pct(s_cpu, cap_cpu),
        mem_stranded: pct(s_mem, cap_mem),
    }
}

/// Fewest data-plane nodes that could hold the total demand in each resource (the
/// biggest nodes first): no placement can use fewer.
fn lower_bound(nodes: &[NodeInfo], demand: Resources) -> usize {
    let data: Vec<&NodeInfo> = nodes.iter().filter(|n| n.planes.contains(Plane::Data)).collect();
    let need = |mut caps: Vec<u64>, total: u64| {
        caps.sort_unstable_by(|a, b| b.cmp(a));
        let mut sum = 0;
        caps.iter()
            .take_while(|c| {
                let short = sum < total;
                sum += **c;
                short
            })
            .count()
    };
    need(data.iter().map(|n| n.capacity.cpu_millis).collect(), demand.cpu_millis)
        .max(need(data.iter().map(|n| n.capacity.memory_bytes).collect(), demand.memory_bytes))
}

struct Run {
    name: &'static str,
    placed: usize,
    refused: usize,
    seconds: f64,
    quality: Quality,
}

fn engine(policy: Policy, seed: u64, nodes: &[NodeInfo], apps: &[(AppName, Vec<UnitRequest>)]) -> Run {
    let mut cluster = Cluster::new(seed, nodes.iter().map(|n| (n.clone(), Health::Up)));
    let (mut placed, mut refused) = (0, 0);
    let t = Instant::now();
    for (app, want) in apps {
        let plan = cluster.snapshot().plan_app(policy, app, want);
        match plan {
            Ok(plan) => {
                placed += plan.placed.len();
                cluster.commit(&plan).expect("nothing else commits");
            }
            Err(e) => {
                if refused == 0 {
                    eprintln!("{policy}: first refusal: {e}");
                }
                refused += want.len();
            }
        }
    }
    let seconds = t.elapsed().as_secs_f64();
    let per_node: Vec<(Capacity, Resources)> = cluster.state().nodes().map(|(n, _, a)| (n.capacity, a)).collect();
    let name = match policy {
        Policy::Binpack => "bin-pack",
        Policy::Spread => "spread",
    };
    Run { name, placed, refused, seconds, quality: quality(&per_node) }
}

/// The baseline: for each unit, the first node in name order of its plane, with its
/// labels and with room.
fn first_fit(nodes: &[NodeInfo], apps: &[(AppName, Vec<UnitRequest>)]) -> Run {
    let mut alloc = vec![Resources::default(); nodes.len()];
    let (mut placed, mut refused) = (0, 0);
    let t = Instant::now();
    for (_, want) in apps {
        for r in want {
            let found = nodes.iter().zip(alloc.iter()).position(|(n, a)| {
                n.planes.contains(r.plane) && n.carries(&r.selector) && n.capacity.fits(*a, r.resources)
            });
            match found {
                Some(i) => {
                    alloc[i].cpu_millis += r.resources.cpu_millis;
                    alloc[i].memory_bytes += r.resources.memory_bytes;
                    placed += 1;
                }
                None => refused += 1,
            }
        }
    }
    let seconds = t.elapsed().as_secs_f64();
    let per_node: Vec<(Capacity, Resources)> = nodes.iter().map(|n| n.capacity).zip(alloc).collect();
    Run { name: "first-fit (baseline)", placed, refused, seconds, quality: quality(&per_node) }
}

fn main() {
    let args: Vec<u64> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let n_nodes = args.first().copied().unwrap_or(10_000) as usize;
    let n_units = args.get(1).copied().unwrap_or(1_000_000) as usize;
    let seed = args.get(2).copied().unwrap_or(1);
    let mut rng = Rng(seed);
    let nodes = nodes(n_nodes, &mut rng);
    let apps = apps(n_units, &mut rng);
    let demand = apps.iter().flat_map(|(_, w)| w).fold(Resources::default(), |a, r| Resources {
        cpu_millis: a.cpu_millis + r.resources.cpu_millis,
        memory_bytes: a.memory_bytes + r.resources.memory_bytes,
    });
    let data: Vec<&NodeInfo> = nodes.iter().filter(|n| n.planes.contains(Plane::Data)).collect();
    let cap_cpu: u64 = data.iter().map(|n| n.capacity.cpu_millis).sum();
    let cap_mem: u64 = data.iter().map(|n| n.capacity.memory_bytes).sum();
    let bound = lower_bound(&nodes, demand);
    println!(
        "{n_nodes} nodes ({} data plane), {n_units} units in {} apps, seed {seed}; demand {:.1}% of data-plane cpu, \
         {:.1}% of memory; lower bound {bound} nodes",
        data.len(),
        apps.len(),
        100.0 * demand.cpu_millis as f64 / cap_cpu as f64,
        100.0 * demand.memory_bytes as f64 / cap_mem as f64,
    );
    println!();
    println!(
        "| policy | placements/s | placed | refused | nodes used | used / lower bound | cpu used | memory used | stranded cpu | stranded memory |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for run in [
        engine(Policy::Binpack, seed, &nodes, &apps),
        engine(Policy::Spread, seed, &nodes, &apps),
        first_fit(&nodes, &apps),
    ] {
        let q = &run.quality;
        println!(
            "| {} | {:.0} | {} | {} | {} | {:.3} | {:.1}% | {:.1}% | {:.2}% | {:.2}% |",
            run.name,
            run.placed as f64 / run.seconds,
            run.placed,
            run.refused,
            q.used,
            q.used as f64 / bound as f64,
            q.cpu_used,
            q.mem_used,
            q.cpu_stranded,
            q.mem_stranded,
        );
    }
}
