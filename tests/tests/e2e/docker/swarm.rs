//! `deisd --scheduler swarm` on real swarms (`docker swarm init` on loopback; a worker
//! is a second private dockerd joined to it): image and source apps deployed, scaled,
//! refused beyond capacity, healed, rolled out under load, kept off control-plane nodes
//! and moved off a stopped node; their logs through the syslog log driver; `deis run`.

use std::collections::BTreeSet;

use deis_e2e::*;
use deis_test_support::docker::DockerSwarm;
use deis_test_support::registry::DockerRegistry;
use deis_test_support::service::Service;
use serde_json::Value;

use super::{
    HTTPD, LOST, body_through_router, deis_run_in_a_unit_then_a_one_off, deploy_and_scale,
    hello_from_source_and_as_an_image, hello_image, hello_units_answering, killed_web_1_comes_back, nodes_of,
    rollout_under_load, start,
};

/// On a one-node swarm: an image app deployed and scaled, every unit answering on its
/// own and through the router; scaling beyond capacity refused with nothing changed (the
/// units, the service's replicas); a killed container back; a new image rolled out under
/// load with no failed request.
#[test]
fn an_image_app_on_swarm_deploys_scales_and_rolls_out_without_a_failed_request() {
    let Some(swarm) = DockerSwarm::start() else { return };
    let (a, b) = (load_web_image(swarm.engine(), b'S'), load_web_image(swarm.engine(), b'T'));
    let (d, cli) = start("swarm", &[swarm.endpoint()]);
    let units = deploy_and_scale(&d, &cli, "swarmed", (&a, b'S'), "100m", 3);
    assert!(units.iter().all(|u| !u["node"].as_str().unwrap_or_default().is_empty()), "{units:?}");
    for u in &units {
        let addr: std::net::SocketAddr = u["address"].as_str().unwrap_or_default().parse().expect("a unit address");
        let r = deis_test_support::http::Request::get("/index.html").send(addr).unwrap();
        assert_eq!(r.body.trim(), "S".repeat(16), "{u}");
    }

    // 99 units of 100m: more cpu than this machine has.
    let before = placed(&up_pods(&cli, "swarmed", "web"));
    let r = cli.run(&["scale", "web=99", "-a", "swarmed"]);
    assert_ne!(r.code, 0, "scaling beyond capacity was accepted: {}", r.stdout);
    assert!(r.stderr.contains("capacity") && r.stderr.contains("cpu"), "{}", r.stderr);
    assert_eq!(placed(&up_pods(&cli, "swarmed", "web")), before, "a refused scale changed the units");
    let replicas = ["service", "inspect", "swarmed_web", "--format", "{{.Spec.Mode.Replicated.Replicas}}"];
    let out = swarm.engine().docker().args(replicas).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "3", "a refused scale changed the service");

    // A killed container comes back in its slot, its restart counted.
    killed_web_1_comes_back(&[swarm.engine()], "name=swarmed_web.1.", &cli, "swarmed", "v3", 3);

    // A new image under load: every request answered, by the old image or the new.
    rollout_under_load(&d, &cli, "swarmed", &b, 3, "v4", [b'S', b'T']);
    cli.run(&["destroy", "-a", "swarmed", "--confirm", "swarmed"]).ok();
}

/// What `deis ps` says of where and since when `units` run (not their usage figures).
fn placed(units: &[Value]) -> Vec<String> {
    let fields = ["name", "state", "release", "node", "address", "started", "restarts"];
    units.iter().map(|u| fields.map(|f| u[f].to_string()).join(" ")).collect()
}

/// The name `deis nodes` gives the node labelled `deis.planes=control`, once shown.
fn control_plane_node(cli: &Cli) -> String {
    wait_for(T, "a node shown on the control plane", || {
        let nodes = cli.run(&["nodes", "--json"]).json();
        let nodes = nodes.as_array()?.clone();
        let control = nodes.iter().find(|n| n["labels"]["deis.planes"] == "control")?;
        control["name"].as_str().map(str::to_string)
    })
}

/// The ids of `app`'s containers on the engine of `docker`.
fn containers_of(docker: std::process::Command, app: &str) -> String {
    let mut docker = docker;
    let out = docker.args(["ps", "-q", "--filter", &format!("label=deis.app={app}")]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// On a two-node swarm: units spread over both nodes; the manager made a control-plane
/// node, its units move to the worker and a scale up puts none there; back on the data
/// plane, the worker's engine stopped, every unit comes back on the manager.
#[test]
fn a_two_node_swarm_spreads_units_keeps_them_off_the_control_plane_and_replaces_those_of_a_stopped_node() {
    let Some(swarm) = DockerSwarm::start() else { return };
    let Some(mut worker) = swarm.join_worker() else { return };
    let image = load_web_image(swarm.engine(), b'R');
    assert_eq!(load_web_image(worker.engine(), b'R'), image);
    let (d, cli) = start("swarm", &[swarm.endpoint()]);
    let nodes = wait_for(T, "two ready nodes", || {
        let nodes = cli.run(&["nodes", "--json"]).json();
        let n = nodes.as_array().map_or(0, Vec::len);
        (n == 2).then_some(nodes)
    });
    cli.run(&["create", "pair"]).ok();
    cli.run(&["pull", &image, "-a", "pair", "--procfile", HTTPD]).ok();
    cli.run(&["scale", "web=4", "-a", "pair"]).ok();
    let units = wait_units(&cli, "pair", "web", 4, "v2");
    assert_eq!(nodes_of(&units).len(), 2, "not spread over {nodes}: {units:?}");
    assert_eq!(body_through_router(&d, "pair"), "R".repeat(16));

    // The manager joins the control plane: swarm moves its units off it, and a scale
    // up places none there.
    swarm.update_node(swarm.engine(), &["--label-add", "deis.planes=control"]);
    let manager = control_plane_node(&cli);
    let on_worker = |units: &[Value], n: usize| {
        let nodes = nodes_of(units);
        units.len() == n && nodes.len() == 1 && !nodes.contains(&manager)
    };
    wait_for(T, "every unit up on the worker", || {
        let units = up_pods(&cli, "pair", "web");
        on_worker(&units, 4).then_some(())
    });
    cli.run(&["scale", "web=5", "-a", "pair"]).ok();
    let units = wait_units(&cli, "pair", "web", 5, "v2");
    assert!(on_worker(&units, 5), "a unit on the control-plane node {manager}: {units:?}");
    assert_eq!(containers_of(swarm.engine().docker(), "pair"), "", "app containers on the control-plane node");
    assert_eq!(body_through_router(&d, "pair"), "R".repeat(16));

    // Back on the data plane; the worker's engine stops: its units come back on the
    // manager.
    swarm.update_node(swarm.engine(), &["--label-rm", "deis.planes"]);
    worker.stop();
    wait_for(LOST, "every unit up on the manager", || {
        let units = up_pods(&cli, "pair", "web");
        (units.len() == 5 && nodes_of(&units) == BTreeSet::from([manager.clone()])).then_some(())
    });
    for _ in 0..4 {
        assert_eq!(body_through_router(&d, "pair"), "R".repeat(16));
    }
}

/// On a two-node swarm with a platform registry: the source build of hello, committed
/// on the manager's engine, is pushed to the registry and every node pulls it by digest:
/// its units run and answer on both nodes.
#[test]
fn a_source_build_on_a_two_node_swarm_is_published_and_runs_on_both_nodes() {
    let Some(swarm) = DockerSwarm::start() else { return };
    let Some(_worker) = swarm.join_worker() else { return };
    let Some(registry) = DockerRegistry::start() else { return };
    let cache = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let Some(stack) = swarm.engine().stack_image(cache) else { return };
    let (manager, url) = (swarm.endpoint(), registry.url());
    let flags = ["--scheduler", "swarm", "--stack-image", &stack, "--docker-host", &manager, "--registry", &url];
    let (d, cli) = daemon_with_user(&flags);
    wait_for(T, "two ready nodes", || {
        let nodes = cli.run(&["nodes", "--json"]).json();
        (nodes.as_array().map_or(0, Vec::len) == 2).then_some(())
    });

    let _dir = deploy_hello(&d, &cli, "spread");
    cli.run(&["scale", "web=4", "-a", "spread"]).ok();
    let units = wait_units(&cli, "spread", "web", 4, "v2");
    assert_eq!(nodes_of(&units).len(), 2, "not on both nodes: {units:?}");
    let format = "{{.Spec.TaskTemplate.ContainerSpec.Image}}";
    let out = swarm.engine().docker().args(["service", "inspect", "spread_web", "--format", format]).output().unwrap();
    let image = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let host = url.trim_start_matches("http://").trim_start_matches("https://").trim_end_matches('/');
    assert!(image.starts_with(&format!("{host}/spread")) && image.contains("@sha256:"), "not by digest: {image}");
    let all: BTreeSet<String> = (1..=4).map(|n| format!("spread.web.{n}")).collect();
    wait_for(T, "every unit of spread answering through the router", || {
        let mut seen = BTreeSet::new();
        for _ in 0..3 {
            seen.extend(hello_units_answering(&d, "spread"));
        }
        (seen == all).then_some(())
    });
}

/// On a one-node swarm: `examples/apps/hello` as a source build (`deis deploy`, run on
/// the stack image) and as an image (`deis pull`) reaches `up`, answers through the
/// router and scales; the units' output reaches `deis logs` through Docker's syslog log
/// driver (tagged with the app's ingest token); `deis run` sees the app's config, in a
/// unit's container and, with none running, in a one-off container of the release's
/// image (removed afterwards).
#[test]
fn the_hello_app_on_swarm_runs_from_source_and_as_an_image_logs_and_runs_one_off_commands() {
    let Some(swarm) = DockerSwarm::start() else { return };
    let cache = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let Some(stack) = swarm.engine().stack_image(cache) else { return };
    let image = hello_image(swarm.engine(), &stack);
    let manager = swarm.endpoint();
    let flags = ["--scheduler", "swarm", "--stack-image", &stack, "--docker-host", &manager];
    let (d, cli) = daemon_with_user(&flags);

    let (_dir, deployed) = hello_from_source_and_as_an_image(&d, &cli, &image);
    for (app, _) in deployed {
        // The hello app writes a line per request to stdout.
        let line = wait_for(T, &format!("a request line of {app} in deis logs"), || {
            let logs = cli.run(&["logs", "-n", "1000", "-a", app]).ok();
            logs.lines().find(|l| l.contains(&format!("{app}[web.")) && l.contains("GET / 200")).map(str::to_string)
        });
        eprintln!("{app}: {line}");
    }

    // A rotated ingest token: once restarted, the units' lines carry the new one.
    let before = placed(&up_pods(&cli, "fromimage", "web"));
    cli.run(&["logs:token", "-a", "fromimage", "--rotate"]).ok();
    cli.run(&["ps:restart", "web", "-a", "fromimage"]).ok();
    wait_for(T, "both fromimage units restarted", || {
        let now = placed(&wait_units(&cli, "fromimage", "web", 2, "v2"));
        now.iter().all(|u| !before.contains(u)).then_some(())
    });
    wait_for(T, "a request line of fromimage after the rotation", || {
        d.get_app("fromimage", "/after-rotation").ok().filter(|r| r.status == 200)?;
        let logs = cli.run(&["logs", "-n", "1000", "-a", "fromimage"]).ok();
        logs.contains("GET /after-rotation 200").then_some(())
    });

    // One-offs go on the manager's bridge; the test swarm's engine has none
    // (`--bridge=none`), so only `lo` there.
    deis_run_in_a_unit_then_a_one_off(&cli, "fromsource", &[swarm.engine()], false);
}
