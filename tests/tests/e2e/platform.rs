//! End-to-end: the real `deisd` and `deis` binaries on loopback, driving real unit
//! processes of the hello example app.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use deis_e2e::*;
use serde_json::Value;

fn releases(cli: &Cli, app: &str) -> Vec<Value> {
    let v = cli.run(&["releases", "-a", app, "--json"]).json();
    match v {
        Value::Array(a) => a,
        v => v["results"].as_array().unwrap().clone(),
    }
}

#[test]
fn deploy_scale_route_config_rollback_destroy() {
    let (d, cli) = daemon_with_user(&[]);
    let _dir = deploy_hello(&d, &cli, "roundrobin");

    // Scale web=3: three processes on three ports, and the router spreads over all three.
    cli.run(&["scale", "web=3", "-a", "roundrobin"]).ok();
    let web = wait_units(&cli, "roundrobin", "web", 3, "v2");
    let ports: BTreeSet<String> = web.iter().map(|p| p["address"].as_str().unwrap().to_string()).collect();
    assert_eq!(ports.len(), 3, "three distinct addresses: {web:?}");
    let groups: Vec<_> =
        unit_groups("roundrobin").into_iter().filter(|(_, u)| u.starts_with("roundrobin.web.")).collect();
    let names: BTreeSet<_> = groups.iter().map(|(_, u)| u.clone()).collect();
    assert_eq!((groups.len(), names.len()), (3, 3), "three web unit processes: {groups:?}");
    let mut seen = BTreeMap::<String, u32>::new();
    for _ in 0..30 {
        let r = d.get_app("roundrobin", "/").unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        let unit = r.body.split_whitespace().nth(2).unwrap().to_string();
        *seen.entry(unit).or_default() += 1;
    }
    assert_eq!(seen.len(), 3, "round-robin reaches every unit: {seen:?}");
    assert!(seen.values().all(|n| *n >= 5), "spread evenly: {seen:?}");

    // config:set makes a new release and the units serve the new value.
    let before = releases(&cli, "roundrobin").len();
    cli.run(&["config:set", "GREETING=Howdy", "-a", "roundrobin"]).ok();
    assert_eq!(releases(&cli, "roundrobin").len(), before + 1);
    wait_units(&cli, "roundrobin", "web", 3, "v3");
    wait_for(T, "Howdy from every unit", || {
        let bodies: Vec<String> = (0..6).map(|_| d.get_app("roundrobin", "/").unwrap().body).collect();
        bodies.iter().all(|b| b.starts_with("Howdy from roundrobin.web.")).then_some(())
    });
    let config = cli.run(&["config", "-a", "roundrobin", "--json"]).json();
    assert_eq!(config["values"]["GREETING"], "Howdy");

    // Rollback to v2 restores the old greeting in a new release v4.
    cli.run(&["releases:rollback", "v2", "-a", "roundrobin"]).ok();
    let rel = releases(&cli, "roundrobin");
    assert_eq!(rel.len(), before + 2);
    assert!(
        rel.iter().any(|r| r["version"] == 4 && r["summary"].as_str().unwrap().contains("rolled back to v2")),
        "{rel:?}"
    );
    wait_units(&cli, "roundrobin", "web", 3, "v4");
    wait_for(T, "Hello again after rollback", || {
        d.get_app("roundrobin", "/").ok().filter(|r| r.body.starts_with("Hello from")).map(|_| ())
    });

    // Scale to zero: no process left, and the router says so clearly.
    cli.run(&["scale", "web=0", "worker=0", "-a", "roundrobin"]).ok();
    wait_for(T, "no roundrobin process", || unit_processes("roundrobin").is_empty().then_some(()));
    let r = wait_for(T, "503 with no web unit", || d.get_app("roundrobin", "/").ok().filter(|r| r.status == 503));
    assert!(r.body.contains("roundrobin"), "{}", r.body);

    // Destroy: the app is gone and nothing runs.
    cli.run(&["scale", "web=2", "-a", "roundrobin"]).ok();
    wait_units(&cli, "roundrobin", "web", 2, "v4");
    cli.run(&["destroy", "-a", "roundrobin", "--confirm=roundrobin"]).ok();
    assert!(unit_processes("roundrobin").is_empty(), "destroy returns after every unit is gone");
    let info = cli.run(&["info", "-a", "roundrobin"]);
    assert_ne!(info.code, 0);
    assert!(d.get_app("roundrobin", "/").unwrap().status == 404);
    let deisd_pid = d.child.as_ref().unwrap().id();
    assert!(zombies_of(deisd_pid).is_empty(), "no zombie children");
}

#[test]
fn crashed_unit_is_restarted() {
    let (d, cli) = daemon_with_user(&[]);
    let _dir = deploy_hello(&d, &cli, "crashy");
    let (pid, _) = unit_processes("crashy").into_iter().find(|(_, u)| u == "crashy.web.1").expect("web unit process");
    assert!(deis_test_support::proc::signal(pid, "KILL"));
    let p = wait_for(T, "web unit restarted", || {
        up_pods(&cli, "crashy", "web").into_iter().find(|p| p["restarts"].as_u64() >= Some(1))
    });
    assert_eq!(p["name"], "crashy.web.1");
    let now: Vec<_> = unit_processes("crashy").into_iter().filter(|(_, u)| u == "crashy.web.1").collect();
    assert!(!now.is_empty() && now.iter().all(|(p, _)| *p != pid), "a new process: {now:?}");
    wait_for(T, "served again", || d.get_app("crashy", "/").ok().filter(|r| r.status == 200));
    assert!(zombies_of(d.child.as_ref().unwrap().id()).is_empty());
    // The app's log says what happened, with the cause.
    wait_for(T, "the crash in the app's log", || {
        let logs = cli.run(&["logs", "-a", "crashy"]).stdout;
        logs.contains("crashy.web.1 crashed (killed by signal 9); restarting").then_some(())
    });
}

#[test]
fn deisd_kill9_then_restart_keeps_state_and_converges() {
    let (mut d, cli) = daemon_with_user(&[]);
    let _dir = deploy_hello(&d, &cli, "sturdy");
    cli.run(&["config:set", "GREETING=Persisted", "-a", "sturdy"]).ok();
    cli.run(&["scale", "web=2", "-a", "sturdy"]).ok();
    wait_units(&cli, "sturdy", "web", 2, "v3");
    let before = releases(&cli, "sturdy");

    d.kill9();
    d.spawn();
    let after = releases(&cli, "sturdy");
    assert_eq!(before, after, "releases survive kill -9");
    let config = cli.run(&["config", "-a", "sturdy", "--json"]).json();
    assert_eq!(config["values"]["GREETING"], "Persisted");
    wait_units(&cli, "sturdy", "web", 2, "v3");
    wait_for(T, "served after restart", || {
        d.get_app("sturdy", "/").ok().filter(|r| r.status == 200 && r.body.starts_with("Persisted")).map(|_| ())
    });
    // Exactly the formation runs: the previous daemon's units were cleaned up, not duplicated.
    wait_for(T, "exactly two web units' process groups", || {
        let web: Vec<_> = unit_groups("sturdy").into_iter().filter(|(_, u)| u.contains(".web.")).collect();
        (web.len() == 2).then_some(())
    });
}

#[test]
fn two_apps_deploy_at_once() {
    let (d, cli) = daemon_with_user(&[]);
    let dirs: Vec<_> = ["one", "two"]
        .iter()
        .map(|app| {
            cli.run(&["create", app]).ok();
            (app.to_string(), hello_app())
        })
        .collect();
    std::thread::scope(|s| {
        for (app, dir) in &dirs {
            let cli = &cli;
            s.spawn(move || cli.run_in(&["deploy", "-a", app], Some(dir.path())).ok());
        }
    });
    for app in ["one", "two"] {
        let r = wait_for(T, "both apps served", || d.get_app(app, "/").ok().filter(|r| r.status == 200));
        assert!(r.body.contains(&format!("from {app}.web.1")), "{}", r.body);
    }
}

#[test]
fn bad_input_gets_4xx_and_changes_nothing() {
    let (d, cli) = daemon_with_user(&[]);
    cli.run(&["create", "steady"]).ok();
    let token = cli.token();
    let auth = format!("token {token}");
    let h = [("Authorization", auth.as_str()), ("Content-Type", "application/json")];
    let api = d.api;
    let count = |cli: &Cli| releases(cli, "steady").len();
    let n0 = count(&cli);

    let r = Request::post("/v2/apps/steady/config/").headers(&h).body(b"{\"values\": {").send(api).unwrap();
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.json()["detail"].as_str().unwrap_or_default().to_lowercase().contains("json"), "{}", r.body);
    assert_eq!(r.headers.get("deis_api_version").map(String::as_str), Some("2.3"));

    let r = Request::get("/v2/apps/nope/").headers(&h).send(api).unwrap();
    assert_eq!(r.status, 404);
    assert!(r.body.contains("No App matches the given query."), "{}", r.body);

    let bad = [("Authorization", "token 0000000000000000000000000000000000000000")];
    let r =
        Request::post("/v2/apps/steady/config/").headers(&bad).body(b"{\"values\":{\"A\":\"1\"}}").send(api).unwrap();
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["detail"], "Invalid token.");

    let r = Request::get("/v2/").send(api).unwrap();
    assert_eq!(r.status, 401, "the connection probe");

    let huge = format!("{{\"values\":{{\"BIG\":\"{}\"}}}}", "x".repeat(2 << 20));
    let r = Request::post("/v2/apps/steady/config/").headers(&h).body(huge.as_bytes()).send(api).unwrap();
    assert_eq!(r.status, 413, "{}", r.body);

    let r = Request::post("/v2/apps/").headers(&h).body(b"{\"id\":\"Bad_Name\"}").send(api).unwrap();
    assert_eq!(r.status, 400);
    assert!(r.body.contains("App name can only contain"), "{}", r.body);

    let r =
        Request::post("/v2/apps/steady/config/").headers(&h).body(b"{\"values\":{\"1BAD\":\"x\"}}").send(api).unwrap();
    assert_eq!(r.status, 400, "{}", r.body);
    let r = Request::post("/v2/apps/steady/config/")
        .headers(&h)
        .body(b"{\"values\":{\"MISSING\":null}}")
        .send(api)
        .unwrap();
    assert_eq!(r.status, 422, "{}", r.body);
    let r = Request::post("/v2/apps/steady/scale/").headers(&h).body(b"{\"web\":-1}").send(api).unwrap();
    assert_eq!(r.status, 400, "{}", r.body);

    // Hostile archives are refused before anything is stored.
    let gz = [("Authorization", auth.as_str()), ("Content-Type", "application/gzip")];
    for evil in [
        raw_tarball(&[("Procfile", b"web: true\n"), ("../escape", b"x")]),
        raw_tarball(&[("Procfile", b"web: true\n"), ("/etc/evil", b"x")]),
        b"not a tarball".to_vec(),
        raw_tarball(&[("web.py", b"print()")]),
    ] {
        let r = Request::post("/v2/apps/steady/builds/").headers(&gz).body(&evil[..]).send(api).unwrap();
        assert_eq!(r.status, 400, "{}", r.body);
        assert!(r.json()["detail"].is_string(), "{}", r.body);
    }

    // The CLI reports errors with a non-zero exit status and a message.
    let r = cli.run(&["config:set", "NOEQUALS", "-a", "steady"]);
    assert_ne!(r.code, 0);
    assert!(!r.stderr.is_empty());
    let r = cli.run(&["info", "-a", "ghost"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("No App matches"), "{}", r.stderr);

    assert_eq!(count(&cli), n0, "no bad request made a release");
    let builds = Request::get("/v2/apps/steady/builds/").headers(&h).send(api).unwrap().json();
    assert_eq!(builds["count"], 0);
}

#[test]
fn capacity_and_image_builds_are_refused_clearly() {
    let (d, cli) = daemon_with_user(&["--memory", "4G", "--cpu", "2"]);
    let _dir = deploy_hello(&d, &cli, "greedy");
    let n0 = releases(&cli, "greedy").len();

    let r = cli.run(&["limits:set", "web=100000G", "-a", "greedy"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("capacity"), "{}", r.stderr);
    assert_eq!(releases(&cli, "greedy").len(), n0, "a refused limit makes no release");

    cli.run(&["limits:set", "web=1G", "-a", "greedy"]).ok();
    let r = cli.run(&["scale", "web=5", "-a", "greedy"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("capacity"), "{}", r.stderr);
    assert_eq!(up_pods(&cli, "greedy", "web").len(), 1, "formation unchanged");

    cli.run(&["create", "imgapp"]).ok();
    let r = cli.run(&["pull", "busybox:latest", "-a", "imgapp"]);
    let all = format!("{}{}", r.stdout, r.stderr);
    assert!(all.contains("local scheduler"), "clear message about images: {all}");
}

#[test]
fn no_failed_request_while_config_change_rolls_units() {
    let (d, cli) = daemon_with_user(&[]);
    let _dir = deploy_hello(&d, &cli, "steadyweb");
    cli.run(&["scale", "web=3", "-a", "steadyweb"]).ok();
    wait_units(&cli, "steadyweb", "web", 3, "v2");

    let load = Load::start(d.router, &format!("steadyweb.{}", d.domain), 4);
    cli.run(&["config:set", "GREETING=Rolling", "-a", "steadyweb"]).ok();
    wait_units(&cli, "steadyweb", "web", 3, "v3");
    cli.run(&["config:set", "GREETING=Again", "-a", "steadyweb"]).ok();
    wait_units(&cli, "steadyweb", "web", 3, "v4");
    // The load goes on after the rollout too.
    load.wait_more(50);
    let served = load.served();
    let (greetings, failures) = load.finish();
    assert!(
        failures.is_empty(),
        "{} failed requests of {served}: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(served > 100, "the load kept flowing");
    for g in ["Hello", "Rolling", "Again"] {
        assert!(greetings.contains(g), "saw {g}: {greetings:?}");
    }
}

#[test]
fn a_killed_deisd_takes_its_units_background_children_along() {
    let (mut d, cli) = daemon_with_user(&[]);
    let dir = hello_app();
    // A unit whose group has a background child besides its leader.
    std::fs::write(dir.path().join("Procfile"), "web: sleep 1000 & exec python3 web.py\n").unwrap();
    cli.run(&["create", "orphans"]).ok();
    cli.run_in(&["deploy", "-a", "orphans"], Some(dir.path())).ok();
    wait_units(&cli, "orphans", "web", 1, "v2");
    wait_for(T, "the unit and its background child", || (unit_processes("orphans").len() >= 2).then_some(()));

    d.kill9();
    // The leader dies with deisd (PDEATHSIG); the background child by the unit's
    // watchdog, at once rather than when a new deisd starts.
    wait_for(Duration::from_secs(5), "no process of the app left", || {
        unit_processes("orphans").is_empty().then_some(())
    });
    d.spawn();
    wait_units(&cli, "orphans", "web", 1, "v2");
}
