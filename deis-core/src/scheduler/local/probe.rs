//! Readiness: when a freshly started unit may receive traffic.
//!
//! - With a healthcheck (`ProcessSpec::healthcheck`): after `initialDelaySeconds`, probe
//!   every `periodSeconds` (each attempt bounded by `timeoutSeconds`) until
//!   `successThreshold` consecutive attempts succeed. `httpGet` and `tcpSocket` probe the
//!   unit's `PORT` on 127.0.0.1 (their `port` field is ignored: locally the unit listens
//!   where `PORT` says); `exec` runs the command in the unit's directory and
//!   environment, confined as the unit is (identity, cgroup, mount namespace; a
//!   one-element command is run with `sh -c`). `failureThreshold` does
//!   not apply to readiness: the probe keeps trying until the scheduler's
//!   `ready_timeout`.
//! - Without one: a `web` unit is ready once its `PORT` accepts TCP connections; other
//!   types once they have kept running for [`STAY_UP`].

use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::process::ProcessRuntime;
use crate::model::{Healthcheck, ProbeAction, TcpSocketProbe};
use crate::sys::{Signal, SpawnSpec, group};

/// How long a non-web unit without a healthcheck must keep running to count as ready.
pub const STAY_UP: Duration = Duration::from_millis(300);
/// How often a web unit's port is tried when it has no healthcheck.
const PORT_POLL: Duration = Duration::from_millis(50);
/// Bound of one port attempt when there is no healthcheck.
const PORT_TIMEOUT: Duration = Duration::from_secs(1);
/// Most bytes of an HTTP probe response read to find the status line.
const MAX_STATUS_LINE: usize = 4096;

/// Where a probe looks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeTarget {
    /// The runtime's handle of the unit ([`Spawned::pid`](super::Spawned::pid)): for
    /// processes, its process group, whose confinement `exec` shares.
    pub handle: u32,
    /// Where its `PORT` is reached.
    pub ip: std::net::IpAddr,
    /// The unit's `PORT`.
    pub port: u16,
    /// The unit's working directory (for `exec`).
    pub dir: PathBuf,
    /// The unit's environment (for `exec`).
    pub env: Vec<(String, String)>,
}

/// How readiness of a unit is decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Readiness {
    /// The configured healthcheck.
    Healthcheck(Healthcheck),
    /// The port accepts TCP connections.
    PortOpen,
    /// The process stays up this long.
    StaysUp(Duration),
}

impl Readiness {
    /// The readiness rule of a unit of `proc_type`.
    pub(crate) fn for_unit(proc_type: &str, healthcheck: Option<&Healthcheck>) -> Self {
        match healthcheck {
            Some(h) => Self::Healthcheck(h.clone()),
            None if proc_type == "web" => Self::PortOpen,
            None => Self::StaysUp(STAY_UP),
        }
    }
}

/// Waits until the unit is ready. Never gives up: the caller bounds it with a timeout
/// (and notices on its own when the process exits).
pub(crate) async fn wait_ready(rt: &dyn ProcessRuntime, target: &ProbeTarget, readiness: &Readiness) {
    match readiness {
        Readiness::StaysUp(d) => tokio::time::sleep(*d).await,
        Readiness::PortOpen => {
            let tcp = ProbeAction::TcpSocket(TcpSocketProbe { port: 0 });
            while !rt.probe(target, &tcp, PORT_TIMEOUT).await {
                tokio::time::sleep(PORT_POLL).await;
            }
        }
        Readiness::Healthcheck(h) => {
            tokio::time::sleep(secs(h.initial_delay_seconds, 0)).await;
            let timeout = secs(h.timeout_seconds, 1);
            let period = secs(h.period_seconds, 1);
            let needed = h.success_threshold.max(1);
            let mut successes = 0;
            loop {
                if rt.probe(target, &h.action, timeout).await {
                    successes += 1;
                    if successes >= needed {
                        return;
                    }
                } else {
                    successes = 0;
                }
                tokio::time::sleep(period).await;
            }
        }
    }
}

/// Probes a running unit every `periodSeconds` (after `initialDelaySeconds`); returns
/// once `failureThreshold` attempts in a row failed (never, while the unit is healthy).
pub(crate) async fn watch_liveness(rt: &dyn ProcessRuntime, target: &ProbeTarget, check: &Healthcheck) -> u32 {
    tokio::time::sleep(secs(check.initial_delay_seconds, 0)).await;
    let (timeout, period) = (secs(check.timeout_seconds, 1), secs(check.period_seconds, 1));
    let threshold = check.failure_threshold.max(1);
    let mut failures = 0;
    loop {
        if rt.probe(target, &check.action, timeout).await {
            failures = 0;
        } else {
            failures += 1;
            if failures >= threshold {
                return failures;
            }
        }
        tokio::time::sleep(period).await;
    }
}

fn secs(n: u32, min: u32) -> Duration {
    Duration::from_secs(u64::from(n.max(min)))
}

/// Confines an exec probe's command as its unit is.
pub(crate) type Confine<'a> = dyn Fn(SpawnSpec) -> SpawnSpec + Send + Sync + 'a;

/// One probe attempt from this machine: `tcpSocket` and `httpGet` against the
/// target's address, `exec` as a process here (unconfined: container runtimes run
/// their `exec` probes inside the container instead).
pub async fn os_probe(target: &ProbeTarget, action: &ProbeAction, timeout: Duration) -> bool {
    os_probe_confined(target, action, timeout, &|spec| spec).await
}

/// [`os_probe`] with `exec` confined by `confine`.
pub(crate) async fn os_probe_confined(
    target: &ProbeTarget,
    action: &ProbeAction,
    timeout: Duration,
    confine: &Confine<'_>,
) -> bool {
    let attempt = async {
        match action {
            ProbeAction::TcpSocket(_) => TcpStream::connect((target.ip, target.port)).await.is_ok(),
            ProbeAction::HttpGet(h) => {
                let headers: Vec<(&str, &str)> = h.http_headers.iter().map(|x| (&*x.name, &*x.value)).collect();
                http_get(target.ip, target.port, &h.path, &headers).await.is_some_and(|s| (200..400).contains(&s))
            }
            ProbeAction::Exec(e) => exec(target, &e.command, confine).await,
        }
    };
    tokio::time::timeout(timeout, attempt).await.unwrap_or(false)
}

/// `GET path` on ip:port; the response status code.
async fn http_get(ip: std::net::IpAddr, port: u16, path: &str, headers: &[(&str, &str)]) -> Option<u16> {
    let clean = |s: &str| !s.bytes().any(|b| b == b'\r' || b == b'\n');
    let path = if path.starts_with('/') && clean(path) && !path.contains(' ') { path } else { "/" };
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: deis-probe\r\nConnection: close\r\n",
        std::net::SocketAddr::from((ip, port))
    );
    for (k, v) in headers.iter().filter(|(k, v)| clean(k) && clean(v) && !k.is_empty()) {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut conn = TcpStream::connect((ip, port)).await.ok()?;
    conn.write_all(req.as_bytes()).await.ok()?;
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 512];
    while !buf.windows(2).any(|w| w == b"\r\n") && buf.len() < MAX_STATUS_LINE {
        let n = conn.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    parse_status(&buf)
}

/// The status code of an HTTP/1.x status line at the start of `buf`.
fn parse_status(buf: &[u8]) -> Option<u16> {
    let line = buf.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_whitespace();
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 {
        return None;
    }
    code.parse().ok()
}

async fn exec(target: &ProbeTarget, argv: &[String], confine: &Confine<'_>) -> bool {
    let Some(spec) = SpawnSpec::from_argv(argv) else { return false };
    let spec = confine(spec.dir(&target.dir).env(target.env.iter().map(|(k, v)| (k, v))));
    let child = match crate::sys::spawn(spec) {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(command = ?argv, error = %e, "exec probe could not run");
            return false;
        }
    };
    // A probe that times out is dropped here: its command and what it started go too.
    struct KillOnDrop(u32, bool);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            if self.1 {
                group::signal_session(self.0, Signal::KILL);
            }
        }
    }
    let mut guard = KillOnDrop(child.pid, true);
    let status = child.exited.await.unwrap_or(crate::sys::ExitInfo::UNKNOWN);
    // Whatever it left in the background goes with it.
    group::signal_session(guard.0, Signal::KILL);
    guard.1 = false;
    status.code == Some(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ExecProbe, HttpGetProbe, HttpHeader};
    use tokio::net::TcpListener;

    fn target(port: u16) -> ProbeTarget {
        ProbeTarget {
            handle: 0,
            ip: std::net::Ipv4Addr::LOCALHOST.into(),
            port,
            dir: std::env::temp_dir(),
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        }
    }

    #[test]
    fn status_lines() {
        assert_eq!(parse_status(b"HTTP/1.1 204 No Content\r\n"), Some(204));
        assert_eq!(parse_status(b"HTTP/1.0 500 Oops\r\n"), Some(500));
        assert_eq!(parse_status(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(parse_status(b"HTTP/1.1 2000 x\r\n"), None);
        assert_eq!(parse_status(b""), None);
    }

    /// Serves one connection: records the request head and answers `status`.
    async fn answer_once(status: u16) -> (u16, tokio::task::JoinHandle<String>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let (mut c, _) = l.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let mut got = Vec::new();
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = c.read(&mut buf).await.unwrap();
                got.extend_from_slice(&buf[..n]);
            }
            c.write_all(format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n").as_bytes()).await.unwrap();
            String::from_utf8(got).unwrap()
        });
        (port, task)
    }

    #[tokio::test]
    async fn http_probe_checks_status_and_sends_path_and_headers() {
        let probe = ProbeAction::HttpGet(HttpGetProbe {
            path: "/healthz".into(),
            port: 9999,
            http_headers: vec![HttpHeader { name: "X-Check".into(), value: "yes".into() }],
        });
        let (port, req) = answer_once(200).await;
        assert!(os_probe(&target(port), &probe, Duration::from_secs(2)).await);
        let req = req.await.unwrap();
        assert!(req.starts_with("GET /healthz HTTP/1.1\r\n"), "{req}");
        assert!(req.contains("X-Check: yes\r\n"), "{req}");

        let (port, _req) = answer_once(503).await;
        assert!(!os_probe(&target(port), &probe, Duration::from_secs(2)).await);
    }

    #[tokio::test]
    async fn tcp_and_exec_probes() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let tcp = ProbeAction::TcpSocket(TcpSocketProbe { port: 0 });
        assert!(os_probe(&target(port), &tcp, Duration::from_secs(1)).await);
        drop(l);
        assert!(!os_probe(&target(port), &tcp, Duration::from_secs(1)).await);

        let ok = ProbeAction::Exec(ExecProbe { command: vec!["test \"$PATH\" = /usr/bin:/bin".into()] });
        assert!(os_probe(&target(port), &ok, Duration::from_secs(5)).await);
        let argv = ProbeAction::Exec(ExecProbe { command: vec!["false".into(), "x".into()] });
        assert!(!os_probe(&target(port), &argv, Duration::from_secs(5)).await);
        let slow = ProbeAction::Exec(ExecProbe { command: vec!["sleep 5".into()] });
        assert!(!os_probe(&target(port), &slow, Duration::from_millis(200)).await);
    }
}
