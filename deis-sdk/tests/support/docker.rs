//! A Docker engine for tests: reuses one that answers, or starts a private `dockerd`
//! (own socket, data root, exec root and pidfile in a temp dir) and stops it by PID.
//!
//! Self-contained (std + tempfile only) so any test crate can `#[path]`-include it:
//!
//! ```ignore
//! #[path = "support/docker.rs"] mod docker;
//! let Some(engine) = docker::DockerEngine::get() else { return };  // skipped loudly
//! let image = engine.busybox_image();
//! let out = engine.docker().args(["run", "--rm", &image, "echo", "hi"]).output().unwrap();
//! ```

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Tag of the busybox image built offline by [`DockerEngine::busybox_image`].
pub const BUSYBOX_IMAGE: &str = "deis-test/busybox:latest";

/// A Docker engine the tests may use.
#[derive(Debug)]
pub struct DockerEngine {
    /// `-H` value, or `None` for the environment's default engine.
    host: Option<String>,
    /// Our own dockerd, if we started one.
    child: Option<Child>,
    dir: Option<tempfile::TempDir>,
    image_built: Mutex<bool>,
}

fn have(bin: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {bin}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Skips (returns true) with a loud message when `bin` is missing and `CI` is unset;
/// panics when it is missing on CI.
pub fn skip_without(bin: &str, package: &str) -> bool {
    if have(bin) {
        return false;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{bin} is missing on CI: run scripts/install-deps (Debian package {package})");
    }
    eprintln!("\n*** SKIPPED: {bin} is not installed (apt-get install {package}, or scripts/install-deps) ***\n");
    true
}

impl DockerEngine {
    /// The engine shared by this test binary (started on first use, stopped when the
    /// process exits... see [`DockerEngine::start`] for a private one). `None`: skipped.
    pub fn get() -> Option<&'static DockerEngine> {
        static ENGINE: OnceLock<Option<DockerEngine>> = OnceLock::new();
        ENGINE
            .get_or_init(|| {
                let engine = Self::start()?;
                // Statics are never dropped: stop our dockerd when the test process exits.
                if let Some(child) = &engine.child {
                    register_exit_kill(child.id(), engine.dir.as_ref().map(|d| d.path().to_path_buf()));
                }
                Some(engine)
            })
            .as_ref()
    }

    /// Reuses the environment's engine if `docker info` answers, else starts a private
    /// `dockerd`. `None` if docker isn't installed (and `CI` is unset).
    pub fn start() -> Option<Self> {
        if skip_without("docker", "docker.io") {
            return None;
        }
        let reuse = Command::new("docker")
            .arg("info")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if reuse {
            return Some(Self { host: None, child: None, dir: None, image_built: Mutex::new(false) });
        }
        if skip_without("dockerd", "docker.io") {
            return None;
        }
        Some(Self::start_private())
    }

    /// Starts a private dockerd in a temp dir and waits (up to 60 s) for it to answer.
    pub fn start_private() -> Self {
        let dir = tempfile::Builder::new().prefix("deis-dockerd").tempdir_in("/tmp").expect("temp dir");
        let d = dir.path();
        let host = format!("unix://{}", d.join("docker.sock").display());
        let log = std::fs::File::create(d.join("dockerd.log")).expect("dockerd log");
        let child = Command::new("dockerd")
            .arg("--host")
            .arg(&host)
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("docker.pid"))
            // Leave the host's network alone; tests run containers with --network none.
            .args(["--iptables=false", "--ip6tables=false", "--bridge=none"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("starting dockerd");
        let engine = Self { host: Some(host), child: Some(child), dir: Some(dir), image_built: Mutex::new(false) };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ok = engine.docker().arg("info").stdout(Stdio::null()).stderr(Stdio::null()).status();
            if ok.is_ok_and(|s| s.success()) {
                return engine;
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(engine.dir.as_ref().unwrap().path().join("dockerd.log"));
                panic!("dockerd did not answer within 60 s; its log:\n{}", log.unwrap_or_default());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The `-H` address of the engine (None: the default one).
    pub fn host(&self) -> Option<&str> {
        self.host.as_deref()
    }

    /// A `docker` command talking to this engine.
    pub fn docker(&self) -> Command {
        let mut c = Command::new("docker");
        if let Some(h) = &self.host {
            c.arg("-H").arg(h);
        }
        c
    }

    /// Builds (once) `deis-test/busybox:latest` offline from Debian's `busybox-static`:
    /// a rootfs with /bin/busybox and its applet links, imported with `PATH=/bin`.
    pub fn busybox_image(&self) -> String {
        let mut built = self.image_built.lock().unwrap();
        if *built {
            return BUSYBOX_IMAGE.into();
        }
        let busybox = ["/bin/busybox", "/usr/bin/busybox"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .expect("busybox is missing: apt-get install busybox-static (scripts/install-deps)");
        let rootfs = tempfile::tempdir().expect("temp dir");
        build_rootfs(&busybox, rootfs.path());
        let mut tar = Command::new("tar")
            .arg("-C")
            .arg(rootfs.path())
            .args(["-c", "."])
            .stdout(Stdio::piped())
            .spawn()
            .expect("tar");
        let status = self
            .docker()
            .args(["import", "-c", "ENV PATH=/bin", "-", BUSYBOX_IMAGE])
            .stdin(tar.stdout.take().expect("tar stdout"))
            .stdout(Stdio::null())
            .status()
            .expect("docker import");
        assert!(tar.wait().is_ok_and(|s| s.success()), "tar of the busybox rootfs failed");
        assert!(status.success(), "docker import of the busybox rootfs failed");
        *built = true;
        BUSYBOX_IMAGE.into()
    }
}

fn build_rootfs(busybox: &Path, root: &Path) {
    let bin = root.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(root.join("tmp")).unwrap();
    std::fs::copy(busybox, bin.join("busybox")).unwrap();
    let list = Command::new(busybox).arg("--list").output().expect("busybox --list");
    for applet in String::from_utf8_lossy(&list.stdout).lines().map(str::trim).filter(|a| !a.is_empty()) {
        if applet != "busybox" {
            let _ = std::os::unix::fs::symlink("busybox", bin.join(applet));
        }
    }
}

/// Stops `pid` (SIGTERM, then SIGKILL after 10 s) and waits for it to be gone.
pub fn stop_pid(pid: u32) {
    let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
        // A zombie (our child, not yet reaped) counts as gone.
        if std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z ")) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
}

/// Stops `pid` and removes `dir` when the test process exits (for engines in statics).
fn register_exit_kill(pid: u32, dir: Option<PathBuf>) {
    static PIDS: Mutex<Vec<(u32, Option<PathBuf>)>> = Mutex::new(Vec::new());
    extern "C" fn at_exit() {
        for (pid, dir) in PIDS.lock().map(|p| p.clone()).unwrap_or_default() {
            stop_pid(pid);
            if let Some(dir) = dir {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
    let mut pids = PIDS.lock().unwrap();
    if pids.is_empty() {
        // SAFETY: registering a plain `extern "C" fn()` with the C runtime.
        unsafe { libc_atexit(at_exit) };
    }
    pids.push((pid, dir));
}

unsafe extern "C" {
    #[link_name = "atexit"]
    fn libc_atexit(f: extern "C" fn()) -> i32;
}

impl Drop for DockerEngine {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_pid(child.id());
            let _ = child.wait();
        }
    }
}
