//! A private `redis-server` (Debian package `redis-server`): no persistence, data in its
//! temp dir.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use crate::service::{Service, ServiceProcess, skip_without};

/// A running `redis-server` on loopback (see [`crate::service`]).
#[derive(Debug)]
pub struct RedisServer {
    process: ServiceProcess,
}

impl Service for RedisServer {
    fn start() -> Option<Self> {
        if skip_without("redis-server", "redis-server") {
            return None;
        }
        let process = ServiceProcess::start(
            "redis-server",
            Duration::from_secs(10),
            |addr, dir| {
                let mut c = Command::new("redis-server");
                c.args(["--port", &addr.port().to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]);
                c.arg("--dir").arg(dir);
                c
            },
            |p| answers_ping(p.addr()),
        );
        Some(Self { process })
    }

    fn process(&self) -> Option<&ServiceProcess> {
        Some(&self.process)
    }
}

impl RedisServer {
    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.process.addr()
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.addr().port()
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
