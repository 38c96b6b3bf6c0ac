//! A Docker engine for tests: the environment's own when `docker info` answers, else a
//! private `dockerd` (Debian package `docker.io`) with its socket, data root, exec root
//! and pidfile in its temp dir.
//!
//! ```no_run
//! use deis_test_support::docker::DockerEngine;
//! use deis_test_support::service::Service;
//! # fn f() {
//! let Some(engine) = DockerEngine::shared() else { return }; // skipped loudly
//! let image = engine.busybox_image();
//! let out = engine.docker().args(["run", "--rm", &image, "echo", "hi"]).output().unwrap();
//! # }
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use crate::service::{Program, Service, ServiceProcess, skip_without};

const DOCKERD: Program = Program { bin: "dockerd", package: "docker.io", ready_within: Duration::from_secs(60) };

/// Tag of the busybox image built offline by [`DockerEngine::busybox_image`].
pub const BUSYBOX_IMAGE: &str = "deis-test/busybox:latest";

/// A Docker engine the tests may use (see [`crate::service`]).
#[derive(Debug)]
pub struct DockerEngine {
    /// `-H` value, or `None` for the environment's default engine.
    host: Option<String>,
    /// Our own dockerd, if we started one.
    process: Option<ServiceProcess>,
    image_built: Mutex<bool>,
    /// The Linux bridge made for [`DockerEngine::start_private_bridged`], deleted on drop.
    bridge: Option<String>,
}

impl Service for DockerEngine {
    /// Reuses the environment's engine if `docker info` answers, else starts a private
    /// `dockerd`.
    fn start() -> Option<Self> {
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
            return Some(Self { host: None, process: None, image_built: Mutex::new(false), bridge: None });
        }
        Self::start_private()
    }

    fn process(&self) -> Option<&ServiceProcess> {
        self.process.as_ref()
    }
}

fn socket(dir: &Path) -> String {
    format!("unix://{}", dir.join("docker.sock").display())
}

fn info_answers(host: &str) -> bool {
    let ok = Command::new("docker").args(["-H", host, "info"]).stdout(Stdio::null()).stderr(Stdio::null()).status();
    ok.is_ok_and(|s| s.success())
}

impl DockerEngine {
    /// Starts a private dockerd (listening on a unix socket in its temp dir, not on the
    /// loopback port) and waits until `docker info` answers; None if dockerd is missing.
    pub fn start_private() -> Option<Self> {
        Self::start_engine(None)
    }

    /// A private dockerd (as [`DockerEngine::start_private`]) whose default bridge is a
    /// Linux bridge of its own (name and subnet unique to this process, deleted on
    /// drop), for containers with published ports: `docker-proxy` forwards them, the
    /// host's firewall is left alone (`--iptables=false`). One per test process.
    pub fn start_private_bridged() -> Option<Self> {
        if skip_without("ip", "iproute2") {
            return None;
        }
        let id = std::process::id();
        let bridge = format!("dbr{:08x}", id ^ 0x0b1d_0000);
        let address = format!("10.{}.{}.1/24", 150 + (id / 256) % 50, id % 256);
        let _ = Command::new("ip").args(["link", "del", &bridge]).output();
        for args in [
            vec!["link", "add", "name", &bridge, "type", "bridge"],
            vec!["addr", "add", &address, "dev", &bridge],
            vec!["link", "set", &bridge, "up"],
        ] {
            let out = Command::new("ip").args(&args).output().expect("ip");
            assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
        }
        let engine = Self::start_engine(Some(bridge.clone()));
        if engine.is_none() {
            let _ = Command::new("ip").args(["link", "del", &bridge]).output();
        }
        engine
    }

    fn start_engine(bridge: Option<String>) -> Option<Self> {
        let network = bridge.clone();
        let command = move |_addr: SocketAddr, dir: &Path| {
            let mut c = Command::new(DOCKERD.bin);
            c.arg("--host").arg(socket(dir));
            c.arg("--data-root").arg(dir.join("data"));
            c.arg("--exec-root").arg(dir.join("exec"));
            c.arg("--pidfile").arg(dir.join("docker.pid"));
            // Leave the host's network alone; tests run containers with --network none
            // (or on the bridge made for this engine).
            c.args(["--iptables=false", "--ip6tables=false"]);
            c.arg(format!("--bridge={}", network.as_deref().unwrap_or("none")));
            c
        };
        let process = ServiceProcess::start(&DOCKERD, command, |p| info_answers(&socket(p.dir())))?;
        let host = socket(process.dir());
        Some(Self { host: Some(host), process: Some(process), image_built: Mutex::new(false), bridge })
    }

    /// The `-H` address of the engine (None: the default one).
    pub fn host(&self) -> Option<&str> {
        self.host.as_deref()
    }

    /// The engine's unix socket path.
    pub fn socket_path(&self) -> String {
        match &self.host {
            Some(h) => h.trim_start_matches("unix://").to_string(),
            None => "/var/run/docker.sock".to_string(),
        }
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
        let mut built = self.image_built.lock().unwrap_or_else(|e| e.into_inner());
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

/// Tag of the Debian stack image (with Python) [`DockerEngine::stack_image`] imports.
pub const STACK_IMAGE: &str = "deis/stack:bookworm";

impl DockerEngine {
    /// Imports (once) [`STACK_IMAGE`]: a minimal Debian bookworm with `python3`, from
    /// `debootstrap` on the package mirror apt uses, cached as a tarball in `cache` (a
    /// test's `CARGO_TARGET_TMPDIR`: the first run takes a minute or two). None, said
    /// loudly, when `debootstrap` is missing.
    pub fn stack_image(&self, cache: &Path) -> Option<String> {
        if skip_without("debootstrap", "debootstrap") {
            return None;
        }
        let tarball = cache.join("deis-stack-bookworm.tar");
        if !tarball.exists() {
            build_stack_tarball(&tarball);
        }
        let status = self
            .docker()
            .args(["import", "-c", "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"])
            .arg(&tarball)
            .arg(STACK_IMAGE)
            .stdout(Stdio::null())
            .status()
            .expect("docker import");
        assert!(status.success(), "docker import of {} failed", tarball.display());
        Some(STACK_IMAGE.into())
    }
}

/// `debootstrap --variant=minbase --include=python3 bookworm` into a temp dir, packed
/// into `tarball` (renamed into place, so parallel tests never read half of one).
fn build_stack_tarball(tarball: &Path) {
    let sources = std::fs::read_to_string("/etc/apt/sources.list.d/debian.sources").unwrap_or_default();
    let mirror = sources
        .lines()
        .find_map(|l| l.strip_prefix("URIs:"))
        .and_then(|u| u.split_whitespace().next())
        .unwrap_or("http://deb.debian.org/debian")
        .to_string();
    let parent = tarball.parent().expect("a cache dir");
    std::fs::create_dir_all(parent).expect("cache dir");
    let root = tempfile::tempdir_in(parent).expect("temp dir");
    let out = Command::new("debootstrap")
        .args(["--variant=minbase", "--include=python3", "bookworm"])
        .arg(root.path().join("rootfs"))
        .arg(&mirror)
        .output()
        .expect("debootstrap");
    assert!(out.status.success(), "debootstrap from {mirror}: {}", String::from_utf8_lossy(&out.stderr));
    let partial = root.path().join("stack.tar");
    let status =
        Command::new("tar").arg("-C").arg(root.path().join("rootfs")).args(["-cf"]).arg(&partial).arg(".").status();
    assert!(status.is_ok_and(|s| s.success()), "tar of the stack rootfs failed");
    std::fs::rename(&partial, tarball).expect("stack tarball into place");
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

/// A one-node Docker Swarm for tests: a private dockerd (see
/// [`DockerEngine::start_private`]) made a manager with `docker swarm init
/// --advertise-addr 127.0.0.1`, on a listen port, data path port and `docker_gwbridge`
/// (its own Linux bridge name and subnet) of its own, so swarms of parallel test
/// processes stay apart. On drop it leaves the swarm, stops the engine and deletes its
/// bridge. Start one per test binary: swarm takes seconds to come up.
#[derive(Debug)]
pub struct DockerSwarm {
    engine: Option<DockerEngine>,
    bridge: String,
}

impl DockerSwarm {
    /// Starts the engine and the swarm; None when dockerd is missing.
    pub fn start() -> Option<Self> {
        let engine = DockerEngine::start_private()?;
        let id = std::process::id();
        // Unique per process: bridge names are machine-wide, and so are subnets.
        let bridge = format!("dgw{:08x}", id ^ 0x5eed_0000);
        let subnet = format!("10.{}.{}.0/24", 200 + (id / 256) % 50, id % 256);
        let swarm = Self { engine: Some(engine), bridge };
        let engine = swarm.engine();
        gwbridge(engine, &swarm.bridge, &subnet);
        let listen = format!("127.0.0.1:{}", crate::net::free_port());
        let data_port = (40000 + id % 9000).to_string();
        let init = engine
            .docker()
            .args(["swarm", "init", "--advertise-addr", "127.0.0.1", "--listen-addr", &listen])
            .args(["--data-path-port", &data_port])
            .output()
            .expect("docker swarm init");
        assert!(init.status.success(), "docker swarm init: {}", String::from_utf8_lossy(&init.stderr));
        Some(swarm)
    }

    /// The manager's engine.
    pub fn engine(&self) -> &DockerEngine {
        self.engine.as_ref().expect("the engine runs until drop")
    }

    /// The manager's API endpoint (`unix:///…`).
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.engine().socket_path())
    }

    /// `docker node update ARGS NODE` on the manager, NODE being the node of `engine`
    /// (the manager's own, or a [`SwarmWorker`]'s), e.g. `["--label-add",
    /// "deis.planes=control"]`.
    pub fn update_node(&self, engine: &DockerEngine, args: &[&str]) {
        let node = engine.docker().args(["info", "--format", "{{.Swarm.NodeID}}"]).output().expect("docker info");
        let node = String::from_utf8_lossy(&node.stdout).trim().to_string();
        let out = self.engine().docker().args(["node", "update"]).args(args).arg(&node).output().expect("docker");
        assert!(out.status.success(), "docker node update {args:?} {node}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// A second node: a private dockerd (its own `docker_gwbridge`) joined as a worker,
    /// advertising 127.0.0.1 on a port of its own. Also makes the managers expect a
    /// heartbeat every second, so a stopped worker is down within seconds.
    pub fn join_worker(&self) -> Option<SwarmWorker> {
        let engine = DockerEngine::start_private()?;
        let id = std::process::id();
        let bridge = format!("dgw{:08x}", id ^ 0x00b0_0000);
        let worker = SwarmWorker { engine: Some(engine), bridge };
        gwbridge(worker.engine(), &worker.bridge, &format!("10.{}.{}.0/24", 100 + (id / 256) % 50, id % 256));
        let manager = self.engine();
        let out = manager.docker().args(["swarm", "update", "--dispatcher-heartbeat", "1s"]).output().unwrap();
        assert!(out.status.success(), "docker swarm update: {}", String::from_utf8_lossy(&out.stderr));
        let token = manager.docker().args(["swarm", "join-token", "-q", "worker"]).output().unwrap();
        let token = String::from_utf8_lossy(&token.stdout).trim().to_string();
        let addr = |e: &DockerEngine| {
            let out = e.docker().args(["info", "--format", "{{.Swarm.NodeAddr}}"]).output().unwrap();
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        let managers = ["info", "--format", "{{range .Swarm.RemoteManagers}}{{.Addr}}{{end}}"];
        let manager_addr = manager.docker().args(managers).output().unwrap();
        let manager_addr = String::from_utf8_lossy(&manager_addr.stdout).trim().to_string();
        let listen = format!("127.0.0.1:{}", crate::net::free_port());
        let join = worker
            .engine()
            .docker()
            .args(["swarm", "join", "--token", &token, "--advertise-addr", &listen, "--listen-addr", &listen])
            .arg(&manager_addr)
            .output()
            .expect("docker swarm join");
        assert!(join.status.success(), "docker swarm join {manager_addr}: {}", String::from_utf8_lossy(&join.stderr));
        assert_eq!(addr(worker.engine()), "127.0.0.1");
        Some(worker)
    }
}

/// A worker node of a [`DockerSwarm`] ([`DockerSwarm::join_worker`]): on drop it leaves
/// the swarm (if its engine still runs), stops its engine and deletes its bridge.
#[derive(Debug)]
pub struct SwarmWorker {
    engine: Option<DockerEngine>,
    bridge: String,
}

impl SwarmWorker {
    /// The worker's engine; panics after [`SwarmWorker::stop`].
    pub fn engine(&self) -> &DockerEngine {
        self.engine.as_ref().expect("the worker's engine was stopped")
    }

    /// Stops the worker's engine without leaving the swarm, as a host that goes away.
    pub fn stop(&mut self) {
        // Dropping the engine stops it and unmounts its network namespaces.
        drop(self.engine.take());
    }
}

impl Drop for SwarmWorker {
    fn drop(&mut self) {
        if let Some(engine) = &self.engine {
            let _ = engine.docker().args(["swarm", "leave", "--force"]).output();
        }
        self.stop();
        let _ = Command::new("ip").args(["link", "del", &self.bridge]).output();
    }
}

/// `docker_gwbridge` on `engine` as Linux bridge `name` on `subnet` (bridge names and
/// subnets are machine-wide: engines of parallel tests must not share them).
fn gwbridge(engine: &DockerEngine, name: &str, subnet: &str) {
    let out = engine
        .docker()
        .args(["network", "create", "--subnet", subnet])
        .args(["--opt", &format!("com.docker.network.bridge.name={name}")])
        .args(["--opt", "com.docker.network.bridge.enable_icc=false"])
        .args(["--opt", "com.docker.network.bridge.enable_ip_masquerade=false", "docker_gwbridge"])
        .output()
        .expect("docker network create");
    assert!(out.status.success(), "docker_gwbridge: {}", String::from_utf8_lossy(&out.stderr));
}

impl Drop for DockerEngine {
    fn drop(&mut self) {
        // The engine first: its containers hold ports on the bridge.
        drop(self.process.take());
        if let Some(bridge) = &self.bridge {
            let _ = Command::new("ip").args(["link", "del", bridge]).output();
        }
    }
}

impl Drop for DockerSwarm {
    fn drop(&mut self) {
        let Some(engine) = self.engine.take() else { return };
        let _ = engine.docker().args(["swarm", "leave", "--force"]).output();
        // Dropping the engine stops it and unmounts its network namespaces.
        drop(engine);
        let _ = Command::new("ip").args(["link", "del", &self.bridge]).output();
    }
}
