//! End-to-end: every role daemon's HTTP listener holds against slow and idle clients
//! (`--http-header-read-timeout`, `--http-max-connections`, shared by all of them), and
//! so does deisd's controller API (`--api-header-read-timeout`, `--api-max-connections`):
//! a client that sends half a request head is cut off after the timeout, connections
//! past the cap are closed at once, and the daemon answers again once they are gone.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use deis_e2e::*;
use deis_test_support::http::Request;
use deis_test_support::{free_addr, wait_for};

/// A role daemon, killed on drop.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `name` with `args` and the listener limits under test, waiting for `health`.
fn start(name: &str, args: &[String], addr: SocketAddr, health: &str) -> Daemon {
    let child = Command::new(binary(name))
        .args(args)
        .args(["--http-header-read-timeout", "3", "--http-max-connections", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start {name}: {e}"));
    let daemon = Daemon(child);
    wait_for(T, &format!("{name} answers {health}"), || {
        Request::get(health).send(addr).ok().filter(|r| r.status < 500)
    });
    daemon
}

/// Whether the server has closed `conn` (waiting at most `wait` for it to say so).
fn is_closed(conn: &mut TcpStream, wait: Duration) -> bool {
    conn.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 512];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return false;
            }
            Err(_) => return true,
        }
    }
}

/// The slow-client checks against the daemon `name` listening on `addr` (started with a
/// cap of 2 connections and 3 s for a request head): of four clients that send half a
/// head, at least two are closed at once (past the cap; a connection the daemon is
/// still closing may hold a slot a moment), all of them by the timeout, and then the
/// daemon answers again.
fn holds_against_slow_clients(name: &str, addr: SocketAddr, health: &str) {
    let started = Instant::now();
    let mut conns: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut conn = TcpStream::connect(addr).unwrap();
            conn.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ").unwrap();
            conn
        })
        .collect();
    let mut closed = vec![false; conns.len()];
    // Well before the 3 s timeout: only the cap closes connections this early.
    while started.elapsed() < Duration::from_secs(2) && closed.iter().filter(|c| **c).count() < 2 {
        for (conn, closed) in conns.iter_mut().zip(closed.iter_mut()) {
            *closed = *closed || is_closed(conn, Duration::from_millis(50));
        }
    }
    assert!(closed.iter().filter(|c| **c).count() >= 2, "{name}: connections past the cap stay open");
    for (conn, closed) in conns.iter_mut().zip(&closed) {
        assert!(*closed || is_closed(conn, Duration::from_secs(10)), "{name}: half a head kept the connection open");
    }
    assert!(started.elapsed() < Duration::from_secs(12), "{name}");
    // The slots are free again.
    let r = wait_for(T, &format!("{name} answers again"), || Request::get(health).send(addr).ok());
    assert!(r.status < 500, "{name}: {} {}", r.status, r.body);
}

#[test]
fn every_role_daemons_listener_cuts_off_slow_clients_and_keeps_to_its_connection_cap() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let store = format!("redb:{}", dir.path().join("updates.redb").display());
    let _d =
        start("deis-update-server", &["--store".into(), store, "--addr".into(), addr.to_string()], addr, "/healthz");
    holds_against_slow_clients("deis-update-server", addr, "/healthz");

    let addr = free_addr();
    let udp = free_addr().to_string();
    let args = ["--syslog-udp-addr", &udp, "--syslog-tcp-addr", "off", "--http-addr", &addr.to_string()];
    let _d = start("deis-logger", &args.map(String::from), addr, "/healthz");
    holds_against_slow_clients("deis-logger", addr, "/healthz");

    let addr = free_addr();
    let _d = start("deis-telemetry", &["--listen".into(), addr.to_string()], addr, "/healthz");
    holds_against_slow_clients("deis-telemetry", addr, "/healthz");

    let addr = free_addr();
    let secret = "s".repeat(32);
    let dir = dir.path().display().to_string();
    let args = ["--listen", &addr.to_string(), "--secret", &secret, "--dir", &dir];
    let _d = start("deis-tty-broker", &args.map(String::from), addr, "/metrics");
    holds_against_slow_clients("deis-tty-broker", addr, "/metrics");
}

#[test]
fn deisds_api_limits_are_its_flags() {
    let d = Deisd::start_with(&["--api-header-read-timeout", "3", "--api-max-connections", "2"]);
    holds_against_slow_clients("deisd", d.api, "/healthz");
}
