//! End-to-end on the Docker and Swarm schedulers: the real `deisd`, `deis` CLI and
//! router; private dockerds stand in for hosts (each its own socket, data root, exec
//! root and pidfile); images built offline and loaded with `docker load`. The swarm
//! tests are in [`swarm`]; both share the helpers here.

mod swarm;

use std::collections::BTreeSet;
use std::time::Duration;

use deis_e2e::*;
use deis_test_support::docker::DockerEngine;
use serde_json::Value;

/// busybox's httpd serving `/www` on the unit's port.
const HTTPD: &str = "web: httpd -f -p $PORT -h /www";
/// Long enough for a lost engine's grace period (30 s) and the units' restart.
const LOST: Duration = Duration::from_secs(150);

fn endpoint(engine: &DockerEngine) -> String {
    format!("unix://{}", engine.socket_path())
}

/// `deisd` with `--scheduler SCHEDULER` and one `--docker-host` per entry, user alice.
fn start(scheduler: &str, hosts: &[String]) -> (Deisd, Cli) {
    let mut flags = vec!["--scheduler".to_string(), scheduler.to_string()];
    for h in hosts {
        flags.extend(["--docker-host".to_string(), h.clone()]);
    }
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    daemon_with_user(&flags)
}

/// What the router answers for `app` once it answers 200.
fn body_through_router(d: &Deisd, app: &str) -> String {
    wait_for(T, &format!("{app} serving through the router"), || {
        d.get_app(app, "/index.html").ok().filter(|r| r.status == 200)
    })
    .body
    .trim()
    .to_string()
}

fn nodes_of(units: &[Value]) -> BTreeSet<String> {
    units.iter().map(|u| u["node"].as_str().unwrap_or_default().to_string()).collect()
}

/// Creates `app`, deploys `image` (serving 16 × `fill`) and waits until the router
/// serves it (v2); then gives its web units a `cpu` request (v3) and scales them to
/// `count`; returns them once up.
fn deploy_and_scale(d: &Deisd, cli: &Cli, app: &str, (image, fill): (&str, u8), cpu: &str, count: usize) -> Vec<Value> {
    cli.run(&["create", app]).ok();
    cli.run(&["pull", image, "-a", app, "--procfile", HTTPD]).ok();
    wait_units(cli, app, "web", 1, "v2");
    assert_eq!(body_through_router(d, app), (fill as char).to_string().repeat(16));
    cli.run(&["limits:set", "--cpu", &format!("web={cpu}"), "-a", app]).ok();
    cli.run(&["scale", &format!("web={count}"), "-a", app]).ok();
    wait_units(cli, app, "web", count, "v3")
}

/// Kills the container of `app`'s `web.1` (`docker ps --filter` `which`; of release
/// `release`: a container a rollout replaced may still be stopping) on whichever of
/// `engines` runs it, then waits until the unit is up again with its restart counted
/// and `count` web units up.
fn killed_web_1_comes_back(engines: &[&DockerEngine], which: &str, cli: &Cli, app: &str, release: &str, count: usize) {
    let unit = format!("{app}.web.1");
    let killed = engines
        .iter()
        .filter_map(|e| {
            let filters = ["--filter", which, "--filter", &format!("label=deis.release={release}")];
            let out = e.docker().args(["ps", "-q"]).args(filters).output().unwrap();
            let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
            (!id.is_empty()).then(|| {
                let out = e.docker().args(["kill", &id]).output().unwrap();
                (out.status.success(), String::from_utf8_lossy(&out.stderr).trim().to_string())
            })
        })
        .collect::<Vec<_>>();
    assert_eq!(killed, [(true, String::new())], "one container of {unit} killed");
    wait_for(T, &format!("{unit} back up, its restart counted"), || {
        let units = up_pods(cli, app, "web");
        let one = units.iter().find(|u| u["name"] == unit.as_str())?;
        (units.len() == count && one["restarts"].as_u64() >= Some(1)).then_some(())
    });
}

/// Deploys `image` to `app` while four threads send requests through the router: no
/// request may fail, and both the `old` body and the `new` must have answered. Returns
/// the `count` web units of `release`.
fn rollout_under_load(
    d: &Deisd,
    cli: &Cli,
    app: &str,
    image: &str,
    count: usize,
    release: &str,
    bodies: [u8; 2],
) -> Vec<Value> {
    let load = Load::start(d.router, &format!("{app}.{}", d.domain), 4);
    load.wait_more(100);
    cli.run(&["pull", image, "-a", app, "--procfile", HTTPD]).ok();
    let units = wait_units(cli, app, "web", count, release);
    load.wait_more(100);
    let served = load.served();
    let (seen, failures) = load.finish();
    eprintln!("rolling deploy of {count} units of {app} under load: {served} requests, {} failed", failures.len());
    assert!(failures.is_empty(), "{} of {served} requests failed during the deploy: {:?}", failures.len(), failures);
    let want = BTreeSet::from(bodies.map(|b| (b as char).to_string().repeat(16)));
    assert_eq!(seen, want, "both images must have answered");
    units
}

/// Two engines (and the first once more as a big control-plane node): an image app
/// deployed, given cpu requests, scaled over both data nodes and never onto the control
/// plane; scaling beyond capacity refused with nothing changed; a killed container
/// back; a new image rolled out under load through the router with no failed request;
/// one engine stopped, its units back on the other.
#[test]
fn an_image_app_spreads_over_two_engines_redeploys_without_a_failed_request_and_outlives_an_engine() {
    let Some(e1) = DockerEngine::start_private() else { return };
    let Some(e2) = DockerEngine::start_private() else { return };
    let (a, b) = (load_web_image(&e1, b'A'), load_web_image(&e1, b'B'));
    assert_eq!((load_web_image(&e2, b'A'), load_web_image(&e2, b'B')), (a.clone(), b.clone()));
    let hosts = [
        format!("{};name=n1;cpu=2000m;memory=2G", endpoint(&e1)),
        format!("{};name=n2;cpu=2000m;memory=2G", endpoint(&e2)),
        format!("{};name=ctl;cpu=64;memory=64G;planes=control", endpoint(&e1)),
    ];
    let (d, cli) = start("docker", &hosts);
    // 400m a unit: four fit (two a node), eleven do not.
    let units = deploy_and_scale(&d, &cli, "spread", (&a, b'A'), "400m", 4);
    assert_eq!(nodes_of(&units), BTreeSet::from(["n1".to_string(), "n2".to_string()]), "{units:?}");
    let r = cli.run(&["scale", "web=11", "-a", "spread"]);
    assert_ne!(r.code, 0, "scaling beyond capacity was accepted: {}", r.stdout);
    assert!(r.stderr.contains("capacity") && r.stderr.contains("cpu"), "{}", r.stderr);
    let after = up_pods(&cli, "spread", "web");
    let names = |u: &[Value]| u.iter().map(|u| u["name"].to_string()).collect::<BTreeSet<_>>();
    assert_eq!(names(&after), names(&units), "a refused scale changed the units");

    // A killed container comes back: the same unit, its restart counted.
    killed_web_1_comes_back(&[&e1, &e2], "label=deis.unit=spread.web.1", &cli, "spread", "v3", 4);

    // A new image under load: every request answered, by the old image or the new.
    let units = rollout_under_load(&d, &cli, "spread", &b, 4, "v4", [b'A', b'B']);
    assert_eq!(nodes_of(&units).len(), 2, "{units:?}");

    // n1's engine stops: after the grace period its units run on n2.
    drop(e1);
    let units = wait_for(LOST, "every unit up on n2", || {
        let units = up_pods(&cli, "spread", "web");
        (units.len() == 4 && nodes_of(&units) == BTreeSet::from(["n2".to_string()])).then_some(units)
    });
    assert_eq!(units.len(), 4);
    assert_eq!(body_through_router(&d, "spread"), "B".repeat(16));
    let nodes = cli.run(&["nodes", "--json"]).ok();
    assert!(nodes.contains("n1") && nodes.contains("down"), "n1 is not shown down: {nodes}");
}

/// Host `network=bridge`: units run on the engine's bridge with their `PORT` published
/// on the host, and the router reaches them there.
#[test]
fn a_bridge_networked_engine_publishes_the_units_ports() {
    let Some(engine) = DockerEngine::start_private_bridged() else { return };
    let image = load_web_image(&engine, b'W');
    let (d, cli) = start("docker", &[format!("{};name=br;network=bridge", endpoint(&engine))]);
    cli.run(&["create", "bridged"]).ok();
    cli.run(&["pull", &image, "-a", "bridged", "--procfile", HTTPD]).ok();
    cli.run(&["scale", "web=2", "-a", "bridged"]).ok();
    wait_units(&cli, "bridged", "web", 2, "v2");
    for _ in 0..4 {
        assert_eq!(body_through_router(&d, "bridged"), "W".repeat(16));
    }
    let out = engine
        .docker()
        .args(["ps", "--filter", "label=deis.app=bridged", "--format", "{{.Networks}} {{.Ports}}"])
        .output()
        .unwrap();
    let ps = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = ps.lines().collect();
    assert_eq!(lines.len(), 2, "{ps}");
    for line in lines {
        assert!(line.starts_with("bridge ") && line.contains("->"), "not bridged with a published port: {line}");
    }
}

/// `examples/apps/hello` committed onto the stack image at /app (`docker create`, `cp`,
/// `commit`: no build step needs a network); returns its tag.
fn hello_image(engine: &DockerEngine, stack: &str) -> String {
    let tag = "deis-test/hello:1";
    let docker = |args: &[&str]| {
        let out = engine.docker().args(args).output().unwrap();
        assert!(out.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let id = docker(&["create", stack, "true"]);
    let app = repo_root().join("examples/apps/hello");
    docker(&["cp", &format!("{}/.", app.display()), &format!("{id}:/app")]);
    docker(&["commit", "--change", "WORKDIR /app", &id, tag]);
    docker(&["rm", &id]);
    tag.to_string()
}

/// The units of the hello app `app` that answered 20 requests through the router (each
/// answer names its unit: `Hello from <unit> (<release>)`).
fn hello_units_answering(d: &Deisd, app: &str) -> BTreeSet<String> {
    (0..20)
        .map(|_| d.get_app(app, "/").map(|r| r.body).unwrap_or_default())
        .filter_map(|b| b.split(" from ").nth(1).and_then(|u| u.split(' ').next()).map(str::to_string))
        .collect()
}

/// `examples/apps/hello` deployed as a source build (`deis deploy`, app `fromsource`)
/// and as `image`, an image of it (`deis pull`, app `fromimage`), each scaled to two web
/// units; returns the source's directory and each app's units once up and both
/// answering through the router.
fn hello_from_source_and_as_an_image(
    d: &Deisd,
    cli: &Cli,
    image: &str,
) -> (tempfile::TempDir, [(&'static str, Vec<Value>); 2]) {
    let dir = deploy_hello(d, cli, "fromsource");
    cli.run(&["create", "fromimage"]).ok();
    cli.run(&["pull", image, "-a", "fromimage", "--procfile", "web: python3 web.py"]).ok();
    let deployed = ["fromsource", "fromimage"].map(|app| {
        cli.run(&["scale", "web=2", "-a", app]).ok();
        let units = wait_units(cli, app, "web", 2, "v2");
        let both = BTreeSet::from([format!("{app}.web.1"), format!("{app}.web.2")]);
        wait_for(T, &format!("both units of {app} answering through the router"), || {
            (hello_units_answering(d, app) == both).then_some(())
        });
        (app, units)
    });
    (dir, deployed)
}

/// `deis run` of `app` (hello, two web units): the app's config in a running unit's
/// container (its `DEIS_UNIT`, in `/app`); scaled to zero, in a one-off container (no
/// `DEIS_UNIT`, also in `/app`) that no engine of `engines` keeps afterwards; `networked`:
/// the one-off has a network interface besides `lo` (it is on the units' network).
fn deis_run_in_a_unit_then_a_one_off(cli: &Cli, app: &str, engines: &[&DockerEngine], networked: bool) {
    cli.run(&["config:set", "SOMECONFIG=from-the-engine", "-a", app]).ok();
    wait_units(cli, app, "web", 2, "v3");
    let run = ["run", "-a", app, "--", "sh", "-c", "echo $SOMECONFIG ${DEIS_UNIT:-one-off} $(pwd)"];
    let out = cli.run(&run).ok();
    let unit = format!("from-the-engine {app}.web.");
    assert!(out.starts_with(&unit) && out.trim_end().ends_with(" /app"), "{out}");
    // Running containers of `label`, or all of them (swarm keeps its tasks' stopped ones).
    let containers = |label: &str, all: bool| {
        let ids = engines.iter().map(|e| {
            let list = if all { "-aq" } else { "-q" };
            let out = e.docker().args(["ps", list, "--filter", &format!("label={label}")]).output().unwrap();
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        });
        ids.collect::<String>()
    };
    cli.run(&["scale", "web=0", "-a", app]).ok();
    wait_for(T, &format!("no unit or container of {app} left"), || {
        (pods(cli, app).is_empty() && containers(&format!("deis.app={app}"), false).is_empty()).then_some(())
    });
    assert_eq!(cli.run(&run).ok().trim(), "from-the-engine one-off /app");
    if networked {
        // On the units' network (host or bridge), not `none` (only `lo`).
        let links = cli.run(&["run", "-a", app, "--", "ls", "/sys/class/net"]).ok();
        assert!(links.split_whitespace().any(|l| l != "lo"), "a one-off session with no network: {links}");
    }
    wait_for(T, "the one-off container removed", || containers("deis.run=true", true).is_empty().then_some(()));
}

/// `examples/apps/hello` on two engines, as a source build (`deis deploy`, run on the
/// stack image) and as an image (`deis pull`): both reach `up`, answer through the
/// router, and scale over both engines; `deis run` of each runs in a unit's container,
/// or in a one-off container when none runs.
#[test]
fn the_hello_app_runs_from_source_and_as_an_image_over_two_engines() {
    let Some(e1) = DockerEngine::start_private() else { return };
    let Some(e2) = DockerEngine::start_private() else { return };
    let cache = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let Some(stack) = e1.stack_image(cache) else { return };
    assert_eq!(e2.stack_image(cache).as_deref(), Some(stack.as_str()));
    let image = hello_image(&e1, &stack);
    assert_eq!(hello_image(&e2, &stack), image);
    let hosts = [format!("{};name=n1", endpoint(&e1)), format!("{};name=n2", endpoint(&e2))];
    let mut flags = vec!["--scheduler", "docker", "--stack-image", &stack];
    for h in &hosts {
        flags.extend(["--docker-host", h.as_str()]);
    }
    let (d, cli) = daemon_with_user(&flags);

    let (_dir, deployed) = hello_from_source_and_as_an_image(&d, &cli, &image);
    for (app, units) in deployed {
        assert_eq!(nodes_of(&units).len(), 2, "{app}: both units on one engine: {units:?}");
    }
    // deis run where the units run, for both kinds of release.
    for app in ["fromsource", "fromimage"] {
        // Host networking: a one-off is on the engine's host network.
        deis_run_in_a_unit_then_a_one_off(&cli, app, &[&e1, &e2], true);
    }
}
