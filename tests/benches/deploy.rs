//! Time from `deis deploy` to the first request served through the router.
//!
//! `cargo build --release --bins && cargo bench -p deis-e2e --bench deploy`
//! Starts a real `deisd` (release build), deploys the hello example app N times (a
//! fresh app each time) and prints min / median / max of: the upload+release step
//! (`deis deploy --no-wait`), and deploy-to-first-200 through the router.

use std::time::{Duration, Instant};

use deis_e2e::*;

fn main() {
    let runs: usize = std::env::var("DEPLOY_BENCH_RUNS").ok().and_then(|s| s.parse().ok()).unwrap_or(7);
    let d = Deisd::start();
    let cli = d.cli();
    cli.register(&d, "bench");
    let dir = hello_app();
    let (mut upload, mut first) = (vec![], vec![]);
    for i in 0..runs {
        let app = format!("bench{i}");
        cli.run(&["create", &app]).ok();
        let t0 = Instant::now();
        cli.run_in(&["deploy", "--no-wait", "-a", &app], Some(dir.path())).ok();
        let t1 = Instant::now();
        wait_for(Duration::from_secs(60), "first 200", || d.get_app(&app, "/").ok().filter(|r| r.status == 200));
        let t2 = Instant::now();
        upload.push(t1 - t0);
        first.push(t2 - t0);
    }
    let show = |name: &str, v: &mut Vec<Duration>| {
        v.sort();
        println!(
            "{name:<38} min {:>7.1} ms  median {:>7.1} ms  max {:>7.1} ms  (n={})",
            v[0].as_secs_f64() * 1e3,
            v[v.len() / 2].as_secs_f64() * 1e3,
            v[v.len() - 1].as_secs_f64() * 1e3,
            v.len()
        );
    };
    show("deis deploy --no-wait (upload+release)", &mut upload);
    show("deis deploy -> first 200 via router", &mut first);
}
