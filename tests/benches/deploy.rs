//! Time from `deis deploy` to the first request served through the router.
//!
//! `cargo build --release --bins && cargo bench -p deis-e2e --bench deploy`
//! Starts a real `deisd` (release build), deploys the hello example app N times (a
//! fresh app each time) and prints min / median / max of: the upload+release step
//! (`deis deploy --no-wait`), and deploy-to-first-200 through the router. With
//! `DEPLOY_BENCH_DOCKER=1`, the same again in the same run on a second `deisd` with
//! `--scheduler docker` (a private dockerd, the Debian stack image built offline), and
//! there also `deis pull` of an image app (busybox's httpd serving a page, built offline
//! and loaded into the engine) to the first 200.

use std::time::{Duration, Instant};

use deis_e2e::*;
use deis_test_support::docker::DockerEngine;

fn main() {
    let runs: usize = std::env::var("DEPLOY_BENCH_RUNS").ok().and_then(|s| s.parse().ok()).unwrap_or(7);
    measure("local", &Deisd::start(), runs);
    if std::env::var("DEPLOY_BENCH_DOCKER").is_ok_and(|v| v == "1") {
        let engine = DockerEngine::start_private().expect("dockerd (apt-get install docker.io)");
        let cache = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
        let stack = engine.stack_image(cache).expect("debootstrap (apt-get install debootstrap)");
        let host = format!("unix://{}", engine.socket_path());
        let d = Deisd::start_with(&["--scheduler", "docker", "--docker-host", &host, "--stack-image", &stack]);
        measure("docker", &d, runs);
        let image = load_web_image(&engine, b'B');
        measure_with("docker", &d, runs, "imgbench", "deis pull (image app)", |cli, app| {
            cli.run(&["pull", &image, "-a", app, "--procfile", "web: httpd -f -p $PORT -h /www"]).ok();
        });
    }
}

/// Deploys the hello app `runs` times on `d`'s scheduler and prints the figures.
fn measure(scheduler: &str, d: &Deisd, runs: usize) {
    let dir = hello_app();
    measure_with(scheduler, d, runs, "bench", "deis deploy", |cli, app| {
        cli.run_in(&["deploy", "--no-wait", "-a", app], Some(dir.path())).ok();
    });
}

/// Runs `deploy` (which must not wait for the units) on `runs` fresh apps
/// `<prefix>N` of `d` and prints how long it took and how long to the first 200
/// (`prefix` also names the user registered for them).
fn measure_with(scheduler: &str, d: &Deisd, runs: usize, prefix: &str, what: &str, deploy: impl Fn(&Cli, &str)) {
    let cli = d.cli();
    cli.register(d, prefix);
    let (mut upload, mut first) = (vec![], vec![]);
    for i in 0..runs {
        let app = format!("{prefix}{i}");
        cli.run(&["create", &app]).ok();
        let t0 = Instant::now();
        deploy(&cli, &app);
        let t1 = Instant::now();
        wait_for(Duration::from_secs(60), "first 200", || d.get_app(&app, "/").ok().filter(|r| r.status == 200));
        let t2 = Instant::now();
        upload.push(t1 - t0);
        first.push(t2 - t0);
    }
    let show = |name: &str, v: &mut Vec<Duration>| {
        v.sort();
        println!(
            "{scheduler:<7} {name:<46} min {:>7.1} ms  median {:>7.1} ms  max {:>7.1} ms  (n={})",
            v[0].as_secs_f64() * 1e3,
            v[v.len() / 2].as_secs_f64() * 1e3,
            v[v.len() - 1].as_secs_f64() * 1e3,
            v.len()
        );
    };
    show(&format!("{what} (upload+release)"), &mut upload);
    show(&format!("{what} -> first 200 via router"), &mut first);
}
