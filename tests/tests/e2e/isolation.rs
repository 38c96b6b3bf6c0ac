//! End to end, as root: two users' apps run as their own identities, inside their own
//! cgroups and mount namespaces; one app's `deis run` shell can't read the platform's
//! data directory, the store, the other app's build or its units' environment (checked
//! with real commands), its own build is read-only and its `/tmp` private. The probe
//! of issue 9 (`id; ls -la <data dir>; cat /proc/self/cgroup`) no longer leaks.

use std::process::Command;

use deis_e2e::{Cli, Deisd, T, daemon_with_user, deploy_hello, unit_processes, wait_for, wait_units};

fn root() -> bool {
    // SAFETY-free check: the uid of this test process, from /proc.
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let uid = status.lines().find_map(|l| l.strip_prefix("Uid:")).unwrap().split_whitespace().nth(1).unwrap();
    if uid != "0" {
        eprintln!("skipped: identities per app need deisd to run as root");
    }
    uid == "0"
}

/// `deis run -a APP -- sh -c SCRIPT` as `cli`: (exit code, stdout + stderr).
fn shell(cli: &Cli, app: &str, script: &str) -> (i32, String) {
    let r = cli.run(&["run", "-a", app, "--", "sh", "-c", script]);
    (r.code, format!("{}{}", r.stdout, r.stderr))
}

fn two_apps() -> (Deisd, Cli, Cli, tempfile::TempDir, tempfile::TempDir) {
    let (d, alice) = daemon_with_user(&[]);
    let bob = d.cli();
    bob.register(&d, "bob");
    // Identical sources: each app still gets a build of its own.
    let a = deploy_hello(&d, &alice, "alpha");
    let b = deploy_hello(&d, &bob, "beta");
    (d, alice, bob, a, b)
}

#[test]
fn an_apps_shell_cannot_reach_the_platform_or_another_app() {
    if !root() {
        return;
    }
    let (d, _alice, bob, _a, _b) = two_apps();
    let data = d.data_dir.display().to_string();
    let alpha_pid = unit_processes("alpha").first().expect("alpha's web unit runs").0;
    let alpha_build = std::fs::read_link(format!("/proc/{alpha_pid}/cwd")).unwrap();
    assert!(alpha_build.starts_with(&d.data_dir), "{alpha_build:?}");

    // The probe of the issue: not root, no data directory, a cgroup of its own.
    let (code, out) = shell(&bob, "beta", &format!("id -u; id -g; cat /proc/self/cgroup; ls -la {data}"));
    assert_eq!(code, 2, "ls of the data directory fails: {out}");
    let uid: u32 = out.lines().next().unwrap().trim().parse().unwrap_or_else(|_| panic!("{out}"));
    assert!((200_000..300_000).contains(&uid), "beta runs as its own uid: {out}");
    assert!(out.contains("Permission denied"), "{out}");
    assert!(!out.contains("store.redb") && !out.contains("scheduler"), "the data dir leaks: {out}");
    assert!(out.lines().any(|l| l.contains(":memory:/") && l.contains("deis-")), "own memory cgroup: {out}");
    assert!(out.lines().any(|l| l.contains(":pids:/") && l.contains("deis-")), "own pids cgroup: {out}");

    // Each with a real command, each refused.
    for (what, cmd) in [
        ("the store", format!("cat {data}/store.redb")),
        ("alpha's build", format!("ls {}", alpha_build.display())),
        ("alpha's build via its root", format!("ls /proc/{alpha_pid}/root{}", alpha_build.display())),
        ("alpha's environment", format!("cat /proc/{alpha_pid}/environ")),
        ("alpha's working directory", format!("ls /proc/{alpha_pid}/cwd/")),
        ("its own build, for writing", "echo pwned >> web.py".to_string()),
        ("a setuid program to root", "su -c id root </dev/null".to_string()),
    ] {
        let (code, out) = shell(&bob, "beta", &cmd);
        assert_ne!(code, 0, "{what} is reachable: {cmd}: {out}");
        assert!(
            ["Permission denied", "No such file", "Read-only file system", "Authentication failure", "must be run"]
                .iter()
                .any(|e| out.contains(e)),
            "{what}: {cmd}: {out}"
        );
        assert!(!out.contains("DEIS_UNIT=alpha"), "{what}: {out}");
    }
    // bob's write attempt changed nothing: alpha still serves its own code.
    let r = d.get_app("alpha", "/").unwrap();
    assert!(r.body.contains("from alpha.web.1"), "{}", r.body);

    // A private /tmp: what the shell writes there is not the host's.
    let marker = format!("/tmp/deis-iso-{}", std::process::id());
    let (code, out) = shell(&bob, "beta", &format!("echo x > {marker} && cat {marker}"));
    assert_eq!((code, out.trim()), (0, "x"));
    assert!(!std::path::Path::new(&marker).exists(), "the session's /tmp is the host's");
}

#[test]
fn deis_run_gets_the_limits_of_its_process_type() {
    if !root() {
        return;
    }
    let (d, alice) = daemon_with_user(&[]);
    let _dir = deploy_hello(&d, &alice, "limited");
    alice.run(&["limits:set", "web=256M", "-a", "limited"]).ok();
    let memory = "cat /sys/fs/cgroup/memory$(sed -n 's/^[0-9]*:memory://p' /proc/self/cgroup)/memory.limit_in_bytes";
    let (code, out) = shell(&alice, "limited", memory);
    assert_eq!((code, out.trim()), (0, (256u64 << 20).to_string().as_str()));
    // Past it, the session's command is killed.
    let (code, out) = shell(&alice, "limited", "python3 -c 'b = bytearray(512 << 20); print(\"survived\")'");
    assert_ne!(code, 0, "{out}");
    assert!(!out.contains("survived"), "{out}");
}

/// A system user of our own for deisd to run as (created on first use).
fn unprivileged_user() -> &'static str {
    const NAME: &str = "deis-e2e";
    let exists = Command::new("id").arg(NAME).output().is_ok_and(|o| o.status.success());
    if !exists {
        let made = Command::new("useradd")
            .args(["--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin", NAME])
            .status()
            .unwrap();
        // Another test may have made it meanwhile (exit 9: exists).
        assert!(made.success() || made.code() == Some(9), "useradd {NAME}: {made}");
    }
    NAME
}

#[test]
fn everything_still_works_when_deisd_runs_unprivileged() {
    if !root() {
        return;
    }
    let user = unprivileged_user();
    let d = Deisd::start_as(Some(user), &[], |_| {});
    let alice = d.cli();
    alice.register(&d, "alice");
    // At start it says what is not enforced, and what is.
    let log = d.log();
    assert!(log.contains("running unprivileged: units run as this user"), "{log}");
    assert!(log.contains("limits hold") || log.contains("limits are NOT enforced"), "{log}");

    // Deploy: the unit runs as deisd's user.
    let _dir = deploy_hello(&d, &alice, "plain");
    let uid = String::from_utf8(Command::new("id").args(["-u", user]).output().unwrap().stdout).unwrap();
    let pid = unit_processes("plain").first().expect("plain's web unit runs").0;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let unit_uid = status.lines().find_map(|l| l.strip_prefix("Uid:")).unwrap().split_whitespace().next().unwrap();
    assert_eq!(unit_uid, uid.trim(), "the unit runs as deisd's user");

    // Scale, logs, deis run.
    alice.run(&["scale", "web=2", "-a", "plain"]).ok();
    wait_units(&alice, "plain", "web", 2, "v2");
    d.get_app("plain", "/unprivileged").unwrap();
    wait_for(T, "the request in the app's log", || {
        let out = alice.run(&["logs", "-n", "1000", "-a", "plain"]).ok();
        (out.contains("GET /unprivileged") && out.contains("plain.web.2 up")).then_some(())
    });
    let (code, out) = shell(&alice, "plain", "id -un; echo ran in $DEIS_APP");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(user) && out.contains("ran in plain"), "{out}");
}

/// The cgroup directory of `pid` holding `controller` (v1), or its unified one (v2).
fn cgroup_dir(pid: u32, controller: &str) -> std::path::PathBuf {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    for l in text.lines() {
        let mut parts = l.splitn(3, ':');
        let (_, controllers, path) = (parts.next(), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        if controllers.split(',').any(|c| c == controller) {
            return std::path::PathBuf::from(format!("/sys/fs/cgroup/{controller}{path}"));
        }
    }
    let path = text.lines().find_map(|l| l.strip_prefix("0::")).unwrap_or_else(|| panic!("{pid}: {text}"));
    std::path::PathBuf::from(format!("/sys/fs/cgroup{path}"))
}

fn read_number(path: std::path::PathBuf) -> u64 {
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.trim().parse().unwrap_or_else(|_| panic!("{}: {text:?}", path.display()))
}

/// Creates `app` from a Procfile of one process type, deploys it (v2), sets each of
/// `limits` (`deis limits:set ARGS`, a release each) and then runs one unit.
fn deploy_procfile(cli: &Cli, app: &str, ty: &str, command: &str, limits: &[&[&str]]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("Procfile"), format!("{ty}: {command}\n")).unwrap();
    cli.run(&["create", app]).ok();
    cli.run_in(&["deploy", "-a", app], Some(dir.path())).ok();
    for args in limits {
        let mut argv = vec!["limits:set"];
        argv.extend_from_slice(args);
        argv.extend_from_slice(&["-a", app]);
        cli.run(&argv).ok();
    }
    cli.run(&["scale", &format!("{ty}=1"), "-a", app]).ok();
    dir
}

/// The pid of `app`'s unit `unit` once it runs on `release`'s environment.
fn unit_pid(app: &str, unit: &str, release: &str) -> u32 {
    wait_for(T, &format!("{unit} of {app} on {release}"), || {
        unit_processes(app).into_iter().find(|(pid, u)| {
            u == unit && deis_test_support::proc::env_var(*pid, "DEIS_RELEASE").as_deref() == Some(release)
        })
    })
    .0
}

#[test]
fn a_fork_bomb_deployed_through_deisd_stays_inside_its_unit() {
    if !root() {
        return;
    }
    let (d, alice) = daemon_with_user(&[]);
    let bob = d.cli();
    bob.register(&d, "bob");
    let _calm = deploy_hello(&d, &alice, "calm");
    // Kind to a shared machine: the bomb gets a fifth of a core, set as users do.
    let bomb = "sh -c 'f() { f | f & }; f; exec sleep 600'";
    let limits: &[&[&str]] = &[&["--cpu", "worker=200m"], &["worker=256M"]];
    let _bomb = deploy_procfile(&bob, "bomb", "worker", bomb, limits);
    let pid = unit_pid("bomb", "bomb.worker.1", "v4");
    let pids = cgroup_dir(pid, "pids");
    let max = read_number(pids.join("pids.max"));
    assert!(max <= 1024, "the unit's pids limit is {max}");
    // It reaches its ceiling and stays under it...
    wait_for(T, "the bomb to fill its unit", || (read_number(pids.join("pids.current")) >= max / 2).then_some(()));
    for _ in 0..10 {
        assert!(read_number(pids.join("pids.current")) <= max);
        // ... while deisd answers, and the other app serves.
        alice.run(&["ps", "-a", "calm"]).ok();
        let r = d.get_app("calm", "/").unwrap();
        assert!(r.status == 200 && r.body.contains("from calm.web.1"), "{r:?}");
    }
    bob.run(&["destroy", "-a", "bomb", "--confirm=bomb"]).ok();
    wait_for(T, "the bomb to end with its app", || unit_processes("bomb").is_empty().then_some(()));
}

#[test]
fn a_cpu_limit_set_through_deisd_is_the_units_cpu_quota() {
    if !root() {
        return;
    }
    let (d, alice) = daemon_with_user(&[]);
    let _busy = deploy_procfile(&alice, "busy", "worker", "sh -c 'while :; do :; done'", &[&["--cpu", "worker=500m"]]);
    // v1 created, v2 deployed, v3 the limit.
    let pid = unit_pid("busy", "busy.worker.1", "v3");
    let dir = cgroup_dir(pid, "cpu");
    let quota = match std::fs::read_to_string(dir.join("cpu.max")) {
        Ok(v2) => v2.trim().to_string(),
        Err(_) => {
            format!("{} {}", read_number(dir.join("cpu.cfs_quota_us")), read_number(dir.join("cpu.cfs_period_us")))
        }
    };
    assert_eq!(quota, "50000 100000", "half a core: {}", dir.display());
    // And it holds: over a measurement window (not a wait for a condition) the busy
    // loop gets at most about half a core.
    let usage = || match std::fs::read_to_string(cgroup_dir(pid, "cpuacct").join("cpuacct.usage")) {
        Ok(ns) => std::time::Duration::from_nanos(ns.trim().parse().unwrap()),
        Err(_) => {
            let stat = std::fs::read_to_string(dir.join("cpu.stat")).unwrap();
            let usec = stat.lines().find_map(|l| l.strip_prefix("usage_usec ")).unwrap();
            std::time::Duration::from_micros(usec.parse().unwrap())
        }
    };
    let (t0, u0) = (std::time::Instant::now(), usage());
    std::thread::sleep(std::time::Duration::from_secs(3));
    let share = (usage() - u0).as_secs_f64() / t0.elapsed().as_secs_f64();
    assert!(share <= 0.6, "a 500m unit used {share:.2} of a core");
    drop(d);
}
