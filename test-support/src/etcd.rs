//! A private single-member `etcd` (Debian package `etcd-server`), data in its temp dir.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use crate::http;
use crate::net::free_port;
use crate::service::{Service, ServiceProcess, skip_without};

/// A running `etcd` on loopback (see [`crate::service`]).
#[derive(Debug)]
pub struct EtcdServer {
    process: ServiceProcess,
}

impl Service for EtcdServer {
    fn start() -> Option<Self> {
        if skip_without("etcd", "etcd-server") {
            return None;
        }
        let process = ServiceProcess::start(
            "etcd",
            Duration::from_secs(30),
            |addr, dir| {
                let client = format!("http://{addr}");
                let peer = format!("http://127.0.0.1:{}", free_port());
                let mut c = Command::new("etcd");
                c.args(["--name", "deis-test", "--listen-client-urls", &client, "--advertise-client-urls", &client])
                    .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
                    .args(["--initial-cluster", &format!("deis-test={peer}"), "--initial-cluster-state", "new"])
                    .args(["--log-level", "warn"])
                    .arg("--data-dir")
                    .arg(dir.join("data"));
                c
            },
            |p| healthy(p.addr()),
        );
        Some(Self { process })
    }

    fn process(&self) -> Option<&ServiceProcess> {
        Some(&self.process)
    }
}

impl EtcdServer {
    /// Its client address.
    pub fn addr(&self) -> SocketAddr {
        self.process.addr()
    }

    /// The client endpoint, `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr())
    }
}

/// Whether etcd on `addr` reports itself healthy (it has a leader).
fn healthy(addr: SocketAddr) -> bool {
    let response = http::Request::get("/health").timeout(Duration::from_secs(2)).send(addr);
    response.is_ok_and(|r| r.status == 200 && r.body.replace(' ', "").contains("\"health\":\"true\""))
}
