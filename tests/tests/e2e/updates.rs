//! End-to-end of the update service: three `deisd` replicas on etcd, each run by its
//! `deis-updater`, behind nginx (as an operator runs them), with load on the API and on
//! an app through the routers. A package published with `deis updates:publish` rolls
//! through the replicas one at a time (the leader handing off before its restart) with
//! no failed request; a package whose binary fails its health check is rolled back and
//! halts the group (safe mode), and no other replica takes it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deis_e2e::*;
use deis_test_support::etcd::EtcdServer;
use deis_test_support::nginx::LoadBalancer;
use deis_test_support::{Service, free_addr, proc};

/// The Omaha app id the replicas are updated as.
const APP_ID: &str = "{e96281a6-d1af-4bde-9a0a-97b76e56dc57}";
/// How long a whole rollout may take.
const ROLLOUT: Duration = Duration::from_secs(240);

/// One deisd replica run by its update agent; the agent is stopped (and stops deisd)
/// on drop.
struct Replica {
    id: String,
    api: SocketAddr,
    /// The binary the agent runs and replaces.
    binary: PathBuf,
    agent: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Replica {
    /// Starts `deis-updater ... -- <copy of deisd> ...` and waits until deisd is healthy.
    fn start(
        id: &str,
        v1: &Path,
        store: &str,
        builds: &Path,
        omaha: SocketAddr,
        addrs: (SocketAddr, SocketAddr),
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let installed = dir.path().join("bin/deisd");
        std::fs::create_dir_all(installed.parent().unwrap()).unwrap();
        std::fs::copy(v1, &installed).unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        std::os::unix::fs::symlink(builds, data.join("builds")).unwrap();
        let (api, router) = addrs;
        let log = dir.path().join("replica.log");
        let out = std::fs::File::create(&log).unwrap();
        let free = || free_addr().to_string();
        let agent = Command::new(binary("deis-updater"))
            .args(["--server", &format!("http://{omaha}/v1/update/"), "--app-id", APP_ID, "--track", "stable"])
            .args(["--current-version", "1.0.0", "--interval", "1s", "--jitter", "1s", "--health-timeout", "60s"])
            .args(["--store", store, "--replica-id", id, "--health-url", &format!("http://{api}/healthz")])
            .arg("--download-dir")
            .arg(dir.path().join("downloads"))
            .arg("--")
            .arg(&installed)
            .arg("--data-dir")
            .arg(&data)
            .args(["--api-addr", &api.to_string(), "--router-addr", &router.to_string(), "--domain", "deis.test"])
            .args(["--builder-addr", &free(), "--syslog-addr", &free(), "--router-tls-addr", &free()])
            .args(["--store", store, "--replica-id", id])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("spawn deis-updater");
        let replica = Replica { id: id.into(), api, binary: installed, agent, log, _dir: dir };
        wait_for(T, &format!("replica {id} healthy"), || replica.healthy().then_some(()));
        replica
    }

    fn healthy(&self) -> bool {
        Request::get("/healthz").timeout(Duration::from_secs(2)).send(self.api).is_ok_and(|r| r.status == 200)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The version marker at the end of the binary in place (`v1` has none).
    fn binary_version(&self) -> String {
        let bytes = std::fs::read(&self.binary).unwrap();
        let tail = String::from_utf8_lossy(&bytes[bytes.len().saturating_sub(64)..]).into_owned();
        tail.rsplit_once(MARKER).map_or("1.0.0".into(), |(_, v)| v.trim().to_string())
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        proc::signal(self.agent.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.agent.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.agent.kill();
        let _ = self.agent.wait();
    }
}

/// What follows the deisd bytes in a package (ELF ignores trailing bytes).
const MARKER: &str = "\n#deis-update-e2e version ";

/// `python3 -m http.server` on a directory: where packages are downloaded from.
struct FileServer {
    child: Child,
    addr: SocketAddr,
}

impl FileServer {
    fn start(dir: &Path) -> Self {
        let addr = free_addr();
        let child = Command::new("python3")
            .args(["-m", "http.server", &addr.port().to_string(), "--bind", "127.0.0.1", "--directory"])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3");
        deis_test_support::net::wait_listening(addr, Duration::from_secs(10));
        FileServer { child, addr }
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls every replica's health check: which replicas were down at once, and how often
/// each went down.
struct HealthMonitor {
    stop: Arc<AtomicBool>,
    /// Each replica's count of down periods, and the most replicas seen down at once.
    seen: Arc<Mutex<(Vec<u32>, usize)>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HealthMonitor {
    fn start(apis: Vec<SocketAddr>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new((vec![0; apis.len()], 0)));
        let (s, seen2) = (stop.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            let mut was_down = vec![false; apis.len()];
            while !s.load(Ordering::Relaxed) {
                let down: Vec<bool> = apis
                    .iter()
                    .map(|a| {
                        !Request::get("/healthz")
                            .timeout(Duration::from_secs(2))
                            .send(*a)
                            .is_ok_and(|r| r.status == 200)
                    })
                    .collect();
                let mut seen = seen2.lock().unwrap();
                for (n, (now, before)) in down.iter().zip(&was_down).enumerate() {
                    if *now && !before {
                        seen.0[n] += 1;
                    }
                }
                seen.1 = seen.1.max(down.iter().filter(|d| **d).count());
                was_down = down;
                drop(seen);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        HealthMonitor { stop, seen, thread: Some(thread) }
    }

    fn seen(&self) -> (Vec<u32>, usize) {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for HealthMonitor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `deis updates:instances APP_ID --json`: (instance id, version, status, failed version).
fn instances(cli: &Cli) -> Vec<(String, String, String, Option<String>)> {
    let v = cli.run(&["updates:instances", APP_ID, "--json"]).json();
    let list = v.as_array().cloned().unwrap_or_default();
    let mut out: Vec<_> = list
        .iter()
        .map(|i| {
            let s = |k: &str| i[k].as_str().unwrap_or_default().to_string();
            (s("id"), s("version"), s("status"), i["failed_version"].as_str().map(str::to_string))
        })
        .collect();
    out.sort();
    out
}

/// Writes `<dir>/<name>`: `base` followed by the version marker.
fn package(dir: &Path, name: &str, base: &[u8], version: &str) -> PathBuf {
    let path = dir.join(name);
    let mut bytes = base.to_vec();
    bytes.extend_from_slice(format!("{MARKER}{version}\n").as_bytes());
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn a_rolling_update_of_three_replicas_under_load_fails_no_request_and_a_bad_version_is_rolled_back() {
    let Some(etcd) = EtcdServer::shared() else { return };
    let hosts = etcd.endpoint().trim_start_matches("http://").to_string();
    let store = format!("etcd://{hosts}?prefix=rolling-update/");
    let work = tempfile::tempdir().unwrap();
    // A deisd without debug info: the packages are downloaded and hashed three times.
    let v1 = work.path().join("deisd-1.0.0");
    let stripped = Command::new("strip").arg("-o").arg(&v1).arg(binary("deisd")).status().unwrap();
    assert!(stripped.success(), "strip deisd");
    let builds = work.path().join("builds");
    std::fs::create_dir_all(&builds).unwrap();

    let ids = ["a", "b", "c"];
    let addrs: Vec<(SocketAddr, SocketAddr)> = ids.iter().map(|_| (free_addr(), free_addr())).collect();
    let apis: Vec<SocketAddr> = addrs.iter().map(|a| a.0).collect();
    let routers: Vec<SocketAddr> = addrs.iter().map(|a| a.1).collect();
    let Some(lb) = LoadBalancer::start(&[&apis, &routers]) else { return };
    let (lb_api, lb_router) = (lb.addrs[0], lb.addrs[1]);
    let replicas: Vec<Replica> =
        ids.iter().zip(&addrs).map(|(id, a)| Replica::start(id, &v1, &store, &builds, lb_api, *a)).collect();
    let guard = LogsOnPanic(&replicas, &lb);
    wait_for(T, "replica a leads the scheduler", || replicas[0].log().contains("leading the scheduler").then_some(()));

    // An admin, an app with one web unit, the update app and its stable group.
    let cli = Cli::new();
    let url = format!("http://{lb_api}");
    cli.run(&["register", &url, "--username=alice", "--password=pw-alice", "--email=alice@example.com"]).ok();
    let hello = hello_app();
    cli.run(&["create", "steady"]).ok();
    cli.run_in(&["deploy", "-a", "steady"], Some(hello.path())).ok();
    wait_units(&cli, "steady", "web", 1, "v2");
    let app = Request::get("/").host("steady.deis.test");
    wait_for(T, "steady served through the load balancer", || app.send(lb_router).ok().filter(|r| r.status == 200));
    cli.run(&["updates:create", APP_ID, "--name", "deisd"]).ok();
    cli.run(&["updates:group", APP_ID, "stable", "--channel", "stable", "--max-updates-per-period", "100"]).ok();
    cli.run(&["updates:group", APP_ID, "stable", "--channel", "stable", "--safe-mode", "true"]).ok();

    // Load on the API (an authenticated read) and on the app, through the balancer.
    let api_load =
        Load::requests(lb_api, Request::get("/v2/apps").header("Authorization", &format!("token {}", cli.token())), 2);
    let app_load = Load::requests(lb_router, app.clone(), 2);
    api_load.wait_more(20);
    app_load.wait_more(20);
    let health = HealthMonitor::start(apis.clone());

    // 2.0.0: every replica updates, one at a time.
    let packages = work.path().join("packages");
    std::fs::create_dir_all(&packages).unwrap();
    let files = FileServer::start(&packages);
    let base = std::fs::read(&v1).unwrap();
    let v2 = package(&packages, "deisd-2.0.0", &base, "2.0.0");
    let files_url = format!("http://{}/", files.addr);
    let publish = |file: &Path, version: &str| {
        let file = file.to_str().unwrap();
        cli.run(&["updates:publish", APP_ID, "stable", file, "--version", version, "--url", &files_url]).ok();
    };
    publish(&v2, "2.0.0");
    wait_for(ROLLOUT, "the three replicas complete 2.0.0", || {
        let seen = instances(&cli);
        let done = seen.len() == 3 && seen.iter().all(|(_, v, s, _)| v == "2.0.0" && s == "complete");
        if done { Ok(()) } else { Err(seen) }
    });
    for r in &replicas {
        assert_eq!(r.binary_version(), "2.0.0", "replica {} runs the new binary", r.id);
        assert!(r.healthy(), "replica {} is healthy", r.id);
    }
    let (downs, most_down) = health.seen();
    assert!(downs.iter().all(|d| *d >= 1), "every replica restarted: {downs:?}");
    assert_eq!(most_down, 1, "one replica at a time: each passed its health check before the next stopped");
    // The leader handed off before its restart: it resigned and kept its units serving
    // until another replica's served the app.
    assert!(replicas[0].log().contains("handed off: the new leader serves every app"), "{}", replicas[0].log());
    api_load.wait_more(20);
    app_load.wait_more(20);

    // 3.0.0 does not start: the first replica to take it rolls back, safe mode halts
    // the group, the others never apply it.
    let bad = packages.join("deisd-3.0.0");
    std::fs::write(&bad, "#!/bin/sh\necho this build is broken >&2\nexit 3\n").unwrap();
    publish(&bad, "3.0.0");
    let failed = wait_for(ROLLOUT, "one replica fails 3.0.0 and rolls back", || {
        let seen = instances(&cli);
        match seen.iter().find(|i| i.3.as_deref() == Some("3.0.0")) {
            Some(i) => Ok(i.clone()),
            None => Err(seen),
        }
    });
    let status = cli.run(&["updates:status", APP_ID]).ok();
    assert!(status.contains("halted"), "safe mode halted the group: {status}");
    assert!(status.contains("error 103"), "the health-check failure is named: {status}");
    // The others keep checking in (twice, so a check that started before the halt
    // is over) and are not offered 3.0.0 any more.
    let checks = |cli: &Cli| -> Vec<String> {
        let v = cli.run(&["updates:instances", APP_ID, "--json"]).json();
        let mut c: Vec<String> =
            v.as_array().unwrap().iter().map(|i| format!("{}{}", i["id"], i["last_check"])).collect();
        c.sort();
        c
    };
    let mut before = checks(&cli);
    for round in ["once", "twice"] {
        before = wait_for(T, &format!("every agent checked in {round} after the halt"), || {
            let now = checks(&cli);
            if now.iter().all(|c| !before.contains(c)) { Ok(now) } else { Err(now) }
        });
    }
    for r in &replicas {
        assert_eq!(r.binary_version(), "2.0.0", "replica {} still runs 2.0.0", r.id);
        assert!(r.healthy(), "replica {} is healthy", r.id);
    }
    let failed_replica = replicas.iter().find(|r| r.id == failed.0).unwrap();
    assert!(failed_replica.log().contains("rolling back"), "{}", failed_replica.log());
    let seen = instances(&cli);
    assert_eq!(seen.iter().filter(|i| i.3.is_some()).count(), 1, "only one replica tried 3.0.0: {seen:?}");
    assert!(seen.iter().all(|i| i.1 == "2.0.0"), "{seen:?}");

    api_load.wait_more(20);
    app_load.wait_more(20);
    eprintln!(
        "served during the rollouts: {} API requests, {} app requests; down periods per replica {:?}; {failed:?} rolled back",
        api_load.served(),
        app_load.served(),
        health.seen().0
    );
    let (_, api_failures) = api_load.finish();
    let (_, app_failures) = app_load.finish();
    assert!(api_failures.is_empty(), "failed API requests: {api_failures:?}");
    assert!(app_failures.is_empty(), "failed app requests: {app_failures:?}");
    drop(health);
    drop(guard);
}

/// Prints the replicas' and nginx's logs when the test fails.
struct LogsOnPanic<'a>(&'a [Replica], &'a LoadBalancer);

impl Drop for LogsOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for r in self.0 {
                eprintln!("--- replica {}:\n{}", r.id, r.log());
            }
            eprintln!("--- nginx:\n{}", self.1.error_log());
        }
    }
}
