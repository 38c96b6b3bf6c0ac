//! A private `redis-server` (Debian package `redis-server`): no persistence, data in its
//! temp dir.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::service::{Program, Service, ServiceProcess};

const REDIS: Program = Program { bin: "redis-server", package: "redis-server", ready_within: Duration::from_secs(10) };

/// A running `redis-server` on loopback (see [`crate::service`]).
#[derive(Debug)]
pub struct RedisServer(ServiceProcess);

impl Service for RedisServer {
    fn start() -> Option<Self> {
        let command = |addr: SocketAddr, dir: &Path| {
            let mut c = Command::new(REDIS.bin);
            c.args(["--port", &addr.port().to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]);
            c.arg("--dir").arg(dir);
            c
        };
        ServiceProcess::start(&REDIS, command, |p| answers_ping(p.addr())).map(Self)
    }

    fn process(&self) -> Option<&ServiceProcess> {
        Some(&self.0)
    }
}

impl RedisServer {
    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.0.addr()
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr())
    }
}

/// Whether a Redis server on `addr` answers `PING` with `PONG`.
fn answers_ping(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let mut buf = [0u8; 7];
    s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}
