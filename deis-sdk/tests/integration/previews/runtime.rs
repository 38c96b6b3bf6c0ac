//! What the fake engines run units with: local processes standing in for containers
//! (an image is a directory on this machine), probes, restarts and graceful stops.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use deis_core::sys::Signal;
use deis_core::sys::group::{group_alive, signal_group};
use tokio::sync::watch;

/// Images the fakes know: reference -> directory the container runs in.
pub type Images = Arc<HashMap<String, PathBuf>>;

/// A process standing in for a container.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    /// argv.
    pub argv: Vec<String>,
    /// Working directory.
    pub cwd: PathBuf,
    /// Environment (besides `PATH`).
    pub env: BTreeMap<String, String>,
}

/// A probe of a container.
#[derive(Debug, Clone)]
pub struct Probe {
    /// What it checks.
    pub check: Check,
    /// Seconds before the first check.
    pub initial_delay: Duration,
    /// Between checks.
    pub period: Duration,
    /// One check's limit.
    pub timeout: Duration,
    /// Successes in a row that make it pass.
    pub success_threshold: u32,
    /// Failures in a row that make it fail.
    pub failure_threshold: u32,
}

/// What a probe checks.
#[derive(Debug, Clone)]
pub enum Check {
    /// Connects.
    Tcp(SocketAddr),
    /// `GET path` answers 2xx or 3xx.
    Http(SocketAddr, String),
    /// argv exits 0 (run in the container's directory and environment).
    Exec(Vec<String>),
}

/// What happened to a container.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Its process started.
    Started { pid: u32 },
    /// Its readiness changed.
    Ready(bool),
    /// Its process ended with this code (128 + N for signal N).
    Exited { code: i32 },
    /// It will be started again after this long.
    BackOff(Duration),
    /// It stopped for good (asked to, or not restarted).
    Stopped,
    /// It could not be started.
    Failed(String),
}

/// How a container is run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Readiness probe (without one: ready once started).
    pub readiness: Option<Probe>,
    /// Liveness probe: failing kills the process.
    pub liveness: Option<Probe>,
    /// Start again after an exit (Kubernetes' `restartPolicy: Always`).
    pub restart: bool,
    /// Pause before a restart.
    pub backoff: Duration,
}

fn spawn(spec: &ContainerSpec) -> std::io::Result<tokio::process::Child> {
    let (program, args) = spec.argv.split_first().ok_or_else(|| std::io::Error::other("empty command"))?;
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .current_dir(&spec.cwd)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into()))
        .envs(&spec.env)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    cmd.spawn()
}

async fn check_once(check: &Check, spec: &ContainerSpec, timeout: Duration) -> bool {
    let attempt = async {
        match check {
            Check::Tcp(addr) => tokio::net::TcpStream::connect(addr).await.is_ok(),
            Check::Http(addr, path) => {
                let r = deis_test_support::http::Request::get(path).timeout(timeout).send_async(*addr).await;
                r.is_ok_and(|r| (200..400).contains(&r.status))
            }
            Check::Exec(argv) => {
                let spec = ContainerSpec { argv: argv.clone(), ..spec.clone() };
                match spawn(&spec) {
                    Ok(mut c) => c.wait().await.is_ok_and(|s| s.success()),
                    Err(_) => false,
                }
            }
        }
    };
    tokio::time::timeout(timeout, attempt).await.unwrap_or(false)
}

/// Runs `probe` forever, sending each change of its verdict (starting from false).
async fn run_probe(probe: Probe, spec: ContainerSpec, verdicts: watch::Sender<bool>) {
    tokio::time::sleep(probe.initial_delay).await;
    let (mut ok, mut bad) = (0, 0);
    loop {
        if check_once(&probe.check, &spec, probe.timeout).await {
            ok += 1;
            bad = 0;
            if ok >= probe.success_threshold.max(1) {
                verdicts.send_if_modified(|v| !std::mem::replace(v, true));
            }
        } else {
            bad += 1;
            ok = 0;
            if bad >= probe.failure_threshold.max(1) {
                verdicts.send_if_modified(|v| std::mem::replace(v, false));
            }
        }
        tokio::time::sleep(probe.period).await;
    }
}

/// Stops group `pgid`: SIGTERM, then SIGKILL after `grace`.
async fn stop_group(pgid: u32, grace: Duration) {
    signal_group(pgid, Signal::TERM);
    let deadline = tokio::time::Instant::now() + grace;
    while group_alive(pgid) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    signal_group(pgid, Signal::KILL);
}

fn code_of(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// Runs a container until `stop` says to (with the grace period it carries), reporting
/// to `report`.
pub async fn run(
    spec: ContainerSpec,
    options: RunOptions,
    mut stop: watch::Receiver<Option<Duration>>,
    report: impl Fn(Event) + Send + Sync + 'static,
) {
    loop {
        let mut child = match spawn(&spec) {
            Ok(c) => c,
            Err(e) => {
                report(Event::Failed(format!("starting {:?}: {e}", spec.argv)));
                return;
            }
        };
        let pid = child.id().unwrap_or(0);
        report(Event::Started { pid });
        let (ready_tx, mut ready_rx) = watch::channel(options.readiness.is_none());
        let (live_tx, mut live_rx) = watch::channel(true);
        if options.readiness.is_none() {
            report(Event::Ready(true));
        }
        let probes: Vec<tokio::task::JoinHandle<()>> = [
            options.readiness.clone().map(|p| tokio::spawn(run_probe(p, spec.clone(), ready_tx))),
            options.liveness.clone().map(|p| {
                let _ = live_tx.send(false);
                tokio::spawn(run_probe(p, spec.clone(), live_tx))
            }),
        ]
        .into_iter()
        .flatten()
        .collect();
        let mut was_live = false;
        let outcome = loop {
            tokio::select! {
                status = child.wait() => break Some(status.map(code_of).unwrap_or(255)),
                Ok(()) = ready_rx.changed() => report(Event::Ready(*ready_rx.borrow())),
                Ok(()) = live_rx.changed() => {
                    let live = *live_rx.borrow();
                    if was_live && !live {
                        // Liveness failed: killed, restarted as a crash.
                        stop_group(pid, Duration::from_secs(1)).await;
                    }
                    was_live |= live;
                }
                _ = stop.changed() => {
                    let grace = stop.borrow().unwrap_or_default();
                    stop_group(pid, grace).await;
                    let _ = child.wait().await;
                    break None;
                }
            }
        };
        probes.iter().for_each(|p| p.abort());
        match outcome {
            None => {
                report(Event::Stopped);
                return;
            }
            Some(code) => {
                signal_group(pid, Signal::KILL);
                report(Event::Exited { code });
                if !options.restart {
                    return;
                }
                report(Event::BackOff(options.backoff));
                tokio::select! {
                    _ = tokio::time::sleep(options.backoff) => {}
                    _ = stop.changed() => {
                        report(Event::Stopped);
                        return;
                    }
                }
            }
        }
    }
}
