//! Time from `deis deploy` to the first request served through the router, on the local
//! backend and, in the same run, on the Docker backend.
//!
//! `cargo build --release --bins --all-features && cargo bench --all-features -p deis-e2e --bench deploy`
//! Starts a real `deisd` (release build), deploys the hello example app N times (a
//! fresh app each time) and prints min / median / max of: the upload+release step
//! (`deis deploy --no-wait`), and deploy-to-first-200 through the router. Then, when a
//! Docker engine answers or `dockerd` can be started (`DockerEngine::shared`), a second
//! `deisd` with `--scheduler docker` on it: `deis pull` of an image app (busybox's httpd
//! serving a page, built offline and loaded into the engine) N times, each to a fresh
//! app, timed the same way. `DEPLOY_BENCH_RUNS` (default 7) sets N.

use std::time::{Duration, Instant};

use deis_e2e::*;
use deis_test_support::docker::DockerEngine;
use deis_test_support::image::{busybox_layer, docker_archive, layer};
use deis_test_support::service::Service;

/// The image app's process: busybox's httpd serving `/www` on the unit's port.
const HTTPD: &str = "web: httpd -f -p $PORT -h /www";

fn show(name: &str, v: &mut [Duration]) {
    v.sort();
    println!(
        "{name:<52} min {:>7.1} ms  median {:>7.1} ms  max {:>7.1} ms  (n={})",
        v[0].as_secs_f64() * 1e3,
        v[v.len() / 2].as_secs_f64() * 1e3,
        v[v.len() - 1].as_secs_f64() * 1e3,
        v.len()
    );
}

/// `deploy` (which must not wait for the units) on apps `<prefix>0..runs`, each fresh;
/// prints how long `deploy` took and how long until the router's first 200.
fn measure(d: &Deisd, cli: &Cli, runs: usize, prefix: &str, what: &str, deploy: impl Fn(&str)) {
    let (mut upload, mut first) = (vec![], vec![]);
    for i in 0..runs {
        let app = format!("{prefix}{i}");
        cli.run(&["create", &app]).ok();
        let t0 = Instant::now();
        deploy(&app);
        let t1 = Instant::now();
        wait_for(Duration::from_secs(120), "first 200", || d.get_app(&app, "/").ok().filter(|r| r.status == 200));
        let t2 = Instant::now();
        upload.push(t1 - t0);
        first.push(t2 - t0);
    }
    show(&format!("{what}: upload+release"), &mut upload);
    show(&format!("{what}: to first 200 via router"), &mut first);
}

/// An image serving a 16-byte page, loaded into `engine`; returns its tag.
fn load_web_image(engine: &DockerEngine) -> String {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("web.tar");
    docker_archive(&archive, &[busybox_layer(), layer("www/index.html", 16, b'B')], "sleep 1000");
    let out = engine.docker().arg("load").arg("-i").arg(&archive).output().unwrap();
    assert!(out.status.success(), "docker load: {}", String::from_utf8_lossy(&out.stderr));
    let tag = "deis-bench/web:1";
    let out = engine.docker().args(["tag", "t:1", tag]).output().unwrap();
    assert!(out.status.success(), "docker tag: {}", String::from_utf8_lossy(&out.stderr));
    tag.into()
}

fn main() {
    let runs: usize = std::env::var("DEPLOY_BENCH_RUNS").ok().and_then(|s| s.parse().ok()).unwrap_or(7);
    let dir = hello_app();
    {
        let d = Deisd::start();
        let cli = d.cli();
        cli.register(&d, "bench");
        measure(&d, &cli, runs, "bench", "local, deis deploy --no-wait (source)", |app| {
            cli.run_in(&["deploy", "--no-wait", "-a", app], Some(dir.path())).ok();
        });
    }
    let Some(engine) = DockerEngine::shared() else { return };
    let image = load_web_image(engine);
    let host = format!("unix://{}", engine.socket_path());
    let d = Deisd::start_with(&["--scheduler", "docker", "--docker-host", &host]);
    let cli = d.cli();
    cli.register(&d, "bench");
    measure(&d, &cli, runs, "img", "docker, deis pull (image app)", |app| {
        cli.run(&["pull", &image, "-a", app, "--procfile", HTTPD]).ok();
    });
}
