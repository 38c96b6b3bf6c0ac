//! Loopback ports.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use crate::wait::wait_for;

/// A free loopback TCP port: bound, then released. Another process may take it before
/// the caller binds it; starters that hand it to a server retry on a new port when the
/// server fails to start (see [`crate::service::ServiceProcess::start`]).
pub fn free_port() -> u16 {
    free_addr().port()
}

/// `127.0.0.1:<free port>` (see [`free_port`]).
pub fn free_addr() -> SocketAddr {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).and_then(|l| l.local_addr()).expect("binding a loopback port")
}

/// Whether something accepts TCP connections on `addr` now.
pub fn listening(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
}

/// Waits until something accepts TCP connections on `addr`; panics after `timeout`.
pub fn wait_listening(addr: SocketAddr, timeout: Duration) {
    wait_for(timeout, &format!("a listener on {addr}"), || listening(addr).then_some(()));
}
