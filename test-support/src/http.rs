//! One raw HTTP/1.1 client for tests, blocking and async: a [`Request`] sent with
//! `Connection: close` and read to the end ([`Request::send`], [`Request::send_async`]),
//! or opened as a stream whose bytes arrive as the server writes them ([`Request::open`],
//! [`Request::open_async`], for endpoints that follow a log). Raw on purpose: tests see
//! exactly what the server wrote, with no client library deciding for them.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Largest response (or stream) a test reads; more is an error.
pub const MAX_RESPONSE: usize = 16 << 20;
/// Default bound of one exchange.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one read of a stream blocks before the deadline is checked again.
const STREAM_READ: Duration = Duration::from_millis(100);

/// An HTTP/1.1 request under construction.
#[derive(Debug, Clone)]
pub struct Request {
    method: String,
    path: String,
    host: Option<String>,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    timeout: Duration,
}

/// `GET path` on `addr`, blocking.
pub fn get(addr: SocketAddr, path: &str) -> io::Result<Response> {
    Request::get(path).send(addr)
}

/// `GET path` on `addr`.
pub async fn get_async(addr: SocketAddr, path: &str) -> io::Result<Response> {
    Request::get(path).send_async(addr).await
}

impl Request {
    /// `METHOD path`.
    pub fn new(method: &str, path: &str) -> Self {
        Self {
            method: method.into(),
            path: path.into(),
            host: None,
            headers: vec![],
            body: vec![],
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// `GET path`.
    pub fn get(path: &str) -> Self {
        Self::new("GET", path)
    }

    /// `POST path`.
    pub fn post(path: &str) -> Self {
        Self::new("POST", path)
    }

    /// The `Host` header (default: the address connected to).
    pub fn host(mut self, host: &str) -> Self {
        self.host = Some(host.into());
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Adds headers.
    pub fn headers(self, headers: &[(&str, &str)]) -> Self {
        headers.iter().fold(self, |r, (k, v)| r.header(k, v))
    }

    /// `Authorization: Bearer <token>` when `token` is given.
    pub fn bearer(self, token: Option<&str>) -> Self {
        match token {
            Some(t) => self.header("Authorization", &format!("Bearer {t}")),
            None => self,
        }
    }

    /// The body (sent with its `Content-Length`).
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Bound of the whole exchange (default 30 s); a stream's reads are bounded by
    /// their own waits instead.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn head(&self, addr: SocketAddr, close: bool) -> Vec<u8> {
        let host = self.host.clone().unwrap_or_else(|| addr.to_string());
        let mut head = format!("{} {} HTTP/1.1\r\nHost: {host}\r\n", self.method, self.path);
        if close {
            head.push_str("Connection: close\r\n");
        }
        for (k, v) in &self.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if !self.body.is_empty() || matches!(self.method.as_str(), "POST" | "PUT" | "PATCH") {
            head.push_str(&format!("Content-Length: {}\r\n", self.body.len()));
        }
        head.push_str("\r\n");
        head.into_bytes()
    }

    /// Sends the request (`Connection: close`) and reads the whole response, blocking.
    pub fn send(&self, addr: SocketAddr) -> io::Result<Response> {
        let deadline = Instant::now() + self.timeout;
        let mut s = std::net::TcpStream::connect_timeout(&addr, self.timeout)?;
        s.set_write_timeout(Some(self.timeout))?;
        s.write_all(&self.head(addr, true))?;
        // A server may answer (413) and close before reading a large body: keep the
        // write error only if no response can be read.
        let written = s.write_all(&self.body);
        let mut raw = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        let read = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no full response within {:?}", self.timeout),
                ));
            }
            s.set_read_timeout(Some(left))?;
            match s.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => extend_within_limit(&mut raw, &buf[..n])?,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        finish(&raw, written, read)
    }

    /// Sends the request (`Connection: close`) and reads the whole response.
    pub async fn send_async(&self, addr: SocketAddr) -> io::Result<Response> {
        let exchange = async {
            let mut s = tokio::net::TcpStream::connect(addr).await?;
            s.write_all(&self.head(addr, true)).await?;
            let written = s.write_all(&self.body).await;
            let mut raw = Vec::new();
            let read = (&mut s).take(MAX_RESPONSE as u64 + 1).read_to_end(&mut raw).await.map(drop);
            if raw.len() > MAX_RESPONSE {
                return Err(too_large());
            }
            finish(&raw, written, read)
        };
        tokio::time::timeout(self.timeout, exchange).await.unwrap_or_else(|_| {
            Err(io::Error::new(io::ErrorKind::TimedOut, format!("no full response within {:?}", self.timeout)))
        })
    }

    /// Sends the request (keep-alive) and returns the connection, blocking; read what
    /// arrives with [`Stream::wait_until`].
    pub fn open(&self, addr: SocketAddr) -> io::Result<Stream> {
        let mut sock = std::net::TcpStream::connect_timeout(&addr, self.timeout)?;
        sock.write_all(&self.head(addr, false))?;
        sock.write_all(&self.body)?;
        Ok(Stream { sock, received: Received::default() })
    }

    /// Sends the request (keep-alive) and returns the connection; read what arrives
    /// with [`AsyncStream::wait_until`].
    pub async fn open_async(&self, addr: SocketAddr) -> io::Result<AsyncStream> {
        let mut sock = tokio::time::timeout(self.timeout, tokio::net::TcpStream::connect(addr))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("connect to {addr}")))??;
        sock.write_all(&self.head(addr, false)).await?;
        sock.write_all(&self.body).await?;
        Ok(AsyncStream { sock, received: Received::default() })
    }
}

/// The response of an exchange, from what was read and how writing and reading ended.
///
/// Errors say what a client may conclude: `UnexpectedEof` when the connection closed
/// before any byte of a response (the server took nothing: safe to retry), `InvalidData`
/// for a cut or malformed response, `TimedOut` when the server took too long; a refused
/// connection or a failed request write keeps its own kind.
fn finish(raw: &[u8], written: io::Result<()>, read: io::Result<()>) -> io::Result<Response> {
    if raw.is_empty() {
        return Err(match (read, written) {
            (Err(e), _) if matches!(e.kind(), io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock) => {
                io::Error::new(io::ErrorKind::TimedOut, format!("no response: {e}"))
            }
            (Err(e), _) | (Ok(()), Err(e)) => {
                io::Error::new(io::ErrorKind::UnexpectedEof, format!("closed before any byte of a response: {e}"))
            }
            (Ok(()), Ok(())) => io::Error::new(io::ErrorKind::UnexpectedEof, "closed before any byte of a response"),
        });
    }
    Response::parse(raw).map_err(|e| match read {
        Err(r) => io::Error::new(io::ErrorKind::InvalidData, format!("{e} (reading stopped: {r})")),
        Ok(()) => e,
    })
}

fn too_large() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("response larger than {MAX_RESPONSE} bytes"))
}

fn extend_within_limit(raw: &mut Vec<u8>, more: &[u8]) -> io::Result<()> {
    if raw.len() + more.len() > MAX_RESPONSE {
        return Err(too_large());
    }
    raw.extend_from_slice(more);
    Ok(())
}

/// A complete HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers, names lowercased (the last of repeated ones).
    pub headers: BTreeMap<String, String>,
    /// The body as text (lossy UTF-8), chunked encoding removed.
    pub body: String,
}

impl Response {
    /// Parses a complete response as read up to the server's close; a body shorter or
    /// longer than its `Content-Length`, or cut in the middle of a chunk, is an error.
    pub fn parse(raw: &[u8]) -> io::Result<Self> {
        let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, m.to_string());
        let split = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| bad("no end of the response head"))?;
        let head = String::from_utf8_lossy(&raw[..split]);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status = status_line
            .strip_prefix("HTTP/1.")
            .and_then(|rest| rest.split(' ').nth(1))
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| bad(&format!("bad status line {status_line:?}")))?;
        let headers: BTreeMap<String, String> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let mut body = raw[split + 4..].to_vec();
        if headers.get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            body = dechunk(&body).ok_or_else(|| bad("bad or incomplete chunked body"))?;
        } else if let Some(length) = headers.get("content-length") {
            let length: usize = length.parse().map_err(|_| bad(&format!("bad Content-Length {length:?}")))?;
            if body.len() != length {
                return Err(bad(&format!("body of {} bytes, Content-Length {length}", body.len())));
            }
        }
        Ok(Self { status, headers, body: String::from_utf8_lossy(&body).into_owned() })
    }

    /// The body as JSON; panics with the body when it is not.
    #[cfg(feature = "json")]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// Decodes a complete chunked body.
pub fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let nl = b.windows(2).position(|w| w == b"\r\n")?;
        let size = std::str::from_utf8(&b[..nl]).ok()?.split(';').next()?.trim();
        let size = usize::from_str_radix(size, 16).ok()?;
        b = &b[nl + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..size)?);
        b = b.get(size + 2..)?;
    }
}

/// Bytes of a stream so far.
#[derive(Debug, Default)]
struct Received(Vec<u8>);

impl Received {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0).into_owned()
    }

    /// Appends `n` read bytes: false when the peer closed (`n == 0`).
    fn push(&mut self, bytes: &[u8], what: &str) -> bool {
        if bytes.is_empty() {
            return false;
        }
        assert!(self.0.len() + bytes.len() <= MAX_RESPONSE, "over {MAX_RESPONSE} bytes received waiting for {what}");
        self.0.extend_from_slice(bytes);
        true
    }
}

/// A response being received (blocking): head and raw body (chunk sizes included) as
/// they arrive.
#[derive(Debug)]
pub struct Stream {
    sock: std::net::TcpStream,
    received: Received,
}

impl Stream {
    /// Everything received so far (lossy UTF-8).
    pub fn received(&self) -> String {
        self.received.text()
    }

    /// Reads until `check(received so far)` is done; panics after `timeout` or when the
    /// server closes first, naming `what` and showing what was received.
    pub fn wait_until<T>(&mut self, timeout: Duration, what: &str, mut check: impl FnMut(&str) -> Option<T>) -> T {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if let Some(v) = check(&self.received()) {
                return v;
            }
            assert!(Instant::now() < deadline, "no {what} within {timeout:?}; received {:?}", self.received());
            self.sock.set_read_timeout(Some(STREAM_READ)).expect("setting a read timeout");
            match self.sock.read(&mut buf) {
                Ok(n) => {
                    assert!(self.received.push(&buf[..n], what), "stream ended before {what}: {:?}", self.received())
                }
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
                Err(e) => panic!("reading the stream for {what}: {e}; received {:?}", self.received()),
            }
        }
    }

    /// Reads until `needle` was received (see [`Stream::wait_until`]).
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) {
        self.wait_until(timeout, &format!("{needle:?}"), |r| r.contains(needle).then_some(()))
    }
}

/// A response being received: head and raw body (chunk sizes included) as they arrive.
#[derive(Debug)]
pub struct AsyncStream {
    sock: tokio::net::TcpStream,
    received: Received,
}

impl AsyncStream {
    /// Everything received so far (lossy UTF-8).
    pub fn received(&self) -> String {
        self.received.text()
    }

    /// Reads until `check(received so far)` is done; panics after `timeout` or when the
    /// server closes first, naming `what` and showing what was received.
    pub async fn wait_until<T>(
        &mut self,
        timeout: Duration,
        what: &str,
        mut check: impl FnMut(&str) -> Option<T>,
    ) -> T {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if let Some(v) = check(&self.received()) {
                return v;
            }
            let n = match tokio::time::timeout_at(deadline, self.sock.read(&mut buf)).await {
                Ok(Ok(n)) => n,
                Ok(Err(e)) => panic!("reading the stream for {what}: {e}; received {:?}", self.received()),
                Err(_) => panic!("no {what} within {timeout:?}; received {:?}", self.received()),
            };
            assert!(self.received.push(&buf[..n], what), "stream ended before {what}: {:?}", self.received());
        }
    }

    /// Reads until `needle` was received (see [`AsyncStream::wait_until`]).
    pub async fn wait_for(&mut self, needle: &str, timeout: Duration) {
        self.wait_until(timeout, &format!("{needle:?}"), |r| r.contains(needle).then_some(())).await
    }
}
