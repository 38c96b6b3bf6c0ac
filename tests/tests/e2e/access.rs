//! End-to-end: collaborators, administrators, SSH keys and the app settings the router
//! enforces, driven with the real `deis` CLI against the real `deisd`.

use deis_e2e::*;

#[test]
fn a_collaborator_works_on_the_app_but_can_not_destroy_it() {
    let (d, alice) = daemon_with_user(&[]);
    let bob = d.cli();
    bob.register(&d, "bob");
    let _dir = deploy_hello(&d, &alice, "team");

    // Before: bob is a stranger, and is told so (403, not 404).
    let r = bob.run(&["info", "-a", "team"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("permission"), "{r:?}");

    alice.run(&["perms:create", "bob", "-a", "team"]).ok();
    assert_eq!(alice.run(&["perms:list", "-a", "team", "--json"]).json(), serde_json::json!(["bob"]));
    assert!(bob.run(&["apps"]).ok().contains("team"));
    bob.run(&["config:set", "GREETING=Hola", "-a", "team"]).ok();
    wait_for(T, "bob's greeting", || d.get_app("team", "/").ok().filter(|r| r.body.starts_with("Hola from")));
    bob.run(&["scale", "web=2", "-a", "team"]).ok();
    wait_units(&bob, "team", "web", 2, "v3");

    for denied in [
        vec!["destroy", "-a", "team", "--confirm=team"],
        vec!["perms:create", "carol", "-a", "team"],
        vec!["perms:delete", "bob", "-a", "team"],
    ] {
        let r = bob.run(&denied);
        assert_ne!(r.code, 0, "{denied:?}: {r:?}");
        assert!(r.stderr.contains("permission"), "{denied:?}: {r:?}");
    }
    assert_eq!(d.get_app("team", "/").unwrap().status, 200, "the app still serves");

    alice.run(&["perms:delete", "bob", "-a", "team"]).ok();
    assert_ne!(bob.run(&["config:set", "X=1", "-a", "team"]).code, 0);
}

#[test]
fn maintenance_routing_and_allow_list_through_the_router() {
    let (d, cli) = daemon_with_user(&[]);
    let _dir = deploy_hello(&d, &cli, "gated");

    cli.run(&["maintenance:on", "-a", "gated"]).ok();
    assert!(cli.run(&["maintenance", "-a", "gated"]).ok().contains("on"));
    let r = wait_for(T, "maintenance page", || d.get_app("gated", "/").ok().filter(|r| r.status == 503));
    assert!(r.body.contains("down for maintenance"), "{}", r.body);
    // deis run still works while the app is in maintenance.
    assert_eq!(cli.run(&["run", "-a", "gated", "--", "echo", "inside"]).ok().trim(), "inside");
    cli.run(&["maintenance:off", "-a", "gated"]).ok();
    wait_for(T, "serving again", || d.get_app("gated", "/").ok().filter(|r| r.status == 200));

    cli.run(&["routing:disable", "-a", "gated"]).ok();
    wait_for(T, "unrouted", || d.get_app("gated", "/").ok().filter(|r| r.status == 404));
    cli.run(&["routing:enable", "-a", "gated"]).ok();
    wait_for(T, "routed", || d.get_app("gated", "/").ok().filter(|r| r.status == 200));

    cli.run(&["whitelist:add", "192.0.2.0/24", "-a", "gated"]).ok();
    let r = wait_for(T, "403 for loopback", || d.get_app("gated", "/").ok().filter(|r| r.status == 403));
    assert!(r.body.contains("127.0.0.1"), "{}", r.body);
    cli.run(&["whitelist:add", "127.0.0.1", "-a", "gated"]).ok();
    wait_for(T, "allowed", || d.get_app("gated", "/").ok().filter(|r| r.status == 200));
    let listed = cli.run(&["whitelist", "-a", "gated", "--json"]).json();
    assert_eq!(listed, serde_json::json!(["127.0.0.1", "192.0.2.0/24"]));
    let r = cli.run(&["whitelist:remove", "198.51.100.1", "-a", "gated"]);
    assert!(r.code != 0 && r.stderr.contains("does not exist"), "{r:?}");

    cli.run(&["tls:enable", "-a", "gated"]).ok();
    let r = wait_for(T, "redirect", || d.get_app("gated", "/x?y=1").ok().filter(|r| r.status == 301));
    assert!(r.body.contains("https://gated."), "{}", r.body);
    let info = cli.run(&["info", "-a", "gated"]).ok();
    assert!(info.contains("https enforced:") && info.contains("192.0.2.0/24"), "{info}");
}

#[test]
fn keys_and_admins_from_the_cli() {
    let (d, root) = daemon_with_user(&[]);
    let bob = d.cli();
    bob.register(&d, "bob");
    let keydir = tempfile::tempdir().unwrap();
    let key = keydir.path().join("id_ed25519");
    let status = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "bob@laptop", "-f"])
        .arg(&key)
        .status()
        .expect("ssh-keygen");
    assert!(status.success());
    let pubkey = key.with_extension("pub");
    bob.run(&["keys:add", pubkey.to_str().unwrap()]).ok();
    let keys = bob.run(&["keys", "--json"]).json();
    assert_eq!(keys[0]["id"], "bob@laptop");
    let printed = std::process::Command::new("ssh-keygen").arg("-lf").arg(&pubkey).output().unwrap();
    let fingerprint = String::from_utf8_lossy(&printed.stdout).split_whitespace().nth(1).unwrap().to_string();
    assert_eq!(keys[0]["fingerprint"], fingerprint.as_str(), "the fingerprint ssh-keygen prints");
    let again = root.run(&["keys:add", pubkey.to_str().unwrap()]);
    assert!(again.code != 0 && again.stderr.contains("already in use"), "{again:?}");
    bob.run(&["keys:remove", "bob@laptop"]).ok();
    assert_eq!(bob.run(&["keys", "--json"]).json(), serde_json::json!([]));

    // Admins: the first user makes bob one; bob disables carol, who then can do nothing.
    let carol = d.cli();
    carol.register(&d, "carol");
    assert_ne!(bob.run(&["users"]).code, 0, "not an admin yet");
    root.run(&["perms:create", "bob", "--admin"]).ok();
    assert!(bob.run(&["users"]).ok().contains("*bob"));
    bob.run(&["users:disable", "carol"]).ok();
    let r = carol.run(&["apps"]);
    assert!(r.code != 0 && r.stderr.contains("disabled"), "{r:?}");
    bob.run(&["users:enable", "carol"]).ok();
    carol.run(&["apps"]).ok();
    root.run(&["perms:delete", "bob", "--admin"]).ok();
    assert_ne!(bob.run(&["users"]).code, 0);
}

#[test]
fn a_unit_failing_its_liveness_check_is_restarted() {
    let (d, cli) = daemon_with_user(&[]);
    let _dir = deploy_hello(&d, &cli, "probed");
    // Units get a private /tmp and run as the app's own user (as root): the marker
    // lives where they see it, in a directory they may search.
    let marker = tempfile::tempdir_in("/var/tmp").unwrap();
    std::fs::set_permissions(marker.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let sick = marker.path().join("sick");
    let check = format!("test ! -e {}", sick.display());
    cli.run(&[
        "healthchecks:set",
        "liveness",
        "exec",
        "--initial-delay-timeout=0",
        "--period=1",
        "--timeout=1",
        "--failure-threshold=2",
        "-a",
        "probed",
        "--",
        "sh",
        "-c",
        &check,
    ])
    .ok();
    let listed = cli.run(&["healthchecks", "-a", "probed"]).ok();
    assert!(listed.contains("livenessProbe: exec sh -c test ! -e"), "{listed}");
    let before = wait_units(&cli, "probed", "web", 1, "v3");
    assert_eq!(before[0]["restarts"], 0);

    std::fs::write(&sick, "").unwrap();
    let crashed = wait_for(T, "a restart after failed probes", || {
        pods(&cli, "probed").into_iter().find(|p| p["restarts"].as_u64().unwrap_or(0) >= 1)
    });
    std::fs::remove_file(&sick).unwrap();
    assert_ne!(crashed["name"], serde_json::Value::Null);
    wait_units(&cli, "probed", "web", 1, "v3");
    let logs = cli.run(&["logs", "-a", "probed"]).ok();
    assert!(logs.contains("liveness probe failed 2 times in a row"), "{logs}");
    wait_for(T, "serving again", || d.get_app("probed", "/").ok().filter(|r| r.status == 200));
}
