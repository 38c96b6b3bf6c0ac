//! Helpers shared by the logger's integration tests: free ports, a private
//! `redis-server`, a Docker engine ([`docker`]), raw HTTP requests, polling.

#![allow(dead_code)]

pub mod docker;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use docker::{skip_without, stop_pid};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A free loopback TCP port (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Polls `check` every 10 ms until it returns `Some`, or panics after `secs` seconds.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {secs} s waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A private `redis-server` on a free loopback port, no persistence, stopped by PID on drop.
#[derive(Debug)]
pub struct RedisServer {
    /// Its port.
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts one; `None` (skipped loudly) if redis-server is missing and CI is unset.
    pub fn start() -> Option<Self> {
        if skip_without("redis-server", "redis-server") {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting redis-server");
        let server = Self { port, child, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !server.answers() {
            assert!(Instant::now() < deadline, "redis-server on port {port} did not answer PING within 10 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(server)
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn answers(&self) -> bool {
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else { return false };
        s.set_read_timeout(Some(Duration::from_secs(1))).ok();
        let mut buf = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        stop_pid(self.child.id());
        let _ = self.child.wait();
    }
}

/// A raw HTTP/1.1 GET (`Connection: close`): (status, body). Chunked bodies are decoded.
pub async fn http_get(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let body =
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(body) } else { body.into() };
    (status, body)
}

/// Decodes a complete chunked body.
pub fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].strip_prefix("\r\n").unwrap_or(&rest[n..]);
    }
    out
}

/// A streaming GET (for `/follow`): the connection stays open; read what arrives.
pub struct HttpStream {
    sock: tokio::net::TcpStream,
    /// Everything received so far (head and raw chunked body).
    pub received: String,
}

impl HttpStream {
    /// Sends the request.
    pub async fn open(addr: SocketAddr, path: &str, token: Option<&str>) -> Self {
        let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
        let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}\r\n");
        sock.write_all(req.as_bytes()).await.unwrap();
        Self { sock, received: String::new() }
    }

    /// Reads until `needle` was received, or panics after `secs` seconds.
    pub async fn wait_for(&mut self, needle: &str, secs: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        let mut buf = vec![0u8; 64 * 1024];
        while !self.received.contains(needle) {
            let n = tokio::time::timeout_at(deadline, self.sock.read(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("no {needle:?} within {secs} s; got {:?}", self.received))
                .unwrap();
            assert!(n > 0, "stream ended before {needle:?}; got {:?}", self.received);
            self.received.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }
}
