//! Private `etcd` (Debian package `etcd-server`) on loopback, data in temp dirs:
//! [`EtcdServer`], one member in the [`crate::service`] shape (shared per test process),
//! and [`EtcdCluster`], members a test may kill, stop and restart.
//!
//! Both serve the v2 HTTP API too (`--enable-v2`, for Deis v1 keyspaces) and take
//! requests up to 8 MiB (`--max-request-bytes`: the `Store` allows 4 MiB values), with
//! short raft timeouts (heartbeat 50 ms, election 500 ms) so that elections in tests take
//! about a second.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::http;
use crate::net::{free_addr, free_port};
use crate::proc::{signal, stop_pid};
use crate::service::{Program, Service, ServiceProcess, skip_without};
use crate::wait::wait_for;

const ETCD: Program = Program { bin: "etcd", package: "etcd-server", ready_within: Duration::from_secs(30) };

/// A running single-member `etcd` on loopback (see [`crate::service`]).
#[derive(Debug)]
pub struct EtcdServer(ServiceProcess);

impl EtcdServer {
    /// The client endpoint, `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// Its client address.
    pub fn addr(&self) -> SocketAddr {
        self.0.addr()
    }
}

impl Service for EtcdServer {
    fn start() -> Option<Self> {
        let command = |addr: SocketAddr, dir: &Path| {
            let peer = format!("http://127.0.0.1:{}", free_port());
            member_command("deis-test", addr, &peer, &format!("deis-test={peer}"), "new", &dir.join("data"))
        };
        ServiceProcess::start(&ETCD, command, |p| healthy(p.addr())).map(Self)
    }

    fn process(&self) -> Option<&ServiceProcess> {
        Some(&self.0)
    }
}

/// The command line of one member.
fn member_command(name: &str, client: SocketAddr, peer: &str, cluster: &str, state: &str, data: &Path) -> Command {
    let client = format!("http://{client}");
    let mut c = Command::new(ETCD.bin);
    c.args(["--name", name, "--listen-client-urls", &client, "--advertise-client-urls", &client])
        .args(["--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer])
        .args(["--initial-cluster", cluster, "--initial-cluster-state", state])
        .args(["--initial-cluster-token", "deis-test"])
        .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
        .args(["--max-request-bytes", "8388608", "--enable-v2", "--log-level", "warn"])
        .arg("--data-dir")
        .arg(data);
    c
}

/// Whether etcd on `addr` reports itself healthy (it has a leader).
fn healthy(addr: SocketAddr) -> bool {
    let response = http::Request::get("/health").timeout(Duration::from_secs(2)).send(addr);
    response.is_ok_and(|r| r.status == 200 && r.body.replace(' ', "").contains("\"health\":\"true\""))
}

/// One member of an [`EtcdCluster`]: fixed ports and data dir, so it can be killed and
/// started again as the same member.
#[derive(Debug)]
struct Member {
    name: String,
    client: SocketAddr,
    peer: String,
    data: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// A cluster of `etcd` members on loopback that a test can kill, stop and restart
/// ([`EtcdCluster::kill`], [`EtcdCluster::restart`]). Stopped (by PID) on drop.
#[derive(Debug)]
pub struct EtcdCluster {
    members: Vec<Member>,
    cluster: String,
    dir: tempfile::TempDir,
}

impl EtcdCluster {
    /// Starts `n` members and waits until the cluster has a leader; `None` when etcd is
    /// not installed (see [`skip_without`]). Panics when it does not come up.
    pub fn start(n: usize) -> Option<Self> {
        if skip_without(ETCD.bin, ETCD.package) {
            return None;
        }
        let dir = tempfile::Builder::new().prefix("deis-etcd-cluster-").tempdir().expect("a temp dir");
        let members: Vec<Member> = (0..n)
            .map(|i| {
                let name = format!("m{i}");
                Member {
                    data: dir.path().join(format!("{name}.data")),
                    log: dir.path().join(format!("{name}.log")),
                    client: free_addr(),
                    peer: format!("http://127.0.0.1:{}", free_port()),
                    name,
                    child: None,
                }
            })
            .collect();
        let cluster = members.iter().map(|m| format!("{}={}", m.name, m.peer)).collect::<Vec<_>>().join(",");
        let mut c = Self { members, cluster, dir };
        for i in 0..n {
            c.spawn(i, "new");
        }
        c.wait_healthy();
        Some(c)
    }

    fn spawn(&mut self, i: usize, state: &str) {
        let m = &self.members[i];
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&m.log).expect("a log file");
        let child = member_command(&m.name, m.client, &m.peer, &self.cluster, state, &m.data)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("the log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting etcd: {e}"));
        self.members[i].child = Some(child);
    }

    /// The client endpoints of every member, `http://127.0.0.1:<port>`.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| format!("http://{}", m.client)).collect()
    }

    /// Member `i`'s client address.
    pub fn addr(&self, i: usize) -> SocketAddr {
        self.members[i].client
    }

    /// How many members it has.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether it has no members.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The index of the member that leads now, if the running members agree on one.
    pub fn leader(&self) -> Option<usize> {
        let mut ids = Vec::new();
        let mut leaders = Vec::new();
        for m in &self.members {
            let status = m.child.as_ref().and_then(|_| status(m.client));
            ids.push(status.as_ref().map(|s| s.0.clone()));
            if let Some((_, leader)) = status {
                leaders.push(leader);
            }
        }
        let leader = leaders.first()?;
        if leaders.iter().any(|l| l != leader) || leader == "0" {
            return None;
        }
        ids.iter().position(|id| id.as_deref() == Some(leader.as_str()))
    }

    /// Waits for a leader and returns its index; panics after `timeout`.
    pub fn wait_leader(&self, timeout: Duration) -> usize {
        wait_for(timeout, "an etcd leader", || self.leader())
    }

    /// Kills member `i` with SIGKILL (no goodbye to its peers) and waits until it is gone.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            signal(child.id(), "KILL");
            let _ = child.wait();
        }
    }

    /// Stops member `i` gracefully (SIGTERM).
    pub fn stop(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            stop_pid(child.id());
            let _ = child.wait();
        }
    }

    /// Starts member `i` again (same name, ports and data) and waits until it is healthy.
    pub fn restart(&mut self, i: usize) {
        assert!(self.members[i].child.is_none(), "member {i} still runs");
        self.spawn(i, "existing");
        let addr = self.members[i].client;
        let deadline = Instant::now() + ETCD.ready_within;
        while !healthy(addr) {
            assert!(Instant::now() < deadline, "etcd member {i} did not come back; its log:\n{}", self.log(i));
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Member `i`'s output so far.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.members[i].log).unwrap_or_default()
    }

    /// The cluster's temp dir (data and logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn wait_healthy(&self) {
        let deadline = Instant::now() + ETCD.ready_within;
        loop {
            if self.members.iter().all(|m| healthy(m.client)) {
                return;
            }
            let logs: String = (0..self.members.len()).map(|i| format!("--- m{i}\n{}", self.log(i))).collect();
            assert!(Instant::now() < deadline, "the etcd cluster did not come up; logs:\n{logs}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

/// A member's (id, leader id), from the v3 JSON gateway's status call.
fn status(addr: SocketAddr) -> Option<(String, String)> {
    let r = http::Request::post("/v3/maintenance/status").body("{}").timeout(Duration::from_secs(1)).send(addr).ok()?;
    if r.status != 200 {
        return None;
    }
    let field = |name: &str| -> Option<String> {
        let at = r.body.find(&format!("\"{name}\":"))? + name.len() + 3;
        let rest = r.body[at..].trim_start().trim_start_matches('"');
        Some(rest.chars().take_while(|c| c.is_ascii_digit()).collect())
    };
    Some((field("member_id")?, field("leader")?))
}

/// A v2 write: `key` = `value` with an optional TTL in seconds.
fn v2_put(key: &str, value: &str, ttl: Option<u64>) -> http::Request {
    let mut form = format!("value={}", form_encode(value));
    if let Some(ttl) = ttl {
        form.push_str(&format!("&ttl={ttl}"));
    }
    http::Request::new("PUT", &format!("/v2/keys{key}"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(form)
}

fn v2_result(key: &str, r: io::Result<http::Response>) -> io::Result<()> {
    let r = r?;
    if matches!(r.status, 200 | 201) {
        Ok(())
    } else {
        Err(io::Error::other(format!("v2 PUT {key}: {} {}", r.status, r.body)))
    }
}

/// Writes `key` (`/deis/…`) = `value` through etcd's v2 HTTP API (`PUT /v2/keys<key>`),
/// with a TTL in seconds if given: how a Deis v1 keyspace is seeded. Needs
/// `--enable-v2`, which these servers have.
pub fn v2_set(addr: SocketAddr, key: &str, value: &str, ttl: Option<u64>) -> io::Result<()> {
    v2_result(key, v2_put(key, value, ttl).send(addr))
}

/// [`v2_set`] without blocking the runtime (to seed many keys concurrently).
pub async fn v2_set_async(addr: SocketAddr, key: &str, value: &str, ttl: Option<u64>) -> io::Result<()> {
    v2_result(key, v2_put(key, value, ttl).send_async(addr).await)
}

/// `application/x-www-form-urlencoded` escaping of a value.
fn form_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
