//! A private single-member `etcd` (Debian package `etcd-server`), data in its temp dir.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::http;
use crate::net::free_port;
use crate::service::{Program, Service, ServiceProcess};

const ETCD: Program = Program { bin: "etcd", package: "etcd-server", ready_within: Duration::from_secs(30) };

/// A running `etcd` on loopback (see [`crate::service`]).
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
            let client = format!("http://{addr}");
            let peer = format!("http://127.0.0.1:{}", free_port());
            let mut c = Command::new(ETCD.bin);
            c.args(["--name", "deis-test", "--listen-client-urls", &client, "--advertise-client-urls", &client])
                .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
                .args(["--initial-cluster", &format!("deis-test={peer}"), "--initial-cluster-state", "new"])
                .args(["--log-level", "warn"])
                .arg("--data-dir")
                .arg(dir.join("data"));
            c
        };
        ServiceProcess::start(&ETCD, command, |p| healthy(p.addr())).map(Self)
    }

    fn process(&self) -> Option<&ServiceProcess> {
        Some(&self.0)
    }
}

/// Whether etcd on `addr` reports itself healthy (it has a leader).
fn healthy(addr: SocketAddr) -> bool {
    let response = http::Request::get("/health").timeout(Duration::from_secs(2)).send(addr);
    response.is_ok_and(|r| r.status == 200 && r.body.replace(' ', "").contains("\"health\":\"true\""))
}
