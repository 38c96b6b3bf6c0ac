//! The one shape of every starter of a real service ([`crate::redis::RedisServer`],
//! [`crate::docker::DockerEngine`], [`crate::etcd::EtcdServer`], next a registry and
//! PostgreSQL):
//!
//! - [`Service::start`] runs a private instance ([`ServiceProcess::start`]): on a free
//!   loopback port, with a temporary data dir holding its log, waiting until it answers
//!   (a condition, never a fixed sleep), stopped by PID on drop;
//! - [`shared`] hands out one instance per test process (stopped when the process exits);
//! - a missing program skips the test loudly, and fails it on CI ([`skip_without`]);
//!   `scripts/install-deps` installs every program a starter needs.
//!
//! Adding a service: a [`Program`], a struct holding a [`ServiceProcess`], and
//! `impl Service` whose `start` calls [`ServiceProcess::start`] with the command line
//! and the ready check; `scripts/install-deps` installs the program.
//!
//! ```no_run
//! use deis_test_support::redis::RedisServer;
//! use deis_test_support::service::Service;
//! # fn f() {
//! let Some(redis) = RedisServer::shared() else { return }; // skipped loudly
//! let url = redis.url();
//! # }
//! ```

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, Once, OnceLock};
use std::time::{Duration, Instant};

use crate::net::free_addr;
use crate::proc::{installed, stop_pid};

/// How many free ports a starter tries before giving up (another process may take a
/// free port between our probe and the server's bind).
const PORT_ATTEMPTS: usize = 3;

/// Whether to skip a test because `bin` is missing: `true` (with a loud message) when it
/// is and `CI` is unset; panics when it is missing on CI. `package` is the Debian package
/// that has it.
pub fn skip_without(bin: &str, package: &str) -> bool {
    if installed(bin) {
        return false;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{bin} is missing on CI: run scripts/install-deps (Debian package {package})");
    }
    eprintln!("\n*** SKIPPED: {bin} is not installed (apt-get install {package}, or scripts/install-deps) ***\n");
    true
}

/// A real service for tests.
pub trait Service: Sized + Send + Sync + 'static {
    /// Starts a private instance; `None` when the test is to be skipped (see
    /// [`skip_without`]). Panics when the service does not come up.
    fn start() -> Option<Self>;

    /// The process started for it, if any (a starter may reuse one that runs already).
    fn process(&self) -> Option<&ServiceProcess>;

    /// The instance shared by this test process (see [`shared`]).
    fn shared() -> Option<&'static Self> {
        shared::<Self>()
    }
}

/// One instance of `S` per test process, started on first use and stopped when the
/// process exits. With `cargo test` every test of a binary shares it; nextest runs each
/// test in its own process, so there it is the test's own. Tests sharing one keep to
/// their own keys (a prefix, a database, names of their own).
pub fn shared<S: Service>() -> Option<&'static S> {
    type Instances = Mutex<HashMap<TypeId, Option<&'static (dyn Any + Send + Sync)>>>;
    static INSTANCES: OnceLock<Instances> = OnceLock::new();
    // Held while starting, so two tests never start two instances of one service.
    let mut instances = INSTANCES.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    let instance = *instances.entry(TypeId::of::<S>()).or_insert_with(|| {
        let s: &'static S = Box::leak(Box::new(S::start()?));
        // Statics are never dropped: stop the process when the test process exits.
        if let Some(p) = s.process() {
            stop_at_exit(p.pid(), p.dir().to_path_buf());
        }
        Some(s)
    });
    instance.map(|s| s.downcast_ref::<S>().expect("the instance of its own type"))
}

/// A program a starter runs.
#[derive(Debug, Clone, Copy)]
pub struct Program {
    /// The executable (on `PATH`, or a path).
    pub bin: &'static str,
    /// The Debian package that has it (named when it is missing).
    pub package: &'static str,
    /// How long it may take to answer once started.
    pub ready_within: Duration,
}

/// A service process: its own temp dir (data and `<name>.log`), its loopback address,
/// stopped by PID (`SIGTERM`, then `SIGKILL`) on drop.
#[derive(Debug)]
pub struct ServiceProcess {
    name: &'static str,
    addr: SocketAddr,
    child: Child,
    dir: tempfile::TempDir,
}

impl ServiceProcess {
    /// Starts `program` on a free loopback address, or returns None when it is not
    /// installed (see [`skip_without`]): `command(addr, dir)` builds its command line
    /// (serving `addr`, keeping its data in `dir`), and it is up once `ready(&process)`
    /// holds, within `program.ready_within`. If the process exits first (its port taken
    /// meanwhile), tries again on another port; panics with its log when it never comes
    /// up.
    pub fn start(
        program: &Program,
        mut command: impl FnMut(SocketAddr, &Path) -> Command,
        mut ready: impl FnMut(&ServiceProcess) -> bool,
    ) -> Option<Self> {
        let Program { bin, package, ready_within: timeout } = *program;
        if skip_without(bin, package) {
            return None;
        }
        // A program given by path logs to `<file name>.log`.
        let name = bin.rsplit('/').next().unwrap_or(bin);
        let mut last_log = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let dir = tempfile::Builder::new().prefix(&format!("deis-{name}-")).tempdir().expect("a temp dir");
            let addr = free_addr();
            let log = std::fs::File::create(dir.path().join(format!("{name}.log"))).expect("a log file");
            let child = command(addr, dir.path())
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("the log file"))
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("starting {name}: {e}"));
            let mut process = Self { name, addr, child, dir };
            let deadline = Instant::now() + timeout;
            loop {
                if ready(&process) {
                    return Some(process);
                }
                if process.child.try_wait().ok().flatten().is_some() {
                    last_log = process.log();
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{name} did not answer on {addr} within {timeout:?}; its log:\n{}",
                    process.log()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("{name} exited before it answered ({PORT_ATTEMPTS} tries); its last log:\n{last_log}")
    }

    /// The loopback address it serves.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its temp dir (data and log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its output so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{}.log", self.name))).unwrap_or_default()
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        stop_pid(self.child.id());
        let _ = self.child.wait();
        unmount_under(self.dir.path());
    }
}

/// Detaches whatever the stopped process left mounted under `dir` (dockerd keeps its
/// network namespaces bind-mounted in its exec root), deepest first, so the temp dir can
/// be removed instead of piling up in `/tmp`.
fn unmount_under(dir: &Path) {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else { return };
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|line| line.split(' ').nth(1))
        .filter(|point| Path::new(point).starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for point in points {
        let _ = std::process::Command::new("umount").args(["-l", point]).output();
    }
}

/// Stops `pid` and removes `dir` when the test process exits (for instances in statics).
fn stop_at_exit(pid: u32, dir: PathBuf) {
    static AT_EXIT: Mutex<Vec<(u32, PathBuf)>> = Mutex::new(Vec::new());
    extern "C" fn at_exit() {
        let entries = AT_EXIT.lock().map(|mut e| std::mem::take(&mut *e)).unwrap_or_default();
        for (pid, dir) in entries {
            stop_pid(pid);
            unmount_under(&dir);
            let _ = std::fs::remove_dir_all(dir);
        }
    }
    unsafe extern "C" {
        fn atexit(f: extern "C" fn()) -> i32;
    }
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        // SAFETY: registers a plain `extern "C" fn()` without arguments with the C
        // runtime; it runs once at exit and only locks a static and stops processes.
        unsafe { atexit(at_exit) };
    });
    AT_EXIT.lock().unwrap_or_else(|e| e.into_inner()).push((pid, dir));
}
