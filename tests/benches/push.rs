//! `deis push` of a 200 MiB image with several layers from the local Docker engine to
//! a `docker-registry` on loopback, next to `docker push` of the same image to the
//! same registry, in the same run; then the second push of the unchanged image with
//! each. Every run gets a fresh registry and deisd, so neither side finds blobs there.
//!
//! `PUSH_BENCH_RUNS=3 cargo bench --profile dev --all-features -p deis-e2e --bench push`
//! (`PUSH_BENCH_MIB`, default 200; needs `dockerd`, `docker-registry`, `busybox`).

use std::process::Command;
use std::time::Instant;

use deis_e2e::*;
use deis_test_support::docker::DockerEngine;
use deis_test_support::image::{busybox_layer, docker_archive};
use deis_test_support::registry::DockerRegistry;
use deis_test_support::service::Service;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// `mib` MiB of incompressible bytes in one file of a layer tar.
fn random_layer(name: &str, mib: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut data = Vec::with_capacity(mib << 20);
    while data.len() < mib << 20 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        data.extend_from_slice(&state.to_le_bytes());
    }
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, name, data.as_slice()).unwrap();
    b.into_inner().unwrap()
}

fn timed(mut c: Command) -> f64 {
    let start = Instant::now();
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{c:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    start.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let Some(engine) = DockerEngine::shared() else { return };
    let runs = env_or("PUSH_BENCH_RUNS", 3);
    let mib = env_or("PUSH_BENCH_MIB", 200);
    // Several layers of decreasing size (40, 25, 15, 10, 10 %), on busybox.
    let shares = [40, 25, 15, 10, 10];
    let mut layers = vec![busybox_layer()];
    layers.extend(
        shares.iter().enumerate().map(|(i, s)| random_layer(&format!("data{i}.bin"), mib * s / 100, i as u64 + 7)),
    );
    let bytes: usize = layers.iter().map(Vec::len).sum();
    let size_mib = bytes as f64 / f64::from(1 << 20);
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("image.tar");
    docker_archive(&archive, &layers, "sleep 1000");
    let out = engine.docker().arg("load").arg("-i").arg(&archive).output().unwrap();
    assert!(out.status.success(), "docker load: {}", String::from_utf8_lossy(&out.stderr));
    let image = "t:1";
    let docker_host = format!("unix://{}", engine.socket_path());

    let (mut deis_first, mut deis_again, mut docker_first, mut docker_again) = (vec![], vec![], vec![], vec![]);
    for run in 0..runs {
        let Some(registry) = DockerRegistry::start() else { return };
        let (_d, cli) = daemon_with_user(&["--registry", &registry.url()]);
        let app = format!("bench{run}");
        cli.run(&["create", &app]).ok();
        let push = || {
            let mut c = cli.command(&["push", image, "-a", &app]);
            c.env("DOCKER_HOST", &docker_host);
            c
        };
        deis_first.push(timed(push()));
        deis_again.push(timed(push()));
        let target = format!("{}/docker{run}:1", registry.addr());
        let out = engine.docker().args(["tag", image, &target]).output().unwrap();
        assert!(out.status.success());
        let docker_push = || {
            let mut c = engine.docker();
            c.args(["push", &target]);
            c
        };
        docker_first.push(timed(docker_push()));
        docker_again.push(timed(docker_push()));
        let _ = engine.docker().args(["rmi", &target]).output();
        eprintln!(
            "run {run}: deis push {:.2}s then {:.2}s; docker push {:.2}s then {:.2}s",
            deis_first[run], deis_again[run], docker_first[run], docker_again[run]
        );
    }
    let (df, da, kf, ka) = (median(deis_first), median(deis_again), median(docker_first), median(docker_again));
    println!("image: {size_mib:.0} MiB in {} layers; {runs} runs, medians", layers.len());
    println!(
        "first push   deis push {:7.1} MiB/s ({df:.2}s)   docker push {:7.1} MiB/s ({kf:.2}s)   ratio deis/docker {:.2}x",
        size_mib / df,
        size_mib / kf,
        kf / df
    );
    println!("second push  deis push {da:.2}s   docker push {ka:.2}s");
}
