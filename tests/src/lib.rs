//! Harness for the end-to-end tests: starts the real `deisd` on free loopback ports
//! with a temporary data directory, drives it with the real `deis` binary, and looks
//! at the processes it runs through `/proc`.
//!
//! The binaries must be built first (`cargo build --bins`; `scripts/test` does it).

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub use deis_test_support::http::{Request, Response};
use deis_test_support::proc;
pub use deis_test_support::{eventually, free_port, wait_for};
use serde_json::Value;

pub mod git;
pub mod tls;

/// The directory holding the workspace's binaries: `DEIS_E2E_BIN_DIR` if set (a copy
/// that a build in a shared target directory can't replace mid-run), else next to the
/// test executable.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("DEIS_E2E_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test-binary>
    exe.parent().and_then(Path::parent).expect("target dir layout").to_path_buf()
}

/// Path of a workspace binary; panics with advice if it was not built.
pub fn binary(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(p.exists(), "{} is missing: run `cargo build --bins` before the end-to-end tests", p.display());
    p
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// `extra` plus syslog and HTTPS listeners on free ports unless `extra` chooses them:
/// parallel daemons must not fight over the default ports.
fn with_private_ports(extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    for flag in ["--syslog-addr", "--router-tls-addr"] {
        if !extra.contains(&flag) {
            args.extend([flag.to_string(), format!("127.0.0.1:{}", free_port())]);
        }
    }
    args
}

/// A running `deisd` with its own data dir and ports; killed on drop.
#[derive(Debug)]
pub struct Deisd {
    /// The daemon process.
    pub child: Option<Child>,
    /// Data directory (kept across restarts of this handle).
    pub data_dir: PathBuf,
    /// Controller API address.
    pub api: SocketAddr,
    /// Router address.
    pub router: SocketAddr,
    /// Builder (`git push` over SSH) address.
    pub builder: SocketAddr,
    /// Platform domain.
    pub domain: String,
    /// Extra arguments passed on every start.
    pub extra_args: Vec<String>,
    /// The user deisd runs as (through `setpriv`), if not this process's.
    pub run_as: Option<String>,
    log: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl Deisd {
    /// Starts a fresh daemon.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a fresh daemon with extra flags.
    pub fn start_with(extra: &[&str]) -> Self {
        Self::start_prepared(extra, |_| {})
    }

    /// Starts a fresh daemon with extra flags, after `prepare` ran on its (not yet
    /// existing) data dir path, e.g. to share another daemon's builds.
    pub fn start_prepared(extra: &[&str], prepare: impl FnOnce(&Path)) -> Self {
        Self::start_as(None, extra, prepare)
    }

    /// Starts a fresh daemon as `user` (this process must be root), with extra flags,
    /// after `prepare` ran on its data dir path. Its temporary directory is the user's.
    pub fn start_as(user: Option<&str>, extra: &[&str], prepare: impl FnOnce(&Path)) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        if let Some(user) = user {
            let id = |flag: &str| -> u32 {
                let out = Command::new("id").args([flag, user]).output().unwrap();
                String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or_else(|_| panic!("no user {user}"))
            };
            std::os::unix::fs::chown(tmp.path(), Some(id("-u")), Some(id("-g"))).unwrap();
        }
        let data_dir = tmp.path().join("data");
        let log = tmp.path().join("deisd.log");
        let mut d = Deisd {
            child: None,
            data_dir,
            api: SocketAddr::from(([127, 0, 0, 1], free_port())),
            router: SocketAddr::from(([127, 0, 0, 1], free_port())),
            builder: SocketAddr::from(([127, 0, 0, 1], free_port())),
            domain: "deis.test".into(),
            extra_args: with_private_ports(extra),
            run_as: user.map(str::to_string),
            log,
            _tmp: Some(tmp),
        };
        prepare(&d.data_dir);
        d.spawn();
        d
    }

    /// Starts the daemon process on the same data dir and ports.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let mut command = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("setpriv");
                c.args(["--reuid", user, "--regid", user, "--init-groups", "--"]).arg(binary("deisd"));
                c
            }
            None => Command::new(binary("deisd")),
        };
        let child = command
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--api-addr")
            .arg(self.api.to_string())
            .arg("--router-addr")
            .arg(self.router.to_string())
            .arg("--domain")
            .arg(&self.domain)
            .arg("--builder-addr")
            .arg(self.builder.to_string())
            .args(&self.extra_args)
            .env("RUST_LOG", "info,deis=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn deisd");
        self.child = Some(child);
        let api = self.api;
        wait_for(Duration::from_secs(20), "deisd /healthz", || {
            Request::get("/healthz").send(api).ok().filter(|r| r.status == 200)
        });
    }

    /// Where the router serves HTTPS (`None` with `--router-tls-addr off`).
    pub fn router_tls(&self) -> Option<SocketAddr> {
        let at = self.extra_args.iter().position(|a| a == "--router-tls-addr")?;
        self.extra_args.get(at + 1)?.parse().ok()
    }

    /// The daemon's log so far (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `kill -9` the daemon (its units are left to the next start to clean up).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().ok();
            c.wait().ok();
        }
    }

    /// SIGTERM and wait: a graceful stop.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        proc::signal(c.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                return Some(st);
            }
            if Instant::now() > deadline {
                c.kill().ok();
                return c.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The controller URL for `deis register`.
    pub fn url(&self) -> String {
        format!("http://{}", self.api)
    }

    /// A CLI bound to this daemon with its own profile.
    pub fn cli(&self) -> Cli {
        Cli::new()
    }

    /// GET `path` through the router for `app` (Host `<app>.<domain>`).
    pub fn get_app(&self, app: &str, path: &str) -> std::io::Result<Response> {
        Request::get(path).host(&format!("{app}.{}", self.domain)).send(self.router)
    }
}

impl Drop for Deisd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The `deis` CLI with a private profile and HOME.
#[derive(Debug)]
pub struct Cli {
    /// Profile file (DEIS_PROFILE).
    pub profile: PathBuf,
    home: tempfile::TempDir,
}

/// Output of one CLI run.
#[derive(Debug)]
pub struct Run {
    /// Exit code.
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    /// Asserts success and returns stdout.
    pub fn ok(self) -> String {
        assert_eq!(self.code, 0, "deis failed: stdout={} stderr={}", self.stdout, self.stderr);
        self.stdout
    }
    /// Parses stdout as JSON (for `--json`).
    pub fn json(self) -> serde_json::Value {
        let out = self.ok();
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
    }
}

impl Default for Cli {
    fn default() -> Self {
        Self::new()
    }
}

impl Cli {
    /// A CLI with its own (empty) profile, for any controller.
    pub fn new() -> Self {
        let home = tempfile::tempdir().unwrap();
        Cli { profile: home.path().join("client.json"), home }
    }

    /// Runs `deis ARGS`.
    pub fn run(&self, args: &[&str]) -> Run {
        self.run_in(args, None)
    }

    /// Runs `deis ARGS` in directory `dir`.
    pub fn run_in(&self, args: &[&str], dir: Option<&Path>) -> Run {
        let mut cmd = Command::new(binary("deis"));
        cmd.args(args).env("DEIS_PROFILE", &self.profile).env("HOME", self.home.path()).stdin(Stdio::null());
        cmd.env_remove("DEIS_APP");
        // Not the test's own directory: that is inside the project's git repository,
        // which `deis create` would give a remote.
        cmd.current_dir(dir.unwrap_or(self.home.path()));
        let Output { status, stdout, stderr } = cmd.output().expect("run deis");
        Run {
            code: status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        }
    }

    /// A `deis ARGS` command with this CLI's profile and HOME, not yet started (for
    /// tests that need their own stdin/stdout plumbing).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(binary("deis"));
        cmd.args(args).env("DEIS_PROFILE", &self.profile).env("HOME", self.home.path()).env_remove("DEIS_APP");
        cmd.current_dir(self.home.path());
        cmd
    }

    /// Registers `user` (password `pw-<user>`) and logs in.
    pub fn register(&self, d: &Deisd, user: &str) {
        let url = d.url();
        let pw = format!("--password=pw-{user}");
        let user_arg = format!("--username={user}");
        let email = format!("--email={user}@example.com");
        self.run(&["register", &url, &user_arg, &pw, &email]).ok();
    }

    /// The token saved in the profile.
    pub fn token(&self) -> String {
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&self.profile).unwrap()).unwrap();
        v["token"].as_str().unwrap().to_string()
    }
}

/// Process groups of `app`'s units: (pgid, DEIS_UNIT), one entry per group (a unit
/// runs as `sh -c CMD`, so its group holds the shell and the command).
pub fn unit_groups(app: &str) -> Vec<(u32, String)> {
    let mut groups: Vec<(u32, String)> =
        unit_processes(app).into_iter().filter_map(|(pid, unit)| Some((proc::stat(pid)?.pgid, unit))).collect();
    groups.sort();
    groups.dedup();
    groups
}

/// Processes whose environment has `DEIS_APP=<app>`: (pid, DEIS_UNIT).
pub fn unit_processes(app: &str) -> Vec<(u32, String)> {
    proc::processes_with_env("DEIS_APP", app)
        .into_iter()
        .map(|pid| (pid, proc::env_var(pid, "DEIS_UNIT").unwrap_or_default()))
        .collect()
}

pub use deis_test_support::proc::zombies_of;

/// A ustar header of a regular file at the raw `path` (up to 100 bytes, nothing
/// checked: to craft hostile archives) of `size` bytes.
pub fn ustar_header(path: &str, size: u64) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..path.len()].copy_from_slice(path.as_bytes());
    h[100..107].copy_from_slice(b"0000644");
    h[108..115].copy_from_slice(b"0000000");
    h[116..123].copy_from_slice(b"0000000");
    h[124..135].copy_from_slice(format!("{size:011o}").as_bytes());
    h[136..147].copy_from_slice(b"00000000000");
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    h
}

/// A gzipped tarball with raw entry paths (to craft hostile archives).
pub fn raw_tarball(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut tarball = Vec::new();
    for (path, data) in entries {
        let header = ustar_header(path, data.len() as u64);
        tarball.extend_from_slice(&header);
        tarball.extend_from_slice(data);
        tarball.resize(tarball.len().div_ceil(512) * 512, 0);
    }
    tarball.resize(tarball.len() + 1024, 0);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tarball).unwrap();
    gz.finish().unwrap()
}

/// Copies the hello example app into a fresh temp dir (so tests can edit it).
pub fn hello_app() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = repo_root().join("examples/apps/hello");
    for e in std::fs::read_dir(&src).unwrap().flatten() {
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), dir.path().join(e.file_name())).unwrap();
        }
    }
    dir
}

/// How long end-to-end steps may take.
pub const T: Duration = Duration::from_secs(60);

/// `deis ps -a APP --json`: the units.
pub fn pods(cli: &Cli, app: &str) -> Vec<Value> {
    match cli.run(&["ps", "-a", app, "--json"]).json() {
        Value::Array(a) => a,
        Value::Object(mut o) if o.contains_key("results") => match o.remove("results") {
            Some(Value::Array(a)) => a,
            other => panic!("unexpected ps JSON results: {other:?}"),
        },
        other => panic!("unexpected ps JSON: {other}"),
    }
}

/// The units of `app` of type `ty` that are up.
pub fn up_pods(cli: &Cli, app: &str, ty: &str) -> Vec<Value> {
    pods(cli, app).into_iter().filter(|p| p["type"] == ty && p["state"] == "up").collect()
}

/// Waits until exactly `n` `ty` units of `app` exist, all up on release `release`.
pub fn wait_units(cli: &Cli, app: &str, ty: &str, n: usize, release: &str) -> Vec<Value> {
    wait_for(T, &format!("{n} {ty} units of {app} up on {release}"), || {
        let of_type: Vec<Value> = pods(cli, app).into_iter().filter(|p| p["type"] == ty).collect();
        let up = of_type.iter().all(|p| p["state"] == "up" && p["release"] == release);
        if of_type.len() == n && up { Ok(of_type) } else { Err(of_type) }
    })
}

/// Creates `app`, deploys the hello example app to it (release v2, one web unit) and
/// waits until the router serves it; returns the app's directory.
pub fn deploy_hello(d: &Deisd, cli: &Cli, app: &str) -> tempfile::TempDir {
    let dir = hello_app();
    cli.run(&["create", app]).ok();
    cli.run_in(&["deploy", "-a", app], Some(dir.path())).ok();
    wait_units(cli, app, "web", 1, "v2");
    let body =
        wait_for(T, "first response through the router", || d.get_app(app, "/").ok().filter(|r| r.status == 200));
    assert!(body.body.contains(&format!("from {app}.web.1 (v2)")), "{}", body.body);
    dir
}

/// An image serving `/www/index.html` (16 bytes of `fill`) with busybox loaded into
/// `engine` (`docker load` of a docker-archive, as `docker save` writes); returns its
/// tag, `deis-test/web-<fill>:1`. Units may run as an unprivileged user: the image
/// serves what it carries and writes nothing.
pub fn load_web_image(engine: &deis_test_support::docker::DockerEngine, fill: u8) -> String {
    use deis_test_support::image::{busybox_layer, docker_archive, layer};
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("web.tar");
    docker_archive(&archive, &[busybox_layer(), layer("www/index.html", 16, fill)], "sleep 1000");
    let out = engine.docker().arg("load").arg("-i").arg(&archive).output().unwrap();
    assert!(out.status.success(), "docker load: {}", String::from_utf8_lossy(&out.stderr));
    let tag = format!("deis-test/web-{}:1", fill.to_ascii_lowercase() as char);
    let out = engine.docker().args(["tag", "t:1", &tag]).output().unwrap();
    assert!(out.status.success(), "docker tag: {}", String::from_utf8_lossy(&out.stderr));
    tag
}

/// A fresh daemon with user `alice` registered and logged in.
pub fn daemon_with_user(extra: &[&str]) -> (Deisd, Cli) {
    let d = Deisd::start_with(extra);
    let cli = d.cli();
    cli.register(&d, "alice");
    (d, cli)
}

/// Requests through the router on a few threads until [`Load::finish`]: how many were
/// served, which failed, and the first word of every body (the greeting) seen.
#[derive(Debug)]
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ok: std::sync::Arc<std::sync::atomic::AtomicU64>,
    failures: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<std::collections::BTreeSet<String>>>,
}

impl Load {
    /// Starts `threads` threads sending `GET /` with `Host: host` to `router`.
    pub fn start(router: SocketAddr, host: &str, threads: usize) -> Self {
        Self::requests(router, Request::get("/").host(host), threads)
    }

    /// Starts `threads` threads sending `request` to `addr`: a failure is an answer
    /// other than 200, or no answer.
    pub fn requests(addr: SocketAddr, request: Request, threads: usize) -> Self {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let ok = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let failures = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let threads = (0..threads)
            .map(|_| {
                let (stop, ok, failures, request) = (stop.clone(), ok.clone(), failures.clone(), request.clone());
                std::thread::spawn(move || {
                    let mut greetings = std::collections::BTreeSet::new();
                    while !stop.load(Ordering::Relaxed) {
                        match request.send(addr) {
                            Ok(r) if r.status == 200 => {
                                ok.fetch_add(1, Ordering::Relaxed);
                                greetings.insert(r.body.split_whitespace().next().unwrap_or("").to_string());
                            }
                            Ok(r) => failures.lock().unwrap().push(format!("{} {}", r.status, r.body)),
                            Err(e) => failures.lock().unwrap().push(e.to_string()),
                        }
                    }
                    greetings
                })
            })
            .collect();
        Load { stop, ok, failures, threads }
    }

    /// Requests served with 200 so far.
    pub fn served(&self) -> u64 {
        self.ok.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits until `n` more requests were served (the load goes on after a rollout).
    pub fn wait_more(&self, n: u64) {
        let from = self.served();
        wait_for(T, &format!("{n} more requests served"), || (self.served() >= from + n).then_some(()));
    }

    /// Stops the threads: (greetings seen, failures).
    pub fn finish(self) -> (std::collections::BTreeSet<String>, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut greetings = std::collections::BTreeSet::new();
        for t in self.threads {
            greetings.extend(t.join().unwrap());
        }
        let failures = std::mem::take(&mut *self.failures.lock().unwrap());
        (greetings, failures)
    }
}
