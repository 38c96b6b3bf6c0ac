//! End-to-end on etcd: `deisd --store etcd://…` replicas sharing one etcd (Debian
//! `etcd-server`, started by the tests), the leader killed, etcd stopped and started.

use std::path::Path;
use std::time::Duration;

use deis_e2e::*;
use deis_test_support::Service;
use deis_test_support::etcd::{EtcdCluster, EtcdServer};

/// `--store` for a deisd on `endpoints`, under its own key prefix.
fn store_flag(endpoints: &[String], prefix: &str) -> String {
    let hosts: Vec<&str> = endpoints.iter().map(|e| e.trim_start_matches("http://")).collect();
    format!("etcd://{}?prefix={prefix}/", hosts.join(","))
}

/// Logs `cli` in as alice on `d` (registered elsewhere).
fn login(cli: &Cli, d: &Deisd) {
    cli.run(&["login", &d.url(), "--username=alice", "--password=pw-alice"]).ok();
}

/// The process groups of `app`'s web units.
fn web_groups(app: &str) -> Vec<(u32, String)> {
    unit_groups(app).into_iter().filter(|(_, u)| u.contains(".web.")).collect()
}

#[test]
fn two_replicas_serve_one_runs_units_and_the_other_takes_over_when_it_is_killed() {
    let Some(etcd) = EtcdServer::shared() else { return };
    let store = store_flag(&[etcd.endpoint()], "replicas");
    let mut a = Deisd::start_with(&["--store", &store, "--replica-id", "a"]);
    // Source builds are shared storage between replicas.
    let builds = a.data_dir.join("builds");
    std::fs::create_dir_all(&builds).unwrap();
    let b = Deisd::start_prepared(&["--store", &store, "--replica-id", "b"], |data: &Path| {
        std::fs::create_dir_all(data).unwrap();
        std::os::unix::fs::symlink(&builds, data.join("builds")).unwrap();
    });
    let cli_a = a.cli();
    cli_a.register(&a, "alice");
    let guard = LogsOnPanic([&a, &b].map(|d| d.data_dir.parent().unwrap().join("deisd.log")));
    let _dir = deploy_hello(&a, &cli_a, "ha");

    // Every router follows the store: b routes to the unit a runs.
    wait_for(T, "b's router serves ha", || b.get_app("ha", "/").ok().filter(|r| r.status == 200));
    // The follower answers `ps` from the leader's unit records, and hands changes to
    // the leader: config:set through b rolls a's unit to v3.
    let cli_b = b.cli();
    login(&cli_b, &b);
    wait_units(&cli_b, "ha", "web", 1, "v2");
    cli_b.run(&["config:set", "GREETING=Howdy", "-a", "ha"]).ok();
    wait_units(&cli_b, "ha", "web", 1, "v3");
    wait_for(T, "v3 served through b", || {
        b.get_app("ha", "/").ok().filter(|r| r.body.starts_with("Howdy from ha.web.1 (v3)"))
    });
    // A refusal on the leader reaches the follower's client as such, and changes nothing.
    let refused = cli_b.run(&["limits:set", "web=100000G", "-a", "ha"]);
    assert_ne!(refused.code, 0);
    assert!(refused.stderr.contains("capacity"), "{}", refused.stderr);
    wait_for(T, "one web unit (the replaced one stopped)", || (web_groups("ha").len() == 1).then_some(()));

    // Kill the leader: its units die with it, b is elected and starts them again.
    a.kill9();
    wait_for(T, "no unit of the dead leader left", || {
        web_groups("ha").iter().all(|(pgid, _)| deis_test_support::proc::stat(*pgid).is_some()).then_some(())
    });
    let r = wait_for(T, "b serves ha from its own unit", || {
        b.get_app("ha", "/").ok().filter(|r| r.status == 200 && r.body.starts_with("Howdy from ha.web.1 (v3)"))
    });
    assert!(r.body.contains("(v3)"), "{}", r.body);
    wait_units(&cli_b, "ha", "web", 1, "v3");
    // Exactly the formation runs: started once, by the new leader.
    wait_for(T, "exactly one web unit process group", || (web_groups("ha").len() == 1).then_some(()));
    cli_b.run(&["scale", "web=2", "-a", "ha"]).ok();
    wait_units(&cli_b, "ha", "web", 2, "v3");
    assert!(b.log().contains("leading the scheduler"), "b leads now");
    cli_b.run(&["destroy", "-a", "ha", "--confirm=ha"]).ok();
    assert!(unit_processes("ha").is_empty());
    std::mem::forget(guard);
}

/// Prints the replicas' logs when the test fails.
struct LogsOnPanic([std::path::PathBuf; 2]);

impl Drop for LogsOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for (name, log) in ["a", "b"].iter().zip(&self.0) {
                eprintln!("--- replica {name}:\n{}", std::fs::read_to_string(log).unwrap_or_default());
            }
        }
    }
}

#[test]
fn etcd_stopped_means_503_with_a_clear_message_then_recovery_with_nothing_lost() {
    let Some(mut etcd) = EtcdCluster::start(1) else { return };
    let store = store_flag(&etcd.endpoints(), "outage");
    let (d, cli) = daemon_with_user(&["--store", &store]);
    cli.run(&["create", "calm"]).ok();
    cli.run(&["config:set", "BEFORE=1", "-a", "calm"]).ok();
    let releases_before = cli.run(&["releases", "-a", "calm", "--json"]).json();

    etcd.stop(0);
    let health = Request::get("/healthz").send(d.api).unwrap();
    assert_eq!(health.status, 503, "{}", health.body);
    assert!(health.body.contains("the store is unavailable"), "{}", health.body);
    let during = cli.run(&["config:set", "DURING=2", "-a", "calm"]);
    assert_ne!(during.code, 0);
    let message = during.stderr.trim();
    assert!(message.contains("the platform is unavailable (503): the store is unavailable"), "{message}");
    assert!(message.contains("retry when it is back"), "{message}");
    assert!(!message.contains("Server Error"), "no stack of errors: {message}");

    etcd.restart(0);
    wait_for(Duration::from_secs(30), "healthz back to 200", || {
        Request::get("/healthz").send(d.api).ok().filter(|r| r.status == 200)
    });
    wait_for(Duration::from_secs(30), "writes accepted again", || {
        (cli.run(&["config:set", "AFTER=3", "-a", "calm"]).code == 0).then_some(())
    });
    let config = cli.run(&["config", "-a", "calm", "--json"]).json();
    assert_eq!(config["values"]["BEFORE"], "1");
    assert_eq!(config["values"]["AFTER"], "3");
    assert!(config["values"].get("DURING").is_none(), "the refused change left nothing: {config}");
    let releases_after = cli.run(&["releases", "-a", "calm", "--json"]).json();
    let count = |v: &serde_json::Value| v.as_array().or(v["results"].as_array()).map_or(0, Vec::len);
    assert_eq!(count(&releases_after), count(&releases_before) + 1, "exactly one release more");
}
